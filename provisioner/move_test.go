package provisioner_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tenantplane/tenantplane/apperr"
	"github.com/tenantplane/tenantplane/internal/pgtest"
	"github.com/tenantplane/tenantplane/provisioner"
	"github.com/tenantplane/tenantplane/tenant"
)

// moveSetup is a bundle with shard "a" on the first cluster and shard "b" on the second.
func moveSetup(t *testing.T) *bundle {
	t.Helper()
	shard2 := pgtest.NewDatabase(t, pgtest.Require(t, pgtest.EnvShard2URL))
	b := setup(t, func(c *provisioner.Config) {
		c.Shards = append(c.Shards, provisioner.Shard{Name: "b", URL: shard2})
	})
	// Moved-away sources (and their roles on the first cluster) go with the test.
	t.Cleanup(func() {
		if _, err := b.prov.DropMovedSources(context.Background(), 0); err != nil {
			t.Errorf("dropping moved-away sources: %v", err)
		}
	})
	return b
}

// seededOnA creates a seeded tenant in schema isolation on shard a.
func (b *bundle) seededOnA(t *testing.T, slug string) *tenant.Tenant {
	t.Helper()
	req := request(slug, tenant.IsolationSchema)
	req.Shard = "a"
	tn := b.register(t, b.prov, req)
	if got, err := b.prov.Provision(b.ctx, tn.ID); err != nil || got.Status != tenant.StatusActive {
		t.Fatalf("provisioning %s: %+v, %v", slug, got, err)
	}
	tn = b.get(t, tn.ID)
	b.seed(t, tn)
	return tn
}

// tenantData dumps the tenant's moved tables as served from its registry placement.
func (b *bundle) tenantData(t *testing.T, id string) map[string]string {
	t.Helper()
	conn := b.tenantConn(t, b.get(t, id))
	out := map[string]string{}
	for _, table := range append(exportedTables, "refresh_tokens") {
		out[table] = dump(t, b.ctx, conn, table)
	}
	return out
}

func requireSameDump(t *testing.T, got, want map[string]string) {
	t.Helper()
	for table, w := range want {
		if got[table] != w {
			t.Errorf("table %s differs after the move:\n got %.300q\nwant %.300q", table, got[table], w)
		}
	}
}

// requireNoReplication fails if a publication, replication slot or subscription of the
// tenant's move exists on either cluster.
func (b *bundle) requireNoReplication(t *testing.T, tenantID string) {
	t.Helper()
	name := provisioner.MoveReplicationName(tenantID)
	for _, sh := range b.cfg.Shards {
		shard := sh.Name
		conn := connect(t, b.ctx, sh.URL)
		var pubs, slots, subs int
		if err := conn.QueryRow(b.ctx, `SELECT (SELECT count(*) FROM pg_publication WHERE pubname = $1),
			(SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE $1 || '%' OR slot_name ~ '^pg_[0-9]+_sync_'
				AND database = current_database()),
			(SELECT count(*) FROM pg_subscription WHERE subname = $1)`, name).Scan(&pubs, &slots, &subs); err != nil {
			t.Fatalf("reading replication objects on %s: %v", shard, err)
		}
		if pubs+slots+subs != 0 {
			t.Errorf("shard %s holds %d publications, %d slots, %d subscriptions of the move; want none", shard, pubs, slots, subs)
		}
	}
}

// requireNoTarget fails if the tenant's schema exists on shard b or its role on b's
// cluster.
func (b *bundle) requireNoTarget(t *testing.T, tn *tenant.Tenant) {
	t.Helper()
	conn := connect(t, b.ctx, b.shardURL(t, "b"))
	if got := tablesIn(t, b.ctx, conn, tn.SchemaName); len(got) != 0 {
		t.Errorf("shard b still holds the tenant's tables %v", got)
	}
	if roleExists(b.ctx, conn, tn.DBRole) {
		t.Errorf("the tenant's role %s is still on shard b's cluster", tn.DBRole)
	}
}

