// Command search benchmarks blog search (package dataplane/search) on loopback
// services: search latency at many concurrent clients on the Postgres backend and on
// OpenSearch in both index strategies, indexing throughput through the outbox, and the
// shard count the shared strategy needs for 10,000 tenants, reasoned from the index
// size measured per tenant.
//
// It creates its own throwaway database (and indexes under a random prefix) and
// removes them at the end. Every run is bounded in queries and time. Results are
// informational: targets print PASS or MISS and the exit status is 0; only a setup
// failure exits 1.
//
//	scripts/test-services.sh --pg --opensearch -- go run ./bench/search
//
// Without an OpenSearch URL only the Postgres part runs.
package main

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	mrand "math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tenantplane/tenantplane/dataplane/pool"
	"github.com/tenantplane/tenantplane/dataplane/search"
	"github.com/tenantplane/tenantplane/provisioner"
	"github.com/tenantplane/tenantplane/tenant"
)

type config struct {
	dbURL      string
	osURL      string
	blogs      int
	clients    int
	duration   time.Duration
	maxQueries int
	poolConns  int
	tenants    int
	shardGB    []float64
	keep       bool
}

func main() {
	var cfg config
	flag.StringVar(&cfg.dbURL, "db", os.Getenv("TENANTPLANE_TEST_DATABASE_URL"), "superuser URL of a loopback Postgres (default $TENANTPLANE_TEST_DATABASE_URL)")
	flag.StringVar(&cfg.osURL, "opensearch", os.Getenv("TENANTPLANE_TEST_OPENSEARCH_URL"), "loopback OpenSearch URL (default $TENANTPLANE_TEST_OPENSEARCH_URL; empty: Postgres only)")
	flag.IntVar(&cfg.blogs, "blogs", 10000, "blogs per tenant")
	flag.IntVar(&cfg.clients, "clients", 50, "concurrent search clients")
	flag.DurationVar(&cfg.duration, "duration", 5*time.Second, "length of each search run")
	flag.IntVar(&cfg.maxQueries, "max-queries", 50000, "most queries of each search run")
	flag.IntVar(&cfg.poolConns, "pool-conns", 10, "connections of the tenant's Postgres pool")
	flag.IntVar(&cfg.tenants, "tenants", 10000, "tenant count the shared-index shard estimate is made for")
	flag.BoolVar(&cfg.keep, "keep", false, "keep the database and indexes for inspection (prints where they are)")
	flag.Parse()
	cfg.shardGB = []float64{30, 50}
	if err := checkLoopback(cfg.dbURL, cfg.osURL); err != nil {
		fmt.Fprintln(os.Stderr, "bench/search:", err)
		os.Exit(1)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	if err := run(ctx, cfg); err != nil {
		fmt.Fprintln(os.Stderr, "bench/search:", err)
		os.Exit(1)
	}
}

// checkLoopback refuses anything but loopback services.
func checkLoopback(dbURL, osURL string) error {
	if dbURL == "" {
		return fmt.Errorf("no database: set -db or run under scripts/test-services.sh --pg")
	}
	for _, raw := range []string{dbURL, osURL} {
		if raw == "" {
			continue
		}
		u, err := url.Parse(raw)
		if err != nil {
			return fmt.Errorf("parsing %q: %w", raw, err)
		}
		if h := u.Hostname(); h != "localhost" && h != "::1" && !strings.HasPrefix(h, "127.") {
			return fmt.Errorf("%s is not a loopback address; the benchmark only runs against local services", h)
		}
	}
	return nil
}

func run(ctx context.Context, cfg config) error {
	fmt.Printf("search benchmark: %d blogs per tenant, 1 and %d concurrent clients, runs of %s (at most %d queries)\n",
		cfg.blogs, cfg.clients, cfg.duration, cfg.maxQueries)
	if load, err := os.ReadFile("/proc/loadavg"); err == nil {
		fmt.Printf("load average at start: %s (latencies under load include queueing for the CPUs)\n", strings.Join(strings.Fields(string(load))[:3], " "))
	}
	fmt.Println()
	b, err := newBench(ctx, cfg)
	if err != nil {
		return err
	}
	defer b.close()

	start := time.Now()
	if err := b.seed(ctx); err != nil {
		return err
	}
	fmt.Printf("seeded %d blogs (+ outbox events) in %s\n\n", cfg.blogs, time.Since(start).Round(time.Millisecond))

	queries := b.queries(2000)
	pg := search.NewPostgres(search.PostgresConfig{})
	b.searchRun(ctx, "postgres", pg, b.tn, queries, 1)
	res := b.searchRun(ctx, "postgres", pg, b.tn, queries, cfg.clients)
	verdict("postgres p99 <= 10ms on prefix queries", res.p99 <= 10*time.Millisecond, res.p99)

	if cfg.osURL == "" {
		fmt.Println("\nopensearch: skipped (no URL)")
		return nil
	}
	var sharedBytes int64
	for _, s := range []search.Strategy{search.PerTenant, search.Shared} {
		o, err := search.NewOpenSearch(search.OpenSearchConfig{
			Addresses: []string{cfg.osURL}, Strategy: s, IndexPrefix: b.prefix + "-" + string(s), Timeout: time.Minute,
		})
		if err != nil {
			return err
		}
		defer o.Close()
		tn := *b.tn
		if tn.SearchIndex, err = o.EnsureIndex(ctx, &tn); err != nil {
			return err
		}
		if err := b.enqueueAll(ctx); err != nil {
			return err
		}
		ix, err := search.NewIndexer(search.IndexerConfig{
			Search:  o,
			Tenants: search.TenantSourceFunc(func(context.Context) ([]*tenant.Tenant, error) { return []*tenant.Tenant{&tn}, nil }),
			Tx: search.TransactorFunc(func(ctx context.Context, _ *tenant.Tenant, fn func(pool.DB) error) error {
				return pgx.BeginFunc(ctx, b.pool, func(tx pgx.Tx) error { return fn(tx) })
			}),
		})
		if err != nil {
			return err
		}
		start := time.Now()
		n, err := ix.Drain(ctx, &tn)
		if err != nil {
			return fmt.Errorf("draining outbox into %s: %w", s, err)
		}
		elapsed := time.Since(start)
		if err := b.osPost(ctx, "/"+tn.SearchIndex+"/_refresh"); err != nil {
			return err
		}
		fmt.Printf("\nopensearch %s: indexed %d outbox events in %s: %.0f docs/s (bulk of 500, external versions)\n",
			s, n, elapsed.Round(time.Millisecond), float64(n)/elapsed.Seconds())
		b.searchRun(ctx, "opensearch "+string(s), o, &tn, queries, 1)
		b.searchRun(ctx, "opensearch "+string(s), o, &tn, queries, cfg.clients)
		if s == search.Shared {
			if sharedBytes, err = b.primaryBytes(ctx, o.SharedIndexName()); err != nil {
				return err
			}
		}
	}
	b.shardEstimate(sharedBytes)
	return nil
}

// bench holds the throwaway database, its tenant and the vocabulary of the blogs.
type bench struct {
	cfg     config
	dbURL   string // the throwaway database
	prefix  string // of index names
	prov    *provisioner.Provisioner
	control *pgxpool.Pool
	tn      *tenant.Tenant
	pool    *pgxpool.Pool // as the tenant
	words   []string
	zipf    *mrand.Zipf
	mu      sync.Mutex // guards zipf and rnd
	rnd     *mrand.Rand
}

func newBench(ctx context.Context, cfg config) (*bench, error) {
	suffix := randomHex(5)
	b := &bench{cfg: cfg, prefix: "bench-" + suffix}
	admin, err := pgx.Connect(ctx, cfg.dbURL)
	if err != nil {
		return nil, fmt.Errorf("connecting: %w", err)
	}
	defer admin.Close(ctx)
	name := "bench_search_" + suffix
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		return nil, fmt.Errorf("creating database: %w", err)
	}
	u, _ := url.Parse(cfg.dbURL)
	u.Path = "/" + name
	b.dbURL = u.String()
	if _, err := provisioner.MigrateShared(ctx, b.dbURL); err != nil {
		b.close()
		return nil, err
	}
	if b.control, err = pgxpool.New(ctx, b.dbURL); err != nil {
		b.close()
		return nil, err
	}
	store := tenant.NewStore(b.control)
	if b.prov, err = provisioner.New(store, provisioner.Config{Shards: []provisioner.Shard{{Name: "bench", URL: b.dbURL}}}); err != nil {
		b.close()
		return nil, err
	}
	tn, err := b.prov.Register(ctx, provisioner.CreateRequest{Slug: "bench", AdminEmail: "bench@example.com", AdminPasswordHash: "$argon2id$bench"})
	if err == nil {
		tn, err = b.prov.Provision(ctx, tn.ID)
	}
	if err != nil {
		b.close()
		return nil, fmt.Errorf("provisioning the tenant: %w", err)
	}
	b.tn = tn
	dsn, err := tn.ConnString(b.dbURL)
	if err != nil {
		b.close()
		return nil, err
	}
	pcfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		b.close()
		return nil, err
	}
	pcfg.MaxConns = int32(cfg.poolConns)
	if b.pool, err = pgxpool.NewWithConfig(ctx, pcfg); err != nil {
		b.close()
		return nil, err
	}
	b.rnd = mrand.New(mrand.NewPCG(1, 2))
	b.words = vocabulary(b.rnd, 5000)
	b.zipf = mrand.NewZipf(b.rnd, 1.1, 2, uint64(len(b.words)-1))
	return b, nil
}

