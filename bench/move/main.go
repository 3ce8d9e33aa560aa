// Command move measures the online move of a tenant between two Postgres clusters.
//
// It creates a throwaway database on each of the clusters named by -db and -db2
// (superuser URLs on loopback addresses, both with wal_level=logical), a tenant of
// -blogs blogs on the first, and moves it to the second with provisioner.Move while a
// load client writes and reads it as the dataplane would (the tenant's role where the
// registry places it, a write refused while the registry says frozen and retried). It
// reports:
//
//  1. how long writes were refused: the longest stretch one write waited (client side)
//     and the registry's frozen window (from the writes_frozen to the move_switch
//     audit entries), against the target of at most 1 s, and the refused attempts;
//  2. the copy throughput in rows per second (the subscription's initial copy) and the
//     whole move's duration;
//  3. next to it, a raw pipe between the same clusters in the same run: the blogs table
//     read with COPY TO STDOUT piped into COPY FROM STDIN of a table of the same shape.
//
// Both databases and the tenant's roles are dropped at the end. Targets are
// informational: the exit status is 0 unless the run itself fails.
//
//	scripts/test-services.sh --pg --pg2 -- go run ./bench/move
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tenantplane/tenantplane/bench/internal/benchdb"
	"github.com/tenantplane/tenantplane/provisioner"
	"github.com/tenantplane/tenantplane/tenant"
)

// logger receives the provisioner's log (-v).
var logger = slog.New(slog.DiscardHandler)

// targetRefused is the bound on the time writes are refused.
const targetRefused = time.Second

// fakeHash stands in for the admin's password hash: the provisioner stores it, never checks it.
const fakeHash = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA"