// requireWritable fails unless the tenant takes a write where the registry serves it.
func (b *bundle) requireWritable(t *testing.T, id string) {
	t.Helper()
	tn := b.get(t, id)
	if tn.WritesFrozen {
		t.Fatalf("tenant %s is still frozen", tn.Slug)
	}
	if _, err := b.tenantConn(t, tn).Exec(b.ctx, `INSERT INTO blogs (title, author_id) VALUES ('after the move', 1)`); err != nil {
		t.Fatalf("writing to %s on shard %s: %v", tn.Slug, tn.Shard, err)
	}
}

// moveLoad writes and reads a tenant as the dataplane would: through the tenant's role
// where the registry places it, writes refused while the registry says frozen (and
// retried), and refused by Postgres only with the freeze's errors.
type moveLoad struct {
	b  *bundle
	id string

	acked          sync.Map // title → true, for every write acknowledged
	refused, reads atomic.Int64
	failures       chan error
}

func (l *moveLoad) conn(ctx context.Context, conns map[string]*pgx.Conn) (*pgx.Conn, *tenant.Tenant, error) {
	tn, err := l.b.store.GetByID(ctx, l.id)
	if err != nil {
		return nil, nil, err
	}
	key := tn.Shard + "/" + tn.DatabaseName
	if c := conns[key]; c != nil && !c.IsClosed() {
		return c, tn, nil
	}
	var shardURL string
	for _, sh := range l.b.cfg.Shards {
		if sh.Name == tn.Shard {
			shardURL = sh.URL
		}
	}
	dsn, err := tn.ConnString(shardURL)
	if err != nil {
		return nil, nil, err
	}
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return nil, nil, err
	}
	conns[key] = c
	return c, tn, nil
}

// freezeError reports whether err is how a frozen source refuses a write: no privilege
// left, or the session ended while it was writing.
func freezeError(err error) bool {
	c := pgCode(err)
	return c == "42501" || c == "57P01" || errors.Is(err, context.Canceled) || strings.Contains(err.Error(), "conn closed") ||
		strings.Contains(err.Error(), "unexpected EOF") || strings.Contains(err.Error(), "closed")
}

