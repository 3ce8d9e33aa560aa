// Command provision measures tenant signup-to-active latency against a raw baseline.
//
// It creates a throwaway database on the Postgres cluster named by -db (a superuser URL
// on a loopback address) and creates -tenants tenants one after another in two ways,
// taking turns so that both see the same machine load: through the provisioner
// (Register + Provision, schema isolation: signup-to-active), and as the raw baseline,
// the same DDL as one SQL transaction on an open connection (create role, create
// schema, the tenant migrations, insert the admin user: what the provisioner does,
// without golang-migrate and the registry bookkeeping). It prints p50/p95/max of both,
// their ratio against the targets, and where the provisioner's time goes by step. The
// database and every role it made are dropped at the end. Targets are informational:
// the exit status is 0 unless the run itself fails.
//
// In the same run, taking the same turns, a third side signs tenants up through a
// provisioner with a warm pool (Config.WarmPool) filled beforehand, so that every signup
// claims a pooled schema and only renames and binds it; and the argon2id hash of an admin
// password (password.OWASP, as signup hashes it before the provisioner) is measured
// alone, since a signup pays it on top of either path.
//
//	scripts/test-services.sh --pg -- go run ./bench/provision -tenants 100
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tenantplane/tenantplane/bench/internal/benchdb"
	"github.com/tenantplane/tenantplane/migrations"
	"github.com/tenantplane/tenantplane/password"
	"github.com/tenantplane/tenantplane/provisioner"
	"github.com/tenantplane/tenantplane/tenant"
)

// Targets of the signup path.
const (
	targetP95   = time.Second
	targetRatio = 1.5
	// targetWarmP95 is the target of a signup served by the warm pool, on top of the
	// admin password's hash.
	targetWarmP95 = 10 * time.Millisecond
)

// adminHash stands in for the admin's argon2id hash: hashing happens at signup, before
// the provisioner, and is not what this program measures.
const adminHash = "$argon2id$v=19$m=19456,t=2,p=1$YmVuY2hzYWx0YmVuY2hzYWx0$YmVuY2hoYXNoYmVuY2hoYXNoYmVuY2hoYXNo"

func main() {
	n := flag.Int("tenants", 100, "tenants to provision on each side (1-1000)")
	dbURL := flag.String("db", os.Getenv("TENANTPLANE_TEST_DATABASE_URL"), "superuser URL of a loopback Postgres cluster (default $TENANTPLANE_TEST_DATABASE_URL)")
	timeout := flag.Duration("timeout", 10*time.Minute, "give up after this long")
	flag.Parse()
	if err := run(*n, *dbURL, *timeout, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "provision bench:", err)
		os.Exit(1)
	}
}

func run(n int, dbURL string, timeout time.Duration, out io.Writer) error {
	if n < 1 || n > 1000 {
		return fmt.Errorf("-tenants must be between 1 and 1000, not %d", n)
	}
	if dbURL == "" {
		return errors.New("no database: pass -db or set TENANTPLANE_TEST_DATABASE_URL (scripts/test-services.sh --pg does)")
	}
	if err := benchdb.RequireLoopback(dbURL); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()

	benchURL, roles, drop, err := createDatabase(ctx, dbURL)
	if err != nil {
		return err
	}
	defer func() {
		if err := drop(); err != nil {
			fmt.Fprintln(os.Stderr, "provision bench: cleaning up:", err)
		}
	}()

	ours, steps, closeOurs, err := provisionerSide(ctx, benchURL, roles)
	if err != nil {
		return err
	}
	defer closeOurs()
	raw, closeRaw, err := rawSide(ctx, benchURL, roles)
	if err != nil {
		return err
	}
	defer closeRaw()
	warmSteps := &stepRecorder{durations: map[string][]time.Duration{}}
	warm, closeWarm, err := warmSide(ctx, benchURL, roles, n+1, warmSteps)
	if err != nil {
		return err
	}
	defer closeWarm()
	hash := hashSide(ctx)

	// One warm-up tenant each opens the connections a long-running control plane keeps
	// open. Then the two sides take turns, so that both see the same machine load.
	if _, err := ours("warmup-ours"); err != nil {
		return err
	}
	if _, err := raw("warmup-raw"); err != nil {
		return err
	}
	if _, err := warm("warmup-warm"); err != nil {
		return err
	}
	if _, err := hash(""); err != nil {
		return err
	}
	steps.reset()
	warmSteps.reset()
	var oursLat, rawLat, warmLat, hashLat []time.Duration
	for i := range n {
		d, err := warm(fmt.Sprintf("warm-%04d", i))
		if err != nil {
			return err
		}
		warmLat = append(warmLat, d)
		if d, err = hash(""); err != nil {
			return err
		}
		hashLat = append(hashLat, d)
		if d, err = ours(fmt.Sprintf("bench-%04d", i)); err != nil {
			return err
		}
		oursLat = append(oursLat, d)
		if d, err = raw(fmt.Sprintf("raw-%04d", i)); err != nil {
			return err
		}
		rawLat = append(rawLat, d)
	}
	report(out, n, oursLat, rawLat, steps.snapshot())
	reportWarm(out, n, warmLat, oursLat, hashLat, warmSteps.snapshot())
	return nil
}

