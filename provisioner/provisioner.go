// Package provisioner carries tenants through their lifecycle in Postgres: it creates
// each tenant's role, schema or database, runs its migrations, creates its admin user
// and search index, and purges all of it at the end. Every step is idempotent and
// recorded in the registry, so a run interrupted at any point is finished by the next
// one. The package knows no HTTP.
package provisioner

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/tenantplane/tenantplane/apperr"
	"github.com/tenantplane/tenantplane/email"
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
	// Now is the clock (default time.Now).
	Now func() time.Time
	// TenantMigrations are the migrations applied to every tenant schema, by signups and
	// fleet runs alike (default: the set embedded in the binary, migrations.Tenant()).
	TenantMigrations fs.FS
}

// Provisioner runs tenant lifecycle steps. Create it with New and Close it when done.
type Provisioner struct {
	store  *tenant.Store
	shards *shardSet
	locks  *tenantLocks
	search SearchIndexes
	sem    chan struct{}
	log    *slog.Logger
	now    func() time.Time
	// tenantMigrations is the tenant migration set (Config.TenantMigrations).
	tenantMigrations fs.FS
	// shardDBNames caches each shard database's name as the server reports it (shard
	// name → string), for migration lock ids.
	shardDBNames sync.Map
	// migratePools are the shards' connections that migrations run over.
	migratePools *migratePools

	// afterStep, when set by tests, runs after each recorded step; an error from it
	// stops the run as a crash would: the tenant stays as the step left it.
	afterStep func(step string) error
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
	parallel := cmp.Or(cfg.Parallel, 8)
	return &Provisioner{
		store:  store,
		shards: shards,
		locks:  &tenantLocks{store: store, size: int32(parallel)},
		search: cfg.Search,
		sem:    make(chan struct{}, parallel),
		log:    cmp.Or(cfg.Logger, slog.New(slog.DiscardHandler)),
		now:    now,

		tenantMigrations: tenantMigrations,
		migratePools:     newMigratePools(),
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

// Steps are the provisioning steps in order; the registry records the last one done.
var Steps = []string{"registered", "role", "schema", "migrations", "admin_user", "search_index", "active"}

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
	names := tenant.NewNames(req.Slug, req.Isolation)
	t := &tenant.Tenant{
		ID:               uuid.NewString(),
		Slug:             req.Slug,
		Name:             req.Name,
		Status:           tenant.StatusProvisioning,
		Isolation:        req.Isolation,
		SchemaName:       names.Schema,
		DatabaseName:     names.Database,
		DBRole:           names.Role,
		DBPassword:       tenant.NewPassword(),
		Plan:             cmp.Or(req.Plan, "free"),
		AdminEmail:       req.AdminEmail,
		PendingAdminHash: req.AdminPasswordHash,
		ProvisioningStep: "registered",
	}
	place := func(counts map[string]int) (string, error) {
		shard, err := p.shards.place(req.Shard, counts)
		if err != nil {
			return "", apperr.New(apperr.Invalid, "invalid_shard", "%s", err.Error())
		}
		return shard, nil
	}
	if err := p.store.CreatePlaced(ctx, t, place, cmp.Or(req.Actor, "system")); err != nil {
		return nil, err
	}
	return t, nil
}

// Provision runs the steps of the tenant that are not yet done and returns the tenant as
// it ends: active, or failed with last_error set. A tenant another process is
// provisioning right now is returned as it is. Only a context cancellation (or the
// registry being unreachable) leaves the tenant in provisioning, for the next run.
func (p *Provisioner) Provision(ctx context.Context, id string) (*tenant.Tenant, error) {
	select {
	case p.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-p.sem }()

	// One provisioner per tenant at a time, across processes: a session advisory lock on
	// the control database, held on a dedicated connection.
	conn, err := p.locks.acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Release()
	key := lockKey(id)
	var got bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, key).Scan(&got); err != nil {
		return nil, fmt.Errorf("locking tenant: %w", err)
	}
	if !got {
		return p.store.GetByID(ctx, id)
	}
	defer func() {
		if _, err := conn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, key); err != nil {
			_ = conn.Conn().Close(context.WithoutCancel(ctx)) // ending the session frees its lock
		}
	}()

	t, err := p.store.GetByID(ctx, id)
	if err != nil {
		return nil, err
	}
	if t.Status != tenant.StatusProvisioning {
		return t, nil
	}
	start := p.now()
	if err := p.runSteps(ctx, t); err != nil {
		if errors.Is(err, errCrash) || ctx.Err() != nil {
			return t, err
		}
		p.log.Error("provisioning failed", "tenant", t.Slug, "step", nextStep(t.ProvisioningStep), "error", err)
		msg := fmt.Sprintf("step %s: %s", nextStep(t.ProvisioningStep), err)
		if serr := p.store.SetStatusByID(context.WithoutCancel(ctx), t.ID, tenant.StatusFailed, msg, "provisioner", "provision_failed"); serr != nil {
			return nil, errors.Join(err, serr)
		}
		t.Status, t.LastError = tenant.StatusFailed, msg
		return t, nil
	}
	p.log.Info("tenant provisioned", "tenant", t.Slug, "shard", t.Shard, "isolation", t.Isolation, "elapsed_ms", p.now().Sub(start).Milliseconds())
	return t, nil
}

// errCrash is returned by the afterStep test hook to simulate a killed process.
var errCrash = errors.New("simulated crash")

func lockKey(id string) int64 {
	h := fnv.New64a()
	h.Write([]byte("tenantplane/provision/" + id))
	return int64(h.Sum64())
}

func nextStep(done string) string {
	for i, s := range Steps {
		if s == done && i+1 < len(Steps) {
			return Steps[i+1]
		}
	}
	return done
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
