package provisioner

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tenantplane/tenantplane/apperr"
	"github.com/tenantplane/tenantplane/pgerr"
	"github.com/tenantplane/tenantplane/tenant"
)

// TenantMigration is one tenant's migration state, for `migrate status`.
type TenantMigration struct {
	TenantID string        `json:"tenant_id"`
	Slug     string        `json:"slug"`
	Shard    string        `json:"shard"`
	Status   tenant.Status `json:"status"`
	// Version and Dirty are what the registry recorded the last time the tenant was
	// migrated; Migrating is set while a run works on it (or was, when it died).
	Version   int64 `json:"version"`
	Dirty     bool  `json:"dirty"`
	Migrating bool  `json:"migrating"`
	// Behind reports a version below the newest migration known to this binary.
	Behind bool `json:"behind"`
	// The tenant's entry in the latest run that covered it, if any.
	LastRun        string     `json:"last_run,omitempty"`
	LastState      EntryState `json:"last_state,omitempty"`
	LastError      string     `json:"last_error,omitempty"`
	LastFinishedAt *time.Time `json:"last_finished_at,omitempty"`
	// Catalog is the version read from the tenant's own version table (StatusFilter.Verify).
	Catalog *CatalogVersion `json:"catalog,omitempty"`
}

// CatalogVersion is a tenant's version as its schema's version table records it.
type CatalogVersion struct {
	Version int64  `json:"version"`
	Dirty   bool   `json:"dirty"`
	Error   string `json:"error,omitempty"` // the table could not be read
	// Corrected reports that the registry disagreed and was set to the catalog's values.
	Corrected bool `json:"corrected,omitempty"`
}

// StatusFilter selects the tenants of Status.
type StatusFilter struct {
	Tenants []string   // these slugs only; empty: every live tenant
	State   EntryState // only tenants whose latest entry is in this state
	Dirty   bool       // only tenants the registry records as dirty
	// Verify reads every selected tenant's version table and, where the registry
	// disagrees (the schema is the truth), corrects the registry, so that the next run
	// does not skip a tenant that is not at the target.
	Verify bool
}

// verifyParallel bounds the concurrent version table reads of Status.
const verifyParallel = 8

