package provisioner

import (
	"context"
	"errors"
	"fmt"
	"net/url"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tenantplane/tenantplane/tenant"
)

// extensionSchema is where the extensions tenant migrations use are installed. Tenant
// roles have USAGE on it (public keeps it by default) and migrations and queries name
// it explicitly, since a tenant's search path holds only its own schema.
const extensionSchema = "public"

// tenantExtensions are the extensions tenant migrations rely on: pg_trgm for the
// trigram index and typo-tolerant blog search.
var tenantExtensions = []string{"pg_trgm"}

// ensureExtensions creates the tenant extensions, as the shard's admin role, in the
// database that holds the tenant's schema: the shard database in schema isolation, the
// tenant's own database otherwise. Tenant roles cannot create extensions, so this runs
// before every tenant migration. A tenant database that does not exist yet is left to
// the migration run to report. It fails when an extension is installed in another
// schema than extensionSchema, which the migrations would not find.
func (p *Provisioner) ensureExtensions(ctx context.Context, t *tenant.Tenant) error {
	if t.Isolation != tenant.IsolationDatabase {
		db, err := p.shards.pool(ctx, t.Shard)
		if err != nil {
			return err
		}
		return createExtensions(ctx, db)
	}
	sh, ok := p.shards.get(t.Shard)
	if !ok {
		return fmt.Errorf("tenant %q is on unknown shard %q", t.Slug, t.Shard)
	}
	u, err := url.Parse(sh.URL)
	if err != nil {
		return fmt.Errorf("parsing shard %q url: %w", t.Shard, err)
	}
	u.Path = "/" + t.DatabaseName
	conn, err := pgx.Connect(ctx, u.String())
	if pgCode(err) == codeInvalidCatalogName {
		return nil // no database yet; the migration run says so itself
	}
	if err != nil {
		return fmt.Errorf("connecting to tenant database as admin: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	return createExtensions(ctx, conn)
}

// execer is what createExtensions needs of a pool or a connection.
type execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

var (
	_ execer = (*pgxpool.Pool)(nil)
	_ execer = (*pgx.Conn)(nil)
)

func createExtensions(ctx context.Context, db execer) error {
	for _, ext := range tenantExtensions {
		var schema string
		err := db.QueryRow(ctx, `SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
			WHERE e.extname = $1`, ext).Scan(&schema)
		if err == nil {
			if schema != extensionSchema {
				return fmt.Errorf("extension %s is installed in schema %q; tenant migrations need it in %q", ext, schema, extensionSchema)
			}
			continue
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("checking extension %s: %w", ext, err)
		}
		_, err = db.Exec(ctx, `CREATE EXTENSION IF NOT EXISTS `+pgx.Identifier{ext}.Sanitize()+
			` WITH SCHEMA `+pgx.Identifier{extensionSchema}.Sanitize())
		if c := pgCode(err); c == codeUniqueViolation || c == codeDuplicateObject {
			err = nil // a concurrent run created it
		}
		if err != nil {
			return fmt.Errorf("creating extension %s: %w", ext, err)
		}
	}
	return nil
}
