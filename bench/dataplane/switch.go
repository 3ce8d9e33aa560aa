package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// The switch scenario tells what binding a connection to another tenant costs Postgres,
// apart from the rest of serving many tenants. Over plain pgconn connections logged in
// as a role of its own (a member of the tenants' roles, like the gateway), each request
// is the dataplane's pipeline: the binding (bindSQL's two set_config calls), the
// stored-user check and the blog SELECT, prepared per tenant schema on each connection,
// one Sync. Three cases: one tenant on the tenant's connections; the uniform mix's
// tenants each on its own one of the budget's connections (the pool's affinity); and
// the same mix with the binding held constant (one role granted every tenant role, a
// fixed search path, schema-qualified statements), so that the switch itself is the
// only difference from the mix.
const (
	switchRole    = "bench_switch"     // logs in; NOINHERIT, as the gateway
	switchAllRole = "bench_switch_all" // inherits every tenant role: the constant binding
	switchApp     = "bench-switch"
)

// switchBindSQL is the dataplane's binding (pool.bindSQL).
const switchBindSQL = `SELECT set_config('role', $1, true), set_config('search_path', $2, true)`

// userCheckQuery is the stored-user check the dataplane sends with a request's first
// statement (tenantdb's), for the switch scenario.
const userCheckQuery = `SELECT email, is_admin, is_active, token_version FROM users WHERE id = $1`

// switchTenant is one tenant as the scenario binds it.
type switchTenant struct {
	role, path string   // the binding's values
	sqls       []string // the request's statements
}

// switchConn is one connection and its statements, used by one request at a time.
type switchConn struct {
	mu    sync.Mutex
	pg    *pgconn.PgConn
	bind  *pgconn.StatementDescription
	stmts map[string]*pgconn.StatementDescription // by tenant path and SQL
}

// statement returns sql prepared for tenant t on the connection, preparing it bound to
// t on first use so that its names resolve in t's schema.
func (c *switchConn) statement(ctx context.Context, t *switchTenant, sql string) (*pgconn.StatementDescription, error) {
	key := t.path + "\x00" + sql
	if sd := c.stmts[key]; sd != nil {
		return sd, nil
	}
	if err := c.pg.Exec(ctx, "BEGIN").Close(); err != nil {
		return nil, err
	}
	if _, err := c.pg.ExecStatement(ctx, c.bind, [][]byte{[]byte(t.role), []byte(t.path)}, nil, nil).Close(); err != nil {
		return nil, errors.Join(err, c.pg.Exec(ctx, "ROLLBACK").Close())
	}
	sd, err := c.pg.Prepare(ctx, "s"+strconv.Itoa(len(c.stmts)), sql, nil)
	if err := errors.Join(err, c.pg.Exec(ctx, "COMMIT").Close()); err != nil {
		return nil, err
	}
	c.stmts[key] = sd
	return sd, nil
}

// request runs one request's pipeline for t.
func (c *switchConn) request(ctx context.Context, t *switchTenant) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	sds := make([]*pgconn.StatementDescription, len(t.sqls))
	for i, sql := range t.sqls {
		sd, err := c.statement(ctx, t, sql)
		if err != nil {
			return err
		}
		sds[i] = sd
	}
	one := [][]byte{[]byte("1")}
	pl := c.pg.StartPipeline(ctx)
	pl.SendQueryStatement(c.bind, [][]byte{[]byte(t.role), []byte(t.path)}, nil, nil)
	for _, sd := range sds {
		pl.SendQueryStatement(sd, one, nil, nil)
	}
	err := pl.Sync()
	for err == nil {
		var res any
		if res, err = pl.GetResults(); err != nil {
			break
		}
		if rr, ok := res.(*pgconn.ResultReader); ok {
			_, err = rr.Close()
		}
		if _, ok := res.(*pgconn.PipelineSync); ok {
			break
		}
	}
	return errors.Join(err, pl.Close())
}

