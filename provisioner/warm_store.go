package provisioner

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tenantplane/tenantplane/pgerr"
)

// warmStore reads and writes the warm pool's registry table, warm_schemas: one row per
// pooled schema, whose state is 'filling' while a refill creates its objects, 'ready'
// once migrated and waiting for a signup, 'claimed' once given to the tenant tenant_id
// for good. Its methods return domain errors: Unavailable when the control database
// cannot be reached.
type warmStore struct {
	db *pgxpool.Pool
}

// registryErr is err, translated by pgerr (warm_schemas, tenant_moves and moved_sources
// have no domain codes of their own), wrapped in what failed: every error of warmStore
// and moveStore passes through it.
func registryErr(what string, err error) error {
	return fmt.Errorf("%s: %w", what, pgerr.Translate(err, pgerr.Codes{}))
}

// claim returns the pooled schema claimed for the tenant: the one an earlier claim took,
// else a ready one of the shard, claimed at now in the same statement (FOR UPDATE SKIP
// LOCKED: two claims never get the same row), which also makes the pooled password the
// tenant's db_password. It returns nil when the shard's pool is empty.
func (s *warmStore) claim(ctx context.Context, tenantID, shard string, now time.Time) (*warmSchema, error) {
	ws := warmSchema{shard: shard}
	err := s.db.QueryRow(ctx, `WITH mine AS (
			SELECT schema_name, role_name, migration_version, role_password FROM warm_schemas WHERE tenant_id = $1),
		pick AS (
			SELECT schema_name FROM warm_schemas
			WHERE shard = $2 AND state = 'ready' AND NOT EXISTS (SELECT 1 FROM mine)
			ORDER BY created_at LIMIT 1 FOR UPDATE SKIP LOCKED),
		took AS (
			UPDATE warm_schemas w SET state = 'claimed', tenant_id = $1, claimed_at = $3
			FROM pick WHERE w.schema_name = pick.schema_name
			RETURNING w.schema_name, w.role_name, w.migration_version, w.role_password),
		pw AS (
			UPDATE tenants SET db_password = took.role_password FROM took WHERE tenants.id = $1)
		SELECT * FROM took UNION ALL SELECT * FROM mine`,
		tenantID, shard, now).Scan(&ws.schema, &ws.role, &ws.version, &ws.password)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, registryErr("claiming a warm schema", err)
	}
	return &ws, nil
}

// claimOf returns the schema, role and shard of the pooled schema claimed for the
// tenant, nil when there is none.
func (s *warmStore) claimOf(ctx context.Context, tenantID string) (*warmSchema, error) {
	var ws warmSchema
	err := s.db.QueryRow(ctx, `SELECT schema_name, role_name, shard FROM warm_schemas WHERE tenant_id = $1`, tenantID).Scan(&ws.schema, &ws.role, &ws.shard)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, registryErr("reading the tenant's warm claim", err)
	}
	return &ws, nil
}

// forget removes the row of a pooled schema, claimed or not.
func (s *warmStore) forget(ctx context.Context, schema string) error {
	if _, err := s.db.Exec(ctx, `DELETE FROM warm_schemas WHERE schema_name = $1`, schema); err != nil {
		return registryErr("forgetting warm schema "+schema, err)
	}
	return nil
}

// forgetUnclaimed removes the row of a pooled schema unless it is claimed.
func (s *warmStore) forgetUnclaimed(ctx context.Context, schema string) error {
	if _, err := s.db.Exec(ctx, `DELETE FROM warm_schemas WHERE schema_name = $1 AND state <> 'claimed'`, schema); err != nil {
		return registryErr("forgetting warm schema "+schema, err)
	}
	return nil
}