func main() {
	blogs := flag.Int("blogs", 100000, "blogs of the moved tenant (1-1000000)")
	db1 := flag.String("db", os.Getenv("TENANTPLANE_TEST_DATABASE_URL"), "superuser URL of the source cluster (default $TENANTPLANE_TEST_DATABASE_URL)")
	db2 := flag.String("db2", os.Getenv("TENANTPLANE_TEST_SHARD2_URL"), "superuser URL of the target cluster (default $TENANTPLANE_TEST_SHARD2_URL)")
	writers := flag.Int("writers", 2, "concurrent writing clients (1-16)")
	timeout := flag.Duration("timeout", 10*time.Minute, "give up after this long")
	verbose := flag.Bool("v", false, "log the provisioner's steps with their durations")
	flag.Parse()
	if *verbose {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, *blogs, *writers, *db1, *db2, *timeout, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "move bench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, blogs, writers int, db1, db2 string, timeout time.Duration, out io.Writer) (err error) {
	switch {
	case blogs < 1 || blogs > 1000000:
		return fmt.Errorf("-blogs must be 1..1000000")
	case writers < 1 || writers > 16:
		return fmt.Errorf("-writers must be 1..16")
	case db1 == "" || db2 == "":
		return fmt.Errorf("-db and -db2 are required (scripts/test-services.sh --pg --pg2 sets them)")
	}
	for _, u := range []string{db1, db2} {
		if err := benchdb.RequireLoopback(u); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	var roles []string
	urlA, dropA, err := createDatabase(ctx, db1)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, dropA(roles)) }()
	urlB, dropB, err := createDatabase(ctx, db2)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, dropB(roles)) }()

	if _, err := provisioner.MigrateShared(ctx, urlA); err != nil {
		return fmt.Errorf("migrating the registry: %w", err)
	}
	pool, err := pgxpool.New(ctx, urlA)
	if err != nil {
		return err
	}
	defer pool.Close()
	store := tenant.NewStore(pool)
	shards := map[string]string{"a": urlA, "b": urlB}
	prov, err := provisioner.New(store, provisioner.Config{Shards: []provisioner.Shard{{Name: "a", URL: urlA}, {Name: "b", URL: urlB}}, Logger: logger})
	if err != nil {
		return err
	}
	defer prov.Close()

	reg, err := prov.Register(ctx, provisioner.CreateRequest{Slug: "bench-move", Shard: "a", AdminEmail: "admin@bench.test", AdminPasswordHash: fakeHash, Actor: "bench"})
	if err != nil {
		return err
	}
	roles = append(roles, reg.DBRole)
	t, err := prov.Provision(ctx, reg.ID)
	if err != nil {
		return err
	}
	if t.Status != tenant.StatusActive {
		return fmt.Errorf("provisioning: tenant is %s: %s", t.Status, t.LastError)
	}
	dsn, err := t.ConnString(urlA)
	if err != nil {
		return err
	}
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	if _, err := conn.Exec(ctx, `INSERT INTO blogs (title, description, author_id)
		SELECT 'blog number ' || g, repeat('some words about blog ' || g || ' ', 4), 1 FROM generate_series(1, $1) g`, blogs); err != nil {
		conn.Close(ctx)
		return fmt.Errorf("seeding: %w", err)
	}
	conn.Close(ctx)
	fmt.Fprintf(out, "tenant with %d blogs on cluster 1, moving to cluster 2 under %d writers and 1 reader\n", blogs, writers)

	l := &load{store: store, id: t.ID, shards: shards}
	lctx, stopLoad := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for i := range writers {
		wg.Add(1)
		go func() { defer wg.Done(); l.write(lctx, i) }()
	}
	wg.Add(1)
	go func() { defer wg.Done(); l.read(lctx) }()

	var copyStart, copyEnd time.Time
	var total int64
	start := time.Now()
	moved, merr := prov.Move(ctx, t.Slug, provisioner.MoveRequest{Shard: "b", Actor: "bench", Progress: func(s provisioner.MoveState) {
		if s.TotalRows == 0 {
			return
		}
		if copyStart.IsZero() {
			copyStart = time.Now()
		}
		if s.CopiedRows == s.TotalRows && copyEnd.IsZero() {
			copyEnd, total = time.Now(), s.TotalRows
		}
	}})
	elapsed := time.Since(start)
	time.Sleep(300 * time.Millisecond)
	stopLoad()
	wg.Wait()
	if merr != nil {
		return fmt.Errorf("moving: %w", merr)
	}
	if l.err != nil {
		return fmt.Errorf("load: %w", l.err)
	}
	frozen, err := frozenWindow(ctx, store, t.ID)
	if err != nil {
		return err
	}
	maxWait := time.Duration(l.maxWait.Load())
	fmt.Fprintf(out, "\nmove: %s total, tenant now on shard %s\n", round(elapsed), moved.Shard)
	fmt.Fprintf(out, "writes refused: longest wait of one write %s, registry frozen window %s (target ≤ %s: %s)\n",
		round(maxWait), round(frozen), targetRefused, verdict(max(maxWait, frozen) <= targetRefused))
	fmt.Fprintf(out, "refused write attempts %d, acknowledged writes %d, reads %d (none failed)\n", l.refused.Load(), l.acked.Load(), l.reads.Load())
	copyRate := 0.0
	if d := copyEnd.Sub(copyStart); !copyEnd.IsZero() && d > 0 {
		copyRate = float64(total) / d.Seconds()
		fmt.Fprintf(out, "initial copy: %d rows in %s, %.0f rows/s\n", total, round(d), copyRate)
	}

	// The raw pipe between the same clusters: the source's blogs (left behind by the
	// move, unwritable) into a table of the same shape on the target.
	rawRows, rawTime, err := rawPipe(ctx, urlA, urlB, moved, t)
	if err != nil {
		return err
	}
	rawRate := float64(rawRows) / rawTime.Seconds()
	fmt.Fprintf(out, "raw COPY pipe of blogs: %d rows in %s, %.0f rows/s", rawRows, round(rawTime), rawRate)
	if copyRate > 0 {
		fmt.Fprintf(out, " (the move's copy at %.0f%% of it)", 100*copyRate/rawRate)
	}
	fmt.Fprintln(out)
	if _, err := prov.DropMovedSources(ctx, 0); err != nil {
		return err
	}
	return nil
}

// load writes and reads the tenant where the registry places it.
type load struct {
	store  *tenant.Store
	id     string
	shards map[string]string

	acked, refused, reads atomic.Int64
	maxWait               atomic.Int64 // nanoseconds
	// mu guards err, the first failure.
	mu  sync.Mutex
	err error
}

func (l *load) fail(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err == nil {
		l.err = err
	}
}

func (l *load) conn(ctx context.Context, conns map[string]*pgx.Conn) (*pgx.Conn, *tenant.Tenant, error) {
	t, err := l.store.GetByID(ctx, l.id)
	if err != nil {
		return nil, nil, err
	}
	if c := conns[t.Shard]; c != nil && !c.IsClosed() {
		return c, t, nil
	}
	dsn, err := t.ConnString(l.shards[t.Shard])
	if err != nil {
		return nil, nil, err
	}
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return nil, nil, err
	}
	conns[t.Shard] = c
	return c, t, nil
}

func closeAll(conns map[string]*pgx.Conn) {
	for _, c := range conns {
		_ = c.Close(context.Background())
	}
}

