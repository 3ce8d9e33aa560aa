// Package pool keeps the dataplane's tenant connection pools in an LRU, with a global
// budget on the Postgres connections all pools hold together. A tenant is served in one
// of two modes (tenant.PoolMode, stored in the registry):
//
//   - shared (the default): shard-wide pools logged in as tenant.GatewayRole, a NOINHERIT
//     role with no privileges of its own that is a member of every tenant role. Every
//     statement runs in a transaction bound to the tenant by set_config('role', ...) and
//     set_config('search_path', ...), local to the transaction and sent in the same
//     pipeline (a read is one round trip; see shared), with prepared statements kept per
//     connection and tenant schema. A shard's pool is split into groups of connections
//     (one each by default) and each tenant's work runs on its first candidate group (a
//     hash of its id), spilling onto the next ones only while the tenant itself has work
//     running (see Manager.leaseShared): a backend then keeps the catalog caches and
//     statements of a fraction of the tenants, and switching a connection between
//     tenants stays cheap. One tenant holds at most Config.SharedTenantConns
//     connections at once (noisy neighbour).
//   - dedicated: one pool per tenant whose connections log in as the tenant's own role
//     with its schema as the search path (tenant.ConnString), so no query can reach
//     another tenant whatever it says. Database isolation tenants use it.
//
// Config.Mode forces one mode for every schema tenant: shared for deployments behind a
// transaction pooler (PgBouncer 1.21 or later, for the prepared statements), dedicated
// to compare.
//
// A read that fails because its connection was killed under it (pgerr.Retryable) runs
// again on another connection, up to attempts times in all. A write is retried only when
// its transaction met a table changed under a prepared plan (pgerr.StalePlan), which
// rolled it back.
//
// An evicted pool is closed once the work that was using it has ended: eviction never
// fails or blocks a request. A new connection that would exceed the budget first closes
// an idle connection of another pool, then waits briefly for one to be freed, then fails
// with an Unavailable error (503).
package pool

import (
	"cmp"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tenantplane/tenantplane/apperr"
	"github.com/tenantplane/tenantplane/pgerr"
	"github.com/tenantplane/tenantplane/tenant"
)

// DB is the part of pgx that request code uses; *pgxpool.Conn and pgx.Tx both have it.
type DB interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

var (
	_ DB = (*pgxpool.Conn)(nil)
	_ DB = (pgx.Tx)(nil)
)

// Config configures a Manager.
type Config struct {
	// Shards maps a shard name to its admin URL. Pools use only its host, port,
	// database and options: dedicated pools log in as the tenant's role, shared pools
	// as tenant.GatewayRole. The admin credentials serve once per shard, to create the
	// gateway role if absent and set its password (derived from the admin password, see
	// gatewayPassword), never for a pooled connection.
	Shards map[string]string
	// Mode, when set, serves every tenant in that mode whatever its registry row says,
	// but for database isolation tenants, always dedicated.
	Mode tenant.PoolMode
	// MaxPools is how many dedicated pools the LRU holds (default 100). The groups of
	// the shared pools (Budget/GroupConns per shard) are kept besides, never evicted.
	MaxPools int
	// Budget bounds the Postgres connections open across all pools (default 40).
	Budget int
	// PerTenantConns bounds the connections of one tenant's dedicated pool (default 4).
	PerTenantConns int32
	// GroupConns is the size of a group of a shared pool (default 1): a shard's shared
	// pool is Budget/GroupConns groups. Each tenant has a stable list of candidate
	// groups (enough for SharedTenantConns connections, from a hash of its id) and takes
	// the first that has a connection free, else waits on the first: a tenant's work
	// stays on a few connections, each connection serves a fraction of the tenants.
	GroupConns int32
	// SharedTenantConns bounds the connections of a shared pool that one tenant's work
	// holds at once (default PerTenantConns, at most Budget).
	SharedTenantConns int
	// Statements bounds the prepared statements kept on each shared connection
	// (default DefaultStatements): more holds a larger mix of tenants' statements, at
	// about 24 KB of the backend's memory each.
	Statements int
	// BudgetWait is how long a new connection waits for room in the budget before the
	// request is answered 503 (default 2 s).
	BudgetWait time.Duration
	// AcquireTimeout bounds the wait for a connection of a pool (default BudgetWait + 3 s).
	AcquireTimeout time.Duration
	// IdleTimeout closes connections idle for that long (default 1 min).
	IdleTimeout time.Duration
	// AppName is the application_name of every connection (default "tenantplane-dataplane").
	AppName string
	// Logger receives connection failures (default: discard).
	Logger *slog.Logger
}

