package main

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/tenantplane/tenantplane/provisioner"
)

// fleet returns the fleet orchestrator over the configured shards.
func (a *app) fleet(cmd *cobra.Command) (*provisioner.Fleet, error) {
	prov, _, err := a.provisioner(cmd.Context())
	if err != nil {
		return nil, err
	}
	return provisioner.NewFleet(prov, provisioner.FleetConfig{Logger: a.log}), nil
}

// isTerminal reports whether w is an interactive terminal (for progress bars).
func isTerminal(w any) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

func (a *app) migrateTenantsCmd() *cobra.Command {
	var opts provisioner.RunOptions
	continueOnError := true
	cmd := &cobra.Command{
		Use:   "tenants",
		Short: "Migrate every tenant schema (or some) to the newest version, or --to a version",
		Long: `Migrate tenant schemas across the fleet, recorded in the migration ledger.

Tenants already at the target version are skipped without a connection. One failing
tenant does not stop the others (unless --continue-on-error=false); the run exits
non-zero when any tenant failed. An interrupted run (Ctrl-C, a killed process) is
finished by running the command again. A progress bar shows done/failed/remaining on a
terminal; elsewhere a line per tenant is printed.`,
		Example: `  tenantplane migrate tenants --parallel 8
  tenantplane migrate tenants --canary 10 --parallel 4
  tenantplane migrate tenants --tenant acme --tenant globex --to 1
  tenantplane migrate tenants --retry-failed`,
		Args: exactArgs(0, ""),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if opts.Parallel < 1 || opts.Parallel > 256 {
				return usagef("--parallel must be between 1 and 256")
			}
			if opts.Canary < 0 {
				return usagef("--canary must not be negative")
			}
			opts.StopOnError = !continueOnError
			opts.Actor = "cli"
			f, err := a.fleet(cmd)
			if err != nil {
				return err
			}
			finish := a.progress(&opts)
			run, err := f.Run(cmd.Context(), opts)
			finish()
			if run != nil {
				if perr := a.printRun(run); perr != nil {
					return perr
				}
			}
			if err != nil {
				if errors.Is(err, cmd.Context().Err()) {
					return fmt.Errorf("interrupted; run the command again to finish the remaining tenants: %w", err)
				}
				return err
			}
			if run.Failed > 0 {
				return fmt.Errorf("%d tenant(s) failed to migrate; see `tenantplane migrate status --state failed`", run.Failed)
			}
			return nil
		},
	}
	fl := cmd.Flags()
	fl.IntVar(&opts.Parallel, "parallel", 4, "tenants migrated at once (bounded by each shard's connection budget)")
	fl.IntVar(&opts.Canary, "canary", 0, "migrate this many tenants first and stop if any fails")
	fl.StringArrayVar(&opts.Tenants, "tenant", nil, "only this tenant (repeatable)")
	fl.BoolVar(&continueOnError, "continue-on-error", true, "keep migrating the others when a tenant fails")
	fl.BoolVar(&opts.RetryFailed, "retry-failed", false, "only the tenants that failed in the last run")
	fl.BoolVar(&opts.DryRun, "dry-run", false, "list what would be migrated and change nothing")
	fl.IntVar(&opts.To, "to", -1, "target version (default: the newest; lower versions migrate down)")
	return cmd
}

// progress installs the progress display on opts and returns the function that ends it:
// a bar on a terminal, a line per finished tenant otherwise (none with --output json).
func (a *app) progress(opts *provisioner.RunOptions) func() {
	if a.output == "json" {
		return func() {}
	}
	if !isTerminal(a.stderr) {
		opts.OnProgress = func(p provisioner.Progress) {
			if p.Tenant == "" {
				return
			}
			line := fmt.Sprintf("[%d/%d] %s %s", p.Done+p.Failed+p.Skipped, p.Total, p.Tenant, p.State)
			if p.Error != "" {
				line += ": " + p.Error
			}
			fmt.Fprintln(a.stderr, line)
		}
		return func() {}
	}
	var bar *progressbar.ProgressBar
	opts.OnProgress = func(p provisioner.Progress) {
		if bar == nil {
			bar = progressbar.NewOptions(p.Total,
				progressbar.OptionSetWriter(a.stderr),
				progressbar.OptionSetDescription("migrating"),
				progressbar.OptionShowCount(),
				progressbar.OptionSetWidth(30),
				progressbar.OptionThrottle(100*time.Millisecond),
				progressbar.OptionClearOnFinish(),
			)
		}
		bar.Describe(fmt.Sprintf("done %d failed %d skipped %d left %d (%.0f/s)", p.Done, p.Failed, p.Skipped, p.Remaining, p.Rate))
		_ = bar.Set(p.Done + p.Failed + p.Skipped)
	}
	return func() {
		if bar != nil {
			_ = bar.Finish()
		}
	}
}

