// Package pool keeps the dataplane's tenant connection pools: one pgxpool per tenant in
// an LRU, with a global budget on the Postgres connections all pools hold together.
//
// In the default (bound) mode a tenant's connections log in as the tenant's own role with
// its schema as the search path (tenant.ConnString), so no query can reach another
// tenant whatever it says. In SET LOCAL mode, for deployments behind a transaction
// pooler or with many more active tenants than connections, connections log in as the
// shard's role and every statement runs in a transaction bound to the tenant by the
// local equivalents of SET LOCAL ROLE and SET LOCAL search_path, sent in the same round
// trip (a read is one round trip; see bound); pools are then shared by groups of a
// shard's tenants.
//
// An evicted pool is closed once the work that was using it has ended: eviction never
// fails or blocks a request. A new connection that would exceed the budget first closes
// an idle connection of another pool, then waits briefly for one to be freed, then fails
// with an Unavailable error (503).
package pool

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tenantplane/tenantplane/apperr"
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
	// Shards maps a shard name to its admin URL. Bound mode uses only its host, port,
	// database and options (the tenant's role replaces the credentials); SET LOCAL mode
	// logs in with it as given.
	Shards map[string]string
	// SetLocal selects SET LOCAL mode (for transaction poolers such as PgBouncer).
	SetLocal bool
	// MaxPools is how many pools the LRU holds (default 100).
	MaxPools int
	// Budget bounds the Postgres connections open across all pools (default 40).
	Budget int
	// PerTenantConns bounds the connections of one tenant's pool (default 4); in SET
	// LOCAL mode, of each shared pool (see Manager.key).
	PerTenantConns int32
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
	Pools        int   `json:"pools"`         // pools in the LRU now
	Closing      int   `json:"closing"`       // evicted pools still finishing their work
	OpenConns    int   `json:"open_conns"`    // Postgres connections open now, all pools
	Budget       int   `json:"budget"`        // the connection budget
	Waits        int64 `json:"waits"`         // new connections that waited for room in the budget
	WaitTimeouts int64 `json:"wait_timeouts"` // waits that gave up (answered 503)
	Reclaimed    int64 `json:"reclaimed"`     // idle connections closed to make room
}

// Manager holds the pools. Create it with New; Close it when done.
type Manager struct {
	cfg    Config
	log    *slog.Logger
	tokens chan struct{} // one element per open connection

	waiters      atomic.Int32
	hits         atomic.Int64
	misses       atomic.Int64
	evictions    atomic.Int64
	waits        atomic.Int64
	waitTimeouts atomic.Int64
	reclaimed    atomic.Int64
	closingWG    sync.WaitGroup

	// mu guards lru, the refs and evicted fields of every entry, closing and closed.
	mu      sync.Mutex
	lru     *simplelru.LRU[string, *entry]
	closing int
	closed  bool
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
	cfg.BudgetWait = cmp.Or(cfg.BudgetWait, 2*time.Second)
	cfg.AcquireTimeout = cmp.Or(cfg.AcquireTimeout, cfg.BudgetWait+3*time.Second)
	cfg.IdleTimeout = cmp.Or(cfg.IdleTimeout, time.Minute)
	cfg.AppName = cmp.Or(cfg.AppName, "tenantplane-dataplane")
	if cfg.MaxPools < 1 || cfg.Budget < 1 || cfg.PerTenantConns < 1 {
		return nil, fmt.Errorf("pool sizes must be positive (max pools %d, budget %d, per tenant %d)", cfg.MaxPools, cfg.Budget, cfg.PerTenantConns)
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
	}
	lru, err := simplelru.NewLRU(cfg.MaxPools, m.evictedLocked)
	if err != nil {
		return nil, fmt.Errorf("creating pool lru: %w", err)
	}
	m.lru = lru
	return m, nil
}

// Read runs fn with a database handle bound to the tenant: a pooled connection in bound
// mode, a transaction in SET LOCAL mode. It returns fn's error, or an Unavailable error
// (503) when no connection could be had in time.
func (m *Manager) Read(ctx context.Context, t *tenant.Tenant, fn func(DB) error) error {
	return m.run(ctx, t, false, fn)
}

// Write runs fn in a transaction bound to the tenant, committed when fn returns nil.
// Errors as for Read.
func (m *Manager) Write(ctx context.Context, t *tenant.Tenant, fn func(DB) error) error {
	return m.run(ctx, t, true, fn)
}

