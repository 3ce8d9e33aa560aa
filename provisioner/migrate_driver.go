package provisioner

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang-migrate/migrate/v4/database"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// pgDriver is the golang-migrate database driver every migration of the platform runs
// through. It keeps golang-migrate's Postgres conventions exactly, so that it and the
// stock pgx/v5 driver (and the golang-migrate CLI) can take turns on one schema: the
// version table is <schema>.schema_migrations (version bigint primary key, dirty
// boolean), and migrators exclude each other with the session advisory lock
// database.GenerateAdvisoryLockId("/"+database, schema, "schema_migrations").
//
// What it does differently is cost: across thousands of schemas the stock driver's
// fixed work per schema (an information_schema query planned on every open, a TRUNCATE
// of the version table before and after each migration, a fresh login) is several
// times the work of a small migration. This one checks for the version table with
// to_regclass, rewrites its single row with DELETE and INSERT in one round trip, and
// runs over a pooled connection switched to the tenant (see openTenantConn). Lock waits
// end with the migrator's context; a migration that has started runs to its end.
type pgDriver struct {
	ctx     context.Context
	conn    *pgx.Conn
	release func(healthy bool)
	table   string // quoted schema.schema_migrations
	schema  string
	lockID  int64
	locked  atomic.Bool
	closeMu sync.Once

	// cached, version and dirty are the version row as this driver last read or wrote
	// it since taking the lock: its final Version costs no round trip. golang-migrate
	// calls the driver from one goroutine at a time.
	cached  bool
	version int
	dirty   bool
}

var _ database.Driver = (*pgDriver)(nil)

// newPGDriver returns a driver on conn, whose current schema is the one migrated, and
// creates the version table if missing. release gives the connection back; it is told
// whether the connection is still fit for reuse. It returns errNoSchema (wrapped) when
// wantSchema is set and is not the connection's current schema.
func newPGDriver(ctx context.Context, conn *pgx.Conn, release func(healthy bool), wantSchema string) (*pgDriver, error) {
	var dbName string
	var schema *string
	var exists bool
	err := conn.QueryRow(ctx, `SELECT current_database(), current_schema(),
		COALESCE(to_regclass(quote_ident(current_schema()) || '.`+migrationsTable+`') IS NOT NULL, false)`).Scan(&dbName, &schema, &exists)
	if err != nil {
		release(false)
		return nil, fmt.Errorf("reading the current schema: %w", err)
	}
	if schema == nil || (wantSchema != "" && *schema != wantSchema) {
		release(true)
		if wantSchema == "" {
			return nil, fmt.Errorf("no schema on the search path: %w", errNoSchema)
		}
		return nil, fmt.Errorf("schema %q: %w", wantSchema, errNoSchema)
	}
	lockID, err := database.GenerateAdvisoryLockId("/"+dbName, *schema, migrationsTable)
	if err != nil {
		release(true)
		return nil, err
	}
	id, err := strconv.ParseInt(lockID, 10, 64)
	if err != nil {
		release(true)
		return nil, fmt.Errorf("parsing lock id %q: %w", lockID, err)
	}
	d := &pgDriver{
		ctx: ctx, conn: conn, release: release, schema: *schema, lockID: id,
		table: pgx.Identifier{*schema, migrationsTable}.Sanitize(),
	}
	if !exists {
		if err := d.createTable(); err != nil {
			_ = d.Close()
			return nil, err
		}
	}
	return d, nil
}

func (d *pgDriver) createTable() (err error) {
	if err := d.Lock(); err != nil {
		return err
	}
	defer func() {
		if uerr := d.Unlock(); uerr != nil {
			err = errors.Join(err, uerr)
		}
	}()
	_, err = d.conn.Exec(context.WithoutCancel(d.ctx), `CREATE TABLE IF NOT EXISTS `+d.table+` (version bigint NOT NULL PRIMARY KEY, dirty boolean NOT NULL)`)
	if err != nil {
		return fmt.Errorf("creating the version table: %w", err)
	}
	return nil
}

// Open is not supported: the driver is built on a connection by newPGDriver.
func (d *pgDriver) Open(string) (database.Driver, error) {
	return nil, errors.New("the tenantplane migration driver is not opened by URL")
}

// Close releases the connection.
func (d *pgDriver) Close() error {
	d.closeMu.Do(func() {
		healthy := !d.conn.IsClosed() && d.conn.PgConn().TxStatus() == 'I'
		d.release(healthy)
	})
	return nil
}

// Lock takes the schema's migration lock, waiting while another migrator holds it, up
// to lockWait or the end of the migrator's context.
func (d *pgDriver) Lock() error {
	return database.CasRestoreOnErr(&d.locked, false, true, database.ErrLocked, func() error {
		ctx, cancel := context.WithTimeout(d.ctx, lockWait)
		defer cancel()
		if _, err := d.conn.Exec(ctx, `SELECT pg_advisory_lock($1)`, d.lockID); err != nil {
			if errors.Is(ctx.Err(), context.DeadlineExceeded) && d.ctx.Err() == nil {
				return fmt.Errorf("another migrator kept schema %s locked for %s: %w", d.schema, lockWait, errLockWait)
			}
			return fmt.Errorf("locking schema %s for migration: %w", d.schema, err)
		}
		d.cached = false // another migrator may have changed it while we waited
		return nil
	})
}

// errLockWait is returned by Lock when another migrator held the schema too long.
var errLockWait = errors.New("migration lock wait exceeded")

// Unlock releases the schema's migration lock.
func (d *pgDriver) Unlock() error {
	return database.CasRestoreOnErr(&d.locked, true, false, database.ErrNotLocked, func() error {
		if _, err := d.conn.Exec(context.WithoutCancel(d.ctx), `SELECT pg_advisory_unlock($1)`, d.lockID); err != nil {
			return fmt.Errorf("unlocking schema %s: %w", d.schema, err)
		}
		return nil
	})
}

