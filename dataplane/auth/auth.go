// Package auth is the dataplane's authentication and user management: JWT login,
// refresh-token rotation with reuse detection, verify and logout, the authentication of
// every other request's token, and the users (self service and tenant admin). It knows
// nothing of HTTP: its methods take the request's context.Context, which carries the
// tenant's scope (tenantdb.ScopeFrom) and, once authenticated, the caller (caller.From).
//
// Access tokens carry the tenant as audience and the user's token version; every
// authenticated request re-reads the user, so a deactivated user, or one whose password
// changed, is refused at once. Refresh tokens are recorded in the tenant's
// refresh_tokens table and rotated by package refresh (the platform's rotation too):
// each is single use, presenting a used one revokes its whole family, and logout
// revokes the family. Every password check reserves on package throttle before it
// hashes (the platform's limiter too).
package auth

import (
	"cmp"
	"context"
	"log/slog"
	"strconv"
	"time"

	"github.com/tenantplane/tenantplane/apperr"
	"github.com/tenantplane/tenantplane/dataplane/caller"
	"github.com/tenantplane/tenantplane/dataplane/tenantdb"
	"github.com/tenantplane/tenantplane/metrics"
	"github.com/tenantplane/tenantplane/password"
	"github.com/tenantplane/tenantplane/throttle"
	"github.com/tenantplane/tenantplane/token"
)

// Config configures a Service.
type Config struct {
	// Issuer signs and verifies tokens; required.
	Issuer *token.Issuer
	// Hasher hashes and checks passwords; required.
	Hasher *password.Hasher
	// Throttle is the limits of password checks.
	Throttle ThrottleConfig
	// Limiter counts password checks against Throttle's limits; share its store between
	// replicas (throttle.NewRedis, throttle.NewPostgres). Default: an in-process store,
	// for a single process.
	Limiter *throttle.Limiter
	// EndSessions, when set, ends every admin panel session of a user of a tenant
	// (session.Manager.EndAll at the tenant's audience); it is called after the user's
	// password changed, or the user was deactivated, demoted or deleted.
	EndSessions func(ctx context.Context, tenantID, userID string) error
	// Logger receives security events (default: discard).
	Logger *slog.Logger
	// Metrics counts password checks refused by the throttle (nil: nothing recorded).
	Metrics *metrics.Metrics
	// Now is the clock (default time.Now).
	Now func() time.Time
	// OnRevoke, when set, is called once a change that revokes every token of a user
	// (deactivation, deletion, a password change) has committed, with the tenant's id
	// and the user's: the notifications service ends the user's open WebSockets.
	OnRevoke func(ctx context.Context, tenantID string, userID int64)
}

// Service authenticates the dataplane's requests and manages the tenants' users.
type Service struct {
	issuer  *token.Issuer
	hasher  *password.Hasher
	limiter *throttle.Limiter
	limits  throttle.Login
	endAll  func(ctx context.Context, tenantID, userID string) error
	// onRevoke is told when a user lost every token (Config.OnRevoke).
	onRevoke func(ctx context.Context, tenantID string, userID int64)
	log      *slog.Logger
	metrics  *metrics.Metrics
	now      func() time.Time
}

// New returns a Service.
func New(cfg Config) *Service {
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	limiter := cfg.Limiter
	if limiter == nil {
		limiter, _ = throttle.New(throttle.Config{Store: throttle.NewMemory(), Now: now}) // errors only without a store
	}
	return &Service{
		issuer:   cfg.Issuer,
		hasher:   cfg.Hasher,
		limiter:  limiter,
		limits:   cfg.Throttle.Login(),
		endAll:   cfg.EndSessions,
		log:      cmp.Or(cfg.Logger, slog.New(slog.DiscardHandler)),
		metrics:  cfg.Metrics,
		now:      now,
		onRevoke: cfg.OnRevoke,
	}
}

// revoked tells Config.OnRevoke that user id of ctx's tenant lost every token.
func (s *Service) revoked(ctx context.Context, id int64) {
	if sc, err := tenantdb.ScopeFrom(ctx); err == nil && s.onRevoke != nil {
		s.onRevoke(ctx, sc.Tenant.ID, id)
	}
}

// Issuer returns the token issuer the service signs and verifies tokens with.
func (s *Service) Issuer() *token.Issuer { return s.issuer }

// Authenticate verifies the access token raw for the tenant of ctx's scope (signature,
// expiry, issuer, audience, kind) and returns its caller, whose stored state (present,
// active, same token version) is checked with the request's first statement, in the same
// round trip (tenantdb.Scope.CheckUser). It returns caller.ErrInvalidToken for a token
// that must not be accepted, and an Internal error when ctx has no scope. Put the caller
// in the context (caller.With) for the services.
func (s *Service) Authenticate(ctx context.Context, raw string) (*caller.Caller, error) {
	sc, err := tenantdb.ScopeFrom(ctx)
	if err != nil {
		return nil, err
	}
	claims, err := s.issuer.Verify(raw, token.Access, sc.Tenant.ID)
	if err != nil {
		return nil, caller.ErrInvalidToken
	}
	id, err := strconv.ParseInt(claims.Subject, 10, 64)
	if err != nil || id <= 0 {
		return nil, caller.ErrInvalidToken
	}
	c := sc.CheckUser(id, claims.Version, claims.ExpiresAt.Time)
	c.Admin = claims.Admin
	return c, nil
}

// AuthenticateNow is Authenticate followed at once by the stored-user check, for a
// connection that must know before it starts (the WebSocket handshake). Errors as for
// Authenticate, plus the check's database errors.
func (s *Service) AuthenticateNow(ctx context.Context, raw string) (*caller.Caller, error) {
	c, err := s.Authenticate(ctx, raw)
	if err != nil {
		return nil, err
	}
	sc, _ := tenantdb.ScopeFrom(ctx) // Authenticate found it
	if err := sc.Verify(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

// RequireAdmin returns ctx's caller once its stored state is checked, if it is a tenant
// admin. It returns caller.ErrUnauthenticated without a caller, the user check's error,
// and a Forbidden error (forbidden) for a caller who is not an admin.
func RequireAdmin(ctx context.Context) (*caller.Caller, error) {
	c, err := caller.From(ctx)
	if err != nil {
		return nil, err
	}
	sc, err := tenantdb.ScopeFrom(ctx)
	if err != nil {
		return nil, err
	}
	if err := sc.Verify(ctx); err != nil {
		return nil, err
	}
	if !c.Admin {
		return nil, errNotAdmin
	}
	return c, nil
}

var errNotAdmin = apperr.New(apperr.Forbidden, "forbidden", "only tenant admins may do this")

// reserve reserves a password check on the throttle under keys, and counts a refusal.
// It returns the limiter's errors: a RateLimited one (too_many_attempts) when throttled.
func (s *Service) reserve(ctx context.Context, keys ...throttle.Key) (*throttle.Reservation, error) {
	res, err := s.limiter.Reserve(ctx, keys...)
	if apperr.KindOf(err) == apperr.RateLimited {
		s.metrics.Throttled("dataplane")
	}
	return res, err
}
