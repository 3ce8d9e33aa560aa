package dataplane

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tenantplane/tenantplane/dataplane/pool"
	"github.com/tenantplane/tenantplane/metrics"
	"github.com/tenantplane/tenantplane/provisioner"
	"github.com/tenantplane/tenantplane/tenant"
)

// backends counts the dataplane's Postgres connections to the test database.
func (e *env) backends(ctx context.Context) (int, error) {
	var n int
	err := e.db.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
		WHERE datname = current_database() AND application_name = 'tenantplane-dataplane'`).Scan(&n)
	return n, err
}

// sampleBackends samples the backend count until stop is closed and returns the most
// seen and how many samples were taken.
func (e *env) sampleBackends(stop <-chan struct{}) func() (int, int) {
	var most, samples atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			n, err := e.backends(context.Background())
			if err != nil {
				continue
			}
			samples.Add(1)
			for cur := most.Load(); int64(n) > cur && !most.CompareAndSwap(cur, int64(n)); cur = most.Load() {
			}
		}
	}()
	return func() (int, int) {
		<-done
		return int(most.Load()), int(samples.Load())
	}
}

// traffic runs workers×perWorker requests spread over the tenants, each checking that
// its connections were the tenant's and that it read the tenant's own blog. It returns
// the failures.
func (e *env) traffic(ts []*tenant.Tenant, tokens []string, blogIDs []int64, workers, perWorker int) []string {
	var mu sync.Mutex
	var failures []string
	fail := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		failures = append(failures, fmt.Sprintf(format, args...))
	}
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for j := range perWorker {
				i := (w*7 + j*5) % len(ts)
				tn := ts[i]
				if j%2 == 0 {
					r := e.do(req{method: "GET", path: "/test/whoami", host: host(tn.Slug)})
					if r.status != http.StatusOK {
						fail("whoami %s: %d %s", tn.Slug, r.status, r.raw)
						continue
					}
					if a := r.who(); !a.Read.is(tn) || !a.Write.is(tn) {
						fail("tenant %s (%s/%s) served by %s", tn.Slug, tn.DBRole, tn.SchemaName, r.raw)
					}
					continue
				}
				r := e.do(req{method: "GET", path: "/api/v1/blogs/" + strconv.FormatInt(blogIDs[i], 10), host: host(tn.Slug), token: tokens[i]})
				if r.status != http.StatusOK {
					fail("blog of %s: %d %s", tn.Slug, r.status, r.raw)
				} else if r.json(e.t)["title"] != "blog of "+tn.Slug {
					fail("blog of %s: got %s", tn.Slug, r.raw)
				}
			}
		})
	}
	wg.Wait()
	return failures
}

// prepare logs in at each tenant and creates its blog.
func (e *env) prepare(ts []*tenant.Tenant) ([]string, []int64) {
	tokens := make([]string, len(ts))
	blogIDs := make([]int64, len(ts))
	for i, tn := range ts {
		tokens[i], _ = e.loginAdmin(tn.Slug)
		blogIDs[i] = e.createBlog(tn.Slug, tokens[i], "blog of "+tn.Slug)
	}
	return tokens, blogIDs
}

// otherSchemaRefused checks that a unit of work of tenant a cannot read b's tables.
func (e *env) otherSchemaRefused(a, b *tenant.Tenant) {
	e.t.Helper()
	ctx := context.Background()
	for name, run := range map[string]func(context.Context, *tenant.Tenant, func(pool.DB) error) error{
		"read": e.srv.pools.Read, "write": e.srv.pools.Write,
	} {
		err := run(ctx, a, func(db pool.DB) error {
			var n int
			return db.QueryRow(ctx, `SELECT count(*) FROM `+b.SchemaName+`.users`).Scan(&n)
		})
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "42501" {
			e.t.Errorf("%s as %s reading %s's users: %v, want permission denied", name, a.Slug, b.Slug, err)
		}
	}
}

func TestPoolLRU(t *testing.T) {
	t.Parallel()
	const budget = 8
	e := setup(t, func(c *Config) {
		c.PoolMode = tenant.PoolDedicated // the LRU of per-tenant pools
		c.MaxPools = 4
		c.ConnBudget = budget
		c.PerTenantConns = 4
		c.ConnWait = 20 * time.Second // the test is about never failing, not about speed
	})
	slugs := make([]string, 12)
	for i := range slugs {
		slugs[i] = fmt.Sprintf("lru-%02d", i)
	}
	ts := e.newTenants(slugs...)
	tokens, blogIDs := e.prepare(ts)
	e.otherSchemaRefused(ts[0], ts[1])

	stop := make(chan struct{})
	result := e.sampleBackends(stop)
	failures := e.traffic(ts, tokens, blogIDs, 12, 20)
	close(stop)
	most, samples := result()
	st := e.checkTraffic(failures, most, samples, budget)
	t.Logf("max tenant backends %d over %d samples; stats %+v", most, samples, st)
	if st.Evictions == 0 || st.Pools > 4 || st.OpenConns > budget {
		t.Errorf("pool stats: %+v", st)
	}
	// Operators read the same counters on the metrics listener, never on the public one.
	e.mustDo(req{method: "GET", path: "/metrics"}, http.StatusNotFound)
	reg := metrics.New()
	if err := reg.Register(e.srv.PoolCollector()); err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	reg.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	raw := rec.Body.String()
	for _, want := range []string{"tenantplane_pool_evictions_total ", "tenantplane_pool_hits_total ", "tenantplane_pool_open_connections ",
		"tenantplane_pool_tenant_switches_total ", "tenantplane_pool_tenants_per_connection ", fmt.Sprintf("tenantplane_pool_connection_budget %d", budget)} {
		if !strings.Contains(raw, want) {
			t.Errorf("metrics lack %q:\n%s", want, raw)
		}
	}
	if strings.Contains(raw, "tenantplane_pool_evictions_total 0\n") {
		t.Errorf("metrics show no eviction:\n%s", raw)
	}
	// Tenant connections carry the tenant's role, so the sampled ones were tr_ roles.
	var others int
	if err := e.db.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
		AND application_name = 'tenantplane-dataplane' AND usename NOT LIKE 'tr\_%'`).Scan(&others); err != nil || others != 0 {
		t.Errorf("dataplane connections not logged in as a tenant role: %d (%v)", others, err)
	}
}

