package pool

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/golang-lru/v2/simplelru"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"
)

// bindSQL binds the current transaction to a tenant: its role ($1, a role name) and its
// search path ($2, the quoted schema). Both settings are local: they end with the
// transaction, committed or not. set_config('role', ...) checks, as SET ROLE does, that
// the gateway role is a member of the tenant's role.
const bindSQL = `SELECT set_config('role', $1, true), set_config('search_path', $2, true)`

// customPlansSQL makes the rest of the transaction plan each statement with its values.
// The gateway role's sessions default to generic plans (plan_cache_mode, set with its
// role at setup): a statement is prepared for each tenant schema on each connection, so
// most statements run only a few times per connection, and Postgres would otherwise
// plan each of their first five runs again with its values (2.3x the Postgres CPU of one
// tenant per request over 1,000 tenants). A query whose best plan depends on its values
// (the search's prefixes: the primary key walked for a broad one, the GIN index for a
// narrow one) asks for them with pgx.QueryExecModeExec, and its pipeline carries this
// after the binding.
const customPlansSQL = `SELECT set_config('plan_cache_mode', 'force_custom_plan', true)`

// bindName is the name bindSQL is prepared under on each shared connection. It names
// only pg_catalog functions, which the search path always reaches first.
const bindName = "tp_bind"

// DefaultStatements is how many prepared statements one shared connection keeps by
// default (Config.Statements); past it, the least recently used is deallocated (in the
// next pipeline on the connection, before anything else). A tenant's requests stay on a
// few connections (the groups of Manager.key), so a connection's statements are those
// of the tenants it serves: 10,000 tenants over 40 connections are 250 a connection, two
// statements each for a blog read. A statement costs its backend about 24 KB.
const DefaultStatements = 1024

// stmtKey names a prepared statement: its SQL and the schema (and schema version) of
// the tenant it serves. A statement is prepared for each tenant schema on each
// connection: its names resolve in that schema when it is parsed, and since the search
// path is the same whenever it runs, Postgres never re-analyses it when the connection
// switches between tenants (a statement shared by tenants would be re-planned at every
// switch). It is only ever executed bound to its own tenant; a tenant on a new schema
// version gets new statements, so never an old result shape.
type stmtKey struct {
	schema  string
	version int64
	sql     string
}

func (k stmtKey) name() string {
	h := sha256.New()
	h.Write([]byte(k.schema))
	h.Write([]byte{0})
	h.Write([]byte(strconv.FormatInt(k.version, 10)))
	h.Write([]byte{0})
	h.Write([]byte(k.sql))
	return "tp_" + hex.EncodeToString(h.Sum(nil)[:12])
}

// stmtCache holds the prepared statements of one shared connection. Only the holder of
// the connection touches it, but for tenants (read by Stats).
type stmtCache struct {
	byKey *simplelru.LRU[stmtKey, *pgconn.StatementDescription]
	size  int // byKey's capacity
	// evicted are the names of statements dropped from byKey and not yet deallocated.
	evicted []string
	// bind is bindSQL prepared on the connection (nil: not yet).
	bind *pgconn.StatementDescription
	// last is the tenant the connection served last; seen the tenants it has served
	// (up to maxSeen), counted in tenants for Stats.
	last    string
	seen    map[string]struct{}
	tenants atomic.Int32
}

func newStmtCache(size int) *stmtCache {
	c := &stmtCache{seen: map[string]struct{}{}, size: size}
	c.byKey, _ = simplelru.NewLRU(size, func(_ stmtKey, sd *pgconn.StatementDescription) { // errors only for size <= 0
		c.evicted = append(c.evicted, sd.Name)
	})
	return c
}

// maxSeen bounds the tenants a connection's cache remembers having served.
const maxSeen = 1 << 14

