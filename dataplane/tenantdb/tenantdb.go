// Package tenantdb is the database scope of a dataplane request: the tenant the request
// was resolved to and units of work bound to that tenant's database (Scope.Read,
// Scope.Write), carried in the request's context.Context from the tenant middleware to
// the services (WithScope, ScopeFrom).
//
// The one-round-trip user check. A request authenticated by an access token must also
// find the token's user as stored now: present, active, with the token's version (a
// password change or a deactivation bumps it). Reading that row first would cost every
// request a round trip of its own, so instead:
//
//  1. the adapter that authenticates the request (the auth service's Authenticate)
//     verifies the token's signature and claims, then calls Scope.CheckUser, which
//     records the user check as pending on the request's scope and returns the caller;
//  2. the request's first statement, whatever service runs it, goes through checkedDB
//     (every handle of Scope.Read and Scope.Write is one), which sends the check's SELECT
//     and the statement in one pgx batch: one round trip;
//  3. checkedDB judges the check's row (userCheck.verify) before handing back the statement's
//     result. On failure the statement's answer is thrown away (in a transaction, rolled
//     back) and this and every later unit of work of the request fail with
//     caller.ErrInvalidToken, before touching the database.
//
// A write outside a transaction, or a statement with pgx query options, is not
// pipelined: the check runs alone first, so a failed check never lets a write stand.
// Scope.Verify runs the check at once, alone, for code that must know the stored user
// before any statement (the admin gate, the WebSocket handshake).
package tenantdb

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tenantplane/tenantplane/apperr"
	"github.com/tenantplane/tenantplane/dataplane/caller"
	"github.com/tenantplane/tenantplane/dataplane/pool"
	"github.com/tenantplane/tenantplane/pgerr"
	"github.com/tenantplane/tenantplane/tenant"
)

// Pools runs units of work bound to a tenant; *pool.Manager implements it.
type Pools interface {
	// Read runs fn with a handle bound to t.
	Read(ctx context.Context, t *tenant.Tenant, fn func(pool.DB) error) error
	// Write runs fn in a transaction bound to t, committed when fn returns nil.
	Write(ctx context.Context, t *tenant.Tenant, fn func(pool.DB) error) error
}

var _ Pools = (*pool.Manager)(nil)

// Scope is the tenant of a request and access to its database.
type Scope struct {
	// Tenant is the resolved, serving tenant of the request.
	Tenant *tenant.Tenant
	pools  Pools
	cs     checkState
}

// New returns the scope of tenant t using pools.
func New(t *tenant.Tenant, pools Pools) *Scope { return &Scope{Tenant: t, pools: pools} }

// Read runs fn with a database handle bound to the tenant; fn only reads. It returns
// fn's error, the error of the request's user check, or an Unavailable error when no
// connection could be had in time.
func (s *Scope) Read(ctx context.Context, fn func(pool.DB) error) error {
	if err := s.checkErr(); err != nil {
		return err
	}
	return s.pools.Read(ctx, s.Tenant, func(db pool.DB) error { return fn(s.wrap(db, false)) })
}

// Write runs fn in a transaction bound to the tenant, committed when fn returns nil.
// Errors as for Read.
func (s *Scope) Write(ctx context.Context, fn func(pool.DB) error) error {
	if err := s.checkErr(); err != nil {
		return err
	}
	return s.pools.Write(ctx, s.Tenant, func(db pool.DB) error { return fn(s.wrap(db, true)) })
}

type scopeKey struct{}

// WithScope returns ctx carrying s as the request's scope.
func WithScope(ctx context.Context, s *Scope) context.Context {
	return context.WithValue(ctx, scopeKey{}, s)
}

// ScopeFrom returns the scope ctx carries. It returns an Internal error when there is
// none: a route was registered without the tenant middleware.
func ScopeFrom(ctx context.Context) (*Scope, error) {
	if s, ok := ctx.Value(scopeKey{}).(*Scope); ok && s != nil {
		return s, nil
	}
	return nil, errNoScope
}

var errNoScope = apperr.New(apperr.Internal, "internal", "the request has no tenant scope")

