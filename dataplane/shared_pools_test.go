package dataplane

import (
	"context"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"testing/fstest"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tenantplane/tenantplane/dataplane/pool"
	"github.com/tenantplane/tenantplane/migrations"
	"github.com/tenantplane/tenantplane/provisioner"
	"github.com/tenantplane/tenantplane/tenant"
)

// manyTenants returns a dataplane whose pools have the budget, waiting for a connection
// as long as it takes (a test of many tenants is about never failing, not about speed),
// and its tenants named by format: def of them, or the value of the environment
// variable count (provisioning thousands takes minutes).
func manyTenants(t *testing.T, budget int, format, count string, def int) (*env, []*tenant.Tenant) {
	n := def
	if v := os.Getenv(count); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 2 {
			t.Fatalf("%s=%q", count, v)
		}
	}
	e := setup(t, func(c *Config) {
		c.ConnBudget = budget
		c.ConnWait = 30 * time.Second
	})
	start := time.Now()
	ts := e.newTenants(numbered(format, n)...)
	t.Logf("provisioned %d tenants in %v", n, time.Since(start).Round(time.Millisecond))
	return e, ts
}

// whoIsAt runs a read or a write for tn and returns the user and schema its statement
// ran with, and the number of users it sees in its own users table.
func (e *env) whoIsAt(ctx context.Context, tn *tenant.Tenant, write bool) (user, schema string, err error) {
	run := e.srv.pools.Read
	if write {
		run = e.srv.pools.Write
	}
	err = run(ctx, tn, func(db pool.DB) error {
		var n int
		return db.QueryRow(ctx, `SELECT current_user, current_schema(), (SELECT count(*) FROM users)`).Scan(&user, &schema, &n)
	})
	return user, schema, err
}

