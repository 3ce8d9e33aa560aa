package search

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tenantplane/tenantplane/dataplane/pool"
	"github.com/tenantplane/tenantplane/internal/pgtest"
	"github.com/tenantplane/tenantplane/provisioner"
	"github.com/tenantplane/tenantplane/tenant"
)

// The OpenSearch backend is what the provisioner creates indexes with.
var _ provisioner.SearchIndexes = (*OpenSearch)(nil)

// Environment variables naming the test OpenSearch node (set by scripts/test-services.sh).
const (
	envOpenSearchURL = "TENANTPLANE_TEST_OPENSEARCH_URL"
	envOpenSearchDir = "TENANTPLANE_TEST_OPENSEARCH_DIR"
)

// searcher is what both backends offer.
type searcher interface {
	Search(ctx context.Context, t *tenant.Tenant, db pool.DB, q string, limit int) ([]Hit, error)
}

// env is a fresh control database (which is also the only shard), a provisioner on it
// and, for OpenSearch, a backend with its own index prefix and a running indexer.
type env struct {
	ctx      context.Context
	shardURL string
	store    *tenant.Store
	prov     *provisioner.Provisioner
	os       *OpenSearch // nil for the Postgres backend
	indexer  *Indexer    // nil for the Postgres backend
	search   searcher

	// mu guards pools.
	mu    sync.Mutex
	pools map[string]*pgxpool.Pool // tenant id → pool logged in as the tenant
}

// setupPostgres returns an env searching with the Postgres backend.
func setupPostgres(t *testing.T) *env {
	t.Helper()
	e := newEnv(t, nil)
	e.search = NewPostgres(PostgresConfig{Logger: testLogger(t)})
	return e
}

