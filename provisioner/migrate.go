package provisioner

import (
	"context"
	"errors"
	"fmt"
	"net/url"

	"github.com/golang-migrate/migrate/v4"
	_ "github.com/golang-migrate/migrate/v4/database/pgx/v5" // registers pgx5://
	"github.com/golang-migrate/migrate/v4/source/iofs"
	"github.com/jackc/pgx/v5"

	"github.com/tenantplane/tenantplane/migrations"
	"github.com/tenantplane/tenantplane/tenant"
)

// MigrateShared applies the public schema (registry) migrations to the control database.
func MigrateShared(ctx context.Context, controlURL string) (uint, error) {
	return runMigrate(ctx, "public", controlURL, -1)
}

// MigrateTenant brings the tenant's schema to version target (-1: the newest), logged in
// as the tenant's role with only its schema on the search path, so no statement can land
// in another schema. It records the resulting version in the registry and returns it.
// A tenant whose schema does not exist fails without touching anything.
func (p *Provisioner) MigrateTenant(ctx context.Context, t *tenant.Tenant, target int) (uint, error) {
	dsn, err := p.tenantDSN(t)
	if err != nil {
		return 0, err
	}
	// Fail early and clearly when the schema is missing, before golang-migrate tries to
	// create its version table.
	err = p.withTenantConn(ctx, t, func(conn *pgx.Conn) error {
		var cur *string
		if err := conn.QueryRow(ctx, `SELECT current_schema()`).Scan(&cur); err != nil {
			return err
		}
		if cur == nil || *cur != t.SchemaName {
			return fmt.Errorf("schema %q does not exist", t.SchemaName)
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("migrating tenant %s: %w", t.Slug, err)
	}
	v, merr := runMigrate(ctx, "tenant", dsn, target)
	dirty := false
	var de migrate.ErrDirty
	if errors.As(merr, &de) {
		dirty = true
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

// runMigrate applies the embedded migration set ("public" or "tenant") to the database
// at dsn, up to target (-1: newest), and returns the version it ends at.
func runMigrate(ctx context.Context, set, dsn string, target int) (uint, error) {
	fsys := migrations.Public()
	if set == "tenant" {
		fsys = migrations.Tenant()
	}
	src, err := iofs.New(fsys, ".")
	if err != nil {
		return 0, fmt.Errorf("reading %s migrations: %w", set, err)
	}
	u, err := url.Parse(dsn)
	if err != nil {
		return 0, fmt.Errorf("parsing database url: %w", err)
	}
	u.Scheme = "pgx5"
	m, err := migrate.NewWithSourceInstance("iofs", src, u.String())
	if err != nil {
		return 0, fmt.Errorf("opening %s migrations: %w", set, err)
	}
	defer m.Close()
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-ctx.Done():
			select {
			case m.GracefulStop <- true:
			default:
			}
		case <-done:
		}
	}()
	if target < 0 {
		err = m.Up()
	} else {
		err = m.Migrate(uint(target))
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
	return v, err
}

// LatestTenantVersion returns the newest tenant migration version in the binary.
func LatestTenantVersion() (uint, error) {
	src, err := iofs.New(migrations.Tenant(), ".")
	if err != nil {
		return 0, err
	}
	defer src.Close()
	v, err := src.First()
	if err != nil {
		return 0, err
	}
	for {
		next, err := src.Next(v)
		if err != nil {
			return v, nil
		}
		v = next
	}
}
