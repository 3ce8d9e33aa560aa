package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/tenantplane/tenantplane/password"
	"github.com/tenantplane/tenantplane/platform"
)

func (a *app) usersCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "users",
		Short: "Manage platform users (global superusers who manage tenants)",
	}
	var email string
	var fromStdin bool
	create := &cobra.Command{
		Use:   "createsuperuser --email EMAIL",
		Short: "Create a platform superuser (password from a prompt, or the first line of stdin)",
		Example: `  tenantplane users createsuperuser --email ops@example.com
  echo 'long-secret-pw' | tenantplane users createsuperuser --email ops@example.com --password-stdin`,
		Args: exactArgs(0, ""),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if email == "" {
				return usagef("--email is required")
			}
			pw, err := a.readPassword("Password: ", fromStdin)
			if err != nil {
				return err
			}
			db, err := a.control(cmd.Context(), 0)
			if err != nil {
				return err
			}
			u, err := platform.NewUsers(platform.NewStore(db), password.NewHasher(password.OWASP, 1)).Create(cmd.Context(), email, pw)
			if err != nil {
				return err
			}
			if a.output == "json" {
				return printJSON(a.stdout, u)
			}
			fmt.Fprintf(a.stdout, "superuser %s created\n", u.Email)
			return nil
		},
	}
	create.Flags().StringVar(&email, "email", "", "email of the new superuser (required)")
	create.Flags().BoolVar(&fromStdin, "password-stdin", false, "read the password from the first line of stdin")
	cmd.AddCommand(create)
	return cmd
}
