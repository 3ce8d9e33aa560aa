package provisioner_test

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/jackc/pgx/v5"

	"github.com/tenantplane/tenantplane/provisioner"
	"github.com/tenantplane/tenantplane/tenant"
)

// schemaShape describes a schema's tables, columns, indexes and owners with the schema's
// own name taken out, so that two tenants' schemas compare equal when built alike.
func schemaShape(t *testing.T, b *bundle, tn *tenant.Tenant) []string {
	t.Helper()
	conn := b.shardConn(t, tn)
	rows, err := conn.Query(b.ctx, `
		SELECT format('column %s.%s %s null=%s default=%s generated=%s', c.table_name, c.column_name, c.data_type,
			c.is_nullable, COALESCE(c.column_default, ''), COALESCE(c.generation_expression, ''))
		FROM information_schema.columns c WHERE c.table_schema = $1
		UNION ALL
		SELECT 'index ' || indexdef FROM pg_indexes WHERE schemaname = $1
		UNION ALL
		SELECT format('owner %s %s', c.relname, pg_get_userbyid(c.relowner) = $2)
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1
		UNION ALL
		SELECT format('version %s dirty %s', version, dirty) FROM `+ident(tn.SchemaName)+`.schema_migrations`,
		tn.SchemaName, tn.DBRole)
	if err != nil {
		t.Fatalf("describing schema %s: %v", tn.SchemaName, err)
	}
	lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatalf("describing schema %s: %v", tn.SchemaName, err)
	}
	for i, l := range lines {
		lines[i] = strings.ReplaceAll(l, tn.SchemaName, "SCHEMA")
	}
	slices.Sort(lines)
	return lines
}

// TestNewTenantSchemaMatchesGolangMigrate checks that the one-transaction migration of a
// new tenant builds the very schema golang-migrate builds, version table included, so
// that later golang-migrate runs carry on from it.
func TestNewTenantSchemaMatchesGolangMigrate(t *testing.T) {
	t.Parallel()
	for _, iso := range isolations {
		t.Run(string(iso), func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			fast := b.create(t, "fast-path", iso)

			first := b.newProvisioner(t)
			first.SetAfterStep(provisioner.CrashAt("schema"))
			slow := b.register(t, first, request("golang-migrate", iso))
			if _, err := first.Provision(b.ctx, slow.ID); !errors.Is(err, provisioner.ErrCrash) {
				t.Fatalf("Provision = %v, want the simulated crash", err)
			}
			slow = b.get(t, slow.ID)
			if _, err := b.prov.MigrateTenant(b.ctx, slow, -1); err != nil {
				t.Fatalf("MigrateTenant: %v", err)
			}
			if got, err := b.prov.Provision(b.ctx, slow.ID); err != nil || got.Status != tenant.StatusActive {
				t.Fatalf("Provision = %+v, %v; want active", got, err)
			}

			want, got := schemaShape(t, b, slow), schemaShape(t, b, fast)
			if !slices.Equal(got, want) {
				t.Errorf("schema built in one transaction differs from golang-migrate's:\n got %q\nwant %q", got, want)
			}
			// golang-migrate sees the new schema as up to date.
			if v, err := b.prov.MigrateTenant(b.ctx, fast, -1); err != nil || int64(v) != latest(t) {
				t.Errorf("MigrateTenant on the new tenant = %d, %v; want %d, nil", v, err, latest(t))
			}
		})
	}
}

// TestMigrationThatCannotRunInATransaction checks the fallback: a migration set the
// one-transaction path cannot apply is applied by golang-migrate, file by file.
func TestMigrationThatCannotRunInATransaction(t *testing.T) {
	t.Parallel()
	fsys := fstest.MapFS{
		"000001_base.up.sql":         {Data: []byte("CREATE TABLE users (id bigserial PRIMARY KEY, email text NOT NULL, password_hash text NOT NULL, is_admin boolean NOT NULL DEFAULT false);\nCREATE UNIQUE INDEX users_email ON users (lower(email));\n")},
		"000001_base.down.sql":       {Data: []byte("DROP TABLE users;\n")},
		"000002_concurrent.up.sql":   {Data: []byte("CREATE INDEX CONCURRENTLY users_admins ON users (id) WHERE is_admin")},
		"000002_concurrent.down.sql": {Data: []byte("DROP INDEX users_admins;\n")},
	}
	b := setup(t, func(c *provisioner.Config) { c.TenantMigrations = fsys })
	tn := b.register(t, b.prov, request("concurrently", tenant.IsolationSchema))
	got, err := b.prov.Provision(b.ctx, tn.ID)
	if err != nil || got.Status != tenant.StatusActive {
		t.Fatalf("Provision = %+v, %v; want active", got, err)
	}
	row := b.get(t, tn.ID)
	if row.MigrationVersion != 2 || row.MigrationDirty {
		t.Errorf("registry: version %d dirty %v, want 2 clean", row.MigrationVersion, row.MigrationDirty)
	}
	conn := b.tenantConn(t, row)
	var version int64
	var dirty bool
	var indexes, admins int
	if err := conn.QueryRow(b.ctx, `SELECT version, dirty, (SELECT count(*) FROM pg_indexes WHERE schemaname = current_schema() AND indexname = 'users_admins'),
		(SELECT count(*) FROM users WHERE is_admin) FROM schema_migrations`).Scan(&version, &dirty, &indexes, &admins); err != nil {
		t.Fatal(err)
	}
	if version != 2 || dirty || indexes != 1 || admins != 1 {
		t.Errorf("schema: version %d dirty %v, %d users_admins indexes, %d admins; want 2, clean, 1, 1", version, dirty, indexes, admins)
	}
}
