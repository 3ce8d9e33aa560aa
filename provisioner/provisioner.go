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
	"log/slog"
	"net/mail"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tenantplane/tenantplane/apperr"
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
	// Parallel bounds how many tenants are provisioned at once (default 8).
	Parallel int
	// AdminConns bounds the admin pool of each shard (default 8).
	AdminConns int32
	// Logger receives progress and failures (default: discard).
	Logger *slog.Logger
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Provisioner runs tenant lifecycle steps. Create it with New and Close it when done.
type Provisioner struct {
	store  *tenant.Store
	shards *shardSet
	search SearchIndexes
	sem    chan struct{}
	log    *slog.Logger
	now    func() time.Time

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
	return &Provisioner{
		store:  store,
		shards: shards,
		search: cfg.Search,
		sem:    make(chan struct{}, cmp.Or(cfg.Parallel, 8)),
		log:    cmp.Or(cfg.Logger, slog.New(slog.DiscardHandler)),
		now:    now,
	}, nil
}

// Close releases the shard connections.
func (p *Provisioner) Close() { p.shards.close() }

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
	if len(r.Name) > 200 {
		return apperr.Invalidf("name must be at most 200 characters")
	}
	if err := ValidateEmail(r.AdminEmail); err != nil {
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

// ValidateEmail checks that s is a bare email address.
func ValidateEmail(s string) error {
	a, err := mail.ParseAddress(s)
	if err != nil || a.Address != s || len(s) > 254 || !strings.Contains(s[strings.LastIndex(s, "@"):], ".") {
		return apperr.New(apperr.Invalid, "invalid_email", "%q is not a valid email address", s)
	}
	return nil
}

// Register validates the request and records the new tenant as provisioning, placed on
// a shard. Provision does the rest. It returns Invalid errors for bad input and
// Conflict (slug_taken) when the slug is in use.
func (p *Provisioner) Register(ctx context.Context, req CreateRequest) (*tenant.Tenant, error) {
	if err := req.Validate(); err != nil {
		return nil, err
	}
	counts, err := p.store.CountByShard(ctx)
	if err != nil {
		return nil, err
	}
	shard, err := p.shards.place(req.Shard, counts)
	if err != nil {
		return nil, apperr.New(apperr.Invalid, "invalid_shard", "%s", err.Error())
	}
	names := tenant.NewNames(req.Slug, req.Isolation)
	t := &tenant.Tenant{
		ID:               uuid.NewString(),
		Slug:             req.Slug,
		Name:             req.Name,
		Status:           tenant.StatusProvisioning,
		Isolation:        req.Isolation,
		Shard:            shard,
		SchemaName:       names.Schema,
		DatabaseName:     names.Database,
		DBRole:           names.Role,
		DBPassword:       tenant.NewPassword(),
		Plan:             cmp.Or(req.Plan, "free"),
		AdminEmail:       req.AdminEmail,
		PendingAdminHash: req.AdminPasswordHash,
		ProvisioningStep: "registered",
	}
	if err := p.store.Create(ctx, t); err != nil {
		return nil, err
	}
	_ = p.store.AddEvent(ctx, t.ID, "create", cmp.Or(req.Actor, "system"), "shard "+shard+", "+string(req.Isolation)+" isolation")
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
	conn, err := p.store.DB().Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("acquiring registry connection: %w", err)
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
	defer func() { _, _ = conn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, key) }()

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

func (p *Provisioner) runSteps(ctx context.Context, t *tenant.Tenant) error {
	for next := nextStep(t.ProvisioningStep); next != t.ProvisioningStep; next = nextStep(t.ProvisioningStep) {
		if err := p.runStep(ctx, t, next); err != nil {
			return err
		}
		if next == "active" {
			// The status change records the step too.
			t.ProvisioningStep, t.Status = next, tenant.StatusActive
		} else {
			if err := p.store.SetStep(ctx, t.ID, next); err != nil {
				return err
			}
			t.ProvisioningStep = next
		}
		if p.afterStep != nil {
			if err := p.afterStep(next); err != nil {
				return err
			}
		}
	}
	return nil
}

func (p *Provisioner) runStep(ctx context.Context, t *tenant.Tenant, step string) error {
	switch step {
	case "role":
		return p.ensureRole(ctx, t)
	case "schema":
		return p.ensureSchema(ctx, t)
	case "migrations":
		_, err := p.MigrateTenant(ctx, t, -1)
		return err
	case "admin_user":
		return p.ensureAdmin(ctx, t)
	case "search_index":
		if p.search == nil {
			return nil
		}
		name, err := p.search.EnsureIndex(ctx, t)
		if err != nil {
			return fmt.Errorf("creating search index: %w", err)
		}
		t.SearchIndex = name
		return p.store.SetSearchIndex(ctx, t.ID, name)
	case "active":
		return pgx.BeginFunc(ctx, p.store.DB(), func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `UPDATE tenants SET status = 'active', provisioning_step = 'active', last_error = '', updated_at = now()
				WHERE id = $1`, t.ID); err != nil {
				return fmt.Errorf("activating: %w", err)
			}
			_, err := tx.Exec(ctx, `INSERT INTO tenant_events (tenant_id, action, actor) VALUES ($1, 'activate', 'provisioner')`, t.ID)
			return err
		})
	}
	return fmt.Errorf("unknown step %q", step)
}

