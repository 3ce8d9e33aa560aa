// Package auth is the dataplane's authentication and user management: JWT login,
// refresh-token rotation with reuse detection, verify and logout, the middleware that
// authenticates every other request, and the users endpoints (self service and tenant
// admin).
//
// Access tokens carry the tenant as audience and the user's token version; every
// authenticated request re-reads the user, so a deactivated user, or one whose password
// changed, is refused at once. Refresh tokens are recorded in the tenant's
// refresh_tokens table: each is single use, presenting a used one revokes its whole
// family, and logout revokes the family.
package auth

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/jackc/pgx/v5"

	"github.com/tenantplane/tenantplane/apperr"
	"github.com/tenantplane/tenantplane/dataplane/tenantdb"
	"github.com/tenantplane/tenantplane/password"
	"github.com/tenantplane/tenantplane/token"
	"github.com/tenantplane/tenantplane/web"
)

// Config configures a Service.
type Config struct {
	// Issuer signs and verifies tokens; required.
	Issuer *token.Issuer
	// Hasher hashes and checks passwords; required.
	Hasher *password.Hasher
	// Throttle limits failed logins.
	Throttle ThrottleConfig
	// Logger receives security events (default: discard).
	Logger *slog.Logger
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Service serves the auth and users endpoints of the dataplane.
type Service struct {
	issuer   *token.Issuer
	hasher   *password.Hasher
	throttle *throttle
	log      *slog.Logger
	now      func() time.Time
}

// New returns a Service.
func New(cfg Config) *Service {
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	return &Service{
		issuer:   cfg.Issuer,
		hasher:   cfg.Hasher,
		throttle: newThrottle(cfg.Throttle, now),
		log:      cmp.Or(cfg.Logger, slog.New(slog.DiscardHandler)),
		now:      now,
	}
}

// Issuer returns the token issuer the service signs and verifies tokens with.
func (s *Service) Issuer() *token.Issuer { return s.issuer }

// Routes registers the auth and users endpoints on r, which must run the tenant
// middleware (tenantdb.Set) first.
func (s *Service) Routes(r gin.IRouter) {
	h := func(f web.HandlerFunc) gin.HandlerFunc { return web.Handle(s.log, f) }
	r.POST("/auth/token", h(s.login))
	r.POST("/auth/token/refresh", h(s.refresh))
	r.POST("/auth/token/verify", h(s.verify))
	r.POST("/auth/logout", h(s.logout))

	users := r.Group("/users", s.Require())
	users.GET("/me", h(s.me))
	users.POST("/me/password", h(s.changeOwnPassword))
	admin := users.Group("", s.RequireAdmin())
	admin.GET("", h(s.listUsers))
	admin.POST("", h(s.createUser))
	admin.GET("/:id", h(s.getUser))
	admin.PATCH("/:id", h(s.patchUser))
	admin.DELETE("/:id", h(s.deleteUser))
}

// Require returns the middleware that authenticates a request by its bearer access
// token: signature, expiry, issuer, audience (the request's tenant) and kind here, then
// the user as stored now (present, active, same token version) with the request's first
// statement, in the same round trip (tenantdb.Check). It answers 401 otherwise. The
// user's admin flag is the stored one from then on. A request refused before it reaches
// the database (invalid input, search unavailable) is answered without the stored-user
// check: it reads and changes nothing.
func (s *Service) Require() gin.HandlerFunc {
	return web.Handle(s.log, func(c *gin.Context) error {
		sc, err := tenantdb.From(c)
		if err != nil {
			return err
		}
		raw, ok := bearer(c)
		if !ok {
			return apperr.New(apperr.Unauthenticated, "not_authenticated", "authentication required: send an access token as `Authorization: Bearer <token>`")
		}
		u, err := s.authenticate(sc, raw)
		if err != nil {
			return err
		}
		tenantdb.SetUser(c, u)
		c.Next()
		return nil
	})
}

// RequireAdmin returns the middleware that lets only tenant admins through (403
// otherwise); it runs after Require, and checks the stored flag.
func (s *Service) RequireAdmin() gin.HandlerFunc {
	return web.Handle(s.log, func(c *gin.Context) error {
		sc, err := tenantdb.From(c)
		if err != nil {
			return err
		}
		u, err := tenantdb.UserFrom(c)
		if err != nil {
			return err
		}
		if err := sc.Verify(c.Request.Context()); err != nil {
			return err
		}
		if !u.Admin {
			return apperr.New(apperr.Forbidden, "forbidden", "only tenant admins may do this")
		}
		c.Next()
		return nil
	})
}

// authenticate verifies the access token raw for the scope's tenant (signature,
// expiry, issuer, audience, kind) and arranges for its user to be checked as stored now
// (present, active, same token version) with the request's first statement.
func (s *Service) authenticate(sc *tenantdb.Scope, raw string) (*tenantdb.User, error) {
	claims, err := s.issuer.Verify(raw, token.Access, sc.Tenant.ID)
	if err != nil {
		return nil, errInvalidToken
	}
	id, err := strconv.ParseInt(claims.Subject, 10, 64)
	if err != nil || id <= 0 {
		return nil, errInvalidToken
	}
	u := &tenantdb.User{ID: id, Admin: claims.Admin, Expires: claims.ExpiresAt.Time}
	sc.SetCheck(&tenantdb.Check{
		SQL:  `SELECT email, is_admin, is_active, token_version FROM users WHERE id = $1`,
		Args: []any{id},
		Verify: func(row pgx.Row) error {
			var active bool
			var version int
			if err := row.Scan(&u.Email, &u.Admin, &active, &version); err != nil {
				if errors.Is(err, pgx.ErrNoRows) {
					return errInvalidToken
				}
				return fmt.Errorf("checking the token's user: %w", err)
			}
			if !active || version != claims.Version {
				return errInvalidToken
			}
			return nil
		},
	})
	return u, nil
}

// AuthenticateToken checks an access token taken from somewhere other than the
// Authorization header (the WebSocket handshake) for the request's tenant, including
// the stored-user check, and returns its user. It returns an Unauthenticated error
// (invalid_token) for any token that must not be accepted.
func (s *Service) AuthenticateToken(c *gin.Context, raw string) (*tenantdb.User, error) {
	sc, err := tenantdb.From(c)
	if err != nil {
		return nil, err
	}
	u, err := s.authenticate(sc, raw)
	if err != nil {
		return nil, err
	}
	if err := sc.Verify(c.Request.Context()); err != nil {
		return nil, err
	}
	return u, nil
}

var errInvalidToken = apperr.New(apperr.Unauthenticated, "invalid_token", "the token is invalid, expired or revoked")

// bearer returns the token of an `Authorization: Bearer` header.
func bearer(c *gin.Context) (string, bool) {
	h := c.GetHeader("Authorization")
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	tok = strings.TrimSpace(tok)
	return tok, tok != ""
}
