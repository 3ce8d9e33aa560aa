package provisioner

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"

	"github.com/golang-migrate/migrate/v4"
	"github.com/golang-migrate/migrate/v4/database"
	"github.com/golang-migrate/migrate/v4/source/iofs"
	"github.com/jackc/pgx/v5"

	"github.com/tenantplane/tenantplane/tenant"
)

// A new tenant's schema is brought to the newest version by one transaction rather
// than by golang-migrate. golang-migrate commits a version-table transaction (with a
// TRUNCATE) before and after every file, looks its table up in information_schema and
// takes and drops its lock around the run: measured with bench/provision, that kept a
// signup at 1.6-1.7x the raw DDL even over a warm pooled connection (2.5x over a fresh
// login), against 1.1-1.2x for the one transaction. The transaction runs the same files
// in the same order, as the tenant's role with only its schema on the search path, and
// leaves the version table exactly as golang-migrate would (one row: newest version,
// clean), under golang-migrate's own advisory lock for that schema. It is all or
// nothing: on any failure (a file that cannot run in a transaction block, a schema that
// is missing or not fresh, an error in a file) it changes nothing, and the step falls
// back to golang-migrate, which then does the work or reports the error as every other
// migrator does.

// migrationsTable is golang-migrate's version table, in the tenant's schema.
const migrationsTable = "schema_migrations"

// migrateNewTenant is the migrations step: the newest version, by the one-transaction
// bootstrap when the schema is fresh, by golang-migrate otherwise. A schema left dirty
// by a run killed inside a migration is forced back to the version before and migrated
// again: that migration ran in a transaction of its own, which rolled back, and a tenant
// still provisioning has no data to lose. It returns the version reached.
func (p *Provisioner) migrateNewTenant(ctx context.Context, r *run) (uint, error) {
	t := r.t
	if err := p.ensureExtensions(ctx, t); err != nil {
		return 0, fmt.Errorf("migrating tenant %s: %w", t.Slug, err)
	}
	v, err := p.bootstrapSchema(ctx, r)
	if err == nil {
		return v, nil
	}
	p.log.Debug("one-transaction migration not applicable, running golang-migrate", "tenant", t.Slug, "reason", err)

	v, err = p.MigrateTenant(ctx, t, -1)
	var dirty migrate.ErrDirty
	if !errors.As(err, &dirty) {
		return v, err
	}
	prev, perr := p.versionBefore(uint(dirty.Version))
	if perr != nil {
		return v, errors.Join(err, perr)
	}
	p.log.Warn("tenant schema left dirty by an interrupted run; forcing it back and migrating again",
		"tenant", t.Slug, "dirty_version", dirty.Version, "forced_to", prev)
	dsn, derr := p.tenantDSN(t)
	if derr != nil {
		return v, errors.Join(err, derr)
	}
	job, jerr := p.tenantJob(ctx, t, dsn)
	if jerr != nil {
		return v, errors.Join(err, jerr)
	}
	job.target, job.force = int(prev), true
	if _, _, ferr := runMigrate(ctx, job); ferr != nil {
		return v, errors.Join(err, fmt.Errorf("forcing version %d: %w", prev, ferr))
	}
	return p.MigrateTenant(ctx, t, -1)
}

// versionBefore returns the migration version that precedes v in the tenant set, 0
// when v is the first.
func (p *Provisioner) versionBefore(v uint) (uint, error) {
	versions, err := migrationVersions(p.tenantMigrations)
	if err != nil {
		return 0, err
	}
	prev := uint(0)
	for _, x := range versions {
		if x >= v {
			break
		}
		prev = x
	}
	return prev, nil
}

// bootstrapSchema applies every tenant migration to the tenant's fresh schema in one
// transaction and returns the version reached. Any error means nothing was changed.
func (p *Provisioner) bootstrapSchema(ctx context.Context, r *run) (uint, error) {
	t := r.t
	script, version, err := p.bootstrapScript()
	if err != nil {
		return 0, err
	}
	if version == 0 {
		return 0, errors.New("no tenant migrations")
	}
	var conn *pgx.Conn
	setRole := ""
	if t.Isolation == tenant.IsolationDatabase {
		// The tenant's own connection to its own database.
		if conn, err = r.tenantConn(ctx); err != nil {
			return 0, err
		}
	} else {
		// A warm admin connection to the shard database, acting as the tenant's role.
		db, err := p.shards.pool(ctx, t.Shard)
		if err != nil {
			return 0, err
		}
		pc, err := db.Acquire(ctx)
		if err != nil {
			return 0, fmt.Errorf("acquiring shard connection: %w", err)
		}
		defer pc.Release() // a connection left in a transaction is discarded by the pool
		conn = pc.Conn()
		setRole = `SET LOCAL ROLE ` + pgx.Identifier{t.DBRole}.Sanitize() + `;`
	}
	var dbName string
	if err := conn.QueryRow(ctx, `SELECT current_database()`).Scan(&dbName); err != nil {
		return 0, fmt.Errorf("reading database name: %w", err)
	}
	// The id golang-migrate computes for this schema (see openMigrate): migrators exclude
	// each other whichever way they run.
	lockID, err := database.GenerateAdvisoryLockId("/"+dbName, t.SchemaName, migrationsTable)
	if err != nil {
		return 0, err
	}
	schema := pgx.Identifier{t.SchemaName}.Sanitize()
	var sb strings.Builder
	sb.WriteString(`BEGIN;
SELECT pg_advisory_xact_lock(` + lockID + `);
` + setRole + `
SET LOCAL search_path TO ` + schema + `;
-- Fails when the schema is missing or not fresh: golang-migrate takes over then.
CREATE TABLE ` + migrationsTable + ` (version bigint NOT NULL PRIMARY KEY, dirty boolean NOT NULL);
`)
	sb.WriteString(script)
	sb.WriteString(fmt.Sprintf("\n;\nINSERT INTO %s (version, dirty) VALUES (%d, false);\nCOMMIT;", migrationsTable, version))
	// One simple-protocol round trip: the statements run in order and the first error
	// skips the rest, leaving the transaction to roll back.
	if _, err := conn.Exec(ctx, sb.String()); err != nil {
		if conn.PgConn().TxStatus() != 'I' {
			if _, rerr := conn.Exec(context.WithoutCancel(ctx), `ROLLBACK`); rerr != nil {
				_ = conn.Close(context.WithoutCancel(ctx))
			}
		}
		return 0, err
	}
	return version, nil
}

