package provisioner_test

import (
	"context"
	"errors"
	"fmt"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tenantplane/tenantplane/metrics"
	"github.com/tenantplane/tenantplane/migrations"
	"github.com/tenantplane/tenantplane/provisioner"
	"github.com/tenantplane/tenantplane/tenant"
)

// warmRow is one row of the warm pool table.
type warmRow struct {
	schema, role, state, tenantID string
	version                       int64
}

// warmRows reads the warm pool table.
func warmRows(t *testing.T, ctx context.Context, db *pgxpool.Pool) []warmRow {
	t.Helper()
	rows, err := db.Query(ctx, `SELECT schema_name, role_name, state, COALESCE(tenant_id::text, ''), migration_version FROM warm_schemas ORDER BY created_at`)
	if err != nil {
		t.Fatalf("reading warm_schemas: %v", err)
	}
	list, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (warmRow, error) {
		var w warmRow
		return w, r.Scan(&w.schema, &w.role, &w.state, &w.tenantID, &w.version)
	})
	if err != nil {
		t.Fatalf("reading warm_schemas: %v", err)
	}
	return list
}

// cleanWarm drops, when the test ends, the roles of the pooled schemas still unclaimed:
// roles outlive the test's database (claimed ones are the tenants' roles by then).
func cleanWarm(t *testing.T, db *pgxpool.Pool, shardURL string) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		rows, err := db.Query(ctx, `SELECT ARRAY[schema_name, role_name] FROM warm_schemas WHERE state <> 'claimed'`)
		if err != nil {
			t.Errorf("listing warm schemas to clean up: %v", err)
			return
		}
		list, err := pgx.CollectRows(rows, pgx.RowTo[[]string])
		if err != nil {
			t.Errorf("listing warm schemas to clean up: %v", err)
			return
		}
		for _, w := range list {
			if err := dropObjects(ctx, shardURL, w[0], "", w[1]); err != nil {
				t.Errorf("cleaning up warm schema: %v", err)
			}
		}
	})
}

// warmSetup is setup with a warm pool of size n, filled.
func warmSetup(t *testing.T, n int, mutate ...func(*provisioner.Config)) *bundle {
	t.Helper()
	b := setup(t, append([]func(*provisioner.Config){func(c *provisioner.Config) { c.WarmPool = n }}, mutate...)...)
	cleanWarm(t, b.admin, b.controlURL)
	if made, err := b.prov.RefillWarm(b.ctx); err != nil || made != n {
		t.Fatalf("RefillWarm = %d, %v; want %d", made, err, n)
	}
	return b
}

// checkWarmPool asserts that no pooled schema is lost or shared: every ready row's
// schema and role exist under their pool names, every claimed row belongs to a distinct
// tenant and its pool names are gone (renamed to the tenant's).
func (b *bundle) checkWarmPool(t *testing.T) []warmRow {
	t.Helper()
	rows := warmRows(t, b.ctx, b.admin)
	seen := map[string]bool{}
	for _, w := range rows {
		var schemaExists, roleExists bool
		if err := b.admin.QueryRow(b.ctx, `SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1), EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $2)`,
			w.schema, w.role).Scan(&schemaExists, &roleExists); err != nil {
			t.Fatal(err)
		}
		switch w.state {
		case "ready":
			if !schemaExists || !roleExists {
				t.Errorf("ready warm schema %s: schema exists %v, role exists %v; want both", w.schema, schemaExists, roleExists)
			}
		case "claimed":
			if seen[w.tenantID] {
				t.Errorf("tenant %s claimed two warm schemas", w.tenantID)
			}
			seen[w.tenantID] = true
			if schemaExists || roleExists {
				t.Errorf("claimed warm schema %s still exists under its pool name (schema %v, role %v)", w.schema, schemaExists, roleExists)
			}
		default:
			t.Errorf("warm schema %s is %s, want ready or claimed", w.schema, w.state)
		}
	}
	return rows
}

