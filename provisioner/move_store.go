package provisioner

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tenantplane/tenantplane/tenant"
)

// moveStore reads and writes the registry tables of moves: tenant_moves, one row per
// move in progress (moveRecord), and moved_sources, the sources that switched moves left
// behind for DropMovedSources. Its methods return domain errors: Unavailable when the
// control database cannot be reached.
type moveStore struct {
	db *pgxpool.Pool
}

// errMoveRecorded is returned by moveStore.begin when the tenant has a move recorded
// already; errMoveRefused when the tenant is not active or a fleet migration is working
// on it.
var (
	errMoveRecorded = errors.New("a move of the tenant is recorded already")
	errMoveRefused  = errors.New("the tenant is not active or is being migrated")
)

const moveColumns = `tenant_id, id, from_shard, from_isolation, from_database, to_shard, to_isolation, to_database,
	offline, same_cluster, sub_oid, step, actor, last_error, copied_rows, total_rows, lag_bytes, started_at`

// get returns the tenant's move record, nil when it has none.
func (s *moveStore) get(ctx context.Context, tenantID string) (*moveRecord, error) {
	var m moveRecord
	err := s.db.QueryRow(ctx, `SELECT `+moveColumns+` FROM tenant_moves WHERE tenant_id = $1`, tenantID).Scan(
		&m.TenantID, &m.ID, &m.FromShard, &m.FromIsolation, &m.FromDatabase, &m.ToShard, &m.ToIsolation, &m.ToDatabase,
		&m.Offline, &m.SameCluster, &m.SubOID, &m.Step, &m.Actor, &m.LastError, &m.CopiedRows, &m.TotalRows, &m.LagBytes, &m.StartedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, registryErr("reading move", err)
	}
	return &m, nil
}

// recorded reports whether a move of the tenant is recorded, read through q: the pool,
// or a transaction of the caller's that must see the moves committed before its locks.
func (s *moveStore) recorded(ctx context.Context, q rowQuerier, tenantID string) (bool, error) {
	var moving bool
	if err := q.QueryRow(ctx, `SELECT EXISTS (SELECT FROM tenant_moves WHERE tenant_id = $1)`, tenantID).Scan(&moving); err != nil {
		return false, registryErr("reading the tenant's moves", err)
	}
	return moving, nil
}

// moving returns the ids of the tenants with a move in progress.
func (s *moveStore) moving(ctx context.Context) (map[string]bool, error) {
	rows, err := s.db.Query(ctx, `SELECT tenant_id::text FROM tenant_moves`)
	if err != nil {
		return nil, registryErr("listing moves", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, registryErr("listing moves", err)
	}
	out := make(map[string]bool, len(ids))
	for _, id := range ids {
		out[id] = true
	}
	return out, nil
}

// begin records the move m, in one transaction with what audit writes in it, when m's
// tenant is active and no fleet migration is working on it; the tenant's row is locked
// meanwhile (the fleet's startEntry locks it too: one of them sees the other). It
// returns errMoveRecorded, errMoveRefused, audit's errors and Unavailable.
func (s *moveStore) begin(ctx context.Context, m *moveRecord, audit func(tx pgx.Tx) error) error {
	err := pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `INSERT INTO tenant_moves (tenant_id, id, from_shard, from_isolation, from_database,
				to_shard, to_isolation, to_database, offline, same_cluster, step, actor)
			SELECT id, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12 FROM tenants
			WHERE id = $1 AND status = 'active' AND NOT migrating
			FOR UPDATE`,
			m.TenantID, m.ID, m.FromShard, m.FromIsolation, m.FromDatabase, m.ToShard, m.ToIsolation, m.ToDatabase,
			m.Offline, m.SameCluster, m.Step, m.Actor)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return errMoveRefused
		}
		return audit(tx)
	})
	switch {
	case err == nil:
		return nil
	case pgCode(err) == codeUniqueViolation:
		return errMoveRecorded
	case errors.Is(err, errMoveRefused):
		return err
	}
	return registryErr("recording move", err)
}

// step returns the last step the tenant's move recorded.
func (s *moveStore) step(ctx context.Context, tenantID string) (tenant.Step, error) {
	var step tenant.Step
	if err := s.db.QueryRow(ctx, `SELECT step FROM tenant_moves WHERE tenant_id = $1`, tenantID).Scan(&step); err != nil {
		return "", registryErr("reading move step", err)
	}
	return step, nil
}

