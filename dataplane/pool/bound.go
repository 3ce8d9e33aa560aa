package pool

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// bindSQL binds the current transaction to a tenant: its role ($1, a role name) and its
// search path ($2, the quoted schema). Both settings are local: they end with the
// transaction, committed or not. set_config('role', ...) checks, as SET ROLE does, that
// the shard's role may act as the tenant's.
const bindSQL = `SELECT set_config('role', $1, true), set_config('search_path', $2, true)`

// bound is the database handle of a unit of work in SET LOCAL mode. Each of its
// statements (or batches) goes out in one pipeline after the binding (bindSQL), ended by
// a single Sync:
//
//   - for a Read, without BEGIN: the pipeline is one implicit transaction, so the binding
//     holds for the statement and ends with it, and one round trip does it all;
//   - for a Write, the first pipeline starts with BEGIN; the transaction (and the
//     binding) then lasts until the COMMIT or ROLLBACK of Manager.run, and later
//     statements go out as they are.
//
// A binding that fails aborts the transaction: the statements after it do not run, and
// the connection is rolled back (implicitly at Sync, or by run) or discarded by the pool.
// Statements never run on the connection otherwise: the connection itself is not
// handed out.
type bound struct {
	conn         *pgxpool.Conn
	role, schema string
	inTx         bool
	begun        bool // a Write's BEGIN has been sent
}

var (
	_ DB       = (*bound)(nil)
	_ pgx.Rows = (*batchRows)(nil)
	_ pgx.Row  = (*batchRow)(nil)
)

// errOptions refuses a query option that a pipeline cannot carry.
var errOptions = errors.New("query options other than the exec mode are not supported in SET LOCAL mode")

// SendBatch sends b after the binding and returns its results positioned at b's first
// query.
func (d *bound) SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults {
	if d.begun {
		return d.conn.SendBatch(ctx, b)
	}
	for _, q := range b.QueuedQueries {
		args, err := withoutExecMode(q.Arguments)
		if err != nil {
			return errBatch{err}
		}
		q.Arguments = args
	}
	nb := &pgx.Batch{QueuedQueries: make([]*pgx.QueuedQuery, 0, len(b.QueuedQueries)+2)}
	if d.inTx {
		nb.Queue("BEGIN")
		// From here on the connection may be in a transaction: run ends it.
		d.begun = true
	}
	nb.Queue(bindSQL, d.role, d.schema)
	prefix := len(nb.QueuedQueries)
	nb.QueuedQueries = append(nb.QueuedQueries, b.QueuedQueries...)
	br := d.conn.SendBatch(ctx, nb)
	for range prefix {
		if _, err := br.Exec(); err != nil {
			_ = br.Close()
			return errBatch{fmt.Errorf("binding transaction to tenant: %w", err)}
		}
	}
	return br
}

// one sends sql alone after the binding.
func (d *bound) one(ctx context.Context, sql string, args []any) pgx.BatchResults {
	b := &pgx.Batch{}
	b.Queue(sql, args...)
	return d.SendBatch(ctx, b)
}

// Exec runs sql bound to the tenant.
func (d *bound) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	if d.begun {
		return d.conn.Exec(ctx, sql, args...)
	}
	br := d.one(ctx, sql, args)
	tag, err := br.Exec()
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	return tag, err
}

// Query runs sql bound to the tenant.
func (d *bound) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	if d.begun {
		return d.conn.Query(ctx, sql, args...)
	}
	return QueryClosing(d.one(ctx, sql, args))
}

// QueryRow runs sql bound to the tenant.
func (d *bound) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	if d.begun {
		return d.conn.QueryRow(ctx, sql, args...)
	}
	return QueryRowClosing(d.one(ctx, sql, args))
}

// withoutExecMode drops leading exec mode options from args: in SET LOCAL mode every
// statement runs in QueryExecModeExec, which a pipeline uses already. Any other option
// is refused (a pipeline would take it for an argument); a QueryRewriter (such as
// pgx.NamedArgs) is kept, pipelines apply it.
func withoutExecMode(args []any) ([]any, error) {
	for len(args) > 0 {
		switch args[0].(type) {
		case pgx.QueryExecMode:
			args = args[1:]
			continue
		case pgx.QueryResultFormats, pgx.QueryResultFormatsByOID:
			return nil, errOptions
		}
		break
	}
	return args, nil
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
