// Command fleet measures the fleet migration orchestrator.
//
// It creates a throwaway database on the Postgres cluster named by -db (a superuser URL
// on a loopback address) and measures:
//
//  1. a no-op fleet run over -noop tenants already at the newest version (median of
//     three runs; target ≤ 10 s). The registry rows are created in bulk SQL and have no
//     schema: a run skips such tenants on the registry's word, without a connection.
//  2. a real additive migration (ADD COLUMN and CREATE INDEX on blogs) across -real
//     tenants, against one SQL script doing the same statements directly over one
//     connection, on the same tenants (target: the fleet at ≥ 50% of the script's
//     speed). The tenants' schemas are created in bulk SQL at the newest embedded
//     version, as the tenants' own roles.
//  3. tenants per second of that migration at --parallel 1, 2, 4 and 8, over -rate
//     tenants each.
//
// The database and every role it made are dropped at the end. Targets are
// informational: the exit status is 0 unless the run itself fails.
//
//	scripts/test-services.sh --pg -- go run ./bench/fleet
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"os/signal"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing/fstest"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tenantplane/tenantplane/bench/internal/benchdb"
	"github.com/tenantplane/tenantplane/migrations"
	"github.com/tenantplane/tenantplane/provisioner"
	"github.com/tenantplane/tenantplane/tenant"
)

// Targets of the issue.
const (
	targetNoop  = 10 * time.Second
	targetRatio = 0.5
)

// The benchmark's additive migration, numbered after the newest embedded one.
const (
	additiveUp   = "ALTER TABLE blogs ADD COLUMN subtitle text NOT NULL DEFAULT '';\nCREATE INDEX blogs_subtitle ON blogs (subtitle);\n"
	additiveDown = "DROP INDEX IF EXISTS blogs_subtitle;\nALTER TABLE blogs DROP COLUMN IF EXISTS subtitle;\n"
)

func main() {
	noop := flag.Int("noop", 10000, "tenants of the no-op run (1-100000)")
	nReal := flag.Int("real", 1000, "tenants of the additive migration (1-5000)")
	rate := flag.Int("rate", 200, "tenants migrated at each --parallel level (1-5000, at most -real)")
	dbURL := flag.String("db", os.Getenv("TENANTPLANE_TEST_DATABASE_URL"), "superuser URL of a loopback Postgres cluster (default $TENANTPLANE_TEST_DATABASE_URL)")
	timeout := flag.Duration("timeout", 15*time.Minute, "give up after this long")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, *noop, *nReal, *rate, *dbURL, *timeout, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "fleet bench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, noop, nReal, rate int, dbURL string, timeout time.Duration, out io.Writer) error {
	switch {
	case noop < 1 || noop > 100000:
		return fmt.Errorf("-noop must be between 1 and 100000, not %d", noop)
	case nReal < 1 || nReal > 5000:
		return fmt.Errorf("-real must be between 1 and 5000, not %d", nReal)
	case rate < 1 || rate > nReal:
		return fmt.Errorf("-rate must be between 1 and -real (%d), not %d", nReal, rate)
	case dbURL == "":
		return errors.New("no database: pass -db or set TENANTPLANE_TEST_DATABASE_URL (scripts/test-services.sh --pg does)")
	}
	if err := benchdb.RequireLoopback(dbURL); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	b, err := newBench(ctx, dbURL)
	if err != nil {
		return err
	}
	defer b.close(out)

	var version string
	if err := b.db.QueryRow(ctx, `SELECT current_setting('server_version')`).Scan(&version); err != nil {
		return err
	}
	fmt.Fprintf(out, "fleet migration benchmark: PostgreSQL %s on %s, %d CPUs, tenant migrations 1..%d plus the additive %d\n\n",
		version, hostOf(dbURL), runtime.NumCPU(), b.base, b.next)

	if err := b.noopRun(ctx, out, noop); err != nil {
		return fmt.Errorf("no-op run: %w", err)
	}
	if err := b.additive(ctx, out, nReal, rate); err != nil {
		return fmt.Errorf("additive migration: %w", err)
	}
	return nil
}

// bench is the throwaway database and the fleet on it.
type bench struct {
	adminURL string // the cluster's superuser URL
	url      string // the throwaway database
	name     string
	db       *pgxpool.Pool
	prov     *provisioner.Provisioner
	fleet    *provisioner.Fleet
	base     int // newest embedded tenant migration
	next     int // the additive migration

	// mu guards roles.
	mu    sync.Mutex
	roles []string // made on the cluster, dropped at the end
}