// serve records that the connection now serves tenant id and reports whether it last
// served another one.
func (c *stmtCache) serve(id string) (switched bool) {
	if c.last == id {
		return false
	}
	switched = c.last != ""
	c.last = id
	if _, ok := c.seen[id]; !ok && len(c.seen) < maxSeen {
		c.seen[id] = struct{}{}
		c.tenants.Store(int32(len(c.seen)))
	}
	return switched
}

// caches maps each shared connection to its statement cache of size statements.
type caches struct {
	m    sync.Map // *pgconn.PgConn → *stmtCache
	size int
}

func (c *caches) of(conn *pgx.Conn) *stmtCache {
	if v, ok := c.m.Load(conn.PgConn()); ok {
		return v.(*stmtCache)
	}
	sc := newStmtCache(c.size)
	c.m.Store(conn.PgConn(), sc)
	return sc
}

func (c *caches) drop(conn *pgx.Conn) { c.m.Delete(conn.PgConn()) }

// tenants returns how many shared connections are open and the distinct tenants they
// have served, summed over them and at most on one.
func (c *caches) tenants() (conns int, sum, most int) {
	c.m.Range(func(_, v any) bool {
		n := int(v.(*stmtCache).tenants.Load())
		conns, sum, most = conns+1, sum+n, max(most, n)
		return true
	})
	return conns, sum, most
}

// shared is the database handle of a unit of work on a shard-wide connection, logged in
// as the gateway role. Each of its statements (or batches) goes out through one pgconn
// pipeline, ended by a single Sync, after the binding (bindSQL):
//
//   - for a Read, without BEGIN: the pipeline is one implicit transaction, so the binding
//     holds for the statement and ends with it, and one round trip does it all;
//   - for a Write, the first pipeline starts with BEGIN; the transaction (and the
//     binding) then lasts until the COMMIT or ROLLBACK of Manager.run, and later
//     statements go out without it.
//
// A statement is prepared (Parse) in the same pipeline, after the binding, the first
// time the connection sees it for the tenant's schema (and version), so its names resolve in
// the tenant's schema; later uses only Bind and Execute it. pgx's own batch would
// prepare unknown statements in a round trip of their own, before the binding.
//
// A binding that fails aborts the transaction: the statements after it do not run, and
// the connection is rolled back (implicitly at Sync, or by run) or discarded by the pool.
// Statements never run on the connection otherwise: the connection itself is not
// handed out.
type shared struct {
	conn         *pgxpool.Conn
	cache        *stmtCache
	role, schema string
	version      int64
	inTx         bool
	begun        bool // a Write's BEGIN has been sent
	discard      bool // a statement error says the connection's cache is stale: close it
}

var (
	_ DB               = (*shared)(nil)
	_ pgx.BatchResults = (*pipeResults)(nil)
	_ pgx.Rows         = (*batchRows)(nil)
	_ pgx.Row          = (*batchRow)(nil)
	_ pgx.Row          = rowsRow{}
)

// errOptions refuses a query option that a pipeline cannot carry.
var errOptions = errors.New("query options other than the exec mode are not supported on shared connections")

// How a statement of a pipeline is sent.
type sendMode int

const (
	sendCached   sendMode = iota // prepared on the connection: Bind and Execute
	sendPrepare                  // Parse it under its name first, then run it
	sendPrepared                 // parsed earlier in this same pipeline
	sendUnnamed                  // more new statements than the cache holds: unnamed Parse, Bind, Execute
)

// queued is one statement of a pipeline, its arguments encoded.
type queued struct {
	mode    sendMode
	key     stmtKey
	name    string
	sd      *pgconn.StatementDescription
	values  [][]byte
	formats []int16
	results []int16
}

