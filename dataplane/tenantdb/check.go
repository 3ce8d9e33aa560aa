package tenantdb

import (
	"context"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tenantplane/tenantplane/dataplane/pool"
)

// Check verifies a request's credentials against the tenant's database (for instance
// that the token's user is still active). It runs before the request's first statement
// and in the same round trip, pipelined with it; when Verify fails, that statement's
// answer is thrown away (and, in a transaction, rolled back) and every database call of
// the request returns Verify's error.
type Check struct {
	SQL  string
	Args []any
	// Verify reads the check's row and returns an error when the request must stop.
	Verify func(row pgx.Row) error
}

// checkState is the Check of a scope and how it ended.
type checkState struct {
	// mu guards check, done and err.
	mu    sync.Mutex
	check *Check
	done  bool
	err   error
}

// SetCheck makes c run before the request's first statement.
func (s *Scope) SetCheck(c *Check) {
	s.cs.mu.Lock()
	defer s.cs.mu.Unlock()
	s.cs.check, s.cs.done, s.cs.err = c, false, nil
}

// Verify runs the pending check now, on its own, and returns its error. It returns nil
// at once when there is no check, and the earlier result when it already ran.
func (s *Scope) Verify(ctx context.Context) error {
	if s.pendingCheck() == nil {
		return s.checkErr()
	}
	return s.Read(ctx, func(db DB) error {
		return db.(*checkedDB).runCheck(ctx)
	})
}

func (s *Scope) pendingCheck() *Check {
	s.cs.mu.Lock()
	defer s.cs.mu.Unlock()
	if s.cs.done {
		return nil
	}
	return s.cs.check
}

func (s *Scope) checkErr() error {
	s.cs.mu.Lock()
	defer s.cs.mu.Unlock()
	return s.cs.err
}

// verify records the outcome of the check from its row.
func (s *Scope) verify(row pgx.Row) error {
	s.cs.mu.Lock()
	c := s.cs.check
	s.cs.mu.Unlock()
	err := c.Verify(row)
	s.cs.mu.Lock()
	defer s.cs.mu.Unlock()
	s.cs.done, s.cs.err = true, err
	return err
}

// batcher is the pipelining part of pgx that connections and transactions have.
type batcher interface {
	SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults
}

var (
	_ DB = (*checkedDB)(nil)
)

// checkedDB runs the scope's pending check with the first statement.
type checkedDB struct {
	db    DB
	s     *Scope
	inTx  bool // statements are rolled back when the check fails
	batch batcher
}

func (s *Scope) wrap(db DB, inTx bool) DB {
	b, _ := db.(batcher)
	return &checkedDB{db: db, s: s, inTx: inTx, batch: b}
}

// runCheck runs the pending check alone.
func (d *checkedDB) runCheck(ctx context.Context) error {
	c := d.s.pendingCheck()
	if c == nil {
		return d.s.checkErr()
	}
	return d.s.verify(d.db.QueryRow(ctx, c.SQL, c.Args...))
}

// send pipelines the pending check with the statement and returns the batch positioned
// at the statement's result; nil (and no error) when there is no pending check or it
// cannot be pipelined, in which case the check has run on its own.
func (d *checkedDB) send(ctx context.Context, pipeline bool, sql string, args []any) (pgx.BatchResults, error) {
	c := d.s.pendingCheck()
	if c == nil {
		return nil, d.s.checkErr()
	}
	if !pipeline || d.batch == nil || hasQueryOptions(args) {
		return nil, d.runCheck(ctx)
	}
	b := &pgx.Batch{}
	b.Queue(c.SQL, c.Args...)
	b.Queue(sql, args...)
	br := d.batch.SendBatch(ctx, b)
	if err := d.s.verify(br.QueryRow()); err != nil {
		_ = br.Close()
		return nil, err
	}
	return br, nil
}

// hasQueryOptions reports whether args starts with pgx query options (an exec mode,
// a result format or a rewriter), which a batch would take for arguments: such a query
// runs on its own after the check.
func hasQueryOptions(args []any) bool {
	if len(args) == 0 {
		return false
	}
	switch args[0].(type) {
	case pgx.QueryExecMode, pgx.QueryResultFormats, pgx.QueryResultFormatsByOID, pgx.QueryRewriter:
		return true
	}
	return false
}

func (d *checkedDB) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	// Outside a transaction a pipelined write would stand even if the check failed.
	br, err := d.send(ctx, d.inTx, sql, args)
	if err != nil {
		return pgconn.CommandTag{}, err
	}
	if br == nil {
		return d.db.Exec(ctx, sql, args...)
	}
	tag, err := br.Exec()
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	return tag, err
}

func (d *checkedDB) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	br, err := d.send(ctx, true, sql, args)
	if err != nil {
		return nil, err
	}
	if br == nil {
		return d.db.Query(ctx, sql, args...)
	}
	return pool.QueryClosing(br)
}

func (d *checkedDB) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	br, err := d.send(ctx, true, sql, args)
	if err != nil {
		return pool.ErrRow(err)
	}
	if br == nil {
		return d.db.QueryRow(ctx, sql, args...)
	}
	return pool.QueryRowClosing(br)
}
