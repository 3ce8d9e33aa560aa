// Command search benchmarks blog search (package dataplane/search) on loopback
// services, on the Postgres backend and on OpenSearch in both index strategies: search
// latency for one client and for many closed-loop clients; on Postgres and the shared
// strategy also an open-loop load at fixed rates, stopping at the first rate whose p99
// misses the target and reporting the highest that held; indexing throughput through
// the outbox; and the shard count the shared strategy needs for 10,000 tenants,
// reasoned from the index size measured per tenant. Each figure is the median of
// several runs. The queries mix what a search box sends (see queries): whole words,
// prefixes of 1 to 3 letters as they are typed, typos and words absent from the
// blogs (both run the Postgres typo fallback); the one-client run also reports each
// kind's percentiles, which is where a tail shows which step it comes from.
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
	"strconv"
	"strings"
	"sync"
	"syscall"
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
	runs       int
	rates      []float64
	openFor    time.Duration
	targetP99  time.Duration
	typos      float64
	absent     float64
}

func main() {
	var cfg config
	flag.StringVar(&cfg.dbURL, "db", os.Getenv("TENANTPLANE_TEST_DATABASE_URL"), "superuser URL of a loopback Postgres (default $TENANTPLANE_TEST_DATABASE_URL)")
	flag.StringVar(&cfg.osURL, "opensearch", os.Getenv("TENANTPLANE_TEST_OPENSEARCH_URL"), "loopback OpenSearch URL (default $TENANTPLANE_TEST_OPENSEARCH_URL; empty: Postgres only)")
	flag.IntVar(&cfg.blogs, "blogs", 10000, "blogs per tenant")
	flag.IntVar(&cfg.clients, "clients", 50, "concurrent search clients")
	flag.DurationVar(&cfg.duration, "duration", 3*time.Second, "length of each search run")
	flag.IntVar(&cfg.maxQueries, "max-queries", 50000, "most queries of each search run")
	flag.IntVar(&cfg.poolConns, "pool-conns", 10, "connections of the tenant's Postgres pool")
	flag.IntVar(&cfg.tenants, "tenants", 10000, "tenant count the shared-index shard estimate is made for")
	flag.BoolVar(&cfg.keep, "keep", false, "keep the database and indexes for inspection (prints where they are)")
	flag.IntVar(&cfg.runs, "runs", 3, "runs of each measurement; the median is reported")
	rates := flag.String("rates", "250,500,1000,2000,4000", "open-loop rates to try, queries/s, ascending (past 500, stops at the first whose p99 misses -target-p99)")
	flag.DurationVar(&cfg.openFor, "open-duration", 3*time.Second, "length of each open-loop run")
	flag.DurationVar(&cfg.targetP99, "target-p99", 20*time.Millisecond, "open-loop p99 a rate must stay within")
	flag.Float64Var(&cfg.typos, "typos", 0.1, "fraction of queries that are a whole word with two letters swapped (the typo fallback's work)")
	flag.Float64Var(&cfg.absent, "absent", 0.05, "fraction of queries that are a word no blog holds (the typo fallback finding nothing)")
	flag.Parse()
	for _, f := range strings.Split(*rates, ",") {
		r, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
		if err != nil || r <= 0 {
			fmt.Fprintf(os.Stderr, "bench/search: -rates: %q is not a positive number\n", f)
			os.Exit(2)
		}
		cfg.rates = append(cfg.rates, r)
	}
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
	fmt.Printf("search benchmark: %d blogs per tenant, 1 and %d closed-loop clients (runs of %s, at most %d queries),\n"+
		"open loop at fixed rates %v q/s (runs of %s); medians of %d runs; queries: %.0f%% typos, %.0f%% absent words,\n"+
		"%.0f%% whole words, %.0f%% prefixes of 1-3 letters as typed; a third after a whole word\n",
		cfg.blogs, cfg.clients, cfg.duration, cfg.maxQueries, cfg.rates, cfg.openFor, cfg.runs, 100*cfg.typos, 100*cfg.absent,
		100*(1-cfg.typos-cfg.absent)*wordShare, 100*(1-cfg.typos-cfg.absent)*(1-wordShare))
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
	b.profile(ctx, "postgres", pg, b.tn, queries, true)

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
		// The shared strategy is the one meant for many tenants: it gets the open-loop sweep.
		b.profile(ctx, "opensearch "+string(s), o, &tn, queries, s == search.Shared)
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

// Kinds of query, for the per-kind percentiles.
const (
	kindWord   = "whole word"
	kindPrefix = "prefix 1-3"
	kindTypo   = "typo"
	kindAbsent = "absent word"
)

// wordShare is the share of whole words among the queries that are not typos or
// absent words; the rest are prefixes.
const wordShare = 0.4

// benchQuery is one search-box input and its kind.
type benchQuery struct {
	text, kind string
}

// queries returns search-box inputs: whole words; prefixes of 1, 2 or 3 letters of a
// word, as a user types them (a 1-letter one searches nothing: MinPrefixLen); typos;
// words no blog holds. A third have a whole word before them.
func (b *bench) queries(n int) []benchQuery {
	out := make([]benchQuery, n)
	for i := range out {
		var q benchQuery
		switch r := float64(b.intn(1000)) / 1000; {
		case r < b.cfg.typos:
			q = benchQuery{typo(b.longWord()), kindTypo}
		case r < b.cfg.typos+b.cfg.absent:
			q = benchQuery{b.absentWord(), kindAbsent}
		case r < b.cfg.typos+b.cfg.absent+(1-b.cfg.typos-b.cfg.absent)*wordShare:
			q = benchQuery{b.word(), kindWord}
		default:
			w := b.word()
			q = benchQuery{w[:min(len(w), 1+b.intn(3))], kindPrefix}
		}
		if b.intn(3) == 0 {
			q.text = b.word() + " " + q.text
		}
		out[i] = q
	}
	return out
}

// absentWord returns a word of the vocabulary's shape that no blog holds.
func (b *bench) absentWord() string {
	for {
		w := "zy" + b.words[100+b.intn(len(b.words)-100)]
		if !slices.Contains(b.words, w) {
			return w
		}
	}
}

// longWord returns a vocabulary word of at least 5 letters, common ones more often.
func (b *bench) longWord() string {
	for {
		if w := b.word(); len(w) >= 5 {
			return w
		}
	}
}

// typo swaps two letters in the middle of w, as a fast typist does ("postgers").
func typo(w string) string {
	r := []byte(w)
	i := len(r) / 2
	r[i], r[i+1] = r[i+1], r[i]
	return string(r)
}

type runResult struct {
	n             int
	p50, p99, max time.Duration
	qps           float64
	errors        int
	empty         int
	dropped       int // open loop: queries not sent because too many were in flight
	// CPU time per query of the Postgres backends and of this process (the search
	// package's own work, pgx and the load generator): on a shared machine these move
	// less than latencies do.
	dbCPU, selfCPU time.Duration
	// byKind holds the latencies of each kind of query (closed loop; every run's, when
	// runs are repeated).
	byKind map[string][]time.Duration
}

type searcher interface {
	Search(ctx context.Context, t *tenant.Tenant, db pool.DB, q string, limit int) ([]search.Hit, error)
}

// profile measures one backend: one closed-loop client, cfg.clients of them and, with
// sweep, the open-loop rates up to the first whose p99 misses cfg.targetP99. Every
// figure is the median of cfg.runs runs.
func (b *bench) profile(ctx context.Context, name string, s searcher, tn *tenant.Tenant, queries []benchQuery, sweep bool) {
	// Warm up caches and connections.
	for _, q := range queries[:200] {
		_, _ = s.Search(ctx, tn, b.pool, q.text, 10)
	}
	one := b.repeat(func() runResult { return b.closedLoop(ctx, s, tn, queries, 1) })
	printRun(fmt.Sprintf("%s, 1 client:", name), one)
	printKinds(one)
	many := b.repeat(func() runResult { return b.closedLoop(ctx, s, tn, queries, b.cfg.clients) })
	printRun(fmt.Sprintf("%s, %d clients:", name, b.cfg.clients), many)
	if !sweep {
		return
	}
	verdict(name+" one client p99 <= 5ms", one.p99 <= 5*time.Millisecond, one.p99)
	// The rates up to 500 q/s (the target's) always run; past the first miss, no more.
	best, at500, missed := 0.0, time.Duration(-1), false
	for _, rate := range b.cfg.rates {
		if missed && rate > 500 {
			break
		}
		r := b.repeat(func() runResult { return b.openLoop(ctx, s, tn, queries, rate) })
		printRun(fmt.Sprintf("%s, open loop %.0f q/s:", name, rate), r)
		if rate == 500 {
			at500 = r.p99
		}
		if r.p99 > b.cfg.targetP99 || r.dropped > 0 {
			missed = true
		} else if !missed {
			best = rate
		}
	}
	if at500 >= 0 {
		verdict(name+" open loop 500 q/s p99 <= 20ms", at500 <= 20*time.Millisecond, at500)
	}
	fmt.Printf("  %s: highest open-loop rate tried with p99 <= %s: %.0f q/s\n", name, b.cfg.targetP99, best)
}

// repeat runs f cfg.runs times and returns the median of each figure.
func (b *bench) repeat(f func() runResult) runResult {
	var rs []runResult
	for range max(b.cfg.runs, 1) {
		rs = append(rs, f())
	}
	med := func(get func(runResult) float64) float64 {
		vs := make([]float64, len(rs))
		for i, r := range rs {
			vs[i] = get(r)
		}
		slices.Sort(vs)
		return vs[len(vs)/2]
	}
	dur := func(get func(runResult) time.Duration) time.Duration {
		return time.Duration(med(func(r runResult) float64 { return float64(get(r)) }))
	}
	cnt := func(get func(runResult) int) int {
		return int(med(func(r runResult) float64 { return float64(get(r)) }))
	}
	byKind := map[string][]time.Duration{}
	for _, r := range rs {
		for k, ls := range r.byKind {
			byKind[k] = append(byKind[k], ls...)
		}
	}
	return runResult{
		byKind:  byKind,
		n:       cnt(func(r runResult) int { return r.n }),
		p50:     dur(func(r runResult) time.Duration { return r.p50 }),
		p99:     dur(func(r runResult) time.Duration { return r.p99 }),
		max:     dur(func(r runResult) time.Duration { return r.max }),
		qps:     med(func(r runResult) float64 { return r.qps }),
		errors:  cnt(func(r runResult) int { return r.errors }),
		empty:   cnt(func(r runResult) int { return r.empty }),
		dropped: cnt(func(r runResult) int { return r.dropped }),
		dbCPU:   dur(func(r runResult) time.Duration { return r.dbCPU }),
		selfCPU: dur(func(r runResult) time.Duration { return r.selfCPU }),
	}
}

func printRun(label string, r runResult) {
	fmt.Printf("%-40s %6d queries  %7.0f q/s  p50 %-9s p99 %-9s max %-9s (%d errors, %d empty",
		label, r.n, r.qps, r.p50.Round(10*time.Microsecond), r.p99.Round(10*time.Microsecond),
		r.max.Round(10*time.Microsecond), r.errors, r.empty)
	if r.dropped > 0 {
		fmt.Printf(", %d not sent: too many in flight", r.dropped)
	}
	fmt.Printf(") cpu/query: db %s, bench %s\n", r.dbCPU.Round(time.Microsecond), r.selfCPU.Round(time.Microsecond))
}

// printKinds prints the percentiles of each kind of query of r.
func printKinds(r runResult) {
	for _, k := range []string{kindWord, kindPrefix, kindTypo, kindAbsent} {
		ls := r.byKind[k]
		if len(ls) == 0 {
			continue
		}
		sum := summarize(ls, time.Second)
		fmt.Printf("  %-38s %6d queries  p50 %-9s p99 %-9s max %s\n", k+":", sum.n,
			sum.p50.Round(10*time.Microsecond), sum.p99.Round(10*time.Microsecond), sum.max.Round(10*time.Microsecond))
	}
}

// closedLoop runs the queries from clients goroutines, each sending its next query when
// the last one answered, for cfg.duration (or cfg.maxQueries queries).
func (b *bench) closedLoop(ctx context.Context, s searcher, tn *tenant.Tenant, queries []benchQuery, clients int) runResult {
	var (
		mu        sync.Mutex
		latencies []time.Duration
		byKind    = map[string][]time.Duration{}
		errs      int
		empty     int
		wg        sync.WaitGroup
		next      int
	)
	cpu := b.cpuNow(ctx)
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
				hits, err := s.Search(ctx, tn, b.pool, q.text, 10)
				d := time.Since(t0)
				mu.Lock()
				latencies = append(latencies, d)
				byKind[q.kind] = append(byKind[q.kind], d)
				if err != nil {
					errs++
				} else if len(hits) == 0 {
					empty++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	res := summarize(latencies, time.Since(start))
	res.errors, res.empty, res.byKind = errs, empty, byKind
	res.dbCPU, res.selfCPU = b.cpuPerQuery(ctx, cpu, res.n)
	return res
}

// maxInFlight bounds the open loop's concurrent queries: past it the backend has fallen
// behind for good and the rate is missed.
const maxInFlight = 1000

// openLoop sends queries at a fixed rate for cfg.openFor (at most cfg.maxQueries),
// whether or not earlier ones have answered, and measures each from the moment it was
// due, so a backend that falls behind is charged for the queueing it causes.
func (b *bench) openLoop(ctx context.Context, s searcher, tn *tenant.Tenant, queries []benchQuery, rate float64) runResult {
	n := min(int(rate*b.cfg.openFor.Seconds()), b.cfg.maxQueries)
	interval := time.Duration(float64(time.Second) / rate)
	ctx, cancel := context.WithTimeout(ctx, b.cfg.openFor+30*time.Second)
	defer cancel()
	var (
		mu        sync.Mutex
		latencies = make([]time.Duration, 0, n)
		errs      int
		empty     int
		dropped   int
		wg        sync.WaitGroup
	)
	sem := make(chan struct{}, maxInFlight)
	cpu := b.cpuNow(ctx)
	start := time.Now()
	for i := range n {
		due := start.Add(time.Duration(i) * interval)
		if d := time.Until(due); d > 0 {
			time.Sleep(d)
		}
		select {
		case sem <- struct{}{}:
		default:
			dropped++
			continue
		}
		wg.Add(1)
		go func(q string) {
			defer wg.Done()
			defer func() { <-sem }()
			hits, err := s.Search(ctx, tn, b.pool, q, 10)
			d := time.Since(due)
			mu.Lock()
			defer mu.Unlock()
			latencies = append(latencies, d)
			if err != nil {
				errs++
			} else if len(hits) == 0 {
				empty++
			}
		}(queries[i%len(queries)].text)
	}
	wg.Wait()
	res := summarize(latencies, time.Since(start))
	res.errors, res.empty, res.dropped = errs, empty, dropped
	res.dbCPU, res.selfCPU = b.cpuPerQuery(ctx, cpu, res.n)
	return res
}

// cpuSnapshot is the CPU time used so far by this process and by each Postgres backend
// of the tenant's pool.
type cpuSnapshot struct {
	self time.Duration
	db   map[int]time.Duration
}

// cpuNow reads the CPU times of this process and of the tenant pool's backends (Postgres
// runs on this machine: the benchmark is loopback only). Unreadable ones count as 0.
func (b *bench) cpuNow(ctx context.Context) cpuSnapshot {
	snap := cpuSnapshot{db: map[int]time.Duration{}}
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		snap.self = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	// The tenant pool's connections, which run the searches; not autovacuum or the
	// control connections.
	rows, err := b.control.Query(ctx, `SELECT pid FROM pg_stat_activity
		WHERE datname = current_database() AND backend_type = 'client backend' AND usename = $1`, b.tn.DBRole)
	if err != nil {
		return snap
	}
	pids, _ := pgx.CollectRows(rows, pgx.RowTo[int32])
	for _, pid := range pids {
		snap.db[int(pid)] = procCPU(int(pid))
	}
	return snap
}

// cpuPerQuery returns the CPU time per query of the backends and of this process since
// before, over n queries.
func (b *bench) cpuPerQuery(ctx context.Context, before cpuSnapshot, n int) (db, self time.Duration) {
	if n == 0 {
		return 0, 0
	}
	after := b.cpuNow(ctx)
	for pid, t := range after.db {
		db += t - before.db[pid] // a backend started during the run counts from 0
	}
	return db / time.Duration(n), (after.self - before.self) / time.Duration(n)
}

// procCPU returns the user and system CPU time of process pid from /proc, 0 when it
// cannot be read.
func procCPU(pid int) time.Duration {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	// Fields after the parenthesized command name: state is field 3, utime 14, stime 15.
	i := strings.LastIndexByte(string(data), ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	const ticksPerSecond = 100 // USER_HZ on Linux
	return time.Duration(ut+st) * time.Second / ticksPerSecond
}

// summarize returns the count, percentiles and rate of latencies measured over elapsed.
func summarize(latencies []time.Duration, elapsed time.Duration) runResult {
	slices.Sort(latencies)
	res := runResult{n: len(latencies)}
	if res.n > 0 {
		res.p50 = latencies[res.n/2]
		res.p99 = latencies[min(res.n-1, int(math.Ceil(float64(res.n)*0.99))-1)]
		res.max = latencies[res.n-1]
	}
	res.qps = float64(res.n) / elapsed.Seconds()
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