// Stats are counters of a Manager since it was created.
type Stats struct {
	Hits         int64 `json:"hits"`          // units of work (Read, Write) that found their pool in the LRU
	Misses       int64 `json:"misses"`        // units of work that opened a pool
	Evictions    int64 `json:"evictions"`     // pools pushed out of the LRU
	Pools        int   `json:"pools"`         // pools open now: in the LRU and the shared groups
	Closing      int   `json:"closing"`       // evicted pools still finishing their work
	OpenConns    int   `json:"open_conns"`    // Postgres connections open now, all pools
	Budget       int   `json:"budget"`        // the connection budget
	Waits        int64 `json:"waits"`         // new connections that waited for room in the budget
	WaitTimeouts int64 `json:"wait_timeouts"` // waits that gave up (answered 503)
	Reclaimed    int64 `json:"reclaimed"`     // idle connections closed to make room
	ShareWaits   int64 `json:"share_waits"`   // units of work that waited for their tenant's share of a shared pool
	Retries      int64 `json:"retries"`       // units of work run again (a killed connection, a stale plan)
	// Switches counts units of work on a shared connection that last served another
	// tenant: the affinity of tenants to connections (0 when each connection serves one).
	Switches int64 `json:"switches"`
	// SharedConns are the shared connections open now; TenantsPerConn the mean of the
	// distinct tenants each has served, MaxTenantsPerConn the most on one of them.
	SharedConns       int     `json:"shared_conns"`
	TenantsPerConn    float64 `json:"tenants_per_conn"`
	MaxTenantsPerConn int     `json:"max_tenants_per_conn"`
}

// Manager holds the pools. Create it with New; Close it when done.
type Manager struct {
	cfg    Config
	log    *slog.Logger
	tokens chan struct{} // one element per open connection

	waiters      atomic.Int32
	hits         atomic.Int64
	retries      atomic.Int64
	misses       atomic.Int64
	evictions    atomic.Int64
	waits        atomic.Int64
	waitTimeouts atomic.Int64
	shareWaits   atomic.Int64
	reclaimed    atomic.Int64
	switches     atomic.Int64
	closingWG    sync.WaitGroup

	// mu guards lru, the refs and evicted fields of every entry, closing and closed.
	mu      sync.Mutex
	lru     *simplelru.LRU[string, *entry]
	groups  map[string]*entry // the groups of the shared pools: never evicted
	closing int
	closed  bool

	stmts caches // statement caches of the shared connections

	// gwMu guards gwReady: the shards whose gateway role is set up.
	gwMu    sync.Mutex
	gwReady map[string]bool

	// shareMu guards shares: the shared-pool connections each tenant holds or awaits.
	shareMu sync.Mutex
	shares  map[string]*share
}

// share is one tenant's hold on shared pools: a semaphore of SharedTenantConns slots.
type share struct {
	users int
	slots chan struct{}
}

// entry is one pool and the number of units of work using it.
type entry struct {
	key     string
	pool    *pgxpool.Pool
	refs    int
	evicted bool
}

