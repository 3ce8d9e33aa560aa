package tenant

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tenantplane/tenantplane/apperr"
	"github.com/tenantplane/tenantplane/pgerr"
)

// Store reads and writes the registry in the control database. Its methods return
// domain errors (package apperr): NotFound (tenant_not_found), Conflict (slug_taken,
// domain_taken, invalid_transition), Invalid for text Postgres refuses, and Unavailable
// (503 db_unavailable) when the database cannot be reached.
type Store struct {
	db *pgxpool.Pool
}

// NewStore returns a registry store on the control database pool.
func NewStore(db *pgxpool.Pool) *Store { return &Store{db: db} }

// Pool returns the control database pool, for code that keeps tables of its own in the
// control database (the fleet's migration ledger) and translates its errors with pgerr.
func (s *Store) Pool() *pgxpool.Pool { return s.db }

// Ping checks that the control database answers. It returns Unavailable
// (db_unavailable) when it does not.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.db.Ping(ctx); err != nil {
		return fmt.Errorf("pinging the control database: %w", interpret(err))
	}
	return nil
}

// MaxConns is the most connections the control database pool opens.
func (s *Store) MaxConns() int { return int(s.db.Config().MaxConns) }

// ConnConfig returns a copy of the connection settings of the pool, for a connection
// of one's own (a LISTEN session).
func (s *Store) ConnConfig() *pgx.ConnConfig { return s.db.Config().ConnConfig.Copy() }

// PoolConfig returns a copy of the pool's settings, for a pool of one's own (the
// provisioner's lock connections).
func (s *Store) PoolConfig() *pgxpool.Config { return s.db.Config() }

const columns = `id, slug, name, status, isolation, shard, schema_name, COALESCE(database_name, ''),
	db_role, db_password, search_index, plan, admin_email, COALESCE(pending_admin_hash, ''),
	migration_version, migration_dirty, migrating, provisioning_step, last_error, delete_after, created_at, updated_at, pool_mode, writes_frozen`

func scan(row pgx.Row) (*Tenant, error) {
	var t Tenant
	err := row.Scan(&t.ID, &t.Slug, &t.Name, &t.Status, &t.Isolation, &t.Shard, &t.SchemaName, &t.DatabaseName,
		&t.DBRole, &t.DBPassword, &t.SearchIndex, &t.Plan, &t.AdminEmail, &t.PendingAdminHash,
		&t.MigrationVersion, &t.MigrationDirty, &t.Migrating, &t.ProvisioningStep, &t.LastError, &t.DeleteAfter, &t.CreatedAt, &t.UpdatedAt, &t.PoolMode, &t.WritesFrozen)
	if err != nil {
		return nil, interpret(err)
	}
	return &t, nil
}

// registryCodes are the domain errors of the registry's tables.
var registryCodes = pgerr.Codes{
	NotFound: apperr.New(apperr.NotFound, "tenant_not_found", "tenant not found"),
	Unique: map[string]*apperr.Error{
		"tenants_slug_live": apperr.New(apperr.Conflict, "slug_taken", "a tenant with this slug already exists"),
		"domains_pkey":      apperr.New(apperr.Conflict, "domain_taken", "this domain is already in use"),
	},
}

// interpret translates database errors into domain errors (pgerr.Translate with the
// registry's codes); every error of the store's queries passes through it.
func interpret(err error) error { return pgerr.Translate(err, registryCodes) }

// inTx runs fn in one transaction of db, committing when fn returns nil, and returns
// fn's error or the transaction's, translated.
func inTx(ctx context.Context, db *pgxpool.Pool, fn func(tx pgx.Tx) error) error {
	return interpret(pgx.BeginFunc(ctx, db, fn))
}

// querier is what inserts and counts need: a pool or a transaction.
type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

