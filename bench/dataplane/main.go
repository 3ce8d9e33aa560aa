// Command dataplane measures the dataplane's request path against raw pgx.
//
// It creates a throwaway database on the Postgres cluster named by -db (a superuser URL
// on a loopback address), provisions tenants through the provisioner and serves the
// dataplane over loopback HTTP. Then:
//
//  1. blog read: GET /api/v1/blogs/{id} with a valid token, -clients concurrent clients,
//     -requests requests, against a raw pgx program running the same SELECT on the same
//     tenant schema with as many connections as the tenant's pool: throughput and p99;
//  2. many tenants: the same read over -tenants tenants in a uniform mix (more than the
//     pool LRU holds) against one tenant, with the most Postgres backends seen, in both
//     pool modes (dedicated, and the default shared gateway pools); in the default mode
//     also a Zipf(s=1.1) mix, and one tenant against the dedicated mode;
//  3. JWT verification cost and argon2id (OWASP parameters) password checks per second.
//
// Each measurement runs -runs times; medians are printed with the targets. Targets are
// informational: the exit status is 0 unless the run itself fails. The database and
// every role it made are dropped at the end.
//
//	scripts/test-services.sh --pg -- go run ./bench/dataplane -tenants 1000
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tenantplane/tenantplane/dataplane"
	"github.com/tenantplane/tenantplane/dataplane/blogs"
	"github.com/tenantplane/tenantplane/dataplane/pool"
	"github.com/tenantplane/tenantplane/password"
	"github.com/tenantplane/tenantplane/provisioner"
	"github.com/tenantplane/tenantplane/tenant"
	"github.com/tenantplane/tenantplane/token"
)

// Targets.
const (
	targetReadRatio = 0.70 // dataplane blog read vs raw pgx throughput
	targetManyRatio = 0.85 // many tenants (uniform) vs one tenant throughput
	targetZipfRatio = 0.90 // many tenants (Zipf) vs one tenant throughput
	targetOneRatio  = 0.90 // one tenant, default (shared) vs dedicated mode
	zipfS           = 1.1  // the Zipf mix's exponent
	targetBackends  = 40   // most Postgres backends with many tenants
)

// adminHash stands in for the admin's password hash; the bench issues tokens directly.
const adminHash = "$argon2id$v=19$m=1024,t=1,p=1$YmVuY2hzYWx0YmVuY2hzYWx0$YmVuY2hoYXNoYmVuY2hoYXNoYmVuY2hoYXNo"

type options struct {
	dbURL    string
	clients  int
	requests int
	tenants  int
	runs     int
	conns    int32
	timeout  time.Duration

	cpuProfile string
}

func main() {
	var o options
	flag.StringVar(&o.dbURL, "db", os.Getenv("TENANTPLANE_TEST_DATABASE_URL"), "superuser URL of a loopback Postgres cluster (default $TENANTPLANE_TEST_DATABASE_URL)")
	flag.IntVar(&o.clients, "clients", 16, "concurrent clients")
	flag.IntVar(&o.requests, "requests", 20000, "requests per measurement (1-1000000)")
	flag.IntVar(&o.tenants, "tenants", 1000, "tenants of the many-tenants mixes (2-10000)")
	flag.IntVar(&o.runs, "runs", 3, "runs of each measurement (1-9); medians are reported")
	conns := flag.Int("conns", 4, "connections per tenant pool, and of the raw pgx pool")
	flag.DurationVar(&o.timeout, "timeout", 20*time.Minute, "give up after this long")
	flag.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of the blog read measurements to this file")
	flag.Parse()
	o.conns = int32(*conns)
	if o.clients < 1 || o.clients > 256 || o.requests < 1 || o.requests > 1000000 || o.tenants < 2 || o.tenants > 10000 ||
		o.runs < 1 || o.runs > 9 || o.conns < 1 || o.conns > 40 {
		fmt.Fprintln(os.Stderr, "dataplane bench: a flag is out of range (see -h)")
		os.Exit(2)
	}
	gin.SetMode(gin.ReleaseMode)
	if err := run(o, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "dataplane bench:", err)
		os.Exit(1)
	}
}