// New returns a Manager. It opens no connection until the first unit of work.
func New(cfg Config) (*Manager, error) {
	cfg.MaxPools = cmp.Or(cfg.MaxPools, 100)
	cfg.Budget = cmp.Or(cfg.Budget, 40)
	cfg.PerTenantConns = cmp.Or(cfg.PerTenantConns, 4)
	cfg.GroupConns = min(cmp.Or(cfg.GroupConns, 1), int32(cfg.Budget))
	cfg.SharedTenantConns = min(cmp.Or(cfg.SharedTenantConns, int(cfg.PerTenantConns)), cfg.Budget)
	cfg.Statements = cmp.Or(cfg.Statements, DefaultStatements)
	cfg.BudgetWait = cmp.Or(cfg.BudgetWait, 2*time.Second)
	cfg.AcquireTimeout = cmp.Or(cfg.AcquireTimeout, cfg.BudgetWait+3*time.Second)
	cfg.IdleTimeout = cmp.Or(cfg.IdleTimeout, time.Minute)
	cfg.AppName = cmp.Or(cfg.AppName, "tenantplane-dataplane")
	if cfg.MaxPools < 1 || cfg.Budget < 1 || cfg.PerTenantConns < 1 || cfg.GroupConns < 1 || cfg.SharedTenantConns < 1 || cfg.Statements < 1 {
		return nil, fmt.Errorf("pool sizes must be positive (max pools %d, budget %d, per tenant %d, group %d, shared per tenant %d, statements %d)",
			cfg.MaxPools, cfg.Budget, cfg.PerTenantConns, cfg.GroupConns, cfg.SharedTenantConns, cfg.Statements)
	}
	switch cfg.Mode {
	case "", tenant.PoolShared, tenant.PoolDedicated:
	default:
		return nil, fmt.Errorf("pool mode must be %q or %q, not %q", tenant.PoolShared, tenant.PoolDedicated, cfg.Mode)
	}
	if len(cfg.Shards) == 0 {
		return nil, errors.New("no shard configured")
	}
	for name, u := range cfg.Shards {
		if _, err := pgxpool.ParseConfig(u); err != nil {
			return nil, fmt.Errorf("parsing shard %q url: %w", name, err)
		}
	}
	m := &Manager{
		cfg:    cfg,
		log:    cmp.Or(cfg.Logger, slog.New(slog.DiscardHandler)),
		tokens: make(chan struct{}, cfg.Budget),

		groups:  map[string]*entry{},
		gwReady: map[string]bool{},
		shares:  map[string]*share{},
		stmts:   caches{size: cfg.Statements},
	}
	lru, err := simplelru.NewLRU(cfg.MaxPools, m.evictedLocked)
	if err != nil {
		return nil, fmt.Errorf("creating pool lru: %w", err)
	}
	m.lru = lru
	return m, nil
}

// Read runs fn with a database handle bound to the tenant: a pooled connection in
// dedicated mode, implicit transactions in shared mode. fn only reads: when its
// connection is killed under it (pgerr.Retryable), it runs again on another (a
// connection checked alive first), up to attempts times in all: a restart or
// failover that ends every backend at once costs a read nothing. Read returns fn's
// error, or an Unavailable error (503) when no connection could be had in time.
func (m *Manager) Read(ctx context.Context, t *tenant.Tenant, fn func(DB) error) error {
	return m.runAgain(ctx, t, false, pgerr.Retryable, fn)
}

// attempts bounds the runs of one unit of work. A checked connection can still be
// ended between the check and the read (a backend killed, a server shutting down), so
// one retry is not enough under a rolling kill.
const attempts = 3

// Write runs fn in a transaction bound to the tenant, committed when fn returns nil.
// When a statement meets a table that changed under its prepared plan (pgerr.StalePlan:
// a migration committed before the tenant's new version reached this process), the
// transaction is rolled back and fn runs again, up to attempts times in all, so fn
// must do nothing outside its transaction. Errors as for Read.
func (m *Manager) Write(ctx context.Context, t *tenant.Tenant, fn func(DB) error) error {
	return m.runAgain(ctx, t, true, pgerr.StalePlan, fn)
}

// runAgain runs fn, and again while it fails with an error again says may be retried,
// up to attempts times in all.
func (m *Manager) runAgain(ctx context.Context, t *tenant.Tenant, inTx bool, again func(error) bool, fn func(DB) error) error {
	err := m.run(ctx, t, inTx, false, fn)
	for try := 2; try <= attempts && err != nil && ctx.Err() == nil && again(err); try++ {
		m.retries.Add(1)
		err = m.run(ctx, t, inTx, true, fn)
	}
	return err
}

// mode returns the mode t is served in.
// A tenant with a database of its own is always dedicated: the gateway role has no
// access to that database.
func (m *Manager) mode(t *tenant.Tenant) tenant.PoolMode {
	switch {
	case t.Isolation == tenant.IsolationDatabase:
		return tenant.PoolDedicated
	case m.cfg.Mode != "":
		return m.cfg.Mode
	case t.PoolMode == tenant.PoolDedicated:
		return tenant.PoolDedicated
	}
	return tenant.PoolShared
}

