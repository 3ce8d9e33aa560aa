package search

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/tenantplane/tenantplane/dataplane/pool"
	"github.com/tenantplane/tenantplane/lifecycle"
	"github.com/tenantplane/tenantplane/metrics"
	"github.com/tenantplane/tenantplane/tenant"
)

// TenantSource lists the tenants whose outboxes the Indexer drains.
type TenantSource interface {
	// ActiveTenants returns the tenants being served, with their registry fields.
	ActiveTenants(ctx context.Context) ([]*tenant.Tenant, error)
}

// TenantSourceFunc adapts a function to TenantSource.
type TenantSourceFunc func(ctx context.Context) ([]*tenant.Tenant, error)

// ActiveTenants calls f.
func (f TenantSourceFunc) ActiveTenants(ctx context.Context) ([]*tenant.Tenant, error) { return f(ctx) }

// Transactor runs functions in database transactions bound to a tenant (its role,
// its schema alone on the search path), as the dataplane's pool manager does.
type Transactor interface {
	// InTx runs fn in a transaction bound to t, committed when fn returns nil and
	// rolled back otherwise, and returns fn's error.
	InTx(ctx context.Context, t *tenant.Tenant, fn func(pool.DB) error) error
}

// TransactorFunc adapts a function to Transactor.
type TransactorFunc func(ctx context.Context, t *tenant.Tenant, fn func(pool.DB) error) error

// InTx calls f.
func (f TransactorFunc) InTx(ctx context.Context, t *tenant.Tenant, fn func(pool.DB) error) error {
	return f(ctx, t, fn)
}