// side creates one tenant named slug and returns how long it took.
type side func(slug string) (time.Duration, error)

// roleSet collects the cluster-wide roles the run creates, to drop them at the end.
type roleSet struct {
	// mu guards names.
	mu    sync.Mutex
	names []string
}

func (r *roleSet) add(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.names = append(r.names, name)
}

// createDatabase makes the throwaway database and returns its URL and a function that
// drops it and the roles recorded in the returned set.
func createDatabase(ctx context.Context, adminURL string) (string, *roleSet, func() error, error) {
	name, dbURL, err := benchdb.Create(ctx, adminURL, "bench_provision_")
	if err != nil {
		return "", nil, nil, err
	}
	roles := &roleSet{}
	drop := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		roles.mu.Lock()
		defer roles.mu.Unlock()
		return benchdb.Drop(ctx, adminURL, name, roles.names)
	}
	return dbURL, roles, drop, nil
}

// provisionerSide returns a side that signs a tenant up through the provisioner
// (Register + Provision, schema isolation) and measures signup-to-active, and the
// recorder of the time each provisioning step took.
func provisionerSide(ctx context.Context, benchURL string, roles *roleSet) (side, *stepRecorder, func(), error) {
	if _, err := provisioner.MigrateShared(ctx, benchURL); err != nil {
		return nil, nil, nil, fmt.Errorf("migrating registry: %w", err)
	}
	pool, err := pgxpool.New(ctx, benchURL)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("opening registry pool: %w", err)
	}
	steps := &stepRecorder{durations: map[string][]time.Duration{}}
	p, err := provisioner.New(tenant.NewStore(pool), provisioner.Config{
		Shards: []provisioner.Shard{{Name: "a", URL: benchURL}},
		Logger: slog.New(steps),
	})
	if err != nil {
		pool.Close()
		return nil, nil, nil, err
	}
	closeAll := func() {
		p.Close()
		pool.Close()
	}
	return signupSide(ctx, p, roles), steps, closeAll, nil
}

// signupSide returns a side that signs a tenant up through p (Register + Provision,
// schema isolation) and measures signup-to-active.
func signupSide(ctx context.Context, p *provisioner.Provisioner, roles *roleSet) side {
	return func(slug string) (time.Duration, error) {
		start := time.Now()
		t, err := p.Register(ctx, provisioner.CreateRequest{
			Slug: slug, AdminEmail: "admin@" + slug + ".example.com", AdminPasswordHash: adminHash, Actor: "bench",
		})
		if err != nil {
			return 0, fmt.Errorf("registering %s: %w", slug, err)
		}
		roles.add(t.DBRole)
		t, err = p.Provision(ctx, t.ID)
		if err != nil {
			return 0, fmt.Errorf("provisioning %s: %w", slug, err)
		}
		if t.Status != tenant.StatusActive {
			return 0, fmt.Errorf("provisioning %s ended %s: %s", slug, t.Status, t.LastError)
		}
		return time.Since(start), nil
	}
}

// warmSide returns a side that signs a tenant up as provisionerSide does, through a
// provisioner whose warm pool is filled with size schemas first (not timed), so that
// each signup claims one; the pool's leftovers are recorded for the clean-up.
func warmSide(ctx context.Context, benchURL string, roles *roleSet, size int, steps *stepRecorder) (side, func(), error) {
	pool, err := pgxpool.New(ctx, benchURL)
	if err != nil {
		return nil, nil, fmt.Errorf("opening registry pool: %w", err)
	}
	p, err := provisioner.New(tenant.NewStore(pool), provisioner.Config{
		Shards:   []provisioner.Shard{{Name: "a", URL: benchURL}},
		WarmPool: size,
		Logger:   slog.New(steps),
	})
	if err != nil {
		pool.Close()
		return nil, nil, err
	}
	closeAll := func() {
		// Pooled schemas left unclaimed: their roles outlive the database.
		if rows, err := pool.Query(context.WithoutCancel(ctx), `SELECT role_name FROM warm_schemas WHERE state <> 'claimed'`); err == nil {
			if names, err := pgx.CollectRows(rows, pgx.RowTo[string]); err == nil {
				for _, r := range names {
					roles.add(r)
				}
			}
		}
		p.Close()
		pool.Close()
	}
	if _, err := p.RefillWarm(ctx); err != nil {
		closeAll()
		return nil, nil, fmt.Errorf("filling the warm pool: %w", err)
	}
	return signupSide(ctx, p, roles), closeAll, nil
}

