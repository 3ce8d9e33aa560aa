package provisioner

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"time"

	"github.com/golang-migrate/migrate/v4"
	"github.com/golang-migrate/migrate/v4/source/iofs"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tenantplane/tenantplane/migrations"
	"github.com/tenantplane/tenantplane/tenant"
)

// MigrateShared applies the public schema (registry) migrations to the control database.
func MigrateShared(ctx context.Context, controlURL string) (uint, error) {
	v, _, err := runMigrate(ctx, migrateJob{set: "public", fsys: migrations.Public(), dsn: controlURL, target: -1})
	return v, err
}

// MigrateTenant brings the tenant's schema to version target (-1: the newest), as the
// tenant's role with only its schema on the search path, so no statement can land in
// another schema. It records the resulting version in the registry and returns it.
// A tenant whose schema does not exist fails without touching anything.
func (p *Provisioner) MigrateTenant(ctx context.Context, t *tenant.Tenant, target int) (uint, error) {
	dsn, err := p.tenantDSN(t)
	if err != nil {
		return 0, err
	}
	if err := p.ensureExtensions(ctx, t); err != nil {
		return 0, fmt.Errorf("migrating tenant %s: %w", t.Slug, err)
	}
	job, err := p.tenantJob(ctx, t, dsn)
	if err != nil {
		return 0, fmt.Errorf("migrating tenant %s: %w", t.Slug, err)
	}
	job.target = target
	v, dirty, merr := runMigrate(ctx, job)
	if notOpened(merr) {
		// Nothing was read or changed: the registry keeps what it knew.
		return 0, fmt.Errorf("migrating tenant %s: %w", t.Slug, merr)
	}
	if serr := p.store.SetMigration(context.WithoutCancel(ctx), t.ID, int64(v), dirty); serr != nil && merr == nil {
		merr = serr
	}
	t.MigrationVersion, t.MigrationDirty = int64(v), dirty
	if merr != nil {
		return v, fmt.Errorf("migrating tenant %s: %w", t.Slug, merr)
	}
	return v, nil
}

// tenantJob returns the migration job of the tenant's schema: over a pooled shard
// connection switched to the tenant's role in schema isolation (see migrate_driver.go),
// over a login as the tenant's role in its own database otherwise.
func (p *Provisioner) tenantJob(ctx context.Context, t *tenant.Tenant, dsn string) (migrateJob, error) {
	job := migrateJob{set: "tenant", fsys: p.tenantMigrations, dsn: dsn, schema: t.SchemaName}
	if t.Isolation == tenant.IsolationDatabase {
		return job, nil
	}
	sh, ok := p.shards.get(t.Shard)
	if !ok {
		return job, fmt.Errorf("tenant %q is on unknown shard %q", t.Slug, t.Shard)
	}
	pool, err := p.migratePools.get(ctx, sh)
	if err != nil {
		return job, err
	}
	job.pool, job.role = pool, t.DBRole
	return job, nil
}

// errNoSchema is returned by runMigrate when the schema it was told to migrate is not
// the connection's current schema, which means it does not exist.
var errNoSchema = errors.New("schema does not exist")

// openError marks a migration that could not start: the schema was neither read nor
// changed (no connection, no such schema).
type openError struct{ err error }

var _ error = (*openError)(nil)

func (e *openError) Error() string { return e.err.Error() }
func (e *openError) Unwrap() error { return e.err }

// notOpened reports whether err comes from a migration that could not start.
func notOpened(err error) bool {
	var oe *openError
	return errors.As(err, &oe)
}

// lockWait bounds how long a migrator waits for another one working in the same schema.
const lockWait = time.Minute

// migrateJob is one run of golang-migrate over one schema.
type migrateJob struct {
	set  string // "public" or "tenant", for messages
	fsys fs.FS  // the migration files
	dsn  string // where to connect; its search_path selects the schema
	// pool and role, when set, replace dsn: a pooled connection switched to role, with
	// only schema on the search path.
	pool   *pgxpool.Pool
	role   string
	schema string // the schema the connection must land in; "" accepts any
	target int    // version to reach: -1 the newest, 0 none (all the way down)
	force  bool   // set the version to target without running anything
}

