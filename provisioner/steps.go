package provisioner

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tenantplane/tenantplane/tenant"
)

// provisionPlan is the plan that carries a registered tenant to active. Every step is
// idempotent: a run killed after a step's work and before its record redoes it over what
// exists.
var provisionPlan = plan{
	{Name: tenant.StepRole, Run: createRole},
	{Name: tenant.StepSchema, Run: createSchema},
	{Name: tenant.StepMigrations, Run: migrateSchema},
	{Name: tenant.StepAdminUser, Run: createAdmin},
	{Name: tenant.StepSearchIndex, Run: createSearchIndex},
	{Name: tenant.StepActive, Run: activate},
}

// createRole is the role step (ensureRole).
func createRole(ctx context.Context, r *run) (tenant.StepResult, error) {
	return tenant.StepResult{}, r.p.ensureRole(ctx, r.t)
}

// createSchema is the schema step (ensureSchema).
func createSchema(ctx context.Context, r *run) (tenant.StepResult, error) {
	return tenant.StepResult{}, r.p.ensureSchema(ctx, r)
}

// migrateSchema is the migrations step: the newest version (migrateNewTenant).
func migrateSchema(ctx context.Context, r *run) (tenant.StepResult, error) {
	v, err := r.p.migrateNewTenant(ctx, r)
	if err != nil {
		return tenant.StepResult{}, err
	}
	return tenant.StepResult{Migrated: true, MigrationVersion: int64(v)}, nil
}

// createAdmin is the admin_user step (ensureAdmin); its record forgets the password hash.
func createAdmin(ctx context.Context, r *run) (tenant.StepResult, error) {
	if err := r.p.ensureAdmin(ctx, r); err != nil {
		return tenant.StepResult{}, err
	}
	return tenant.StepResult{AdminCreated: true}, nil
}

// createSearchIndex is the search_index step: nothing when search lives in Postgres.
func createSearchIndex(ctx context.Context, r *run) (tenant.StepResult, error) {
	if r.p.search == nil {
		return tenant.StepResult{}, nil
	}
	name, err := r.p.search.EnsureIndex(ctx, r.t)
	if err != nil {
		return tenant.StepResult{}, fmt.Errorf("creating search index: %w", err)
	}
	return tenant.StepResult{SearchIndex: name}, nil
}

// activate is the last step: its record makes the tenant active, with the audit entry.
func activate(context.Context, *run) (tenant.StepResult, error) {
	return tenant.StepResult{Status: tenant.StatusActive, Event: "activate", Actor: "provisioner"}, nil
}

// SQLSTATEs the steps tell apart.
const (
	codeDuplicateObject    = "42710" // a role (or an extension) that exists
	codeDuplicateSchema    = "42P06"
	codeDuplicateDatabase  = "42P04"
	codeInvalidGrant       = "0LP01" // already a member, or a grant to itself
	codeUniqueViolation    = "23505" // a catalog row a concurrent run inserted first
	codeUndefinedTable     = "42P01" // no version table: no migration applied
	codeInvalidSchemaName  = "3F000" // no such schema
	codeInvalidCatalogName = "3D000" // no such database
	codeUndefinedObject    = "42704" // no such role or replication slot
	codeTooManyConnections = "53300"
	codeCannotConnectNow   = "57P03" // the server is starting or shutting down
)

func pgCode(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code
	}
	return ""
}

// ensureRole creates the tenant's login role with its password and search path, or
// brings an existing one (an earlier run's) back to that state.
func (p *Provisioner) ensureRole(ctx context.Context, t *tenant.Tenant) error {
	db, err := p.shards.pool(ctx, t.Shard)
	if err != nil {
		return err
	}
	role := pgx.Identifier{t.DBRole}.Sanitize()
	// NOINHERIT and no membership anywhere: the role reaches its own objects only. The
	// admin role becomes a member, which it needs to create objects owned by the tenant
	// role when it is not a superuser (for a superuser it changes nothing).
	create := `CREATE ROLE ` + role + ` LOGIN NOINHERIT PASSWORD ` + quoteLiteral(t.DBPassword)
	grant := `GRANT ` + role + ` TO CURRENT_USER`
	searchPath := `ALTER ROLE ` + role + ` SET search_path TO ` + pgx.Identifier{t.SchemaName}.Sanitize()
	// The usual case in one round trip and one commit.
	_, err = db.Exec(ctx, create+`; `+grant+`; `+searchPath)
	if err == nil {
		return grantGateway(ctx, db, role)
	}
	if c := pgCode(err); c != codeDuplicateObject && c != codeInvalidGrant {
		return fmt.Errorf("creating role: %w", err)
	}
	// An earlier run got some of the way: statement by statement.
	_, err = db.Exec(ctx, create)
	if pgCode(err) == codeDuplicateObject {
		_, err = db.Exec(ctx, `ALTER ROLE `+role+` LOGIN PASSWORD `+quoteLiteral(t.DBPassword))
	}
	if err != nil {
		return fmt.Errorf("creating role: %w", err)
	}
	if _, err := db.Exec(ctx, grant); err != nil && pgCode(err) != codeInvalidGrant {
		return fmt.Errorf("granting role: %w", err)
	}
	if _, err := db.Exec(ctx, searchPath); err != nil {
		return fmt.Errorf("setting role search_path: %w", err)
	}
	return grantGateway(ctx, db, role)
}