// SendBatch sends b after the binding and returns its results positioned at b's first
// query.
func (d *shared) SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults {
	conn := d.conn.Conn()
	tm := conn.TypeMap()
	qs := make([]queued, 0, len(b.QueuedQueries))
	pending := map[stmtKey]string{}
	customPlans := false
	for _, q := range b.QueuedQueries {
		sql, args, custom, err := d.rewrite(ctx, conn, q.SQL, q.Arguments)
		if err != nil {
			return errBatch{err}
		}
		customPlans = customPlans || custom
		k := stmtKey{schema: d.schema, version: d.version, sql: sql}
		var eqb pgx.ExtendedQueryBuilder
		qd := queued{key: k}
		sd, _ := d.cache.byKey.Get(k)
		switch name := pending[k]; {
		case sd != nil:
			qd.mode, qd.sd = sendCached, sd
			err = eqb.Build(tm, sd, args)
		case name != "":
			qd.mode, qd.name = sendPrepared, name
			err = eqb.Build(tm, nil, args)
		case len(pending) < d.cache.size/2:
			qd.mode, qd.name = sendPrepare, k.name()
			pending[k] = qd.name
			err = eqb.Build(tm, nil, args)
		default:
			qd.mode = sendUnnamed
			err = eqb.Build(tm, nil, args)
		}
		if err != nil {
			return errBatch{fmt.Errorf("encoding arguments: %w", err)}
		}
		qd.values, qd.formats, qd.results = eqb.ParamValues, eqb.ParamFormats, eqb.ResultFormats
		qs = append(qs, qd)
	}
	pl := conn.PgConn().StartPipeline(ctx)
	prefix := 0
	// Statements evicted from the cache go first: one of this pipeline may reuse a name.
	for _, name := range d.cache.evicted {
		pl.SendDeallocate(name)
		prefix++
	}
	d.cache.evicted = d.cache.evicted[:0]
	if !d.begun {
		if d.inTx {
			pl.SendQueryParams("BEGIN", nil, nil, nil, nil)
			prefix++
			// From here on the connection may be in a transaction: run ends it.
			d.begun = true
		}
		bindArgs := [][]byte{[]byte(d.role), []byte(d.schema)}
		if d.cache.bind != nil {
			pl.SendQueryStatement(d.cache.bind, bindArgs, nil, nil)
		} else {
			pl.SendPrepare(bindName, bindSQL, nil)
			pl.SendQueryPrepared(bindName, bindArgs, nil, nil)
			prefix++
		}
		prefix++
	}
	if customPlans {
		pl.SendQueryParams(customPlansSQL, nil, nil, nil, nil)
		prefix++
	}
	for _, q := range qs {
		switch q.mode {
		case sendCached:
			pl.SendQueryStatement(q.sd, q.values, q.formats, q.results)
		case sendPrepare:
			pl.SendPrepare(q.name, q.key.sql, nil)
			pl.SendQueryPrepared(q.name, q.values, q.formats, q.results)
		case sendPrepared:
			pl.SendQueryPrepared(q.name, q.values, q.formats, q.results)
		case sendUnnamed:
			pl.SendQueryParams(q.key.sql, q.values, nil, q.formats, q.results)
		}
	}
	r := &pipeResults{d: d, pl: pl, tm: tm, qs: qs}
	if err := pl.Sync(); err != nil {
		r.fail(err)
		return r
	}
	for range prefix {
		res, err := pl.GetResults()
		if err == nil {
			switch res := res.(type) {
			case *pgconn.ResultReader:
				_, err = res.Close()
			case *pgconn.StatementDescription: // bindSQL, prepared
				res.Name, res.SQL = bindName, bindSQL
				d.cache.bind = res
			}
		}
		if err != nil {
			r.fail(fmt.Errorf("binding transaction to tenant: %w", err))
			return r
		}
	}
	return r
}