// hashSide returns a side that only hashes an admin password with argon2id as signup
// does (password.OWASP).
func hashSide(ctx context.Context) side {
	h := password.NewHasher(password.OWASP, 1)
	return func(string) (time.Duration, error) {
		start := time.Now()
		if _, err := h.Hash(ctx, "correct horse battery staple"); err != nil {
			return 0, fmt.Errorf("hashing: %w", err)
		}
		return time.Since(start), nil
	}
}

// reportWarm prints the warm pool's signups against today's path and the hash.
func reportWarm(w io.Writer, n int, warm, cold, hash []time.Duration, steps map[string][]time.Duration) {
	wm, c, h := summarize(warm), summarize(cold), summarize(hash)
	fmt.Fprintf(w, "\nsignup to active with the warm pool warm, %d tenants, in the same turns as above\n\n", n)
	fmt.Fprintf(w, "  %-34s %10s %10s %10s\n", "", "p50", "p95", "max")
	fmt.Fprintf(w, "  %-34s %10s %10s %10s\n", "warm pool (claim, rename, bind)", ms(wm.p50), ms(wm.p95), ms(wm.max))
	fmt.Fprintf(w, "  %-34s %10s %10s %10s\n", "today's path (create + migrate)", ms(c.p50), ms(c.p95), ms(c.max))
	fmt.Fprintf(w, "  %-34s %10s %10s %10s\n", "argon2id hash alone (OWASP)", ms(h.p50), ms(h.p95), ms(h.max))
	fmt.Fprintf(w, "  %-34s %9.2fx %9.2fx\n", "ratio warm / today", float64(wm.p50)/float64(c.p50), float64(wm.p95)/float64(c.p95))
	fmt.Fprintf(w, "  signup with the hash, p50: warm %s, today %s (the hash is %.0f%% of a warm signup)\n",
		ms(wm.p50+h.p50), ms(c.p50+h.p50), 100*float64(h.p50)/float64(wm.p50+h.p50))
	fmt.Fprintf(w, "  target warm p95 <= %v on top of the hash: %s (%s)\n\n", targetWarmP95, passMiss(wm.p95 <= targetWarmP95), ms(wm.p95))
	reportSteps(w, "a warm signup's", provisioner.WarmSteps(), steps, wm.p50)
}

// rawSide returns a side that creates a tenant with the provisioner's DDL as one
// transaction on one open superuser connection: the floor the provisioner is compared
// with.
func rawSide(ctx context.Context, benchURL string, roles *roleSet) (side, func(), error) {
	migrationSQL, err := tenantMigrationSQL()
	if err != nil {
		return nil, nil, err
	}
	conn, err := pgx.Connect(ctx, benchURL)
	if err != nil {
		return nil, nil, fmt.Errorf("connecting: %w", err)
	}
	closeConn := func() { _ = conn.Close(context.WithoutCancel(ctx)) }
	create := func(slug string) (time.Duration, error) {
		names := tenant.NewNames(slug, tenant.IsolationSchema)
		role := pgx.Identifier{names.Role}.Sanitize()
		schema := pgx.Identifier{names.Schema}.Sanitize()
		roles.add(names.Role)
		start := time.Now()
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			ddl := `CREATE ROLE ` + role + ` LOGIN NOINHERIT PASSWORD '` + tenant.NewPassword() + `';
				CREATE SCHEMA ` + schema + ` AUTHORIZATION ` + role + `;
				SET LOCAL search_path TO ` + schema + `;
				SET LOCAL ROLE ` + role + `;
				` + migrationSQL
			if _, err := tx.Exec(ctx, ddl); err != nil {
				return fmt.Errorf("creating %s: %w", slug, err)
			}
			_, err := tx.Exec(ctx, `INSERT INTO users (email, password_hash, is_admin) VALUES ($1, $2, true)`,
				"admin@"+slug+".example.com", adminHash)
			return err
		})
		if err != nil {
			return 0, err
		}
		return time.Since(start), nil
	}
	return create, closeConn, nil
}