// reportSwitch runs and prints the switch scenario over the uniform mix's tenants.
func (b *bench) reportSwitch(ctx context.Context, out io.Writer) (err error) {
	ts := b.tenants[:min(b.o.tenants, len(b.tenants))]
	if len(ts) < 2 {
		return errors.New("the switch scenario needs the uniform mix's tenants")
	}
	pw := make([]byte, 12)
	_, _ = rand.Read(pw)
	password := hex.EncodeToString(pw)
	drop := func(ctx context.Context) error {
		_, err := b.db.Exec(ctx, `DROP ROLE IF EXISTS `+switchRole+`, `+switchAllRole)
		return err
	}
	if err := drop(ctx); err != nil {
		return fmt.Errorf("switch scenario: dropping earlier roles: %w", err)
	}
	defer func() { err = errors.Join(err, drop(context.WithoutCancel(ctx))) }()
	setup := &pgx.Batch{}
	setup.Queue(`CREATE ROLE ` + switchRole + ` LOGIN NOINHERIT PASSWORD '` + password + `'`)
	setup.Queue(`ALTER ROLE ` + switchRole + ` SET plan_cache_mode = force_generic_plan`)
	setup.Queue(`ALTER ROLE ` + switchRole + ` SET random_page_cost = 1.1`)
	setup.Queue(`CREATE ROLE ` + switchAllRole + ` NOLOGIN INHERIT ROLE ` + switchRole)
	for _, bt := range ts {
		setup.Queue(`GRANT ` + pgx.Identifier{bt.t.DBRole}.Sanitize() + ` TO ` + switchRole + `, ` + switchAllRole)
	}
	if err := b.db.SendBatch(ctx, setup).Close(); err != nil {
		return fmt.Errorf("switch scenario: creating its roles: %w", err)
	}

	bound := make([]*switchTenant, len(ts))
	constant := make([]*switchTenant, len(ts))
	for i, bt := range ts {
		q := pgx.Identifier{bt.t.SchemaName}.Sanitize()
		qualify := strings.NewReplacer("FROM users", "FROM "+q+".users", "FROM blogs", "FROM "+q+".blogs", "JOIN users", "JOIN "+q+".users")
		bound[i] = &switchTenant{role: bt.t.DBRole, path: q, sqls: []string{userCheckQuery, rawGetQuery}}
		constant[i] = &switchTenant{role: switchAllRole, path: "pg_catalog",
			sqls: []string{qualify.Replace(userCheckQuery), qualify.Replace(rawGetQuery)}}
	}
	cases := []struct {
		label string
		conns int
		ts    []*switchTenant
	}{
		{fmt.Sprintf("one tenant on %d connections:", b.o.conns), int(b.o.conns), bound[:1]},
		{fmt.Sprintf("%d tenants on %d connections:", len(ts), targetBackends), targetBackends, bound},
		{"the same, binding held constant:", targetBackends, constant},
	}
	results := make([][]result, len(cases))
	for range b.o.runs {
		for i, c := range cases {
			r, err := b.switchLoad(ctx, password, c.conns, c.ts)
			if err != nil {
				return fmt.Errorf("switch scenario, %s %w", c.label, err)
			}
			results[i] = append(results[i], r)
		}
	}
	fmt.Fprintf(out, "   the database work alone over plain pgconn pipelines, one connection per tenant group (what a switch costs):\n")
	for i, c := range cases {
		m := median(results[i])
		fmt.Fprintf(out, "     %-40s %s", c.label, m)
		if i > 0 {
			fmt.Fprintf(out, "; Postgres cpu/req %.2fx of one tenant", m.cpu.postgres/median(results[0]).cpu.postgres)
		}
		fmt.Fprintln(out)
	}
	return nil
}

// switchLoad opens conns connections as switchRole and measures the requests of the
// mix ts over them, each tenant on connection (index mod conns); one tenant takes its
// connections in turn.
func (b *bench) switchLoad(ctx context.Context, password string, conns int, ts []*switchTenant) (result, error) {
	u, err := url.Parse(b.dbURL)
	if err != nil {
		return result{}, err
	}
	u.User = url.UserPassword(switchRole, password)
	q := u.Query()
	q.Set("application_name", switchApp)
	u.RawQuery = q.Encode()
	cs := make([]*switchConn, conns)
	defer func() {
		for _, c := range cs {
			if c != nil {
				_ = c.pg.Close(context.WithoutCancel(ctx))
			}
		}
	}()
	for i := range cs {
		pg, err := pgconn.Connect(ctx, u.String())
		if err != nil {
			return result{}, fmt.Errorf("connecting as %s: %w", switchRole, err)
		}
		cs[i] = &switchConn{pg: pg, stmts: map[string]*pgconn.StatementDescription{}}
		if cs[i].bind, err = pg.Prepare(ctx, "bind", switchBindSQL, nil); err != nil {
			return result{}, err
		}
	}
	n := b.o.requests
	seq, warm := requestOrder(n, len(ts), false, true)
	do := func(ctx context.Context, i int) error {
		k := seq[i]
		c := cs[k%conns]
		if len(ts) == 1 {
			c = cs[i%conns]
		}
		return c.request(ctx, ts[k])
	}
	if _, err := b.load(ctx, warm, func(ctx context.Context, i int) error { return do(ctx, n+i) }); err != nil {
		return result{}, err
	}
	if len(ts) == 1 { // every connection prepares the tenant's statements
		for _, c := range cs {
			if err := c.request(ctx, ts[0]); err != nil {
				return result{}, err
			}
		}
	}
	return b.measure(ctx, nil, []string{switchApp}, n, do)
}