// TestSharedManyTenants serves interleaved reads and writes of many tenants through
// the shared pools with a budget of 40: none fails, the backends never exceed the
// budget and all log in as the gateway role, and every statement runs as its tenant's
// role on its tenant's schema.
func TestSharedManyTenants(t *testing.T) {
	t.Parallel()
	const budget = 40
	e, ts := manyTenants(t, budget, "many-%04d", "TENANTPLANE_TEST_SHARED_TENANTS", 200)
	n := len(ts)

	ctx := context.Background()
	stop := make(chan struct{})
	result := e.sampleBackends(stop)
	var mu sync.Mutex
	var failures []string
	var served atomic.Int64
	var wg sync.WaitGroup
	const workers = 24
	for w := range workers {
		wg.Go(func() {
			// Every worker walks over all the tenants, each from another starting point.
			for j := range 2 * n {
				tn := ts[(w*37+j*7)%n]
				write := (w+j)%5 == 0
				user, schema, err := e.whoIsAt(ctx, tn, write)
				served.Add(1)
				if err != nil || user != tn.DBRole || schema != tn.SchemaName {
					mu.Lock()
					failures = append(failures, fmt.Sprintf("%s (write %v): ran as %q in %q: %v", tn.Slug, write, user, schema, err))
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	close(stop)
	most, samples := result()
	st := e.checkTraffic(failures, most, samples, budget)
	t.Logf("%d units of work; max backends %d over %d samples; stats %+v", served.Load(), most, samples, st)
	var others int
	if err := e.db.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
		AND application_name = 'tenantplane-dataplane' AND usename <> $1`, tenant.GatewayRole).Scan(&others); err != nil || others != 0 {
		t.Errorf("shared connections not logged in as the gateway role: %d (%v)", others, err)
	}
}

// TestSharedTrafficDuringFleetMigration serves interleaved requests (a read and a write
// each) of 1,000 tenants over HTTP through the shared pools with a budget of 40 while a fleet run
// migrates half of them to a new version that adds a column to their blogs table. Every
// answer is the tenant's own (current_user and current_schema()) with its table's shape
// at one of its two versions, or the documented 503 tenant_migrating of a tenant in the
// run; nothing else, and never more backends than the budget. After the run, each
// migrated tenant answers with the new shape and the others with the old one; then a
// second run takes the same half back down under the same traffic.
func TestSharedTrafficDuringFleetMigration(t *testing.T) {
	t.Parallel()
	const budget = 40
	e, ts := manyTenants(t, budget, "fl-%04d", "TENANTPLANE_TEST_FLEET_TENANTS", 1000)
	n := len(ts)
	e.waitListening()
	ctx := context.Background()

	// A fleet that knows one migration more than the binary: a column of blogs.
	latest, err := provisioner.LatestTenantVersion()
	if err != nil {
		t.Fatal(err)
	}
	fsys := fstest.MapFS{}
	entries, err := fs.ReadDir(migrations.Tenant(), ".")
	if err != nil {
		t.Fatal(err)
	}
	for _, en := range entries {
		data, err := fs.ReadFile(migrations.Tenant(), en.Name())
		if err != nil {
			t.Fatal(err)
		}
		fsys[en.Name()] = &fstest.MapFile{Data: data}
	}
	next := latest + 1
	fsys[fmt.Sprintf("%06d_probe.up.sql", next)] = &fstest.MapFile{Data: []byte(`ALTER TABLE blogs ADD COLUMN probe int NOT NULL DEFAULT 7;`)}
	fsys[fmt.Sprintf("%06d_probe.down.sql", next)] = &fstest.MapFile{Data: []byte(`ALTER TABLE blogs DROP COLUMN probe;`)}
	prov, err := provisioner.New(e.store, provisioner.Config{Shards: []provisioner.Shard{{Name: "main", URL: e.dbURL}}, TenantMigrations: fsys})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(prov.Close)
	fleet := provisioner.NewFleet(prov, provisioner.FleetConfig{})

	ask := func(tn *tenant.Tenant) (whoAnswer, resp) {
		r := e.do(req{method: http.MethodGet, path: "/test/whoami", host: host(tn.Slug)})
		var a whoAnswer
		if r.status == http.StatusOK {
			a = r.who()
		}
		return a, r
	}
	first, r := ask(ts[0])
	if r.status != http.StatusOK {
		t.Fatalf("whoami of %s: %d %s", ts[0].Slug, r.status, r.raw)
	}
	cols := first.Read.Columns
	migrated := map[string]bool{}
	var half []string
	for i, tn := range ts {
		if i%2 == 0 {
			migrated[tn.Slug] = true
			half = append(half, tn.Slug)
		}
	}

	stop := make(chan struct{})
	backends := e.sampleBackends(stop)
	var mu sync.Mutex
	var failures []string
	var served, refused atomic.Int64
	var wg sync.WaitGroup
	// The traffic stops when the test ends, even one that fails half way.
	var halt sync.Once
	stopTraffic := func() { halt.Do(func() { close(stop); wg.Wait() }) }
	t.Cleanup(stopTraffic)
	const workers = 24
	for w := range workers {
		wg.Go(func() {
			for j := 0; ; j++ {
				select {
				case <-stop:
					return
				default:
				}
				tn := ts[(w*37+j*7)%n]
				a, r := ask(tn)
				served.Add(1)
				ok := false
				shapeOK := func(b binding) bool { return b.Columns == cols || migrated[tn.Slug] && b.Columns == cols+1 }
				switch {
				case r.status == http.StatusOK:
					ok = a.Read.is(tn) && a.Write.is(tn) && shapeOK(a.Read) && shapeOK(a.Write)
				case r.status == http.StatusServiceUnavailable && r.code() == "tenant_migrating" && migrated[tn.Slug]:
					refused.Add(1)
					ok = true
				}
				if !ok {
					mu.Lock()
					failures = append(failures, fmt.Sprintf("%s: %d %s", tn.Slug, r.status, r.raw))
					mu.Unlock()
				}
			}
		})
	}
	// Traffic first reaches every tenant, then the run starts under it.
	expectWithin(t, 5*time.Minute, func() bool { return served.Load() >= int64(n) }, "traffic over every tenant")
	// Up, then back down: an operator's rollback drops the column under the traffic too.
	for _, to := range []uint{next, latest} {
		run, err := fleet.Run(ctx, provisioner.RunOptions{To: int(to), Tenants: half, Parallel: 8, Actor: "test"})
		if err != nil {
			t.Fatalf("fleet run to %d: %v", to, err)
		}
		if run.State != provisioner.RunDone || run.Done != len(half) {
			t.Errorf("fleet run to %d %s: %d of %d done, %d failed: %+v", to, run.State, run.Done, len(half), run.Failed, run.Failures)
		}
		// Once the registry's notifications have reached the resolver, each tenant
		// answers with its own version's shape; the traffic goes on meanwhile.
		for _, tn := range ts {
			want := cols
			if migrated[tn.Slug] && to == next {
				want = cols + 1
			}
			expectWithin(t, eventWait, func() bool {
				a, r := ask(tn)
				return r.status == http.StatusOK && a.Read.Columns == want && a.Write.Columns == want
			}, fmt.Sprintf("%s answering with %d columns at version %d", tn.Slug, want, to))
		}
	}
	stopTraffic()
	most, samples := backends()
	st := e.checkTraffic(failures, most, samples, budget)
	t.Logf("%d requests (%d answered tenant_migrating) during a run up and one down over %d of %d tenants; max backends %d over %d samples; stats %+v",
		served.Load(), refused.Load(), len(half), n, most, samples, st)
}

// checkTraffic fails the test with the first failures of a traffic run, and when the
// backends sampled (most, in samples) or open exceeded the budget; it returns the pool
// counters.
func (e *env) checkTraffic(failures []string, most, samples, budget int) pool.Stats {
	e.t.Helper()
	for i, f := range failures {
		if i == 10 {
			e.t.Errorf("... %d failures in all", len(failures))
			break
		}
		e.t.Error(f)
	}
	st := e.srv.PoolStats()
	if most > budget || st.OpenConns > budget {
		e.t.Errorf("saw %d dataplane backends (%d open), budget is %d", most, st.OpenConns, budget)
	}
	if samples == 0 || most == 0 {
		e.t.Errorf("the sampler saw no backend (%d samples)", samples)
	}
	return st
}

// TestWorkAfterTablesChangedUnderIt: a migration that changes a table's shape commits
// before the registry's new version reaches the dataplane, so a request can still run a
// statement prepared for the old shape, which Postgres refuses ("cached plan must not
// change result type"). The read, or the write's whole transaction, runs again with the
// statement prepared anew and answers with the new shape, in both pool modes; before,
// the request failed with a 500.
func TestWorkAfterTablesChangedUnderIt(t *testing.T) {
	t.Parallel()
	for _, mode := range []tenant.PoolMode{tenant.PoolShared, tenant.PoolDedicated} {
		t.Run(string(mode), func(t *testing.T) {
			t.Parallel()
			e := setup(t, func(c *Config) {
				c.PoolMode = mode
				c.ConnBudget = 1 // one connection: the second run meets the same cache
			})
			tn := e.newTenants("stale-" + string(mode))[0]
			ctx := context.Background()
			who := func(write bool) (binding, error) {
				run := e.srv.pools.Read
				if write {
					run = e.srv.pools.Write
				}
				var b binding
				err := run(ctx, tn, func(db pool.DB) error { return b.of(ctx, db) })
				return b, err
			}
			for i, write := range []bool{false, true} {
				before, err := who(write)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := e.db.Exec(ctx, fmt.Sprintf(`ALTER TABLE %s ADD COLUMN probe%d int`, pgx.Identifier{tn.SchemaName, "blogs"}.Sanitize(), i)); err != nil {
					t.Fatal(err)
				}
				after, err := who(write) // the registry still says the old version
				if err != nil || after.Columns != before.Columns+1 || !after.is(tn) {
					t.Fatalf("write %v after the table changed: %+v, %v; want %d columns", write, after, err, before.Columns+1)
				}
			}
		})
	}
}

// TestSharedRebinds runs, on the single connection of a shared pool, the statements a
// hostile SQL string could use to change the binding of tenant A's connection: RESET
// ROLE, SET ROLE <B's role> and SET search_path = <B's schema> succeed (the gateway role
// is a member of every tenant role), SET SESSION AUTHORIZATION does not; within A's own
// transaction they take effect, but no later unit of work, of A or of any other tenant,
// runs with the changed binding: every transaction is bound anew.
func TestSharedRebinds(t *testing.T) {
	t.Parallel()
	e := setup(t, func(c *Config) {
		c.ConnBudget = 1
		c.GroupConns = 1
	})
	ts := e.newTenants("reb-a", "reb-b", "reb-c")
	a, b := ts[0], ts[1]
	ctx := context.Background()
	hostile := []struct {
		sql string
		ok  bool
	}{
		{`RESET ROLE`, true},
		{`SET ROLE ` + pgx.Identifier{b.DBRole}.Sanitize(), true},
		{`SET search_path = ` + pgx.Identifier{b.SchemaName}.Sanitize(), true},
		{`SET SESSION AUTHORIZATION ` + pgx.Identifier{b.DBRole}.Sanitize(), false},
	}
	for _, h := range hostile {
		for _, write := range []bool{false, true} {
			run := e.srv.pools.Read
			if write {
				run = e.srv.pools.Write
			}
			var after string
			err := run(ctx, a, func(db pool.DB) error {
				if _, err := db.Exec(ctx, h.sql); err != nil {
					return err
				}
				return db.QueryRow(ctx, `SELECT current_user || ' ' || COALESCE(current_schema(), '(none)')`).Scan(&after)
			})
			if (err == nil) != h.ok {
				t.Errorf("%s (write %v): error %v, want success %v", h.sql, write, err, h.ok)
			}
			t.Logf("%s (write %v): then ran as %q (%v)", h.sql, write, after, err)
			for _, tn := range ts {
				for _, w := range []bool{false, true} {
					user, schema, err := e.whoIsAt(ctx, tn, w)
					if err != nil || user != tn.DBRole || schema != tn.SchemaName {
						t.Errorf("after %q: %s (write %v) ran as %q in %q: %v", h.sql, tn.Slug, w, user, schema, err)
					}
				}
			}
		}
	}
	if st := e.srv.PoolStats(); st.OpenConns > 1 {
		t.Errorf("stats %+v", st)
	}
}

// TestSharedReadRetry kills the shared pools' backends while reads run: every read gets
// its answer (run again on another connection), none an error.
func TestSharedReadRetry(t *testing.T) {
	t.Parallel()
	e := setup(t, func(c *Config) { c.ConnWait = 20 * time.Second })
	ts := e.newTenants("kill-one", "kill-two")
	ctx := context.Background()
	stop := make(chan struct{})
	var killed atomic.Int64
	killerDone := make(chan struct{})
	go func() {
		// One backend at a time, busy or idle, a few times during the load.
		defer close(killerDone)
		for killed.Load() < 10 {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			var n int64
			if err := e.db.QueryRow(ctx, `SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM (
				SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND usename = $1
				ORDER BY random() LIMIT 1) v`, tenant.GatewayRole).Scan(&n); err == nil {
				killed.Add(n)
			}
		}
	}()
	var wg sync.WaitGroup
	var failures atomic.Int64
	var firstErr atomic.Value
	for w := range 8 {
		wg.Go(func() {
			for j := range 400 {
				tn := ts[(w+j)%2]
				user, _, err := e.whoIsAt(ctx, tn, false)
				if err != nil || user != tn.DBRole {
					failures.Add(1)
					firstErr.CompareAndSwap(nil, fmt.Sprintf("%s: %q %v", tn.Slug, user, err))
				}
			}
		})
	}
	wg.Wait()
	close(stop)
	<-killerDone
	st := e.srv.PoolStats()
	t.Logf("killed %d backends; stats %+v", killed.Load(), st)
	if failures.Load() > 0 {
		t.Errorf("%d reads failed, first: %v", failures.Load(), firstErr.Load())
	}
	if killed.Load() == 0 || st.Retries == 0 {
		t.Errorf("no backend killed under a read (killed %d, retries %d)", killed.Load(), st.Retries)
	}
	// A write is not retried on a killed connection (its outcome may be unknown): it fails.
	err := e.srv.pools.Write(ctx, ts[0], func(db pool.DB) error {
		if _, err := e.db.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
			WHERE datname = current_database() AND usename = $1 AND state <> 'active'`, tenant.GatewayRole); err != nil {
			return err
		}
		_, err := db.Exec(ctx, `SELECT pg_sleep(0)`)
		return err
	})
	if err == nil {
		t.Error("a write whose connection was killed before its first statement succeeded: it was retried")
	}
}

// TestSharedSchemaVersions serves tenants on two schema versions whose tables differ in
// shape through the same few shared connections: a statement prepared for one version
// never serves the other (Postgres would refuse a cached plan whose result type
// changed), so every tenant reads its own shape. Half of the tenants move to the new
// version between two rounds of traffic, as a fleet migration does.
func TestSharedSchemaVersions(t *testing.T) {
	t.Parallel()
	e := setup(t, func(c *Config) {
		c.ConnBudget = 2
		c.GroupConns = 1
		c.ConnWait = 20 * time.Second
	})
	ts := e.newTenants(numbered("ver-%02d", 12)...)
	ctx := context.Background()
	for _, tn := range ts {
		s := pgx.Identifier{tn.SchemaName, "shape"}.Sanitize()
		if _, err := e.db.Exec(ctx, `CREATE TABLE `+s+` (a int); INSERT INTO `+s+` VALUES (1); ALTER TABLE `+s+` OWNER TO `+pgx.Identifier{tn.DBRole}.Sanitize()); err != nil {
			t.Fatal(err)
		}
	}
	cols := make([]int, len(ts)) // the columns each tenant's table has
	for i := range cols {
		cols[i] = 1
	}
	round := func() {
		var wg sync.WaitGroup
		for w := range 6 {
			wg.Go(func() {
				for j := range 60 {
					i := (w*5 + j) % len(ts)
					var got int
					err := e.srv.pools.Read(ctx, ts[i], func(db pool.DB) error {
						rows, err := db.Query(ctx, `SELECT * FROM shape`)
						if err != nil {
							return err
						}
						defer rows.Close()
						for rows.Next() {
							got = len(rows.RawValues())
						}
						return rows.Err()
					})
					if err != nil || got != cols[i] {
						t.Errorf("%s (version %d): %d columns, want %d: %v", ts[i].Slug, ts[i].MigrationVersion, got, cols[i], err)
					}
				}
			})
		}
		wg.Wait()
	}
	round()
	for i := 0; i < len(ts); i += 2 {
		s := pgx.Identifier{ts[i].SchemaName, "shape"}.Sanitize()
		if _, err := e.db.Exec(ctx, `ALTER TABLE `+s+` ADD COLUMN b int`); err != nil {
			t.Fatal(err)
		}
		moved := *ts[i]
		moved.MigrationVersion++
		ts[i], cols[i] = &moved, 2
	}
	round()
}

// TestSharedTenantShare: one tenant holds at most SharedTenantConns connections of its
// shared pool group at once; another tenant of the same group is served meanwhile.
func TestSharedTenantShare(t *testing.T) {
	t.Parallel()
	e := setup(t, func(c *Config) {
		c.ConnBudget = 4
		c.GroupConns = 4 // one group: every tenant shares it
		c.SharedTenantConns = 2
		c.ConnWait = 20 * time.Second
	})
	ts := e.newTenants("share-noisy", "share-quiet")
	ctx := context.Background()
	var inside, most atomic.Int64
	release := make(chan struct{})
	var wg sync.WaitGroup
	for range 6 {
		wg.Go(func() {
			err := e.srv.pools.Write(ctx, ts[0], func(db pool.DB) error {
				n := inside.Add(1)
				defer inside.Add(-1)
				for cur := most.Load(); n > cur && !most.CompareAndSwap(cur, n); cur = most.Load() {
				}
				<-release
				_, err := db.Exec(ctx, `SELECT 1`)
				return err
			})
			if err != nil {
				t.Errorf("noisy tenant: %v", err)
			}
		})
	}
	expectWithin(t, 20*time.Second, func() bool { return inside.Load() == 2 }, "the noisy tenant holds its share")
	if user, _, err := e.whoIsAt(ctx, ts[1], false); err != nil || user != ts[1].DBRole {
		t.Errorf("quiet tenant beside a noisy one: %q %v", user, err)
	}
	close(release)
	wg.Wait()
	if most.Load() != 2 {
		t.Errorf("the noisy tenant held %d connections at once, its share is 2", most.Load())
	}
	if st := e.srv.PoolStats(); st.ShareWaits == 0 {
		t.Errorf("no unit of work waited for its share: %+v", st)
	}
}

// numbered returns n slugs made of format and 0..n-1.
func numbered(format string, n int) []string {
	slugs := make([]string, n)
	for i := range slugs {
		slugs[i] = fmt.Sprintf(format, i)
	}
	return slugs
}

// TestSharedAffinity: a tenant whose work runs one unit at a time always gets the same
// backend of its shard's shared pool, even while other tenants' work keeps every
// connection busy, and that backend prepares the tenant's statements for the tenant's
// schema alone. So each backend serves a fraction of the tenants (it caches their
// catalogs and statements) instead of all of them.
func TestSharedAffinity(t *testing.T) {
	t.Parallel()
	e := setup(t, func(c *Config) {
		c.ConnBudget = 8
		c.ConnWait = 20 * time.Second
	})
	ts := e.newTenants(numbered("aff-%d", 8)...)
	ctx := context.Background()
	pids := make([]map[int32]bool, len(ts))
	var wg sync.WaitGroup
	for i, tn := range ts {
		pids[i] = map[int32]bool{}
		wg.Go(func() {
			for range 50 {
				err := e.srv.pools.Read(ctx, tn, func(db pool.DB) error {
					var pid int32
					if err := db.QueryRow(ctx, `SELECT pg_backend_pid() FROM blogs LIMIT 1`).Scan(&pid); err != nil && err != pgx.ErrNoRows {
						return err
					}
					if err := db.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&pid); err != nil {
						return err
					}
					pids[i][pid] = true
					return nil
				})
				if err != nil {
					t.Errorf("%s: %v", tn.Slug, err)
					return
				}
			}
		})
	}
	wg.Wait()
	backends := map[int32]int{}
	for i, set := range pids {
		if len(set) != 1 {
			t.Errorf("%s ran on %d backends, want 1: %v", ts[i].Slug, len(set), set)
		}
		for pid := range set {
			backends[pid]++
		}
	}
	if len(backends) < 2 {
		t.Errorf("every tenant ran on the same backend: %v", backends)
	}
	st := e.srv.PoolStats()
	t.Logf("stats %+v", st)
	if st.MaxTenantsPerConn >= len(ts) {
		t.Errorf("a connection served every tenant: %+v", st)
	}
}

// TestSharedStatementsPerSchema: two tenants running the same SQL on one shared
// connection each get a prepared statement of their own, parsed in their own schema,
// so switching the connection between them never re-analyses a statement.
func TestSharedStatementsPerSchema(t *testing.T) {
	t.Parallel()
	e := setup(t, func(c *Config) { c.ConnBudget = 1 })
	ts := e.newTenants("stmt-a", "stmt-b")
	ctx := context.Background()
	const q = `SELECT count(*) FROM blogs`
	for _, tn := range append(ts, ts...) {
		if err := e.srv.pools.Read(ctx, tn, func(db pool.DB) error {
			var n int
			return db.QueryRow(ctx, q).Scan(&n)
		}); err != nil {
			t.Fatalf("%s: %v", tn.Slug, err)
		}
	}
	var names int
	if err := e.srv.pools.Read(ctx, ts[0], func(db pool.DB) error {
		return db.QueryRow(ctx, `SELECT count(DISTINCT name) FROM pg_prepared_statements WHERE statement = $1`, q).Scan(&names)
	}); err != nil {
		t.Fatal(err)
	}
	if names != 2 {
		t.Errorf("%d prepared statements of %q on the connection, want one per tenant schema (2)", names, q)
	}
}

// TestSharedStatementsBounded: a shared connection keeps at most SharedStatements
// prepared statements (the binding's aside); the least recently used are deallocated
// and prepared again when they come back, and every statement still answers for its own
// tenant.
func TestSharedStatementsBounded(t *testing.T) {
	t.Parallel()
	const keep = 4
	e := setup(t, func(c *Config) {
		c.ConnBudget = 1
		c.SharedStatements = keep
	})
	ts := e.newTenants("bound-a", "bound-b", "bound-c")
	ctx := context.Background()
	for round := range 3 {
		for _, tn := range ts {
			for i := range 5 { // 5 statements a tenant, 15 in all, over a cache of 4
				if err := e.srv.pools.Read(ctx, tn, func(db pool.DB) error {
					var n int
					var schema string
					q := fmt.Sprintf(`SELECT %d + count(*), current_schema() FROM blogs`, i)
					if err := db.QueryRow(ctx, q).Scan(&n, &schema); err != nil {
						return err
					}
					if n != i || schema != tn.SchemaName {
						return fmt.Errorf("statement %d answered %d in %q", i, n, schema)
					}
					return nil
				}); err != nil {
					t.Fatalf("round %d, %s: %v", round, tn.Slug, err)
				}
			}
		}
	}
	var kept int
	if err := e.srv.pools.Read(ctx, ts[0], func(db pool.DB) error {
		return db.QueryRow(ctx, `SELECT count(*) FROM pg_prepared_statements WHERE name LIKE 'tp\_%' AND name <> 'tp_bind'`).Scan(&kept)
	}); err != nil {
		t.Fatal(err)
	}
	// The count is a statement of the cache too: the one its arrival evicts is
	// deallocated by the connection's next pipeline, so keep+1 may be there now.
	if kept > keep+1 {
		t.Errorf("%d statements prepared on the connection, want at most %d", kept, keep+1)
	}
}

// TestPlannerCostsInBothModes checks that the tenant's queries are planned with the
// platform's random_page_cost in both pool modes: set on the tenant's role (tenant
// migration 5) for dedicated pools and on the gateway role for shared ones, whose
// sessions SET ROLE and so never see the tenant role's defaults. Without it, a search
// for a word of middling frequency walks half the primary key.
func TestPlannerCostsInBothModes(t *testing.T) {
	t.Parallel()
	for _, mode := range []tenant.PoolMode{tenant.PoolShared, tenant.PoolDedicated} {
		t.Run(string(mode), func(t *testing.T) {
			t.Parallel()
			e := setup(t, func(c *Config) { c.PoolMode = mode })
			tn := e.newTenants("costs-" + string(mode))[0]
			ctx := context.Background()
			var cost, user string
			if err := e.srv.pools.Read(ctx, tn, func(db pool.DB) error {
				return db.QueryRow(ctx, `SELECT current_setting('random_page_cost'), current_user`).Scan(&cost, &user)
			}); err != nil {
				t.Fatal(err)
			}
			if cost != "1.1" || user != tn.DBRole {
				t.Errorf("%s mode: random_page_cost %q as %q, want 1.1 as %q", mode, cost, user, tn.DBRole)
			}
			// Shared connections plan statements generically from their first run (each
			// runs only a few times per connection), except a query that asks to be
			// planned with its values (the search).
			want := map[pgx.QueryExecMode]string{pgx.QueryExecModeCacheStatement: "force_generic_plan", pgx.QueryExecModeExec: "force_custom_plan"}
			if mode == tenant.PoolDedicated {
				want = map[pgx.QueryExecMode]string{pgx.QueryExecModeCacheStatement: "auto", pgx.QueryExecModeExec: "auto"}
			}
			for _, write := range []bool{false, true} {
				run := e.srv.pools.Read
				if write {
					run = e.srv.pools.Write
				}
				for qm, w := range want {
					var got string
					if err := run(ctx, tn, func(db pool.DB) error {
						return db.QueryRow(ctx, `SELECT current_setting('plan_cache_mode')`, qm).Scan(&got)
					}); err != nil {
						t.Fatal(err)
					}
					if got != w {
						t.Errorf("%s mode, write %v, %v: plan_cache_mode %q, want %q", mode, write, qm, got, w)
					}
				}
			}
		})
	}
}