// run runs fn on a connection of t's pool; retry says that an earlier run failed on a
// killed connection.
func (m *Manager) run(ctx context.Context, t *tenant.Tenant, inTx, retry bool, fn func(DB) error) error {
	mode := m.mode(t)
	var e *entry
	var err error
	if mode == tenant.PoolShared {
		var release func()
		var others bool
		if release, others, err = m.takeShare(ctx, t); err != nil {
			return err
		}
		defer release()
		e, err = m.leaseShared(t, others)
	} else {
		e, err = m.lease(t, m.key(t, mode, 0), mode)
	}
	if err != nil {
		return err
	}
	defer m.unlease(e)
	conn, err := m.acquire(ctx, t, e, retry)
	if err != nil {
		return err
	}
	if mode == tenant.PoolDedicated {
		defer m.release(conn)
		if !inTx {
			return fn(conn)
		}
		return pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error { return fn(tx) })
	}
	// Shared mode: every statement runs in a transaction bound to the tenant by
	// set_config(..., true) sent in the same pipeline (see shared), and the binding ends
	// with that transaction, so nothing of the tenant outlives it on the connection. A
	// connection given back mid-transaction (a panic, a cancelled context, a failed
	// rollback) is closed by the pool, not reused.
	cache := m.stmts.of(conn.Conn())
	if cache.serve(t.ID) {
		m.switches.Add(1)
	}
	b := &shared{conn: conn, cache: cache, role: t.DBRole,
		schema: pgx.Identifier{t.SchemaName}.Sanitize(), version: t.MigrationVersion, inTx: inTx}
	defer func() {
		if b.discard {
			m.close(conn)
			return
		}
		m.release(conn)
	}()
	err = fn(b)
	if !b.begun {
		return err
	}
	if err != nil {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_, _ = conn.Exec(rctx, "ROLLBACK")
		return err
	}
	tag, err := conn.Exec(ctx, "COMMIT")
	if err != nil {
		return fmt.Errorf("committing: %w", err)
	}
	if tag.String() != "COMMIT" {
		return errors.New("committing: the transaction was rolled back after an error")
	}
	return nil
}

// release gives conn back to its pool, or closes it when a unit of work waits for room
// in the budget, handing this connection's slot over. It is done here, not in pgxpool's
// AfterRelease hook: pgxpool runs that hook in a goroutine of its own for every release,
// and the connection is no one's until that goroutine has run.
func (m *Manager) release(conn *pgxpool.Conn) {
	if m.waiters.Load() > 0 {
		m.close(conn)
		return
	}
	conn.Release()
}

// close takes conn out of its pool and closes it (freeing its budget slot), with its
// statement cache.
func (m *Manager) close(conn *pgxpool.Conn) {
	m.stmts.drop(conn.Conn())
	raw := conn.Hijack()
	go func() { _ = raw.Close(context.Background()) }()
}

// acquire returns a connection of e's pool. When checked, it first pings the connection
// (up to three of them): after one was killed, its idle neighbours may have been too,
// and pgxpool pings only connections idle for a second or more.
func (m *Manager) acquire(ctx context.Context, t *tenant.Tenant, e *entry, checked bool) (*pgxpool.Conn, error) {
	actx, cancel := context.WithTimeout(ctx, m.cfg.AcquireTimeout)
	defer cancel()
	for try := 1; ; try++ {
		conn, err := e.pool.Acquire(actx)
		if err != nil {
			return nil, m.acquireError(ctx, t, err)
		}
		if !checked || try == 3 || conn.Ping(actx) == nil {
			return conn, nil
		}
		conn.Release() // closed by the failed ping: the pool destroys it
	}
}

func (m *Manager) acquireError(ctx context.Context, t *tenant.Tenant, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("acquiring connection: %w", ctx.Err())
	}
	if errors.Is(err, errBudget) || errors.Is(err, context.DeadlineExceeded) {
		return &apperr.Error{Kind: apperr.Unavailable, Code: "db_busy", Message: "the service is busy; try again shortly", Err: err}
	}
	m.log.Warn("tenant database unreachable", "tenant", t.Slug, "shard", t.Shard, "error", err)
	return &apperr.Error{Kind: apperr.Unavailable, Code: "database_unavailable", Message: "the tenant's database is unavailable; try again shortly", Err: err}
}

