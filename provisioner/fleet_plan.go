package provisioner

import (
	"context"
	"fmt"
	"slices"

	"github.com/google/uuid"

	"github.com/tenantplane/tenantplane/apperr"
	"github.com/tenantplane/tenantplane/tenant"
)

// fleetJob is one tenant of a run.
type fleetJob struct {
	t        *tenant.Tenant
	position int
	state    EntryState // pending, or skipped at planning
	detail   string
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
	case tenant.StatusActive, tenant.StatusSuspended:
		return nil
	case tenant.StatusPendingDeletion:
		if purgeStarted(t) {
			return apperr.New(apperr.Invalid, "tenant_not_migratable", "tenant %q is being purged", t.Slug)
		}
		return nil
	case tenant.StatusFailed:
		if provisionPlan.index(t.ProvisioningStep) >= provisionPlan.index(tenant.StepMigrations) {
			return nil
		}
		return apperr.New(apperr.Invalid, "tenant_not_migratable", "tenant %q failed before its schema was migrated; retry its provisioning", t.Slug)
	case tenant.StatusProvisioning:
		return apperr.New(apperr.Invalid, "tenant_not_migratable", "tenant %q is being provisioned, which migrates it to the newest version", t.Slug)
	}
	return apperr.New(apperr.Invalid, "tenant_not_migratable", "tenant %q is %s", t.Slug, t.Status)
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

	// A tenant being moved is left alone: DDL does not replicate to its target.
	moving, err := f.p.moves.moving(ctx)
	if err != nil {
		return nil, err
	}
	jobs := make([]*fleetJob, 0, len(selected))
	var pending, skipped []*fleetJob
	for _, t := range selected {
		j := &fleetJob{t: t, state: EntryPending}
		switch {
		case moving[t.ID]:
			j.state, j.detail = EntrySkipped, "a move between shards is in progress; migrate it once the move is done"
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

// dryRun describes the planned run without executing it: every tenant of the plan, in
// run order, those to migrate pending and those already at the target skipped, each with
// a detail saying what the run would do.
func (r *fleetRun) dryRun() *Run {
	run := &Run{
		Actor: r.opts.Actor, State: RunDone, TargetVersion: r.target, Options: r.opts,
		Total: r.total, Skipped: r.skipped, Pending: r.total - r.skipped, StartedAt: r.started, DryRun: true,
		Entries: make([]Entry, 0, len(r.jobs)),
	}
	for _, j := range r.jobs {
		run.Entries = append(run.Entries, Entry{
			TenantID: j.t.ID, Slug: j.t.Slug, Shard: j.t.Shard, Position: j.position,
			FromVersion: j.t.MigrationVersion, TargetVersion: r.target, State: j.state,
			Detail: dryRunDetail(j, r.target),
		})
	}
	return run
}

// dryRunDetail says why a run would skip the tenant of j, or what it would find.
func dryRunDetail(j *fleetJob, target int64) string {
	t := j.t
	switch {
	case j.state == EntrySkipped:
		return j.detail
	case t.MigrationDirty:
		return fmt.Sprintf("dirty at version %d: will fail until forced", t.MigrationVersion)
	case t.Migrating:
		return "left mid-migration by an interrupted run: the run finishes it"
	case t.MigrationVersion > target:
		return fmt.Sprintf("down %d version(s)", t.MigrationVersion-target)
	}
	return fmt.Sprintf("up %d version(s)", target-t.MigrationVersion)
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