// close drops everything the benchmark created.
func (b *bench) close() {
	if b.cfg.keep && b.tn != nil {
		dsn, _ := b.tn.ConnString(b.dbURL)
		fmt.Printf("\nkept: database %s (tenant DSN %s), indexes %s-*\n", b.dbURL, dsn, b.prefix)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if b.pool != nil {
		b.pool.Close()
	}
	if b.prov != nil {
		b.prov.Close()
	}
	if b.control != nil {
		b.control.Close()
	}
	if b.cfg.osURL != "" {
		req, _ := http.NewRequestWithContext(ctx, http.MethodDelete, strings.TrimRight(b.cfg.osURL, "/")+"/"+b.prefix+"-*", nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			_ = resp.Body.Close()
		}
	}
	if b.dbURL == "" {
		return
	}
	admin, err := pgx.Connect(ctx, b.cfg.dbURL)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench/search: cleaning up:", err)
		return
	}
	defer admin.Close(ctx)
	name := strings.TrimPrefix(mustParse(b.dbURL).Path, "/")
	if _, err := admin.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
		fmt.Fprintln(os.Stderr, "bench/search: dropping database:", err)
	}
	if b.tn != nil {
		_, _ = admin.Exec(ctx, "DROP ROLE IF EXISTS "+pgx.Identifier{b.tn.DBRole}.Sanitize())
	}
}

