package pool

// The connection budget: every Postgres connection of every pool holds one slot of
// Manager.tokens from before it is dialled until the server has closed it. A new
// connection that finds the budget full first closes an idle connection of another
// pool, then waits briefly for a slot, then fails (a 503 for the request).

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// errBudget is returned by the dialer when the budget stays full for BudgetWait.
var errBudget = errors.New("connection budget exhausted")

// dialer wraps dial so that every connection holds a budget slot from before it is
// dialled until the server has closed it.
func (m *Manager) dialer(key string, dial pgconn.DialFunc) pgconn.DialFunc {
	if dial == nil {
		dial = (&net.Dialer{KeepAlive: 5 * time.Minute}).DialContext
	}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		if err := m.takeSlot(ctx, key); err != nil {
			return nil, err
		}
		c, err := dial(ctx, network, addr)
		if err != nil {
			m.releaseSlot()
			return nil, err
		}
		return &slotConn{Conn: c, release: m.releaseSlot}, nil
	}
}

func (m *Manager) releaseSlot() { <-m.tokens }

// takeSlot reserves room in the budget for a new connection of the pool key: at once if
// there is room, else by closing idle connections of other pools, else by waiting for
// one to close (connections released while someone waits are closed, not kept idle).
func (m *Manager) takeSlot(ctx context.Context, key string) error {
	select {
	case m.tokens <- struct{}{}:
		return nil
	default:
	}
	m.waiters.Add(1) // before waits: a waiter counted in Stats is one release sees
	defer m.waiters.Add(-1)
	m.waits.Add(1)
	deadline := time.NewTimer(m.cfg.BudgetWait)
	defer deadline.Stop()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		m.reclaim(key)
		select {
		case m.tokens <- struct{}{}:
			return nil
		case <-deadline.C:
			m.waitTimeouts.Add(1)
			return errBudget
		case <-ctx.Done():
			return fmt.Errorf("waiting for connection budget: %w", ctx.Err())
		case <-tick.C:
		}
	}
}

// reclaim closes one idle connection of the least recently used pool that has one,
// other than the pool key. It reports whether it closed one.
func (m *Manager) reclaim(key string) bool {
	m.mu.Lock()
	var candidates []*pgxpool.Pool
	for _, k := range m.lru.Keys() { // oldest first
		if k == key {
			continue
		}
		if e, ok := m.lru.Peek(k); ok && e.pool.Stat().IdleConns() > 0 {
			candidates = append(candidates, e.pool)
		}
	}
	m.mu.Unlock()
	for _, p := range candidates {
		conns := p.AcquireAllIdle(context.Background())
		if len(conns) == 0 {
			continue
		}
		raw := conns[0].Hijack()
		for _, c := range conns[1:] {
			c.Release()
		}
		m.reclaimed.Add(1)
		go func() { _ = raw.Close(context.Background()) }()
		return true
	}
	return false
}

// slotConn is a connection holding a budget slot. Close waits (briefly) for the server
// to hang up before freeing the slot, so that the budget counts server backends, not
// just sockets: pgconn has sent Terminate by then, and the backend closes its end only
// as it exits.
type slotConn struct {
	net.Conn
	once    sync.Once
	release func()
}

// closeWait bounds how long Close waits for the server to hang up.
const closeWait = 500 * time.Millisecond

func (c *slotConn) Close() error {
	var err error
	c.once.Do(func() {
		if c.Conn.SetReadDeadline(time.Now().Add(closeWait)) == nil {
			_, _ = io.Copy(io.Discard, c.Conn)
		}
		err = c.Conn.Close()
		c.release()
	})
	return err
}
