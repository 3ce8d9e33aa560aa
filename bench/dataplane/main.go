// Command dataplane measures the dataplane's request path against its baselines.
//
// It creates a throwaway database on the Postgres cluster named by -db (a superuser URL
// on a loopback address) and provisions tenants through the provisioner. The server
// under load runs as a child process (this binary, see server.go), a fresh one for each
// measurement, so that its CPU time is its own; the load generator stays in this
// process and talks to it over loopback HTTP. Each measurement reports throughput,
// p50/p99, and CPU time per request of the server process (from /proc/<pid>/stat), of
// the Postgres backends serving it, and of the load generator: on a machine whose cores
// are shared, the server's CPU per request is the stable figure. The scenarios (-only):
//
//   - read: GET /api/v1/blogs/{id}, one tenant, against the fair baseline (a bare gin
//     handler in the same server process running the same SELECT through one plain pgx
//     pool), with raw pgx in this process and GET /healthz as context;
//   - one: one tenant in the default (shared) and the dedicated pool mode;
//   - many: the read over -tenants tenants in a uniform mix vs one tenant;
//   - zipf: the read over -zipf-tenants tenants in a Zipf(s=1.1) mix vs one tenant;
//   - pool: the database work of the same reads (one tenant, the uniform and the Zipf
//     mix) through a shared pool of this process, without HTTP: what the mixes cost
//     Postgres itself;
//   - switch: the same database work over plain pgconn pipelines, one tenant against the
//     uniform mix with the binding per tenant and held constant (switch.go): what
//     binding a connection to another tenant costs;
//   - memory: after a Zipf run, the memory of the gateway role's Postgres backends
//     (Pss and private bytes from /proc/<pid>/smaps_rollup), with tenant affinity (the
//     default groups) and without (one group as large as the budget);
//   - dedicated: the uniform mix in the dedicated mode (every miss opens a backend);
//   - auth: JWT verification cost and argon2id (OWASP parameters) checks per second.
//
// Each measurement runs -runs times; medians are printed with the targets. Targets are
// informational: the exit status is 0 unless the run itself fails. The database and
// every role it made are dropped at the end.
//
//	scripts/test-services.sh --pg -- go run ./bench/dataplane -only read,many -profile /tmp/prof
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	mrand "math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tenantplane/tenantplane/bench/internal/benchdb"
	"github.com/tenantplane/tenantplane/dataplane/blogs"
	"github.com/tenantplane/tenantplane/dataplane/pool"
	"github.com/tenantplane/tenantplane/dataplane/tenantdb"
	"github.com/tenantplane/tenantplane/password"
	"github.com/tenantplane/tenantplane/provisioner"
	"github.com/tenantplane/tenantplane/tenant"
	"github.com/tenantplane/tenantplane/token"
)

// Targets.
const (
	targetBaseRatio = 0.80 // dataplane blog read vs the bare gin + pgx handler
	targetManyRatio = 0.85 // many tenants (uniform) vs one tenant throughput
	targetZipfRatio = 0.90 // many tenants (Zipf) vs one tenant throughput
	targetOneRatio  = 0.90 // one tenant, default (shared) vs dedicated mode
	zipfS           = 1.1  // the Zipf mix's exponent
	targetBackends  = 40   // most Postgres backends with many tenants
)

// adminHash stands in for the admin's password hash; the bench issues tokens directly.
const adminHash = "$argon2id$v=19$m=1024,t=1,p=1$YmVuY2hzYWx0YmVuY2hzYWx0$YmVuY2hoYXNoYmVuY2hoYXNoYmVuY2hoYXNo"

// ringSpec is the token key ring the bench and its servers share.
var ringSpec = "bench:" + strings.Repeat("k", 40)

// appName is the application_name of the dataplane's pooled connections; baselineApp
// that of the baseline pool; poolApp that of the pool-alone measurement's.
const (
	appName     = "tenantplane-dataplane"
	baselineApp = "bench-baseline"
	poolApp     = "bench-pool"
)

type options struct {
	dbURL       string
	clients     int
	requests    int
	tenants     int
	zipfTenants int
	runs        int
	conns       int32
	group       int
	only        map[string]bool
	timeout     time.Duration
	profile     string
	reuse       bool
}

var scenarios = []string{"read", "one", "many", "zipf", "pool", "switch", "memory", "dedicated", "auth"}

