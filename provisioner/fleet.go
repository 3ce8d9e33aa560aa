package provisioner

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang-migrate/migrate/v4"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tenantplane/tenantplane/apperr"
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
	// DryRun marks a planned run that was not executed; Entries then lists the tenants
	// it would migrate.
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

	// mu guards base, cancel, started, stopped and every wg.Add (none after stopped).
	mu      sync.Mutex
	base    context.Context
	cancel  context.CancelFunc
	started bool
	stopped bool
	wg      sync.WaitGroup

	// crashAfter, when set by tests, ends a run as a killed process would when it starts
	// a tenant after that many have finished: no more ledger writes, the lock dropped.
	crashAfter int
}

// NewFleet returns a Fleet migrating the tenants of the provisioner's registry with its
// tenant migration set. It starts nothing.
func NewFleet(p *Provisioner, cfg FleetConfig) *Fleet {
	f := &Fleet{p: p, db: p.store.DB(), shardConns: cfg.ShardConns, log: cfg.Logger, now: cfg.Now}
	if f.log == nil {
		f.log = p.log
	}
	if f.now == nil {
		f.now = p.now
	}
	return f
}

// Start lets StartRun run fleet migrations in the background until Stop or until ctx
// ends, and marks the runs of dead processes interrupted. It returns an error when the
// fleet was already started or stopped, or the registry is unreachable.
func (f *Fleet) Start(ctx context.Context) error {
	f.mu.Lock()
	if f.started || f.stopped {
		f.mu.Unlock()
		return errors.New("fleet migrations already started or stopped")
	}
	f.started = true
	f.base, f.cancel = context.WithCancel(ctx)
	f.mu.Unlock()
	if _, err := f.recoverDeadRuns(ctx); err != nil {
		return fmt.Errorf("starting fleet migrations: %w", err)
	}
	return nil
}

// Stop cancels the background runs and waits for them: each stops after the migration
// files in flight, records the tenants left as pending and ends canceled.
func (f *Fleet) Stop() {
	f.mu.Lock()
	f.stopped = true
	if f.cancel != nil {
		f.cancel()
	}
	f.mu.Unlock()
	f.wg.Wait()
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
	f.mu.Lock()
	ok := f.started && !f.stopped
	f.mu.Unlock()
	if !ok {
		return "", apperr.New(apperr.Unavailable, "fleet_unavailable", "fleet migrations are not running on this server")
	}
	r, _, err := f.prepare(ctx, opts)
	if err != nil {
		return "", err
	}
	f.mu.Lock()
	if f.stopped {
		f.mu.Unlock()
		r.abandon(ctx, "the server stopped before the run began")
		return "", apperr.New(apperr.Unavailable, "fleet_unavailable", "fleet migrations are stopping on this server")
	}
	f.wg.Add(1)
	base := f.base
	f.mu.Unlock()
	go func() {
		defer f.wg.Done()
		if _, err := r.execute(base); err != nil && base.Err() == nil {
			f.log.Error("fleet migration run", "run", r.id, "error", err)
		}
	}()
	return r.id, nil
}

// fleetJob is one tenant of a run.
type fleetJob struct {
	t        *tenant.Tenant
	position int
	state    EntryState // pending, or skipped at planning
	detail   string
}

// fleetRun is a run being executed.
type fleetRun struct {
	f       *Fleet
	id      string
	opts    RunOptions
	target  int64
	up      bool // migrate with Up: never below any tenant's version
	jobs    []*fleetJob
	lock    *pgxpool.Conn // holds the run's advisory lock: the run is alive while held
	started time.Time
	limits  map[string]int // per-shard concurrency

	crashed atomic.Bool

	// extMu guards extDone: the shards whose extensions this run has checked.
	extMu   sync.Mutex
	extDone map[string]bool

	// mu guards the counters below, halt, and calls of opts.OnProgress.
	mu      sync.Mutex
	total   int
	done    int
	failed  int
	skipped int
	running int
	halt    string // why no more tenants are started ("" while they are)
}