// setupOpenSearch returns an env searching with OpenSearch in the given strategy, with
// an indexer started; it skips (fails under CI=true) without a test node.
func setupOpenSearch(t *testing.T, strategy Strategy) *env {
	t.Helper()
	url := pgtest.Require(t, envOpenSearchURL)
	prefix := "test-" + randomHex(4)
	o, err := NewOpenSearch(OpenSearchConfig{
		Addresses:   []string{url},
		Strategy:    strategy,
		IndexPrefix: prefix,
		Refresh:     "true",
		Timeout:     20 * time.Second,
		Logger:      testLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		deleteIndexes(t, url, prefix)
		o.Close()
	})
	e := newEnv(t, o)
	e.os, e.search = o, o
	ix, err := NewIndexer(IndexerConfig{
		Search: o,
		Tenants: TenantSourceFunc(func(ctx context.Context) ([]*tenant.Tenant, error) {
			return e.store.ListByStatus(ctx, tenant.StatusActive)
		}),
		Tx:         TransactorFunc(e.inTx),
		Interval:   100 * time.Millisecond,
		MaxBackoff: 500 * time.Millisecond,
		Logger:     testLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	e.indexer = ix
	if err := ix.Start(e.ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ix.Stop)
	return e
}

func newEnv(t *testing.T, idx provisioner.SearchIndexes) *env {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	shardURL := pgtest.NewDatabase(t, pgtest.URL(t))
	if _, err := provisioner.MigrateShared(ctx, shardURL); err != nil {
		t.Fatalf("migrating registry: %v", err)
	}
	store := tenant.NewStore(pgtest.Pool(t, shardURL))
	cfg := provisioner.Config{Shards: []provisioner.Shard{{Name: "main", URL: shardURL}}, Logger: testLogger(t)}
	if idx != nil {
		cfg.Search = idx
	}
	prov, err := provisioner.New(store, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(prov.Close)
	return &env{ctx: ctx, shardURL: shardURL, store: store, prov: prov, pools: map[string]*pgxpool.Pool{}}
}

// tenantDB is a provisioned tenant and a pool logged in as it.
type tenantDB struct {
	e      *env
	t      *tenant.Tenant
	db     *pgxpool.Pool
	author int64
}

// newTenant provisions an active tenant (schema isolation unless iso says otherwise).
func (e *env) newTenant(t *testing.T, slug string, iso ...tenant.Isolation) *tenantDB {
	t.Helper()
	req := provisioner.CreateRequest{Slug: slug, AdminEmail: slug + "@example.com", AdminPasswordHash: "$argon2id$not-checked"}
	if len(iso) > 0 {
		req.Isolation = iso[0]
	}
	tn, err := e.prov.Register(e.ctx, req)
	if err != nil {
		t.Fatalf("registering %s: %v", slug, err)
	}
	tn, err = e.prov.Provision(e.ctx, tn.ID)
	if err != nil {
		t.Fatalf("provisioning %s: %v", slug, err)
	}
	if tn.Status != tenant.StatusActive {
		t.Fatalf("tenant %s is %s: %s", slug, tn.Status, tn.LastError)
	}
	if e.os != nil && tn.SearchIndex != e.os.AliasName(tn) {
		t.Fatalf("tenant %s search index = %q, want %q", slug, tn.SearchIndex, e.os.AliasName(tn))
	}
	dsn, err := tn.ConnString(e.shardURL)
	if err != nil {
		t.Fatal(err)
	}
	pool := pgtest.Pool(t, dsn)
	e.mu.Lock()
	e.pools[tn.ID] = pool
	e.mu.Unlock()
	d := &tenantDB{e: e, t: tn, db: pool}
	if err := pool.QueryRow(e.ctx, `SELECT id FROM users ORDER BY id LIMIT 1`).Scan(&d.author); err != nil {
		t.Fatalf("reading %s admin user: %v", slug, err)
	}
	return d
}

// inTx is the indexer's Transactor: a transaction on the tenant's pool.
func (e *env) inTx(ctx context.Context, t *tenant.Tenant, fn func(pool.DB) error) error {
	e.mu.Lock()
	pool := e.pools[t.ID]
	e.mu.Unlock()
	if pool == nil {
		return fmt.Errorf("no pool for tenant %s", t.Slug)
	}
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error { return fn(tx) })
}

// write runs fn in a transaction of the tenant, then nudges the indexer, as the
// dataplane does after a blog write.
func (d *tenantDB) write(t *testing.T, fn func(tx pgx.Tx) error) {
	t.Helper()
	if err := pgx.BeginFunc(d.e.ctx, d.db, fn); err != nil {
		t.Fatalf("writing blogs of %s: %v", d.t.Slug, err)
	}
	if d.e.indexer != nil {
		d.e.indexer.Notify(d.t.ID)
	}
}

// create inserts a blog and its outbox event and returns its id.
func (d *tenantDB) create(t *testing.T, title, description string) int64 {
	t.Helper()
	var id int64
	d.write(t, func(tx pgx.Tx) error {
		if err := tx.QueryRow(d.e.ctx, `INSERT INTO blogs (title, description, author_id) VALUES ($1, $2, $3) RETURNING id`,
			title, description, d.author).Scan(&id); err != nil {
			return err
		}
		return Enqueue(d.e.ctx, tx, OpUpsert, id)
	})
	return id
}

// update changes a blog's title and description.
func (d *tenantDB) update(t *testing.T, id int64, title, description string) {
	t.Helper()
	d.write(t, func(tx pgx.Tx) error {
		if _, err := tx.Exec(d.e.ctx, `UPDATE blogs SET title = $2, description = $3, updated_at = now() WHERE id = $1`,
			id, title, description); err != nil {
			return err
		}
		return Enqueue(d.e.ctx, tx, OpUpsert, id)
	})
}

// remove deletes a blog.
func (d *tenantDB) remove(t *testing.T, id int64) {
	t.Helper()
	d.write(t, func(tx pgx.Tx) error {
		if _, err := tx.Exec(d.e.ctx, `DELETE FROM blogs WHERE id = $1`, id); err != nil {
			return err
		}
		return Enqueue(d.e.ctx, tx, OpDelete, id)
	})
}

// outboxLen returns the number of events waiting in the tenant's outbox.
func (d *tenantDB) outboxLen(t *testing.T) int {
	t.Helper()
	var n int
	if err := d.db.QueryRow(d.e.ctx, `SELECT count(*) FROM search_outbox`).Scan(&n); err != nil {
		t.Fatalf("counting outbox: %v", err)
	}
	return n
}

// synced waits until the backend reflects every write so far: at once for Postgres,
// once the indexer emptied the outbox for OpenSearch (bulk writes wait for a refresh).
func (d *tenantDB) synced(t *testing.T) {
	t.Helper()
	if d.e.indexer == nil {
		return
	}
	eventually(t, "the indexer drains the outbox of "+d.t.Slug, func() (bool, string) {
		n := d.outboxLen(t)
		return n == 0, fmt.Sprintf("%d events left", n)
	})
}

// search runs a search as the tenant and fails the test on error.
func (d *tenantDB) search(t *testing.T, q string) []Hit {
	t.Helper()
	hits, err := d.e.search.Search(d.e.ctx, d.t, d.db, q, 0)
	if err != nil {
		t.Fatalf("search %q as %s: %v", q, d.t.Slug, err)
	}
	return hits
}

// ids returns the blog ids of hits, in order.
func ids(hits []Hit) []int64 {
	out := make([]int64, len(hits))
	for i, h := range hits {
		out[i] = h.ID
	}
	return out
}

// eventually polls cond until it holds, failing the test after a bounded wait.
func eventually(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	last := ""
	for time.Now().Before(deadline) {
		ok, detail := cond()
		if ok {
			return
		}
		last = detail
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("timed out waiting until %s (last: %s)", what, last)
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// deleteIndexes removes the test's indexes from the node.
func deleteIndexes(t *testing.T, url, prefix string) {
	req, err := http.NewRequest(http.MethodDelete, strings.TrimRight(url, "/")+"/"+prefix+"-*", nil)
	if err != nil {
		t.Errorf("deleting test indexes: %v", err)
		return
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Logf("deleting test indexes: %v", err)
		return
	}
	_ = resp.Body.Close()
}

// testLogger logs to the test's output.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}
