package provisioner

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tenantplane/tenantplane/apperr"
	"github.com/tenantplane/tenantplane/archive"
	"github.com/tenantplane/tenantplane/tenant"
)

// The work of a move's steps (move.go has the plans). Every step is idempotent: a run
// killed after the work and before the record redoes it over what exists.

// SQLSTATEs the move tells apart.
const (
	codeLockNotAvailable = "55P03"
	codeObjectInUse      = "55006" // a replication slot still in use
)

// writePrivileges are the privileges a frozen source's tables lose.
const writePrivileges = `INSERT, UPDATE, DELETE, TRUNCATE`

// catchUpLag is how close (bytes of WAL) replication must trail before writes are frozen:
// the frozen window then only covers what is left. catchUpTicks bounds the wait for it
// (in copy polls, 100 ms each).
const (
	catchUpLag   = 256 << 10
	catchUpTicks = 1200
)

// adminURL returns the admin URL of the shard connected to database (empty: the shard's
// own), without the pool settings only pgx knows.
func (p *Provisioner) adminURL(shard, database string) (string, error) {
	sh, ok := p.shards.get(shard)
	if !ok {
		return "", fmt.Errorf("shard %q is not configured", shard)
	}
	u, err := url.Parse(sh.URL)
	if err != nil {
		return "", fmt.Errorf("parsing shard %q url: %w", shard, err)
	}
	if database != "" {
		u.Path = "/" + database
	}
	q := u.Query()
	for k := range q {
		if strings.HasPrefix(k, "pool_") {
			q.Del(k)
		}
	}
	u.RawQuery = q.Encode()
	return u.String(), nil
}

// adminConn connects as the shard's admin role to the database holding t's schema.
func (p *Provisioner) adminConn(ctx context.Context, t *tenant.Tenant) (*pgx.Conn, error) {
	dsn, err := p.adminURL(t.Shard, t.DatabaseName)
	if err != nil {
		return nil, err
	}
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return nil, fmt.Errorf("connecting to shard %s as admin: %w", t.Shard, err)
	}
	return conn, nil
}

// withAdmin runs fn on an admin connection to the database holding t's schema.
func (p *Provisioner) withAdmin(ctx context.Context, t *tenant.Tenant, fn func(*pgx.Conn) error) error {
	conn, err := p.adminConn(ctx, t)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	return fn(conn)
}

// sameCluster reports whether two shards are databases of one Postgres cluster.
func (p *Provisioner) sameCluster(ctx context.Context, a, b string) (bool, error) {
	if a == b {
		return true, nil
	}
	var ids [2]int64
	for i, name := range []string{a, b} {
		db, err := p.shards.pool(ctx, name)
		if err != nil {
			return false, err
		}
		if err := db.QueryRow(ctx, `SELECT system_identifier FROM pg_control_system()`).Scan(&ids[i]); err != nil {
			return false, fmt.Errorf("identifying the cluster of shard %s: %w", name, err)
		}
	}
	return ids[0] == ids[1], nil
}

// checkLogical returns Unprocessable (logical_replication_unavailable) unless the source
// runs with wal_level=logical and both shards' admin roles may create publications,
// slots and subscriptions (superusers).
func (p *Provisioner) checkLogical(ctx context.Context, m *moveRecord, t *tenant.Tenant) error {
	for _, shard := range []string{m.FromShard, m.ToShard} {
		db, err := p.shards.pool(ctx, shard)
		if err != nil {
			return err
		}
		var level string
		var super bool
		if err := db.QueryRow(ctx, `SELECT current_setting('wal_level'), rolsuper FROM pg_roles WHERE rolname = current_user`).Scan(&level, &super); err != nil {
			return fmt.Errorf("checking logical replication on shard %s: %w", shard, err)
		}
		if shard == m.FromShard && level != "logical" {
			return apperr.New(apperr.Unprocessable, "logical_replication_unavailable",
				"shard %s runs with wal_level=%s; an online move of tenant %q needs wal_level=logical: set it (and restart), or pass the offline option to move with writes refused during the copy", shard, level, t.Slug)
		}
		if !super {
			return apperr.New(apperr.Unprocessable, "logical_replication_unavailable",
				"the admin role of shard %s is not a superuser, which publications and subscriptions need for an online move of tenant %q; pass the offline option to move with writes refused during the copy", shard, t.Slug)
		}
	}
	return nil
}