func (p *Provisioner) ensureRole(ctx context.Context, t *tenant.Tenant) error {
	db, err := p.shards.pool(ctx, t.Shard)
	if err != nil {
		return err
	}
	role := pgx.Identifier{t.DBRole}.Sanitize()
	// NOINHERIT and no membership anywhere: the role reaches its own objects only.
	_, err = db.Exec(ctx, `CREATE ROLE `+role+` LOGIN NOINHERIT PASSWORD `+quoteLiteral(t.DBPassword))
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42710" { // duplicate_object: an earlier run made it
		_, err = db.Exec(ctx, `ALTER ROLE `+role+` LOGIN PASSWORD `+quoteLiteral(t.DBPassword))
	}
	if err != nil {
		return fmt.Errorf("creating role: %w", err)
	}
	// The admin role must be a member to create objects owned by the tenant role when it
	// is not a superuser; for a superuser this is a harmless no-op.
	if _, err := db.Exec(ctx, `GRANT `+role+` TO CURRENT_USER`); err != nil {
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "0LP01" { // invalid_grant_operation: already a member or self
			return fmt.Errorf("granting role: %w", err)
		}
	}
	if _, err := db.Exec(ctx, `ALTER ROLE `+role+` SET search_path TO `+pgx.Identifier{t.SchemaName}.Sanitize()); err != nil {
		return fmt.Errorf("setting role search_path: %w", err)
	}
	return nil
}

func (p *Provisioner) ensureSchema(ctx context.Context, t *tenant.Tenant) error {
	db, err := p.shards.pool(ctx, t.Shard)
	if err != nil {
		return err
	}
	role := pgx.Identifier{t.DBRole}.Sanitize()
	schema := pgx.Identifier{t.SchemaName}.Sanitize()
	if t.Isolation == tenant.IsolationSchema {
		if _, err := db.Exec(ctx, `CREATE SCHEMA IF NOT EXISTS `+schema+` AUTHORIZATION `+role); err != nil {
			return fmt.Errorf("creating schema: %w", err)
		}
		return nil
	}
	dbName := pgx.Identifier{t.DatabaseName}.Sanitize()
	_, err = db.Exec(ctx, `CREATE DATABASE `+dbName+` OWNER `+role)
	var pgErr *pgconn.PgError
	if err != nil && (!errors.As(err, &pgErr) || pgErr.Code != "42P04") { // duplicate_database: an earlier run made it
		return fmt.Errorf("creating database: %w", err)
	}
	if _, err := db.Exec(ctx, `REVOKE ALL ON DATABASE `+dbName+` FROM PUBLIC`); err != nil {
		return fmt.Errorf("restricting database: %w", err)
	}
	// The tenant role owns its database, so it creates its schema itself.
	return p.withTenantConn(ctx, t, func(conn *pgx.Conn) error {
		if _, err := conn.Exec(ctx, `CREATE SCHEMA IF NOT EXISTS `+schema+` AUTHORIZATION `+role); err != nil {
			return fmt.Errorf("creating schema: %w", err)
		}
		_, err := conn.Exec(ctx, `REVOKE ALL ON SCHEMA public FROM PUBLIC`)
		return err
	})
}

func (p *Provisioner) ensureAdmin(ctx context.Context, t *tenant.Tenant) error {
	if t.PendingAdminHash != "" {
		err := p.withTenantConn(ctx, t, func(conn *pgx.Conn) error {
			_, err := conn.Exec(ctx, `INSERT INTO users (email, password_hash, is_admin) VALUES ($1, $2, true)
				ON CONFLICT (lower(email)) DO NOTHING`, t.AdminEmail, t.PendingAdminHash)
			return err
		})
		if err != nil {
			return fmt.Errorf("creating admin user: %w", err)
		}
	}
	if err := p.store.ClearAdminHash(ctx, t.ID); err != nil {
		return err
	}
	t.PendingAdminHash = ""
	return nil
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