// IndexerConfig configures an Indexer.
type IndexerConfig struct {
	// Search writes the documents; required.
	Search *OpenSearch
	// Tenants lists the tenants to drain; required.
	Tenants TenantSource
	// Tx runs the drain of a batch in a transaction of the tenant's database; required.
	Tx Transactor
	// Interval is the time between two sweeps over every tenant (default 2s). Notify
	// drains a tenant sooner.
	Interval time.Duration
	// MaxBackoff bounds the wait between sweeps while OpenSearch fails (default 30s);
	// the wait doubles from Interval after each failed sweep.
	MaxBackoff time.Duration
	// Batch is the number of outbox events per bulk request (default 500).
	Batch int
	// Parallel bounds how many tenants are drained at once (default 4).
	Parallel int
	// StopTimeout bounds how long Stop waits for the batches in flight (default 10s).
	StopTimeout time.Duration
	// Logger receives progress and failures (default: discard).
	Logger *slog.Logger
	// Metrics records, after each sweep, the age of the oldest outbox event it saw
	// (nil: nothing recorded).
	Metrics *metrics.Metrics
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Indexer drains tenants' search_outbox tables into OpenSearch. For each tenant it
// locks a batch of events (FOR UPDATE SKIP LOCKED, so several replicas share the
// work), reads the blogs' current rows, writes them (or their deletion) with the bulk
// API at the event's external version, and deletes the events only once the bulk
// request succeeded, in the same transaction. A replayed or out-of-order event is a
// version conflict, counted as done. While OpenSearch is down the events wait in
// Postgres and blog writes go on; the index catches up when it is back.
//
// Create it with NewIndexer, then Start and Stop it; once stopped it can be started
// again.
type Indexer struct {
	search     *OpenSearch
	tenants    TenantSource
	tx         Transactor
	interval   time.Duration
	maxBackoff time.Duration
	batch      int
	parallel   int
	stop       time.Duration
	log        *slog.Logger
	now        func() time.Time

	// afterBulk, when set by tests, runs after a bulk request succeeded and before the
	// outbox rows are deleted; an error from it aborts the batch as a crash would.
	afterBulk func() error

	wake chan struct{} // Notify's nudge to the running indexer

	metrics *metrics.Metrics

	// mu guards group, pending, known, draining and oldest.
	mu       sync.Mutex
	oldest   time.Time                 // creation of the oldest event seen this sweep; zero for none
	group    *lifecycle.Group          // the running indexer's goroutines; nil when stopped
	pending  map[string]bool           // tenant ids notified since the last drain
	known    map[string]*tenant.Tenant // tenants of the last sweep, by id
	draining map[string]bool           // tenant ids being drained now
}

// NewIndexer returns an Indexer; it returns an error when a required field is missing.
func NewIndexer(cfg IndexerConfig) (*Indexer, error) {
	if cfg.Search == nil || cfg.Tenants == nil || cfg.Tx == nil {
		return nil, errors.New("search indexer: Search, Tenants and Tx are required")
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	interval := cmp.Or(cfg.Interval, 2*time.Second)
	return &Indexer{
		search:     cfg.Search,
		tenants:    cfg.Tenants,
		tx:         cfg.Tx,
		interval:   interval,
		maxBackoff: max(cmp.Or(cfg.MaxBackoff, 30*time.Second), interval),
		batch:      cmp.Or(cfg.Batch, 500),
		parallel:   cmp.Or(cfg.Parallel, 4),
		stop:       cmp.Or(cfg.StopTimeout, 10*time.Second),
		log:        cmp.Or(cfg.Logger, slog.New(slog.DiscardHandler)),
		now:        now,
		metrics:    cfg.Metrics,
		wake:       make(chan struct{}, 1),
		pending:    map[string]bool{},
		known:      map[string]*tenant.Tenant{},
		draining:   map[string]bool{},
	}, nil
}

// Start runs the indexer in the background until Stop or until ctx ends. It returns
// an error wrapping lifecycle.ErrStarted when it is already running.
func (ix *Indexer) Start(ctx context.Context) error {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	if ix.group != nil {
		return fmt.Errorf("search indexer: %w", lifecycle.ErrStarted)
	}
	g := &lifecycle.Group{}
	if err := g.Start(ctx); err != nil {
		return fmt.Errorf("search indexer: %w", err)
	}
	g.Go(ix.run)
	ix.group = g
	return nil
}

// Stop stops the indexer and waits for the batches in flight, at most the configured
// StopTimeout; their context is cancelled, so their transactions roll back and the
// events stay for the next run. A second Stop does nothing.
func (ix *Indexer) Stop() {
	ix.mu.Lock()
	g := ix.group
	ix.group = nil
	ix.mu.Unlock()
	if g == nil {
		return
	}
	if !g.Stop(ix.stop) {
		ix.log.Warn("search indexer: batches still running after stop timeout", "timeout", ix.stop)
	}
}

// Notify asks for the tenant's outbox to be drained soon, e.g. right after a blog
// write committed. It never blocks.
func (ix *Indexer) Notify(tenantID string) {
	ix.mu.Lock()
	ix.pending[tenantID] = true
	ix.mu.Unlock()
	select {
	case ix.wake <- struct{}{}:
	default:
	}
}

func (ix *Indexer) run(ctx context.Context) {
	wait := time.Duration(0) // sweep at once
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
			err := ix.sweep(ctx)
			switch {
			case err == nil || ctx.Err() != nil:
				wait = ix.interval
			case unreachable(err):
				wait = min(max(2*wait, ix.interval), ix.maxBackoff)
				ix.log.Warn("search indexer: opensearch unreachable; retrying later", "retry_in", wait, "error", err)
			default:
				wait = ix.interval
				ix.log.Error("search indexer: sweep failed", "error", err)
			}
			timer.Reset(wait)
		case <-ix.wake:
			if wait > ix.interval {
				continue // backing off: the next sweep drains the notified tenants too
			}
			ix.drainNotified(ctx)
		}
	}
}

