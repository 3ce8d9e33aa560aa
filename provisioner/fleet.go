package provisioner

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tenantplane/tenantplane/apperr"
	"github.com/tenantplane/tenantplane/lifecycle"
	"github.com/tenantplane/tenantplane/tenant"
)

// The fleet orchestrator migrates every tenant schema to one version, with bounded
// parallelism per shard, recording each tenant's progress in the migration ledger
// (public.migration_runs and public.migration_entries) so that a run can be followed
// while it goes, read back after it ended, and finished by the next run when its
// process was interrupted or killed.

// RunState is the state of a fleet migration run.
type RunState string

// Fleet run states.
const (
	RunRunning     RunState = "running"     // its process is migrating tenants
	RunDone        RunState = "done"        // every tenant reached the target or was skipped
	RunFailed      RunState = "failed"      // at least one tenant failed
	RunCanceled    RunState = "canceled"    // stopped by its caller (Ctrl-C, Stop); the rest stays pending
	RunInterrupted RunState = "interrupted" // its process died; a later run found it so
)

// EntryState is the state of one tenant within a run.
type EntryState string

// Ledger entry states.
const (
	EntryPending EntryState = "pending" // not started (yet)
	EntryRunning EntryState = "running" // being migrated
	EntryDone    EntryState = "done"    // at the target version
	EntryFailed  EntryState = "failed"  // the migration failed; Error says why
	EntrySkipped EntryState = "skipped" // not migrated; Detail says why
)

// EntryStates lists every entry state, in the order a tenant goes through them.
var EntryStates = []EntryState{EntryPending, EntryRunning, EntryDone, EntryFailed, EntrySkipped}

// ParseEntryState validates s as an entry state name.
func ParseEntryState(s string) (EntryState, error) {
	for _, st := range EntryStates {
		if string(st) == s {
			return st, nil
		}
	}
	return "", apperr.Invalidf("unknown migration state %q (want one of pending, running, done, failed, skipped)", s)
}

// Fleet run limits.
const (
	defaultFleetParallel = 4
	maxFleetParallel     = 64
	// fleetAttempts is how often a tenant is tried within one run when its failure is
	// transient (no connection, lock wait exceeded); a failed migration is not retried.
	fleetAttempts = 3
)

// RunOptions says what a fleet run does.
type RunOptions struct {
	// To is the version to bring every tenant to. 0 (or -1) means the newest migration
	// known to the binary; such a run only ever migrates up. A lower version migrates the
	// tenants above it down. Going below the first migration is not a fleet operation.
	To int `json:"to"`
	// Parallel is how many tenants are migrated at once (default 4, at most 64), further
	// bounded per shard by FleetConfig.ShardConns.
	Parallel int `json:"parallel"`
	// Canary migrates the first Canary tenants needing a migration on their own, and
	// stops the run, touching no other tenant, when any of them fails.
	Canary int `json:"canary,omitempty"`
	// Tenants restricts the run to these slugs, migrated in this order.
	Tenants []string `json:"tenants,omitempty"`
	// StopOnError stops starting tenants after the first failure; the tenants not yet
	// started are recorded as skipped. By default one broken tenant never stops the
	// others (the CLI's --continue-on-error, on unless turned off).
	StopOnError bool `json:"stop_on_error,omitempty"`
	// RetryFailed restricts the run to the tenants that failed in the last finished run.
	RetryFailed bool `json:"retry_failed,omitempty"`
	// DryRun plans the run and returns it, migrating nothing and writing no ledger.
	DryRun bool `json:"dry_run,omitempty"`
	// Actor is who asked, for the ledger: "cli", a platform user's email.
	Actor string `json:"actor,omitempty"`
	// OnProgress, when set, is called after each tenant finishes and once at the start,
	// never concurrently.
	OnProgress func(Progress) `json:"-"`
}

// Progress is a snapshot of a running fleet run, for progress bars.
type Progress struct {
	RunID     string        `json:"run_id"`
	Total     int           `json:"total"`
	Done      int           `json:"done"`
	Failed    int           `json:"failed"`
	Skipped   int           `json:"skipped"`
	Running   int           `json:"running"`
	Remaining int           `json:"remaining"` // neither finished nor skipped
	Elapsed   time.Duration `json:"elapsed"`
	// Rate is tenants migrated (done or failed) per second since the run started.
	Rate float64 `json:"rate"`
	// Tenant, State and Error describe the tenant that just finished; Tenant is empty in
	// the first report.
	Tenant string     `json:"tenant,omitempty"`
	State  EntryState `json:"state,omitempty"`
	Error  string     `json:"error,omitempty"`
}

// Run is a fleet migration run as the ledger records it.
type Run struct {
	ID            string     `json:"id"`
	Actor         string     `json:"actor"`
	State         RunState   `json:"state"`
	TargetVersion int64      `json:"target_version"`
	Options       RunOptions `json:"options"`
	Total         int        `json:"total"`
	Pending       int        `json:"pending"`
	Running       int        `json:"running"`
	Done          int        `json:"done"`
	Failed        int        `json:"failed"`
	Skipped       int        `json:"skipped"`
	// Error says why the run stopped early (canary failure, stop on error, cancel).
	Error      string     `json:"error,omitempty"`
	StartedAt  time.Time  `json:"started_at"`
	FinishedAt *time.Time `json:"finished_at,omitempty"`
	// Failures are the failed and still running entries, in run order (at most 100).
	Failures []Entry `json:"failures,omitempty"`
	// DryRun marks a planned run that was not executed; Entries then lists every tenant
	// of the plan (pending: would migrate; skipped: already at the target), with what the
	// run would do in Detail.
	DryRun  bool    `json:"dry_run,omitempty"`
	Entries []Entry `json:"entries,omitempty"`
}