// prepare validates the options, plans the run and, unless it is a dry run, records
// it in the ledger holding its lock. A dry run comes back as a *Run.
func (f *Fleet) prepare(ctx context.Context, opts RunOptions) (*fleetRun, *Run, error) {
	if opts.Parallel < 0 || opts.Parallel > maxFleetParallel {
		return nil, nil, apperr.Invalidf("parallel must be between 1 and %d", maxFleetParallel)
	}
	if opts.Canary < 0 {
		return nil, nil, apperr.Invalidf("canary must not be negative")
	}
	if opts.To < -1 {
		return nil, nil, apperr.Invalidf("target version must be a migration version, or -1 for the newest")
	}
	if opts.Parallel == 0 {
		opts.Parallel = defaultFleetParallel
	}
	if opts.Actor == "" {
		opts.Actor = "system"
	}
	target, up, err := f.resolveTarget(opts.To)
	if err != nil {
		return nil, nil, err
	}
	if _, err := f.recoverDeadRuns(ctx); err != nil {
		return nil, nil, err
	}
	jobs, err := f.plan(ctx, opts, target, up)
	if err != nil {
		return nil, nil, err
	}
	r := &fleetRun{f: f, id: uuid.NewString(), opts: opts, target: target, up: up, jobs: jobs, started: f.now(), extDone: map[string]bool{}}
	for _, j := range jobs {
		r.total++
		if j.state == EntrySkipped {
			r.skipped++
		}
	}
	if opts.DryRun {
		return nil, r.dryRun(), nil
	}
	if err := r.record(ctx); err != nil {
		return nil, nil, err
	}
	return r, nil, nil
}

// resolveTarget turns RunOptions.To into a version number, and whether the run goes up.
func (f *Fleet) resolveTarget(to int) (int64, bool, error) {
	versions, err := migrationVersions(f.p.tenantMigrations)
	if err != nil {
		return 0, false, err
	}
	if len(versions) == 0 {
		return 0, false, apperr.Invalidf("there are no tenant migrations")
	}
	if to <= 0 {
		return int64(versions[len(versions)-1]), true, nil
	}
	if !slices.Contains(versions, uint(to)) {
		return 0, false, apperr.New(apperr.Invalid, "unknown_version", "there is no tenant migration with version %d (known: %d to %d)",
			to, versions[0], versions[len(versions)-1])
	}
	return int64(to), false, nil
}

// migratable reports whether a fleet run covers the tenant: its schema has been
// migrated at least once by provisioning, and it is not purged. Tenants still in
// provisioning are migrated to the newest version by their own provisioning run.
func migratable(t *tenant.Tenant) error {
	switch t.Status {
	case tenant.StatusActive, tenant.StatusSuspended, tenant.StatusPendingDeletion:
		return nil
	case tenant.StatusFailed:
		if stepIndex(t.ProvisioningStep) >= stepIndex("migrations") {
			return nil
		}
		return apperr.New(apperr.Invalid, "tenant_not_migratable", "tenant %q failed before its schema was migrated; retry its provisioning", t.Slug)
	case tenant.StatusProvisioning:
		return apperr.New(apperr.Invalid, "tenant_not_migratable", "tenant %q is being provisioned, which migrates it to the newest version", t.Slug)
	}
	return apperr.New(apperr.Invalid, "tenant_not_migratable", "tenant %q is %s", t.Slug, t.Status)
}

func stepIndex(step string) int {
	return slices.Index(Steps, step)
}

// plan selects the tenants of a run, in order, and marks those already at the target
// (according to the registry) skipped.
func (f *Fleet) plan(ctx context.Context, opts RunOptions, target int64, up bool) ([]*fleetJob, error) {
	all, err := f.p.store.ListByStatus(ctx, tenant.StatusActive, tenant.StatusSuspended, tenant.StatusPendingDeletion, tenant.StatusFailed)
	if err != nil {
		return nil, err
	}
	var selected []*tenant.Tenant
	if len(opts.Tenants) > 0 {
		bySlug := make(map[string]*tenant.Tenant, len(all))
		for _, t := range all {
			bySlug[t.Slug] = t
		}
		seen := map[string]bool{}
		for _, slug := range opts.Tenants {
			if seen[slug] {
				continue
			}
			seen[slug] = true
			t, ok := bySlug[slug]
			if !ok {
				// Not live, or in a status no run covers: say which.
				if t, err = f.p.store.Get(ctx, slug); err != nil {
					return nil, err
				}
			}
			if err := migratable(t); err != nil {
				return nil, err
			}
			selected = append(selected, t)
		}
	} else {
		for _, t := range all {
			if migratable(t) == nil {
				selected = append(selected, t)
			}
		}
	}
	if opts.RetryFailed {
		failed, err := f.lastRunFailures(ctx)
		if err != nil {
			return nil, err
		}
		selected = slices.DeleteFunc(selected, func(t *tenant.Tenant) bool { return !failed[t.ID] })
	}

	jobs := make([]*fleetJob, 0, len(selected))
	var pending, skipped []*fleetJob
	for _, t := range selected {
		j := &fleetJob{t: t, state: EntryPending}
		switch {
		case t.MigrationDirty || t.Migrating:
			// Never trusted: a dirty schema is reported, a half-done run is finished.
		case t.MigrationVersion == target:
			j.state, j.detail = EntrySkipped, "already at the target version"
		case up && t.MigrationVersion > target:
			j.state, j.detail = EntrySkipped, fmt.Sprintf("at version %d, newer than the newest migration known here", t.MigrationVersion)
		}
		if j.state == EntrySkipped {
			skipped = append(skipped, j)
		} else {
			pending = append(pending, j)
		}
	}
	// The canaries are the first tenants that need a migration.
	jobs = append(append(jobs, pending...), skipped...)
	for i, j := range jobs {
		j.position = i
	}
	return jobs, nil
}