func TestSetLocalMode(t *testing.T) {
	t.Parallel()
	const budget = 4
	e := setup(t, func(c *Config) {
		c.SetLocalMode = true
		c.ConnBudget = budget
		c.ConnWait = 20 * time.Second
	})
	ts := e.newTenants("sl-one", "sl-two", "sl-three")
	tokens, blogIDs := e.prepare(ts)
	e.otherSchemaRefused(ts[0], ts[1])
	e.otherSchemaRefused(ts[2], ts[0])

	stop := make(chan struct{})
	result := e.sampleBackends(stop)
	failures := e.traffic(ts, tokens, blogIDs, 12, 20)
	close(stop)
	most, _ := result()
	for _, f := range failures {
		t.Error(f)
	}
	if most > budget {
		t.Errorf("saw %d dataplane backends, budget is %d", most, budget)
	}
	// A's token at B, in this mode too.
	e.mustDo(req{method: "GET", path: "/api/v1/blogs/" + strconv.FormatInt(blogIDs[1], 10), host: host("sl-two"), token: tokens[0]}, 401)
}

// TestSetLocalBinding runs units of work of two tenants, and one whose binding fails, on
// a single SET LOCAL connection: every statement runs as its tenant, and a failed
// binding runs nothing and leaves nothing behind for the next tenant.
func TestSetLocalBinding(t *testing.T) {
	t.Parallel()
	e := setup(t, func(c *Config) {
		c.SetLocalMode = true
		c.ConnBudget = 1
		c.PerTenantConns = 1
	})
	ts := e.newTenants("slb-one", "slb-two")
	ctx := context.Background()
	broken := *ts[1]
	broken.DBRole = "tr_no_such_role"
	type who struct{ user, schema string }
	// whoIs runs two statements in a unit of work and returns what each saw.
	whoIs := func(tn *tenant.Tenant, write bool) ([2]who, error) {
		var w [2]who
		run := e.srv.pools.Read
		if write {
			run = e.srv.pools.Write
		}
		err := run(ctx, tn, func(db pool.DB) error {
			for i := range w {
				if err := db.QueryRow(ctx, `SELECT current_user, current_schema()`).Scan(&w[i].user, &w[i].schema); err != nil {
					return err
				}
			}
			return nil
		})
		return w, err
	}
	for range 3 {
		for _, write := range []bool{false, true} {
			if _, err := whoIs(&broken, write); err == nil {
				t.Errorf("a unit of work (write %v) ran with a binding to a role that does not exist", write)
			}
			if err := e.srv.pools.Write(ctx, &broken, func(db pool.DB) error {
				_, err := db.Exec(ctx, `SELECT 1`)
				return err
			}); err == nil {
				t.Error("a write ran with a binding to a role that does not exist")
			}
			for _, tn := range ts {
				w, err := whoIs(tn, write)
				if err != nil {
					t.Fatalf("%s (write %v): %v", tn.Slug, write, err)
				}
				for i, got := range w {
					if got.user != tn.DBRole || got.schema != tn.SchemaName {
						t.Errorf("%s (write %v) statement %d ran as %s in %s", tn.Slug, write, i, got.user, got.schema)
					}
				}
			}
		}
	}
}