// TestWarmConcurrentSignupsNeverShareASchema signs 20 tenants up at once against a pool
// of 5: each claimed schema goes to one tenant, the others take today's path, all end
// active, and each tenant's role reaches its own schema only.
func TestWarmConcurrentSignupsNeverShareASchema(t *testing.T) {
	t.Parallel()
	b := warmSetup(t, 5, func(c *provisioner.Config) { c.Parallel = 20 })
	const n = 20
	tenants := make([]*tenant.Tenant, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			tn, err := b.prov.Register(b.ctx, request(fmt.Sprintf("warm-%02d", i), tenant.IsolationSchema))
			if err == nil {
				tn, err = b.prov.Provision(b.ctx, tn.ID)
			}
			tenants[i], errs[i] = tn, err
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil || tenants[i].Status != tenant.StatusActive {
			t.Fatalf("signup %d = %+v, %v; want active", i, tenants[i], err)
		}
	}
	schemas := map[string]string{}
	for _, tn := range tenants {
		b.checkProvisioned(t, tn.ID)
		if other, dup := schemas[tn.SchemaName]; dup {
			t.Errorf("tenants %s and %s share schema %s", other, tn.Slug, tn.SchemaName)
		}
		schemas[tn.SchemaName] = tn.Slug
		var gateway bool
		if err := b.admin.QueryRow(b.ctx, `SELECT pg_has_role($1, $2, 'MEMBER')`, tenant.GatewayRole, tn.DBRole).Scan(&gateway); err != nil || !gateway {
			t.Errorf("tenant %s: gateway membership of its role = %v, %v; want true", tn.Slug, gateway, err)
		}
	}
	claimed := 0
	for _, w := range b.checkWarmPool(t) {
		if w.state == "claimed" {
			claimed++
		}
	}
	if claimed != 5 {
		t.Errorf("%d warm schemas claimed, want all 5", claimed)
	}
	// Each role reaches its own schema only.
	for i, tn := range tenants {
		other := tenants[(i+1)%n]
		conn := b.tenantConn(t, tn)
		_, err := conn.Exec(b.ctx, `SELECT count(*) FROM `+ident(other.SchemaName)+`.users`)
		if pgCode(err) != "42501" {
			t.Errorf("tenant %s reading %s's users: %v; want permission denied", tn.Slug, other.Slug, err)
		}
		if err := conn.QueryRow(b.ctx, `SELECT count(*) FROM users`).Scan(new(int)); err != nil {
			t.Errorf("tenant %s reading its own users: %v", tn.Slug, err)
		}
		conn.Close(b.ctx)
	}
}

