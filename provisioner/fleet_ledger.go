package provisioner

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/tenantplane/tenantplane/apperr"
	"github.com/tenantplane/tenantplane/pgerr"
	"github.com/tenantplane/tenantplane/tenant"
)

// ledgerTimeout bounds the ledger writes made after a run's context ended.
const ledgerTimeout = 10 * time.Second

// runLockKey is the session advisory lock a live run holds on the control database.
// A run in state running whose lock nobody holds belongs to a dead process.
func runLockKey(id string) int64 {
	h := fnv.New64a()
	h.Write([]byte("tenantplane/fleet-run/" + id))
	return int64(h.Sum64())
}

// record takes the run's lock and writes the run and its entries to the ledger.
func (r *fleetRun) record(ctx context.Context) error {
	conn, err := r.f.db.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("acquiring registry connection: %w", pgerr.Translate(err, pgerr.Codes{}))
	}
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1)`, runLockKey(r.id)); err != nil {
		conn.Release()
		return fmt.Errorf("locking fleet run: %w", pgerr.Translate(err, pgerr.Codes{}))
	}
	r.lock = conn
	opts, err := json.Marshal(r.opts)
	if err != nil {
		r.unlock()
		return fmt.Errorf("encoding run options: %w", err)
	}
	n := len(r.jobs)
	ids, positions, froms := make([]string, n), make([]int32, n), make([]int64, n)
	states, details := make([]string, n), make([]string, n)
	for i, j := range r.jobs {
		ids[i], positions[i], froms[i] = j.t.ID, int32(j.position), j.t.MigrationVersion
		states[i], details[i] = string(j.state), j.detail
	}
	err = pgx.BeginFunc(ctx, r.f.db, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO migration_runs (id, actor, target_version, options, state, started_at)
			VALUES ($1, $2, $3, $4, 'running', $5)`, r.id, r.opts.Actor, r.target, opts, r.started); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO migration_entries (run_id, tenant_id, position, from_version, target_version, state, detail, queued_at)
			SELECT $1, u.tenant_id::uuid, u.position, u.from_version, $2, u.state, u.detail, $3
			FROM unnest($4::text[], $5::int[], $6::bigint[], $7::text[], $8::text[]) AS u(tenant_id, position, from_version, state, detail)`,
			r.id, r.target, r.started, ids, positions, froms, states, details)
		return err
	})
	if err != nil {
		r.unlock()
		return fmt.Errorf("recording fleet run: %w", pgerr.Translate(err, pgerr.Codes{}))
	}
	return nil
}

// unlock releases the run's lock: from here on the run reads as dead if still running.
func (r *fleetRun) unlock() {
	if r.lock == nil || r.crashed.Load() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), ledgerTimeout)
	defer cancel()
	if _, err := r.lock.Exec(ctx, `SELECT pg_advisory_unlock($1)`, runLockKey(r.id)); err != nil {
		// The session ends with the connection, and the lock with it.
		if c := r.lock.Hijack(); c != nil {
			_ = c.Close(ctx)
		}
		return
	}
	r.lock.Release()
}

// abandon ends a recorded run that never executed.
func (r *fleetRun) abandon(ctx context.Context, reason string) {
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ledgerTimeout)
	defer cancel()
	_, err := r.f.db.Exec(wctx, `UPDATE migration_runs SET state = 'canceled', error = $2, finished_at = $3 WHERE id = $1`,
		r.id, reason, r.f.now())
	if err != nil {
		r.f.log.Error("recording abandoned fleet run", "run", r.id, "error", err)
	}
	r.unlock()
}

// errMovedSince says that the tenant was placed elsewhere, or began a move between
// shards, after the run was planned: its schema must not be migrated where the plan saw
// it (DDL does not replicate to a move's target, and a switched tenant lives elsewhere).
var errMovedSince = errors.New("a move between shards started or finished after this run was planned; migrate the tenant in a later run")

// startEntry marks the tenant running in the ledger and migrating in the registry,
// unless it is no longer where the plan saw it or a move has started (errMovedSince).
// The tenant's row is locked first, as Provisioner.StartMove locks it to insert its
// move, so a move and a migration never both begin on one tenant: whichever locks
// second sees the other.
func (r *fleetRun) startEntry(ctx context.Context, j *fleetJob) error {
	err := pgx.BeginFunc(ctx, r.f.db, func(tx pgx.Tx) error {
		if err := r.checkPlacement(ctx, tx, j.t, true); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `WITH e AS (
				UPDATE migration_entries SET state = 'running', attempts = attempts + 1, started_at = $3, error = ''
				WHERE run_id = $1 AND tenant_id = $2)
			UPDATE tenants SET migrating = true, updated_at = now() WHERE id = $2`, r.id, j.t.ID, r.f.now())
		return err
	})
	if errors.Is(err, errMovedSince) {
		return err
	}
	if err != nil {
		return fmt.Errorf("recording migration start: %w", err)
	}
	j.t.Migrating = true
	return nil
}

// checkPlacement returns errMovedSince when t's registry row places it elsewhere than t
// does, or a move of t is recorded. lock takes the row's lock first (in a transaction),
// and the moves are then read by a statement of their own, which sees every move
// committed before the lock was had.
func (r *fleetRun) checkPlacement(ctx context.Context, q rowQuerier, t *tenant.Tenant, lock bool) error {
	sql := `SELECT shard, isolation, schema_name, COALESCE(database_name, '') FROM tenants WHERE id = $1`
	if lock {
		sql += ` FOR UPDATE`
	}
	var shard, iso, schema, db string
	if err := q.QueryRow(ctx, sql, t.ID).Scan(&shard, &iso, &schema, &db); err != nil {
		return fmt.Errorf("reading the tenant's placement: %w", err)
	}
	if shard != t.Shard || iso != string(t.Isolation) || schema != t.SchemaName || db != t.DatabaseName {
		return errMovedSince
	}
	moving, err := r.f.p.moves.recorded(ctx, q, t.ID)
	if err != nil {
		return err
	}
	if moving {
		return errMovedSince
	}
	return nil
}

// finishEntry records how the tenant's migration ended, with the version and dirty flag
// read from its schema in the registry when known, and clears its migrating flag.
// started is set when the entry was never marked running (a one-transaction upgrade,
// which no request can observe half done): the entry records that start and attempt too.
func (r *fleetRun) finishEntry(ctx context.Context, j *fleetJob, state EntryState, known bool, msg string, started *time.Time) error {
	if r.crashed.Load() {
		return nil
	}
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ledgerTimeout)
	defer cancel()
	var finished *time.Time
	if state != EntryPending {
		now := r.f.now()
		finished = &now
	}
	var version *int64
	var dirty *bool
	if known {
		version, dirty = &j.t.MigrationVersion, &j.t.MigrationDirty
	}
	_, err := r.f.db.Exec(wctx, `WITH e AS (
			UPDATE migration_entries SET state = $3, version = $4, error = $5, finished_at = $6,
				started_at = COALESCE($8, started_at), attempts = attempts + CASE WHEN $8::timestamptz IS NULL THEN 0 ELSE 1 END
			WHERE run_id = $1 AND tenant_id = $2)
		UPDATE tenants SET migrating = false, migration_version = COALESCE($4, migration_version),
			migration_dirty = COALESCE($7, migration_dirty), updated_at = now()
		WHERE id = $2`,
		r.id, j.t.ID, state, version, msg, finished, dirty, started)
	if err != nil {
		r.f.log.Error("recording tenant migration", "run", r.id, "tenant", j.t.Slug, "state", state, "error", err)
		return fmt.Errorf("recording migration end: %w", err)
	}
	j.t.Migrating = false
	return nil
}

// finish records the run's end and returns it as the ledger has it.
func (r *fleetRun) finish(ctx context.Context) (*Run, error) {
	defer r.unlock()
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ledgerTimeout)
	defer cancel()
	r.mu.Lock()
	halt, failed := r.halt, r.failed
	r.mu.Unlock()
	state, reason := RunDone, halt
	switch {
	case ctx.Err() != nil:
		state, reason = RunCanceled, "canceled: the tenants not migrated stay pending for the next run"
	case failed > 0 || halt != "":
		state = RunFailed
	}
	err := pgx.BeginFunc(wctx, r.f.db, func(tx pgx.Tx) error {
		if halt != "" && ctx.Err() == nil {
			if _, err := tx.Exec(wctx, `UPDATE migration_entries SET state = 'skipped', detail = $2
				WHERE run_id = $1 AND state = 'pending'`, r.id, "not started: "+halt); err != nil {
				return err
			}
		}
		_, err := tx.Exec(wctx, `UPDATE migration_runs SET state = $2, error = $3, finished_at = $4 WHERE id = $1`,
			r.id, state, reason, r.f.now())
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("recording the end of fleet run %s: %w", r.id, pgerr.Translate(err, pgerr.Codes{}))
	}
	run, err := r.f.GetRun(wctx, r.id)
	if err != nil {
		return nil, err
	}
	r.f.log.Info("fleet migration run ended", "run", r.id, "state", run.State, "done", run.Done, "failed", run.Failed,
		"skipped", run.Skipped, "pending", run.Pending, "elapsed_ms", r.f.now().Sub(r.started).Milliseconds())
	if ctx.Err() != nil {
		return run, fmt.Errorf("fleet migration run %s: %w", r.id, ctx.Err())
	}
	return run, nil
}

// recoverDeadRuns marks interrupted the runs left running by processes that died,
// their running entries pending again, and returns how many it marked. The tenants of
// those entries are never skipped by a later run (their registry row says migrating),
// so it finishes them.
func (f *Fleet) recoverDeadRuns(ctx context.Context) (int, error) {
	rows, err := f.db.Query(ctx, `SELECT id FROM migration_runs WHERE state = 'running'`)
	if err != nil {
		return 0, fmt.Errorf("listing running fleet runs: %w", pgerr.Translate(err, pgerr.Codes{}))
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return 0, fmt.Errorf("listing running fleet runs: %w", pgerr.Translate(err, pgerr.Codes{}))
	}
	n := 0
	for _, id := range ids {
		alive, err := f.runAlive(ctx, id)
		if err != nil {
			return n, err
		}
		if alive {
			continue
		}
		err = pgx.BeginFunc(ctx, f.db, func(tx pgx.Tx) error {
			tag, err := tx.Exec(ctx, `UPDATE migration_runs SET state = 'interrupted', finished_at = $2,
				error = 'the process running it stopped before the end' WHERE id = $1 AND state = 'running'`, id, f.now())
			if err != nil || tag.RowsAffected() == 0 {
				return err
			}
			_, err = tx.Exec(ctx, `UPDATE migration_entries SET state = 'pending' WHERE run_id = $1 AND state = 'running'`, id)
			return err
		})
		if err != nil {
			return n, fmt.Errorf("marking fleet run %s interrupted: %w", id, pgerr.Translate(err, pgerr.Codes{}))
		}
		f.log.Warn("fleet migration run was interrupted; a new run finishes its tenants", "run", id)
		n++
	}
	return n, nil
}

// runAlive reports whether some session holds the run's lock.
func (f *Fleet) runAlive(ctx context.Context, id string) (bool, error) {
	key := uint64(runLockKey(id))
	var alive bool
	err := f.db.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_locks
		WHERE locktype = 'advisory' AND granted AND objsubid = 1
		AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
		AND classid = $1::bigint::oid AND objid = $2::bigint::oid)`, int64(key>>32), int64(key&0xffffffff)).Scan(&alive)
	if err != nil {
		return false, fmt.Errorf("checking fleet run %s: %w", id, pgerr.Translate(err, pgerr.Codes{}))
	}
	return alive, nil
}