// takeShare waits for one of the tenant's SharedTenantConns slots; release gives it back.
// others says whether other units of work of the tenant were running or waiting. It
// returns an Unavailable error (db_busy) when no slot is free within AcquireTimeout.
func (m *Manager) takeShare(ctx context.Context, t *tenant.Tenant) (release func(), others bool, err error) {
	m.shareMu.Lock()
	s := m.shares[t.ID]
	if s == nil {
		s = &share{slots: make(chan struct{}, m.cfg.SharedTenantConns)}
		m.shares[t.ID] = s
	}
	s.users++
	others = s.users > 1
	m.shareMu.Unlock()
	done := func() {
		m.shareMu.Lock()
		defer m.shareMu.Unlock()
		if s.users--; s.users == 0 {
			delete(m.shares, t.ID)
		}
	}
	select {
	case s.slots <- struct{}{}:
		return func() { <-s.slots; done() }, others, nil
	default:
	}
	m.shareWaits.Add(1)
	timer := time.NewTimer(m.cfg.AcquireTimeout)
	defer timer.Stop()
	select {
	case s.slots <- struct{}{}:
		return func() { <-s.slots; done() }, others, nil
	case <-timer.C:
		done()
		return nil, false, m.acquireError(ctx, t, context.DeadlineExceeded)
	case <-ctx.Done():
		done()
		return nil, false, m.acquireError(ctx, t, ctx.Err())
	}
}

// leaseShared returns the group of the shard's shared pool that serves t now. Alone
// (others false), a unit of work waits for t's first candidate group; beside others of
// its tenant, it takes the first of t's candidate groups with a connection idle or room
// for one, else the first. A tenant's work therefore stays on its first group's
// connections and spills onto its next candidates only when the tenant itself is busy,
// not when its group serves another tenant.
func (m *Manager) leaseShared(t *tenant.Tenant, others bool) (*entry, error) {
	groups := max(1, m.cfg.Budget/int(m.cfg.GroupConns))
	n := min(groups, (m.cfg.SharedTenantConns+int(m.cfg.GroupConns)-1)/int(m.cfg.GroupConns))
	if !others {
		n = 1
	}
	var first *entry
	for i := range n {
		e, err := m.lease(t, m.key(t, tenant.PoolShared, i), tenant.PoolShared)
		if err != nil {
			if first != nil {
				m.unlease(first)
			}
			return nil, err
		}
		if i == 0 {
			first = e
		}
		if st := e.pool.Stat(); st.IdleConns() > 0 || st.TotalConns() < st.MaxConns() {
			if e != first {
				m.unlease(first)
			}
			return e, nil
		}
		if e != first {
			m.unlease(e)
		}
	}
	return first, nil
}

// lease returns the pool of key, opening it for t on a miss, and counts a user of it.
func (m *Manager) lease(t *tenant.Tenant, key string, mode tenant.PoolMode) (*entry, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, apperr.New(apperr.Unavailable, "shutting_down", "the service is shutting down")
	}
	var e *entry
	var ok bool
	if mode == tenant.PoolShared {
		e, ok = m.groups[key]
	} else {
		e, ok = m.lru.Get(key)
	}
	if ok {
		m.hits.Add(1)
	} else {
		m.misses.Add(1)
		p, err := m.open(t, key, mode)
		if err != nil {
			return nil, err
		}
		e = &entry{key: key, pool: p}
		if mode == tenant.PoolShared {
			m.groups[key] = e
		} else {
			m.lru.Add(key, e)
		}
	}
	e.refs++
	return e, nil
}

// unlease ends a use of e, closing it if it was evicted and this was the last use.
func (m *Manager) unlease(e *entry) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e.refs--
	if e.evicted && e.refs == 0 {
		m.closeLocked(e)
	}
}

// evictedLocked is the LRU's eviction callback; mu is held.
func (m *Manager) evictedLocked(_ string, e *entry) {
	m.evictions.Add(1)
	e.evicted = true
	m.closing++
	m.closingWG.Add(1)
	if e.refs == 0 {
		m.closeLocked(e)
	}
}

// closeLocked closes an evicted pool in the background: pgxpool.Close waits for
// connections still out, and no request waits for that.
func (m *Manager) closeLocked(e *entry) {
	go func() {
		defer m.closingWG.Done()
		e.pool.Close()
		m.mu.Lock()
		m.closing--
		m.mu.Unlock()
	}()
}