func run(o options, out io.Writer) error {
	if o.dbURL == "" {
		return errors.New("no database: set TENANTPLANE_TEST_DATABASE_URL or -db")
	}
	if err := loopbackOnly(o.dbURL); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()
	b, err := newBench(ctx, o)
	if err != nil {
		return err
	}
	defer b.close()

	fmt.Fprintf(out, "dataplane bench: %d clients, %d requests per measurement, %d runs, %d conns per tenant pool, GOMAXPROCS %d\n",
		o.clients, o.requests, o.runs, o.conns, runtime.GOMAXPROCS(0))

	// 1. Blog read: dataplane over HTTP vs raw pgx.
	one := b.tenants[0]
	if o.cpuProfile != "" {
		f, err := os.Create(o.cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
	}
	var raw, viaHTTP, floor []result
	for range o.runs {
		f, err := b.httpLoad(ctx, dataplane.Config{}, []*benchTenant{one}, "/healthz", false)
		if err != nil {
			return err
		}
		floor = append(floor, f)
		r, err := b.rawRead(ctx, one)
		if err != nil {
			return err
		}
		raw = append(raw, r)
		h, err := b.httpRead(ctx, dataplane.Config{}, []*benchTenant{one}, false)
		if err != nil {
			return err
		}
		viaHTTP = append(viaHTTP, h)
	}
	pprof.StopCPUProfile()
	rr, hr := median(raw), median(viaHTTP)
	fmt.Fprintf(out, "\n1. GET /api/v1/blogs/{id}, one tenant\n")
	fmt.Fprintf(out, "   raw pgx (same SELECT, %d conns): %s\n", o.conns, rr)
	fmt.Fprintf(out, "   dataplane over HTTP:             %s\n", hr)
	fl := median(floor)
	ceiling := 1 / (1/fl.rps + 1/rr.rps)
	fmt.Fprintf(out, "   (HTTP alone, GET /healthz:       %s)\n", fl)
	fmt.Fprintf(out, "   (HTTP and the query costs added up on these cores: %.0f req/s, ratio %.2f at best)\n", ceiling, ceiling/rr.rps)
	fmt.Fprintf(out, "   throughput ratio %.2f (target >= %.2f): %s; p99 ratio %.1fx\n",
		hr.rps/rr.rps, targetReadRatio, verdict(hr.rps/rr.rps >= targetReadRatio), float64(hr.p99)/float64(rr.p99))

	// 2. Many tenants vs one, in both pool modes; then a Zipf mix in the default mode.
	fmt.Fprintf(out, "\n2. %d tenants in a uniform mix vs one tenant (pool LRU 100, budget %d)\n", len(b.tenants), targetBackends)
	fmt.Fprintf(out, "   %d tenants provisioned in %v (provisioner, %d in parallel)\n", len(b.tenants), b.provisionTime.Round(time.Millisecond), provisionParallel)
	singles := map[tenant.PoolMode]result{}
	for _, mode := range []tenant.PoolMode{tenant.PoolDedicated, ""} {
		cfg := dataplane.Config{PoolMode: mode, MaxPools: 100, ConnBudget: targetBackends}
		var single, many, zipf []result
		for range o.runs {
			r1, err := b.httpRead(ctx, cfg, []*benchTenant{one}, false)
			if err != nil {
				return err
			}
			single = append(single, r1)
			rm, err := b.httpRead(ctx, cfg, b.tenants, false)
			if err != nil {
				return err
			}
			many = append(many, rm)
			if mode == "" {
				rz, err := b.httpRead(ctx, cfg, b.tenants, true)
				if err != nil {
					return err
				}
				zipf = append(zipf, rz)
			}
		}
		m1, mm := median(single), median(many)
		singles[mode] = m1
		most := 0
		for _, r := range append(append(single, many...), zipf...) {
			most = max(most, r.backends)
		}
		name := "dedicated pools (tenant role + search_path at connect)"
		if mode == "" {
			name = "default: shared gateway pools (set_config role/search_path per transaction, pipelined)"
		}
		fmt.Fprintf(out, "   %s\n", name)
		fmt.Fprintf(out, "     one tenant:  %s\n", m1)
		fmt.Fprintf(out, "     %d tenants: %s; pool misses %d, evictions %d, budget waits %d\n", len(b.tenants), mm, mm.stats.Misses, mm.stats.Evictions, mm.stats.Waits)
		fmt.Fprintf(out, "     ratio %.2f (target >= %.2f): %s; most backends %d (target <= %d): %s\n",
			mm.rps/m1.rps, targetManyRatio, verdict(mm.rps/m1.rps >= targetManyRatio), most, targetBackends, verdict(most <= targetBackends))
		if mode == "" {
			mz := median(zipf)
			fmt.Fprintf(out, "     %d tenants, Zipf(s=%.1f): %s\n", len(b.tenants), zipfS, mz)
			fmt.Fprintf(out, "     ratio %.2f (target >= %.2f): %s\n", mz.rps/m1.rps, targetZipfRatio, verdict(mz.rps/m1.rps >= targetZipfRatio))
			fmt.Fprintf(out, "     one tenant, default vs dedicated: ratio %.2f (target >= %.2f): %s\n",
				m1.rps/singles[tenant.PoolDedicated].rps, targetOneRatio, verdict(m1.rps/singles[tenant.PoolDedicated].rps >= targetOneRatio))
		}
	}

	// 3. JWT verification and argon2id.
	fmt.Fprintf(out, "\n3. auth costs\n")
	tok, _, err := b.issuer.Issue(token.Access, "1", one.t.ID, token.Claims{})
	if err != nil {
		return err
	}
	for _, v := range []struct {
		name  string
		cache int
	}{{"first use (parse + HMAC)", -1}, {"again (verified-token cache)", 0}} {
		issuer := token.NewIssuer(b.ring, token.Config{CacheSize: v.cache})
		br := testing.Benchmark(func(tb *testing.B) {
			for tb.Loop() {
				if _, err := issuer.Verify(tok, token.Access, one.t.ID); err != nil {
					tb.Fatal(err)
				}
			}
		})
		fmt.Fprintf(out, "   JWT verify (HS256), %s: %d ns/op, %d allocs/op\n", v.name, br.NsPerOp(), br.AllocsPerOp())
	}
	perSec, err := argonRate(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "   argon2id verify (m=19 MiB, t=2, p=1, %d at once): %.1f logins/s\n", runtime.NumCPU(), perSec)
	return nil
}

func verdict(ok bool) string {
	if ok {
		return "PASS"
	}
	return "MISS"
}

// loopbackOnly refuses a database that is not on this machine.
func loopbackOnly(dbURL string) error {
	cfg, err := pgx.ParseConfig(dbURL)
	if err != nil {
		return fmt.Errorf("parsing database url: %w", err)
	}
	if strings.HasPrefix(cfg.Host, "/") || cfg.Host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(cfg.Host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("database host %q is not a loopback address", cfg.Host)
}

type benchTenant struct {
	t     *tenant.Tenant
	token string
}

type bench struct {
	o             options
	adminURL      string
	dbURL         string
	dbName        string
	db            *pgxpool.Pool
	store         *tenant.Store
	ring          *token.KeyRing
	issuer        *token.Issuer
	hasher        *password.Hasher
	tenants       []*benchTenant
	provisionTime time.Duration
}

const provisionParallel = 8

func newBench(ctx context.Context, o options) (*bench, error) {
	b := &bench{o: o, adminURL: o.dbURL}
	rnd := make([]byte, 5)
	_, _ = rand.Read(rnd)
	b.dbName = "bench_dataplane_" + hex.EncodeToString(rnd)
	conn, err := pgx.Connect(ctx, o.dbURL)
	if err != nil {
		return nil, fmt.Errorf("connecting: %w", err)
	}
	_, err = conn.Exec(ctx, "CREATE DATABASE "+b.dbName)
	_ = conn.Close(ctx)
	if err != nil {
		return nil, fmt.Errorf("creating database: %w", err)
	}
	u, _ := url.Parse(o.dbURL)
	u.Path = "/" + b.dbName
	b.dbURL = u.String()
	if err := b.init(ctx); err != nil {
		b.close()
		return nil, err
	}
	return b, nil
}

func (b *bench) init(ctx context.Context) error {
	if _, err := provisioner.MigrateShared(ctx, b.dbURL); err != nil {
		return fmt.Errorf("migrating registry: %w", err)
	}
	var err error
	if b.db, err = pgxpool.New(ctx, b.dbURL); err != nil {
		return err
	}
	b.store = tenant.NewStore(b.db)
	ring, err := token.ParseKeyRing("bench:" + strings.Repeat("k", 40))
	if err != nil {
		return err
	}
	b.ring = ring
	b.issuer = token.NewIssuer(ring, token.Config{AccessTTL: 2 * time.Hour}) // outlives provisioning and every run
	b.hasher = password.NewHasher(password.Params{Memory: 1024, Time: 1, Threads: 1, KeyLen: 32, SaltLen: 16}, 0)
	prov, err := provisioner.New(b.store, provisioner.Config{Shards: []provisioner.Shard{{Name: "main", URL: b.dbURL}}, Parallel: provisionParallel})
	if err != nil {
		return err
	}
	defer prov.Close()
	start := time.Now()
	b.tenants = make([]*benchTenant, b.o.tenants)
	errs := make(chan error, b.o.tenants)
	sem := make(chan struct{}, provisionParallel)
	var wg sync.WaitGroup
	for i := range b.o.tenants {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			bt, err := b.provision(ctx, prov, fmt.Sprintf("bench-%04d", i))
			if err != nil {
				errs <- err
				return
			}
			b.tenants[i] = bt
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	b.provisionTime = time.Since(start)
	return nil
}

// provision makes an active tenant with one blog by its admin, and a token for the admin.
func (b *bench) provision(ctx context.Context, prov *provisioner.Provisioner, slug string) (*benchTenant, error) {
	reg, err := prov.Register(ctx, provisioner.CreateRequest{Slug: slug, AdminEmail: "admin@" + slug + ".example", AdminPasswordHash: adminHash})
	if err != nil {
		return nil, fmt.Errorf("registering %s: %w", slug, err)
	}
	t, err := prov.Provision(ctx, reg.ID)
	if err != nil {
		return nil, fmt.Errorf("provisioning %s: %w", slug, err)
	}
	if t.Status != tenant.StatusActive {
		return nil, fmt.Errorf("tenant %s is %s: %s", slug, t.Status, t.LastError)
	}
	_, err = b.db.Exec(ctx, `INSERT INTO `+pgx.Identifier{t.SchemaName, "blogs"}.Sanitize()+` (title, description, author_id)
		VALUES ($1, $2, 1)`, "Hello from "+slug, strings.Repeat("A blog description of moderate length. ", 10))
	if err != nil {
		return nil, fmt.Errorf("creating blog of %s: %w", slug, err)
	}
	tok, _, err := b.issuer.Issue(token.Access, "1", t.ID, token.Claims{Admin: true})
	if err != nil {
		return nil, err
	}
	return &benchTenant{t: t, token: tok}, nil
}

func (b *bench) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var roles []string
	if b.db != nil {
		if rows, err := b.db.Query(ctx, `SELECT db_role FROM tenants`); err == nil {
			roles, _ = pgx.CollectRows(rows, pgx.RowTo[string])
		}
		b.db.Close()
	}
	conn, err := pgx.Connect(ctx, b.adminURL)
	if err != nil {
		fmt.Fprintln(os.Stderr, "dataplane bench: cleaning up:", err)
		return
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+b.dbName+" WITH (FORCE)"); err != nil {
		fmt.Fprintln(os.Stderr, "dataplane bench: dropping database:", err)
	}
	for _, r := range roles {
		if _, err := conn.Exec(ctx, "DROP ROLE IF EXISTS "+pgx.Identifier{r}.Sanitize()); err != nil {
			fmt.Fprintln(os.Stderr, "dataplane bench: dropping role:", err)
		}
	}
}

// result is one measurement.
type result struct {
	rps      float64
	p50, p99 time.Duration
	backends int // most dataplane backends seen
	stats    pool.Stats
}

func (r result) String() string {
	return fmt.Sprintf("%8.0f req/s, p50 %v, p99 %v", r.rps, r.p50.Round(time.Microsecond), r.p99.Round(time.Microsecond))
}

// median returns the run with the median throughput.
func median(rs []result) result {
	s := slices.Clone(rs)
	slices.SortFunc(s, func(a, b result) int {
		switch {
		case a.rps < b.rps:
			return -1
		case a.rps > b.rps:
			return 1
		}
		return 0
	})
	return s[len(s)/2]
}

// load runs o.requests calls of do over o.clients goroutines and measures them.
func (b *bench) load(ctx context.Context, n int, do func(ctx context.Context, i int) error) (result, error) {
	lat := make([]time.Duration, n)
	var next atomic.Int64
	var firstErr error
	var once sync.Once
	start := time.Now()
	var wg sync.WaitGroup
	for range b.o.clients {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n || ctx.Err() != nil {
					return
				}
				t0 := time.Now()
				if err := do(ctx, i); err != nil {
					once.Do(func() { firstErr = err })
					return
				}
				lat[i] = time.Since(t0)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	if firstErr != nil {
		return result{}, firstErr
	}
	slices.Sort(lat)
	pct := func(p float64) time.Duration { return lat[int(math.Ceil(p*float64(len(lat))))-1] }
	return result{rps: float64(len(lat)) / elapsed.Seconds(), p50: pct(0.50), p99: pct(0.99)}, nil
}

// rawRead runs the blog read's SELECT straight on the tenant's schema with pgx.
func (b *bench) rawRead(ctx context.Context, bt *benchTenant) (result, error) {
	dsn, err := bt.t.ConnString(b.dbURL)
	if err != nil {
		return result{}, err
	}
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return result{}, err
	}
	cfg.MaxConns = b.o.conns
	p, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return result{}, err
	}
	defer p.Close()
	if _, err := b.load(ctx, b.o.requests/4, func(ctx context.Context, _ int) error { // warm up
		return p.Ping(ctx)
	}); err != nil {
		return result{}, err
	}
	return b.load(ctx, b.o.requests, func(ctx context.Context, _ int) error {
		var bl blogs.Blog
		return p.QueryRow(ctx, rawGetQuery, int64(1)).Scan(&bl.ID, &bl.Title, &bl.Description, &bl.Author.ID, &bl.Author.Email, &bl.CreatedAt, &bl.UpdatedAt)
	})
}

// rawGetQuery is the statement the dataplane's GET /blogs/{id} runs, for the raw-pool
// baseline.
const rawGetQuery = `SELECT b.id, b.title, b.description, b.author_id, u.email, b.created_at, b.updated_at
	FROM blogs b JOIN users u ON u.id = b.author_id WHERE b.id = $1`

// httpRead serves a fresh dataplane on loopback and reads the blogs of the tenants, in a
// uniform or Zipf mix, through it.
func (b *bench) httpRead(ctx context.Context, cfg dataplane.Config, ts []*benchTenant, zipf bool) (result, error) {
	return b.httpLoad(ctx, cfg, ts, "/api/v1/blogs/1", zipf)
}

// httpLoad serves a fresh dataplane on loopback and GETs path with the token of a
// tenant of ts (a uniform or Zipf mix) through it.
func (b *bench) httpLoad(ctx context.Context, cfg dataplane.Config, ts []*benchTenant, path string, zipf bool) (result, error) {
	cfg.Shards = map[string]string{"main": b.dbURL}
	cfg.BaseDomain = "bench.test"
	cfg.PerTenantConns = b.o.conns
	cfg.Logger = slog.New(slog.DiscardHandler)
	cfg.Control = b.db
	srv, err := dataplane.New(cfg, b.store, b.issuer, b.hasher)
	if err != nil {
		return result{}, err
	}
	if err := srv.Start(ctx); err != nil {
		return result{}, err
	}
	defer srv.Stop()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return result{}, err
	}
	hs := &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = hs.Serve(ln) }()
	defer hs.Close()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: b.o.clients, MaxConnsPerHost: b.o.clients}, Timeout: 30 * time.Second}
	defer client.CloseIdleConnections()
	base := "http://" + ln.Addr().String() + path

	stop := make(chan struct{})
	most := make(chan int, 1)
	go func() { most <- b.sampleBackends(stop) }()
	n := b.o.requests
	if cfg.PoolMode == tenant.PoolDedicated && len(ts) > 100 {
		// Every request opens a connection: a smaller count measures it as well.
		n = min(n, 2000)
	}
	seq := make([]int, n+n/4) // the tenant of each request: the same in every run
	rng := mrand.New(mrand.NewPCG(1, 2))
	z := mrand.NewZipf(rng, zipfS, 1, uint64(len(ts)-1))
	for i := range seq {
		if zipf {
			seq[i] = int(z.Uint64())
		} else {
			seq[i] = rng.IntN(len(ts))
		}
	}
	get := func(ctx context.Context, i int) error {
		bt := ts[seq[i]]
		req, err := http.NewRequestWithContext(ctx, "GET", base, nil)
		if err != nil {
			return err
		}
		req.Host = bt.t.Slug + ".bench.test"
		req.Header.Set("Authorization", "Bearer "+bt.token)
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET %s of %s: status %d", path, bt.t.Slug, resp.StatusCode)
		}
		return nil
	}
	// Warm up (connections, caches) with a quarter as many requests, then measure.
	if _, err := b.load(ctx, n/4, func(ctx context.Context, i int) error { return get(ctx, n+i) }); err != nil {
		close(stop)
		<-most
		return result{}, err
	}
	r, err := b.load(ctx, n, get)
	close(stop)
	r.backends = <-most
	st := srv.PoolStats()
	r.stats = st
	return r, err
}

