package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/tenantplane/tenantplane/password"
	"github.com/tenantplane/tenantplane/platform"
)

// usersCmd is `tenantplane users`: platform users, or with --tenant a tenant's users.
func (a *app) usersCmd() *cobra.Command {
	var slug string
	cmd := &cobra.Command{
		Use:   "users",
		Short: "Manage platform users (global superusers), or with --tenant SLUG a tenant's users",
		Long: `Manage platform users: the global superusers who log in to the control plane and
its admin panel. With --tenant SLUG the same commands act on that tenant's users, with
the rules of the tenant API (the last active tenant admin stays an active admin).

The last active platform user cannot be deactivated.`,
	}
	cmd.PersistentFlags().StringVar(&slug, "tenant", "", "act on this tenant's users instead of the platform's")
	cmd.AddCommand(a.usersListCmd(&slug), a.usersCreateCmd(&slug, "create EMAIL", false),
		a.usersDeactivateCmd(&slug), a.usersChangePasswordCmd(&slug), a.usersImportCmd(&slug),
		a.usersCreateCmd(&slug, "createsuperuser --email EMAIL", true))
	return cmd
}

// platformUsers opens the platform user service on the control database.
func (a *app) platformUsers(cmd *cobra.Command) (*platform.Users, error) {
	db, err := a.control(cmd.Context(), 0)
	if err != nil {
		return nil, err
	}
	return platform.NewUsers(platform.NewStore(db), password.NewHasher(password.OWASP, 1)), nil
}

// userRow is one user as the users commands print it, of either plane.
type userRow struct {
	ID       string `json:"id"`
	Email    string `json:"email"`
	IsAdmin  bool   `json:"is_admin"`
	IsActive bool   `json:"is_active"`
	Created  string `json:"created_at"`
}

func (a *app) printUsers(list []userRow, tenantScoped bool) error {
	if a.output == "json" {
		if list == nil {
			list = []userRow{}
		}
		return printJSON(a.stdout, list)
	}
	rows := make([][]string, 0, len(list))
	for _, u := range list {
		r := []string{u.ID, u.Email, activeWord(u.IsActive)}
		if tenantScoped {
			r = append(r, fmt.Sprint(u.IsAdmin))
		}
		rows = append(rows, append(r, u.Created))
	}
	header := []string{"ID", "EMAIL", "STATUS"}
	if tenantScoped {
		header = append(header, "ADMIN")
	}
	return table(a.stdout, append(header, "CREATED"), rows)
}

func activeWord(active bool) string {
	if active {
		return "active"
	}
	return "inactive"
}

func platformRow(u *platform.User) userRow {
	return userRow{ID: u.ID, Email: u.Email, IsAdmin: true, IsActive: u.IsActive, Created: ago(u.CreatedAt)}
}

// printUser prints the user a command changed: as JSON, or the line format with the
// user's email.
func (a *app) printUser(u userRow, format string) error {
	if a.output == "json" {
		return printJSON(a.stdout, u)
	}
	fmt.Fprintf(a.stdout, format+"\n", u.Email)
	return nil
}

func (a *app) usersListCmd(slug *string) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List the users",
		Example: `  tenantplane users list
  tenantplane users list --tenant acme -o json`,
		Args: exactArgs(0, ""),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if *slug != "" {
				tu, err := a.tenantUsers(cmd, *slug)
				if err != nil {
					return err
				}
				defer tu.close()
				list, err := tu.list()
				if err != nil {
					return err
				}
				return a.printUsers(list, true)
			}
			users, err := a.platformUsers(cmd)
			if err != nil {
				return err
			}
			list, err := users.List(cmd.Context())
			if err != nil {
				return err
			}
			rows := make([]userRow, 0, len(list))
			for _, u := range list {
				rows = append(rows, platformRow(u))
			}
			return a.printUsers(rows, false)
		},
	}
}

