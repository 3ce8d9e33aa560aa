// Package tenantdb carries the tenant of a request, its database and its authenticated
// user from the dataplane's middleware to the capability packages (auth, blogs, ...),
// so that those never import the dataplane server itself.
package tenantdb

import (
	"context"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/tenantplane/tenantplane/apperr"
	"github.com/tenantplane/tenantplane/dataplane/page"
	"github.com/tenantplane/tenantplane/dataplane/pool"
	"github.com/tenantplane/tenantplane/tenant"
)

// DB is a database handle bound to the request's tenant (see pool.DB).
type DB = pool.DB

// Pools runs units of work bound to a tenant; *pool.Manager implements it.
type Pools interface {
	// Read runs fn with a handle bound to t.
	Read(ctx context.Context, t *tenant.Tenant, fn func(DB) error) error
	// Write runs fn in a transaction bound to t, committed when fn returns nil.
	Write(ctx context.Context, t *tenant.Tenant, fn func(DB) error) error
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
// fn's error, the error of the request's Check, or an Unavailable error when no
// connection could be had in time.
func (s *Scope) Read(ctx context.Context, fn func(DB) error) error {
	if err := s.checkErr(); err != nil {
		return err
	}
	return s.pools.Read(ctx, s.Tenant, func(db DB) error { return fn(s.wrap(db, false)) })
}

// Write runs fn in a transaction bound to the tenant, committed when fn returns nil.
// Errors as for Read.
func (s *Scope) Write(ctx context.Context, fn func(DB) error) error {
	if err := s.checkErr(); err != nil {
		return err
	}
	return s.pools.Write(ctx, s.Tenant, func(db DB) error { return fn(s.wrap(db, true)) })
}

// User is the authenticated user of a request, as read from the tenant's users table
// on this request.
type User struct {
	ID    int64
	Email string
	Admin bool
	// Expires is when the access token that authenticated the request expires; a
	// long-lived connection (a WebSocket) ends then.
	Expires time.Time
}

const (
	scopeKey = "tenantplane.dataplane.scope"
	userKey  = "tenantplane.dataplane.user"
)

// Set records the scope of the request.
func Set(c *gin.Context, s *Scope) { c.Set(scopeKey, s) }

// From returns the scope of the request. It returns an internal error when none was set:
// a route was registered without the tenant middleware.
func From(c *gin.Context) (*Scope, error) {
	if v, ok := c.Get(scopeKey); ok {
		if s, ok := v.(*Scope); ok {
			return s, nil
		}
	}
	return nil, apperr.New(apperr.Internal, "internal", "route %s has no tenant scope", c.FullPath())
}

// SetUser records the authenticated user of the request.
func SetUser(c *gin.Context, u *User) { c.Set(userKey, u) }

// UserFrom returns the authenticated user of the request, or an Unauthenticated error
// when the route ran without authentication.
func UserFrom(c *gin.Context) (*User, error) {
	if v, ok := c.Get(userKey); ok {
		if u, ok := v.(*User); ok {
			return u, nil
		}
	}
	return nil, apperr.New(apperr.Unauthenticated, "not_authenticated", "authentication required")
}

// ReadByID loads, with load, the record of the request's tenant that the :id path
// parameter names. A malformed id is a NotFound error saying notFound; load's errors
// are returned as they are.
func ReadByID[T any](c *gin.Context, notFound string, load func(ctx context.Context, db DB, id int64) (T, error)) (T, error) {
	var out T
	sc, err := From(c)
	if err != nil {
		return out, err
	}
	id, err := page.ID(c, "id", notFound)
	if err != nil {
		return out, err
	}
	ctx := c.Request.Context()
	err = sc.Read(ctx, func(db DB) error {
		out, err = load(ctx, db, id)
		return err
	})
	return out, err
}