func newBench(ctx context.Context, adminURL string) (*bench, error) {
	latest, err := provisioner.LatestTenantVersion()
	if err != nil {
		return nil, err
	}
	buf := make([]byte, 6)
	_, _ = rand.Read(buf)
	b := &bench{adminURL: adminURL, name: "bench_fleet_" + hex.EncodeToString(buf), base: int(latest), next: int(latest) + 1}
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return nil, fmt.Errorf("connecting to the cluster: %w", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `CREATE DATABASE `+b.name); err != nil {
		return nil, fmt.Errorf("creating the bench database: %w", err)
	}
	u, _ := url.Parse(adminURL)
	u.Path = "/" + b.name
	b.url = u.String()
	fail := func(err error) (*bench, error) {
		b.close(io.Discard)
		return nil, err
	}
	if _, err := provisioner.MigrateShared(ctx, b.url); err != nil {
		return fail(fmt.Errorf("migrating the registry: %w", err))
	}
	cfg, err := pgxpool.ParseConfig(b.url)
	if err != nil {
		return fail(err)
	}
	cfg.MaxConns = 16
	if b.db, err = pgxpool.NewWithConfig(ctx, cfg); err != nil {
		return fail(err)
	}
	set := fstest.MapFS{
		fmt.Sprintf("%06d_blog_subtitle.up.sql", b.next):   {Data: []byte(additiveUp)},
		fmt.Sprintf("%06d_blog_subtitle.down.sql", b.next): {Data: []byte(additiveDown)},
	}
	if err := copyFS(set, migrations.Tenant()); err != nil {
		return fail(err)
	}
	b.prov, err = provisioner.New(tenant.NewStore(b.db), provisioner.Config{
		Shards:           []provisioner.Shard{{Name: "main", URL: b.url}},
		TenantMigrations: set,
	})
	if err != nil {
		return fail(err)
	}
	b.fleet = provisioner.NewFleet(b.prov, provisioner.FleetConfig{})
	return b, nil
}

func copyFS(dst fstest.MapFS, src fs.FS) error {
	entries, err := fs.ReadDir(src, ".")
	if err != nil {
		return err
	}
	for _, e := range entries {
		data, err := fs.ReadFile(src, e.Name())
		if err != nil {
			return err
		}
		dst[e.Name()] = &fstest.MapFile{Data: data}
	}
	return nil
}

// close drops the database and the roles.
func (b *bench) close(out io.Writer) {
	if b.prov != nil {
		b.prov.Close()
	}
	if b.db != nil {
		b.db.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, b.adminURL)
	if err != nil {
		fmt.Fprintln(out, "cleanup: connecting:", err)
		return
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `DROP DATABASE IF EXISTS `+b.name+` WITH (FORCE)`); err != nil {
		fmt.Fprintln(out, "cleanup: dropping the bench database:", err)
	}
	b.mu.Lock()
	roles := b.roles
	b.mu.Unlock()
	for chunk := range slices.Chunk(roles, 500) {
		list := make([]string, len(chunk))
		for i, r := range chunk {
			list[i] = pgx.Identifier{r}.Sanitize()
		}
		if _, err := conn.Exec(ctx, `DROP ROLE IF EXISTS `+strings.Join(list, ", ")); err != nil {
			fmt.Fprintln(out, "cleanup: dropping tenant roles:", err)
			return
		}
	}
}

// noopRun registers n tenants at the newest version and times fleet runs over them.
func (b *bench) noopRun(ctx context.Context, out io.Writer, n int) error {
	start := time.Now()
	if _, err := b.db.Exec(ctx, `INSERT INTO tenants (id, slug, name, status, isolation, shard, schema_name, db_role, db_password,
			admin_email, provisioning_step, migration_version)
		SELECT gen_random_uuid(), 'noop-' || i, 'noop ' || i, 'active', 'schema', 'main', 't_noop_' || i, 'tr_noop_' || i, 'unused',
			'admin@noop-' || i || '.example', 'active', $2
		FROM generate_series(1, $1) AS i`, n, b.next); err != nil {
		return fmt.Errorf("registering tenants: %w", err)
	}
	fmt.Fprintf(out, "[1] no-op fleet run over %d tenants already at version %d\n", n, b.next)
	fmt.Fprintf(out, "    %d registry rows created in bulk SQL in %s (no schemas: a no-op run opens no tenant connection)\n",
		n, round(time.Since(start)))
	var times []time.Duration
	for range 3 {
		start := time.Now()
		run, err := b.fleet.Run(ctx, provisioner.RunOptions{Parallel: 8, Actor: "bench"})
		if err != nil {
			return err
		}
		if run.Skipped != n || run.Failed != 0 {
			return fmt.Errorf("no-op run %s: %d skipped, %d failed of %d", run.ID, run.Skipped, run.Failed, run.Total)
		}
		times = append(times, time.Since(start))
	}
	med := median(times)
	fmt.Fprintf(out, "    runs %s, median %s (%.0f tenants/s, ledger entries included)   target ≤ %s: %s\n\n",
		fmtDurations(times), round(med), float64(n)/med.Seconds(), targetNoop, verdict(med <= targetNoop))
	if _, err := b.db.Exec(ctx, `DELETE FROM tenants WHERE slug LIKE 'noop-%'`); err != nil {
		return fmt.Errorf("removing the no-op tenants: %w", err)
	}
	return nil
}