// runMigrate applies the migration set to the database at job.dsn, up or down to
// job.target, and returns the version it ends at and whether that version is dirty
// (a migration failed or was interrupted mid-way). Every migrator in the platform (the
// CLI, the fleet orchestrator, the API, signups) goes through here, so that they all take
// the same golang-migrate advisory lock for a schema and never run in it at once. An
// error from a migration that could not start at all is an *openError.
func runMigrate(ctx context.Context, job migrateJob) (uint, bool, error) {
	m, err := openMigrate(ctx, job)
	if err != nil {
		return 0, false, &openError{err}
	}
	defer m.Close()
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-ctx.Done():
			// Stop between two migrations; one that has started runs to its end.
			select {
			case m.GracefulStop <- true:
			default:
			}
		case <-done:
		}
	}()
	switch {
	case job.force:
		err = m.Force(forceVersion(job.target))
	case job.target < 0:
		err = m.Up()
	case job.target == 0:
		err = m.Down()
	default:
		err = m.Migrate(uint(job.target))
	}
	if errors.Is(err, migrate.ErrNoChange) {
		err = nil
	}
	v, dirty, verr := m.Version()
	if errors.Is(verr, migrate.ErrNilVersion) {
		v, verr = 0, nil
	}
	if err == nil && dirty {
		err = migrate.ErrDirty{Version: int(v)}
	}
	if err == nil && verr != nil {
		err = verr
	}
	return v, dirty, err
}

// forceVersion maps a registry version to golang-migrate's: 0 means none applied.
func forceVersion(v int) int {
	if v <= 0 {
		return -1
	}
	return v
}

// openMigrate connects as the job says and returns a migrator on the connection's
// current schema, driven by pgDriver (migrate_driver.go).
//
// golang-migrate serializes migrators with an advisory lock whose id is derived from
// (database name, schema, version table). Its stock driver takes the database name from
// the URL's path, so two processes spelling one database differently (with or without a
// path, percent-encoded or not) would compute different ids and could migrate one schema
// at once. pgDriver asks the server: the database name is "/" + current_database(),
// exactly what the golang-migrate CLI derives from a URL that names the database, so an
// operator running that tool by hand is excluded too.
func openMigrate(ctx context.Context, job migrateJob) (*migrate.Migrate, error) {
	src, err := iofs.New(job.fsys, ".")
	if err != nil {
		return nil, fmt.Errorf("reading %s migrations: %w", job.set, err)
	}
	conn, release, err := openMigrationConn(ctx, job)
	if err != nil {
		_ = src.Close()
		return nil, err
	}
	drv, err := newPGDriver(ctx, conn, release, job.schema)
	if err != nil {
		_ = src.Close()
		return nil, fmt.Errorf("opening %s migrations: %w", job.set, err)
	}
	m, err := migrate.NewWithInstance("iofs", src, "tenantplane", drv)
	if err != nil {
		_ = drv.Close()
		_ = src.Close()
		return nil, fmt.Errorf("opening %s migrations: %w", job.set, err)
	}
	// pgDriver.Lock gives up after lockWait with a clear error; this is a backstop.
	m.LockTimeout = lockWait + 10*time.Second
	return m, nil
}

// LatestTenantVersion returns the newest tenant migration version in the binary.
func LatestTenantVersion() (uint, error) {
	return latestVersion(migrations.Tenant())
}

// latestVersion returns the newest version of a migration set, 0 for an empty one.
func latestVersion(fsys fs.FS) (uint, error) {
	versions, err := migrationVersions(fsys)
	if err != nil || len(versions) == 0 {
		return 0, err
	}
	return versions[len(versions)-1], nil
}

// migrationVersions lists the versions of a migration set in ascending order.
func migrationVersions(fsys fs.FS) ([]uint, error) {
	src, err := iofs.New(fsys, ".")
	if err != nil {
		return nil, fmt.Errorf("reading migrations: %w", err)
	}
	defer src.Close()
	v, err := src.First()
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading migrations: %w", err)
	}
	out := []uint{v}
	for {
		next, err := src.Next(v)
		if err != nil {
			return out, nil
		}
		out = append(out, next)
		v = next
	}
}
