// Package provisioner carries tenants through their lifecycle in Postgres: it creates
// each tenant's role, schema or database, runs its migrations, creates its admin user
// and search index, purges all of it at the end, and migrates the whole fleet. The
// package knows no HTTP.
//
// # Operations, plans and steps
//
// Every multi-step tenant operation is a plan, an ordered list of step values, run by
// one runner:
//
//	type step struct {
//		Name     tenant.Step // recorded once done
//		Run      func(ctx context.Context, r *run) (tenant.StepResult, error) // the work, idempotent
//		Describe func(t *tenant.Tenant) string // what it will do, for dry runs
//	}
//	type plan []step
//
// An operation is a plan with a name ("provisioning", "purge"), the tenant status it runs
// in (provisioning, pending_deletion), the status a failing step leaves the tenant in
// (failed, or none: the error is returned) and a progress, where its steps are recorded.
// Provisioner.execute (operation.go) runs an operation on one tenant: under the tenant's advisory lock
// (one operation per tenant at a time, across processes), it starts after the last step
// the progress recorded and, after each step, records its name together with the
// StepResult the step returned (a migration version, a search index name, a new status
// with its audit entry) in one write. A process killed after any step is thus finished
// by the next run from the recorded step; one killed between a step's work and its
// record redoes that step, which is why every step is idempotent. Plans live beside the
// work: provisionPlan in steps.go (role, schema, migrations, admin_user, search_index,
// active) and purgePlan in lifecycle.go (drop_storage, drop_role, drop_search_index,
// purged); both record into the tenant's registry row.
//
// Import and Replace (import.go) are such plans too: importPlan provisions a new tenant,
// migrates it to an archive's version, loads and checks the archive in one transaction
// and migrates it up; importUndoPlan removes all of it, registry row included;
// replacePlan loads an archive over a restoring tenant and replaceUndoPlan serves its
// old data again. An archive is a stream only the process that opened it can read, so a
// resumed run (Provision, through resumeOp) finishes what had loaded its data and undoes
// what had not. Export reads one snapshot and changes nothing, so it is no plan; Clone
// streams an Export into an Import. Move (move.go, move_steps.go) is three plans too, the
// online move, the offline one and their undo, run while the tenant stays active and
// recorded in a row of their own (tenant_moves) through a progress of their own. A signup
// served by the warm pool runs warmPlan (warm.go), whose warm_claim step claims and
// renames a pooled schema in place of the role, schema and migrations steps. A new
// operation is another plan run by the same execute, with the same lock, recording,
// resume and failure handling: write its steps, give it an operation, and, when its
// progress belongs somewhere other than the registry row, a progress of its own.
// The crash tests run over the plans themselves, so a new step is covered by them.
//
// # Fleet migrations
//
// Fleet (fleet.go: its API and lifecycle; fleet_plan.go: choosing the tenants of a run;
// fleet_exec.go: migrating them; fleet_ledger.go: the ledger) migrates every tenant
// schema to one version with bounded parallelism per shard, recording each tenant's
// progress in the migration ledger.
package provisioner

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/tenantplane/tenantplane/apperr"
	"github.com/tenantplane/tenantplane/email"
	"github.com/tenantplane/tenantplane/metrics"
	"github.com/tenantplane/tenantplane/migrations"
	"github.com/tenantplane/tenantplane/tenant"
)

// SearchIndexes creates and drops a tenant's search index (or alias). The Postgres
// search backend needs none, so a nil SearchIndexes is a no-op.
type SearchIndexes interface {
	// EnsureIndex creates the tenant's index or alias if missing and returns its name.
	EnsureIndex(ctx context.Context, t *tenant.Tenant) (string, error)
	// DropIndex removes the tenant's index or alias; a missing one is not an error.
	DropIndex(ctx context.Context, t *tenant.Tenant) error
}

// Config configures a Provisioner.
type Config struct {
	// Shards are the Postgres servers tenants are placed on; at least one.
	Shards []Shard
	// Search creates tenant search indexes; nil when search lives in Postgres.
	Search SearchIndexes
	// Parallel bounds how many tenants are provisioned at once (default 8); each run holds
	// one control-database connection of its own for its lock.
	Parallel int
	// AdminConns bounds the admin pool of each shard (default 8).
	AdminConns int32
	// Logger receives progress and failures (default: discard).
	Logger *slog.Logger
	// Metrics counts finished operations and their durations, and the fleet migration
	// runs of the provisioner's Fleets (nil: nothing recorded).
	Metrics *metrics.Metrics
	// Now is the clock (default time.Now).
	Now func() time.Time
	// TenantMigrations are the migrations applied to every tenant schema, by signups and
	// fleet runs alike (default: the set embedded in the binary, migrations.Tenant()).
	TenantMigrations fs.FS
	// WarmPool is how many migrated, unassigned schemas (with their roles) each shard
	// keeps for schema-isolation signups to claim (warm.go); 0, the default, turns the
	// pool off. A WarmRefiller keeps it full.
	WarmPool int
}