// readyByShard returns how many ready schemas the pool holds on each shard that has any.
func (s *warmStore) readyByShard(ctx context.Context) (map[string]int, error) {
	rows, err := s.db.Query(ctx, `SELECT shard, count(*) FROM warm_schemas WHERE state = 'ready' GROUP BY shard`)
	if err != nil {
		return nil, registryErr("counting warm schemas", err)
	}
	out := map[string]int{}
	var shard string
	var n int
	_, err = pgx.ForEachRow(rows, []any{&shard, &n}, func() error {
		out[shard] = n
		return nil
	})
	if err != nil {
		return nil, registryErr("counting warm schemas", err)
	}
	return out, nil
}

// readyOn returns how many ready schemas the pool holds on the shard.
func (s *warmStore) readyOn(ctx context.Context, shard string) (int, error) {
	var ready int
	if err := s.db.QueryRow(ctx, `SELECT count(*) FROM warm_schemas WHERE shard = $1 AND state = 'ready'`, shard).Scan(&ready); err != nil {
		return 0, registryErr("counting warm schemas", err)
	}
	return ready, nil
}

// filling returns the pooled schemas of the shard recorded as filling, with their roles.
func (s *warmStore) filling(ctx context.Context, shard string) ([]warmSchema, error) {
	rows, err := s.db.Query(ctx, `SELECT schema_name, role_name FROM warm_schemas WHERE shard = $1 AND state = 'filling'`, shard)
	if err != nil {
		return nil, registryErr("listing interrupted refills", err)
	}
	list, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (warmSchema, error) {
		ws := warmSchema{shard: shard}
		return ws, row.Scan(&ws.schema, &ws.role)
	})
	if err != nil {
		return nil, registryErr("listing interrupted refills", err)
	}
	return list, nil
}

// record adds a row for the pooled schema ws, created at now, as filling.
func (s *warmStore) record(ctx context.Context, ws warmSchema, now time.Time) error {
	if _, err := s.db.Exec(ctx, `INSERT INTO warm_schemas (schema_name, role_name, role_password, shard, created_at) VALUES ($1, $2, $3, $4, $5)`,
		ws.schema, ws.role, ws.password, ws.shard, now); err != nil {
		return registryErr("recording a warm schema", err)
	}
	return nil
}

// markReady records the pooled schema as ready at migration version.
func (s *warmStore) markReady(ctx context.Context, schema string, version int64) error {
	if _, err := s.db.Exec(ctx, `UPDATE warm_schemas SET state = 'ready', migration_version = $2 WHERE schema_name = $1`, schema, version); err != nil {
		return registryErr("recording a warm schema", err)
	}
	return nil
}

// migrateOne takes the lock of the oldest ready pooled schema of shards below version
// target (FOR UPDATE SKIP LOCKED: a claim meanwhile skips it and takes another) and,
// holding it, runs upgrade on the schema; in the same transaction the row then records
// target when upgrade reports success, or goes back to filling, to be dropped, when it
// does not. It returns the schema and upgrade's report; nil when none is left.
func (s *warmStore) migrateOne(ctx context.Context, target int64, shards []string, upgrade func(warmSchema) bool) (*warmSchema, bool, error) {
	const what = "migrating the warm pool"
	tx, err := s.db.Begin(ctx)
	if err != nil {
		return nil, false, registryErr(what, err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	var ws warmSchema
	err = tx.QueryRow(ctx, `SELECT schema_name, role_name, shard, migration_version FROM warm_schemas
		WHERE state = 'ready' AND migration_version < $1 AND shard = ANY($2)
		ORDER BY created_at LIMIT 1 FOR UPDATE SKIP LOCKED`, target, shards).Scan(&ws.schema, &ws.role, &ws.shard, &ws.version)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, registryErr(what, err)
	}
	ok := upgrade(ws)
	if ok {
		_, err = tx.Exec(ctx, `UPDATE warm_schemas SET migration_version = $2 WHERE schema_name = $1`, ws.schema, target)
	} else {
		_, err = tx.Exec(ctx, `UPDATE warm_schemas SET state = 'filling' WHERE schema_name = $1`, ws.schema)
	}
	if err != nil {
		return nil, false, registryErr(what, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, false, registryErr(what, err)
	}
	return &ws, ok, nil
}
