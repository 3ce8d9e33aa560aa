package main

import (
	"bufio"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/tenantplane/tenantplane/email"
	"github.com/tenantplane/tenantplane/password"
	"github.com/tenantplane/tenantplane/provisioner"
	"github.com/tenantplane/tenantplane/tenant"
)

func (a *app) tenantsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "tenants",
		Short: "Create, inspect and manage the lifecycle of tenants",
	}
	cmd.AddCommand(a.tenantsCreateCmd(), a.tenantsListCmd(), a.tenantsShowCmd(),
		a.tenantsTransitionCmd("suspend", "Stop serving an active tenant (data is kept)"),
		a.tenantsTransitionCmd("resume", "Serve a suspended tenant again"),
		a.tenantsDeleteCmd(),
		a.tenantsTransitionCmd("restore", "Bring back a deleted tenant within its grace period"),
		a.tenantsPurgeCmd(), a.tenantsRetryCmd(),
		a.tenantsExportCmd(), a.tenantsImportCmd(), a.tenantsCloneCmd(), a.tenantsMoveCmd(), a.tenantsDropMovedCmd())
	return cmd
}

func (a *app) tenantsCreateCmd() *cobra.Command {
	var req provisioner.CreateRequest
	var iso string
	var passwordStdin bool
	cmd := &cobra.Command{
		Use:   "create SLUG --admin-email EMAIL",
		Short: "Create and provision a tenant (the admin password is read from a prompt or stdin)",
		Example: `  tenantplane tenants create acme --name "Acme Inc" --admin-email admin@acme.test
  echo 'long-secret-pw' | tenantplane tenants create acme --admin-email admin@acme.test --password-stdin`,
		Args: exactArgs(1, "SLUG"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			req.Slug = args[0]
			if req.AdminEmail == "" {
				return usagef("--admin-email is required: the email of the tenant superuser")
			}
			var err error
			if req.Isolation, err = tenant.ParseIsolation(iso); err != nil {
				return err
			}
			if err := tenant.ValidateSlug(req.Slug); err != nil {
				return err
			}
			if err := email.Validate(req.AdminEmail); err != nil {
				return err
			}
			pw, err := a.readPassword("Admin password: ", passwordStdin)
			if err != nil {
				return err
			}
			if err := password.Validate(pw, req.AdminEmail); err != nil {
				return err
			}
			if req.AdminPasswordHash, err = password.NewHasher(password.OWASP, 1).Hash(ctx, pw); err != nil {
				return err
			}
			prov, _, err := a.provisioner(ctx)
			if err != nil {
				return err
			}
			req.Actor = "cli"
			start := time.Now()
			t, err := prov.Register(ctx, req)
			if err != nil {
				return err
			}
			t, err = prov.Provision(ctx, t.ID)
			if err != nil {
				return fmt.Errorf("provisioning %s was interrupted (run `tenantplane tenants retry %s` to finish): %w", req.Slug, req.Slug, err)
			}
			if t.Status == tenant.StatusFailed {
				return fmt.Errorf("provisioning %s failed: %s (fix the cause, then `tenantplane tenants retry %s`)", t.Slug, t.LastError, t.Slug)
			}
			if a.output == "table" {
				fmt.Fprintf(a.stderr, "tenant %s is %s (%d ms)\n", t.Slug, t.Status, time.Since(start).Milliseconds())
			}
			return a.printTenant(t, nil)
		},
	}
	f := cmd.Flags()
	f.StringVar(&req.Name, "name", "", "display name (default: the slug)")
	f.StringVar(&req.AdminEmail, "admin-email", "", "email of the tenant superuser (required)")
	f.StringVar(&iso, "isolation", "schema", "schema (a schema in the shard's database) or database (a database of its own)")
	f.StringVar(&req.Shard, "shard", "", "shard to place the tenant on (default: the least loaded)")
	f.StringVar(&req.Plan, "plan", "free", "plan name")
	f.BoolVar(&passwordStdin, "password-stdin", false, "read the admin password from the first line of stdin")
	return cmd
}