// ScopeAndCaller returns the scope and the authenticated caller ctx carries: what a
// service needs for work on behalf of a user. It returns ScopeFrom's error, and
// caller.ErrUnauthenticated without a caller.
func ScopeAndCaller(ctx context.Context) (*Scope, *caller.Caller, error) {
	sc, err := ScopeFrom(ctx)
	if err != nil {
		return nil, nil, err
	}
	c, err := caller.From(ctx)
	if err != nil {
		return nil, nil, err
	}
	return sc, c, nil
}

// userCheckSQL reads the stored state of the token's user.
const userCheckSQL = `SELECT email, is_admin, is_active, token_version FROM users WHERE id = $1`

// CheckUser makes the request's first statement check that user id is stored now as
// active with token version version, and returns the request's caller: its Email and
// Admin are the stored values once the check has run. expires is when the credential
// expires. A request has one user check; it is kept in the scope itself.
func (s *Scope) CheckUser(id int64, version int, expires time.Time) *caller.Caller {
	s.cs.mu.Lock()
	defer s.cs.mu.Unlock()
	u := &s.cs.user
	*u = userCheck{caller: caller.Caller{ID: id, Expires: expires}, version: version}
	u.args[0] = id
	s.cs.check, s.cs.done, s.cs.err = u, false, nil
	return &u.caller
}

// check is a pending check of a scope: the statement to send before the request's
// first one, and the judge of its row.
type check interface {
	statement() (sql string, args []any)
	verify(row pgx.Row) error
}

// userCheck is the check of the token's user (CheckUser).
type userCheck struct {
	caller  caller.Caller
	version int
	args    [1]any
}

var _ check = (*userCheck)(nil)

func (u *userCheck) statement() (string, []any) { return userCheckSQL, u.args[:] }

// verify judges the user's row, filling the caller with the stored email and admin flag.
func (u *userCheck) verify(row pgx.Row) error {
	var active bool
	var stored int
	if err := row.Scan(&u.caller.Email, &u.caller.Admin, &active, &stored); err != nil {
		if errors.Is(err, pgx.ErrNoRows) {
			return caller.ErrInvalidToken
		}
		return fmt.Errorf("checking the token's user: %w", err)
	}
	if !active || stored != u.version {
		return caller.ErrInvalidToken
	}
	return nil
}

// checkState is the pending check of a scope and how it ended.
type checkState struct {
	// mu guards check, user, done and err.
	mu    sync.Mutex
	check check
	user  userCheck // where CheckUser keeps its check
	done  bool
	err   error
}

// setCheck makes c run with the request's first statement.
func (s *Scope) setCheck(c check) {
	s.cs.mu.Lock()
	defer s.cs.mu.Unlock()
	s.cs.check, s.cs.done, s.cs.err = c, false, nil
}

// Verify runs the pending user check now, on its own, and returns its error. It returns nil
// at once when there is no check, and the earlier result when it already ran.
func (s *Scope) Verify(ctx context.Context) error {
	if s.pendingCheck() == nil {
		return s.checkErr()
	}
	return s.Read(ctx, func(db pool.DB) error {
		return db.(*checkedDB).runCheck(ctx)
	})
}

func (s *Scope) pendingCheck() check {
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
	err := c.verify(row)
	if pgerr.Retryable(err) {
		// The connection failed, not the check: it stays pending for the read's retry.
		return err
	}
	s.cs.mu.Lock()
	defer s.cs.mu.Unlock()
	s.cs.done, s.cs.err = true, err
	return err
}

// batcher is the pipelining part of pgx that connections and transactions have.
type batcher interface {
	SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults
}

var _ pool.DB = (*checkedDB)(nil)

// checkedDB runs the scope's pending check with the first statement.
type checkedDB struct {
	db    pool.DB
	s     *Scope
	inTx  bool // statements are rolled back when the check fails
	batch batcher
}

func (s *Scope) wrap(db pool.DB, inTx bool) pool.DB {
	b, _ := db.(batcher)
	return &checkedDB{db: db, s: s, inTx: inTx, batch: b}
}

// runCheck runs the pending check alone.
func (d *checkedDB) runCheck(ctx context.Context) error {
	c := d.s.pendingCheck()
	if c == nil {
		return d.s.checkErr()
	}
	sql, args := c.statement()
	return d.s.verify(d.db.QueryRow(ctx, sql, args...))
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
	csql, cargs := c.statement()
	b.Queue(csql, cargs...)
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
