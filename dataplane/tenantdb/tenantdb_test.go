package tenantdb

import (
	"context"
	"errors"
	"net/url"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/tenantplane/tenantplane/dataplane/pool"
	"github.com/tenantplane/tenantplane/internal/pgtest"
	"github.com/tenantplane/tenantplane/tenant"
)

var errDenied = errors.New("denied")

// setup returns a scope on a fresh database, logged in as the test cluster's own user
// (what matters here is the order of statements, not the tenant binding), with a table
// t(n int).
func setup(t *testing.T) *Scope {
	t.Helper()
	dbURL := pgtest.NewDatabase(t, pgtest.URL(t))
	db := pgtest.Pool(t, dbURL)
	ctx := context.Background()
	if _, err := db.Exec(ctx, `CREATE TABLE t (n int); CREATE TABLE allowed (ok bool); INSERT INTO allowed VALUES (true)`); err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	pw, _ := u.User.Password()
	tn := &tenant.Tenant{ID: "t1", Slug: "t1", Shard: "main", SchemaName: "public", DBRole: u.User.Username(), DBPassword: pw,
		PoolMode: tenant.PoolDedicated}
	m, err := pool.New(pool.Config{Shards: map[string]string{"main": dbURL}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close(context.Background()) })
	return New(tn, m)
}

// allowCheck passes while the allowed table says so.
// funcCheck is a check of any statement, judged by a function.
type funcCheck struct {
	sql   string
	judge func(row pgx.Row) error
}

func (f *funcCheck) statement() (string, []any) { return f.sql, nil }
func (f *funcCheck) verify(row pgx.Row) error   { return f.judge(row) }

func allowCheck(ran *int) check {
	return &funcCheck{sql: `SELECT ok FROM allowed`, judge: func(row pgx.Row) error {
		*ran++
		var ok bool
		if err := row.Scan(&ok); err != nil {
			return err
		}
		if !ok {
			return errDenied
		}
		return nil
	}}
}

func count(t *testing.T, s *Scope) int {
	t.Helper()
	var n int
	s2 := New(s.Tenant, s.pools)
	if err := s2.Read(context.Background(), func(db pool.DB) error {
		return db.QueryRow(context.Background(), `SELECT count(*) FROM t`).Scan(&n)
	}); err != nil {
		t.Fatal(err)
	}
	return n
}

func deny(t *testing.T, s *Scope) {
	t.Helper()
	if err := New(s.Tenant, s.pools).Write(context.Background(), func(db pool.DB) error {
		_, err := db.Exec(context.Background(), `UPDATE allowed SET ok = false`)
		return err
	}); err != nil {
		t.Fatal(err)
	}
}

func TestCheckPasses(t *testing.T) {
	t.Parallel()
	s := setup(t)
	ctx := context.Background()
	ran := 0
	s.setCheck(allowCheck(&ran))
	err := s.Write(ctx, func(db pool.DB) error {
		if _, err := db.Exec(ctx, `INSERT INTO t VALUES (1), (2)`); err != nil {
			return err
		}
		rows, err := db.Query(ctx, `SELECT n FROM t ORDER BY n`)
		if err != nil {
			return err
		}
		got, err := pgx.CollectRows(rows, pgx.RowTo[int])
		if err != nil || len(got) != 2 {
			t.Errorf("rows: %v %v", got, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Rows read to their end free the connection for the next statement.
	err = s.Read(ctx, func(db pool.DB) error {
		rows, err := db.Query(ctx, `SELECT n FROM t`)
		if err != nil {
			return err
		}
		for rows.Next() {
		}
		var n int
		return db.QueryRow(ctx, `SELECT count(*) FROM t`).Scan(&n)
	})
	if err != nil || ran != 1 {
		t.Fatalf("second unit of work: %v; check ran %d times, want once", err, ran)
	}
}

func TestFailedCheckKeepsNothing(t *testing.T) {
	t.Parallel()
	s := setup(t)
	ctx := context.Background()
	deny(t, s)
	ran := 0
	s.setCheck(allowCheck(&ran))
	// In a transaction the pipelined write is rolled back.
	err := s.Write(ctx, func(db pool.DB) error {
		_, err := db.Exec(ctx, `INSERT INTO t VALUES (1)`)
		return err
	})
	if !errors.Is(err, errDenied) {
		t.Fatalf("write after a failed check: %v", err)
	}
	if n := count(t, s); n != 0 {
		t.Fatalf("a write pipelined with a failed check was kept: %d rows", n)
	}
	// Every later unit of work fails the same way, without running.
	for _, run := range []func(context.Context, func(pool.DB) error) error{s.Read, s.Write} {
		called := false
		if err := run(ctx, func(pool.DB) error { called = true; return nil }); !errors.Is(err, errDenied) || called {
			t.Errorf("after a failed check: err %v, ran %v", err, called)
		}
	}
	if ran != 1 {
		t.Errorf("check ran %d times, want once", ran)
	}
}

func TestCheckOutsideTransaction(t *testing.T) {
	t.Parallel()
	s := setup(t)
	ctx := context.Background()
	deny(t, s)
	ran := 0
	s.setCheck(allowCheck(&ran))
	// Outside a transaction a write is not pipelined: the check runs first, alone.
	err := s.Read(ctx, func(db pool.DB) error {
		_, err := db.Exec(ctx, `INSERT INTO t VALUES (1)`)
		return err
	})
	if !errors.Is(err, errDenied) {
		t.Fatalf("exec after a failed check: %v", err)
	}
	if n := count(t, s); n != 0 {
		t.Fatalf("a write after a failed check was kept: %d rows", n)
	}
	// Verify reports the same outcome.
	s2 := New(s.Tenant, s.pools)
	s2.setCheck(allowCheck(&ran))
	if err := s2.Verify(ctx); !errors.Is(err, errDenied) {
		t.Fatalf("Verify: %v", err)
	}
}
