// Package adminpanel is what both admin panels share: sessions in a cookie, CSRF tokens,
// page rendering with security headers.
//
// A panel session is an access token of the panel's audience in an HttpOnly,
// SameSite=Strict cookie on /admin, renewed once less than half of its lifetime is
// left. The session id (the token's family) is kept across renewals, and each form
// carries a CSRF token bound to it.
package adminpanel

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"html/template"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/google/uuid"

	"github.com/tenantplane/tenantplane/apperr"
	"github.com/tenantplane/tenantplane/token"
	"github.com/tenantplane/tenantplane/web"
)

// cookiePath is the path of every panel's session cookie.
const cookiePath = "/admin"

// ErrNoSession is returned by Check when the request has no valid session cookie.
var ErrNoSession = errors.New("no admin panel session")

// ErrCSRF is the error a form whose CSRF token does not match its session fails with.
var ErrCSRF error = apperr.New(apperr.Forbidden, "csrf", "the form expired or did not come from this site; reload the page and try again")

// csrfKey is the per-process key CSRF tokens are HMACs under; a restart makes open forms
// fail once, nothing more.
var csrfKey = sync.OnceValue(func() []byte {
	k := make([]byte, 32)
	_, _ = rand.Read(k) // never fails (crypto/rand panics instead)
	return k
})

// CSRF is the CSRF token of a session: an HMAC of its id under the process key.
func CSRF(sessionID string) string {
	m := hmac.New(sha256.New, csrfKey())
	m.Write([]byte(sessionID))
	return hex.EncodeToString(m.Sum(nil))
}

// ValidCSRF reports whether the "csrf" form field of c's request is the CSRF token of
// the session sessionID.
func ValidCSRF(c *gin.Context, sessionID string) bool {
	return hmac.Equal([]byte(c.PostForm("csrf")), []byte(CSRF(sessionID)))
}

// Config configures Sessions.
type Config struct {
	// Issuer issues and verifies the session tokens; required.
	Issuer *token.Issuer
	// Audience is the JWT audience of the session tokens; required.
	Audience string
	// Cookie is the name of the session cookie; required.
	Cookie string
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Sessions issues, checks, renews and clears a panel's session cookie.
type Sessions struct {
	issuer   *token.Issuer
	audience string
	cookie   string
	now      func() time.Time
}

// New returns Sessions configured by cfg.
func New(cfg Config) *Sessions {
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	return &Sessions{issuer: cfg.Issuer, audience: cfg.Audience, cookie: cfg.Cookie, now: now}
}

// Session is a checked session of a request.
type Session struct {
	// ID is the session id, kept across renewals.
	ID string
	// Subject is the token's subject: the signed-in user.
	Subject string
	// CSRF is the session's CSRF token.
	CSRF string
	// Expires is when the session's token expires.
	Expires time.Time

	// renew is whether the token is past half of its lifetime.
	renew bool
}

// Start sets the session cookie to a token for subject in a new session.
func (s *Sessions) Start(c *gin.Context, subject string) error {
	return s.set(c, subject, uuid.NewString())
}

// set sets the session cookie to a new token for subject in the session id.
func (s *Sessions) set(c *gin.Context, subject, id string) error {
	raw, _, err := s.issuer.Issue(token.Access, subject, s.audience, token.Claims{Admin: true, Family: id})
	if err != nil {
		return fmt.Errorf("issuing admin session token: %w", err)
	}
	http.SetCookie(c.Writer, &http.Cookie{
		Name: s.cookie, Value: raw, Path: cookiePath,
		MaxAge:   int(s.issuer.TTL(token.Access).Seconds()),
		HttpOnly: true, Secure: c.Request.TLS != nil, SameSite: http.SameSiteStrictMode,
	})
	return nil
}

// Check verifies the session cookie of c's request and returns its session; it returns
// ErrNoSession when the cookie is missing, invalid, expired or of another audience.
// Renew the session once the request is let in.
func (s *Sessions) Check(c *gin.Context) (*Session, error) {
	raw, err := c.Cookie(s.cookie)
	if err != nil || raw == "" {
		return nil, ErrNoSession
	}
	claims, err := s.issuer.Verify(raw, token.Access, s.audience)
	if err != nil || claims.Family == "" {
		return nil, ErrNoSession
	}
	sess := &Session{ID: claims.Family, Subject: claims.Subject, CSRF: CSRF(claims.Family)}
	if claims.ExpiresAt != nil {
		sess.Expires = claims.ExpiresAt.Time
		sess.renew = claims.ExpiresAt.Sub(s.now()) < s.issuer.TTL(token.Access)/2
	}
	return sess, nil
}

// Renew sets the cookie to a new token of the same session once less than half of the
// token's lifetime is left, and does nothing before. It returns the issuer's error.
func (s *Sessions) Renew(c *gin.Context, sess *Session) error {
	if !sess.renew {
		return nil
	}
	return s.set(c, sess.Subject, sess.ID)
}

// SignedIn reports whether c's request carries a session cookie that verifies.
func (s *Sessions) SignedIn(c *gin.Context) bool {
	raw, err := c.Cookie(s.cookie)
	if err != nil || raw == "" {
		return false
	}
	_, err = s.issuer.Verify(raw, token.Access, s.audience)
	return err == nil
}

// Clear removes the session cookie.
func (s *Sessions) Clear(c *gin.Context) {
	http.SetCookie(c.Writer, &http.Cookie{
		Name: s.cookie, Value: "", Path: cookiePath, MaxAge: -1,
		HttpOnly: true, Secure: c.Request.TLS != nil, SameSite: http.SameSiteStrictMode,
	})
}

// Render writes the page t (its "layout" template, on data) with status and the
// panels' security headers; templates escape every value. A template error is logged
// with the page's name.
func Render(c *gin.Context, log *slog.Logger, t *template.Template, status int, data any) {
	c.Header("Content-Type", "text/html; charset=utf-8")
	c.Header("Cache-Control", "no-store")
	c.Header("Content-Security-Policy", "default-src 'none'; style-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	c.Header("X-Content-Type-Options", "nosniff")
	c.Header("Referrer-Policy", "same-origin")
	c.Status(status)
	if err := t.ExecuteTemplate(c.Writer, "layout", data); err != nil {
		log.ErrorContext(c.Request.Context(), "rendering admin page", "request_id", web.RequestID(c), "page", t.Name(), "error", err)
	}
}

// Problem returns the status and the message of err's error page, from the one error
// table (web.Fail, which also logs the server's failures): its message for domain
// errors, a generic one for the rest.
func Problem(c *gin.Context, log *slog.Logger, err error) (status int, msg string) {
	status, _, msg = web.Fail(c, log, err)
	return status, msg
}
