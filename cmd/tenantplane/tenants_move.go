package main

import (
	"fmt"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/tenantplane/tenantplane/provisioner"
	"github.com/tenantplane/tenantplane/tenant"
)

// moveProgress returns the progress display of a move: on a terminal a bar of the rows
// copied, described by the step; otherwise a line at each new step (and with the rows
// and lag when the move reports them); nothing with --output json. Call the returned
// function when the move ends.
func (a *app) moveProgress(slug string) (func(provisioner.MoveState), func()) {
	if a.output == "json" {
		return nil, func() {}
	}
	var mu sync.Mutex
	var bar *progressbar.ProgressBar
	last := tenant.Step("")
	progress := func(m provisioner.MoveState) {
		mu.Lock()
		defer mu.Unlock()
		if !isTerminal(a.stderr) {
			if m.Step != last {
				fmt.Fprintf(a.stderr, "moving %s to %s: %s\n", slug, describeTarget(m), moveLine(m))
				last = m.Step
			}
			return
		}
		if bar == nil {
			bar = progressbar.NewOptions64(-1, progressbar.OptionSetWriter(a.stderr), progressbar.OptionShowCount(),
				progressbar.OptionThrottle(100*time.Millisecond), progressbar.OptionClearOnFinish())
		}
		if m.TotalRows > 0 {
			bar.ChangeMax64(m.TotalRows)
		}
		bar.Describe(fmt.Sprintf("moving %s: %s", slug, moveLine(m)))
		_ = bar.Set64(m.CopiedRows)
	}
	return progress, func() {
		mu.Lock()
		defer mu.Unlock()
		if bar != nil {
			_ = bar.Finish()
		}
	}
}

// describeTarget names where a move goes: its shard and isolation.
func describeTarget(m provisioner.MoveState) string {
	s := fmt.Sprintf("shard %s, %s isolation", m.ToShard, m.Isolation)
	if m.Offline {
		s += ", offline"
	}
	return s
}

// moveLine says where a move stands: its step, the rows copied and the replication lag.
func moveLine(m provisioner.MoveState) string {
	s := string(m.Step)
	if s == "" {
		s = "starting"
	}
	if m.TotalRows > 0 {
		s += fmt.Sprintf(", %d of %d rows copied", m.CopiedRows, m.TotalRows)
	}
	if m.LagBytes > 0 {
		s += fmt.Sprintf(", %d bytes behind", m.LagBytes)
	}
	if m.Error != "" {
		s += ", error: " + m.Error
	}
	return s
}

func (a *app) tenantsMoveCmd() *cobra.Command {
	var req provisioner.MoveRequest
	var iso string
	var abort bool
	cmd := &cobra.Command{
		Use:   "move SLUG --shard S [--isolation schema|database] [--offline] | move SLUG --abort",
		Short: "Move a tenant to another shard or isolation while it keeps serving (or abort its move)",
		Long: `Move a tenant to another shard or isolation mode. The tenant keeps serving while
its data is copied and replicated to the target; for the moment of the switch its
writes are refused with 503 tenant_moving (Retry-After: 1) while reads go on. With
--offline writes are refused throughout the copy, for shards without logical
replication. Progress is written to stderr; the moved tenant to stdout.
--abort stops the tenant's move in progress and removes what it made on the target.`,
		Example: `  tenantplane tenants move acme --shard eu2
  tenantplane tenants move acme --isolation database
  tenantplane tenants move acme --abort`,
		Args: exactArgs(1, "SLUG"),
		RunE: func(cmd *cobra.Command, args []string) error {
			prov, _, err := a.provisioner(cmd.Context())
			if err != nil {
				return err
			}
			if abort {
				if req.Shard != "" || iso != "" || req.Offline {
					return usagef("--abort takes no --shard, --isolation or --offline")
				}
				t, err := prov.AbortMove(cmd.Context(), args[0], "cli")
				if err != nil {
					return err
				}
				return a.printTenant(t, nil)
			}
			if req.Shard == "" && iso == "" {
				return usagef("say where to move the tenant: --shard, --isolation or both")
			}
			if iso != "" {
				if req.Isolation, err = tenant.ParseIsolation(iso); err != nil {
					return err
				}
			}
			req.Actor = "cli"
			progress, done := a.moveProgress(args[0])
			req.Progress = progress
			t, err := prov.Move(cmd.Context(), args[0], req)
			done()
			if err != nil {
				return err
			}
			return a.printTenant(t, nil)
		},
	}
	f := cmd.Flags()
	f.StringVar(&req.Shard, "shard", "", "target shard (default: the tenant's)")
	f.StringVar(&iso, "isolation", "", "target isolation: schema or database (default: the tenant's)")
	f.BoolVar(&req.Offline, "offline", false, "refuse writes throughout the copy instead of replicating (shards without logical replication)")
	f.BoolVar(&abort, "abort", false, "stop the tenant's move in progress and remove what it made on the target")
	return cmd
}

func (a *app) tenantsDropMovedCmd() *cobra.Command {
	var grace time.Duration
	cmd := &cobra.Command{
		Use:   "drop-moved [--grace D]",
		Short: "Drop the sources that moves left behind once their grace period has passed",
		Long: `A moved tenant's old schema (or database) stays on its source shard, unwritable,
for the deletion grace period (TENANTPLANE_DELETE_GRACE), so that a move can be undone
by hand. drop-moved drops those whose grace has passed, with the tenant's role on the
old cluster when the move left one there; run it daily (the chart's backup CronJob
schedule is a good slot). A source that cannot be dropped now is tried again next time.`,
		Example: `  tenantplane tenants drop-moved
  tenantplane tenants drop-moved --grace 0   # now, whatever their age`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !cmd.Flags().Changed("grace") {
				grace = a.cfg.DeleteGrace
			}
			if grace < 0 {
				return usagef("--grace must not be negative")
			}
			prov, _, err := a.provisioner(cmd.Context())
			if err != nil {
				return err
			}
			n, err := prov.DropMovedSources(cmd.Context(), grace)
			if a.output == "json" && err == nil {
				return printJSON(a.stdout, map[string]any{"dropped": n})
			}
			if n > 0 || err == nil {
				fmt.Fprintf(a.stdout, "dropped %d moved-away source(s)\n", n)
			}
			return err
		},
	}
	cmd.Flags().DurationVar(&grace, "grace", 0, "drop sources moved at least this long ago (default TENANTPLANE_DELETE_GRACE, 7 days)")
	return cmd
}