// key names the pool serving t: in dedicated mode the tenant and how it connects. In
// shared mode the pools of a shard (and database) are shared: the shard's pool is
// Budget/GroupConns groups, each a pool of GroupConns connections, and candidate i of
// a tenant is the group i after the one a hash of its id picks. So each tenant's
// requests go to the same few connections and each server backend keeps the catalog
// caches and prepared statements of a fraction of the tenants only.
func (m *Manager) key(t *tenant.Tenant, mode tenant.PoolMode, candidate int) string {
	if mode == tenant.PoolShared {
		groups := max(1, uint32(m.cfg.Budget)/uint32(m.cfg.GroupConns))
		h := fnv.New32a()
		h.Write([]byte(t.ID))
		g := (h.Sum32()%groups + uint32(candidate)) % groups
		return "shard:" + t.Shard + "/" + t.DatabaseName + "#" + strconv.FormatUint(uint64(g), 10)
	}
	return "tenant:" + t.ID + "/" + t.Shard + "/" + t.DatabaseName + "/" + t.DBRole
}

// gatewayPassword derives the gateway role's password from the shard's admin URL: every
// replica computes the same one, and rotating the admin password rotates it.
func gatewayPassword(adminURL string) (string, error) {
	cfg, err := pgconn.ParseConfig(adminURL)
	if err != nil {
		return "", fmt.Errorf("parsing shard url: %w", err)
	}
	mac := hmac.New(sha256.New, []byte(cfg.Password))
	mac.Write([]byte("tenantplane gateway role " + cfg.User))
	return hex.EncodeToString(mac.Sum(nil)), nil
}

// gatewayDefaults are the session defaults of the gateway role (a role's defaults apply
// to the login role, never through SET ROLE): ensureGateway sets them and checks them.
var gatewayDefaults = []struct{ name, value string }{
	// The planner cost the tenant roles set for themselves (tenant migration 5).
	{"random_page_cost", "1.1"},
	// Generic plans from the first run of a statement (see customPlansSQL).
	{"plan_cache_mode", "force_generic_plan"},
}

// ensureGateway makes sure, once per shard, that the gateway role exists on the shard
// with its login password and session defaults: the one use of the admin credentials.
// A login that already works with those defaults changes nothing, so replicas starting
// at once do not rewrite the role's row; a change is made under an advisory lock, and
// retried when another session's update got there first ("tuple concurrently updated").
func (m *Manager) ensureGateway(ctx context.Context, shard, adminURL, gatewayDSN, password string) error {
	m.gwMu.Lock()
	defer m.gwMu.Unlock()
	if m.gwReady[shard] {
		return nil
	}
	if gw, err := pgx.Connect(ctx, gatewayDSN); err == nil {
		// Set up already, unless by a release whose role lacked today's settings.
		var current bool
		var checks []string
		for _, d := range gatewayDefaults {
			checks = append(checks, "current_setting('"+d.name+"') = '"+d.value+"'")
		}
		err = gw.QueryRow(ctx, `SELECT `+strings.Join(checks, " AND ")).Scan(&current)
		_ = gw.Close(context.Background())
		if err == nil && current {
			m.gwReady[shard] = true
			return nil
		}
	}
	cfg, err := pgx.ParseConfig(adminURL)
	if err != nil {
		return fmt.Errorf("parsing shard url: %w", err)
	}
	cfg.RuntimeParams["application_name"] = m.cfg.AppName + "-setup"
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("connecting to shard %q to set up the gateway role: %w", shard, err)
	}
	defer func() { _ = conn.Close(context.Background()) }()
	gw := pgx.Identifier{tenant.GatewayRole}.Sanitize()
	pw := "'" + password + "'" // hex digits: nothing to quote
	var defaults strings.Builder
	for _, d := range gatewayDefaults {
		defaults.WriteString("ALTER ROLE " + gw + " SET " + d.name + " = " + d.value + ";\n")
	}
	setup := `SELECT pg_advisory_xact_lock(hashtext('tenantplane gateway role'));
		DO $$ BEGIN
		IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '` + tenant.GatewayRole + `') THEN
			CREATE ROLE ` + gw + ` LOGIN NOINHERIT PASSWORD ` + pw + `;
		ELSE
			ALTER ROLE ` + gw + ` LOGIN NOINHERIT PASSWORD ` + pw + `;
		END IF;
		` + defaults.String() + `
		EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$`
	for attempt := 1; ; attempt++ {
		_, err = conn.Exec(ctx, setup, pgx.QueryExecModeSimpleProtocol)
		var pgErr *pgconn.PgError
		if err == nil || attempt == 5 || !errors.As(err, &pgErr) || pgErr.Code != "XX000" {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("setting up the gateway role on shard %q: %w", shard, ctx.Err())
		case <-time.After(time.Duration(attempt) * 20 * time.Millisecond):
		}
	}
	if err != nil {
		return fmt.Errorf("setting up the gateway role on shard %q: %w", shard, err)
	}
	m.gwReady[shard] = true
	return nil
}