func insert(ctx context.Context, q querier, t *Tenant) error {
	var dbName *string
	if t.DatabaseName != "" {
		dbName = &t.DatabaseName
	}
	var hash *string
	if t.PendingAdminHash != "" {
		hash = &t.PendingAdminHash
	}
	// The pool mode defaults by isolation: a tenant with a database of its own needs
	// connections of its own.
	if t.PoolMode == "" {
		t.PoolMode = PoolShared
		if t.Isolation == IsolationDatabase {
			t.PoolMode = PoolDedicated
		}
	}
	row := q.QueryRow(ctx, `INSERT INTO tenants (id, slug, name, status, isolation, shard, schema_name, database_name,
		db_role, db_password, search_index, plan, admin_email, pending_admin_hash, provisioning_step, pool_mode)
		VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16) RETURNING created_at, updated_at`,
		t.ID, t.Slug, t.Name, t.Status, t.Isolation, t.Shard, t.SchemaName, dbName,
		t.DBRole, t.DBPassword, t.SearchIndex, t.Plan, t.AdminEmail, hash, t.ProvisioningStep, t.PoolMode)
	if err := row.Scan(&t.CreatedAt, &t.UpdatedAt); err != nil {
		return interpret(err)
	}
	return nil
}

// CreatePlaced inserts a tenant on the shard place picks from the live tenant counts
// per shard, and records the creation in the audit log. Placements are serialized
// (a transaction-scoped advisory lock), so concurrent signups see each other's counts
// and spread across shards instead of all landing on the same one. place's error is
// returned as is; a taken slug is a Conflict (slug_taken).
func (s *Store) CreatePlaced(ctx context.Context, t *Tenant, place func(counts map[string]int) (string, error), actor string) error {
	return inTx(ctx, s.db, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtext('tenantplane/placement'))`); err != nil {
			return fmt.Errorf("locking placement: %w", interpret(err))
		}
		counts, err := countByShard(ctx, tx)
		if err != nil {
			return err
		}
		if t.Shard, err = place(counts); err != nil {
			return err
		}
		if err := insert(ctx, tx, t); err != nil {
			return err
		}
		return AddEventTx(ctx, tx, t.ID, "create", actor, fmt.Sprintf("shard %s, %s isolation", t.Shard, t.Isolation))
	})
}

// Get returns the live (not purged) tenant with the slug, or a NotFound error.
func (s *Store) Get(ctx context.Context, slug string) (*Tenant, error) {
	return scan(s.db.QueryRow(ctx, `SELECT `+columns+` FROM tenants WHERE slug = $1 AND status <> 'purged'`, slug))
}

// GetByID returns the tenant with the id, purged or not, or a NotFound error.
func (s *Store) GetByID(ctx context.Context, id string) (*Tenant, error) {
	return scan(s.db.QueryRow(ctx, `SELECT `+columns+` FROM tenants WHERE id = $1`, id))
}

// GetByDomain returns the live tenant owning the custom domain, or a NotFound error.
func (s *Store) GetByDomain(ctx context.Context, domain string) (*Tenant, error) {
	return scan(s.db.QueryRow(ctx, `SELECT `+columns+` FROM tenants
		WHERE id = (SELECT tenant_id FROM domains WHERE domain = $1) AND status <> 'purged'`, strings.ToLower(domain)))
}

// ListFilter selects tenants for List.
type ListFilter struct {
	Status Status // empty: every status but purged
	Shard  string // empty: every shard
	After  string // slug to continue after (the previous page's last slug)
	Limit  int    // 1..1000; 0 means 100
}

// List returns tenants ordered by slug, at most f.Limit of them, and the slug to pass as
// After for the next page ("" on the last page).
func (s *Store) List(ctx context.Context, f ListFilter) ([]*Tenant, string, error) {
	limit := f.Limit
	if limit <= 0 {
		limit = 100
	}
	if limit > 1000 {
		return nil, "", apperr.Invalidf("limit must be between 1 and 1000")
	}
	q := `SELECT ` + columns + ` FROM tenants WHERE slug > $1`
	args := []any{f.After}
	if f.Status != "" {
		args = append(args, f.Status)
		q += fmt.Sprintf(" AND status = $%d", len(args))
	} else {
		q += " AND status <> 'purged'"
	}
	if f.Shard != "" {
		args = append(args, f.Shard)
		q += fmt.Sprintf(" AND shard = $%d", len(args))
	}
	args = append(args, limit+1)
	q += fmt.Sprintf(" ORDER BY slug, id LIMIT $%d", len(args))
	rows, err := s.db.Query(ctx, q, args...)
	if err != nil {
		return nil, "", fmt.Errorf("listing tenants: %w", interpret(err))
	}
	defer rows.Close()
	var out []*Tenant
	for rows.Next() {
		t, err := scan(rows)
		if err != nil {
			return nil, "", fmt.Errorf("listing tenants: %w", interpret(err))
		}
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		return nil, "", fmt.Errorf("listing tenants: %w", interpret(err))
	}
	next := ""
	if len(out) > limit {
		out = out[:limit]
		next = out[limit-1].Slug
	}
	return out, next, nil
}

// ListByStatus returns every tenant in one of the statuses, oldest first.
func (s *Store) ListByStatus(ctx context.Context, statuses ...Status) ([]*Tenant, error) {
	names := make([]string, len(statuses))
	for i, st := range statuses {
		names[i] = string(st)
	}
	rows, err := s.db.Query(ctx, `SELECT `+columns+` FROM tenants WHERE status = ANY($1) ORDER BY created_at, id`, names)
	if err != nil {
		return nil, fmt.Errorf("listing tenants: %w", interpret(err))
	}
	defer rows.Close()
	var out []*Tenant
	for rows.Next() {
		t, err := scan(rows)
		if err != nil {
			return nil, fmt.Errorf("listing tenants: %w", interpret(err))
		}
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("listing tenants: %w", interpret(err))
	}
	return out, nil
}

// CountByShard returns how many live tenants each shard holds.
func (s *Store) CountByShard(ctx context.Context) (map[string]int, error) {
	return countByShard(ctx, s.db)
}

func countByShard(ctx context.Context, q querier) (map[string]int, error) {
	rows, err := q.Query(ctx, `SELECT shard, count(*) FROM tenants WHERE status <> 'purged' GROUP BY shard`)
	if err != nil {
		return nil, fmt.Errorf("counting tenants per shard: %w", interpret(err))
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var name string
		var n int
		if err := rows.Scan(&name, &n); err != nil {
			return nil, fmt.Errorf("counting tenants per shard: %w", interpret(err))
		}
		out[name] = n
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("counting tenants per shard: %w", interpret(err))
	}
	return out, nil
}

// SetMigration records the tenant's schema version and dirty flag as read from its schema.
func (s *Store) SetMigration(ctx context.Context, id string, version int64, dirty bool) error {
	_, err := s.db.Exec(ctx, `UPDATE tenants SET migration_version = $2, migration_dirty = $3, updated_at = now() WHERE id = $1`,
		id, version, dirty)
	if err != nil {
		return fmt.Errorf("recording migration version: %w", interpret(err))
	}
	return nil
}

// Transition moves the tenant with the slug from one of the from statuses to to, setting
// last_error and delete_after as given, and records the action in the audit log. It
// returns NotFound when no live tenant has the slug and Conflict (code
// invalid_transition) when its status is not one of from.
func (s *Store) Transition(ctx context.Context, slug string, from []Status, to Status, tr TransitionInfo) (*Tenant, error) {
	names := make([]string, len(from))
	for i, st := range from {
		names[i] = string(st)
	}
	var out *Tenant
	err := inTx(ctx, s.db, func(tx pgx.Tx) error {
		cur, err := scan(tx.QueryRow(ctx, `SELECT `+columns+` FROM tenants WHERE slug = $1 AND status <> 'purged' FOR UPDATE`, slug))
		if err != nil {
			return err
		}
		if !containsStatus(from, cur.Status) {
			return apperr.New(apperr.Conflict, "invalid_transition", "tenant %q is %s; cannot %s it", slug, cur.Status, tr.Action)
		}
		out, err = scan(tx.QueryRow(ctx, `UPDATE tenants SET status = $2, last_error = $3, delete_after = $4, updated_at = now()
			WHERE id = $1 RETURNING `+columns, cur.ID, to, tr.LastError, tr.DeleteAfter))
		if err != nil {
			return err
		}
		return AddEventTx(ctx, tx, cur.ID, tr.Action, tr.Actor, tr.Detail)
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// TransitionInfo describes a lifecycle change for Transition.
type TransitionInfo struct {
	Action      string     // verb for the audit log and errors, e.g. "suspend"
	Actor       string     // who asked: "cli", a platform user's email, "signup"
	Detail      string     // free text for the audit log
	LastError   string     // new last_error ("" clears it)
	DeleteAfter *time.Time // new delete_after (nil clears it)
}

// SetWritesFrozen freezes (or thaws) the writes of the tenant with the given id, with an
// audit entry; every replica learns of it through the registry's notifications. It
// returns NotFound when no live tenant has the id.
func (s *Store) SetWritesFrozen(ctx context.Context, id string, frozen bool, actor, detail string) error {
	action := "writes_thawed"
	if frozen {
		action = "writes_frozen"
	}
	return inTx(ctx, s.db, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE tenants SET writes_frozen = $2, updated_at = now() WHERE id = $1 AND status <> 'purged'`, id, frozen)
		if err != nil {
			return fmt.Errorf("setting writes frozen: %w", interpret(err))
		}
		if tag.RowsAffected() == 0 {
			return apperr.NotFoundf("no tenant with id %q", id)
		}
		return AddEventTx(ctx, tx, id, action, actor, detail)
	})
}

