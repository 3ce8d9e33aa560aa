package provisioner_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tenantplane/tenantplane/apperr"
	"github.com/tenantplane/tenantplane/internal/pgtest"
	"github.com/tenantplane/tenantplane/migrations"
	"github.com/tenantplane/tenantplane/provisioner"
	"github.com/tenantplane/tenantplane/tenant"
)

// fakeHash stands in for an argon2id hash: the provisioner stores it, never checks it.
const fakeHash = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA"

// tenantTables are the tables the tenant migrations create, plus golang-migrate's ledger.
var tenantTables = []string{"blogs", "notification_counter", "notifications", "refresh_tokens", "schema_migrations", "search_outbox", "users"}

// bundle is what a provisioner test needs: a fresh control database with the registry
// migrated, which is also the database of shard "a", and a Provisioner on it.
type bundle struct {
	ctx        context.Context
	controlURL string
	store      *tenant.Store
	admin      *pgxpool.Pool // superuser pool on the control database
	cfg        provisioner.Config
	prov       *provisioner.Provisioner
	// publicTables are the control database's public tables right after the registry
	// migrations; provisioning tenants must not add to them.
	publicTables []string
}

// setup makes a fresh control database and a Provisioner with one shard "a" on it;
// mutate may change the configuration (more shards, a clock, a search backend).
// Everything the tenants created on the clusters is removed when the test ends.
func setup(t *testing.T, mutate ...func(*provisioner.Config)) *bundle {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	controlURL := pgtest.NewDatabase(t, pgtest.URL(t))
	if _, err := provisioner.MigrateShared(ctx, controlURL); err != nil {
		t.Fatalf("migrating registry: %v", err)
	}
	admin := pgtest.Pool(t, controlURL)
	b := &bundle{
		ctx:        ctx,
		controlURL: controlURL,
		store:      tenant.NewStore(admin),
		admin:      admin,
		cfg:        provisioner.Config{Shards: []provisioner.Shard{{Name: "a", URL: controlURL}}},
	}
	for _, m := range mutate {
		m(&b.cfg)
	}
	// Runs after the provisioners are closed and before the databases are dropped.
	t.Cleanup(func() { b.dropTenantObjects(t) })
	b.publicTables = tablesIn(t, ctx, admin, "public")
	b.prov = b.newProvisioner(t)
	return b
}

// newProvisioner returns a Provisioner with the bundle's configuration, as a freshly
// started process would have; mutate may change a copy of the configuration.
func (b *bundle) newProvisioner(t *testing.T, mutate ...func(*provisioner.Config)) *provisioner.Provisioner {
	t.Helper()
	cfg := b.cfg
	cfg.Shards = slices.Clone(cfg.Shards)
	for _, m := range mutate {
		m(&cfg)
	}
	p, err := provisioner.New(b.store, cfg)
	if err != nil {
		t.Fatalf("creating provisioner: %v", err)
	}
	t.Cleanup(p.Close)
	return p
}

// shardURL returns the admin URL of a configured shard.
func (b *bundle) shardURL(t *testing.T, name string) string {
	t.Helper()
	for _, sh := range b.cfg.Shards {
		if sh.Name == name {
			return sh.URL
		}
	}
	t.Fatalf("no shard %q configured", name)
	return ""
}

// dropTenantObjects removes the cluster-wide objects of every tenant in the registry:
// roles and databases outlive the test's databases otherwise.
func (b *bundle) dropTenantObjects(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rows, err := b.admin.Query(ctx, `SELECT shard, schema_name, COALESCE(database_name, ''), db_role FROM tenants`)
	if err != nil {
		t.Errorf("listing tenants to clean up: %v", err)
		return
	}
	type objs struct{ shard, schema, db, role string }
	list, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (objs, error) {
		var o objs
		return o, r.Scan(&o.shard, &o.schema, &o.db, &o.role)
	})
	if err != nil {
		t.Errorf("listing tenants to clean up: %v", err)
		return
	}
	for _, o := range list {
		var shardURL string
		for _, sh := range b.cfg.Shards {
			if sh.Name == o.shard {
				shardURL = sh.URL
			}
		}
		if shardURL == "" {
			continue
		}
		if err := dropObjects(ctx, shardURL, o.schema, o.db, o.role); err != nil {
			t.Errorf("cleaning up tenant objects: %v", err)
		}
	}
}