// moveRole is the move_role step: the tenant's role on the target, with the same name
// and password (ensureRole; on the source's cluster it exists already).
func moveRole(ctx context.Context, r *run) (tenant.StepResult, error) {
	m, err := r.moveOf(ctx)
	if err != nil {
		return tenant.StepResult{}, err
	}
	return tenant.StepResult{}, r.p.ensureRole(ctx, m.target(r.t))
}

// moveSchema is the move_schema step: the tenant's schema (and database) on the target
// (ensureSchema).
func moveSchema(ctx context.Context, r *run) (tenant.StepResult, error) {
	m, err := r.moveOf(ctx)
	if err != nil {
		return tenant.StepResult{}, err
	}
	tr := &run{p: r.p, t: m.target(r.t), actor: r.actor}
	defer tr.close(ctx)
	return tenant.StepResult{}, r.p.ensureSchema(ctx, tr)
}

// moveMigrations is the move_migrations step: the target's schema at the source's
// version, read from the source's schema, its extensions created.
func moveMigrations(ctx context.Context, r *run) (tenant.StepResult, error) {
	m, err := r.moveOf(ctx)
	if err != nil {
		return tenant.StepResult{}, err
	}
	var v uint
	if err := r.p.withAdmin(ctx, m.source(r.t), func(conn *pgx.Conn) error {
		v, err = schemaVersion(ctx, conn, r.t.SchemaName)
		return err
	}); err != nil {
		return tenant.StepResult{}, err
	}
	if _, err := r.p.MigrateTenant(ctx, m.target(r.t), int(v)); err != nil {
		return tenant.StepResult{}, err
	}
	return tenant.StepResult{}, nil
}

// movePublication is the move_publication step: on the source, a publication of every
// table of the tenant's schema and the logical replication slot the subscription will
// use, made here rather than by CREATE SUBSCRIPTION, which hangs when both sides are one
// cluster.
func movePublication(ctx context.Context, r *run) (tenant.StepResult, error) {
	m, err := r.moveOf(ctx)
	if err != nil {
		return tenant.StepResult{}, err
	}
	name := m.replicationName()
	return tenant.StepResult{}, r.p.withAdmin(ctx, m.source(r.t), func(conn *pgx.Conn) error {
		var pub, slot bool
		if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1),
			EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)`, name).Scan(&pub, &slot); err != nil {
			return fmt.Errorf("reading replication objects: %w", err)
		}
		if !pub {
			if _, err := conn.Exec(ctx, `CREATE PUBLICATION `+pgx.Identifier{name}.Sanitize()+` FOR TABLES IN SCHEMA `+pgx.Identifier{r.t.SchemaName}.Sanitize()); err != nil {
				return fmt.Errorf("creating publication: %w", err)
			}
		}
		if !slot {
			if _, err := conn.Exec(ctx, `SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, name); err != nil {
				return fmt.Errorf("creating replication slot: %w", err)
			}
		}
		return nil
	})
}

// moveSubscription is the move_subscription step: on the target, the tenant's tables
// emptied (of what the migrations seeded) and a subscription to the source's
// publication over the slot, which copies every table and then follows the writes.
func moveSubscription(ctx context.Context, r *run) (tenant.StepResult, error) {
	m, err := r.moveOf(ctx)
	if err != nil {
		return tenant.StepResult{}, err
	}
	name := m.replicationName()
	srcDSN, err := r.p.adminURL(m.FromShard, m.FromDatabase)
	if err != nil {
		return tenant.StepResult{}, err
	}
	var oid int64
	err = r.p.withAdmin(ctx, m.target(r.t), func(conn *pgx.Conn) error {
		err := conn.QueryRow(ctx, `SELECT oid::int8 FROM pg_subscription WHERE subname = $1
			AND subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())`, name).Scan(&oid)
		if err == nil {
			return nil
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("reading subscription: %w", err)
		}
		var tables string
		if err := conn.QueryRow(ctx, `SELECT COALESCE(string_agg(quote_ident(schemaname) || '.' || quote_ident(tablename), ', '), '')
			FROM pg_tables WHERE schemaname = $1`, r.t.SchemaName).Scan(&tables); err != nil {
			return fmt.Errorf("listing target tables: %w", err)
		}
		if tables != "" {
			if _, err := conn.Exec(ctx, `TRUNCATE `+tables); err != nil {
				return fmt.Errorf("emptying target tables: %w", err)
			}
		}
		// synchronous_commit on: the subscriber confirms each change as soon as it is
		// applied, which keeps the frozen window's catch-up short.
		if _, err := conn.Exec(ctx, `CREATE SUBSCRIPTION `+pgx.Identifier{name}.Sanitize()+` CONNECTION `+quoteLiteral(srcDSN)+
			` PUBLICATION `+pgx.Identifier{name}.Sanitize()+
			` WITH (create_slot = false, slot_name = `+quoteLiteral(name)+`, copy_data = true, synchronous_commit = 'on')`); err != nil {
			return fmt.Errorf("creating subscription: %w", err)
		}
		return conn.QueryRow(ctx, `SELECT oid::int8 FROM pg_subscription WHERE subname = $1`, name).Scan(&oid)
	})
	if err != nil {
		return tenant.StepResult{}, err
	}
	m.SubOID = oid
	return tenant.StepResult{}, r.p.moves.setSubscription(ctx, m.TenantID, oid)
}