// open creates the pool of key; it connects lazily.
func (m *Manager) open(t *tenant.Tenant, key string, mode tenant.PoolMode) (*pgxpool.Pool, error) {
	shardURL, ok := m.cfg.Shards[t.Shard]
	if !ok {
		return nil, &apperr.Error{Kind: apperr.Unavailable, Code: "database_unavailable",
			Message: "the tenant's database is unavailable", Err: fmt.Errorf("tenant %q is on unknown shard %q", t.Slug, t.Shard)}
	}
	var dsn, gwPassword string
	var err error
	if mode == tenant.PoolShared {
		if gwPassword, err = gatewayPassword(shardURL); err == nil {
			gw := tenant.Tenant{Shard: t.Shard, DBRole: tenant.GatewayRole, DBPassword: gwPassword, DatabaseName: t.DatabaseName}
			dsn, err = gw.ConnString(shardURL)
		}
	} else {
		dsn, err = t.ConnString(shardURL)
	}
	if err != nil {
		return nil, fmt.Errorf("building connection string: %w", err)
	}
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("parsing connection string of tenant %q: %w", t.Slug, err)
	}
	cfg.MaxConns = m.cfg.PerTenantConns
	if mode == tenant.PoolShared {
		cfg.MaxConns = m.cfg.GroupConns
	}
	cfg.MinConns = 0
	cfg.MaxConnIdleTime = m.cfg.IdleTimeout
	cfg.HealthCheckPeriod = m.cfg.IdleTimeout / 2
	cfg.ConnConfig.RuntimeParams["application_name"] = m.cfg.AppName
	if mode == tenant.PoolShared {
		// Statements go through shared's pipelines and its statement cache; the exec
		// mode only serves the COMMIT and ROLLBACK of run, so pgx keeps no statement
		// of its own, whose names would resolve without the tenant's search path.
		cfg.ConnConfig.DefaultQueryExecMode = pgx.QueryExecModeExec
		shard := t.Shard
		cfg.BeforeConnect = func(ctx context.Context, _ *pgx.ConnConfig) error {
			return m.ensureGateway(ctx, shard, shardURL, dsn, gwPassword)
		}
		cfg.BeforeClose = m.stmts.drop
	}
	cfg.ConnConfig.DialFunc = m.dialer(key, cfg.ConnConfig.DialFunc)
	p, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		return nil, fmt.Errorf("opening pool of tenant %q: %w", t.Slug, err)
	}
	return p, nil
}

// Stats returns the counters.
func (m *Manager) Stats() Stats {
	m.mu.Lock()
	pools, closing := m.lru.Len()+len(m.groups), m.closing
	m.mu.Unlock()
	conns, sum, most := m.stmts.tenants()
	perConn := 0.0
	if conns > 0 {
		perConn = float64(sum) / float64(conns)
	}
	return Stats{
		Hits:         m.hits.Load(),
		Misses:       m.misses.Load(),
		Evictions:    m.evictions.Load(),
		Pools:        pools,
		Closing:      closing,
		OpenConns:    len(m.tokens),
		Budget:       m.cfg.Budget,
		Waits:        m.waits.Load(),
		WaitTimeouts: m.waitTimeouts.Load(),
		Reclaimed:    m.reclaimed.Load(),
		ShareWaits:   m.shareWaits.Load(),
		Retries:      m.retries.Load(),

		Switches:          m.switches.Load(),
		SharedConns:       conns,
		TenantsPerConn:    perConn,
		MaxTenantsPerConn: most,
	}
}

// Close stops new work and closes every pool once its work has ended, waiting at most
// until ctx ends. It returns ctx's error when pools were still closing then.
func (m *Manager) Close(ctx context.Context) error {
	m.mu.Lock()
	m.closed = true
	m.lru.Purge() // evicts every entry: idle pools close now, busy ones when their work ends
	for k, e := range m.groups {
		m.evictedLocked(k, e)
		m.evictions.Add(-1) // closing, not evicted
		delete(m.groups, k)
	}
	m.mu.Unlock()
	done := make(chan struct{})
	go func() {
		m.closingWG.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("closing tenant pools: %w", ctx.Err())
	}
}