// dropObjects drops a schema, a database and a role on the cluster at adminURL, the
// schema in adminURL's database; missing ones are skipped.
func dropObjects(ctx context.Context, adminURL, schema, db, role string) error {
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	var stmts []string
	if schema != "" {
		stmts = append(stmts, `DROP SCHEMA IF EXISTS `+ident(schema)+` CASCADE`)
	}
	if db != "" {
		stmts = append(stmts, `DROP DATABASE IF EXISTS `+ident(db)+` WITH (FORCE)`)
	}
	for _, s := range stmts {
		if _, err := conn.Exec(ctx, s); err != nil {
			return fmt.Errorf("%s: %w", s, err)
		}
	}
	if role == "" || !roleExists(ctx, conn, role) {
		return nil
	}
	for _, s := range []string{`DROP OWNED BY ` + ident(role), `DROP ROLE ` + ident(role)} {
		if _, err := conn.Exec(ctx, s); err != nil {
			return fmt.Errorf("%s: %w", s, err)
		}
	}
	return nil
}

func ident(s string) string { return pgx.Identifier{s}.Sanitize() }

type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

func roleExists(ctx context.Context, q querier, role string) bool {
	var ok bool
	_ = q.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)`, role).Scan(&ok)
	return ok
}

// tablesIn lists the tables of a schema, sorted.
func tablesIn(t *testing.T, ctx context.Context, q querier, schema string) []string {
	t.Helper()
	rows, err := q.Query(ctx, `SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') ORDER BY c.relname`, schema)
	if err != nil {
		t.Fatalf("listing tables of %s: %v", schema, err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatalf("listing tables of %s: %v", schema, err)
	}
	return names
}

// schemaOwner returns the owner of the schema in q's database, "" when it is missing.
func schemaOwner(t *testing.T, ctx context.Context, q querier, schema string) string {
	t.Helper()
	var owner string
	err := q.QueryRow(ctx, `SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = $1`, schema).Scan(&owner)
	if errors.Is(err, pgx.ErrNoRows) {
		return ""
	}
	if err != nil {
		t.Fatalf("reading schema %s: %v", schema, err)
	}
	return owner
}

// databaseOwner returns the owner of the database on q's cluster, "" when it is missing.
func databaseOwner(t *testing.T, ctx context.Context, q querier, db string) string {
	t.Helper()
	var owner string
	err := q.QueryRow(ctx, `SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = $1`, db).Scan(&owner)
	if errors.Is(err, pgx.ErrNoRows) {
		return ""
	}
	if err != nil {
		t.Fatalf("reading database %s: %v", db, err)
	}
	return owner
}

// withDatabase returns dsn pointing at database db instead.
func withDatabase(t *testing.T, dsn, db string) string {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatalf("parsing %s: %v", dsn, err)
	}
	u.Path = "/" + db
	return u.String()
}

// connect opens a connection closed when the test ends.
func connect(t *testing.T, ctx context.Context, dsn string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connecting: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}

// tenantConn connects as the tenant's own role with its connection string.
func (b *bundle) tenantConn(t *testing.T, tn *tenant.Tenant) *pgx.Conn {
	t.Helper()
	dsn, err := tn.ConnString(b.shardURL(t, tn.Shard))
	if err != nil {
		t.Fatalf("tenant connection string: %v", err)
	}
	return connect(t, b.ctx, dsn)
}

// shardConn connects as the superuser to the database holding the tenant's schema.
func (b *bundle) shardConn(t *testing.T, tn *tenant.Tenant) *pgx.Conn {
	t.Helper()
	dsn := b.shardURL(t, tn.Shard)
	if tn.DatabaseName != "" {
		dsn = withDatabase(t, dsn, tn.DatabaseName)
	}
	return connect(t, b.ctx, dsn)
}

// request is a valid CreateRequest for slug.
func request(slug string, iso tenant.Isolation) provisioner.CreateRequest {
	return provisioner.CreateRequest{
		Slug:              slug,
		Name:              "Tenant " + slug,
		Isolation:         iso,
		AdminEmail:        "admin@" + slug + ".example.com",
		AdminPasswordHash: fakeHash,
		Actor:             "test",
	}
}