// TestEvictionDuringWork evicts a pool while a unit of work is using it: the work ends
// normally, and the pool is closed after it.
func TestEvictionDuringWork(t *testing.T) {
	t.Parallel()
	e := setup(t, func(c *Config) { c.PoolMode = tenant.PoolDedicated; c.MaxPools = 1 })
	ts := e.newTenants("ev-one", "ev-two")
	ctx := context.Background()
	started, release := make(chan struct{}), make(chan struct{})
	done := make(chan error, 1)
	var user string
	go func() {
		done <- e.srv.pools.Write(ctx, ts[0], func(db pool.DB) error {
			close(started)
			<-release
			return db.QueryRow(ctx, `SELECT current_user`).Scan(&user)
		})
	}()
	<-started
	if err := e.srv.pools.Read(ctx, ts[1], func(db pool.DB) error {
		_, err := db.Exec(ctx, `SELECT 1`)
		return err
	}); err != nil {
		t.Fatalf("work of the second tenant: %v", err)
	}
	if st := e.srv.PoolStats(); st.Evictions != 1 || st.Closing != 1 || st.Pools != 1 {
		t.Fatalf("after eviction: %+v", st)
	}
	close(release)
	if err := <-done; err != nil || user != ts[0].DBRole {
		t.Fatalf("work on the evicted pool: %q, %v", user, err)
	}
	expectWithin(t, 10*time.Second, func() bool { return e.srv.PoolStats().Closing == 0 }, "evicted pool closed")
}

// TestDatabaseIsolation serves a tenant living in a database of its own, in both pool
// modes, next to a schema tenant.
func TestDatabaseIsolation(t *testing.T) {
	t.Parallel()
	for _, setLocal := range []bool{false, true} {
		t.Run(fmt.Sprintf("set_local=%v", setLocal), func(t *testing.T) {
			t.Parallel()
			e := setup(t, func(c *Config) { c.SetLocalMode = setLocal })
			ctx := context.Background()
			hash, err := e.hasher.Hash(ctx, adminPassword)
			if err != nil {
				t.Fatal(err)
			}
			reg, err := e.prov.Register(ctx, provisioner.CreateRequest{Slug: "own-db", Isolation: tenant.IsolationDatabase,
				AdminEmail: "admin@own-db.example", AdminPasswordHash: hash})
			if err != nil {
				t.Fatal(err)
			}
			own, err := e.prov.Provision(ctx, reg.ID)
			if err != nil || own.Status != tenant.StatusActive {
				t.Fatalf("provisioning: %v %+v", err, own)
			}
			t.Cleanup(func() {
				// The tenant's database is not inside the test's database: drop it too,
				// after the server let go of it.
				e.srv.Stop()
				_, _ = e.db.Exec(context.Background(), "DROP DATABASE IF EXISTS "+own.DatabaseName+" WITH (FORCE)")
			})
			shared := e.newTenants("in-schema")[0]
			ts := []*tenant.Tenant{own, shared}
			tokens, blogIDs := e.prepare(ts)
			if failures := e.traffic(ts, tokens, blogIDs, 4, 6); len(failures) > 0 {
				t.Fatal(failures)
			}
			var db string
			if err := e.srv.pools.Read(ctx, own, func(q pool.DB) error {
				return q.QueryRow(ctx, `SELECT current_database()`).Scan(&db)
			}); err != nil || db != own.DatabaseName {
				t.Fatalf("database-isolated tenant served from %q (%v)", db, err)
			}
			e.mustDo(req{method: "GET", path: "/api/v1/users/me", host: host("in-schema"), token: tokens[0]}, 401)
		})
	}
}

// TestBudgetHandOver: a connection given back while another tenant's pool waits for
// room in the budget is closed at once, its slot handed to the waiter, rather than kept
// idle for the waiter's reclaimer to find.
func TestBudgetHandOver(t *testing.T) {
	t.Parallel()
	e := setup(t, func(c *Config) {
		c.PoolMode = tenant.PoolDedicated
		c.ConnBudget = 1
		c.PerTenantConns = 1
		c.ConnWait = 30 * time.Second
	})
	ts := e.newTenants("handover-a", "handover-b")
	ctx := context.Background()
	held, release := make(chan struct{}), make(chan struct{})
	first := make(chan error, 1)
	go func() {
		first <- e.srv.pools.Read(ctx, ts[0], func(db pool.DB) error {
			var n int
			err := db.QueryRow(ctx, `SELECT 1`).Scan(&n)
			close(held)
			<-release
			return err
		})
	}()
	<-held
	waitsBefore := e.srv.PoolStats().Waits
	second := make(chan error, 1)
	go func() {
		second <- e.srv.pools.Read(ctx, ts[1], func(db pool.DB) error {
			var n int
			return db.QueryRow(ctx, `SELECT 1`).Scan(&n)
		})
	}()
	deadline := time.Now().Add(30 * time.Second)
	for e.srv.PoolStats().Waits == waitsBefore { // the second tenant's pool waits for the budget
		if time.Now().After(deadline) {
			t.Fatal("the second tenant never waited for room in the budget")
		}
		time.Sleep(5 * time.Millisecond)
	}
	close(release)
	if err := <-first; err != nil {
		t.Fatalf("first tenant's read: %v", err)
	}
	if err := <-second; err != nil {
		t.Fatalf("second tenant's read: %v", err)
	}
	if st := e.srv.PoolStats(); st.Reclaimed != 0 || st.OpenConns > 1 {
		t.Errorf("the slot was not handed over on release: %+v", st)
	}
}