// dryRun describes the planned run without executing it.
func (r *fleetRun) dryRun() *Run {
	run := &Run{
		Actor: r.opts.Actor, State: RunDone, TargetVersion: r.target, Options: r.opts,
		Total: r.total, Skipped: r.skipped, Pending: r.total - r.skipped, StartedAt: r.started, DryRun: true,
	}
	for _, j := range r.jobs {
		if j.state != EntryPending {
			continue
		}
		run.Entries = append(run.Entries, Entry{
			TenantID: j.t.ID, Slug: j.t.Slug, Shard: j.t.Shard, Position: j.position,
			FromVersion: j.t.MigrationVersion, TargetVersion: r.target, State: EntryPending,
			Detail: dryRunDetail(j.t),
		})
	}
	return run
}

func dryRunDetail(t *tenant.Tenant) string {
	switch {
	case t.MigrationDirty:
		return fmt.Sprintf("dirty at version %d: will fail until forced", t.MigrationVersion)
	case t.Migrating:
		return "left mid-migration by an interrupted run"
	}
	return ""
}

// execute migrates the run's pending tenants and records how the run ended.
func (r *fleetRun) execute(ctx context.Context) (*Run, error) {
	f := r.f
	r.limits = f.shardLimits(ctx, r.jobs, r.opts.Parallel)
	var pending []*fleetJob
	for _, j := range r.jobs {
		if j.state == EntryPending {
			pending = append(pending, j)
		}
	}
	f.log.Info("fleet migration run started", "run", r.id, "target_version", r.target, "tenants", r.total,
		"to_migrate", len(pending), "skipped", r.skipped, "parallel", r.opts.Parallel, "actor", r.opts.Actor)
	r.progress(nil, "", "")

	canary := min(r.opts.Canary, len(pending))
	r.runPhase(ctx, pending[:canary])
	if canary > 0 && r.failedCount() > 0 {
		r.stop(fmt.Sprintf("a canary tenant failed: %d of the first %d tenants migrated failed", r.failedCount(), canary))
	}
	r.runPhase(ctx, pending[canary:])

	if r.crashed.Load() {
		return nil, errFleetCrash
	}
	return r.finish(ctx)
}

// runPhase migrates jobs with at most opts.Parallel at once and at most the shard's
// limit per shard, and returns when they are all finished or no more may start.
func (r *fleetRun) runPhase(ctx context.Context, jobs []*fleetJob) {
	if len(jobs) == 0 {
		return
	}
	byShard := map[string][]*fleetJob{}
	var shards []string
	for _, j := range jobs {
		if _, ok := byShard[j.t.Shard]; !ok {
			shards = append(shards, j.t.Shard)
		}
		byShard[j.t.Shard] = append(byShard[j.t.Shard], j)
	}
	slots := make(chan struct{}, r.opts.Parallel)
	var wg sync.WaitGroup
	for _, shard := range shards {
		list := byShard[shard]
		var next atomic.Int64
		workers := min(r.opts.Parallel, max(r.limits[shard], 1), len(list))
		for range workers {
			wg.Go(func() {
				for {
					if ctx.Err() != nil || r.halted() {
						return
					}
					k := int(next.Add(1) - 1)
					if k >= len(list) {
						return
					}
					select {
					case slots <- struct{}{}:
					case <-ctx.Done():
						return
					}
					if !r.halted() {
						r.migrateOne(ctx, list[k])
					}
					<-slots
				}
			})
		}
	}
	wg.Wait()
}

