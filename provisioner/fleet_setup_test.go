package provisioner_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tenantplane/tenantplane/internal/pgtest"
	"github.com/tenantplane/tenantplane/migrations"
	"github.com/tenantplane/tenantplane/provisioner"
	"github.com/tenantplane/tenantplane/tenant"
)

// fleetBundle is what a fleet test needs: a fresh control database, which is also the
// database of shard "a", a registry with tenants, and a Fleet on it.
type fleetBundle struct {
	ctx   context.Context
	url   string
	admin *pgxpool.Pool // superuser pool on the control database
	store *tenant.Store
	cfg   provisioner.Config
	prov  *provisioner.Provisioner
	fleet *provisioner.Fleet
	// tenants are the fixture's tenants, in the order the fleet takes them.
	tenants []*tenant.Tenant
	// base is the version the tests start from, next the test migration's, one more;
	// table is the table that migration alters.
	base, next int
	table      string
}

// fleetSetup makes a registry with n tenants and a Fleet on it.
//
// With set "synthetic" the tenant migrations are testdata/fleet/synthetic alone, and the
// tenants are created at its version 1 (base) in bulk. Otherwise the migrations are the
// embedded ones (the newest is base) plus the test migration testdata/fleet/<set>,
// numbered next, and the tenants' schemas are empty (version 0), as if they had been
// provisioned before any migration existed.
func fleetSetup(t *testing.T, n int, set string) *fleetBundle {
	t.Helper()
	base, err := provisioner.LatestTenantVersion()
	if err != nil {
		t.Fatal(err)
	}
	fsys, table := fleetMigrations(t, set, base+1), "blogs"
	if set == "synthetic" {
		fsys, table, base = os.DirFS(path.Join("testdata", "fleet", set)), "items", 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	url := pgtest.NewDatabase(t, pgtest.URL(t))
	if _, err := provisioner.MigrateShared(ctx, url); err != nil {
		t.Fatalf("migrating registry: %v", err)
	}
	admin := pgtest.Pool(t, url)
	b := &fleetBundle{
		ctx:   ctx,
		url:   url,
		admin: admin,
		store: tenant.NewStore(admin),
		cfg: provisioner.Config{
			Shards:           []provisioner.Shard{{Name: "a", URL: url}},
			TenantMigrations: fsys,
		},
		base:  int(base),
		next:  int(base) + 1,
		table: table,
	}
	b.prov, b.fleet = b.newFleet(t)
	t.Cleanup(func() { b.dropRoles(t) })
	b.tenants = b.addTenants(t, n, "fleet", set == "synthetic")
	return b
}

// newFleet returns a Provisioner and a Fleet as a freshly started process would have.
func (b *fleetBundle) newFleet(t *testing.T) (*provisioner.Provisioner, *provisioner.Fleet) {
	t.Helper()
	p, err := provisioner.New(b.store, b.cfg)
	if err != nil {
		t.Fatalf("creating provisioner: %v", err)
	}
	t.Cleanup(p.Close)
	return p, provisioner.NewFleet(p, provisioner.FleetConfig{})
}

// fleetMigrations returns the embedded tenant migrations plus those of
// testdata/fleet/<set>, numbered version.
func fleetMigrations(t *testing.T, set string, version uint) fs.FS {
	t.Helper()
	out := fstest.MapFS{}
	add := func(fsys fs.FS, prefix string) {
		entries, err := fs.ReadDir(fsys, ".")
		if err != nil {
			t.Fatalf("reading migrations: %v", err)
		}
		for _, e := range entries {
			data, err := fs.ReadFile(fsys, e.Name())
			if err != nil {
				t.Fatalf("reading migration %s: %v", e.Name(), err)
			}
			out[prefix+e.Name()] = &fstest.MapFile{Data: data}
		}
	}
	add(migrations.Tenant(), "")
	add(os.DirFS(path.Join("testdata", "fleet", set)), fmt.Sprintf("%06d_", version))
	return out
}

// addTenants registers n active tenants with a role and a schema each, in bulk:
// provisioning them one by one would take most of the test's time. The schemas are
// empty, or at the synthetic set's version 1 when atBase. The tenants are created a
// millisecond apart, so the fleet takes them in the order returned.
func (b *fleetBundle) addTenants(t *testing.T, n int, prefix string, atBase bool) []*tenant.Tenant {
	t.Helper()
	var ddl strings.Builder
	out := make([]*tenant.Tenant, n)
	ids, slugs, schemas, roles, passwords := make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	for i := range n {
		slug := fmt.Sprintf("%s-%04d", prefix, i)
		names := tenant.NewNames(slug, tenant.IsolationSchema)
		tn := &tenant.Tenant{
			ID: uuid.NewString(), Slug: slug, Name: slug, Status: tenant.StatusActive, Isolation: tenant.IsolationSchema,
			Shard: "a", SchemaName: names.Schema, DBRole: names.Role, DBPassword: tenant.NewPassword(), ProvisioningStep: "active",
		}
		out[i] = tn
		ids[i], slugs[i], schemas[i], roles[i], passwords[i] = tn.ID, tn.Slug, tn.SchemaName, tn.DBRole, tn.DBPassword
		role, schema := fleetIdent(tn.DBRole), fleetIdent(tn.SchemaName)
		fmt.Fprintf(&ddl, "CREATE ROLE %s LOGIN NOINHERIT PASSWORD '%s';\nCREATE SCHEMA %s AUTHORIZATION %s;\n",
			role, tn.DBPassword, schema, role)
		if atBase {
			tn.MigrationVersion = 1
			fmt.Fprintf(&ddl, `SET ROLE %[1]s;
				CREATE TABLE %[2]s.items (id bigserial PRIMARY KEY, title text NOT NULL);
				CREATE TABLE %[2]s.schema_migrations (version bigint NOT NULL PRIMARY KEY, dirty boolean NOT NULL);
				INSERT INTO %[2]s.schema_migrations VALUES (1, false);
				RESET ROLE;
				`, role, schema)
		}
	}
	version := 0
	if atBase {
		version = 1
	}
	if _, err := b.admin.Exec(b.ctx, `INSERT INTO tenants (id, slug, name, status, isolation, shard, schema_name, db_role, db_password,
			admin_email, provisioning_step, migration_version, created_at)
		SELECT u.id::uuid, u.slug, u.slug, 'active', 'schema', 'a', u.schema, u.role, u.password, 'admin@' || u.slug || '.example',
			'active', $6, now() - interval '1 hour' + u.n * interval '1 millisecond'
		FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[]) WITH ORDINALITY AS u(id, slug, schema, role, password, n)`,
		ids, slugs, schemas, roles, passwords, version); err != nil {
		t.Fatalf("registering tenants: %v", err)
	}
	if _, err := b.admin.Exec(b.ctx, ddl.String()); err != nil {
		t.Fatalf("creating tenant roles and schemas: %v", err)
	}
	return out
}

// dropRoles removes the roles and databases of every tenant in the registry: they are
// cluster-wide and outlive the test database otherwise.
func (b *fleetBundle) dropRoles(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dbs, err := b.admin.Query(ctx, `SELECT database_name FROM tenants WHERE database_name IS NOT NULL`)
	if err != nil {
		t.Errorf("listing tenant databases: %v", err)
		return
	}
	names, err := pgx.CollectRows(dbs, pgx.RowTo[string])
	if err != nil {
		t.Errorf("listing tenant databases: %v", err)
	}
	for _, name := range names {
		if _, err := b.admin.Exec(ctx, `DROP DATABASE IF EXISTS `+fleetIdent(name)+` WITH (FORCE)`); err != nil {
			t.Errorf("dropping tenant database: %v", err)
		}
	}
	rows, err := b.admin.Query(ctx, `SELECT db_role FROM tenants t WHERE EXISTS (SELECT 1 FROM pg_roles WHERE rolname = t.db_role)`)
	if err != nil {
		t.Errorf("listing tenant roles: %v", err)
		return
	}
	roles, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil || len(roles) == 0 {
		return
	}
	list := make([]string, len(roles))
	for i, r := range roles {
		list[i] = fleetIdent(r)
	}
	all := strings.Join(list, ", ")
	if _, err := b.admin.Exec(ctx, `DROP OWNED BY `+all+` CASCADE; DROP ROLE `+all); err != nil {
		t.Errorf("dropping tenant roles: %v", err)
	}
}

func fleetIdent(s string) string { return pgx.Identifier{s}.Sanitize() }

// run runs the fleet and fails the test on an error.
func (b *fleetBundle) run(t *testing.T, f *provisioner.Fleet, opts provisioner.RunOptions) *provisioner.Run {
	t.Helper()
	run, err := f.Run(b.ctx, opts)
	if err != nil {
		t.Fatalf("fleet run: %v", err)
	}
	return run
}

// migrateAllTo brings every fixture tenant to version v and checks it happened.
func (b *fleetBundle) migrateAllTo(t *testing.T, v int) {
	t.Helper()
	run := b.run(t, b.fleet, provisioner.RunOptions{To: v, Parallel: 8})
	if run.Failed != 0 || run.State != provisioner.RunDone {
		t.Fatalf("migrating the fleet to %d: %s with %d failed: %+v", v, run.State, run.Failed, run.Failures)
	}
}

// fleetCatalog is what a tenant's schema says about its migrations.
type fleetCatalog struct {
	version  int64
	dirty    bool
	marks    int  // rows the test migration inserted
	subtitle bool // the column the test migration adds exists
}

// catalog reads the tenant's schema directly, as the superuser.
func (b *fleetBundle) catalog(t *testing.T, tn *tenant.Tenant) fleetCatalog {
	t.Helper()
	var c fleetCatalog
	s := fleetIdent(tn.SchemaName)
	err := b.admin.QueryRow(b.ctx, `SELECT version, dirty FROM `+s+`.schema_migrations`).Scan(&c.version, &c.dirty)
	var pgErr *pgconn.PgError
	switch {
	case errors.Is(err, pgx.ErrNoRows), errors.As(err, &pgErr) && pgErr.Code == "42P01":
	case err != nil:
		t.Fatalf("reading version of %s: %v", tn.Slug, err)
	}
	var hasMarks bool
	if err := b.admin.QueryRow(b.ctx, `SELECT to_regclass($1) IS NOT NULL,
		EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass($2) AND attname = 'subtitle' AND NOT attisdropped)`,
		s+".migration_marks", s+"."+fleetIdent(b.table)).Scan(&hasMarks, &c.subtitle); err != nil {
		t.Fatalf("reading catalog of %s: %v", tn.Slug, err)
	}
	if hasMarks {
		if err := b.admin.QueryRow(b.ctx, `SELECT count(*) FROM `+s+`.migration_marks WHERE name = 'subtitle'`).Scan(&c.marks); err != nil {
			t.Fatalf("reading marks of %s: %v", tn.Slug, err)
		}
	}
	return c
}

// checkAt checks that the tenant's schema is cleanly at v with the test migration's side
// effects present exactly once when v is next and absent below, and that the registry
// agrees and does not hold it as migrating.
func (b *fleetBundle) checkAt(t *testing.T, tn *tenant.Tenant, v int) {
	t.Helper()
	c := b.catalog(t, tn)
	wantMarks := 0
	if v >= b.next {
		wantMarks = 1
	}
	if c.version != int64(v) || c.dirty || c.marks != wantMarks || c.subtitle != (v >= b.next) {
		t.Errorf("tenant %s schema: version %d dirty %v, %d marks, subtitle %v; want version %d clean with %d marks",
			tn.Slug, c.version, c.dirty, c.marks, c.subtitle, v, wantMarks)
	}
	reg := b.registry(t, tn.Slug)
	if reg.MigrationVersion != int64(v) || reg.MigrationDirty || reg.Migrating {
		t.Errorf("tenant %s registry: version %d dirty %v migrating %v; want %d, clean, not migrating",
			tn.Slug, reg.MigrationVersion, reg.MigrationDirty, reg.Migrating, v)
	}
}

func (b *fleetBundle) registry(t *testing.T, slug string) *tenant.Tenant {
	t.Helper()
	tn, err := b.store.Get(b.ctx, slug)
	if err != nil {
		t.Fatalf("reading tenant %s: %v", slug, err)
	}
	return tn
}

// breakTenant drops the table the test migration alters.
func (b *fleetBundle) breakTenant(t *testing.T, tn *tenant.Tenant) {
	t.Helper()
	if _, err := b.admin.Exec(b.ctx, `DROP TABLE `+fleetIdent(tn.SchemaName)+`.`+fleetIdent(b.table)+` CASCADE`); err != nil {
		t.Fatalf("breaking tenant %s: %v", tn.Slug, err)
	}
}

// entries returns every entry of the run, keyed by slug.
func (b *fleetBundle) entries(t *testing.T, f *provisioner.Fleet, runID string) map[string]provisioner.Entry {
	t.Helper()
	list, err := f.Entries(b.ctx, runID, provisioner.EntryFilter{Limit: 10000})
	if err != nil {
		t.Fatalf("reading run entries: %v", err)
	}
	out := make(map[string]provisioner.Entry, len(list))
	for _, e := range list {
		out[e.Slug] = e
	}
	return out
}