// Placement is where a tenant's data lives and how the dataplane reaches it.
type Placement struct {
	Shard        string
	Isolation    Isolation
	DatabaseName string // empty in schema isolation
	PoolMode     PoolMode
}

// SwitchPlacement points the active tenant with the given id at p and thaws its writes,
// in one transaction with an audit entry (action "move_switch"): every replica learns of
// both at once through the registry's notifications. It returns the tenant as switched,
// NotFound for an unknown id and Conflict (invalid_transition) when it is not active.
func (s *Store) SwitchPlacement(ctx context.Context, id string, p Placement, actor, detail string) (*Tenant, error) {
	var out *Tenant
	err := inTx(ctx, s.db, func(tx pgx.Tx) error {
		var dbName *string
		if p.DatabaseName != "" {
			dbName = &p.DatabaseName
		}
		var err error
		out, err = scan(tx.QueryRow(ctx, `UPDATE tenants SET shard = $2, isolation = $3, database_name = $4, pool_mode = $5,
			writes_frozen = false, updated_at = now() WHERE id = $1 AND status = 'active' RETURNING `+columns,
			id, p.Shard, p.Isolation, dbName, p.PoolMode))
		if apperr.KindOf(err) == apperr.NotFound {
			if _, gerr := s.GetByID(ctx, id); gerr != nil {
				return gerr
			}
			return apperr.New(apperr.Conflict, "invalid_transition", "tenant is not active; its placement was not switched")
		}
		if err != nil {
			return err
		}
		return AddEventTx(ctx, tx, id, "move_switch", actor, detail)
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// SetStatusByID sets the status and last error of a tenant by id, with an audit entry.
func (s *Store) SetStatusByID(ctx context.Context, id string, to Status, lastError, actor, action string) error {
	return inTx(ctx, s.db, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `UPDATE tenants SET status = $2, last_error = $3, updated_at = now() WHERE id = $1`, id, to, lastError); err != nil {
			return fmt.Errorf("setting status: %w", interpret(err))
		}
		return AddEventTx(ctx, tx, id, action, actor, lastError)
	})
}

func containsStatus(list []Status, s Status) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// AddEventTx appends an entry to the tenant's audit log in tx, so that it is written
// with the change it records or not at all (an operation that changes tables of its own
// with the registry).
func AddEventTx(ctx context.Context, tx pgx.Tx, id, action, actor, detail string) error {
	return insertEvent(ctx, tx, id, action, actor, detail)
}

// AddEvent appends an entry to the tenant's audit log.
func (s *Store) AddEvent(ctx context.Context, id, action, actor, detail string) error {
	return insertEvent(ctx, s.db, id, action, actor, detail)
}

// insertEvent is the one statement that writes the audit log.
func insertEvent(ctx context.Context, db interface {
	Exec(context.Context, string, ...any) (pgconn.CommandTag, error)
}, id, action, actor, detail string) error {
	_, err := db.Exec(ctx, `INSERT INTO tenant_events (tenant_id, action, actor, detail) VALUES ($1,$2,$3,$4)`, id, action, actor, detail)
	if err != nil {
		return fmt.Errorf("writing audit log: %w", interpret(err))
	}
	return nil
}

// Event is one audit log entry.
type Event struct {
	ID        int64     `json:"id"`
	Action    string    `json:"action"`
	Actor     string    `json:"actor"`
	Detail    string    `json:"detail,omitempty"`
	CreatedAt time.Time `json:"created_at"`
}

// Events returns the tenant's audit log, oldest first.
func (s *Store) Events(ctx context.Context, id string) ([]Event, error) {
	rows, err := s.db.Query(ctx, `SELECT id, action, actor, detail, created_at FROM tenant_events WHERE tenant_id = $1 ORDER BY id`, id)
	if err != nil {
		return nil, fmt.Errorf("reading audit log: %w", interpret(err))
	}
	events, err := pgx.CollectRows(rows, pgx.RowToStructByPos[Event])
	if err != nil {
		return nil, fmt.Errorf("reading audit log: %w", interpret(err))
	}
	return events, nil
}

// Domain is a custom domain routed to a tenant.
type Domain struct {
	Domain    string    `json:"domain"`
	IsPrimary bool      `json:"is_primary"`
	CreatedAt time.Time `json:"created_at"`
}

// AddDomain routes domain to the tenant. It returns Conflict (domain_taken) when the
// domain is already routed.
func (s *Store) AddDomain(ctx context.Context, tenantID, domain string, primary bool) (*Domain, error) {
	d := Domain{Domain: strings.ToLower(domain), IsPrimary: primary}
	err := inTx(ctx, s.db, func(tx pgx.Tx) error {
		if primary {
			if _, err := tx.Exec(ctx, `UPDATE domains SET is_primary = false WHERE tenant_id = $1`, tenantID); err != nil {
				return err
			}
		}
		return tx.QueryRow(ctx, `INSERT INTO domains (domain, tenant_id, is_primary) VALUES ($1,$2,$3) RETURNING created_at`,
			d.Domain, tenantID, primary).Scan(&d.CreatedAt)
	})
	if err != nil {
		return nil, interpret(err)
	}
	return &d, nil
}

// Domains lists the tenant's custom domains.
func (s *Store) Domains(ctx context.Context, tenantID string) ([]Domain, error) {
	rows, err := s.db.Query(ctx, `SELECT domain, is_primary, created_at FROM domains WHERE tenant_id = $1 ORDER BY domain`, tenantID)
	if err != nil {
		return nil, fmt.Errorf("listing domains: %w", interpret(err))
	}
	domains, err := pgx.CollectRows(rows, pgx.RowToStructByPos[Domain])
	if err != nil {
		return nil, fmt.Errorf("listing domains: %w", interpret(err))
	}
	return domains, nil
}

// RemoveDomain stops routing domain to the tenant; NotFound when it was not routed there.
func (s *Store) RemoveDomain(ctx context.Context, tenantID, domain string) error {
	tag, err := s.db.Exec(ctx, `DELETE FROM domains WHERE tenant_id = $1 AND domain = $2`, tenantID, strings.ToLower(domain))
	if err != nil {
		return fmt.Errorf("removing domain: %w", interpret(err))
	}
	if tag.RowsAffected() == 0 {
		return apperr.NotFoundf("domain not found")
	}
	return nil
}

// Forget removes the registry row (and its audit log) of a tenant in status during that
// never came to be: an import undone before its data was loaded. It returns NotFound when
// no such row is left, which a repeated undo accepts.
func (s *Store) Forget(ctx context.Context, id string, during Status) error {
	tag, err := s.db.Exec(ctx, `DELETE FROM tenants WHERE id = $1 AND status = $2`, id, during)
	if err != nil {
		return fmt.Errorf("forgetting tenant: %w", interpret(err))
	}
	if tag.RowsAffected() == 0 {
		return apperr.New(apperr.NotFound, "tenant_not_found", "tenant not found")
	}
	return nil
}
