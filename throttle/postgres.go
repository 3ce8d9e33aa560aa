package throttle

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tenantplane/tenantplane/pgerr"
)

// Postgres is a Store in the control database's throttle_buckets table (public
// migration 000005), shared by every replica: for deployments without Redis. Take locks
// the keys' rows in name order for one short transaction.
type Postgres struct {
	db    *pgxpool.Pool
	takes atomic.Int64
}

var _ Store = (*Postgres)(nil)

// NewPostgres returns a store on the control database pool db.
func NewPostgres(db *pgxpool.Pool) *Postgres { return &Postgres{db: db} }

// sweepEvery is how many takes pass between deletions of expired rows.
const sweepEvery = 1000

// Take implements Store. Database errors are translated by pgerr (an unreachable
// database is Unavailable).
func (p *Postgres) Take(ctx context.Context, now time.Time, keys []Key) (time.Duration, error) {
	names := keyNames(keys)
	var wait time.Duration
	err := pgx.BeginFunc(ctx, p.db, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO throttle_buckets (key, tat_us)
			SELECT k, 0 FROM unnest($1::text[]) AS k ORDER BY k ON CONFLICT (key) DO NOTHING`, names); err != nil {
			return fmt.Errorf("adding throttle keys: %w", err)
		}
		tats, err := lockTats(ctx, tx, names)
		if err != nil {
			return err
		}
		next := make([]int64, len(keys))
		for i, k := range keys {
			t, w := take(time.UnixMicro(tats[k.Name]), now, k.Rule)
			next[i] = t.UnixMicro()
			wait = max(wait, w)
		}
		if wait > 0 {
			return nil
		}
		if _, err := tx.Exec(ctx, `UPDATE throttle_buckets b SET tat_us = n.tat
			FROM unnest($1::text[], $2::bigint[]) AS n(key, tat) WHERE b.key = n.key`, names, next); err != nil {
			return fmt.Errorf("updating throttle keys: %w", err)
		}
		return nil
	})
	if err != nil {
		return 0, pgerr.Translate(err, pgerr.Codes{})
	}
	if p.takes.Add(1)%sweepEvery == 0 {
		_, _ = p.db.Exec(ctx, `DELETE FROM throttle_buckets WHERE tat_us < $1`, now.UnixMicro())
	}
	return wait, nil
}

// Give implements Store. Errors as for Take.
func (p *Postgres) Give(ctx context.Context, now time.Time, keys []Key) error {
	names := keyNames(keys)
	err := pgx.BeginFunc(ctx, p.db, func(tx pgx.Tx) error {
		tats, err := lockTats(ctx, tx, names)
		if err != nil {
			return err
		}
		next := make([]int64, 0, len(keys))
		live := make([]string, 0, len(keys))
		for _, k := range keys {
			us, ok := tats[k.Name]
			if !ok {
				continue
			}
			if t, ok := give(time.UnixMicro(us), now, k.Rule); ok {
				live, next = append(live, k.Name), append(next, t.UnixMicro())
			} else {
				live, next = append(live, k.Name), append(next, 0)
			}
		}
		if _, err := tx.Exec(ctx, `UPDATE throttle_buckets b SET tat_us = n.tat
			FROM unnest($1::text[], $2::bigint[]) AS n(key, tat) WHERE b.key = n.key`, live, next); err != nil {
			return fmt.Errorf("refunding throttle keys: %w", err)
		}
		return nil
	})
	return pgerr.Translate(err, pgerr.Codes{})
}

// lockTats locks the rows of names, in name order, and returns their times.
func lockTats(ctx context.Context, tx pgx.Tx, names []string) (map[string]int64, error) {
	rows, err := tx.Query(ctx, `SELECT key, tat_us FROM throttle_buckets WHERE key = ANY($1) ORDER BY key FOR UPDATE`, names)
	if err != nil {
		return nil, fmt.Errorf("locking throttle keys: %w", err)
	}
	tats := map[string]int64{}
	var k string
	var us int64
	_, err = pgx.ForEachRow(rows, []any{&k, &us}, func() error {
		tats[k] = us
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading throttle keys: %w", err)
	}
	return tats, nil
}

func keyNames(keys []Key) []string {
	names := make([]string, len(keys))
	for i, k := range keys {
		names[i] = k.Name
	}
	return names
}