// TestWarmCrashBetweenClaimAndActivationIsFinished kills the signup right after the
// claim (before the schema is bound) and right after each recorded step; the next
// process finishes it with the claimed schema, and no pooled schema is lost or shared.
func TestWarmCrashBetweenClaimAndActivationIsFinished(t *testing.T) {
	t.Parallel()
	b := warmSetup(t, 2)
	type crash struct {
		name string
		set  func(p *provisioner.Provisioner)
		at   tenant.Step // where the registry is left
	}
	crashes := []crash{{name: "claim", at: tenant.StepRegistered, set: func(p *provisioner.Provisioner) {
		p.SetAfterClaim(func() error { return provisioner.ErrCrash })
	}}}
	for _, step := range provisioner.WarmSteps()[:len(provisioner.WarmSteps())-1] {
		crashes = append(crashes, crash{name: string(step), at: step, set: func(p *provisioner.Provisioner) {
			p.SetAfterStep(provisioner.CrashAt(step))
		}})
	}
	for i, c := range crashes {
		for _, poolOff := range []bool{false, true} {
			slug := fmt.Sprintf("warm-crash-%d-%v", i, poolOff)
			first := b.newProvisioner(t)
			if _, err := first.RefillWarm(b.ctx); err != nil {
				t.Fatal(err)
			}
			c.set(first)
			tn := b.register(t, first, request(slug, tenant.IsolationSchema))
			if _, err := first.Provision(b.ctx, tn.ID); !errors.Is(err, provisioner.ErrCrash) {
				t.Fatalf("%s: Provision = %v, want the simulated crash", slug, err)
			}
			first.Close()
			if row := b.get(t, tn.ID); row.Status != tenant.StatusProvisioning || row.ProvisioningStep != c.at {
				t.Fatalf("%s: after the crash the tenant is %s at %s, want provisioning at %s", slug, row.Status, row.ProvisioningStep, c.at)
			}
			var claimedSchema string
			if err := b.admin.QueryRow(b.ctx, `SELECT schema_name FROM warm_schemas WHERE tenant_id = $1`, tn.ID).Scan(&claimedSchema); err != nil {
				t.Fatalf("%s: the crashed signup's claim: %v", slug, err)
			}

			// The next process, with the pool on or off, finishes it with that schema.
			next := b.newProvisioner(t, func(cfg *provisioner.Config) {
				if poolOff {
					cfg.WarmPool = 0
				}
			})
			got, err := next.Retry(b.ctx, slug, "test")
			if err != nil || got.Status != tenant.StatusActive {
				t.Fatalf("%s: Retry = %+v, %v; want active", slug, got, err)
			}
			b.checkProvisioned(t, tn.ID)
			var still string
			if err := b.admin.QueryRow(b.ctx, `SELECT schema_name FROM warm_schemas WHERE tenant_id = $1`, tn.ID).Scan(&still); err != nil || still != claimedSchema {
				t.Errorf("%s: claim after the retry = %q, %v; want %s", slug, still, err, claimedSchema)
			}
			if ev := b.events(t, tn.ID); count(ev, "activate") != 1 {
				t.Errorf("%s: audit log %v, want one activation", slug, ev)
			}
			next.Close()
			b.checkWarmPool(t)
		}
	}
}

