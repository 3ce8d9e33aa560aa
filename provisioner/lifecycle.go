package provisioner

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tenantplane/tenantplane/apperr"
	"github.com/tenantplane/tenantplane/tenant"
)

// Suspend stops serving an active tenant; its data stays. It returns NotFound for an
// unknown slug and Conflict (invalid_transition) when the tenant is not active.
func (p *Provisioner) Suspend(ctx context.Context, slug, actor string) (*tenant.Tenant, error) {
	return p.store.Transition(ctx, slug, []tenant.Status{tenant.StatusActive}, tenant.StatusSuspended,
		tenant.TransitionInfo{Action: "suspend", Actor: actor})
}

// Resume serves a suspended tenant again. Errors as for Suspend.
func (p *Provisioner) Resume(ctx context.Context, slug, actor string) (*tenant.Tenant, error) {
	return p.store.Transition(ctx, slug, []tenant.Status{tenant.StatusSuspended}, tenant.StatusActive,
		tenant.TransitionInfo{Action: "resume", Actor: actor})
}

// Delete schedules the tenant for purge after grace; it is no longer served but its data
// is kept and Restore brings it back until then. Errors as for Suspend.
func (p *Provisioner) Delete(ctx context.Context, slug, actor string, grace time.Duration) (*tenant.Tenant, error) {
	t, err := p.store.Get(ctx, slug)
	if err != nil {
		return nil, err
	}
	after := p.now().Add(grace)
	// A failed tenant keeps its error, so that Restore brings it back as it was.
	return p.store.Transition(ctx, slug,
		[]tenant.Status{tenant.StatusActive, tenant.StatusSuspended, tenant.StatusFailed}, tenant.StatusPendingDeletion,
		tenant.TransitionInfo{Action: "delete", Actor: actor, DeleteAfter: &after, LastError: t.LastError,
			Detail: "purge after " + after.UTC().Format(time.RFC3339)})
}

// Restore brings back a tenant scheduled for deletion, while its grace period lasts:
// active if it had finished provisioning, failed otherwise. It returns Conflict
// (grace_expired) once the grace period is over.
func (p *Provisioner) Restore(ctx context.Context, slug, actor string) (*tenant.Tenant, error) {
	t, err := p.store.Get(ctx, slug)
	if err != nil {
		return nil, err
	}
	if t.Status == tenant.StatusPendingDeletion && t.DeleteAfter != nil && !p.now().Before(*t.DeleteAfter) {
		return nil, apperr.New(apperr.Conflict, "grace_expired", "tenant %q can no longer be restored: its grace period ended at %s",
			slug, t.DeleteAfter.UTC().Format(time.RFC3339))
	}
	if purgeStarted(t) {
		return nil, apperr.New(apperr.Conflict, "purge_started", "tenant %q can no longer be restored: its purge has begun (last step %s); purge it again to finish",
			slug, t.ProvisioningStep)
	}
	to := tenant.StatusActive
	if t.ProvisioningStep != tenant.StepActive {
		to = tenant.StatusFailed
	}
	return p.store.Transition(ctx, slug, []tenant.Status{tenant.StatusPendingDeletion}, to,
		tenant.TransitionInfo{Action: "restore", Actor: actor, LastError: t.LastError})
}

// Retry resumes provisioning of a failed or interrupted tenant from its last recorded
// step and returns the tenant as it ends. It returns Conflict when the tenant is
// neither failed nor provisioning.
func (p *Provisioner) Retry(ctx context.Context, slug, actor string) (*tenant.Tenant, error) {
	t, err := p.store.Get(ctx, slug)
	if err != nil {
		return nil, err
	}
	switch t.Status {
	case tenant.StatusFailed:
		if _, err := p.store.Transition(ctx, slug, []tenant.Status{tenant.StatusFailed}, tenant.StatusProvisioning,
			tenant.TransitionInfo{Action: "retry", Actor: actor, LastError: t.LastError}); err != nil {
			return nil, err
		}
	case tenant.StatusProvisioning, tenant.StatusRestoring:
	default:
		return nil, apperr.New(apperr.Conflict, "invalid_transition", "tenant %q is %s; only failed, provisioning or restoring tenants can be retried", slug, t.Status)
	}
	return p.Provision(ctx, t.ID)
}