func (a *app) usersCreateCmd(slug *string, use string, legacy bool) *cobra.Command {
	var addr string
	var fromStdin, admin bool
	cmd := &cobra.Command{
		Use:   use,
		Short: "Create a user (password from a prompt, or the first line of stdin)",
		Example: `  tenantplane users create ops@example.com
  echo 'long-secret-pw' | tenantplane users create ops@example.com --password-stdin
  tenantplane users create editor@acme.test --tenant acme --admin`,
		RunE: func(cmd *cobra.Command, args []string) error {
			switch {
			case legacy && len(args) > 0:
				return usagef("createsuperuser takes --email, not arguments")
			case !legacy && len(args) != 1:
				return usagef("create takes one EMAIL")
			case !legacy:
				addr = args[0]
			case addr == "":
				return usagef("--email is required")
			}
			if *slug == "" && cmd.Flags().Changed("admin") {
				return usagef("--admin applies with --tenant: every platform user is a superuser")
			}
			pw, err := a.readPassword("Password: ", fromStdin)
			if err != nil {
				return err
			}
			if *slug != "" {
				tu, err := a.tenantUsers(cmd, *slug)
				if err != nil {
					return err
				}
				defer tu.close()
				u, err := tu.create(addr, pw, admin || legacy)
				if err != nil {
					return err
				}
				return a.printUser(u, "user %s created")
			}
			users, err := a.platformUsers(cmd)
			if err != nil {
				return err
			}
			u, err := users.Create(cmd.Context(), addr, pw)
			if err != nil {
				return err
			}
			return a.printUser(platformRow(u), "superuser %s created")
		},
	}
	if legacy {
		cmd.Short = "Create a platform superuser (as create; kept for scripts that use it)"
		cmd.Example = `  tenantplane users createsuperuser --email ops@example.com
  echo 'long-secret-pw' | tenantplane users createsuperuser --email ops@example.com --password-stdin`
		cmd.Flags().StringVar(&addr, "email", "", "email of the new superuser (required)")
	}
	cmd.Flags().BoolVar(&fromStdin, "password-stdin", false, "read the password from the first line of stdin")
	cmd.Flags().BoolVar(&admin, "admin", false, "with --tenant: make the user a tenant admin")
	return cmd
}

func (a *app) usersDeactivateCmd(slug *string) *cobra.Command {
	return &cobra.Command{
		Use:   "deactivate EMAIL",
		Short: "Stop a user from logging in and revoke their tokens (the last active platform user stays)",
		Args:  exactArgs(1, "EMAIL"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if *slug != "" {
				tu, err := a.tenantUsers(cmd, *slug)
				if err != nil {
					return err
				}
				defer tu.close()
				u, err := tu.deactivate(args[0])
				if err != nil {
					return err
				}
				return a.printUser(u, "user %s deactivated")
			}
			users, err := a.platformUsers(cmd)
			if err != nil {
				return err
			}
			u, err := users.Deactivate(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return a.printUser(platformRow(u), "platform user %s deactivated")
		},
	}
}

func (a *app) usersChangePasswordCmd(slug *string) *cobra.Command {
	var fromStdin bool
	cmd := &cobra.Command{
		Use:   "changepassword EMAIL",
		Short: "Set a user's password (from a prompt, or the first line of stdin) and revoke their tokens",
		Args:  exactArgs(1, "EMAIL"),
		RunE: func(cmd *cobra.Command, args []string) error {
			pw, err := a.readPassword("New password: ", fromStdin)
			if err != nil {
				return err
			}
			if *slug != "" {
				tu, err := a.tenantUsers(cmd, *slug)
				if err != nil {
					return err
				}
				defer tu.close()
				u, err := tu.changePassword(args[0], pw)
				if err != nil {
					return err
				}
				return a.printUser(u, "password of %s changed")
			}
			users, err := a.platformUsers(cmd)
			if err != nil {
				return err
			}
			u, err := users.ChangePassword(cmd.Context(), args[0], pw)
			if err != nil {
				return err
			}
			return a.printUser(platformRow(u), "password of %s changed")
		},
	}
	cmd.Flags().BoolVar(&fromStdin, "password-stdin", false, "read the password from the first line of stdin")
	return cmd
}
