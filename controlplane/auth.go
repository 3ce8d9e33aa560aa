package controlplane

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/gin-gonic/gin"
	"github.com/google/uuid"

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
	return s.issuePair(c, u, "")
}

// refresh exchanges a platform refresh token for a new pair. Platform refresh tokens are
// stateless: one stays valid until it expires, but only while its user exists and is
// active.
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
	return s.issuePair(c, u, claims.Family)
}

// issuePair answers a new access and refresh token for u; family is the refresh
// family to continue, "" for a new login.
func (s *Server) issuePair(c *gin.Context, u *User, family string) error {
	if family == "" {
		family = uuid.NewString()
	}
	access, _, err := s.issuer.Issue(token.Access, u.ID, Audience, token.Claims{Admin: true})
	if err != nil {
		return fmt.Errorf("issuing access token: %w", err)
	}
	refresh, _, err := s.issuer.Issue(token.Refresh, u.ID, Audience, token.Claims{Admin: true, Family: family})
	if err != nil {
		return fmt.Errorf("issuing refresh token: %w", err)
	}
	c.JSON(http.StatusOK, tokenPair{
		Access:    access,
		Refresh:   refresh,
		TokenType: "Bearer",
		ExpiresIn: int(s.issuer.TTL(token.Access).Seconds()),
	})
	return nil
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