// ResumeInterrupted finishes every tenant left in provisioning or restoring by a stopped
// process (an import or a replace is finished or undone, see Import). It returns how
// many it finished and the first error met.
func (p *Provisioner) ResumeInterrupted(ctx context.Context) (int, error) {
	ts, err := p.store.ListByStatus(ctx, tenant.StatusProvisioning, tenant.StatusRestoring)
	if err != nil {
		return 0, err
	}
	n := 0
	var first error
	for _, t := range ts {
		if _, err := p.Provision(ctx, t.ID); err != nil && first == nil {
			first = err
		}
		n++
	}
	return n, first
}

// PurgeOptions changes how Purge works.
type PurgeOptions struct {
	DryRun bool // list what would be removed, remove nothing
	Force  bool // purge before the grace period has ended
	Actor  string
}

// Purge removes a tenant scheduled for deletion for good: its schema or database, its
// role and its search index, step by step as purgePlan says, each step recorded, so that
// a purge interrupted at any point is finished by the next one. The registry row stays,
// marked purged, so names are never reused. It returns the list of what it removed (or
// would remove, with DryRun), and Conflict when the tenant is not pending deletion
// (invalid_transition), unless forced its grace period has not ended (grace_period), or
// another operation is working on it (tenant_busy); NotFound for an unknown or purged
// slug; Unavailable when the registry or the shard cannot be reached. A dry run lists
// the plan of any tenant pending deletion, whether its grace period has ended or not.
func (p *Provisioner) Purge(ctx context.Context, slug string, opt PurgeOptions) ([]string, error) {
	t, err := p.store.Get(ctx, slug)
	if err != nil {
		return nil, err
	}
	if t.Status != tenant.StatusPendingDeletion {
		return nil, notPurgeable(t)
	}
	steps := purgePlan.describe(t)
	if opt.DryRun {
		return steps, nil
	}
	if !opt.Force && t.DeleteAfter != nil && p.now().Before(*t.DeleteAfter) {
		return nil, apperr.New(apperr.Conflict, "grace_period", "tenant %q is kept until %s; wait or force the purge",
			slug, t.DeleteAfter.UTC().Format(time.RFC3339))
	}
	got, err := p.execute(ctx, p.purgeOp, t.ID, opt.Actor)
	switch {
	case errors.Is(err, errBusy):
		return nil, busy(slug)
	case errors.Is(err, errNotDuring):
		// Restored or purged by another process since it was read.
		if got.Status == tenant.StatusPurged {
			return nil, apperr.New(apperr.NotFound, "tenant_not_found", "tenant %q not found", slug)
		}
		return nil, notPurgeable(got)
	case err != nil:
		return nil, err
	}
	return steps, nil
}

func notPurgeable(t *tenant.Tenant) error {
	return apperr.New(apperr.Conflict, "invalid_transition", "tenant %q is %s; delete it before purging", t.Slug, t.Status)
}

// purgePlan removes a tenant's storage, role and index. Each step is idempotent: what
// is gone already is skipped.
var purgePlan = plan{
	{Name: tenant.StepDropStorage, Run: purgeStorage, Describe: func(t *tenant.Tenant) string {
		if t.Isolation == tenant.IsolationDatabase {
			return fmt.Sprintf("drop database %s on shard %s", t.DatabaseName, t.Shard)
		}
		return fmt.Sprintf("drop schema %s on shard %s", t.SchemaName, t.Shard)
	}},
	{Name: tenant.StepDropRole, Run: dropRole, Describe: func(t *tenant.Tenant) string {
		return fmt.Sprintf("drop role %s on shard %s", t.DBRole, t.Shard)
	}},
	{Name: tenant.StepDropSearchIndex, Run: dropSearchIndex, Describe: func(t *tenant.Tenant) string {
		if t.SearchIndex == "" {
			return ""
		}
		return "delete search index " + t.SearchIndex
	}},
	{Name: tenant.StepPurged, Run: markPurged},
}