func mustParse(raw string) *url.URL {
	u, _ := url.Parse(raw)
	return u
}

// word returns a vocabulary word, common ones more often (Zipf).
func (b *bench) word() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.words[b.zipf.Uint64()]
}

func (b *bench) sentence(n int) string {
	ws := make([]string, n)
	for i := range ws {
		ws[i] = b.word()
	}
	s := strings.Join(ws, " ")
	return strings.ToUpper(s[:1]) + s[1:]
}

func (b *bench) intn(n int) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.rnd.IntN(n)
}

// seed inserts the blogs with COPY, with their outbox events as the dataplane would.
func (b *bench) seed(ctx context.Context) error {
	var author int64
	if err := b.pool.QueryRow(ctx, `SELECT id FROM users ORDER BY id LIMIT 1`).Scan(&author); err != nil {
		return fmt.Errorf("reading the admin user: %w", err)
	}
	rows := make([][]any, b.cfg.blogs)
	for i := range rows {
		rows[i] = []any{b.sentence(4 + b.intn(5)), b.sentence(20+b.intn(30)) + ".", author}
	}
	if _, err := b.pool.CopyFrom(ctx, pgx.Identifier{"blogs"}, []string{"title", "description", "author_id"}, pgx.CopyFromRows(rows)); err != nil {
		return fmt.Errorf("inserting blogs: %w", err)
	}
	if _, err := b.pool.Exec(ctx, `ANALYZE blogs`); err != nil {
		return fmt.Errorf("analyzing blogs: %w", err)
	}
	return nil
}