// rewrite applies a leading query rewriter (such as pgx.NamedArgs) and takes out exec
// mode options: every statement goes through the pipeline, prepared. custom reports a
// mode that plans the statement with its values (QueryExecModeExec or
// QueryExecModeSimpleProtocol), which the pipeline honours with customPlansSQL. Any
// other option is refused.
func (d *shared) rewrite(ctx context.Context, conn *pgx.Conn, sql string, args []any) (_ string, _ []any, custom bool, _ error) {
	for len(args) > 0 {
		switch o := args[0].(type) {
		case pgx.QueryExecMode:
			custom = custom || o == pgx.QueryExecModeExec || o == pgx.QueryExecModeSimpleProtocol
			args = args[1:]
			continue
		case pgx.QueryResultFormats, pgx.QueryResultFormatsByOID:
			return "", nil, false, errOptions
		case pgx.QueryRewriter:
			var err error
			if sql, args, err = o.RewriteQuery(ctx, conn, sql, args[1:]); err != nil {
				return "", nil, false, fmt.Errorf("rewriting query: %w", err)
			}
			continue
		}
		break
	}
	return sql, args, custom, nil
}

// noteErr marks the connection for closing when err says its statement cache no longer
// matches the server: a statement that disappeared, or one whose result shape changed
// under it (a migration of the tenant's tables), or a name prepared already.
func (d *shared) noteErr(err error) {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && (pgErr.Code == "26000" || pgErr.Code == "0A000" || pgErr.Code == "42P05") {
		d.discard = true
	}
}

// one sends sql alone after the binding.
func (d *shared) one(ctx context.Context, sql string, args []any) pgx.BatchResults {
	b := &pgx.Batch{}
	b.Queue(sql, args...)
	return d.SendBatch(ctx, b)
}

// Exec runs sql bound to the tenant.
func (d *shared) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	br := d.one(ctx, sql, args)
	tag, err := br.Exec()
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	return tag, err
}

// Query runs sql bound to the tenant.
func (d *shared) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	return QueryClosing(d.one(ctx, sql, args))
}

// QueryRow runs sql bound to the tenant.
func (d *shared) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	return QueryRowClosing(d.one(ctx, sql, args))
}

// pipeResults reads the results of a shared handle's pipeline. After the first error
// every later result fails with it; Close reads the pipeline to its end.
type pipeResults struct {
	d      *shared
	pl     *pgconn.Pipeline
	tm     *pgtype.Map
	qs     []queued
	i      int
	err    error
	closed bool
}

func (r *pipeResults) fail(err error) {
	if r.err == nil {
		r.err = err
		r.d.noteErr(err)
	}
}

// next returns the result reader of the next statement.
func (r *pipeResults) next() (*pgconn.ResultReader, error) {
	if r.err != nil {
		return nil, r.err
	}
	if r.i >= len(r.qs) {
		return nil, errors.New("no result left in the batch")
	}
	q := r.qs[r.i]
	r.i++
	if q.mode == sendPrepare {
		res, err := r.pl.GetResults()
		if err != nil {
			r.fail(err)
			return nil, err
		}
		sd, ok := res.(*pgconn.StatementDescription)
		if !ok {
			err := fmt.Errorf("pipeline: got %T for a prepare", res)
			r.fail(err)
			return nil, err
		}
		sd.Name, sd.SQL = q.name, q.key.sql
		r.d.cache.byKey.Add(q.key, sd)
	}
	res, err := r.pl.GetResults()
	if err != nil {
		r.fail(err)
		return nil, err
	}
	rr, ok := res.(*pgconn.ResultReader)
	if !ok {
		err := fmt.Errorf("pipeline: got %T for a statement", res)
		r.fail(err)
		return nil, err
	}
	return rr, nil
}

func (r *pipeResults) Exec() (pgconn.CommandTag, error) {
	rr, err := r.next()
	if err != nil {
		return pgconn.CommandTag{}, err
	}
	tag, err := rr.Close()
	if err != nil {
		r.fail(err)
	}
	return tag, err
}

func (r *pipeResults) Query() (pgx.Rows, error) {
	rr, err := r.next()
	if err != nil {
		return nil, err
	}
	return &pipeRows{Rows: pgx.RowsFromResultReader(r.tm, rr), r: r}, nil
}

func (r *pipeResults) QueryRow() pgx.Row {
	rows, err := r.Query()
	return rowsRow{rows: rows, err: err}
}