// sweep drains every tenant's outbox and returns a failure as drainAll does.
func (ix *Indexer) sweep(ctx context.Context) error {
	ts, err := ix.tenants.ActiveTenants(ctx)
	if err != nil {
		return fmt.Errorf("listing tenants: %w", err)
	}
	known := make(map[string]*tenant.Tenant, len(ts))
	for _, t := range ts {
		known[t.ID] = t
	}
	ix.mu.Lock()
	ix.known = known
	ix.pending = map[string]bool{}
	ix.oldest = time.Time{}
	ix.mu.Unlock()
	err = ix.drainAll(ctx, ts)
	ix.mu.Lock()
	lag := time.Duration(0)
	if !ix.oldest.IsZero() {
		lag = max(ix.now().Sub(ix.oldest), 0)
	}
	ix.mu.Unlock()
	ix.metrics.OutboxLag(lag)
	return err
}

// saw notes the outbox events of a batch for the sweep's lag.
func (ix *Indexer) saw(events []outboxEvent) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	for _, e := range events {
		if ix.oldest.IsZero() || e.created.Before(ix.oldest) {
			ix.oldest = e.created
		}
	}
}

// drainNotified drains the tenants named by Notify since the last drain.
func (ix *Indexer) drainNotified(ctx context.Context) {
	ix.mu.Lock()
	var ts []*tenant.Tenant
	for id := range ix.pending {
		if t, ok := ix.known[id]; ok {
			ts = append(ts, t)
		}
		delete(ix.pending, id)
	}
	ix.mu.Unlock()
	if err := ix.drainAll(ctx, ts); err != nil && ctx.Err() == nil {
		ix.log.Warn("search indexer: drain failed", "error", err)
	}
}

// drainAll drains the tenants, ix.parallel at a time, and returns the first failure,
// preferring one that says OpenSearch is unreachable.
func (ix *Indexer) drainAll(ctx context.Context, ts []*tenant.Tenant) error {
	sem := make(chan struct{}, ix.parallel)
	var (
		wg       sync.WaitGroup
		firstMu  sync.Mutex
		firstErr error
	)
	for _, t := range ts {
		if t.SearchIndex == "" {
			continue // no index yet: the events wait for Reindex or the provisioner
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			wg.Wait()
			return ctx.Err()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := ix.drainTenant(ctx, t); err != nil {
				firstMu.Lock()
				// An unreachable cluster is what the caller backs off on: report it first.
				if firstErr == nil || (unreachable(err) && !unreachable(firstErr)) {
					firstErr = fmt.Errorf("tenant %s: %w", t.Slug, err)
				}
				firstMu.Unlock()
			}
		}()
	}
	wg.Wait()
	return firstErr
}

// drainTenant drains one tenant unless this indexer is already at it.
func (ix *Indexer) drainTenant(ctx context.Context, t *tenant.Tenant) error {
	ix.mu.Lock()
	if ix.draining[t.ID] {
		ix.mu.Unlock()
		return nil
	}
	ix.draining[t.ID] = true
	ix.mu.Unlock()
	defer func() {
		ix.mu.Lock()
		delete(ix.draining, t.ID)
		ix.mu.Unlock()
	}()
	start := ix.now()
	n, err := ix.Drain(ctx, t)
	if n > 0 {
		ix.log.Debug("search indexer: drained", "tenant", t.Slug, "events", n, "elapsed_ms", ix.now().Sub(start).Milliseconds())
	}
	return err
}

// Drain writes t's outbox events to its index until the outbox is empty or a batch
// fails, and returns how many events it removed. Events whose write failed stay for the
// next run. It returns an error when Postgres or OpenSearch fails.
func (ix *Indexer) Drain(ctx context.Context, t *tenant.Tenant) (int, error) {
	if t.SearchIndex == "" {
		return 0, fmt.Errorf("tenant %s has no search index", t.Slug)
	}
	total := 0
	for {
		n, full, err := ix.drainBatch(ctx, t)
		total += n
		if err != nil || !full {
			return total, err
		}
	}
}

// outboxEvent is one row of search_outbox.
type outboxEvent struct {
	id      int64
	blogID  int64
	op      Op
	version int64
	created time.Time
}