// lastRunFailures returns the ids of the tenants that failed in the last finished run.
func (f *Fleet) lastRunFailures(ctx context.Context) (map[string]bool, error) {
	var id string
	err := f.db.QueryRow(ctx, `SELECT id FROM migration_runs WHERE state <> 'running' ORDER BY started_at DESC, id LIMIT 1`).Scan(&id)
	if err != nil {
		return nil, fmt.Errorf("finding the last fleet run: %w", pgerr.Translate(err, pgerr.Codes{NotFound: errNoPreviousRun}))
	}
	rows, err := f.db.Query(ctx, `SELECT tenant_id::text FROM migration_entries WHERE run_id = $1 AND state = 'failed'`, id)
	if err != nil {
		return nil, fmt.Errorf("listing the last run's failures: %w", pgerr.Translate(err, pgerr.Codes{}))
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("listing the last run's failures: %w", pgerr.Translate(err, pgerr.Codes{}))
	}
	out := make(map[string]bool, len(ids))
	for _, id := range ids {
		out[id] = true
	}
	return out, nil
}

// errNoPreviousRun is the error of a retry of failures when no run has finished.
var errNoPreviousRun = apperr.New(apperr.Invalid, "no_previous_run", "there is no earlier fleet run to retry")

// maxFailures bounds the entries GetRun returns.
const maxFailures = 100