func (r *pipeResults) Close() error {
	if r.closed {
		return r.err
	}
	r.closed = true
	// Read what is left statement by statement, so that every statement the server
	// prepared is in the cache (preparing it again would fail).
	for r.err == nil && r.i < len(r.qs) {
		_, _ = r.Exec()
	}
	if err := r.pl.Close(); err != nil {
		r.fail(err)
	}
	return r.err
}

// pipeRows records the error of its statement in the pipeline's results.
type pipeRows struct {
	pgx.Rows
	r *pipeResults
}

func (p *pipeRows) Close() {
	p.Rows.Close()
	if err := p.Rows.Err(); err != nil {
		p.r.fail(err)
	}
}

func (p *pipeRows) Next() bool {
	if p.Rows.Next() {
		return true
	}
	if err := p.Rows.Err(); err != nil {
		p.r.fail(err)
	}
	return false
}

// rowsRow is the first row of rows, as pgx.Conn.QueryRow reads it.
type rowsRow struct {
	rows pgx.Rows
	err  error
}

func (r rowsRow) Scan(dest ...any) error {
	if r.err != nil {
		return r.err
	}
	defer r.rows.Close()
	if !r.rows.Next() {
		if err := r.rows.Err(); err != nil {
			return err
		}
		return pgx.ErrNoRows
	}
	if err := r.rows.Scan(dest...); err != nil {
		return err
	}
	r.rows.Close()
	return r.rows.Err()
}

// errBatch is the results of a batch that failed as a whole.
type errBatch struct{ err error }

func (b errBatch) Exec() (pgconn.CommandTag, error) { return pgconn.CommandTag{}, b.err }
func (b errBatch) Query() (pgx.Rows, error)         { return nil, b.err }
func (b errBatch) QueryRow() pgx.Row                { return errRow(b) }
func (b errBatch) Close() error                     { return b.err }
func (b errBatch) Tx() pgx.Tx                       { return nil }

// QueryClosing returns the rows of br's next result; br closes with them, or once they
// are read to the end. Callers pipelining one query with other statements use it.
func QueryClosing(br pgx.BatchResults) (pgx.Rows, error) {
	rows, err := br.Query()
	if err != nil {
		_ = br.Close()
		return nil, err
	}
	return &batchRows{Rows: rows, br: br}, nil
}

// QueryRowClosing returns the row of br's next result; br closes once it is scanned.
func QueryRowClosing(br pgx.BatchResults) pgx.Row {
	return &batchRow{row: br.QueryRow(), br: br}
}

// ErrRow returns a row whose Scan fails with err.
func ErrRow(err error) pgx.Row { return errRow{err} }

// errRow is a row whose scan fails with err.
type errRow struct{ err error }

func (r errRow) Scan(...any) error { return r.err }

// batchRow closes its batch once scanned.
type batchRow struct {
	row pgx.Row
	br  pgx.BatchResults
}

func (r *batchRow) Scan(dest ...any) error {
	err := r.row.Scan(dest...)
	if cerr := r.br.Close(); err == nil {
		err = cerr
	}
	return err
}

// batchRows closes its batch with the rows, or once they are read to the end.
type batchRows struct {
	pgx.Rows
	br   pgx.BatchResults
	once sync.Once
	err  error
}

func (r *batchRows) closeBatch() {
	r.once.Do(func() {
		r.Rows.Close()
		r.err = r.br.Close()
	})
}

func (r *batchRows) Next() bool {
	if r.Rows.Next() {
		return true
	}
	r.closeBatch()
	return false
}

func (r *batchRows) Close() { r.closeBatch() }

func (r *batchRows) Err() error {
	if err := r.Rows.Err(); err != nil {
		return err
	}
	return r.err
}

// Tx returns nil: a shared handle's batches run in no pgx transaction.
func (r *pipeResults) Tx() pgx.Tx { return nil }