// enqueueAll records an upsert event for every blog.
func (b *bench) enqueueAll(ctx context.Context) error {
	_, err := b.pool.Exec(ctx, `INSERT INTO search_outbox (blog_id, op, version)
		SELECT id, 'upsert', (extract(epoch FROM clock_timestamp()) * 1000000)::bigint FROM blogs`)
	if err != nil {
		return fmt.Errorf("filling the outbox: %w", err)
	}
	return nil
}

// queries returns search-box inputs: mostly a prefix of a word as typed, some with a
// whole word before it.
func (b *bench) queries(n int) []string {
	out := make([]string, n)
	for i := range out {
		w := b.word()
		p := w[:min(len(w), 2+b.intn(4))]
		if b.intn(3) == 0 {
			p = b.word() + " " + p
		}
		out[i] = p
	}
	return out
}

type runResult struct {
	n             int
	p50, p99, max time.Duration
	qps           float64
	errors        int
	empty         int
}

type searcher interface {
	Search(ctx context.Context, t *tenant.Tenant, db pool.DB, q string, limit int) ([]search.Hit, error)
}

// searchRun runs the queries from clients goroutines for cfg.duration (or
// cfg.maxQueries queries) and prints the latency percentiles.
func (b *bench) searchRun(ctx context.Context, name string, s searcher, tn *tenant.Tenant, queries []string, clients int) runResult {
	// Warm up caches and connections.
	for _, q := range queries[:100] {
		_, _ = s.Search(ctx, tn, b.pool, q, 10)
	}
	var (
		mu        sync.Mutex
		latencies []time.Duration
		res       runResult
		wg        sync.WaitGroup
		next      int
	)
	deadline := time.Now().Add(b.cfg.duration)
	start := time.Now()
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				if next >= b.cfg.maxQueries || time.Now().After(deadline) {
					mu.Unlock()
					return
				}
				q := queries[next%len(queries)]
				next++
				mu.Unlock()
				t0 := time.Now()
				hits, err := s.Search(ctx, tn, b.pool, q, 10)
				d := time.Since(t0)
				mu.Lock()
				latencies = append(latencies, d)
				if err != nil {
					res.errors++
				} else if len(hits) == 0 {
					res.empty++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	slices.Sort(latencies)
	res.n = len(latencies)
	if res.n > 0 {
		res.p50 = latencies[res.n/2]
		res.p99 = latencies[min(res.n-1, int(math.Ceil(float64(res.n)*0.99))-1)]
		res.max = latencies[res.n-1]
	}
	res.qps = float64(res.n) / elapsed.Seconds()
	fmt.Printf("%-34s %6d queries  %7.0f q/s  p50 %-9s p99 %-9s max %-9s (%d errors, %d empty)\n",
		fmt.Sprintf("%s, %d client(s):", name, clients), res.n, res.qps, res.p50.Round(10*time.Microsecond), res.p99.Round(10*time.Microsecond),
		res.max.Round(10*time.Microsecond), res.errors, res.empty)
	return res
}

// primaryBytes returns the store size of the index's primary shards, after a flush.
func (b *bench) primaryBytes(ctx context.Context, index string) (int64, error) {
	if err := b.osPost(ctx, "/"+index+"/_flush"); err != nil {
		return 0, err
	}
	body, err := b.osGet(ctx, "/"+index+"/_stats/store,docs")
	if err != nil {
		return 0, err
	}
	var stats struct {
		All struct {
			Primaries struct {
				Docs  struct{ Count int64 } `json:"docs"`
				Store struct {
					Bytes int64 `json:"size_in_bytes"`
				} `json:"store"`
			} `json:"primaries"`
		} `json:"_all"`
	}
	if err := json.Unmarshal(body, &stats); err != nil {
		return 0, fmt.Errorf("reading index stats: %w", err)
	}
	fmt.Printf("shared index: %d documents, %s on primaries\n", stats.All.Primaries.Docs.Count, human(stats.All.Primaries.Store.Bytes))
	return stats.All.Primaries.Store.Bytes, nil
}

// shardEstimate prints the arithmetic of the shared index's shard count.
func (b *bench) shardEstimate(sharedBytes int64) {
	perTenant := float64(sharedBytes) // the shared index holds one tenant here
	total := perTenant * float64(b.cfg.tenants)
	fmt.Printf("\nshared strategy, shard count for %d tenants of %d blogs each:\n", b.cfg.tenants, b.cfg.blogs)
	fmt.Printf("  index size per tenant (measured): %s\n", human(int64(perTenant)))
	fmt.Printf("  total primary data: %s x %d = %s\n", human(int64(perTenant)), b.cfg.tenants, human(int64(total)))
	for _, gb := range b.cfg.shardGB {
		shards := int(math.Ceil(total / (gb * (1 << 30))))
		fmt.Printf("  at %.0f GB per shard: ceil(%s / %.0f GB) = %d primary shards\n", gb, human(int64(total)), gb, max(shards, 1))
	}
	avg := 1000
	small := total * float64(avg) / float64(b.cfg.blogs)
	fmt.Printf("  with %d blogs per tenant on average instead: %s, ceil(%s / 30 GB) = %d primary shard(s)\n",
		avg, human(int64(small)), human(int64(small)), max(int(math.Ceil(small/(30*(1<<30)))), 1))
	fmt.Printf("  per-tenant strategy for comparison: %d indexes x 1 primary x 2 copies (1 replica) = %d shards,\n"+
		"  %d nodes at the default limit of 1000 shards per node, and a cluster state of %d indexes\n",
		b.cfg.tenants, 2*b.cfg.tenants, cmp.Or(int(math.Ceil(float64(2*b.cfg.tenants)/1000)), 1), b.cfg.tenants)
}

func (b *bench) osPost(ctx context.Context, path string) error {
	_, err := b.osDo(ctx, http.MethodPost, path)
	return err
}

func (b *bench) osGet(ctx context.Context, path string) ([]byte, error) {
	return b.osDo(ctx, http.MethodGet, path)
}

func (b *bench) osDo(ctx context.Context, method, path string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(b.cfg.osURL, "/")+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode > 299 {
		return nil, fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, body)
	}
	return body, nil
}