// GetRun returns the run with its counts and its failed and running entries. It
// returns NotFound (code run_not_found) for an unknown id.
func (f *Fleet) GetRun(ctx context.Context, id string) (*Run, error) {
	if _, err := uuid.Parse(id); err != nil {
		return nil, apperr.New(apperr.NotFound, "run_not_found", "migration run not found")
	}
	runs, err := f.queryRuns(ctx, `WHERE r.id = $1`, id)
	if err != nil {
		return nil, err
	}
	if len(runs) == 0 {
		return nil, apperr.New(apperr.NotFound, "run_not_found", "migration run not found")
	}
	run := runs[0]
	run.Failures, err = f.Entries(ctx, id, EntryFilter{States: []EntryState{EntryFailed, EntryRunning}, Limit: maxFailures})
	if err != nil {
		return nil, err
	}
	return run, nil
}

// ListRuns returns the latest runs, newest first, without their entries.
func (f *Fleet) ListRuns(ctx context.Context, limit int) ([]*Run, error) {
	if limit <= 0 || limit > 1000 {
		return nil, apperr.Invalidf("limit must be between 1 and 1000")
	}
	return f.queryRuns(ctx, `ORDER BY r.started_at DESC, r.id LIMIT $1`, limit)
}

func (f *Fleet) queryRuns(ctx context.Context, tail string, args ...any) ([]*Run, error) {
	rows, err := f.db.Query(ctx, `SELECT r.id::text, r.actor, r.state, r.target_version, r.options, r.error, r.started_at, r.finished_at,
			c.total, c.pending, c.running, c.done, c.failed, c.skipped
		FROM migration_runs r, LATERAL (SELECT count(*)::int AS total,
			(count(*) FILTER (WHERE state = 'pending'))::int AS pending,
			(count(*) FILTER (WHERE state = 'running'))::int AS running,
			(count(*) FILTER (WHERE state = 'done'))::int AS done,
			(count(*) FILTER (WHERE state = 'failed'))::int AS failed,
			(count(*) FILTER (WHERE state = 'skipped'))::int AS skipped
			FROM migration_entries WHERE run_id = r.id) c `+tail, args...)
	if err != nil {
		return nil, fmt.Errorf("reading fleet runs: %w", pgerr.Translate(err, pgerr.Codes{}))
	}
	defer rows.Close()
	var out []*Run
	for rows.Next() {
		var run Run
		var opts []byte
		if err := rows.Scan(&run.ID, &run.Actor, &run.State, &run.TargetVersion, &opts, &run.Error, &run.StartedAt, &run.FinishedAt,
			&run.Total, &run.Pending, &run.Running, &run.Done, &run.Failed, &run.Skipped); err != nil {
			return nil, fmt.Errorf("reading fleet runs: %w", pgerr.Translate(err, pgerr.Codes{}))
		}
		if err := json.Unmarshal(opts, &run.Options); err != nil {
			return nil, fmt.Errorf("decoding options of fleet run %s: %w", run.ID, err)
		}
		out = append(out, &run)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading fleet runs: %w", pgerr.Translate(err, pgerr.Codes{}))
	}
	return out, nil
}