// register records a new tenant and fails the test on error.
func (b *bundle) register(t *testing.T, p *provisioner.Provisioner, req provisioner.CreateRequest) *tenant.Tenant {
	t.Helper()
	tn, err := p.Register(b.ctx, req)
	if err != nil {
		t.Fatalf("registering %s: %v", req.Slug, err)
	}
	return tn
}

// create registers and provisions a tenant and requires it to end active.
func (b *bundle) create(t *testing.T, slug string, iso tenant.Isolation) *tenant.Tenant {
	t.Helper()
	tn := b.register(t, b.prov, request(slug, iso))
	got, err := b.prov.Provision(b.ctx, tn.ID)
	if err != nil {
		t.Fatalf("provisioning %s: %v", slug, err)
	}
	if got.Status != tenant.StatusActive {
		t.Fatalf("tenant %s is %s (%s), want active", slug, got.Status, got.LastError)
	}
	return b.get(t, tn.ID)
}

// get reads the tenant's registry row.
func (b *bundle) get(t *testing.T, id string) *tenant.Tenant {
	t.Helper()
	tn, err := b.store.GetByID(b.ctx, id)
	if err != nil {
		t.Fatalf("reading tenant %s: %v", id, err)
	}
	return tn
}

// latest is the newest tenant migration version.
func latest(t *testing.T) int64 {
	t.Helper()
	v, err := provisioner.LatestTenantVersion()
	if err != nil {
		t.Fatalf("reading tenant migrations: %v", err)
	}
	return int64(v)
}

// tenantVersions lists the tenant migration versions in the binary, ascending.
func tenantVersions(t *testing.T) []int64 {
	t.Helper()
	files, err := fs.Glob(migrations.Tenant(), "*.up.sql")
	if err != nil || len(files) == 0 {
		t.Fatalf("listing tenant migrations: %v", err)
	}
	var out []int64
	for _, f := range files {
		v, err := strconv.ParseInt(f[:strings.IndexByte(f, '_')], 10, 64)
		if err != nil {
			t.Fatalf("migration file %s: %v", f, err)
		}
		out = append(out, v)
	}
	slices.Sort(out)
	return out
}