// migrateOne migrates one tenant and records the outcome.
func (r *fleetRun) migrateOne(ctx context.Context, j *fleetJob) {
	f := r.f
	r.mu.Lock()
	r.running++
	r.mu.Unlock()

	var (
		v       uint
		dirty   bool
		known   bool // the tenant's schema was reached: v and dirty are its state
		err     error
		state   EntryState
		started *time.Time // set when the one-transaction upgrade did the work
	)
	if start := f.now(); r.upgrade(ctx, j.t) {
		started, known, v = &start, true, uint(r.target)
		j.t.MigrationVersion, j.t.MigrationDirty = r.target, false
	}
	for attempt := 1; started == nil; attempt++ {
		if err = r.startEntry(ctx, j); err != nil {
			break
		}
		if f.crashAfter > 0 && r.finishedCount() >= f.crashAfter {
			// The process dies with this tenant started: running, and migrating.
			r.crash()
			r.mu.Lock()
			r.running--
			r.mu.Unlock()
			return
		}
		target := int(r.target)
		if r.up {
			target = -1
		}
		var ok bool
		v, dirty, ok, err = r.migrate(ctx, j.t, target)
		if ok {
			known = true
			j.t.MigrationVersion, j.t.MigrationDirty = int64(v), dirty
		}
		if err == nil || attempt >= fleetAttempts || j.t.MigrationDirty || ctx.Err() != nil || !transient(err) {
			break
		}
		f.log.Warn("retrying tenant migration", "run", r.id, "tenant", j.t.Slug, "attempt", attempt, "error", err)
		select {
		case <-time.After(time.Duration(attempt) * 200 * time.Millisecond):
		case <-ctx.Done():
		}
	}
	msg := ""
	switch {
	case err == nil && int64(v) == r.target:
		state = EntryDone
	case ctx.Err() != nil && !j.t.MigrationDirty:
		// Stopped between two migration files (or before the first): the next run
		// finishes the tenant.
		state, err = EntryPending, nil
	case err == nil:
		state, msg = EntryFailed, fmt.Sprintf("ended at version %d, not %d", v, r.target)
	default:
		state, msg = EntryFailed, err.Error()
	}
	if state == EntryFailed {
		f.log.Warn("tenant migration failed", "run", r.id, "tenant", j.t.Slug, "version", j.t.MigrationVersion,
			"dirty", j.t.MigrationDirty, "error", msg)
	}
	if werr := r.finishEntry(ctx, j, state, known, msg, started); werr != nil && state == EntryDone {
		state, msg = EntryFailed, werr.Error()
	}
	j.state = state

	r.mu.Lock()
	r.running--
	switch state {
	case EntryDone:
		r.done++
	case EntryFailed:
		r.failed++
		if r.opts.StopOnError && r.halt == "" {
			r.halt = fmt.Sprintf("stopped after tenant %s failed", j.t.Slug)
		}
	}
	r.mu.Unlock()
	r.progress(j, state, msg)
}

// migrate migrates the tenant's schema as MigrateTenant does, through the same
// runMigrate and so under the same lock, and leaves the registry to finishEntry, which
// records the outcome with the ledger entry in one statement. The extensions of a
// shard's database are checked once per run. ok reports that the schema was reached:
// v and dirty are then its state.
// upgrade tries the common case, a clean schema-isolated tenant moving up, in one
// transaction and one round trip (Provisioner.upgradeSchema). No request can see the
// schema half migrated, so the tenant is not marked migrating first. It reports
// whether the tenant is now at the target; on false nothing changed and golang-migrate
// takes over.
func (r *fleetRun) upgrade(ctx context.Context, t *tenant.Tenant) bool {
	if !r.up || t.MigrationDirty || t.Isolation != tenant.IsolationSchema || t.MigrationVersion <= 0 || t.MigrationVersion >= r.target {
		return false
	}
	// The crash test hook kills the run inside golang-migrate's path, so it takes that one.
	if r.f.crashAfter > 0 || r.extensions(ctx, t) != nil {
		return false
	}
	err := r.f.p.upgradeSchema(ctx, t, uint(t.MigrationVersion), uint(r.target))
	if err != nil {
		r.f.log.Debug("one-transaction upgrade not applicable, running golang-migrate", "tenant", t.Slug, "reason", err)
		return false
	}
	return true
}

