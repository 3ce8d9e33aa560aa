package controlplane

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/gin-gonic/gin"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tenantplane/tenantplane/apperr"
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

var errInvalidToken = apperr.New(apperr.Unauthenticated, "invalid_token", "the token is invalid or expired")

// login exchanges a platform user's email and password for a token pair. Attempts are
// throttled per email and per client IP.
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
	if err := s.loginIPThrottle.check(c, c.ClientIP(), "login"); err != nil {
		return err
	}
	if err := s.loginEmailThrottle.check(c, strings.ToLower(strings.TrimSpace(req.Email)), "login"); err != nil {
		return err
	}
	u, err := s.users.Authenticate(c.Request.Context(), req.Email, req.Password)
	if err != nil {
		return err
	}
	return s.issuePair(c, u)
}

// refresh exchanges a platform refresh token for a new pair. Refresh tokens are single
// use: each is recorded when issued and marked used when exchanged, and presenting one
// that was already used (a stolen copy, or the thief's after the owner's) revokes its
// whole family, so both parties must log in again.
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
	if err != nil {
		return errInvalidToken
	}
	u, err := s.activeUser(c, claims.Subject)
	if err != nil {
		return err
	}
	ctx := c.Request.Context()
	var pair *tokenPair
	reused := false
	err = pgx.BeginFunc(ctx, s.store.DB(), func(tx pgx.Tx) error {
		var used, revoked bool
		err := tx.QueryRow(ctx, `SELECT used_at IS NOT NULL, revoked_at IS NOT NULL FROM platform_refresh_tokens
			WHERE jti = $1 AND user_id = $2 FOR UPDATE`, claims.ID, u.ID).Scan(&used, &revoked)
		if errors.Is(err, pgx.ErrNoRows) || revoked {
			return errInvalidToken
		}
		if err != nil {
			return fmt.Errorf("reading refresh token: %w", err)
		}
		if used {
			reused = true
			_, err := tx.Exec(ctx, `UPDATE platform_refresh_tokens SET revoked_at = now() WHERE family = $1 AND revoked_at IS NULL`, claims.Family)
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE platform_refresh_tokens SET used_at = now() WHERE jti = $1`, claims.ID); err != nil {
			return fmt.Errorf("using refresh token: %w", err)
		}
		pair, err = s.newPair(ctx, tx, u, claims.Family)
		return err
	})
	if err != nil {
		return err
	}
	if reused {
		s.log.Warn("platform refresh token reused; family revoked", "user_id", u.ID, "request_id", web.RequestID(c))
		return errInvalidToken
	}
	c.JSON(http.StatusOK, pair)
	return nil
}

// issuePair answers a new access and refresh token for u, starting a refresh family.
func (s *Server) issuePair(c *gin.Context, u *User) error {
	pair, err := s.newPair(c.Request.Context(), s.store.DB(), u, uuid.NewString())
	if err != nil {
		return err
	}
	c.JSON(http.StatusOK, pair)
	return nil
}

// execer is a pool or a transaction.
type execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// newPair issues an access token and a refresh token of family for u, recording the
// refresh token so that it can be used once.
func (s *Server) newPair(ctx context.Context, db execer, u *User, family string) (*tokenPair, error) {
	access, _, err := s.issuer.Issue(token.Access, u.ID, Audience, token.Claims{Admin: true})
	if err != nil {
		return nil, fmt.Errorf("issuing access token: %w", err)
	}
	refresh, rc, err := s.issuer.Issue(token.Refresh, u.ID, Audience, token.Claims{Admin: true, Family: family})
	if err != nil {
		return nil, fmt.Errorf("issuing refresh token: %w", err)
	}
	if _, err := db.Exec(ctx, `INSERT INTO platform_refresh_tokens (jti, user_id, family, expires_at) VALUES ($1, $2, $3, $4)`,
		rc.ID, u.ID, family, rc.ExpiresAt.Time); err != nil {
		return nil, fmt.Errorf("recording refresh token: %w", err)
	}
	return &tokenPair{
		Access:    access,
		Refresh:   refresh,
		TokenType: "Bearer",
		ExpiresIn: int(s.issuer.TTL(token.Access).Seconds()),
	}, nil
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
	u, err := s.activeUser(c, claims.Subject)
	if err != nil {
		return err
	}
	c.Set(userKey, u)
	c.Next()
	return nil
}

// activeUser returns the active platform user with the id, Unauthenticated otherwise.
func (s *Server) activeUser(c *gin.Context, id string) (*User, error) {
	u, err := s.users.Get(c.Request.Context(), id)
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
		return u.(*User).Email
	}
	return "platform"
}