// setStep records name as the last step of the tenant's move, clearing its last error,
// while the tenant is in status during. It reports false, writing nothing, when the
// tenant is not in that status or its move is gone.
func (s *moveStore) setStep(ctx context.Context, tenantID string, during tenant.Status, name tenant.Step) (bool, error) {
	tag, err := s.db.Exec(ctx, `UPDATE tenant_moves SET step = $2, last_error = '', updated_at = now()
		WHERE tenant_id = $1 AND EXISTS (SELECT 1 FROM tenants WHERE id = $1 AND status = $3)`, tenantID, name, during)
	if err != nil {
		return false, registryErr("recording move step "+string(name), err)
	}
	return tag.RowsAffected() > 0, nil
}

// setError records msg as the last error of the tenant's move.
func (s *moveStore) setError(ctx context.Context, tenantID, msg string) error {
	if _, err := s.db.Exec(ctx, `UPDATE tenant_moves SET last_error = $2 WHERE tenant_id = $1`, tenantID, msg); err != nil {
		return registryErr("recording move error", err)
	}
	return nil
}

// setSubscription records the oid of the move's subscription on its target.
func (s *moveStore) setSubscription(ctx context.Context, tenantID string, oid int64) error {
	if _, err := s.db.Exec(ctx, `UPDATE tenant_moves SET sub_oid = $2 WHERE tenant_id = $1`, tenantID, oid); err != nil {
		return registryErr("recording subscription", err)
	}
	return nil
}

// progress records m's copy progress: its copied and total rows and its lag.
func (s *moveStore) progress(ctx context.Context, m *moveRecord) error {
	_, err := s.db.Exec(ctx, `UPDATE tenant_moves SET copied_rows = $2, total_rows = $3, lag_bytes = $4, updated_at = now()
		WHERE tenant_id = $1`, m.TenantID, m.CopiedRows, m.TotalRows, m.LagBytes)
	if err != nil {
		return registryErr("recording move progress", err)
	}
	return nil
}

// remove deletes the tenant's move record; a missing one is not an error.
func (s *moveStore) remove(ctx context.Context, tenantID string) error {
	if _, err := s.db.Exec(ctx, `DELETE FROM tenant_moves WHERE tenant_id = $1`, tenantID); err != nil {
		return registryErr("removing the move record", err)
	}
	return nil
}

// movedSource is a source a switched move left behind: t is the tenant placed there.
type movedSource struct {
	id int64
	t  tenant.Tenant
	// dropRole is set when the tenant's role there is its own, on another cluster than
	// its target.
	dropRole bool
}

// recordSource records src, the source of a switched move, unless it is recorded and not
// dropped yet; dropRole says that its role goes with it.
func (s *moveStore) recordSource(ctx context.Context, src *tenant.Tenant, dropRole bool) error {
	_, err := s.db.Exec(ctx, `INSERT INTO moved_sources (tenant_id, shard, isolation, schema_name, database_name, db_role, drop_role)
		SELECT $1, $2, $3, $4, $5, $6, $7 WHERE NOT EXISTS (SELECT 1 FROM moved_sources
			WHERE tenant_id = $1 AND shard = $2 AND schema_name = $4 AND database_name = $5 AND dropped_at IS NULL)`,
		src.ID, src.Shard, src.Isolation, src.SchemaName, src.DatabaseName, src.DBRole, dropRole)
	if err != nil {
		return registryErr("recording the moved-away source", err)
	}
	return nil
}

// sources returns the sources not dropped yet whose moves were recorded at or before
// movedBy, oldest first.
func (s *moveStore) sources(ctx context.Context, movedBy time.Time) ([]movedSource, error) {
	rows, err := s.db.Query(ctx, `SELECT m.id, m.shard, m.isolation, m.schema_name, m.database_name, m.db_role, m.drop_role, t.id, t.slug
		FROM moved_sources m JOIN tenants t ON t.id = m.tenant_id
		WHERE m.dropped_at IS NULL AND m.moved_at <= $1 ORDER BY m.id`, movedBy)
	if err != nil {
		return nil, registryErr("listing moved sources", err)
	}
	list, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (movedSource, error) {
		var s movedSource
		err := row.Scan(&s.id, &s.t.Shard, &s.t.Isolation, &s.t.SchemaName, &s.t.DatabaseName, &s.t.DBRole, &s.dropRole, &s.t.ID, &s.t.Slug)
		return s, err
	})
	if err != nil {
		return nil, registryErr("listing moved sources", err)
	}
	return list, nil
}

// sourceDropped records the moved source with the given id as dropped.
func (s *moveStore) sourceDropped(ctx context.Context, id int64) error {
	if _, err := s.db.Exec(ctx, `UPDATE moved_sources SET dropped_at = now() WHERE id = $1`, id); err != nil {
		return registryErr("recording the moved source dropped", err)
	}
	return nil
}