// Entry is one tenant of a run.
type Entry struct {
	TenantID      string     `json:"tenant_id"`
	Slug          string     `json:"slug"`
	Shard         string     `json:"shard"`
	Position      int        `json:"position"`
	FromVersion   int64      `json:"from_version"`
	TargetVersion int64      `json:"target_version"`
	Version       *int64     `json:"version,omitempty"` // read from the schema after migrating
	State         EntryState `json:"state"`
	Detail        string     `json:"detail,omitempty"`
	Error         string     `json:"error,omitempty"`
	Attempts      int        `json:"attempts"`
	StartedAt     *time.Time `json:"started_at,omitempty"`
	FinishedAt    *time.Time `json:"finished_at,omitempty"`
}

// FleetConfig configures a Fleet.
type FleetConfig struct {
	// ShardConns bounds how many tenants of one shard are migrated at once; each
	// migration holds one connection to the shard. 0 means half the connections the
	// shard has free when a run starts (max_connections less the reserved ones and those
	// in use), at least 1.
	ShardConns int
	// Logger receives run summaries and tenant failures (default: the provisioner's).
	Logger *slog.Logger
	// Now is the clock (default: the provisioner's).
	Now func() time.Time
}

// Fleet runs migrations across the tenant fleet and keeps the ledger. Run runs one in
// the caller's goroutine (the CLI); StartRun runs one in the background (the platform
// API), between Start and Stop. Several runs, from one process or many, may overlap:
// each tenant schema is migrated by one of them at a time, under golang-migrate's lock.
type Fleet struct {
	p          *Provisioner
	db         *pgxpool.Pool
	shardConns int
	log        *slog.Logger
	now        func() time.Time

	// group runs the background runs between Start and Stop; started is set once Start
	// succeeded.
	group   lifecycle.Group
	started atomic.Bool

	// crashAfter, when set by tests, ends a run as a killed process would when it starts
	// a tenant after that many have finished: no more ledger writes, the lock dropped.
	crashAfter int
	// beforeTenant, when set by tests, runs as a tenant of a planned run is about to be
	// migrated: what happens to the tenant between the plan and its turn.
	beforeTenant func(*tenant.Tenant)
}

// NewFleet returns a Fleet migrating the tenants of the provisioner's registry with its
// tenant migration set. It starts nothing.
func NewFleet(p *Provisioner, cfg FleetConfig) *Fleet {
	f := &Fleet{p: p, db: p.store.Pool(), shardConns: cfg.ShardConns, log: cfg.Logger, now: cfg.Now}
	if f.log == nil {
		f.log = p.log
	}
	if f.now == nil {
		f.now = p.now
	}
	return f
}

// Start lets StartRun run fleet migrations in the background until Stop or until ctx
// ends, and marks the runs of dead processes interrupted. It returns an error wrapping
// lifecycle.ErrStarted when the fleet was already started or stopped, and one when the
// registry is unreachable.
func (f *Fleet) Start(ctx context.Context) error {
	if err := f.group.Start(ctx); err != nil {
		return fmt.Errorf("starting fleet migrations: %w", err)
	}
	f.started.Store(true)
	if _, err := f.recoverDeadRuns(ctx); err != nil {
		return fmt.Errorf("starting fleet migrations: %w", err)
	}
	return nil
}

// Stop cancels the background runs and waits for them: each stops after the migration
// files in flight, records the tenants left as pending and ends canceled.
func (f *Fleet) Stop() {
	f.group.Stop(0)
}

// Run plans and executes a fleet migration run in the caller's goroutine and returns
// the run as the ledger recorded it. Tenant failures do not make an error: they are
// counted in Run.Failed (and the run's state is failed). It returns Invalid or NotFound
// errors for bad options or unknown tenants; when ctx ends it stops after the migration
// files in flight and returns the canceled run with ctx's error.
func (f *Fleet) Run(ctx context.Context, opts RunOptions) (*Run, error) {
	r, dry, err := f.prepare(ctx, opts)
	if err != nil || dry != nil {
		return dry, err
	}
	return r.execute(ctx)
}

// StartRun plans a fleet migration run, records it in the ledger and runs it in the
// background; GetRun follows it. It returns the run id, Invalid or NotFound errors for bad
// options or unknown tenants, and Unavailable when the fleet is not started or stopping.
// A dry run cannot be started: use Run.
func (f *Fleet) StartRun(ctx context.Context, opts RunOptions) (string, error) {
	if opts.DryRun {
		return "", apperr.Invalidf("a dry run is not started in the background; plan it with a synchronous run")
	}
	if !f.started.Load() || f.group.Stopping() {
		return "", apperr.New(apperr.Unavailable, "fleet_unavailable", "fleet migrations are not running on this server")
	}
	r, _, err := f.prepare(ctx, opts)
	if err != nil {
		return "", err
	}
	started := f.group.Go(func(ctx context.Context) {
		if _, err := r.execute(ctx); err != nil && ctx.Err() == nil {
			f.log.Error("fleet migration run", "run", r.id, "error", err)
		}
	})
	if !started {
		r.abandon(ctx, "the server stopped before the run began")
		return "", apperr.New(apperr.Unavailable, "fleet_unavailable", "fleet migrations are stopping on this server")
	}
	return r.id, nil
}