func (a *app) tenantsListCmd() *cobra.Command {
	var f tenant.ListFilter
	var status string
	var all bool
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List tenants (every status but purged unless --status says otherwise)",
		Args:  exactArgs(0, ""),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if status != "" {
				st, err := tenant.ParseStatus(status)
				if err != nil {
					return err
				}
				f.Status = st
			}
			_, store, err := a.provisioner(cmd.Context())
			if err != nil {
				return err
			}
			var out []*tenant.Tenant
			for {
				page, next, err := store.List(cmd.Context(), f)
				if err != nil {
					return err
				}
				out = append(out, page...)
				if next == "" || !all {
					break
				}
				f.After = next
			}
			return a.printTenants(out)
		},
	}
	cmd.Flags().StringVar(&status, "status", "", "only tenants in this status")
	cmd.Flags().StringVar(&f.Shard, "shard", "", "only tenants on this shard")
	cmd.Flags().IntVar(&f.Limit, "limit", 1000, "page size (1-1000)")
	cmd.Flags().BoolVar(&all, "all", true, "walk every page")
	return cmd
}

func (a *app) tenantsShowCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "show SLUG",
		Short: "Show one tenant, and its move in progress if any",
		Args:  exactArgs(1, "SLUG"),
		RunE: func(cmd *cobra.Command, args []string) error {
			prov, store, err := a.provisioner(cmd.Context())
			if err != nil {
				return err
			}
			t, err := store.Get(cmd.Context(), args[0])
			if err != nil {
				return fmt.Errorf("tenant %q: %w", args[0], err)
			}
			m, err := prov.MoveStatus(cmd.Context(), t.Slug)
			if err != nil {
				return fmt.Errorf("tenant %q: reading its move: %w", t.Slug, err)
			}
			return a.printTenant(t, m)
		},
	}
}

func (a *app) tenantsTransitionCmd(verb, short string) *cobra.Command {
	return &cobra.Command{
		Use:   verb + " SLUG",
		Short: short,
		Args:  exactArgs(1, "SLUG"),
		RunE: func(cmd *cobra.Command, args []string) error {
			prov, _, err := a.provisioner(cmd.Context())
			if err != nil {
				return err
			}
			op := map[string]func() (*tenant.Tenant, error){
				"suspend": func() (*tenant.Tenant, error) { return prov.Suspend(cmd.Context(), args[0], "cli") },
				"resume":  func() (*tenant.Tenant, error) { return prov.Resume(cmd.Context(), args[0], "cli") },
				"restore": func() (*tenant.Tenant, error) { return prov.Restore(cmd.Context(), args[0], "cli") },
			}[verb]
			t, err := op()
			if err != nil {
				return err
			}
			return a.printTenant(t, nil)
		},
	}
}

func (a *app) tenantsDeleteCmd() *cobra.Command {
	var grace time.Duration
	cmd := &cobra.Command{
		Use:   "delete SLUG",
		Short: "Stop serving a tenant and schedule its purge after the grace period (restore undoes it)",
		Args:  exactArgs(1, "SLUG"),
		RunE: func(cmd *cobra.Command, args []string) error {
			prov, _, err := a.provisioner(cmd.Context())
			if err != nil {
				return err
			}
			if grace <= 0 {
				grace = a.cfg.DeleteGrace
			}
			t, err := prov.Delete(cmd.Context(), args[0], "cli", grace)
			if err != nil {
				return err
			}
			return a.printTenant(t, nil)
		},
	}
	cmd.Flags().DurationVar(&grace, "grace", 0, "how long the tenant can be restored (default TENANTPLANE_DELETE_GRACE, 7 days)")
	return cmd
}