// EntryFilter selects the entries of a run for Entries.
type EntryFilter struct {
	States []EntryState // empty: every state
	From   int          // first position to return: 0, or the previous page's last position + 1
	Limit  int          // 1..10000; 0 means 1000
}

// Entries returns the run's entries in run order.
func (f *Fleet) Entries(ctx context.Context, runID string, flt EntryFilter) ([]Entry, error) {
	limit := flt.Limit
	if limit == 0 {
		limit = 1000
	}
	if limit < 0 || limit > 10000 {
		return nil, apperr.Invalidf("limit must be between 1 and 10000")
	}
	states := make([]string, len(flt.States))
	for i, s := range flt.States {
		states[i] = string(s)
	}
	rows, err := f.db.Query(ctx, `SELECT e.tenant_id::text, t.slug, t.shard, e.position, e.from_version, e.target_version, e.version,
			e.state, e.detail, e.error, e.attempts, e.started_at, e.finished_at
		FROM migration_entries e JOIN tenants t ON t.id = e.tenant_id
		WHERE e.run_id = $1 AND (cardinality($2::text[]) = 0 OR e.state = ANY($2)) AND e.position >= $3
		ORDER BY e.position LIMIT $4`, runID, states, flt.From, limit)
	if err != nil {
		return nil, fmt.Errorf("reading fleet run entries: %w", pgerr.Translate(err, pgerr.Codes{}))
	}
	out, err := pgx.CollectRows(rows, pgx.RowToStructByPos[Entry])
	if err != nil {
		return nil, fmt.Errorf("reading fleet run entries: %w", pgerr.Translate(err, pgerr.Codes{}))
	}
	return out, nil
}