// grantGateway makes the shared pools' gateway role (created here on a shard of its own
// cluster) a member of the tenant's role, so that it can bind transactions to it.
func grantGateway(ctx context.Context, db *pgxpool.Pool, role string) error {
	gw := pgx.Identifier{tenant.GatewayRole}.Sanitize()
	_, err := db.Exec(ctx, `DO $$ BEGIN
		IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = `+quoteLiteral(tenant.GatewayRole)+`) THEN
			CREATE ROLE `+gw+` LOGIN NOINHERIT;
		END IF;
		EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$`)
	if err != nil {
		return fmt.Errorf("creating gateway role: %w", err)
	}
	if _, err := db.Exec(ctx, `GRANT `+role+` TO `+gw); err != nil && pgCode(err) != codeInvalidGrant {
		return fmt.Errorf("granting role to the gateway: %w", err)
	}
	return nil
}

// ensureSchema creates the tenant's schema (and in database isolation its database),
// owned by the tenant's role. One that exists already is accepted only when the
// tenant's role owns it: another owner means the name is taken by something else, and
// the step fails rather than hand that object to the tenant.
func (p *Provisioner) ensureSchema(ctx context.Context, r *run) error {
	t := r.t
	db, err := p.shards.pool(ctx, t.Shard)
	if err != nil {
		return err
	}
	role := pgx.Identifier{t.DBRole}.Sanitize()
	schema := pgx.Identifier{t.SchemaName}.Sanitize()
	if t.Isolation == tenant.IsolationSchema {
		_, err := db.Exec(ctx, `CREATE SCHEMA `+schema+` AUTHORIZATION `+role)
		if pgCode(err) == codeDuplicateSchema {
			return checkOwner(ctx, db, "schema", t.SchemaName, t.DBRole,
				`SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = $1`)
		}
		if err != nil {
			return fmt.Errorf("creating schema: %w", err)
		}
		return nil
	}
	dbName := pgx.Identifier{t.DatabaseName}.Sanitize()
	_, err = db.Exec(ctx, `CREATE DATABASE `+dbName+` OWNER `+role)
	if pgCode(err) == codeDuplicateDatabase {
		err = checkOwner(ctx, db, "database", t.DatabaseName, t.DBRole,
			`SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = $1`)
	}
	if err != nil {
		return fmt.Errorf("creating database: %w", err)
	}
	if _, err := db.Exec(ctx, `REVOKE ALL ON DATABASE `+dbName+` FROM PUBLIC`); err != nil {
		return fmt.Errorf("restricting database: %w", err)
	}
	// The tenant role owns its database, so it creates its schema itself.
	conn, err := r.tenantConn(ctx)
	if err != nil {
		return err
	}
	_, err = conn.Exec(ctx, `CREATE SCHEMA `+schema+` AUTHORIZATION `+role)
	if pgCode(err) == codeDuplicateSchema {
		err = checkOwner(ctx, conn, "schema", t.SchemaName, t.DBRole,
			`SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = $1`)
	}
	if err != nil {
		return fmt.Errorf("creating schema: %w", err)
	}
	if _, err := conn.Exec(ctx, `REVOKE ALL ON SCHEMA public FROM PUBLIC`); err != nil {
		return fmt.Errorf("restricting schema public: %w", err)
	}
	return nil
}

// rowQuerier is a pool or a connection.
type rowQuerier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

var (
	_ rowQuerier = (*pgxpool.Pool)(nil)
	_ rowQuerier = (*pgx.Conn)(nil)
)

// checkOwner returns nil when the object of the kind named name is owned by role, and
// an error naming its owner otherwise.
func checkOwner(ctx context.Context, db rowQuerier, kind, name, role, query string) error {
	var owner string
	if err := db.QueryRow(ctx, query, name).Scan(&owner); err != nil {
		return fmt.Errorf("reading owner of %s %s: %w", kind, name, err)
	}
	if owner != role {
		return fmt.Errorf("%s %s already exists and is owned by %s, not by the tenant role %s", kind, name, owner, role)
	}
	return nil
}

// ensureAdmin creates the tenant's admin user from the pending hash, unless a user
// with that email exists (an earlier run created it).
func (p *Provisioner) ensureAdmin(ctx context.Context, r *run) error {
	t := r.t
	if t.PendingAdminHash == "" {
		return nil
	}
	const insert = `INSERT INTO %susers (email, password_hash, is_admin) VALUES ($1, $2, true)
		ON CONFLICT (lower(email)) DO NOTHING`
	var err error
	if t.Isolation == tenant.IsolationDatabase {
		var conn *pgx.Conn
		if conn, err = r.tenantConn(ctx); err == nil {
			_, err = conn.Exec(ctx, fmt.Sprintf(insert, ""), t.AdminEmail, t.PendingAdminHash)
		}
	} else {
		// The shard's warm admin pool, naming the tenant's table explicitly.
		db, perr := p.shards.pool(ctx, t.Shard)
		if perr != nil {
			return perr
		}
		_, err = db.Exec(ctx, fmt.Sprintf(insert, pgx.Identifier{t.SchemaName}.Sanitize()+"."), t.AdminEmail, t.PendingAdminHash)
	}
	if err != nil {
		return fmt.Errorf("creating admin user: %w", err)
	}
	return nil
}