func (l *moveLoad) writer(ctx context.Context, n int) {
	conns := map[string]*pgx.Conn{}
	defer func() {
		for _, c := range conns {
			_ = c.Close(context.Background())
		}
	}()
	for i := 0; ctx.Err() == nil; i++ {
		title := fmt.Sprintf("load %d-%d", n, i)
		for ctx.Err() == nil {
			c, tn, err := l.conn(ctx, conns)
			if err == nil && tn.WritesFrozen {
				l.refused.Add(1)
				time.Sleep(5 * time.Millisecond)
				continue
			}
			if err == nil {
				_, err = c.Exec(ctx, `INSERT INTO blogs (title, author_id) VALUES ($1, 1)`, title)
			}
			if err == nil {
				l.acked.Store(title, true)
				break
			}
			if ctx.Err() != nil {
				return
			}
			if !freezeError(err) {
				l.failures <- fmt.Errorf("write %s: %w", title, err)
				return
			}
			l.refused.Add(1)
			time.Sleep(5 * time.Millisecond)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func (l *moveLoad) reader(ctx context.Context) {
	conns := map[string]*pgx.Conn{}
	defer func() {
		for _, c := range conns {
			_ = c.Close(context.Background())
		}
	}()
	for ctx.Err() == nil {
		c, _, err := l.conn(ctx, conns)
		var n int64
		if err == nil {
			err = c.QueryRow(ctx, `SELECT count(*) FROM blogs`).Scan(&n)
		}
		if err != nil && ctx.Err() == nil {
			l.failures <- fmt.Errorf("read: %w", err)
			return
		}
		l.reads.Add(1)
		time.Sleep(3 * time.Millisecond)
	}
}

func TestMoveBetweenClustersUnderLoad(t *testing.T) {
	t.Parallel()
	b := moveSetup(t)
	src := b.seededOnA(t, "move-load")
	if _, err := b.tenantConn(t, src).Exec(b.ctx, `INSERT INTO blogs (title, author_id) SELECT 'bulk ' || g, 2 FROM generate_series(1, 5000) g`); err != nil {
		t.Fatal(err)
	}

	l := &moveLoad{b: b, id: src.ID, failures: make(chan error, 16)}
	ctx, stop := context.WithCancel(b.ctx)
	var wg sync.WaitGroup
	for i := range 3 {
		wg.Add(1)
		go func() { defer wg.Done(); l.writer(ctx, i) }()
	}
	wg.Add(1)
	go func() { defer wg.Done(); l.reader(ctx) }()

	var states []provisioner.MoveState
	var mu sync.Mutex
	got, err := b.prov.Move(b.ctx, src.Slug, provisioner.MoveRequest{Shard: "b", Actor: "tester", Progress: func(s provisioner.MoveState) {
		mu.Lock()
		defer mu.Unlock()
		states = append(states, s)
	}})
	// Some more load on the target before it stops.
	time.Sleep(200 * time.Millisecond)
	stop()
	wg.Wait()
	close(l.failures)
	for err := range l.failures {
		t.Error(err)
	}
	if err != nil {
		t.Fatalf("Move: %v", err)
	}
	if got.Shard != "b" || got.Isolation != tenant.IsolationSchema || got.WritesFrozen || got.Status != tenant.StatusActive {
		t.Fatalf("moved tenant = %+v, want active on shard b, not frozen", got)
	}

	// Every acknowledged write is on the target.
	conn := b.tenantConn(t, got)
	titles := map[string]bool{}
	rows, err := conn.Query(b.ctx, `SELECT title FROM blogs`)
	if err != nil {
		t.Fatal(err)
	}
	list, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range list {
		titles[s] = true
	}
	acked := 0
	l.acked.Range(func(k, _ any) bool {
		acked++
		if !titles[k.(string)] {
			t.Errorf("acknowledged write %s is missing on the target", k)
		}
		return true
	})
	if acked == 0 || l.reads.Load() == 0 {
		t.Fatalf("the load did %d writes and %d reads; want some of both", acked, l.reads.Load())
	}
	t.Logf("%d writes acknowledged, %d refused, %d reads", acked, l.refused.Load(), l.reads.Load())

	// Ids continue past the source's: the sequences came along.
	b.requireWritable(t, got.ID)
	mu.Lock()
	last := states[len(states)-1]
	mu.Unlock()
	if last.TotalRows == 0 || last.CopiedRows != last.TotalRows {
		t.Errorf("last progress = %+v, want every row copied", last)
	}
	if st, err := b.prov.MoveStatus(b.ctx, src.Slug); err != nil || st != nil {
		t.Errorf("MoveStatus after the move = %+v, %v; want none", st, err)
	}
	b.requireNoReplication(t, src.ID)
	ev := b.events(t, src.ID)
	for _, want := range []string{"move_start", "writes_frozen", "move_switch"} {
		if count(ev, want) != 1 {
			t.Errorf("audit log %v: want one %s", ev, want)
		}
	}

	// The source stays, unwritable by the tenant, until the grace period ends.
	old := *got
	old.Shard = "a"
	if _, err := b.tenantConn(t, &old).Exec(b.ctx, `INSERT INTO blogs (title, author_id) VALUES ('to the old place', 1)`); pgCode(err) != "42501" {
		t.Errorf("writing to the moved-away source: %v, want permission denied", err)
	}
	if n, err := b.prov.DropMovedSources(b.ctx, time.Hour); err != nil || n != 0 {
		t.Errorf("DropMovedSources before the grace = %d, %v; want 0", n, err)
	}
	if n, err := b.prov.DropMovedSources(b.ctx, 0); err != nil || n != 1 {
		t.Fatalf("DropMovedSources = %d, %v; want 1", n, err)
	}
	if tables := tablesIn(t, b.ctx, b.admin, src.SchemaName); len(tables) != 0 {
		t.Errorf("the source schema still holds %v after DropMovedSources", tables)
	}
	if roleExists(b.ctx, b.admin, src.DBRole) {
		t.Errorf("the tenant's role is still on the source cluster")
	}
	b.requireWritable(t, got.ID)
}

func TestMoveSchemaToDatabaseWithinCluster(t *testing.T) {
	t.Parallel()
	b := setup(t)
	src := b.seededOnA(t, "move-iso")
	before := b.tenantData(t, src.ID)
	got, err := b.prov.Move(b.ctx, src.Slug, provisioner.MoveRequest{Isolation: tenant.IsolationDatabase, Actor: "tester"})
	if err != nil {
		t.Fatalf("Move: %v", err)
	}
	if got.Shard != "a" || got.Isolation != tenant.IsolationDatabase || got.DatabaseName == "" || got.PoolMode != tenant.PoolDedicated {
		t.Fatalf("moved tenant = %+v, want database isolation with a dedicated pool on shard a", got)
	}
	requireSameDump(t, b.tenantData(t, got.ID), before)
	b.requireWritable(t, got.ID)
	b.requireNoReplication(t, src.ID)
	if n, err := b.prov.DropMovedSources(b.ctx, 0); err != nil || n != 1 {
		t.Fatalf("DropMovedSources = %d, %v; want 1", n, err)
	}
	if tables := tablesIn(t, b.ctx, b.admin, src.SchemaName); len(tables) != 0 {
		t.Errorf("the source schema still holds %v", tables)
	}
	// The role is shared by both sides of the cluster: it stays.
	b.requireWritable(t, got.ID)
}

func TestMoveCrashAfterEachStepFinishes(t *testing.T) {
	t.Parallel()
	testMoveCrashes(t, false)
}

func TestMoveOfflineCrashAfterEachStepFinishes(t *testing.T) {
	t.Parallel()
	testMoveCrashes(t, true)
}

// testMoveCrashes kills a move after each of its steps in turn and resumes it.
func testMoveCrashes(t *testing.T, offline bool) {
	b := moveSetup(t)
	// A move per step: more than the bundle's usual bound on a loaded machine.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	t.Cleanup(cancel)
	b.ctx = ctx
	for i, step := range provisioner.MoveSteps(offline) {
		src := b.seededOnA(t, fmt.Sprintf("mcrash-%d-%s", i, map[bool]string{false: "on", true: "off"}[offline]))
		before := b.tenantData(t, src.ID)
		p := b.newProvisioner(t)
		p.SetAfterStep(provisioner.CrashAt(step))
		_, err := p.Move(b.ctx, src.Slug, provisioner.MoveRequest{Shard: "b", Offline: offline})
		if !errors.Is(err, provisioner.ErrCrash) {
			t.Fatalf("crash after %s: Move = %v, want the simulated crash", step, err)
		}
		// Served from exactly one place meanwhile: where the registry says.
		mid := b.get(t, src.ID)
		requireSameDump(t, b.tenantData(t, mid.ID), before)
		st, err := b.prov.MoveStatus(b.ctx, src.Slug)
		if err != nil || st == nil || st.Step != step || st.ToShard != "b" {
			t.Fatalf("crash after %s: MoveStatus = %+v, %v", step, st, err)
		}
		if _, err := b.prov.Move(b.ctx, src.Slug, provisioner.MoveRequest{Shard: "a"}); apperr.KindOf(err) != apperr.Conflict {
			t.Errorf("crash after %s: another move = %v, want a conflict", step, err)
		}
		got, err := b.newProvisioner(t).Move(b.ctx, src.Slug, provisioner.MoveRequest{})
		if err != nil {
			t.Fatalf("crash after %s: resumed Move: %v", step, err)
		}
		if got.Shard != "b" || got.WritesFrozen {
			t.Fatalf("crash after %s: tenant = %+v, want on shard b, not frozen", step, got)
		}
		requireSameDump(t, b.tenantData(t, got.ID), before)
		b.requireWritable(t, got.ID)
		b.requireNoReplication(t, src.ID)
	}
}

func TestMoveAbortLeavesNothing(t *testing.T) {
	t.Parallel()
	b := moveSetup(t)
	for i, step := range []tenant.Step{tenant.StepMoveRole, tenant.StepMoveSubscription, tenant.StepMoveFreeze, tenant.StepMoveVerify} {
		src := b.seededOnA(t, fmt.Sprintf("mabort-%d", i))
		before := b.tenantData(t, src.ID)
		p := b.newProvisioner(t)
		p.SetAfterStep(provisioner.CrashAt(step))
		if _, err := p.Move(b.ctx, src.Slug, provisioner.MoveRequest{Shard: "b"}); !errors.Is(err, provisioner.ErrCrash) {
			t.Fatalf("crash after %s: Move = %v, want the simulated crash", step, err)
		}
		got, err := b.prov.AbortMove(b.ctx, src.Slug, "tester")
		if err != nil {
			t.Fatalf("abort after %s: %v", step, err)
		}
		if got.Shard != "a" || got.WritesFrozen {
			t.Fatalf("abort after %s: tenant = %+v, want on shard a, not frozen", step, got)
		}
		requireSameDump(t, b.tenantData(t, src.ID), before)
		b.requireWritable(t, src.ID)
		b.requireNoReplication(t, src.ID)
		b.requireNoTarget(t, src)
		if st, err := b.prov.MoveStatus(b.ctx, src.Slug); err != nil || st != nil {
			t.Errorf("abort after %s: MoveStatus = %+v, %v; want none", step, st, err)
		}
		if ev := b.events(t, src.ID); count(ev, "move_abort") != 1 {
			t.Errorf("abort after %s: audit log %v, want one move_abort", step, ev)
		}
	}
	if _, err := b.prov.AbortMove(b.ctx, "mabort-0", "tester"); apperr.KindOf(err) != apperr.NotFound {
		t.Errorf("abort without a move = %v, want not found", err)
	}
}

func TestMoveTargetUnreachableRollsBack(t *testing.T) {
	t.Parallel()
	b := moveSetup(t)
	src := b.seededOnA(t, "move-down")
	before := b.tenantData(t, src.ID)
	shardB := b.shardURL(t, "b")
	dbName := strings.TrimPrefix(mustParsePath(t, shardB), "/")
	admin2 := connect(t, b.ctx, withDatabase(t, shardB, "postgres"))
	setReachable := func(ok bool) {
		if _, err := admin2.Exec(b.ctx, `ALTER DATABASE `+ident(dbName)+` ALLOW_CONNECTIONS `+fmt.Sprint(ok)); err != nil {
			t.Fatal(err)
		}
		if !ok {
			if _, err := admin2.Exec(b.ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1`, dbName); err != nil {
				t.Fatal(err)
			}
		}
	}
	p := b.newProvisioner(t)
	p.SetAfterStep(func(s tenant.Step) error {
		if s == tenant.StepMoveSubscription {
			setReachable(false)
		}
		return nil
	})
	_, err := p.Move(b.ctx, src.Slug, provisioner.MoveRequest{Shard: "b"})
	setReachable(true)
	if err == nil {
		t.Fatal("Move with the target down succeeded")
	}
	t.Logf("Move with the target down: %v", err)
	got := b.get(t, src.ID)
	if got.Shard != "a" || got.WritesFrozen {
		t.Fatalf("tenant = %+v, want on shard a, not frozen", got)
	}
	requireSameDump(t, b.tenantData(t, src.ID), before)
	b.requireWritable(t, src.ID)
	// The target's leftovers go with an abort once it is back.
	if st, _ := b.prov.MoveStatus(b.ctx, src.Slug); st != nil {
		if _, err := b.prov.AbortMove(b.ctx, src.Slug, "tester"); err != nil {
			t.Fatalf("AbortMove once the target is back: %v", err)
		}
	}
	b.requireNoReplication(t, src.ID)
	b.requireNoTarget(t, src)
}

func mustParsePath(t *testing.T, dsn string) string {
	t.Helper()
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	return cfg.Database
}

func TestMoveOffline(t *testing.T) {
	t.Parallel()
	b := moveSetup(t)
	src := b.seededOnA(t, "move-offline")
	before := b.tenantData(t, src.ID)
	var saw atomic.Bool
	got, err := b.prov.Move(b.ctx, src.Slug, provisioner.MoveRequest{Shard: "b", Offline: true, Progress: func(s provisioner.MoveState) {
		if s.Offline && s.TotalRows > 0 {
			saw.Store(true)
		}
	}})
	if err != nil {
		t.Fatalf("offline Move: %v", err)
	}
	if got.Shard != "b" {
		t.Fatalf("tenant = %+v, want on shard b", got)
	}
	requireSameDump(t, b.tenantData(t, got.ID), before)
	b.requireWritable(t, got.ID)
	b.requireNoReplication(t, src.ID)
	if !saw.Load() {
		t.Error("no progress reported")
	}
}

func TestMoveRefusals(t *testing.T) {
	t.Parallel()
	b := moveSetup(t)
	src := b.seededOnA(t, "move-refused")
	for _, c := range []struct {
		req  provisioner.MoveRequest
		kind apperr.Kind
		code string
	}{
		{provisioner.MoveRequest{Shard: "nowhere"}, apperr.Invalid, "invalid_shard"},
		{provisioner.MoveRequest{Shard: "a"}, apperr.Invalid, "move_nothing"},
		{provisioner.MoveRequest{Isolation: "cloud"}, apperr.Invalid, "invalid"},
	} {
		_, err := b.prov.Move(b.ctx, src.Slug, c.req)
		requireAppErr(t, err, c.kind, c.code)
	}
	// A shard whose admin role may not create subscriptions: an online move is refused
	// with the way out, an offline one goes.
	shardB := b.shardURL(t, "b")
	admin2 := connect(t, b.ctx, shardB)
	role := "move_nosuper_" + strings.ReplaceAll(src.ID[:8], "-", "")
	if _, err := admin2.Exec(b.ctx, `CREATE ROLE `+ident(role)+` LOGIN CREATEDB CREATEROLE PASSWORD 'pw'`); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c, err := pgx.Connect(context.Background(), shardB)
		if err == nil {
			_, _ = c.Exec(context.Background(), `DROP ROLE IF EXISTS `+ident(role))
			_ = c.Close(context.Background())
		}
	})
	cfg, err := pgx.ParseConfig(shardB)
	if err != nil {
		t.Fatal(err)
	}
	noSuper := fmt.Sprintf("postgres://%s:pw@%s:%d/%s?sslmode=disable", role, cfg.Host, cfg.Port, cfg.Database)
	p := b.newProvisioner(t, func(c *provisioner.Config) {
		c.Shards = append(c.Shards, provisioner.Shard{Name: "c", URL: noSuper})
	})
	_, err = p.Move(b.ctx, src.Slug, provisioner.MoveRequest{Shard: "c"})
	requireAppErr(t, err, apperr.Unprocessable, "logical_replication_unavailable")
	if !strings.Contains(err.Error(), "offline") {
		t.Errorf("refusal %q does not say to pass the offline option", err)
	}
	if st, _ := b.prov.MoveStatus(b.ctx, src.Slug); st != nil {
		t.Fatalf("a refused move left a record: %+v", st)
	}

	if _, err := b.admin.Exec(b.ctx, `UPDATE tenants SET migrating = true WHERE id = $1`, src.ID); err != nil {
		t.Fatal(err)
	}
	_, err = b.prov.Move(b.ctx, src.Slug, provisioner.MoveRequest{Shard: "b"})
	requireAppErr(t, err, apperr.Conflict, "tenant_migrating")
}

func TestMoveFleetMigrationWaitsForMove(t *testing.T) {
	t.Parallel()
	b := moveSetup(t)
	src := b.seededOnA(t, "move-fleet")
	p := b.newProvisioner(t)
	p.SetAfterStep(provisioner.CrashAt(tenant.StepMoveMigrations))
	if _, err := p.Move(b.ctx, src.Slug, provisioner.MoveRequest{Shard: "b"}); !errors.Is(err, provisioner.ErrCrash) {
		t.Fatalf("Move = %v, want the simulated crash", err)
	}
	fleet := provisioner.NewFleet(b.prov, provisioner.FleetConfig{})
	down := int(latest(t)) - 1
	run, err := fleet.Run(b.ctx, provisioner.RunOptions{To: down, Tenants: []string{src.Slug}, Actor: "tester"})
	if err != nil {
		t.Fatalf("fleet run: %v", err)
	}
	if run.Done != 0 || b.get(t, src.ID).MigrationVersion != latest(t) {
		t.Fatalf("fleet run during the move = %+v; want the tenant left alone", run)
	}
	got, err := b.prov.Move(b.ctx, src.Slug, provisioner.MoveRequest{})
	if err != nil {
		t.Fatalf("resumed Move: %v", err)
	}
	run, err = fleet.Run(b.ctx, provisioner.RunOptions{To: down, Tenants: []string{src.Slug}, Actor: "tester"})
	if err != nil || run.Done != 1 {
		t.Fatalf("fleet run after the move = %+v, %v; want the tenant migrated", run, err)
	}
	if v := b.get(t, got.ID).MigrationVersion; v != int64(down) {
		t.Fatalf("version after the fleet run = %d, want %d", v, down)
	}
}

// TestMoveAfterFleetPlanned moves a tenant after a fleet run planned it and before the
// run reaches it: the run must not migrate the tenant's old placement (whose schema no
// longer serves) nor record a version its new schema does not have. The tenant is
// skipped, saying why, and a later run migrates it where it now is.
func TestMoveAfterFleetPlanned(t *testing.T) {
	t.Parallel()
	b := moveSetup(t)
	src := b.seededOnA(t, "move-planned")
	fleet := provisioner.NewFleet(b.prov, provisioner.FleetConfig{})
	var moveErr error
	fleet.BeforeTenant(func(tn *tenant.Tenant) {
		if tn.ID == src.ID {
			_, moveErr = b.prov.Move(b.ctx, src.Slug, provisioner.MoveRequest{Shard: "b"})
		}
	})
	down := int(latest(t)) - 1
	run, err := fleet.Run(b.ctx, provisioner.RunOptions{To: down, Tenants: []string{src.Slug}, Actor: "tester"})
	if err != nil || moveErr != nil {
		t.Fatalf("fleet run = %v, move during it = %v", err, moveErr)
	}
	moved := b.get(t, src.ID)
	if moved.Shard != "b" {
		t.Fatalf("tenant on shard %q after the move, want b", moved.Shard)
	}
	entries, err := fleet.Entries(b.ctx, run.ID, provisioner.EntryFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if run.Done != 0 || run.Skipped != 1 || len(entries) != 1 || entries[0].State != provisioner.EntrySkipped ||
		!strings.Contains(entries[0].Error+entries[0].Detail, "move") {
		t.Fatalf("fleet run across the move = %+v, entries %+v; want the tenant skipped because it moved", run, entries)
	}
	if moved.MigrationVersion != latest(t) || moved.Migrating {
		t.Fatalf("registry after the skipped run: version %d migrating %v, want %d and not migrating", moved.MigrationVersion, moved.Migrating, latest(t))
	}
	fleet.BeforeTenant(nil)
	run, err = fleet.Run(b.ctx, provisioner.RunOptions{To: down, Tenants: []string{src.Slug}, Actor: "tester"})
	if err != nil || run.Done != 1 {
		t.Fatalf("fleet run after the move = %+v, %v; want the tenant migrated", run, err)
	}
	if v := b.get(t, src.ID).MigrationVersion; v != int64(down) {
		t.Fatalf("version after the later run = %d, want %d", v, down)
	}
}