func (m *Manager) run(ctx context.Context, t *tenant.Tenant, inTx bool, fn func(DB) error) error {
	e, err := m.lease(t)
	if err != nil {
		return err
	}
	defer m.unlease(e)
	actx, cancel := context.WithTimeout(ctx, m.cfg.AcquireTimeout)
	conn, err := e.pool.Acquire(actx)
	cancel()
	if err != nil {
		return m.acquireError(ctx, t, err)
	}
	defer conn.Release()
	if !m.cfg.SetLocal {
		if !inTx {
			return fn(conn)
		}
		return pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error { return fn(tx) })
	}
	// SET LOCAL mode: every statement runs in a transaction bound to the tenant by
	// set_config(..., true) sent in the same round trip (see bound), and the binding
	// ends with that transaction, so nothing of the tenant outlives it on a connection
	// that a pooler hands to someone else next. A connection given back mid-transaction
	// (a panic, a cancelled context, a failed rollback) is closed by the pool, not reused.
	b := &bound{conn: conn, role: t.DBRole, schema: pgx.Identifier{t.SchemaName}.Sanitize(), inTx: inTx}
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

// lease returns the tenant's pool, opening it on a miss, and counts a user of it.
func (m *Manager) lease(t *tenant.Tenant) (*entry, error) {
	key := m.key(t)
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, apperr.New(apperr.Unavailable, "shutting_down", "the service is shutting down")
	}
	e, ok := m.lru.Get(key)
	if ok {
		m.hits.Add(1)
	} else {
		m.misses.Add(1)
		p, err := m.open(t, key)
		if err != nil {
			return nil, err
		}
		e = &entry{key: key, pool: p}
		m.lru.Add(key, e)
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

// key names the pool serving t: the tenant and how it connects in bound mode. In SET
// LOCAL mode the pools of a shard (and database) are shared: the tenants are spread over
// Budget/PerTenantConns groups by a hash of their id, each group with a pool of
// PerTenantConns connections. A tenant thus gets as many connections as in bound mode,
// and each server backend keeps the catalog caches and plans of a fraction of the
// tenants only.
func (m *Manager) key(t *tenant.Tenant) string {
	if m.cfg.SetLocal {
		groups := max(1, uint32(m.cfg.Budget)/uint32(m.cfg.PerTenantConns))
		h := fnv.New32a()
		h.Write([]byte(t.ID))
		return "shard:" + t.Shard + "/" + t.DatabaseName + "#" + strconv.FormatUint(uint64(h.Sum32()%groups), 10)
	}
	return "tenant:" + t.ID + "/" + t.Shard + "/" + t.DatabaseName + "/" + t.DBRole
}

// open creates the pool of key; it connects lazily.
func (m *Manager) open(t *tenant.Tenant, key string) (*pgxpool.Pool, error) {
	shardURL, ok := m.cfg.Shards[t.Shard]
	if !ok {
		return nil, &apperr.Error{Kind: apperr.Unavailable, Code: "database_unavailable",
			Message: "the tenant's database is unavailable", Err: fmt.Errorf("tenant %q is on unknown shard %q", t.Slug, t.Shard)}
	}
	var dsn string
	var err error
	if m.cfg.SetLocal {
		dsn, err = withDatabase(shardURL, t.DatabaseName)
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
	cfg.MinConns = 0
	cfg.MaxConnIdleTime = m.cfg.IdleTimeout
	cfg.HealthCheckPeriod = m.cfg.IdleTimeout / 2
	cfg.ConnConfig.RuntimeParams["application_name"] = m.cfg.AppName
	if m.cfg.SetLocal {
		// A statement is parsed in the round trip that binds its transaction to the
		// tenant: no separate prepare or describe before the binding, whose names would
		// resolve without the tenant's search path; and no prepared statement kept
		// across tenants.
		cfg.ConnConfig.DefaultQueryExecMode = pgx.QueryExecModeExec
	}
	cfg.ConnConfig.DialFunc = m.dialer(key, cfg.ConnConfig.DialFunc)
	cfg.AfterRelease = func(*pgx.Conn) bool {
		// Someone waits for room in the budget: hand this connection's slot over.
		return m.waiters.Load() == 0
	}
	p, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		return nil, fmt.Errorf("opening pool of tenant %q: %w", t.Slug, err)
	}
	return p, nil
}

func withDatabase(shardURL, db string) (string, error) {
	if db == "" {
		return shardURL, nil
	}
	u, err := url.Parse(shardURL)
	if err != nil {
		return "", fmt.Errorf("parsing shard url: %w", err)
	}
	u.Path = "/" + db
	return u.String(), nil
}

// Stats returns the counters.
func (m *Manager) Stats() Stats {
	m.mu.Lock()
	pools, closing := m.lru.Len(), m.closing
	m.mu.Unlock()
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
	}
}

// Close stops new work and closes every pool once its work has ended, waiting at most
// until ctx ends. It returns ctx's error when pools were still closing then.
func (m *Manager) Close(ctx context.Context) error {
	m.mu.Lock()
	m.closed = true
	m.lru.Purge() // evicts every entry: idle pools close now, busy ones when their work ends
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