// Status returns the migration state of the live tenants, ordered by slug.
func (f *Fleet) Status(ctx context.Context, flt StatusFilter) ([]*TenantMigration, error) {
	newest, err := latestVersion(f.p.tenantMigrations)
	if err != nil {
		return nil, err
	}
	q := `SELECT t.id::text, t.slug, t.shard, t.status, t.migration_version, t.migration_dirty, t.migrating,
			COALESCE(e.run_id::text, ''), COALESCE(e.state, ''), COALESCE(e.error, ''), e.finished_at
		FROM tenants t LEFT JOIN LATERAL (SELECT run_id, state, error, finished_at FROM migration_entries
			WHERE tenant_id = t.id ORDER BY queued_at DESC LIMIT 1) e ON true
		WHERE t.status <> 'purged'`
	var args []any
	if len(flt.Tenants) > 0 {
		args = append(args, flt.Tenants)
		q += fmt.Sprintf(" AND t.slug = ANY($%d)", len(args))
	}
	if flt.State != "" {
		args = append(args, string(flt.State))
		q += fmt.Sprintf(" AND e.state = $%d", len(args))
	}
	if flt.Dirty {
		q += " AND t.migration_dirty"
	}
	rows, err := f.db.Query(ctx, q+" ORDER BY t.slug", args...)
	if err != nil {
		return nil, fmt.Errorf("reading migration status: %w", pgerr.Translate(err, pgerr.Codes{}))
	}
	defer rows.Close()
	var out []*TenantMigration
	for rows.Next() {
		var m TenantMigration
		if err := rows.Scan(&m.TenantID, &m.Slug, &m.Shard, &m.Status, &m.Version, &m.Dirty, &m.Migrating,
			&m.LastRun, &m.LastState, &m.LastError, &m.LastFinishedAt); err != nil {
			return nil, fmt.Errorf("reading migration status: %w", pgerr.Translate(err, pgerr.Codes{}))
		}
		m.Behind = m.Version < int64(newest)
		out = append(out, &m)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading migration status: %w", pgerr.Translate(err, pgerr.Codes{}))
	}
	if flt.State == "" && !flt.Dirty {
		// Without other filters every slug asked for is listed: say which one is unknown.
		for _, slug := range flt.Tenants {
			if !slices.ContainsFunc(out, func(m *TenantMigration) bool { return m.Slug == slug }) {
				return nil, apperr.New(apperr.NotFound, "tenant_not_found", "tenant %q not found", slug)
			}
		}
	}
	if flt.Verify {
		if err := f.verify(ctx, out, newest); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// verify reads the version table of each tenant and corrects the registry where it
// disagrees.
func (f *Fleet) verify(ctx context.Context, list []*TenantMigration, newest uint) error {
	sem := make(chan struct{}, verifyParallel)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	for _, m := range list {
		if m.Status == tenant.StatusProvisioning {
			continue // its provisioning run migrates it; its schema may not exist yet
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			wg.Wait()
			return ctx.Err()
		}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := f.verifyOne(ctx, m, newest); err != nil {
				mu.Lock()
				if first == nil {
					first = err
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return first
}

func (f *Fleet) verifyOne(ctx context.Context, m *TenantMigration, newest uint) error {
	t, err := f.p.store.GetByID(ctx, m.TenantID)
	if err != nil {
		return err
	}
	cv := &CatalogVersion{}
	m.Catalog = cv
	cv.Version, cv.Dirty, err = f.catalogVersion(ctx, t)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		cv.Error = err.Error()
		return nil
	}
	if (cv.Version == t.MigrationVersion && cv.Dirty == t.MigrationDirty) || t.Migrating {
		return nil
	}
	if err := f.p.store.SetMigration(ctx, t.ID, cv.Version, cv.Dirty); err != nil {
		return err
	}
	cv.Corrected = true
	m.Version, m.Dirty, m.Behind = cv.Version, cv.Dirty, cv.Version < int64(newest)
	return nil
}

// catalogVersion reads the tenant's version table: over the shard's admin pool for a
// schema-isolated tenant, as the tenant for one with a database of its own.
func (f *Fleet) catalogVersion(ctx context.Context, t *tenant.Tenant) (int64, bool, error) {
	q := `SELECT version, dirty FROM ` + pgx.Identifier{t.SchemaName, "schema_migrations"}.Sanitize() + ` LIMIT 1`
	var v int64
	var dirty bool
	read := func(row pgx.Row) error {
		err := row.Scan(&v, &dirty)
		switch {
		case errors.Is(err, pgx.ErrNoRows), pgCode(err) == codeUndefinedTable:
			return nil // no migration applied
		case pgCode(err) == codeInvalidSchemaName:
			return fmt.Errorf("schema %s does not exist", t.SchemaName)
		}
		return err
	}
	var err error
	if t.Isolation == tenant.IsolationDatabase {
		err = f.p.withTenantConn(ctx, t, func(conn *pgx.Conn) error { return read(conn.QueryRow(ctx, q)) })
	} else {
		db, perr := f.p.shards.pool(ctx, t.Shard)
		if perr != nil {
			return 0, false, perr
		}
		err = read(db.QueryRow(ctx, q))
	}
	if err != nil {
		return 0, false, fmt.Errorf("reading the version of tenant %s: %w", t.Slug, err)
	}
	return v, dirty, nil
}

// Force records version as the tenant's clean schema version without running any
// migration: the operator's way out of a dirty schema once they have repaired it by
// hand. 0 means no migration applied. It takes the same lock as every migrator, clears
// the tenant's dirty and migrating flags in the registry and writes the audit log. It
// returns NotFound for an unknown slug and Invalid (unknown_version) for a version the
// tenant migrations do not have.
func (f *Fleet) Force(ctx context.Context, slug string, version int, actor string) error {
	t, err := f.p.store.Get(ctx, slug)
	if err != nil {
		return err
	}
	versions, err := migrationVersions(f.p.tenantMigrations)
	if err != nil {
		return err
	}
	if version < 0 || (version > 0 && !slices.Contains(versions, uint(version))) {
		return apperr.New(apperr.Invalid, "unknown_version", "there is no tenant migration with version %d", version)
	}
	dsn, err := f.p.tenantDSN(t)
	if err != nil {
		return err
	}
	if _, _, err := runMigrate(ctx, migrateJob{set: "tenant", fsys: f.p.tenantMigrations, dsn: dsn, schema: t.SchemaName,
		target: version, force: true}); err != nil {
		return fmt.Errorf("forcing tenant %s to version %d: %w", slug, version, err)
	}
	was := fmt.Sprintf("registry had version %d", t.MigrationVersion)
	if t.MigrationDirty {
		was += ", dirty"
	}
	err = pgx.BeginFunc(ctx, f.db, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `UPDATE tenants SET migration_version = $2, migration_dirty = false, migrating = false, updated_at = now()
			WHERE id = $1`, t.ID, version); err != nil {
			return err
		}
		return tenant.AddEventTx(ctx, tx, t.ID, "migrate_force", actor, fmt.Sprintf("forced version %d (%s)", version, was))
	})
	if err != nil {
		return fmt.Errorf("recording forced version of tenant %s: %w", slug, pgerr.Translate(err, pgerr.Codes{}))
	}
	f.log.Warn("tenant migration version forced", "tenant", slug, "version", version, "actor", actor, "was", was)
	return nil
}