func (l *load) write(ctx context.Context, n int) {
	conns := map[string]*pgx.Conn{}
	defer closeAll(conns)
	for i := 0; ctx.Err() == nil; i++ {
		began := time.Now()
		for ctx.Err() == nil {
			c, t, err := l.conn(ctx, conns)
			if err == nil && t.WritesFrozen {
				l.refused.Add(1)
				time.Sleep(2 * time.Millisecond)
				continue
			}
			if err == nil {
				_, err = c.Exec(ctx, `INSERT INTO blogs (title, author_id) VALUES ($1, 1)`, fmt.Sprintf("load %d-%d", n, i))
			}
			if err == nil {
				l.acked.Add(1)
				if w := time.Since(began); int64(w) > l.maxWait.Load() {
					l.maxWait.Store(int64(w))
				}
				break
			}
			if ctx.Err() != nil {
				return
			}
			// Refused by the frozen source (no privilege, or the session ended).
			if c != nil && !strings.Contains(err.Error(), "42501") {
				_ = c.Close(context.Background())
			}
			l.refused.Add(1)
			time.Sleep(2 * time.Millisecond)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (l *load) read(ctx context.Context) {
	conns := map[string]*pgx.Conn{}
	defer closeAll(conns)
	for ctx.Err() == nil {
		c, _, err := l.conn(ctx, conns)
		var n int64
		if err == nil {
			err = c.QueryRow(ctx, `SELECT count(*) FROM blogs WHERE id % 100 = 0`).Scan(&n)
		}
		if err != nil && ctx.Err() == nil {
			l.fail(fmt.Errorf("read: %w", err))
			return
		}
		l.reads.Add(1)
		time.Sleep(5 * time.Millisecond)
	}
}

// frozenWindow is the time between the tenant's writes_frozen and move_switch audit
// entries.
func frozenWindow(ctx context.Context, store *tenant.Store, id string) (time.Duration, error) {
	var d time.Duration
	err := store.Pool().QueryRow(ctx, `SELECT (max(created_at) FILTER (WHERE action = 'move_switch')) -
		(max(created_at) FILTER (WHERE action = 'writes_frozen')) FROM tenant_events WHERE tenant_id = $1`, id).Scan(&d)
	if err != nil {
		return 0, fmt.Errorf("reading the frozen window: %w", err)
	}
	return d, nil
}

// rawPipe copies the source's blogs into a table like the target's blogs, in the target
// tenant's database, with COPY TO STDOUT piped into COPY FROM STDIN.
func rawPipe(ctx context.Context, urlA, urlB string, moved, src *tenant.Tenant) (int64, time.Duration, error) {
	from, err := pgx.Connect(ctx, urlA)
	if err != nil {
		return 0, 0, err
	}
	defer from.Close(context.WithoutCancel(ctx))
	to, err := pgx.Connect(ctx, urlB)
	if err != nil {
		return 0, 0, err
	}
	defer to.Close(context.WithoutCancel(ctx))
	blogs := pgx.Identifier{src.SchemaName, "blogs"}.Sanitize()
	raw := pgx.Identifier{moved.SchemaName, "raw_blogs"}.Sanitize()
	if _, err := to.Exec(ctx, `CREATE TABLE `+raw+` (LIKE `+pgx.Identifier{moved.SchemaName, "blogs"}.Sanitize()+` INCLUDING ALL)`); err != nil {
		return 0, 0, fmt.Errorf("creating the raw table: %w", err)
	}
	var cols string
	if err := from.QueryRow(ctx, `SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) FROM pg_attribute
		WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped AND attgenerated = ''`, blogs).Scan(&cols); err != nil {
		return 0, 0, fmt.Errorf("reading columns: %w", err)
	}
	start := time.Now()
	pr, pw := io.Pipe()
	sent := make(chan error, 1)
	go func() {
		_, err := from.PgConn().CopyTo(ctx, pw, `COPY `+blogs+` (`+cols+`) TO STDOUT`)
		pw.CloseWithError(err)
		sent <- err
	}()
	tag, err := to.PgConn().CopyFrom(ctx, pr, `COPY `+raw+` (`+cols+`) FROM STDIN`)
	_ = pr.Close()
	if serr := <-sent; err == nil {
		err = serr
	}
	if err != nil {
		return 0, 0, fmt.Errorf("raw pipe: %w", err)
	}
	return tag.RowsAffected(), time.Since(start), nil
}

// createDatabase makes a throwaway database on the cluster and returns its URL and a
// function that drops it and the given roles.
func createDatabase(ctx context.Context, adminURL string) (string, func(roles []string) error, error) {
	name, dbURL, err := benchdb.Create(ctx, adminURL, "bench_move_")
	if err != nil {
		return "", nil, err
	}
	drop := func(roles []string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		return benchdb.Drop(ctx, adminURL, name, roles)
	}
	return dbURL, drop, nil
}

func round(d time.Duration) time.Duration {
	if d > time.Second {
		return d.Round(10 * time.Millisecond)
	}
	return d.Round(100 * time.Microsecond)
}

func verdict(ok bool) string {
	if ok {
		return "ok"
	}
	return "over"
}