// Provisioner runs tenant lifecycle steps. Create it with New and Close it when done.
type Provisioner struct {
	store *tenant.Store
	// warm and moves hold the SQL of the registry tables of the warm pool (warm_schemas)
	// and of moves (tenant_moves, moved_sources).
	warm   *warmStore
	moves  *moveStore
	shards *shardSet
	locks  *tenantLocks
	search SearchIndexes
	sem    chan struct{}
	log    *slog.Logger
	// metrics counts finished operations (Config.Metrics).
	metrics *metrics.Metrics
	now     func() time.Time
	// tenantMigrations is the tenant migration set (Config.TenantMigrations).
	tenantMigrations fs.FS
	// shardDBNames caches each shard database's name as the server reports it (shard
	// name → string), for migration lock ids.
	shardDBNames sync.Map
	// migratePools are the shards' connections that migrations run over.
	migratePools *shardPools

	// provisionOp and purgeOp are the operations Provision and Purge execute.
	provisionOp, purgeOp *operation
	// importOp, importUndoOp, replaceOp and replaceUndoOp are the operations of Import
	// and Replace (import.go), and loads the archives their running loads read (tenant
	// id → *loadInput).
	importOp, importUndoOp, replaceOp, replaceUndoOp *operation
	loads                                            sync.Map
	// moveOnlineOp, moveOfflineOp and moveUndoOp are the operations of Move and
	// AbortMove (move.go), and moveWatchers the Progress of the running Move calls
	// (tenant id → *func(MoveState)).
	moveOnlineOp, moveOfflineOp, moveUndoOp *operation
	moveWatchers                            sync.Map

	// warmSize is Config.WarmPool; warmOp the operation of a signup it serves, and
	// warmClaimed wakes the refiller after each claim.
	warmSize    int
	warmOp      *operation
	warmClaimed chan struct{}
	// afterClaim, when set by tests, runs after a pooled schema is claimed and before it
	// is bound; an error from it stops the step as a crash would.
	afterClaim func() error

	// afterStep, when set by tests, runs after each recorded step; an error from it
	// stops the run as a crash would: the tenant stays as the step left it.
	afterStep func(step tenant.Step) error
}

