package provisioner

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang-migrate/migrate/v4"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tenantplane/tenantplane/tenant"
)

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
	if r.up && !r.halted() && ctx.Err() == nil {
		// The warm pool's schemas follow the fleet, so that signups claim them current.
		if n, err := f.p.migrateWarm(ctx, r.target); err != nil {
			f.log.Error("fleet migration of the warm pool", "run", r.id, "migrated", n, "error", err)
		} else if n > 0 {
			f.log.Info("fleet migration of the warm pool", "run", r.id, "migrated", n, "target_version", r.target)
		}
	}
	f.p.metrics.FleetRun(f.now().Sub(r.started))
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
	if f.beforeTenant != nil {
		f.beforeTenant(j.t)
	}
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
	case errors.Is(err, errMovedSince):
		state, msg = EntrySkipped, err.Error()
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
	f.p.metrics.FleetTenant(string(state))
	r.progress(j, state, msg)
}

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
	// A tenant moved or moving since the plan is left to startEntry, which skips it.
	if r.f.crashAfter > 0 || r.extensions(ctx, t) != nil || r.checkPlacement(ctx, r.f.db, t, false) != nil {
		return false
	}
	err := r.f.p.upgradeSchema(ctx, t, uint(t.MigrationVersion), uint(r.target))
	if err != nil {
		r.f.log.Debug("one-transaction upgrade not applicable, running golang-migrate", "tenant", t.Slug, "reason", err)
		return false
	}
	return true
}

// migrate migrates the tenant's schema as MigrateTenant does, through the same
// runMigrate and so under the same lock, and leaves the registry to finishEntry, which
// records the outcome with the ledger entry in one statement. The extensions of a
// shard's database are checked once per run. ok reports that the schema was reached:
// v and dirty are then its state.
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
	if errors.Is(err, errLockWait) || errors.Is(err, migrate.ErrLockTimeout) || errors.As(err, &ce) {
		return true
	}
	c := pgCode(err)
	return c == codeTooManyConnections || c == codeCannotConnectNow
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