func verdict(what string, ok bool, got time.Duration) {
	word := "MISS"
	if ok {
		word = "PASS"
	}
	fmt.Printf("  %s: %s (measured %s)\n", word, what, got.Round(10*time.Microsecond))
}

func human(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// vocabulary returns n distinct words: real ones first (the most frequent under
// Zipf), then pronounceable made-up ones.
func vocabulary(r *mrand.Rand, n int) []string {
	words := strings.Fields(`the postgres golang kubernetes search index tenant query cache latency
		database schema migration deploy cluster network service server client request response
		error handler router token user admin blog post title description notification socket
		stream queue worker job scheduler metric trace log alert config secret storage backup
		replica shard partition vacuum planner transaction lock commit rollback isolation pool
		connection timeout retry backoff circuit breaker proxy gateway ingress container image
		build release version feature flag test bench profile memory cpu thread goroutine channel
		mutex atomic interface struct method function closure generic slice map string byte rune`)
	seen := map[string]bool{}
	out := make([]string, 0, n)
	for _, w := range words {
		if !seen[w] {
			seen[w] = true
			out = append(out, w)
		}
	}
	cons, vows := "bcdfghklmnprstvz", "aeiou"
	for len(out) < n {
		var sb strings.Builder
		for range 2 + r.IntN(3) {
			sb.WriteByte(cons[r.IntN(len(cons))])
			sb.WriteByte(vows[r.IntN(len(vows))])
		}
		if w := sb.String(); !seen[w] {
			seen[w] = true
			out = append(out, w)
		}
	}
	return out
}