func (r *fleetRun) migrate(ctx context.Context, t *tenant.Tenant, target int) (v uint, dirty, ok bool, err error) {
	if err := r.extensions(ctx, t); err != nil {
		return 0, false, false, err
	}
	p := r.f.p
	dsn, err := p.tenantDSN(t)
	if err != nil {
		return 0, false, false, err
	}
	job, err := p.tenantJob(ctx, t, dsn)
	if err != nil {
		return 0, false, false, err
	}
	job.target = target
	v, dirty, err = runMigrate(ctx, job)
	return v, dirty, !notOpened(err), err
}

// extensions makes sure the extensions the tenant migrations use exist in the tenant's
// database: once per shard for schema-isolated tenants, every time for the others.
func (r *fleetRun) extensions(ctx context.Context, t *tenant.Tenant) error {
	if t.Isolation == tenant.IsolationDatabase {
		return r.f.p.ensureExtensions(ctx, t)
	}
	r.extMu.Lock()
	defer r.extMu.Unlock()
	if r.extDone[t.Shard] {
		return nil
	}
	if err := r.f.p.ensureExtensions(ctx, t); err != nil {
		return err
	}
	r.extDone[t.Shard] = true
	return nil
}

// transient reports whether a failed tenant migration may succeed if tried again:
// no connection could be made, or another migrator held the schema too long.
func transient(err error) bool {
	var ce *pgconn.ConnectError
	var pgErr *pgconn.PgError
	switch {
	case errors.Is(err, errLockWait), errors.Is(err, migrate.ErrLockTimeout), errors.As(err, &ce):
		return true
	case errors.As(err, &pgErr):
		// too_many_connections, cannot_connect_now
		return pgErr.Code == "53300" || pgErr.Code == "57P03"
	}
	return false
}

// stop makes the run start no more tenants, for the reason given.
func (r *fleetRun) stop(reason string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.halt == "" {
		r.halt = reason
	}
}

func (r *fleetRun) halted() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.halt != "" || r.crashed.Load()
}

func (r *fleetRun) finishedCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.done + r.failed
}

func (r *fleetRun) failedCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.failed
}

// progress reports to opts.OnProgress; j is the tenant that just finished, nil at start.
func (r *fleetRun) progress(j *fleetJob, state EntryState, msg string) {
	if r.opts.OnProgress == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	elapsed := r.f.now().Sub(r.started)
	p := Progress{
		RunID: r.id, Total: r.total, Done: r.done, Failed: r.failed, Skipped: r.skipped, Running: r.running,
		Remaining: r.total - r.done - r.failed - r.skipped, Elapsed: elapsed, State: state, Error: msg,
	}
	if secs := elapsed.Seconds(); secs > 0 {
		p.Rate = float64(r.done+r.failed) / secs
	}
	if j != nil {
		p.Tenant = j.t.Slug
	}
	r.opts.OnProgress(p)
}

// errFleetCrash is returned by a run the crashAfter test hook ended.
var errFleetCrash = errors.New("simulated crash of the fleet run's process")

// crash ends the run as a killed process would: nothing more is written to the ledger
// and its lock goes with its connection.
func (r *fleetRun) crash() {
	if r.crashed.Swap(true) {
		return
	}
	if c := r.lock.Hijack(); c != nil {
		_ = c.Close(context.Background())
	}
}

// shardLimits works out how many tenants of each shard may be migrated at once.
func (f *Fleet) shardLimits(ctx context.Context, jobs []*fleetJob, parallel int) map[string]int {
	limits := map[string]int{}
	for _, j := range jobs {
		if j.state != EntryPending {
			continue
		}
		if _, ok := limits[j.t.Shard]; ok {
			continue
		}
		if f.shardConns > 0 {
			limits[j.t.Shard] = f.shardConns
			continue
		}
		limits[j.t.Shard] = parallel
		free, err := f.freeConns(ctx, j.t.Shard)
		if err != nil {
			f.log.Warn("reading the shard's free connections; limiting it to --parallel", "shard", j.t.Shard, "error", err)
			continue
		}
		limits[j.t.Shard] = max(free/2, 1)
	}
	return limits
}

// freeConns returns how many more client connections the shard's server accepts.
func (f *Fleet) freeConns(ctx context.Context, shard string) (int, error) {
	db, err := f.p.shards.pool(ctx, shard)
	if err != nil {
		return 0, err
	}
	var free int
	err = db.QueryRow(ctx, `SELECT current_setting('max_connections')::int
		- current_setting('superuser_reserved_connections')::int
		- (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')::int`).Scan(&free)
	if err != nil {
		return 0, fmt.Errorf("reading free connections of shard %s: %w", shard, err)
	}
	return free, nil
}
