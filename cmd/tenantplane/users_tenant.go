package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/tenantplane/tenantplane/apperr"
	"github.com/tenantplane/tenantplane/dataplane/auth"
	"github.com/tenantplane/tenantplane/dataplane/caller"
	"github.com/tenantplane/tenantplane/dataplane/page"
	"github.com/tenantplane/tenantplane/dataplane/pool"
	"github.com/tenantplane/tenantplane/dataplane/tenantdb"
	"github.com/tenantplane/tenantplane/password"
	"github.com/tenantplane/tenantplane/pgerr"
	"github.com/tenantplane/tenantplane/tenant"
)

// tenantUsers manages one tenant's users from the command line through the dataplane's
// own user service: the CLI connects as the tenant (the dataplane's pool, bound to the
// tenant's role) and acts as a tenant admin, so the rules are the tenant API's.
type tenantUsers struct {
	ctx   context.Context // carries the tenant's scope and an admin caller
	svc   *auth.Service
	scope *tenantdb.Scope
	pools *pool.Manager
}

// close closes the tenant's connections.
func (tu *tenantUsers) close() { _ = tu.pools.Close(context.Background()) }

// tenantUsers opens the users of the tenant slug, which must be active or suspended
// (provisioned). The caller closes it.
func (a *app) tenantUsers(cmd *cobra.Command, slug string) (*tenantUsers, error) {
	ctx := cmd.Context()
	db, err := a.control(ctx, 0)
	if err != nil {
		return nil, err
	}
	t, err := tenant.NewStore(db).Get(ctx, slug)
	if err != nil {
		return nil, err
	}
	if t.Status != tenant.StatusActive && t.Status != tenant.StatusSuspended {
		return nil, apperr.New(apperr.Conflict, "tenant_not_serving", "tenant %s is %s; its users can be managed once it is active", t.Slug, t.Status)
	}
	shards := map[string]string{}
	for _, sh := range a.cfg.Shards {
		shards[sh.Name] = sh.URL
	}
	pools, err := pool.New(pool.Config{Shards: shards, Mode: tenant.PoolMode(a.cfg.PoolMode), GroupConns: int32(a.cfg.GroupConns), MaxPools: 1, Logger: a.log, AppName: "tenantplane-cli"})
	if err != nil {
		return nil, &configError{"TENANTPLANE_SHARDS", err.Error()}
	}
	sc := tenantdb.New(t, pools)
	ctx = caller.With(tenantdb.WithScope(ctx, sc), &caller.Caller{Admin: true, Email: "cli"})
	return &tenantUsers{ctx: ctx, scope: sc, pools: pools, svc: auth.New(auth.Config{Hasher: password.NewHasher(password.OWASP, 1), Logger: a.log})}, nil
}

func tenantRow(u *auth.User) userRow {
	return userRow{ID: strconv.FormatInt(u.ID, 10), Email: u.Email, IsAdmin: u.IsAdmin, IsActive: u.IsActive, Created: ago(u.CreatedAt)}
}

// list returns every user of the tenant, page after page.
func (tu *tenantUsers) list() ([]userRow, error) {
	var rows []userRow
	f := auth.ListFilter{Limit: page.MaxLimit}
	for {
		p, err := tu.svc.ListUsers(tu.ctx, f)
		if err != nil {
			return nil, err
		}
		for _, u := range p.Items {
			rows = append(rows, tenantRow(u))
		}
		if p.Next == "" {
			return rows, nil
		}
		f.Cursor = p.Next
	}
}

func (tu *tenantUsers) create(addr, pw string, admin bool) (userRow, error) {
	u, err := tu.svc.CreateUser(tu.ctx, auth.NewUser{Email: strings.TrimSpace(addr), Password: pw, IsAdmin: admin})
	if err != nil {
		return userRow{}, err
	}
	return tenantRow(u), nil
}

// idOf returns the id of the tenant's user with the email, whatever its case. It returns
// a NotFound error when there is none.
func (tu *tenantUsers) idOf(addr string) (int64, error) {
	var id int64
	err := tu.scope.Read(tu.ctx, func(db pool.DB) error {
		err := db.QueryRow(tu.ctx, `SELECT id FROM users WHERE lower(email) = lower($1)`, strings.TrimSpace(addr)).Scan(&id)
		return pgerr.Translate(err, pgerr.Codes{NotFound: apperr.New(apperr.NotFound, "not_found",
			"tenant %s has no user %s", tu.scope.Tenant.Slug, addr)})
	})
	if err != nil {
		return 0, fmt.Errorf("looking up user: %w", err)
	}
	return id, nil
}

func (tu *tenantUsers) deactivate(addr string) (userRow, error) {
	id, err := tu.idOf(addr)
	if err != nil {
		return userRow{}, err
	}
	off := false
	u, err := tu.svc.UpdateUser(tu.ctx, id, auth.UserChange{IsActive: &off})
	if err != nil {
		return userRow{}, err
	}
	return tenantRow(u), nil
}

func (tu *tenantUsers) changePassword(addr, pw string) (userRow, error) {
	id, err := tu.idOf(addr)
	if err != nil {
		return userRow{}, err
	}
	u, err := tu.svc.GetUser(tu.ctx, id)
	if err != nil {
		return userRow{}, err
	}
	// The email goes along unchanged so that the password rule can compare the two.
	u, err = tu.svc.UpdateUser(tu.ctx, id, auth.UserChange{Email: &u.Email, Password: &pw})
	if err != nil {
		return userRow{}, err
	}
	return tenantRow(u), nil
}