// moveConns returns the run's move and admin connections to the databases holding its
// source and its target; done closes them.
func (r *run) moveConns(ctx context.Context) (m *moveRecord, src, dst *pgx.Conn, done func(), err error) {
	if m, err = r.moveOf(ctx); err != nil {
		return nil, nil, nil, nil, err
	}
	if src, err = r.p.adminConn(ctx, m.source(r.t)); err != nil {
		return nil, nil, nil, nil, err
	}
	if dst, err = r.p.adminConn(ctx, m.target(r.t)); err != nil {
		_ = src.Close(context.WithoutCancel(ctx))
		return nil, nil, nil, nil, err
	}
	return m, src, dst, func() {
		_ = src.Close(context.WithoutCancel(ctx))
		_ = dst.Close(context.WithoutCancel(ctx))
	}, nil
}

// tableRows counts the rows of every table of the schema.
func tableRows(ctx context.Context, conn *pgx.Conn, schema string) (map[string]int64, int64, error) {
	rows, err := conn.Query(ctx, `SELECT tablename FROM pg_tables WHERE schemaname = $1`, schema)
	if err != nil {
		return nil, 0, fmt.Errorf("listing tables: %w", err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, 0, fmt.Errorf("listing tables: %w", err)
	}
	out := map[string]int64{}
	var total int64
	for _, n := range names {
		var c int64
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM `+qualified(schema, n)).Scan(&c); err != nil {
			return nil, 0, fmt.Errorf("counting %s: %w", n, err)
		}
		out[n] = c
		total += c
	}
	return out, total, nil
}

// moveCopy is the move_copy step: it waits for every table of the subscription to be
// copied and replicating ('r' in pg_subscription_rel), then for replication to trail by
// less than catchUpLag, reporting the rows copied and the lag.
func moveCopy(ctx context.Context, r *run) (tenant.StepResult, error) {
	m, src, dst, done, err := r.moveConns(ctx)
	if err != nil {
		return tenant.StepResult{}, err
	}
	defer done()
	counts, total, err := tableRows(ctx, src, r.t.SchemaName)
	if err != nil {
		return tenant.StepResult{}, err
	}
	m.TotalRows, m.Step = total, tenant.StepMoveSubscription
	name := m.replicationName()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for caughtUp := 0; ; {
		rows, err := dst.Query(ctx, `SELECT c.relname, r.srsubstate::text FROM pg_subscription_rel r
			JOIN pg_class c ON c.oid = r.srrelid WHERE r.srsubid = $1`, m.SubOID)
		if err != nil {
			return tenant.StepResult{}, fmt.Errorf("reading subscription state: %w", err)
		}
		type rel struct{ name, state string }
		rels, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (rel, error) {
			var x rel
			return x, row.Scan(&x.name, &x.state)
		})
		if err != nil {
			return tenant.StepResult{}, fmt.Errorf("reading subscription state: %w", err)
		}
		var copying int64
		if err := dst.QueryRow(ctx, `SELECT COALESCE(sum(tuples_processed), 0)::int8 FROM pg_stat_progress_copy
			WHERE datname = current_database()`).Scan(&copying); err != nil {
			return tenant.StepResult{}, fmt.Errorf("reading copy progress: %w", err)
		}
		ready, copied := 0, copying
		for _, x := range rels {
			if x.state == "r" || x.state == "s" {
				copied += counts[x.name]
			}
			if x.state == "r" {
				ready++
			}
		}
		var lag int64
		if err := src.QueryRow(ctx, `SELECT COALESCE((pg_current_wal_lsn() - confirmed_flush_lsn)::int8, 0)
			FROM pg_replication_slots WHERE slot_name = $1`, name).Scan(&lag); err != nil {
			return tenant.StepResult{}, fmt.Errorf("reading replication lag: %w", err)
		}
		m.CopiedRows, m.LagBytes = min(copied, total), lag
		r.report(ctx, m)
		if ready == len(rels) && len(rels) == len(counts) {
			// Caught up, or trailing for so long that the target will never do
			// better: the freeze waits for the rest.
			caughtUp++
			if lag < catchUpLag || caughtUp > catchUpTicks {
				m.CopiedRows = total
				r.report(ctx, m)
				return tenant.StepResult{}, nil
			}
		}
		select {
		case <-ctx.Done():
			return tenant.StepResult{}, ctx.Err()
		case <-tick.C:
		}
	}
}

// moveFreeze is the move_freeze step: the tenant's writes refused, in the registry (the
// dataplane answers them tenant_moving) and in Postgres (the tenant's role loses its
// write privileges on the source's tables, and transactions that were writing are
// waited out or ended); online, it then waits for the target to have applied everything
// the source wrote before.
func moveFreeze(ctx context.Context, r *run) (tenant.StepResult, error) {
	m, err := r.moveOf(ctx)
	if err != nil {
		return tenant.StepResult{}, err
	}
	if !r.t.WritesFrozen {
		if err := r.p.store.SetWritesFrozen(ctx, r.t.ID, true, r.actor, "moving to shard "+m.ToShard); err != nil {
			return tenant.StepResult{}, err
		}
		r.t.WritesFrozen = true
	}
	return tenant.StepResult{}, r.p.withAdmin(ctx, m.source(r.t), func(conn *pgx.Conn) error {
		schema := pgx.Identifier{r.t.SchemaName}.Sanitize()
		if _, err := conn.Exec(ctx, `REVOKE `+writePrivileges+` ON ALL TABLES IN SCHEMA `+schema+` FROM `+pgx.Identifier{r.t.DBRole}.Sanitize()); err != nil {
			return fmt.Errorf("revoking the tenant's writes: %w", err)
		}
		if err := drainWriters(ctx, conn, r.t.SchemaName); err != nil {
			return err
		}
		if m.Offline {
			return nil
		}
		lsn, err := flushedMark(ctx, conn, r.t.Slug)
		if err != nil {
			return err
		}
		return awaitConfirmed(ctx, conn, m.replicationName(), lsn)
	})
}

// drainWriters returns once no transaction holds a write lock on the schema's tables:
// it takes a SHARE lock on all of them, which waits for the writers (and lets readers
// through), ending the writers that hold out.
func drainWriters(ctx context.Context, conn *pgx.Conn, schema string) error {
	var tables string
	if err := conn.QueryRow(ctx, `SELECT COALESCE(string_agg(quote_ident(schemaname) || '.' || quote_ident(tablename), ', '), '')
		FROM pg_tables WHERE schemaname = $1`, schema).Scan(&tables); err != nil {
		return fmt.Errorf("listing source tables: %w", err)
	}
	if tables == "" {
		return nil
	}
	for attempt := 1; ; attempt++ {
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			_, err := tx.Exec(ctx, `SET LOCAL lock_timeout = '200ms'; LOCK TABLE `+tables+` IN SHARE MODE`)
			return err
		})
		if err == nil {
			return nil
		}
		if pgCode(err) != codeLockNotAvailable || attempt >= 20 {
			return fmt.Errorf("waiting out the tenant's writers: %w", err)
		}
		if _, err := conn.Exec(ctx, `SELECT pg_terminate_backend(l.pid) FROM pg_locks l
			JOIN pg_class c ON c.oid = l.relation JOIN pg_namespace n ON n.oid = c.relnamespace
			WHERE n.nspname = $1 AND l.granted AND l.mode = 'RowExclusiveLock' AND l.pid <> pg_backend_pid()`, schema); err != nil {
			return fmt.Errorf("ending the tenant's writers: %w", err)
		}
	}
}

// flushedMark writes a logical message into the source's WAL in a synchronously
// committed transaction, so that everything before it is flushed and sent, and returns
// its position.
func flushedMark(ctx context.Context, conn *pgx.Conn, slug string) (string, error) {
	var lsn string
	err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SET LOCAL synchronous_commit = on`); err != nil {
			return err
		}
		return tx.QueryRow(ctx, `SELECT pg_logical_emit_message(true, 'tenantplane_move', $1)::text`, slug).Scan(&lsn)
	})
	if err != nil {
		return "", fmt.Errorf("marking the freeze in the WAL: %w", err)
	}
	return lsn, nil
}