func (a *app) tenantsPurgeCmd() *cobra.Command {
	var opt provisioner.PurgeOptions
	var yes bool
	cmd := &cobra.Command{
		Use:   "purge SLUG",
		Short: "Remove a deleted tenant's schema or database, role and search index for good",
		Long: `Purge removes a tenant in pending_deletion for good: its schema (or database), its
role and its search index. The registry keeps the row, marked purged, so the names are
never given out again. --dry-run lists exactly what would be removed.`,
		Args: exactArgs(1, "SLUG"),
		RunE: func(cmd *cobra.Command, args []string) error {
			prov, _, err := a.provisioner(cmd.Context())
			if err != nil {
				return err
			}
			opt.Actor = "cli"
			if !opt.DryRun && !yes {
				dry := opt
				dry.DryRun = true
				plan, err := prov.Purge(cmd.Context(), args[0], dry)
				if err != nil {
					return err
				}
				ok, err := a.confirm(fmt.Sprintf("This will:\n  %s\nType the slug to confirm: ", strings.Join(plan, "\n  ")), args[0])
				if err != nil {
					return err
				}
				if !ok {
					return usagef("purge not confirmed; nothing was removed (pass --yes to skip the question)")
				}
			}
			plan, err := prov.Purge(cmd.Context(), args[0], opt)
			if err != nil {
				return err
			}
			if a.output == "json" {
				return printJSON(a.stdout, map[string]any{"slug": args[0], "dry_run": opt.DryRun, "actions": plan})
			}
			prefix := "removed: "
			if opt.DryRun {
				prefix = "would remove: "
			}
			for _, p := range plan {
				fmt.Fprintln(a.stdout, prefix+p)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&opt.DryRun, "dry-run", false, "list what would be removed and remove nothing")
	cmd.Flags().BoolVar(&opt.Force, "force", false, "purge before the grace period has ended")
	cmd.Flags().BoolVarP(&yes, "yes", "y", false, "do not ask for confirmation")
	return cmd
}

func (a *app) tenantsRetryCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "retry [SLUG]",
		Short: "Finish provisioning a failed or interrupted tenant (all interrupted ones without SLUG)",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			prov, _, err := a.provisioner(cmd.Context())
			if err != nil {
				return err
			}
			if len(args) == 0 {
				n, err := prov.ResumeInterrupted(cmd.Context())
				fmt.Fprintf(a.stderr, "resumed %d interrupted tenant(s)\n", n)
				return err
			}
			t, err := prov.Retry(cmd.Context(), args[0], "cli")
			if err != nil {
				return err
			}
			if t.Status == tenant.StatusFailed {
				return fmt.Errorf("provisioning %s failed again: %s", t.Slug, t.LastError)
			}
			return a.printTenant(t, nil)
		},
	}
}

// exactArgs is cobra.ExactArgs with a message naming what is expected.
func exactArgs(n int, what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			if n == 0 {
				return usagef("%s takes no arguments (got %q)", cmd.CommandPath(), args)
			}
			return usagef("%s needs %s (see --help)", cmd.CommandPath(), what)
		}
		return nil
	}
}

// readPassword reads a password from a terminal prompt (asked twice) or, with
// fromStdin or when stdin is not a terminal, from the first line of stdin.
func (a *app) readPassword(prompt string, fromStdin bool) (string, error) {
	if f, ok := a.stdin.(*os.File); ok && !fromStdin && term.IsTerminal(int(f.Fd())) {
		fmt.Fprint(a.stderr, prompt)
		pw, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(a.stderr)
		if err != nil {
			return "", fmt.Errorf("reading password: %w", err)
		}
		fmt.Fprint(a.stderr, "Again: ")
		again, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(a.stderr)
		if err != nil {
			return "", fmt.Errorf("reading password: %w", err)
		}
		if string(pw) != string(again) {
			return "", usagef("the passwords differ")
		}
		return string(pw), nil
	}
	line, err := bufio.NewReader(a.stdin).ReadString('\n')
	line = strings.TrimRight(line, "\r\n")
	if line == "" {
		if err != nil {
			return "", usagef("no password on stdin")
		}
		return "", usagef("empty password")
	}
	return line, nil
}

// confirm asks a question and reports whether the answer equals want.
func (a *app) confirm(question, want string) (bool, error) {
	fmt.Fprint(a.stderr, question)
	line, err := bufio.NewReader(a.stdin).ReadString('\n')
	if err != nil && line == "" {
		return false, nil
	}
	return strings.TrimSpace(line) == want, nil
}