// tenantMigrationSQL concatenates the tenant up migrations in version order.
func tenantMigrationSQL() (string, error) {
	fsys := migrations.Tenant()
	files, err := fs.Glob(fsys, "*.up.sql")
	if err != nil {
		return "", fmt.Errorf("listing tenant migrations: %w", err)
	}
	sort.Strings(files)
	var sb strings.Builder
	for _, f := range files {
		b, err := fs.ReadFile(fsys, f)
		if err != nil {
			return "", fmt.Errorf("reading %s: %w", f, err)
		}
		sb.Write(b)
		sb.WriteString("\n;\n") // a file may end in a comment
	}
	return sb.String(), nil
}

// stepRecorder is a slog handler that keeps the durations the provisioner logs per
// step ("provisioning step done", attributes step and duration) and drops the rest.
type stepRecorder struct {
	// mu guards durations.
	mu        sync.Mutex
	durations map[string][]time.Duration
}

func (s *stepRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (s *stepRecorder) WithAttrs([]slog.Attr) slog.Handler       { return s }
func (s *stepRecorder) WithGroup(string) slog.Handler            { return s }

func (s *stepRecorder) Handle(_ context.Context, r slog.Record) error {
	if r.Message != "provisioning step done" {
		return nil
	}
	var step string
	var d time.Duration
	r.Attrs(func(a slog.Attr) bool {
		switch a.Key {
		case "step":
			step = a.Value.String()
		case "duration":
			d = a.Value.Duration()
		}
		return true
	})
	s.mu.Lock()
	defer s.mu.Unlock()
	s.durations[step] = append(s.durations[step], d)
	return nil
}

func (s *stepRecorder) reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.durations = map[string][]time.Duration{}
}

func (s *stepRecorder) snapshot() map[string][]time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string][]time.Duration, len(s.durations))
	for k, v := range s.durations {
		out[k] = slices.Clone(v)
	}
	return out
}

// percentile returns the p-th percentile (nearest rank) of sorted durations.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(p/100*float64(len(sorted))+0.999999) - 1
	return sorted[max(0, min(rank, len(sorted)-1))]
}

type summary struct{ p50, p95, max time.Duration }

func summarize(ds []time.Duration) summary {
	s := slices.Clone(ds)
	slices.Sort(s)
	return summary{percentile(s, 50), percentile(s, 95), s[len(s)-1]}
}

func passMiss(ok bool) string {
	if ok {
		return "PASS"
	}
	return "MISS"
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000) }

func report(w io.Writer, n int, ours, raw []time.Duration, steps map[string][]time.Duration) {
	o, r := summarize(ours), summarize(raw)
	ratio50 := float64(o.p50) / float64(r.p50)
	ratio95 := float64(o.p95) / float64(r.p95)
	fmt.Fprintf(w, "provisioning latency, %d tenants each, schema isolation, one at a time, the two sides taking turns\n\n", n)
	fmt.Fprintf(w, "  %-34s %10s %10s %10s\n", "", "p50", "p95", "max")
	fmt.Fprintf(w, "  %-34s %10s %10s %10s\n", "provisioner (Register+Provision)", ms(o.p50), ms(o.p95), ms(o.max))
	fmt.Fprintf(w, "  %-34s %10s %10s %10s\n", "raw DDL (one transaction)", ms(r.p50), ms(r.p95), ms(r.max))
	fmt.Fprintf(w, "  %-34s %9.2fx %9.2fx\n\n", "ratio provisioner / raw", ratio50, ratio95)
	fmt.Fprintf(w, "  target p95 <= %v: %s (%s)\n", targetP95, passMiss(o.p95 <= targetP95), ms(o.p95))
	fmt.Fprintf(w, "  target ratio <= %.1fx: p50 %s (%.2fx), p95 %s (%.2fx)\n\n", targetRatio,
		passMiss(ratio50 <= targetRatio), ratio50, passMiss(ratio95 <= targetRatio), ratio95)
	if len(steps) == 0 {
		return
	}
	reportSteps(w, "the provisioner's", provisioner.ProvisioningSteps(), steps, o.p50)
}

// reportSteps prints the p50 of each step of order that steps holds, and what of total
// (a signup's p50) the steps leave.
func reportSteps(w io.Writer, whose string, order []tenant.Step, steps map[string][]time.Duration, total time.Duration) {
	fmt.Fprintf(w, "  where %s time goes (p50 per step):\n", whose)
	var sum time.Duration
	for _, step := range order {
		ds, ok := steps[string(step)]
		if !ok {
			continue
		}
		p50 := summarize(ds).p50
		sum += p50
		fmt.Fprintf(w, "    %-14s %10s\n", step, ms(p50))
	}
	fmt.Fprintf(w, "    %-14s %10s  (the rest of p50: registry lock, reads and Register)\n", "other", ms(max(0, total-sum)))
}
