package provisioner

import (
	"context"
	"fmt"
	"sync"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tenantplane/tenantplane/pgerr"
	"github.com/tenantplane/tenantplane/tenant"
)

// tenantLocks hands out the control-database connections that hold a per-tenant
// provisioning lock for the length of a run. They come from a pool of their own, as
// many as runs may go at once: taken from the registry pool, a few runs holding their
// lock could leave none of its connections for their own registry writes, and every
// run would wait forever.
type tenantLocks struct {
	store *tenant.Store
	size  int32

	// mu guards pool, opened on first use.
	mu   sync.Mutex
	pool *pgxpool.Pool
}

// acquire returns a connection to hold a lock on; release it when the run ends.
func (l *tenantLocks) acquire(ctx context.Context) (*pgxpool.Conn, error) {
	l.mu.Lock()
	if l.pool == nil {
		cfg := l.store.DB().Config()
		cfg.MaxConns = l.size
		cfg.MinConns = 0
		pool, err := pgxpool.NewWithConfig(ctx, cfg)
		if err != nil {
			l.mu.Unlock()
			return nil, fmt.Errorf("opening registry lock pool: %w", err)
		}
		l.pool = pool
	}
	pool := l.pool
	l.mu.Unlock()
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("acquiring registry lock connection: %w", pgerr.Translate(err, pgerr.Codes{}))
	}
	return conn, nil
}

func (l *tenantLocks) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.pool != nil {
		l.pool.Close()
		l.pool = nil
	}
}