// New returns a Provisioner writing to the registry in store.
func New(store *tenant.Store, cfg Config) (*Provisioner, error) {
	shards, err := newShardSet(cfg.Shards, cmp.Or(cfg.AdminConns, 8))
	if err != nil {
		return nil, err
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	tenantMigrations := cfg.TenantMigrations
	if tenantMigrations == nil {
		tenantMigrations = migrations.Tenant()
	}
	if cfg.WarmPool < 0 {
		return nil, fmt.Errorf("warm pool size must not be negative, not %d", cfg.WarmPool)
	}
	parallel := cmp.Or(cfg.Parallel, 8)
	recorded := &registryProgress{store: store}
	imp, impUndo, repl, replUndo := mobilityOps(store)
	moves := &moveStore{db: store.Pool()}
	moveOn, moveOff, moveUndo := moveOps(moves)
	return &Provisioner{
		store:   store,
		warm:    &warmStore{db: store.Pool()},
		moves:   moves,
		shards:  shards,
		locks:   &tenantLocks{store: store, size: int32(parallel)},
		search:  cfg.Search,
		sem:     make(chan struct{}, parallel),
		log:     cmp.Or(cfg.Logger, slog.New(slog.DiscardHandler)),
		metrics: cfg.Metrics,
		now:     now,

		tenantMigrations: tenantMigrations,
		migratePools:     newShardPools(migratePoolConns, time.Minute),

		provisionOp: &operation{name: "provisioning", plan: provisionPlan, during: tenant.StatusProvisioning,
			failed: tenant.StatusFailed, failedEvent: "provision_failed", progress: recorded},
		purgeOp: &operation{name: "purge", plan: purgePlan, during: tenant.StatusPendingDeletion, progress: recorded},

		importOp: imp, importUndoOp: impUndo, replaceOp: repl, replaceUndoOp: replUndo,
		moveOnlineOp: moveOn, moveOfflineOp: moveOff, moveUndoOp: moveUndo,

		warmSize: cfg.WarmPool, warmClaimed: make(chan struct{}, 1),
		warmOp: &operation{name: "provisioning", plan: warmPlan, during: tenant.StatusProvisioning,
			failed: tenant.StatusFailed, failedEvent: "provision_failed", progress: recorded},
	}, nil
}

// Close releases the shard connections and the registry lock connections.
func (p *Provisioner) Close() {
	p.shards.close()
	p.locks.close()
	p.migratePools.close()
}

// ShardURL returns the admin URL of the named shard.
func (p *Provisioner) ShardURL(name string) (string, bool) {
	sh, ok := p.shards.get(name)
	return sh.URL, ok
}

// ProvisioningSteps returns the names of the provisioning steps in order; the registry
// records the last one done (tenant.StepRegistered before the first).
func ProvisioningSteps() []tenant.Step { return provisionPlan.names() }

// PurgeSteps returns the names of the purge steps in order.
func PurgeSteps() []tenant.Step { return purgePlan.names() }

// CreateRequest describes a new tenant.
type CreateRequest struct {
	Slug      string
	Name      string
	Isolation tenant.Isolation
	Shard     string // empty: least-loaded shard
	Plan      string
	// AdminEmail and AdminPasswordHash describe the tenant superuser created by the
	// admin_user step; the hash is kept in the registry only until that step is done.
	AdminEmail        string
	AdminPasswordHash string
	Actor             string
}

// Validate checks the request fields that do not need the database.
func (r *CreateRequest) Validate() error {
	if err := tenant.ValidateSlug(r.Slug); err != nil {
		return err
	}
	r.Name = strings.TrimSpace(r.Name)
	if r.Name == "" {
		r.Name = r.Slug
	}
	if err := tenant.ValidateName(r.Name); err != nil {
		return err
	}
	if err := email.Validate(r.AdminEmail); err != nil {
		return err
	}
	if r.AdminPasswordHash == "" {
		return apperr.Invalidf("admin password is required")
	}
	iso, err := tenant.ParseIsolation(string(r.Isolation))
	if err != nil {
		return err
	}
	r.Isolation = iso
	return nil
}

// Register validates the request and records the new tenant as provisioning, placed on
// a shard. Provision does the rest. It returns Invalid errors for bad input and
// Conflict (slug_taken) when the slug is in use.
func (p *Provisioner) Register(ctx context.Context, req CreateRequest) (*tenant.Tenant, error) {
	if err := req.Validate(); err != nil {
		return nil, err
	}
	t := newTenant(req.Slug, req.Name, req.Isolation, req.Plan)
	t.AdminEmail, t.PendingAdminHash = req.AdminEmail, req.AdminPasswordHash
	if err := p.place(ctx, t, req.Shard, req.Actor); err != nil {
		return nil, err
	}
	return t, nil
}

// newTenant returns a tenant in provisioning at StepRegistered with fresh object names
// and role password.
func newTenant(slug, name string, iso tenant.Isolation, plan string) *tenant.Tenant {
	names := tenant.NewNames(slug, iso)
	return &tenant.Tenant{
		ID:               uuid.NewString(),
		Slug:             slug,
		Name:             name,
		Status:           tenant.StatusProvisioning,
		Isolation:        iso,
		SchemaName:       names.Schema,
		DatabaseName:     names.Database,
		DBRole:           names.Role,
		DBPassword:       tenant.NewPassword(),
		Plan:             cmp.Or(plan, "free"),
		ProvisioningStep: tenant.StepRegistered,
	}
}

// place records the new tenant t in the registry on the named shard (empty: the least
// loaded one). It returns Invalid (invalid_shard) for an unknown shard and Conflict
// (slug_taken) when the slug is in use.
func (p *Provisioner) place(ctx context.Context, t *tenant.Tenant, shard, actor string) error {
	pick := func(counts map[string]int) (string, error) {
		name, err := p.shards.place(shard, counts)
		if err != nil {
			return "", apperr.New(apperr.Invalid, "invalid_shard", "%s", err.Error())
		}
		return name, nil
	}
	return p.store.CreatePlaced(ctx, t, pick, cmp.Or(actor, "system"))
}

// Provision runs the provisioning steps of the tenant that are not yet done and returns
// the tenant as it ends: active, or failed with last_error set. An interrupted import or
// replace is finished when its data was loaded and undone otherwise (see Import). A tenant another process
// is provisioning right now, or one not in provisioning, is returned as it is. Only a
// context cancellation (or the registry being unreachable) leaves the tenant in
// provisioning, for the next run.
func (p *Provisioner) Provision(ctx context.Context, id string) (*tenant.Tenant, error) {
	t, err := p.execute(ctx, p.resumeOp(ctx, id), id, "provisioner")
	switch {
	case errors.Is(err, errBusy):
		return p.store.GetByID(ctx, id)
	case errors.Is(err, errNotDuring):
		return t, nil
	}
	return t, err
}

// withTenantConn runs fn on a connection logged in as the tenant's role.
func (p *Provisioner) withTenantConn(ctx context.Context, t *tenant.Tenant, fn func(*pgx.Conn) error) error {
	dsn, err := p.tenantDSN(t)
	if err != nil {
		return err
	}
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return fmt.Errorf("connecting as tenant: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	return fn(conn)
}

func (p *Provisioner) tenantDSN(t *tenant.Tenant) (string, error) {
	sh, ok := p.shards.get(t.Shard)
	if !ok {
		return "", fmt.Errorf("tenant %q is on unknown shard %q", t.Slug, t.Shard)
	}
	return t.ConnString(sh.URL)
}

func quoteLiteral(s string) string {
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}