// bootstrapScript returns the tenant migration files' up SQL, in version order, and
// the newest version.
func (p *Provisioner) bootstrapScript() (string, uint, error) {
	return p.upScript(0, ^uint(0))
}

// upScript returns the up SQL of the tenant migrations with versions in (from, to], in
// version order, and the last version it holds (0 when none).
func (p *Provisioner) upScript(from, to uint) (string, uint, error) {
	src, err := iofs.New(p.tenantMigrations, ".")
	if err != nil {
		return "", 0, fmt.Errorf("reading tenant migrations: %w", err)
	}
	defer src.Close()
	versions, err := migrationVersions(p.tenantMigrations)
	if err != nil {
		return "", 0, err
	}
	var sb strings.Builder
	last := uint(0)
	for _, v := range versions {
		if v <= from || v > to {
			continue
		}
		rc, _, err := src.ReadUp(v)
		if errors.Is(err, fs.ErrNotExist) {
			continue // a version with a down file only
		}
		if err != nil {
			return "", 0, fmt.Errorf("reading tenant migration %d: %w", v, err)
		}
		b, err := io.ReadAll(rc)
		_ = rc.Close()
		if err != nil {
			return "", 0, fmt.Errorf("reading tenant migration %d: %w", v, err)
		}
		// A newline first: a file may end in a comment.
		sb.WriteString("\n;\n")
		sb.Write(b)
		last = v
	}
	return sb.String(), last, nil
}

// upgradeSchema brings a schema-isolated tenant that its version table says is clean at
// version from up to version to in one transaction and one round trip, under
// golang-migrate's advisory lock for the schema, on a warm shard connection acting as
// the tenant's role with only its schema on the search path; the version table ends as
// golang-migrate leaves it. The version is checked inside the transaction, not taken
// from the registry. Any error means nothing was changed: the caller then runs
// golang-migrate, which does the work or reports the failure (and the dirty version)
// as every migrator does.
func (p *Provisioner) upgradeSchema(ctx context.Context, t *tenant.Tenant, from, to uint) error {
	if t.Isolation != tenant.IsolationSchema {
		return errors.New("one-transaction upgrade is for schema isolation only")
	}
	script, last, err := p.upScript(from, to)
	if err != nil {
		return err
	}
	if last != to {
		return fmt.Errorf("no up migration ends at version %d", to)
	}
	db, err := p.shards.pool(ctx, t.Shard)
	if err != nil {
		return err
	}
	pc, err := db.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("acquiring shard connection: %w", err)
	}
	defer pc.Release() // a connection left in a transaction is discarded by the pool
	conn := pc.Conn()
	dbName, ok := p.shardDBNames.Load(t.Shard)
	if !ok {
		var name string
		if err := conn.QueryRow(ctx, `SELECT current_database()`).Scan(&name); err != nil {
			return fmt.Errorf("reading database name: %w", err)
		}
		dbName, _ = p.shardDBNames.LoadOrStore(t.Shard, name)
	}
	// The id golang-migrate computes for this schema, from the name the server reports.
	lockID, err := database.GenerateAdvisoryLockId("/"+dbName.(string), t.SchemaName, migrationsTable)
	if err != nil {
		return err
	}
	var sb strings.Builder
	sb.WriteString(`BEGIN;
SELECT pg_advisory_xact_lock(` + lockID + `);
SET LOCAL ROLE ` + pgx.Identifier{t.DBRole}.Sanitize() + `;
SET LOCAL search_path TO ` + pgx.Identifier{t.SchemaName}.Sanitize() + `;
DO $tenantplane$ BEGIN
	IF (SELECT count(*) FROM ` + migrationsTable + `) <> 1
		OR NOT EXISTS (SELECT 1 FROM ` + migrationsTable + fmt.Sprintf(` WHERE version = %d AND NOT dirty)`, from) + ` THEN
		RAISE EXCEPTION 'schema is not clean at version %', ` + fmt.Sprint(from) + `;
	END IF;
END $tenantplane$;
`)
	sb.WriteString(script)
	sb.WriteString(fmt.Sprintf("\n;\nUPDATE %s SET version = %d, dirty = false;\nCOMMIT;", migrationsTable, to))
	if _, err := conn.Exec(ctx, sb.String()); err != nil {
		if conn.PgConn().TxStatus() != 'I' {
			if _, rerr := conn.Exec(context.WithoutCancel(ctx), `ROLLBACK`); rerr != nil {
				_ = conn.Close(context.WithoutCancel(ctx))
			}
		}
		return err
	}
	return nil
}