// benchTenant is a tenant of the additive measurements.
type benchTenant struct {
	slug, schema string
}

// additive times the additive migration by SQL script and by fleet run, then the fleet
// at each --parallel level.
func (b *bench) additive(ctx context.Context, out io.Writer, n, rate int) error {
	start := time.Now()
	ts, err := b.createTenants(ctx, n)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "[2] additive migration (ADD COLUMN + CREATE INDEX on blogs) across %d tenants\n", n)
	fmt.Fprintf(out, "    %d tenants (role, schema at version %d as the tenant's role, registry row) created in bulk SQL in %s\n",
		n, b.base, round(time.Since(start)))

	// The script: the same statements, one connection, each tenant's in one round trip.
	script, err := b.script(ctx, ts, additiveUp)
	if err != nil {
		return err
	}
	if _, err := b.script(ctx, ts, additiveDown); err != nil {
		return err
	}
	fleetTime, err := b.fleetUp(ctx, nil, 8, n)
	if err != nil {
		return err
	}
	ratio := script.Seconds() / fleetTime.Seconds()
	fmt.Fprintf(out, "    SQL script, one connection:   %8s  %6.0f tenants/s\n", round(script), float64(n)/script.Seconds())
	fmt.Fprintf(out, "    fleet run, --parallel 8:      %8s  %6.0f tenants/s  (per tenant: one transaction on a pooled connection acting as its role, under the golang-migrate lock, plus one ledger write)\n",
		round(fleetTime), float64(n)/fleetTime.Seconds())
	fmt.Fprintf(out, "    fleet speed: %.0f%% of the script's   target ≥ %.0f%%: %s\n\n", ratio*100, targetRatio*100, verdict(ratio >= targetRatio))

	fmt.Fprintf(out, "[3] tenants/second of the additive migration by --parallel (%d tenants each)\n", rate)
	slugs := make([]string, rate)
	for i := range slugs {
		slugs[i] = ts[i].slug
	}
	for _, p := range []int{1, 2, 4, 8} {
		down, err := b.fleet.Run(ctx, provisioner.RunOptions{To: b.base, Parallel: p, Tenants: slugs, Actor: "bench"})
		if err != nil {
			return err
		}
		if down.Done != rate {
			return fmt.Errorf("down run %s: %d done, %d failed of %d: %+v", down.ID, down.Done, down.Failed, rate, down.Failures)
		}
		d, err := b.fleetUp(ctx, slugs, p, rate)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "    --parallel %d: %6.0f tenants/s  (%s)\n", p, float64(rate)/d.Seconds(), round(d))
	}
	return nil
}

// fleetUp times a fleet run to the newest version and checks every tenant got there.
func (b *bench) fleetUp(ctx context.Context, slugs []string, parallel, want int) (time.Duration, error) {
	start := time.Now()
	run, err := b.fleet.Run(ctx, provisioner.RunOptions{Parallel: parallel, Tenants: slugs, Actor: "bench"})
	if err != nil {
		return 0, err
	}
	d := time.Since(start)
	if run.Done != want || run.Failed != 0 {
		return 0, fmt.Errorf("fleet run %s: %d done, %d failed of %d: %+v", run.ID, run.Done, run.Failed, want, run.Failures)
	}
	return d, nil
}

