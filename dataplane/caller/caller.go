// Package caller carries the authenticated caller of a dataplane request in its
// context.Context, from whichever adapter authenticated it (the JSON API's bearer token,
// the WebSocket handshake, the tenant admin panel's session) to the services.
package caller

import (
	"context"
	"time"

	"github.com/tenantplane/tenantplane/apperr"
)

// Caller is the authenticated user of a request. Email and Admin are the stored values
// once the request's user check has run (see tenantdb.Scope.CheckUser); before, Admin is
// the token's claim.
type Caller struct {
	ID    int64
	Email string
	Admin bool
	// Expires is when the credential that authenticated the request expires; a
	// long-lived connection (a WebSocket) ends then.
	Expires time.Time
}

// ErrUnauthenticated is the error of a request that carries no credentials.
var ErrUnauthenticated = apperr.New(apperr.Unauthenticated, "unauthenticated", "authentication required")

// ErrInvalidToken is the error of a token that must not be accepted: bad signature,
// expired, of another tenant, or whose user is gone, inactive or changed password.
var ErrInvalidToken = apperr.New(apperr.Unauthenticated, "invalid_token", "the token is invalid, expired or revoked")

type key struct{}

// With returns ctx carrying c as the request's caller.
func With(ctx context.Context, c *Caller) context.Context { return context.WithValue(ctx, key{}, c) }

// From returns the caller ctx carries. It returns ErrUnauthenticated when there is none.
func From(ctx context.Context) (*Caller, error) {
	if c, ok := ctx.Value(key{}).(*Caller); ok && c != nil {
		return c, nil
	}
	return nil, ErrUnauthenticated
}