// TestWarmPoolFollowsTheFleet fills the pool with one release's migrations, then runs a
// fleet migration of the next release: the pooled schemas reach the new version too, and
// a signup claims one at it.
func TestWarmPoolFollowsTheFleet(t *testing.T) {
	t.Parallel()
	b := fleetSetup(t, 2, "additive")
	cleanWarm(t, b.admin, b.url)
	b.migrateAllTo(t, b.base)
	old := b.cfg
	old.TenantMigrations, old.WarmPool = migrations.Tenant(), 3
	oldProv, err := provisioner.New(b.store, old)
	if err != nil {
		t.Fatal(err)
	}
	if made, err := oldProv.RefillWarm(b.ctx); err != nil || made != 3 {
		t.Fatalf("RefillWarm = %d, %v; want 3", made, err)
	}
	oldProv.Close()

	cfg := b.cfg
	cfg.WarmPool = 3
	p, err := provisioner.New(b.store, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	run, err := provisioner.NewFleet(p, provisioner.FleetConfig{}).Run(b.ctx, provisioner.RunOptions{})
	if err != nil || run.Failed != 0 {
		t.Fatalf("fleet run = %+v, %v", run, err)
	}
	for _, w := range warmRows(t, b.ctx, b.admin) {
		c := b.catalog(t, &tenant.Tenant{SchemaName: w.schema})
		if w.version != int64(b.next) || c.version != int64(b.next) || c.dirty || c.marks != 1 || !c.subtitle {
			t.Errorf("warm schema %s: recorded at %d, schema %+v; want both at %d with the migration applied once", w.schema, w.version, c, b.next)
		}
	}
	tn, err := p.Register(b.ctx, provisioner.CreateRequest{Slug: "after-fleet", AdminEmail: "a@after-fleet.example", AdminPasswordHash: fakeHash})
	if err == nil {
		tn, err = p.Provision(b.ctx, tn.ID)
	}
	if err != nil || tn.Status != tenant.StatusActive {
		t.Fatalf("signup = %+v, %v; want active", tn, err)
	}
	b.checkAt(t, tn, b.next)
}

// TestWarmClaimOfABehindSchemaMigratesIt claims a pooled schema filled by the previous
// release, which no fleet run has migrated: the signup brings it to the newest version.
func TestWarmClaimOfABehindSchemaMigratesIt(t *testing.T) {
	t.Parallel()
	b := fleetSetup(t, 0, "additive")
	cleanWarm(t, b.admin, b.url)
	old := b.cfg
	old.TenantMigrations, old.WarmPool = migrations.Tenant(), 1
	oldProv, err := provisioner.New(b.store, old)
	if err != nil {
		t.Fatal(err)
	}
	if made, err := oldProv.RefillWarm(b.ctx); err != nil || made != 1 {
		t.Fatalf("RefillWarm = %d, %v; want 1", made, err)
	}
	oldProv.Close()

	cfg := b.cfg
	cfg.WarmPool = 1
	p, err := provisioner.New(b.store, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	tn, err := p.Register(b.ctx, provisioner.CreateRequest{Slug: "behind", AdminEmail: "a@behind.example", AdminPasswordHash: fakeHash})
	if err == nil {
		tn, err = p.Provision(b.ctx, tn.ID)
	}
	if err != nil || tn.Status != tenant.StatusActive {
		t.Fatalf("signup = %+v, %v; want active", tn, err)
	}
	rows := warmRows(t, b.ctx, b.admin)
	if len(rows) != 1 || rows[0].state != "claimed" || rows[0].tenantID != tn.ID {
		t.Fatalf("warm pool = %+v; want its one schema claimed by the signup", rows)
	}
	b.checkAt(t, tn, b.next)
}

// TestWarmRefillerRefillsAfterClaimsAndStops runs the refiller: it fills the pool, fills
// it again after signups claim from it, and stops cleanly.
func TestWarmRefillerRefillsAfterClaimsAndStops(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *provisioner.Config) { c.WarmPool = 3 })
	cleanWarm(t, b.admin, b.controlURL)
	r := provisioner.NewWarmRefiller(b.prov, provisioner.WarmRefillerConfig{Interval: time.Hour})
	reg := metrics.New()
	if err := reg.Register(r.Collector()); err != nil {
		t.Fatal(err)
	}
	if err := r.Start(b.ctx); err != nil {
		t.Fatal(err)
	}
	waitPool := func(want int) {
		t.Helper()
		deadline := time.Now().Add(time.Minute)
		for {
			sizes, err := b.prov.WarmPoolSize(b.ctx)
			if err == nil && sizes["a"] == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("warm pool size = %v, %v; want %d on shard a", sizes, err, want)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitPool(3)
	for i := range 2 {
		b.create(t, fmt.Sprintf("refill-%d", i), tenant.IsolationSchema)
	}
	// The claims woke the refiller (its interval is an hour).
	waitPool(3)
	claimed := 0
	for _, w := range b.checkWarmPool(t) {
		if w.state == "claimed" {
			claimed++
		}
	}
	if claimed != 2 {
		t.Errorf("%d warm schemas claimed, want 2", claimed)
	}
	// The gauge says the pool is full again once the refill pass ends.
	const gauge = `tenantplane_warm_pool_schemas{shard="a"} 3` + "\n"
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(20 * time.Millisecond) {
		rec := httptest.NewRecorder()
		reg.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		if strings.Contains(rec.Body.String(), gauge) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("metrics lack %q", gauge)
		}
	}
	r.Stop()
	if err := r.Start(b.ctx); err == nil {
		t.Errorf("Start after Stop succeeded, want an error")
	}
}

// TestWarmClaimAfterAnInterruptedFallbackKeepsTheTenantsOwnObjects covers a run killed
// inside the claim step's fallback (the pool was empty; the tenant's role exists) and
// resumed once the pool has a schema again: the pooled schema is dropped, not bound over
// the tenant's role, nor handed to anyone else, and the tenant ends active.
func TestWarmClaimAfterAnInterruptedFallbackKeepsTheTenantsOwnObjects(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *provisioner.Config) { c.WarmPool = 1 })
	cleanWarm(t, b.admin, b.controlURL)
	tn := b.register(t, b.prov, request("warm-fallback", tenant.IsolationSchema))
	// What the fallback's role creation leaves: the tenant's role, nothing recorded.
	if _, err := b.admin.Exec(b.ctx, `CREATE ROLE `+ident(tn.DBRole)+` LOGIN NOINHERIT`); err != nil {
		t.Fatal(err)
	}
	if made, err := b.prov.RefillWarm(b.ctx); err != nil || made != 1 {
		t.Fatalf("RefillWarm = %d, %v; want 1", made, err)
	}
	pooled := warmRows(t, b.ctx, b.admin)[0]
	got, err := b.prov.Provision(b.ctx, tn.ID)
	if err != nil || got.Status != tenant.StatusActive {
		t.Fatalf("Provision = %+v, %v; want active", got, err)
	}
	b.checkProvisioned(t, tn.ID)
	for _, w := range b.checkWarmPool(t) {
		if w.schema == pooled.schema {
			t.Errorf("the pooled schema %s is still in the pool as %s (tenant %q), want it dropped", w.schema, w.state, w.tenantID)
		}
	}
	var left bool
	if err := b.admin.QueryRow(b.ctx, `SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)`, pooled.role).Scan(&left); err != nil || left {
		t.Errorf("pooled role %s exists %v (%v), want it dropped", pooled.role, left, err)
	}
}

