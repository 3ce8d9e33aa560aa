package controlplane

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/gin-gonic/gin"
	"github.com/google/uuid"

	"github.com/tenantplane/tenantplane/apperr"
	"github.com/tenantplane/tenantplane/platform"
	"github.com/tenantplane/tenantplane/refresh"
	"github.com/tenantplane/tenantplane/token"
	"github.com/tenantplane/tenantplane/web"
)

// userKey is the gin context key of the authenticated platform user.
const userKey = "controlplane.user"

// tokenPair is the answer of the token endpoints.
type tokenPair struct {
	Access    string `json:"access"`
	Refresh   string `json:"refresh"`
	TokenType string `json:"token_type"`
	ExpiresIn int    `json:"expires_in"`
}

// errInvalidToken is the answer to every token that is not a valid platform token of an
// active user; refresh.ErrRefused is the same error.
var errInvalidToken = refresh.ErrRefused

// login exchanges a platform user's email and password for a token pair. The password
// check is throttled (checkPassword).
func (s *Server) login(c *gin.Context) error {
	var req struct {
		Email    string `json:"email"`
		Password string `json:"password"`
	}
	if err := web.DecodeJSON(c, &req, maxBody); err != nil {
		return err
	}
	if req.Email == "" || req.Password == "" {
		return apperr.New(apperr.Invalid, "invalid", "email and password are required")
	}
	ctx := c.Request.Context()
	u, err := s.checkPassword(ctx, req.Email, req.Password, c.ClientIP())
	if err != nil {
		return platformLoginError(err)
	}
	var pair tokenPair
	if _, err := refresh.Start(ctx, s.platform.Tokens(), s.mint(u, &pair)); err != nil {
		return err
	}
	c.Header("Cache-Control", "no-store")
	c.JSON(http.StatusOK, pair)
	return nil
}

// loginScope is the account scope of platform users in the login throttle's keys (a
// tenant's id for tenant users).
const loginScope = "platform"

// checkPassword checks a platform user's email and password, for the API's login and
// the panel's alike. It first reserves an attempt on the login throttle (package
// throttle: per email and per clientIP, shared by the replicas), before any hashing,
// and a success refunds it, so successful logins never count against an IP. It returns
// a RateLimited error (too_many_attempts, with RetryAfter) when throttled, and
// Users.Authenticate's errors.
func (s *Server) checkPassword(ctx context.Context, email, pw, clientIP string) (*platform.User, error) {
	res, err := s.limiter.Reserve(ctx, s.cfg.Login.Keys(loginScope, email, clientIP)...)
	if err != nil {
		if apperr.KindOf(err) == apperr.RateLimited {
			s.cfg.Metrics.Throttled("controlplane")
		} else {
			s.log.Error("reserving a password check", "error", err)
		}
		return nil, err
	}
	u, err := s.users.Authenticate(ctx, email, pw)
	if err != nil {
		return nil, err
	}
	if err := res.Refund(ctx); err != nil {
		s.log.Warn("refunding a password check", "error", err)
	}
	return u, nil
}