// Run executes one migration file, in one implicit transaction unless it manages its
// own. It is not interrupted by the end of the migrator's context.
func (d *pgDriver) Run(migration io.Reader) error {
	body, err := io.ReadAll(migration)
	if err != nil {
		return err
	}
	query := string(body)
	if strings.TrimSpace(query) == "" {
		return nil
	}
	if _, err := d.conn.Exec(context.WithoutCancel(d.ctx), query); err != nil {
		return migrationError(query, err)
	}
	return nil
}

// migrationError says where in the file a migration failed.
func migrationError(query string, err error) error {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return fmt.Errorf("migration failed: %w", err)
	}
	where := ""
	if pgErr.Position > 0 && int(pgErr.Position) <= len([]rune(query)) {
		line := strings.Count(string([]rune(query)[:pgErr.Position]), "\n") + 1
		where = fmt.Sprintf(" at line %d", line)
	}
	detail := ""
	if pgErr.Detail != "" {
		detail = " (" + pgErr.Detail + ")"
	}
	return fmt.Errorf("migration failed%s: %s%s: %w", where, pgErr.Message, detail, err)
}

// SetVersion records version and dirty as the schema's only version row.
func (d *pgDriver) SetVersion(version int, dirty bool) error {
	q := `DELETE FROM ` + d.table
	if version >= 0 || (version == database.NilVersion && dirty) {
		q += `; INSERT INTO ` + d.table + ` (version, dirty) VALUES (` + strconv.Itoa(version) + `, ` + strconv.FormatBool(dirty) + `)`
	}
	// One simple-protocol round trip: both statements commit together or not at all.
	if _, err := d.conn.Exec(context.WithoutCancel(d.ctx), q); err != nil {
		d.cached = false
		return fmt.Errorf("recording version %d of schema %s: %w", version, d.schema, err)
	}
	d.cached, d.version, d.dirty = true, version, dirty
	return nil
}

// Version returns the schema's version and dirty flag; database.NilVersion when no
// migration was ever applied.
func (d *pgDriver) Version() (int, bool, error) {
	if d.cached {
		return d.version, d.dirty, nil
	}
	var v int64
	var dirty bool
	err := d.conn.QueryRow(context.WithoutCancel(d.ctx), `SELECT version, dirty FROM `+d.table+` LIMIT 1`).Scan(&v, &dirty)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		d.cached, d.version, d.dirty = true, database.NilVersion, false
		return database.NilVersion, false, nil
	case pgCode(err) == codeUndefinedTable:
		return database.NilVersion, false, nil
	case err != nil:
		return 0, false, fmt.Errorf("reading the version of schema %s: %w", d.schema, err)
	}
	d.cached, d.version, d.dirty = true, int(v), dirty
	return int(v), dirty, nil
}

// Drop drops every table of the schema, as golang-migrate's drivers do; the platform
// never calls it.
func (d *pgDriver) Drop() error {
	d.cached = false
	ctx := context.WithoutCancel(d.ctx)
	rows, err := d.conn.Query(ctx, `SELECT tablename FROM pg_tables WHERE schemaname = current_schema()`)
	if err != nil {
		return err
	}
	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return err
	}
	for _, t := range tables {
		if _, err := d.conn.Exec(ctx, `DROP TABLE IF EXISTS `+pgx.Identifier{d.schema, t}.Sanitize()+` CASCADE`); err != nil {
			return err
		}
	}
	return nil
}

// Schema-isolated tenants are migrated over pooled connections of the shard's admin
// role, switched to the tenant for the migration with SET ROLE and SET search_path:
// statements run with the tenant role's privileges and only its schema on the search
// path, as over a connection logged in as the tenant, and the objects they create are
// owned by the tenant role. A fresh login per tenant would cost a server process, an
// authentication and cold catalog caches, several times the work of a small migration.
// Tenants with a database of their own are migrated over a login of their own.

// migratePoolConns bounds each shard's migration pool; fleet runs bound the
// connections they use per shard further (FleetConfig.ShardConns).
const migratePoolConns = maxFleetParallel

// openMigrationConn returns the connection a migration job runs over and the function
// that gives it back: a pooled connection switched to job.role with only job.schema on
// the search path when job.pool is set, a login with job.dsn otherwise.
func openMigrationConn(ctx context.Context, job migrateJob) (*pgx.Conn, func(healthy bool), error) {
	if job.pool == nil {
		conn, err := pgx.Connect(ctx, job.dsn)
		if err != nil {
			return nil, nil, fmt.Errorf("connecting for %s migrations: %w", job.set, err)
		}
		return conn, func(bool) { _ = conn.Close(context.Background()) }, nil
	}
	pc, err := job.pool.Acquire(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("connecting for %s migrations: %w", job.set, err)
	}
	release := func(healthy bool) {
		conn := pc.Conn()
		if healthy {
			// Back to the admin role and its settings, and no advisory lock left behind.
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_, err := conn.Exec(ctx, `RESET ROLE; RESET ALL; SELECT pg_advisory_unlock_all()`)
			healthy = err == nil
		}
		if !healthy {
			_ = conn.Close(context.Background()) // the pool drops a closed connection
		}
		pc.Release()
	}
	setup := `SET ROLE ` + pgx.Identifier{job.role}.Sanitize() + `; SET search_path TO ` + pgx.Identifier{job.schema}.Sanitize()
	if _, err := pc.Conn().Exec(ctx, setup); err != nil {
		release(false)
		return nil, nil, fmt.Errorf("switching to the tenant role: %w", err)
	}
	return pc.Conn(), release, nil
}