// script runs sql in every tenant's schema over one connection, as the superuser.
func (b *bench) script(ctx context.Context, ts []benchTenant, sql string) (time.Duration, error) {
	conn, err := pgx.Connect(ctx, b.url)
	if err != nil {
		return 0, err
	}
	defer conn.Close(ctx)
	start := time.Now()
	for _, t := range ts {
		if _, err := conn.Exec(ctx, `SET search_path TO `+pgx.Identifier{t.schema}.Sanitize()+";\n"+sql); err != nil {
			return 0, fmt.Errorf("script on %s: %w", t.slug, err)
		}
	}
	return time.Since(start), nil
}

// createTenants registers n tenants and creates their roles and schemas, at the newest
// embedded version, in bulk over a few connections.
func (b *bench) createTenants(ctx context.Context, n int) ([]benchTenant, error) {
	if _, err := b.db.Exec(ctx, `CREATE EXTENSION IF NOT EXISTS pg_trgm WITH SCHEMA public`); err != nil {
		return nil, fmt.Errorf("creating pg_trgm: %w", err)
	}
	var ddl strings.Builder
	entries, err := fs.ReadDir(migrations.Tenant(), ".")
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".up.sql") {
			data, err := fs.ReadFile(migrations.Tenant(), e.Name())
			if err != nil {
				return nil, err
			}
			ddl.Write(data)
			ddl.WriteString("\n")
		}
	}
	schemaSQL := ddl.String()

	ts := make([]benchTenant, n)
	rows := make([]*tenant.Tenant, n)
	for i := range n {
		slug := fmt.Sprintf("bench-%05d", i)
		names := tenant.NewNames(slug, tenant.IsolationSchema)
		rows[i] = &tenant.Tenant{ID: uuid.NewString(), Slug: slug, SchemaName: names.Schema, DBRole: names.Role, DBPassword: tenant.NewPassword()}
		ts[i] = benchTenant{slug: slug, schema: names.Schema}
	}
	b.mu.Lock()
	for _, t := range rows {
		b.roles = append(b.roles, t.DBRole)
	}
	b.mu.Unlock()

	const workers = 4
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			conn, err := pgx.Connect(ctx, b.url)
			if err != nil {
				errs[w] = err
				return
			}
			defer conn.Close(ctx)
			for i := w; i < n; i += workers {
				t := rows[i]
				role, schema := pgx.Identifier{t.DBRole}.Sanitize(), pgx.Identifier{t.SchemaName}.Sanitize()
				sql := fmt.Sprintf(`CREATE ROLE %[1]s LOGIN NOINHERIT PASSWORD '%[3]s';
					CREATE SCHEMA %[2]s AUTHORIZATION %[1]s;
					SET ROLE %[1]s;
					SET search_path TO %[2]s;
					%[4]s
					CREATE TABLE schema_migrations (version bigint NOT NULL PRIMARY KEY, dirty boolean NOT NULL);
					INSERT INTO schema_migrations VALUES (%[5]d, false);
					RESET ROLE;
					RESET search_path;`, role, schema, t.DBPassword, schemaSQL, b.base)
				if _, err := conn.Exec(ctx, sql); err != nil {
					errs[w] = fmt.Errorf("creating tenant %s: %w", t.Slug, err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	ids, slugs, schemas, roles, passwords := make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	for i, t := range rows {
		ids[i], slugs[i], schemas[i], roles[i], passwords[i] = t.ID, t.Slug, t.SchemaName, t.DBRole, t.DBPassword
	}
	_, err = b.db.Exec(ctx, `INSERT INTO tenants (id, slug, name, status, isolation, shard, schema_name, db_role, db_password,
			admin_email, provisioning_step, migration_version, created_at)
		SELECT u.id::uuid, u.slug, u.slug, 'active', 'schema', 'main', u.schema, u.role, u.password, 'admin@' || u.slug || '.example',
			'active', $6, now() + u.n * interval '1 microsecond'
		FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[]) WITH ORDINALITY AS u(id, slug, schema, role, password, n)`,
		ids, slugs, schemas, roles, passwords, b.base)
	if err != nil {
		return nil, fmt.Errorf("registering tenants: %w", err)
	}
	return ts, nil
}

func hostOf(dbURL string) string {
	u, err := url.Parse(dbURL)
	if err != nil {
		return "?"
	}
	return u.Host
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

func round(d time.Duration) time.Duration {
	if d > time.Second {
		return d.Round(10 * time.Millisecond)
	}
	return d.Round(time.Millisecond)
}

func fmtDurations(ds []time.Duration) string {
	parts := make([]string, len(ds))
	for i, d := range ds {
		parts[i] = round(d).String()
	}
	return strings.Join(parts, " ")
}

func verdict(ok bool) string {
	if ok {
		return "PASS"
	}
	return "MISS"
}