// TestWarmPurgeAfterAFailedBindDropsTheClaim fails a signup with an error between the
// claim of a pooled schema and its bind, then deletes and purges the tenant: the pooled
// schema, its role and the pool's row of the claim go with it, nothing is left behind
// under the pool's names.
func TestWarmPurgeAfterAFailedBindDropsTheClaim(t *testing.T) {
	t.Parallel()
	b := warmSetup(t, 2)
	p := b.newProvisioner(t)
	if _, err := p.RefillWarm(b.ctx); err != nil {
		t.Fatal(err)
	}
	p.SetAfterClaim(func() error { return errors.New("the shard refused the bind") })
	tn := b.register(t, p, request("warm-failed-bind", tenant.IsolationSchema))
	if got, err := p.Provision(b.ctx, tn.ID); err != nil || got.Status != tenant.StatusFailed {
		t.Fatalf("Provision past a failing bind = %+v, %v; want the tenant failed", got, err)
	}
	var schema, role string
	if err := b.admin.QueryRow(b.ctx, `SELECT schema_name, role_name FROM warm_schemas WHERE tenant_id = $1`, tn.ID).Scan(&schema, &role); err != nil {
		t.Fatalf("the failed signup's claim: %v", err)
	}
	p.SetAfterClaim(nil)
	if _, err := p.Delete(b.ctx, tn.Slug, "test", 0); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if _, err := p.Purge(b.ctx, tn.Slug, provisioner.PurgeOptions{Force: true}); err != nil {
		t.Fatalf("Purge: %v", err)
	}
	var claims int
	var schemaExists, roleExists bool
	if err := b.admin.QueryRow(b.ctx, `SELECT (SELECT count(*) FROM warm_schemas WHERE tenant_id = $1 OR schema_name = $2),
		EXISTS (SELECT FROM pg_namespace WHERE nspname = $2), EXISTS (SELECT FROM pg_roles WHERE rolname = $3)`,
		tn.ID, schema, role).Scan(&claims, &schemaExists, &roleExists); err != nil {
		t.Fatal(err)
	}
	if claims != 0 || schemaExists || roleExists {
		t.Errorf("after the purge: %d pool rows, pooled schema %s exists %v, role %s exists %v; want none", claims, schema, schemaExists, role, roleExists)
	}
}