// checkProvisioned asserts that everything a provisioned tenant needs exists exactly
// once: registry row, role that logs in with its password, schema (and database) it
// owns, the tenant tables at the newest version, and its one admin user.
func (b *bundle) checkProvisioned(t *testing.T, id string) {
	t.Helper()
	ctx := b.ctx
	tn := b.get(t, id)
	if tn.Status != tenant.StatusActive || tn.ProvisioningStep != "active" || tn.LastError != "" {
		t.Errorf("registry: status %s, step %s, last_error %q; want active, active, none", tn.Status, tn.ProvisioningStep, tn.LastError)
	}
	if tn.PendingAdminHash != "" {
		t.Errorf("registry still holds the admin password hash after provisioning")
	}
	if want := latest(t); tn.MigrationVersion != want || tn.MigrationDirty {
		t.Errorf("registry: migration version %d dirty %v, want %d clean", tn.MigrationVersion, tn.MigrationDirty, want)
	}

	shard := b.shardConn(t, tn)
	var canLogin, super bool
	if err := shard.QueryRow(ctx, `SELECT rolcanlogin, rolsuper FROM pg_roles WHERE rolname = $1`, tn.DBRole).Scan(&canLogin, &super); err != nil {
		t.Fatalf("role %s: %v", tn.DBRole, err)
	}
	if !canLogin || super {
		t.Errorf("role %s: login %v superuser %v, want a login role without superuser", tn.DBRole, canLogin, super)
	}
	if owner := schemaOwner(t, ctx, shard, tn.SchemaName); owner != tn.DBRole {
		t.Errorf("schema %s is owned by %q, want the tenant role %s", tn.SchemaName, owner, tn.DBRole)
	}
	if tn.Isolation == tenant.IsolationDatabase {
		if owner := databaseOwner(t, ctx, shard, tn.DatabaseName); owner != tn.DBRole {
			t.Errorf("database %s is owned by %q, want %s", tn.DatabaseName, owner, tn.DBRole)
		}
		if got := tablesIn(t, ctx, shard, "public"); len(got) != 0 {
			t.Errorf("public schema of the tenant database has tables %v, want none", got)
		}
	}
	if got := tablesIn(t, ctx, shard, tn.SchemaName); !slices.Equal(got, tenantTables) {
		t.Errorf("tables in %s = %v, want %v", tn.SchemaName, got, tenantTables)
	}
	if got := tablesIn(t, ctx, b.admin, "public"); !slices.Equal(got, b.publicTables) {
		t.Errorf("control database public tables = %v, want them unchanged: %v", got, b.publicTables)
	}

	// Logging in over TCP checks the password (the test clusters use scram).
	conn := b.tenantConn(t, tn)
	var user, schema string
	if err := conn.QueryRow(ctx, `SELECT current_user, current_schema()`).Scan(&user, &schema); err != nil {
		t.Fatalf("tenant session: %v", err)
	}
	if user != tn.DBRole || schema != tn.SchemaName {
		t.Errorf("tenant session is %s in %s, want %s in %s", user, schema, tn.DBRole, tn.SchemaName)
	}
	var versions int
	var version int64
	var dirty bool
	if err := conn.QueryRow(ctx, `SELECT count(*) OVER (), version, dirty FROM schema_migrations`).Scan(&versions, &version, &dirty); err != nil {
		t.Fatalf("reading schema_migrations: %v", err)
	}
	if versions != 1 || version != latest(t) || dirty {
		t.Errorf("schema_migrations: %d rows, version %d dirty %v; want one row at %d, clean", versions, version, dirty, latest(t))
	}
	var users, admins int
	var email string
	if err := conn.QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE is_admin AND is_active), min(email) FROM users`).Scan(&users, &admins, &email); err != nil {
		t.Fatalf("reading users: %v", err)
	}
	if users != 1 || admins != 1 || email != tn.AdminEmail {
		t.Errorf("users: %d rows, %d active admins, email %q; want exactly the admin %s", users, admins, email, tn.AdminEmail)
	}
}

// pgCode returns the SQLSTATE of err, "" when it carries none.
func pgCode(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code
	}
	return ""
}

// requireAppErr fails unless err is a domain error of the kind and code.
func requireAppErr(t *testing.T, err error, kind apperr.Kind, code string) {
	t.Helper()
	var ae *apperr.Error
	if !errors.As(err, &ae) || ae.Kind != kind || ae.Code != code {
		t.Fatalf("error = %v, want a domain error of kind %d with code %s", err, kind, code)
	}
}

// events returns the audit log actions of the tenant.
func (b *bundle) events(t *testing.T, id string) []string {
	t.Helper()
	evs, err := b.store.Events(b.ctx, id)
	if err != nil {
		t.Fatalf("reading audit log: %v", err)
	}
	var out []string
	for _, e := range evs {
		out = append(out, e.Action)
	}
	return out
}

func count(list []string, s string) int {
	n := 0
	for _, x := range list {
		if x == s {
			n++
		}
	}
	return n
}

// clock is a settable clock for Config.Now.
type clock struct {
	// mu guards now.
	mu  sync.Mutex
	now time.Time
}

func newClock() *clock { return &clock{now: time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// recordingIndexes is a SearchIndexes that keeps its indexes in memory, so tests can
// see what the provisioner asked of the search backend.
type recordingIndexes struct {
	// mu guards created and dropped.
	mu      sync.Mutex
	created map[string]int
	dropped map[string]int
}

func newRecordingIndexes() *recordingIndexes {
	return &recordingIndexes{created: map[string]int{}, dropped: map[string]int{}}
}

func (r *recordingIndexes) EnsureIndex(_ context.Context, t *tenant.Tenant) (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	name := "tenant-" + strings.ReplaceAll(t.SchemaName, "_", "-")
	r.created[name]++
	return name, nil
}

func (r *recordingIndexes) DropIndex(_ context.Context, t *tenant.Tenant) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.dropped[t.SearchIndex]++
	return nil
}

func (r *recordingIndexes) counts(name string) (created, dropped int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.created[name], r.dropped[name]
}

var _ provisioner.SearchIndexes = (*recordingIndexes)(nil)