// purgeStarted reports whether the tenant's last recorded step is a purge step: some of
// its data may be gone.
func purgeStarted(t *tenant.Tenant) bool {
	return slices.Contains(purgePlan.names(), t.ProvisioningStep)
}

// dropStorage closes the tenant's sessions and drops its database or schema.
// purgeStorage is a purge's drop_storage step: the tenant's schema or database, and a
// pooled schema claimed for it, with the pool's row of the claim (see dropClaimOf).
func purgeStorage(ctx context.Context, r *run) (tenant.StepResult, error) {
	if _, err := dropStorage(ctx, r); err != nil {
		return tenant.StepResult{}, err
	}
	return tenant.StepResult{}, r.p.dropClaimOf(ctx, r.t)
}

func dropStorage(ctx context.Context, r *run) (tenant.StepResult, error) {
	return tenant.StepResult{}, r.p.dropTenantStorage(ctx, r.t, true)
}

// dropTenantStorage drops t's database or schema on t's shard, closing every session of
// its role on the shard first when terminate is set. Without it, only the sessions of a
// dropped database end: the role may still serve the tenant elsewhere on the cluster.
func (p *Provisioner) dropTenantStorage(ctx context.Context, t *tenant.Tenant, terminate bool) error {
	db, err := p.shards.pool(ctx, t.Shard)
	if err != nil {
		return err
	}
	if terminate {
		if _, err := db.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1`, t.DBRole); err != nil {
			return fmt.Errorf("closing tenant sessions: %w", err)
		}
	}
	if t.Isolation == tenant.IsolationDatabase {
		if _, err := db.Exec(ctx, `DROP DATABASE IF EXISTS `+pgx.Identifier{t.DatabaseName}.Sanitize()+` WITH (FORCE)`); err != nil {
			return fmt.Errorf("dropping database: %w", err)
		}
	} else if _, err := db.Exec(ctx, `DROP SCHEMA IF EXISTS `+pgx.Identifier{t.SchemaName}.Sanitize()+` CASCADE`); err != nil {
		return fmt.Errorf("dropping schema: %w", err)
	}
	return nil
}

// dropRole drops the tenant's role and what it still owns, if it exists.
func dropRole(ctx context.Context, r *run) (tenant.StepResult, error) {
	t := r.t
	db, err := r.p.shards.pool(ctx, t.Shard)
	if err != nil {
		return tenant.StepResult{}, err
	}
	var exists bool
	if err := db.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)`, t.DBRole).Scan(&exists); err != nil {
		return tenant.StepResult{}, fmt.Errorf("checking role: %w", err)
	}
	if !exists {
		return tenant.StepResult{}, nil
	}
	role := pgx.Identifier{t.DBRole}.Sanitize()
	if _, err := db.Exec(ctx, `DROP OWNED BY `+role); err != nil {
		return tenant.StepResult{}, fmt.Errorf("dropping role objects: %w", err)
	}
	if _, err := db.Exec(ctx, `DROP ROLE `+role); err != nil {
		return tenant.StepResult{}, fmt.Errorf("dropping role: %w", err)
	}
	return tenant.StepResult{}, nil
}

// dropSearchIndex deletes the tenant's search index or alias, if it has one.
func dropSearchIndex(ctx context.Context, r *run) (tenant.StepResult, error) {
	if r.t.SearchIndex == "" || r.p.search == nil {
		return tenant.StepResult{}, nil
	}
	if err := r.p.search.DropIndex(ctx, r.t); err != nil {
		return tenant.StepResult{}, fmt.Errorf("deleting search index: %w", err)
	}
	return tenant.StepResult{}, nil
}

// markPurged is the last purge step: its record marks the tenant purged, with the audit
// entry.
func markPurged(_ context.Context, r *run) (tenant.StepResult, error) {
	return tenant.StepResult{Status: tenant.StatusPurged, Event: "purge", Actor: r.actor}, nil
}
