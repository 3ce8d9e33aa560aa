// Package tenantdb is the database scope of a dataplane request: the tenant the request
// was resolved to and units of work bound to that tenant's database, carried in the
// request's context.Context from the tenant middleware to the services. A scope may hold
// the request's pending user check, run in the same round trip as the request's first
// statement (see check.go).
package tenantdb

import (
	"context"

	"github.com/tenantplane/tenantplane/apperr"
	"github.com/tenantplane/tenantplane/dataplane/pool"
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