// drainBatch handles one batch in one transaction. It returns the number of events
// removed and whether the batch was full (more may wait).
func (ix *Indexer) drainBatch(ctx context.Context, t *tenant.Tenant) (removed int, full bool, err error) {
	err = ix.tx.InTx(ctx, t, func(tx pool.DB) error {
		events, err := lockEvents(ctx, tx, ix.batch)
		if err != nil {
			return err
		}
		full = len(events) == ix.batch
		if len(events) == 0 {
			return nil
		}
		ix.saw(events)
		// The newest event of each blog decides; the document is read now, so it is
		// at least as new as that event.
		latest := map[int64]outboxEvent{}
		for _, e := range events {
			if cur, ok := latest[e.blogID]; !ok || e.version > cur.version || (e.version == cur.version && e.op == OpDelete) {
				latest[e.blogID] = e
			}
		}
		var upserts []int64
		for id, e := range latest {
			if e.op == OpUpsert {
				upserts = append(upserts, id)
			}
		}
		docs, err := loadDocs(ctx, tx, t, upserts)
		if err != nil {
			return err
		}
		items := make([]bulkItem, 0, len(latest))
		for id, e := range latest {
			it := bulkItem{blogID: id, version: e.version, versionType: "external"}
			if e.op == OpUpsert {
				it.doc = docs[id] // nil when the blog is gone since: delete it
			}
			items = append(items, it)
		}
		errs, err := ix.search.bulk(ctx, t, bulkTarget{name: t.SearchIndex}, items)
		if err != nil {
			return err
		}
		failed := map[int64]bool{}
		var itemErr error
		for i, e := range errs {
			if e != nil {
				failed[items[i].blogID] = true
				itemErr = cmp.Or(itemErr, e)
			}
		}
		if ix.afterBulk != nil {
			if err := ix.afterBulk(); err != nil {
				return err
			}
		}
		var ids []int64
		for _, e := range events {
			if !failed[e.blogID] {
				ids = append(ids, e.id)
			}
		}
		if _, err := tx.Exec(ctx, `DELETE FROM search_outbox WHERE id = ANY($1)`, ids); err != nil {
			return fmt.Errorf("deleting search outbox events: %w", err)
		}
		removed = len(ids)
		if itemErr != nil {
			full = false // what is left failed: do not spin on it
			ix.log.Warn("search indexer: events kept for retry", "tenant", t.Slug, "failed", len(failed), "error", itemErr)
		}
		return nil
	})
	if err != nil {
		return 0, false, err
	}
	return removed, full, nil
}

func lockEvents(ctx context.Context, tx pool.DB, limit int) ([]outboxEvent, error) {
	rows, err := tx.Query(ctx, `SELECT id, blog_id, op, version, created_at FROM search_outbox
		ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED`, limit)
	if err != nil {
		return nil, fmt.Errorf("reading search outbox: %w", err)
	}
	defer rows.Close()
	var out []outboxEvent
	for rows.Next() {
		var e outboxEvent
		var op string
		if err := rows.Scan(&e.id, &e.blogID, &op, &e.version, &e.created); err != nil {
			return nil, fmt.Errorf("reading search outbox: %w", err)
		}
		e.op = Op(op)
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading search outbox: %w", err)
	}
	return out, nil
}

func loadDocs(ctx context.Context, tx pool.DB, t *tenant.Tenant, ids []int64) (map[int64]*blogDoc, error) {
	docs := map[int64]*blogDoc{}
	if len(ids) == 0 {
		return docs, nil
	}
	rows, err := tx.Query(ctx, `SELECT id, title, description, updated_at FROM blogs WHERE id = ANY($1)`, ids)
	if err != nil {
		return nil, fmt.Errorf("reading blogs: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		d := &blogDoc{TenantID: t.ID}
		if err := rows.Scan(&d.ID, &d.Title, &d.Description, &d.UpdatedAt); err != nil {
			return nil, fmt.Errorf("reading blogs: %w", err)
		}
		docs[d.ID] = d
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading blogs: %w", err)
	}
	return docs, nil
}