func (a *app) printRun(run *provisioner.Run) error {
	if a.output == "json" {
		return printJSON(a.stdout, run)
	}
	if run.DryRun {
		fmt.Fprintf(a.stdout, "dry run: nothing was changed; target version %d, %d tenants: %d to migrate, %d to skip\n",
			run.TargetVersion, run.Total, run.Pending, run.Skipped)
		if len(run.Entries) == 0 {
			fmt.Fprintln(a.stdout, "no tenant is covered by the run (none is active, suspended, pending deletion or failed after its migrations)")
			return nil
		}
		rows := make([][]string, 0, len(run.Entries))
		for _, e := range run.Entries {
			rows = append(rows, []string{e.Slug, e.Shard, fmt.Sprint(e.FromVersion), fmt.Sprint(e.TargetVersion), dryRunAction(e), e.Detail})
		}
		return table(a.stdout, []string{"TENANT", "SHARD", "FROM", "TO", "WOULD", "DETAIL"}, rows)
	}
	fmt.Fprintf(a.stdout, "run %s %s: target version %d, %d tenants: %d done, %d skipped, %d failed, %d pending\n",
		run.ID, run.State, run.TargetVersion, run.Total, run.Done, run.Skipped, run.Failed, run.Pending)
	if len(run.Failures) > 0 {
		rows := make([][]string, 0, len(run.Failures))
		for _, e := range run.Failures {
			rows = append(rows, []string{e.Slug, e.Shard, fmt.Sprint(e.FromVersion), e.Error})
		}
		return table(a.stdout, []string{"FAILED TENANT", "SHARD", "AT VERSION", "ERROR"}, rows)
	}
	return nil
}

// dryRunAction is what a run would do to the tenant of a planned entry.
func dryRunAction(e provisioner.Entry) string {
	switch {
	case e.State == provisioner.EntrySkipped:
		return "skip"
	case e.FromVersion < e.TargetVersion:
		return "migrate up"
	case e.FromVersion > e.TargetVersion:
		return "migrate down"
	}
	return "migrate"
}

func (a *app) migrateStatusCmd() *cobra.Command {
	var flt provisioner.StatusFilter
	var state string
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show each tenant's schema version, dirty flag and last migration result",
		Example: `  tenantplane migrate status
  tenantplane migrate status --state failed
  tenantplane migrate status --verify -o json`,
		Args: exactArgs(0, ""),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if state != "" {
				st, err := provisioner.ParseEntryState(state)
				if err != nil {
					return err
				}
				flt.State = st
			}
			f, err := a.fleet(cmd)
			if err != nil {
				return err
			}
			list, err := f.Status(cmd.Context(), flt)
			if err != nil {
				return err
			}
			if a.output == "json" {
				if list == nil {
					list = []*provisioner.TenantMigration{}
				}
				return printJSON(a.stdout, list)
			}
			rows := make([][]string, 0, len(list))
			for _, m := range list {
				flags := ""
				if m.Dirty {
					flags += "dirty "
				}
				if m.Migrating {
					flags += "migrating "
				}
				if m.Behind {
					flags += "behind"
				}
				if m.Catalog != nil && m.Catalog.Corrected {
					flags += " corrected"
				}
				rows = append(rows, []string{m.Slug, m.Shard, string(m.Status), fmt.Sprint(m.Version), flags, string(m.LastState), m.LastError})
			}
			return table(a.stdout, []string{"TENANT", "SHARD", "STATUS", "VERSION", "FLAGS", "LAST RUN", "LAST ERROR"}, rows)
		},
	}
	cmd.Flags().StringVar(&state, "state", "", "only tenants whose last entry is pending, running, done, failed or skipped")
	cmd.Flags().BoolVar(&flt.Dirty, "dirty", false, "only dirty tenants")
	cmd.Flags().StringArrayVar(&flt.Tenants, "tenant", nil, "only this tenant (repeatable)")
	cmd.Flags().BoolVar(&flt.Verify, "verify", false, "read each tenant's version table and correct the registry where it disagrees")
	return cmd
}

func (a *app) migrateForceCmd() *cobra.Command {
	var yes bool
	cmd := &cobra.Command{
		Use:   "force SLUG VERSION",
		Short: "Mark a tenant's schema as being at VERSION and clean (after fixing a dirty migration by hand)",
		Long: `Force records VERSION as the tenant's schema version and clears the dirty flag,
without running any migration. Use it after repairing a schema that an interrupted or
broken migration left dirty; then run migrate tenants --retry-failed.`,
		Args: exactArgs(2, "SLUG and VERSION"),
		RunE: func(cmd *cobra.Command, args []string) error {
			v, err := strconv.Atoi(args[1])
			if err != nil || v < 0 {
				return usagef("VERSION must be a non-negative integer, not %q", args[1])
			}
			if !yes {
				ok, err := a.confirm(fmt.Sprintf("Force tenant %s to version %d without running migrations? Type the slug to confirm: ", args[0], v), args[0])
				if err != nil {
					return err
				}
				if !ok {
					return usagef("not confirmed; nothing changed (pass --yes to skip the question)")
				}
			}
			f, err := a.fleet(cmd)
			if err != nil {
				return err
			}
			if err := f.Force(cmd.Context(), args[0], v, "cli"); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "tenant %s forced to version %d\n", args[0], v)
			return nil
		},
	}
	cmd.Flags().BoolVarP(&yes, "yes", "y", false, "do not ask for confirmation")
	return cmd
}