func main() {
	if len(os.Args) > 1 && os.Args[1] == serveCommand {
		if err := serveMain(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "dataplane bench server:", err)
			os.Exit(1)
		}
		return
	}
	var o options
	flag.StringVar(&o.dbURL, "db", os.Getenv("TENANTPLANE_TEST_DATABASE_URL"), "superuser URL of a loopback Postgres cluster (default $TENANTPLANE_TEST_DATABASE_URL)")
	flag.IntVar(&o.clients, "clients", 16, "concurrent clients")
	flag.IntVar(&o.requests, "requests", 10000, "requests per measurement (1-1000000)")
	flag.IntVar(&o.tenants, "tenants", 1000, "tenants of the uniform mix (2-10000)")
	flag.IntVar(&o.zipfTenants, "zipf-tenants", 10000, "tenants of the Zipf mix (2-20000)")
	flag.IntVar(&o.runs, "runs", 3, "runs of each measurement (1-9); medians are reported")
	conns := flag.Int("conns", 4, "connections per tenant pool, and of the baseline pools")
	flag.IntVar(&o.group, "group", 0, "connections per group of the shared pool (0: the default)")
	only := flag.String("only", "read,one,many,zipf,pool,switch,memory,auth", "scenarios to run, of "+strings.Join(scenarios, ","))
	flag.DurationVar(&o.timeout, "timeout", 20*time.Minute, "give up after this long")
	flag.StringVar(&o.profile, "profile", "", "write the server's CPU profiles of the one-tenant and many-tenant runs into this directory")
	flag.BoolVar(&o.reuse, "reuse", false, "keep the database and its tenants for the next run with -reuse on the same cluster (no cleanup)")
	flag.Parse()
	o.conns = int32(*conns)
	o.only = map[string]bool{}
	for _, s := range strings.Split(*only, ",") {
		if !slices.Contains(scenarios, s) {
			fmt.Fprintf(os.Stderr, "dataplane bench: unknown scenario %q\n", s)
			os.Exit(2)
		}
		o.only[s] = true
	}
	if o.clients < 1 || o.clients > 256 || o.requests < 1 || o.requests > 1000000 || o.tenants < 2 || o.tenants > 10000 ||
		o.zipfTenants < 2 || o.zipfTenants > 20000 || o.runs < 1 || o.runs > 9 || o.conns < 1 || o.conns > 40 || o.group < 0 || o.group > 40 {
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
	if err := benchdb.RequireLoopback(o.dbURL); err != nil {
		return err
	}
	if o.profile != "" {
		abs, err := filepath.Abs(o.profile)
		if err != nil {
			return err
		}
		if err := os.MkdirAll(abs, 0o755); err != nil {
			return err
		}
		o.profile = abs
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()
	need := 1
	if o.only["many"] || o.only["dedicated"] || o.only["pool"] || o.only["switch"] {
		need = max(need, o.tenants)
	}
	if o.only["zipf"] || o.only["memory"] || o.only["pool"] {
		need = max(need, o.zipfTenants)
	}
	b, err := newBench(ctx, o, need)
	if err != nil {
		return err
	}
	defer b.close()

	fmt.Fprintf(out, "dataplane bench: %d clients, %d requests per measurement, %d runs, %d conns per tenant pool, GOMAXPROCS %d, %d CPUs\n",
		o.clients, o.requests, o.runs, o.conns, runtime.GOMAXPROCS(0), runtime.NumCPU())
	fmt.Fprintf(out, "   %d tenants provisioned in %v (provisioner, %d in parallel)\n", len(b.tenants), b.provisionTime.Round(time.Millisecond), provisionParallel)
	fmt.Fprintf(out, "   cpu/req: server process | Postgres backends serving it | load generator (this process)\n")
	one := b.tenants[:1]
	def := serverConfig{maxPools: 100, budget: targetBackends, group: int32(o.group)}

	// 1. Blog read: the dataplane against the bare gin + pgx handler of the same server.
	if o.only["read"] {
		var raw, base, viaHTTP, floor []result
		for range o.runs {
			r, err := b.rawRead(ctx, b.tenants[0])
			if err != nil {
				return err
			}
			raw = append(raw, r)
			err = b.withServer(ctx, def, func(s *server) error {
				f, err := b.httpLoad(ctx, s, s.app, one, "/healthz", false, "")
				if err != nil {
					return err
				}
				bl, err := b.httpLoad(ctx, s, s.base, one, "/blogs/1", false, "")
				if err != nil {
					return err
				}
				h, err := b.httpLoad(ctx, s, s.app, one, blogPath, false, "")
				if err != nil {
					return err
				}
				floor, base, viaHTTP = append(floor, f), append(base, bl), append(viaHTTP, h)
				return nil
			})
			if err != nil {
				return err
			}
		}
		rr, br, hr, fl := median(raw), median(base), median(viaHTTP), median(floor)
		fmt.Fprintf(out, "\n1. GET /api/v1/blogs/{id}, one tenant, default configuration\n")
		fmt.Fprintf(out, "   bare gin + one pgx pool (same server): %s\n", br)
		fmt.Fprintf(out, "   dataplane over HTTP:                   %s\n", hr)
		ratio := pairedRatio(viaHTTP, base) // both measured on the same server, one after the other
		fmt.Fprintf(out, "   throughput ratio %.2f (target >= %.2f): %s; p99 ratio %.1fx; server cpu/req ratio %.2fx\n",
			ratio, targetBaseRatio, verdict(ratio >= targetBaseRatio), float64(hr.p99)/float64(br.p99), hr.cpu.server/br.cpu.server)
		fmt.Fprintf(out, "   (raw pgx, same SELECT, %d conns, in the bench process: %s)\n", o.conns, rr)
		fmt.Fprintf(out, "   (HTTP alone, GET /healthz of the dataplane:           %s)\n", fl)
	}

	// 2. One tenant in both modes, then the mixes in the default mode. Each run
	// measures the one-tenant baseline, the dedicated mode and the mixes back to back,
	// and a ratio is the median of the runs' own ratios: the shared cores speed up and
	// slow down over minutes, and a pair measured minutes apart would compare that.
	fmt.Fprintf(out, "\n2. pool modes and tenant mixes (pool LRU 100, budget %d)\n", targetBackends)
	ded := def
	ded.mode = tenant.PoolDedicated
	var singles, dedSingles, many, zipf, dedMany []result
	for i := range o.runs {
		prof := func(name string) string {
			if o.profile == "" || i > 0 {
				return ""
			}
			return filepath.Join(o.profile, name+".pprof")
		}
		for _, m := range []struct {
			on   bool
			cfg  serverConfig
			ts   []*benchTenant
			zipf bool
			name string
			into *[]result
		}{
			{o.only["one"] || o.only["many"] || o.only["zipf"], def, one, false, "one", &singles},
			{o.only["one"], ded, one, false, "dedicated-one", &dedSingles},
			{o.only["many"], def, b.tenants[:min(o.tenants, len(b.tenants))], false, "many", &many},
			{o.only["zipf"], def, b.tenants[:min(o.zipfTenants, len(b.tenants))], true, "zipf", &zipf},
			{o.only["dedicated"], ded, b.tenants[:min(o.tenants, len(b.tenants))], false, "dedicated-many", &dedMany},
		} {
			if !m.on {
				continue
			}
			r, err := b.serveRead(ctx, m.cfg, m.ts, m.zipf, prof(m.name))
			*m.into = append(*m.into, r)
			if err != nil {
				return err
			}
		}
	}
	var single result
	if len(singles) > 0 {
		single = median(singles)
		fmt.Fprintf(out, "   default: shared gateway pools (set_config role/search_path per transaction, pipelined)\n")
		fmt.Fprintf(out, "     one tenant:            %s\n", single)
		for _, mix := range []struct {
			rs     []result
			label  string
			target float64
		}{
			{many, fmt.Sprintf("%5d tenants uniform:", o.tenants), targetManyRatio},
			{zipf, fmt.Sprintf("%5d tenants Zipf(s=%.1f):", o.zipfTenants, zipfS), targetZipfRatio},
		} {
			if len(mix.rs) == 0 {
				continue
			}
			mm := median(mix.rs)
			ratio := pairedRatio(mix.rs, singles)
			fmt.Fprintf(out, "     %s %s\n%s", mix.label, mm, mm.poolLine())
			fmt.Fprintf(out, "       ratio %.2f (target >= %.2f): %s; most backends %d (target <= %d): %s; server cpu/req %.2fx of one tenant\n",
				ratio, mix.target, verdict(ratio >= mix.target), mostBackends(mix.rs), targetBackends,
				verdict(mostBackends(mix.rs) <= targetBackends), mm.cpu.server/single.cpu.server)
		}
	}
	if o.only["pool"] {
		if err := b.reportPoolAlone(ctx, out); err != nil {
			return err
		}
	}
	if o.only["switch"] {
		if err := b.reportSwitch(ctx, out); err != nil {
			return err
		}
	}
	if len(dedSingles) > 0 || len(dedMany) > 0 {
		fmt.Fprintf(out, "   dedicated pools (tenant role + search_path at connect)\n")
	}
	if len(dedSingles) > 0 {
		ratio := pairedRatio(singles, dedSingles)
		fmt.Fprintf(out, "     one tenant:            %s\n", median(dedSingles))
		fmt.Fprintf(out, "     one tenant, default vs dedicated: ratio %.2f (target >= %.2f): %s\n",
			ratio, targetOneRatio, verdict(ratio >= targetOneRatio))
	}
	if len(dedMany) > 0 {
		mm := median(dedMany)
		fmt.Fprintf(out, "     %5d tenants uniform: %s; pool misses %d, budget waits %d\n", o.tenants, mm, mm.stats.Misses, mm.stats.Waits)
	}

	// 3. Backend memory after a Zipf run, with and without affinity.
	if o.only["memory"] {
		fmt.Fprintf(out, "\n3. gateway backends' memory after a run over %d tenants, Zipf(s=%.1f)\n", o.zipfTenants, zipfS)
		for _, v := range []struct {
			name  string
			group int32
		}{{"affinity (default groups)", int32(o.group)}, {"no affinity (one group of the whole budget)", targetBackends}} {
			cfg := def
			cfg.group = v.group
			err := b.withServer(ctx, cfg, func(s *server) error {
				r, err := b.httpLoad(ctx, s, s.app, b.tenants[:o.zipfTenants], blogPath, true, "")
				if err != nil {
					return err
				}
				mem, err := b.backendMemory(ctx)
				if err != nil {
					return err
				}
				fmt.Fprintf(out, "   %s: %s\n%s", v.name, r, r.poolLine())
				fmt.Fprintf(out, "     %d backends: Pss %.1f MiB in all (%.2f MiB each), private %.1f MiB in all (%.2f MiB each)\n",
					mem.backends, mib(mem.pss), mib(mem.pss)/float64(max(1, mem.backends)), mib(mem.private), mib(mem.private)/float64(max(1, mem.backends)))
				return nil
			})
			if err != nil {
				return err
			}
		}
	}

	if !o.only["auth"] {
		return nil
	}
	// 4. JWT verification and argon2id.
	fmt.Fprintf(out, "\n4. auth costs\n")
	tok, _, err := b.issuer.Issue(token.Access, "1", b.tenants[0].t.ID, token.Claims{})
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
				if _, err := issuer.Verify(tok, token.Access, b.tenants[0].t.ID); err != nil {
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

// reportPoolAlone measures and prints the pool-alone reads (poolLoad): one tenant, the
// uniform mix and the Zipf mix back to back in each run, ratios paired per run.
func (b *bench) reportPoolAlone(ctx context.Context, out io.Writer) error {
	o := b.o
	var one, many, zipf []result
	for range o.runs {
		for _, m := range []struct {
			ts   []*benchTenant
			zipf bool
			into *[]result
		}{
			{b.tenants[:1], false, &one},
			{b.tenants[:min(o.tenants, len(b.tenants))], false, &many},
			{b.tenants[:min(o.zipfTenants, len(b.tenants))], true, &zipf},
		} {
			if len(m.ts) < 2 && m.into != &one {
				continue // the mix's tenants were not provisioned for this run's scenarios
			}
			r, err := b.poolLoad(ctx, m.ts, m.zipf)
			if err != nil {
				return err
			}
			*m.into = append(*m.into, r)
		}
	}
	fmt.Fprintf(out, "   the same reads through a shared pool of the bench process, no HTTP (the database's own cost):\n")
	fmt.Fprintf(out, "     one tenant:            %s\n", median(one))
	for _, mix := range []struct {
		rs    []result
		label string
	}{
		{many, fmt.Sprintf("%5d tenants uniform:", o.tenants)},
		{zipf, fmt.Sprintf("%5d tenants Zipf(s=%.1f):", o.zipfTenants, zipfS)},
	} {
		if len(mix.rs) == 0 {
			continue
		}
		mm := median(mix.rs)
		fmt.Fprintf(out, "     %s %s\n       ratio %.2f; Postgres cpu/req %.2fx of one tenant\n",
			mix.label, mm, pairedRatio(mix.rs, one), mm.cpu.postgres/median(one).cpu.postgres)
	}
	return nil
}

// blogPath is the dataplane's blog read.
const blogPath = "/api/v1/blogs/1"

func mib(b int64) float64 { return float64(b) / (1 << 20) }

func mostBackends(rs []result) int {
	most := 0
	for _, r := range rs {
		most = max(most, r.backends)
	}
	return most
}

func verdict(ok bool) string {
	if ok {
		return "PASS"
	}
	return "MISS"
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

func newBench(ctx context.Context, o options, tenants int) (*bench, error) {
	b := &bench{o: o, adminURL: o.dbURL}
	rnd := make([]byte, 5)
	_, _ = rand.Read(rnd)
	b.dbName = "bench_dataplane_" + hex.EncodeToString(rnd)
	conn, err := pgx.Connect(ctx, o.dbURL)
	if err != nil {
		return nil, fmt.Errorf("connecting: %w", err)
	}
	exists := false
	if o.reuse {
		b.dbName = "bench_dataplane_kept"
		err = conn.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_database WHERE datname = $1)`, b.dbName).Scan(&exists)
	}
	if err == nil && !exists {
		_, err = conn.Exec(ctx, "CREATE DATABASE "+b.dbName)
	}
	_ = conn.Close(ctx)
	if err != nil {
		return nil, fmt.Errorf("creating database: %w", err)
	}
	u, _ := url.Parse(o.dbURL)
	u.Path = "/" + b.dbName
	b.dbURL = u.String()
	if err := b.init(ctx, tenants); err != nil {
		b.close()
		return nil, err
	}
	return b, nil
}

func (b *bench) init(ctx context.Context, tenants int) error {
	if _, err := provisioner.MigrateShared(ctx, b.dbURL); err != nil {
		return fmt.Errorf("migrating registry: %w", err)
	}
	var err error
	if b.db, err = pgxpool.New(ctx, b.dbURL); err != nil {
		return err
	}
	b.store = tenant.NewStore(b.db)
	ring, err := token.ParseKeyRing(ringSpec)
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
	b.tenants = make([]*benchTenant, tenants)
	errs := make(chan error, tenants)
	kept := map[string]*tenant.Tenant{}
	if b.o.reuse {
		list, err := b.store.ListByStatus(ctx, tenant.StatusActive)
		if err != nil {
			return err
		}
		for _, t := range list {
			kept[t.Slug] = t
		}
	}
	sem := make(chan struct{}, provisionParallel)
	var wg sync.WaitGroup
	for i := range tenants {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			slug := fmt.Sprintf("bench-%05d", i)
			var bt *benchTenant
			var err error
			if t := kept[slug]; t != nil {
				bt, err = b.tokenFor(t)
			} else {
				bt, err = b.provision(ctx, prov, slug)
			}
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
	return b.tokenFor(t)
}

// tokenFor issues an access token of the tenant's admin.
func (b *bench) tokenFor(t *tenant.Tenant) (*benchTenant, error) {
	tok, _, err := b.issuer.Issue(token.Access, "1", t.ID, token.Claims{Admin: true})
	if err != nil {
		return nil, err
	}
	return &benchTenant{t: t, token: tok}, nil
}

func (b *bench) close() {
	if b.o.reuse {
		if b.db != nil {
			b.db.Close()
		}
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var roles []string
	if b.db != nil {
		roles = benchdb.TenantRoles(ctx, b.db)
		b.db.Close()
	}
	if err := benchdb.Drop(ctx, b.adminURL, b.dbName, roles); err != nil {
		fmt.Fprintln(os.Stderr, "dataplane bench: cleaning up:", err)
	}
}

// result is one measurement.
type result struct {
	n        int // requests
	rps      float64
	p50, p99 time.Duration
	cpu      cpuPerReq
	backends int // most dataplane backends seen
	stats    pool.Stats
}

// cpuPerReq is CPU time per request, in microseconds, of the server process, of the
// Postgres backends serving it, and of the load generator.
type cpuPerReq struct{ server, postgres, client float64 }

func (r result) String() string {
	return fmt.Sprintf("%8.0f req/s, p50 %v, p99 %v, cpu/req %.0f | %.0f | %.0f µs", r.rps,
		r.p50.Round(time.Microsecond), r.p99.Round(time.Microsecond), r.cpu.server, r.cpu.postgres, r.cpu.client)
}

// poolLine describes the pool counters of a many-tenant run.
func (r result) poolLine() string {
	st := r.stats
	return fmt.Sprintf("       pool misses %d, budget waits %d, share waits %d; tenant switches on a connection %.0f%% of requests; "+
		"%d shared connections served %.1f tenants each (most %d)\n",
		st.Misses, st.Waits, st.ShareWaits, 100*float64(st.Switches)/float64(max(1, r.n)),
		st.SharedConns, st.TenantsPerConn, st.MaxTenantsPerConn)
}

// median returns the run with the median throughput.
// pairedRatio is the median over the runs of a[i]'s throughput over b[i]'s, each pair
// measured back to back in the same run.
func pairedRatio(a, b []result) float64 {
	rs := make([]float64, 0, len(a))
	for i := range min(len(a), len(b)) {
		if b[i].rps > 0 {
			rs = append(rs, a[i].rps/b[i].rps)
		}
	}
	if len(rs) == 0 {
		return 0
	}
	slices.Sort(rs)
	return rs[len(rs)/2]
}

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

// load runs n calls of do over o.clients goroutines and measures them.
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
	return result{n: n, rps: float64(len(lat)) / elapsed.Seconds(), p50: pct(0.50), p99: pct(0.99)}, nil
}

// cpuMeter reads the CPU time of the processes a measurement involves.
type cpuMeter struct {
	b      *bench
	server *server // nil: no server process
	apps   []string
	// at the start
	srv, self time.Duration
	pg        map[int]time.Duration
}

func (b *bench) meter(ctx context.Context, s *server, apps ...string) (*cpuMeter, error) {
	m := &cpuMeter{b: b, server: s, apps: apps}
	var err error
	if s != nil {
		if m.srv, err = s.cpu(); err != nil {
			return nil, err
		}
	}
	m.self = selfCPU()
	m.pg, err = b.backendCPU(ctx, apps)
	return m, err
}

// perReq returns the CPU time per request of n requests since the meter started.
// Backends that ended in between are not counted.
func (m *cpuMeter) perReq(ctx context.Context, n int) (cpuPerReq, error) {
	var c cpuPerReq
	us := func(d time.Duration) float64 { return float64(d.Microseconds()) / float64(n) }
	if m.server != nil {
		srv, err := m.server.cpu()
		if err != nil {
			return c, err
		}
		c.server = us(srv - m.srv)
	}
	c.client = us(selfCPU() - m.self)
	pg, err := m.b.backendCPU(ctx, m.apps)
	if err != nil {
		return c, err
	}
	var sum time.Duration
	for pid, t := range pg {
		sum += t - m.pg[pid]
	}
	c.postgres = us(sum)
	return c, nil
}

func selfCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// backendCPU returns the CPU time of the Postgres backends of the bench database whose
// application_name is one of apps.
func (b *bench) backendCPU(ctx context.Context, apps []string) (map[int]time.Duration, error) {
	rows, err := b.db.Query(ctx, `SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND application_name = ANY($1)`, apps)
	if err != nil {
		return nil, err
	}
	pids, err := pgx.CollectRows(rows, pgx.RowTo[int32])
	if err != nil {
		return nil, err
	}
	m := map[int]time.Duration{}
	for _, pid := range pids {
		if t, err := procCPU(int(pid)); err == nil {
			m[int(pid)] = t
		}
	}
	return m, nil
}

// memory is the memory of a set of Postgres backends.
type memory struct {
	backends     int
	pss, private int64 // bytes
}

// backendMemory sums /proc/<pid>/smaps_rollup over the gateway role's backends.
func (b *bench) backendMemory(ctx context.Context) (memory, error) {
	var mem memory
	rows, err := b.db.Query(ctx, `SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND usename = $1`, tenant.GatewayRole)
	if err != nil {
		return mem, err
	}
	pids, err := pgx.CollectRows(rows, pgx.RowTo[int32])
	if err != nil {
		return mem, err
	}
	for _, pid := range pids {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
		if err != nil {
			continue // ended meanwhile
		}
		mem.backends++
		for _, line := range strings.Split(string(data), "\n") {
			f := strings.Fields(line)
			if len(f) < 3 || f[2] != "kB" {
				continue
			}
			var kb int64
			if _, err := fmt.Sscan(f[1], &kb); err != nil {
				continue
			}
			switch f[0] {
			case "Pss:":
				mem.pss += kb << 10
			case "Private_Clean:", "Private_Dirty:":
				mem.private += kb << 10
			}
		}
	}
	return mem, nil
}

// rawRead runs the blog read's SELECT straight on the tenant's schema with pgx, in the
// bench process.
func (b *bench) rawRead(ctx context.Context, bt *benchTenant) (result, error) {
	dsn, err := b.baselineDSN(bt)
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
	return b.measure(ctx, nil, []string{baselineApp}, b.o.requests, func(ctx context.Context, _ int) error {
		var bl blogs.Blog
		return p.QueryRow(ctx, rawGetQuery, int64(1)).Scan(&bl.ID, &bl.Title, &bl.Description, &bl.Author.ID, &bl.Author.Email, &bl.CreatedAt, &bl.UpdatedAt)
	})
}

// baselineDSN is the URL of the baseline pools: the tenant's role on its schema.
func (b *bench) baselineDSN(bt *benchTenant) (string, error) {
	dsn, err := bt.t.ConnString(b.dbURL)
	if err != nil {
		return "", err
	}
	return dsn + "&application_name=" + baselineApp, nil
}

// rawGetQuery is the statement the dataplane's GET /blogs/{id} runs, for the baselines.
const rawGetQuery = `SELECT b.id, b.title, b.description, b.author_id, u.email, b.created_at, b.updated_at
	FROM blogs b JOIN users u ON u.id = b.author_id WHERE b.id = $1`

// serveRead measures the blog read over ts on a fresh server configured as cfg.
func (b *bench) serveRead(ctx context.Context, cfg serverConfig, ts []*benchTenant, zipf bool, profile string) (r result, err error) {
	err = b.withServer(ctx, cfg, func(s *server) error {
		r, err = b.httpLoad(ctx, s, s.app, ts, blogPath, zipf, profile)
		return err
	})
	return r, err
}

// withServer runs fn with a fresh child server configured as cfg.
func (b *bench) withServer(ctx context.Context, cfg serverConfig, fn func(*server) error) error {
	dsn, err := b.baselineDSN(b.tenants[0])
	if err != nil {
		return err
	}
	cfg.baselineDSN = dsn
	s, err := b.startServer(ctx, cfg)
	if err != nil {
		return err
	}
	defer s.stop()
	return fn(s)
}

// httpLoad GETs base+path with the Host and token of a tenant of ts (a uniform or Zipf
// mix), a quarter of the requests as a warm-up and then the measured ones; with profile
// set, the server writes a CPU profile of the measured part there.
func (b *bench) httpLoad(ctx context.Context, s *server, base string, ts []*benchTenant, path string, zipf bool, profile string) (result, error) {
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: b.o.clients, MaxConnsPerHost: b.o.clients}, Timeout: 30 * time.Second}
	defer client.CloseIdleConnections()
	target := base + path
	apps := []string{appName}
	if base == s.base {
		apps = []string{baselineApp}
	}
	n := b.o.requests
	if len(ts) > 100 && s.cmdMode() == tenant.PoolDedicated {
		// Every request opens a connection: a smaller count measures it as well.
		n = min(n, 2000)
	}
	seq, warm := requestOrder(n, len(ts), zipf, s.mode != tenant.PoolDedicated)
	get := func(ctx context.Context, i int) error {
		bt := ts[seq[i]]
		req, err := http.NewRequestWithContext(ctx, "GET", target, nil)
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
	// Warm up (connections, caches), then measure.
	if _, err := b.load(ctx, warm, func(ctx context.Context, i int) error { return get(ctx, n+i) }); err != nil {
		return result{}, err
	}
	before, err := s.stats()
	if err != nil {
		return result{}, err
	}
	if profile != "" {
		if err := s.profile(profile); err != nil {
			return result{}, err
		}
	}
	r, err := b.measure(ctx, s, apps, n, get)
	if err != nil {
		return r, err
	}
	if profile != "" {
		if err := s.profile(""); err != nil {
			return r, err
		}
	}
	after, err := s.stats()
	if err != nil {
		return r, err
	}
	r.stats = after
	// Counters of the measured part only.
	r.stats.Hits -= before.Hits
	r.stats.Misses -= before.Misses
	r.stats.Waits -= before.Waits
	r.stats.ShareWaits -= before.ShareWaits
	r.stats.Switches -= before.Switches
	return r, nil
}

// requestOrder returns the tenant (an index below tenants) of each of n measured
// requests and then of the warm-up's, the same in every run, and the warm-up's length.
// With everyOnce, the warm-up of a mix first reads once from every tenant, as a server
// that has run for a while has (tenant lookups, verified tokens, the backends' catalog
// caches of each tenant's connection): the measurement is of the steady state.
func requestOrder(n, tenants int, zipf, everyOnce bool) (seq []int, warm int) {
	warm = n / 4
	if tenants > 1 && everyOnce {
		warm += tenants
	}
	seq = make([]int, n+warm)
	rng := mrand.New(mrand.NewPCG(1, 2))
	z := mrand.NewZipf(rng, zipfS, 1, uint64(tenants-1))
	for i := range seq {
		switch {
		case i >= n && i-n < warm-n/4:
			seq[i] = i - n
		case zipf:
			seq[i] = int(z.Uint64())
		default:
			seq[i] = rng.IntN(tenants)
		}
	}
	return seq, warm
}

// poolLoad runs the blog read's database work over ts in this process, through the
// dataplane's own tenant scope and a pool.Manager of the default mode (the binding, the
// stored-user check and the SELECT in one pipeline), without HTTP, tenant resolution or
// token checks: the Postgres side of the same traffic, to tell how much of a mix's cost
// is the database's.
func (b *bench) poolLoad(ctx context.Context, ts []*benchTenant, zipf bool) (result, error) {
	m, err := pool.New(pool.Config{Shards: map[string]string{"main": b.dbURL}, Budget: targetBackends,
		PerTenantConns: b.o.conns, GroupConns: int32(b.o.group), AppName: poolApp})
	if err != nil {
		return result{}, err
	}
	defer m.Close(context.WithoutCancel(ctx))
	n := b.o.requests
	seq, warm := requestOrder(n, len(ts), zipf, true)
	read := func(ctx context.Context, i int) error {
		t := ts[seq[i]].t
		sc := tenantdb.New(t, m)
		sc.CheckUser(1, 0, time.Time{}) // as the auth service does for a token of user 1
		return sc.Read(ctx, func(db pool.DB) error {
			var bl blogs.Blog
			if err := db.QueryRow(ctx, rawGetQuery, int64(1)).Scan(&bl.ID, &bl.Title, &bl.Description,
				&bl.Author.ID, &bl.Author.Email, &bl.CreatedAt, &bl.UpdatedAt); err != nil {
				return fmt.Errorf("reading %s: %w", t.Slug, err)
			}
			return nil
		})
	}
	if _, err := b.load(ctx, warm, func(ctx context.Context, i int) error { return read(ctx, n+i) }); err != nil {
		return result{}, err
	}
	return b.measure(ctx, nil, []string{poolApp}, n, read)
}

// measure runs n calls of do (b.load) and reports, besides their throughput and
// latency, the CPU time per call of the server s (nil: none), of the Postgres backends
// of apps and of this process, and the most of those backends seen at once.
func (b *bench) measure(ctx context.Context, s *server, apps []string, n int, do func(ctx context.Context, i int) error) (result, error) {
	m, err := b.meter(ctx, s, apps...)
	if err != nil {
		return result{}, err
	}
	stop := make(chan struct{})
	most := make(chan int, 1)
	go func() { most <- b.sampleBackends(stop, apps) }()
	r, err := b.load(ctx, n, do)
	close(stop)
	r.backends = <-most
	if err != nil {
		return r, err
	}
	r.cpu, err = m.perReq(ctx, n)
	return r, err
}

// sampleBackends returns the most backends of apps seen until stop closes.
func (b *bench) sampleBackends(stop <-chan struct{}, apps []string) int {
	most := 0
	for {
		select {
		case <-stop:
			return most
		case <-time.After(20 * time.Millisecond):
		}
		var n int
		if err := b.db.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND application_name = ANY($1)`, apps).Scan(&n); err == nil {
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