// sampleBackends returns the most dataplane backends seen until stop closes.
func (b *bench) sampleBackends(stop <-chan struct{}) int {
	most := 0
	for {
		select {
		case <-stop:
			return most
		case <-time.After(20 * time.Millisecond):
		}
		var n int
		if err := b.db.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND application_name = 'tenantplane-dataplane'`).Scan(&n); err == nil {
			most = max(most, n)
		}
	}
}

// argonRate measures argon2id password checks per second with the OWASP parameters and
// as many at once as there are CPUs.
func argonRate(ctx context.Context) (float64, error) {
	h := password.NewHasher(password.OWASP, 0)
	hash, err := h.Hash(ctx, "correct horse battery")
	if err != nil {
		return 0, err
	}
	const n = 40
	start := time.Now()
	var wg sync.WaitGroup
	jobs := make(chan struct{}, n)
	for range n {
		jobs <- struct{}{}
	}
	close(jobs)
	var failed atomic.Bool
	for range runtime.NumCPU() * 2 {
		wg.Go(func() {
			for range jobs {
				if ok, err := h.Verify(ctx, "correct horse battery", hash); !ok || err != nil {
					failed.Store(true)
				}
			}
		})
	}
	wg.Wait()
	if failed.Load() {
		return 0, errors.New("argon2id verification failed")
	}
	return n / time.Since(start).Seconds(), nil
}