// refresh exchanges a platform refresh token for a new pair by package refresh's
// rotation: single use, and presenting a used or revoked one (a stolen copy, or the
// thief's after the owner's) revokes its whole family, so both parties must log in
// again. A user who is gone or inactive has the family revoked too.
func (s *Server) refresh(c *gin.Context) error {
	var req struct {
		Refresh string `json:"refresh"`
	}
	if err := web.DecodeJSON(c, &req, maxBody); err != nil {
		return err
	}
	if req.Refresh == "" {
		return apperr.New(apperr.Invalid, "invalid", "refresh is required")
	}
	claims, err := s.issuer.Verify(req.Refresh, token.Refresh, Audience)
	if err != nil || !isUUID(claims.ID) || !isUUID(claims.Family) || !isUUID(claims.Subject) {
		return errInvalidToken
	}
	ctx := c.Request.Context()
	var u *platform.User
	var pair tokenPair
	_, err = refresh.Rotate(ctx, s.platform.InTokenTx,
		refresh.Presented{JTI: claims.ID, Subject: claims.Subject, Family: claims.Family},
		refresh.Hooks[*platform.Tokens]{
			Check: func(ctx context.Context, tx *platform.Tokens, subject string) (bool, error) {
				var cerr error
				u, cerr = activeUser(ctx, tx.User, subject)
				if errors.Is(cerr, errInvalidToken) {
					return false, nil
				}
				return cerr == nil, cerr
			},
			Mint: func(family string) (refresh.Record, error) { return s.mint(u, &pair)(family) },
		})
	var refused *refresh.RefusedError
	if errors.As(err, &refused) && refused.Reason != refresh.Unknown {
		s.log.Warn("platform refresh token refused; family revoked", "reason", refused.Reason,
			"revoked", refused.Revoked, "request_id", web.RequestID(c))
	}
	if err != nil {
		return err
	}
	c.Header("Cache-Control", "no-store")
	c.JSON(http.StatusOK, pair)
	return nil
}

// mint returns the refresh.Mint of u's tokens: it signs an access token and a refresh
// token of the family into pair and returns the refresh token's record.
func (s *Server) mint(u *platform.User, pair *tokenPair) refresh.Mint {
	return func(family string) (refresh.Record, error) {
		access, _, err := s.issuer.Issue(token.Access, u.ID, Audience, token.Claims{Admin: true})
		if err != nil {
			return refresh.Record{}, fmt.Errorf("issuing access token: %w", err)
		}
		raw, rc, err := s.issuer.Issue(token.Refresh, u.ID, Audience, token.Claims{Admin: true, Family: family})
		if err != nil {
			return refresh.Record{}, fmt.Errorf("issuing refresh token: %w", err)
		}
		*pair = tokenPair{
			Access:    access,
			Refresh:   raw,
			TokenType: "Bearer",
			ExpiresIn: int(s.issuer.TTL(token.Access).Seconds()),
		}
		return refresh.Record{JTI: rc.ID, Subject: u.ID, Family: family, ExpiresAt: rc.ExpiresAt.Time}, nil
	}
}

func isUUID(s string) bool {
	_, err := uuid.Parse(s)
	return err == nil
}

// authenticate is the middleware of the platform admin routes: it requires a platform
// access token (Authorization: Bearer) of a user that still exists and is active.
func (s *Server) authenticate(c *gin.Context) error {
	h := c.GetHeader("Authorization")
	scheme, raw, ok := strings.Cut(h, " ")
	if h == "" || !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(raw) == "" {
		return apperr.New(apperr.Unauthenticated, "unauthenticated", "a platform bearer token is required")
	}
	claims, err := s.issuer.Verify(strings.TrimSpace(raw), token.Access, Audience)
	if err != nil {
		return errInvalidToken
	}
	u, err := s.activeUser(c.Request.Context(), claims.Subject)
	if err != nil {
		return err
	}
	c.Set(userKey, u)
	c.Next()
	return nil
}

// activeUser returns the active platform user with the id; errInvalidToken when there
// is none or it is inactive, Unavailable when the database is down.
func (s *Server) activeUser(ctx context.Context, id string) (*platform.User, error) {
	return activeUser(ctx, s.users.Get, id)
}

// activeUser is Server.activeUser reading the user with get: the pool's or a
// transaction's.
func activeUser(ctx context.Context, get func(context.Context, string) (*platform.User, error), id string) (*platform.User, error) {
	u, err := get(ctx, id)
	if errors.Is(err, apperr.ErrNotFound) || (err == nil && !u.IsActive) {
		return nil, errInvalidToken
	}
	if err != nil {
		return nil, err
	}
	return u, nil
}

// actor names the authenticated platform user in audit entries.
func actor(c *gin.Context) string {
	if u, ok := c.Get(userKey); ok {
		return u.(*platform.User).Email
	}
	return "platform"
}