// awaitConfirmed waits until the slot's subscriber has confirmed lsn.
func awaitConfirmed(ctx context.Context, conn *pgx.Conn, slot, lsn string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for {
		var done bool
		err := conn.QueryRow(ctx, `SELECT COALESCE(confirmed_flush_lsn >= $2::pg_lsn, false) FROM pg_replication_slots WHERE slot_name = $1`, slot, lsn).Scan(&done)
		if err != nil {
			return fmt.Errorf("waiting for the target to catch up: %w", err)
		}
		if done {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for the target to catch up to %s: %w", lsn, ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// movedTables are the tables a move copies and checks: all of the tenant's but the
// migration ledger, which the target's own migrations wrote.
func movedTables(ctx context.Context, q querier, schema string) ([]archive.Table, error) {
	return schemaTables(ctx, q, schema, []string{"schema_migrations"})
}

// moveOfflineCopy is the move_offline_copy step: every table copied from the source to
// the target with COPY, piped, in one target transaction that first empties the target.
func moveOfflineCopy(ctx context.Context, r *run) (tenant.StepResult, error) {
	m, src, dst, done, err := r.moveConns(ctx)
	if err != nil {
		return tenant.StepResult{}, err
	}
	defer done()
	schema := r.t.SchemaName
	counts, total, err := tableRows(ctx, src, schema)
	if err != nil {
		return tenant.StepResult{}, err
	}
	tables, err := movedTables(ctx, src, schema)
	if err != nil {
		return tenant.StepResult{}, err
	}
	m.TotalRows, m.CopiedRows, m.Step = total, 0, tenant.StepMoveFreeze
	tx, err := dst.Begin(ctx)
	if err != nil {
		return tenant.StepResult{}, fmt.Errorf("beginning copy: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	// The rows come whole from a consistent source: no foreign key needs checking again.
	if _, err := tx.Exec(ctx, `SET LOCAL session_replication_role = replica`); err != nil {
		return tenant.StepResult{}, fmt.Errorf("beginning copy: %w", err)
	}
	if err := emptyTables(ctx, tx, schema, tables); err != nil {
		return tenant.StepResult{}, err
	}
	for _, tb := range tables {
		if err := pipeTable(ctx, src, tx.Conn(), schema, tb); err != nil {
			return tenant.StepResult{}, err
		}
		m.CopiedRows += counts[tb.Name]
		r.report(ctx, m)
	}
	if err := tx.Commit(ctx); err != nil {
		return tenant.StepResult{}, fmt.Errorf("committing copy: %w", err)
	}
	m.CopiedRows = total
	r.report(ctx, m)
	return tenant.StepResult{}, nil
}

// pipeTable copies one table's stored columns from src to dst with COPY TO piped into
// COPY FROM.
func pipeTable(ctx context.Context, src, dst *pgx.Conn, schema string, tb archive.Table) error {
	cols := columnList(tb.Columns)
	pr, pw := io.Pipe()
	sent := make(chan error, 1)
	go func() {
		_, err := src.PgConn().CopyTo(ctx, pw, `COPY `+qualified(schema, tb.Name)+` (`+cols+`) TO STDOUT`)
		pw.CloseWithError(err)
		sent <- err
	}()
	_, err := dst.PgConn().CopyFrom(ctx, pr, `COPY `+qualified(schema, tb.Name)+` (`+cols+`) FROM STDIN`)
	_ = pr.CloseWithError(errors.New("the copy into the target stopped"))
	if serr := <-sent; serr != nil && err == nil {
		err = serr
	}
	if err != nil {
		return fmt.Errorf("copying table %s: %w", tb.Name, err)
	}
	return nil
}

// primaryKeys returns each table's primary key columns.
func primaryKeys(ctx context.Context, q querier, schema string) (map[string][]string, error) {
	rows, err := q.Query(ctx, `SELECT c.relname, array_agg(a.attname::text ORDER BY array_position(i.indkey::int2[], a.attnum))
		FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace
		JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = ANY (i.indkey)
		WHERE i.indisprimary AND n.nspname = $1 GROUP BY c.relname`, schema)
	if err != nil {
		return nil, fmt.Errorf("listing primary keys: %w", err)
	}
	out := map[string][]string{}
	for rows.Next() {
		var name string
		var cols []string
		if err := rows.Scan(&name, &cols); err != nil {
			rows.Close()
			return nil, fmt.Errorf("listing primary keys: %w", err)
		}
		out[name] = cols
	}
	return out, rows.Err()
}

// tableSums returns the archive sums (row count and checksum of the COPY text) of the
// tables, each read in primary key order, in one snapshot.
func tableSums(ctx context.Context, conn *pgx.Conn, schema string, tables []archive.Table, keys map[string][]string) ([]archive.Sum, error) {
	tx, err := readSnapshot(ctx, conn)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	sums := make([]archive.Sum, 0, len(tables))
	for _, tb := range tables {
		order := keys[tb.Name]
		if len(order) == 0 {
			order = tb.Columns
		}
		s := archive.NewSummer(tb.Name)
		if _, err := tx.Conn().PgConn().CopyTo(ctx, s, `COPY (SELECT `+columnList(tb.Columns)+` FROM `+qualified(schema, tb.Name)+
			` ORDER BY `+columnList(order)+`) TO STDOUT`); err != nil {
			return nil, fmt.Errorf("summing table %s: %w", tb.Name, err)
		}
		sums = append(sums, s.Sum())
	}
	return sums, nil
}

// moveVerify is the move_verify step: every table's row count and checksum (as an
// archive has them) equal on both sides, read at once on each, then the target's
// sequences set to the source's, which replication does not carry.
func moveVerify(ctx context.Context, r *run) (tenant.StepResult, error) {
	_, src, dst, done, err := r.moveConns(ctx)
	if err != nil {
		return tenant.StepResult{}, err
	}
	defer done()
	schema := r.t.SchemaName
	tables, err := movedTables(ctx, src, schema)
	if err != nil {
		return tenant.StepResult{}, err
	}
	keys, err := primaryKeys(ctx, src, schema)
	if err != nil {
		return tenant.StepResult{}, err
	}
	type result struct {
		sums []archive.Sum
		err  error
	}
	theirs := make(chan result, 1)
	go func() {
		s, err := tableSums(ctx, dst, schema, tables, keys)
		theirs <- result{s, err}
	}()
	ours, err := tableSums(ctx, src, schema, tables, keys)
	got := <-theirs
	if err != nil {
		return tenant.StepResult{}, err
	}
	if got.err != nil {
		return tenant.StepResult{}, got.err
	}
	var diffs []string
	for i, s := range ours {
		if t := got.sums[i]; t != s {
			diffs = append(diffs, fmt.Sprintf("%s (source %d rows %.12s, target %d rows %.12s)", s.Name, s.Rows, s.SHA256, t.Rows, t.SHA256))
		}
	}
	if len(diffs) > 0 {
		return tenant.StepResult{}, fmt.Errorf("the target differs from the source: %s", strings.Join(diffs, ", "))
	}
	return tenant.StepResult{}, copySequences(ctx, src, dst, schema)
}

// copySequences sets each of the target schema's sequences to the source's value.
func copySequences(ctx context.Context, src, dst *pgx.Conn, schema string) error {
	rows, err := src.Query(ctx, `SELECT sequencename::text, last_value FROM pg_sequences WHERE schemaname = $1 AND last_value IS NOT NULL`, schema)
	if err != nil {
		return fmt.Errorf("reading sequences: %w", err)
	}
	type seq struct {
		name string
		last int64
	}
	seqs, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (seq, error) {
		var s seq
		return s, row.Scan(&s.name, &s.last)
	})
	if err != nil {
		return fmt.Errorf("reading sequences: %w", err)
	}
	for _, s := range seqs {
		if _, err := dst.Exec(ctx, `SELECT setval($1::regclass, $2, true)`, qualified(schema, s.name), s.last); err != nil {
			return fmt.Errorf("setting sequence %s: %w", s.name, err)
		}
	}
	return nil
}

// moveSwitch is the move_switch step: the registry points at the target, in one
// transaction that also thaws the writes (tenant.Store.SwitchPlacement). The pool mode
// follows a change of isolation.
func moveSwitch(ctx context.Context, r *run) (tenant.StepResult, error) {
	m, err := r.moveOf(ctx)
	if err != nil {
		return tenant.StepResult{}, err
	}
	if m.switched(r.t) {
		return tenant.StepResult{}, nil
	}
	mode := r.t.PoolMode
	if m.ToIsolation != m.FromIsolation {
		mode = tenant.PoolShared
		if m.ToIsolation == tenant.IsolationDatabase {
			mode = tenant.PoolDedicated
		}
	}
	got, err := r.p.store.SwitchPlacement(ctx, r.t.ID, tenant.Placement{Shard: m.ToShard, Isolation: m.ToIsolation, DatabaseName: m.ToDatabase, PoolMode: mode},
		r.actor, fmt.Sprintf("from shard %s (%s) to shard %s (%s)", m.FromShard, m.FromIsolation, m.ToShard, m.ToIsolation))
	if err != nil {
		return tenant.StepResult{}, err
	}
	*r.t = *got
	return tenant.StepResult{}, nil
}

// moveCleanup is the move_cleanup step: the subscription, slots and publication dropped,
// and the source, unwritable, recorded for DropMovedSources.
func moveCleanup(ctx context.Context, r *run) (tenant.StepResult, error) {
	m, err := r.moveOf(ctx)
	if err != nil {
		return tenant.StepResult{}, err
	}
	if err := r.p.dropReplication(ctx, r, m, true); err != nil {
		return tenant.StepResult{}, err
	}
	return tenant.StepResult{}, r.p.moves.recordSource(ctx, m.source(r.t), !m.SameCluster)
}

// moveForget is the last step of a move or its undo: the move's record removed.
func moveForget(ctx context.Context, r *run) (tenant.StepResult, error) {
	return tenant.StepResult{}, r.p.moves.remove(ctx, r.t.ID)
}

// errSwitched refuses to undo a move whose target serves the tenant.
var errSwitched = errors.New("the tenant is served from the move's target already; the move cannot be undone")

// moveUndoSource is the move_undo_source step: the replication objects dropped (on the
// target if it can be reached; the target's step drops them otherwise), the source's
// write privileges back and its writes thawed.
func moveUndoSource(ctx context.Context, r *run) (tenant.StepResult, error) {
	m, err := r.moveOf(ctx)
	if err != nil {
		return tenant.StepResult{}, err
	}
	if m.switched(r.t) {
		return tenant.StepResult{}, errSwitched
	}
	if err := r.p.dropReplication(ctx, r, m, false); err != nil {
		return tenant.StepResult{}, err
	}
	if err := r.p.withAdmin(ctx, m.source(r.t), func(conn *pgx.Conn) error {
		_, err := conn.Exec(ctx, `GRANT `+writePrivileges+` ON ALL TABLES IN SCHEMA `+pgx.Identifier{r.t.SchemaName}.Sanitize()+
			` TO `+pgx.Identifier{r.t.DBRole}.Sanitize())
		return err
	}); err != nil {
		return tenant.StepResult{}, fmt.Errorf("giving the tenant its writes back: %w", err)
	}
	if r.t.WritesFrozen {
		if err := r.p.store.SetWritesFrozen(ctx, r.t.ID, false, r.actor, "move to shard "+m.ToShard+" undone"); err != nil {
			return tenant.StepResult{}, err
		}
		r.t.WritesFrozen = false
	}
	return tenant.StepResult{}, nil
}

// moveUndoTarget is the move_undo_target step: the subscription, the target's schema or
// database, and the role when the move made it on another cluster, dropped.
func moveUndoTarget(ctx context.Context, r *run) (tenant.StepResult, error) {
	m, err := r.moveOf(ctx)
	if err != nil {
		return tenant.StepResult{}, err
	}
	if m.switched(r.t) {
		return tenant.StepResult{}, errSwitched
	}
	if err := r.p.dropSubscription(ctx, m, r.t); err != nil {
		return tenant.StepResult{}, err
	}
	tgt := m.target(r.t)
	if err := r.p.dropTenantStorage(ctx, tgt, false); err != nil {
		return tenant.StepResult{}, err
	}
	if !m.SameCluster {
		if _, err := dropRole(ctx, &run{p: r.p, t: tgt}); err != nil {
			return tenant.StepResult{}, err
		}
	}
	return tenant.StepResult{}, nil
}

// dropReplication drops the move's subscription on the target (an unreachable target
// is an error only when targetRequired), then its slots and publication on the source.
func (p *Provisioner) dropReplication(ctx context.Context, r *run, m *moveRecord, targetRequired bool) error {
	if err := p.dropSubscription(ctx, m, r.t); err != nil {
		if targetRequired {
			return err
		}
		p.log.Warn("cannot drop the move's subscription on the target yet", "tenant", r.t.Slug, "shard", m.ToShard, "error", err)
	}
	name := m.replicationName()
	return p.withAdmin(ctx, m.source(r.t), func(conn *pgx.Conn) error {
		if err := dropSlots(ctx, conn, name, m.SubOID); err != nil {
			return err
		}
		if _, err := conn.Exec(ctx, `DROP PUBLICATION IF EXISTS `+pgx.Identifier{name}.Sanitize()); err != nil {
			return fmt.Errorf("dropping publication: %w", err)
		}
		return nil
	})
}

// dropSubscription drops the move's subscription on the target, detached from its slot
// first (the source's slots are dropped by dropSlots), so that it needs no connection
// to the source and works the same on one cluster.
func (p *Provisioner) dropSubscription(ctx context.Context, m *moveRecord, t *tenant.Tenant) error {
	name := m.replicationName()
	err := p.withAdmin(ctx, m.target(t), func(conn *pgx.Conn) error {
		var exists bool
		if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_subscription WHERE subname = $1
			AND subdbid = (SELECT oid FROM pg_database WHERE datname = current_database()))`, name).Scan(&exists); err != nil {
			return fmt.Errorf("reading subscription: %w", err)
		}
		if !exists {
			return nil
		}
		sub := pgx.Identifier{name}.Sanitize()
		for _, q := range []string{`ALTER SUBSCRIPTION ` + sub + ` DISABLE`, `ALTER SUBSCRIPTION ` + sub + ` SET (slot_name = NONE)`, `DROP SUBSCRIPTION ` + sub} {
			if _, err := conn.Exec(ctx, q); err != nil {
				return fmt.Errorf("dropping subscription: %w", err)
			}
		}
		return nil
	})
	if pgCode(errors.Unwrap(err)) == codeInvalidCatalogName || pgCode(err) == codeInvalidCatalogName {
		return nil // no target database: no subscription in it
	}
	return err
}

// dropSlots drops the move's replication slot and the table-sync slots of its
// subscription on the source, ending the WAL senders still using them.
func dropSlots(ctx context.Context, conn *pgx.Conn, name string, subOID int64) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		rows, err := conn.Query(ctx, `SELECT slot_name::text, active_pid FROM pg_replication_slots
			WHERE slot_name = $1 OR ($2 > 0 AND slot_name LIKE 'pg\_' || $2 || '\_sync\_%')`, name, subOID)
		if err != nil {
			return fmt.Errorf("listing replication slots: %w", err)
		}
		type slot struct {
			name string
			pid  *int32
		}
		slots, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (slot, error) {
			var s slot
			return s, row.Scan(&s.name, &s.pid)
		})
		if err != nil {
			return fmt.Errorf("listing replication slots: %w", err)
		}
		if len(slots) == 0 {
			return nil
		}
		for _, s := range slots {
			if s.pid != nil {
				_, err = conn.Exec(ctx, `SELECT pg_terminate_backend($1)`, *s.pid)
			} else {
				_, err = conn.Exec(ctx, `SELECT pg_drop_replication_slot($1)`, s.name)
			}
			if c := pgCode(err); err != nil && c != codeUndefinedObject && c != codeObjectInUse {
				return fmt.Errorf("dropping replication slot %s: %w", s.name, err)
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("dropping replication slot %s: %w", name, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}
