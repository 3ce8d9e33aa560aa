// Package adminpanel is what both admin panels share: server-side sessions in a cookie
// (package session), CSRF tokens, login CSRF, the gate of the signed-in pages (Gate),
// page rendering with security headers.
//
// A panel session is a session.Manager session of the panel's audience (the platform,
// or a tenant's id); the HttpOnly, SameSite=Strict cookie on /admin holds only its
// random token. A logout ends it in the store, so a copy of the cookie stops working at
// once on every replica; each panel also checks the user as stored now on every request
// (exists, active, admin, same token version). Each form carries the session's CSRF
// token, and the login form a login CSRF token bound to a nonce in a short-lived cookie.
package adminpanel

import (
	"embed"
	"errors"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"strings"

	"github.com/gin-gonic/gin"

	"github.com/tenantplane/tenantplane/apperr"
	"github.com/tenantplane/tenantplane/session"
	"github.com/tenantplane/tenantplane/web"
)

// files are what both panels' pages share: the stylesheet and the confirmation page.
//
//go:embed files
var files embed.FS

// Stylesheet serves the panels' stylesheet (register it at /admin/static/admin.css).
func Stylesheet(c *gin.Context) {
	c.Header("Cache-Control", "public, max-age=3600")
	c.FileFromFS("files/admin.css", http.FS(files))
}

// Parse returns the panel page name: the panel's layout and page templates from
// panel (the files at layout and page), with funcs, and the shared templates
// (the "content" of page "confirm" is the shared confirmation page, which renders
// the view's Confirm, CSRF and Title). It panics on a template error, as
// template.Must does.
func Parse(panel fs.FS, name, layout, page string, funcs template.FuncMap) *template.Template {
	t := template.Must(template.New(name).Funcs(funcs).ParseFS(panel, layout))
	if name == "confirm" {
		return template.Must(t.ParseFS(files, "files/confirm.html"))
	}
	return template.Must(t.ParseFS(panel, page))
}

// Sentence makes an error message a sentence for a page: capitalised, with a full
// stop.
func Sentence(msg string) string {
	if msg == "" {
		return msg
	}
	msg = strings.ToUpper(msg[:1]) + msg[1:]
	if !strings.HasSuffix(msg, ".") {
		msg += "."
	}
	return msg
}

// Refusal returns the status and the sentence a page shows for err, a domain error
// the page answers itself (a Conflict or an Invalid one, shown on the form again).
func Refusal(err error) (status int, msg string) {
	status, _, msg = web.Status(err)
	return status, Sentence(msg)
}

// cookiePath is the path of every panel's cookies.
const cookiePath = "/admin"

// loginNonceAge is how long a login form stays valid, in seconds.
const loginNonceAge = 3600

// CSRFLabel is the label the panels' CSRF key is derived under from the platform's key
// ring (token.KeyRing.Derive): every replica derives the same key.
const CSRFLabel = "admin panel csrf"

// ErrNoSession is returned by Check when the request has no valid session cookie.
var ErrNoSession = session.ErrNoSession

// ErrCSRF is the error a form whose CSRF token does not match its session fails with.
var ErrCSRF error = apperr.New(apperr.Forbidden, "csrf", "the form expired or did not come from this site; reload the page and try again")

// Config configures Sessions.
type Config struct {
	// Manager keeps the sessions; required.
	Manager *session.Manager
	// Audience is whose panel the sessions are for: "platform" or a tenant's id; required.
	Audience string
	// Cookie is the name of the session cookie; required. The login nonce cookie is
	// named after it.
	Cookie string
}

// Sessions starts, checks and ends a panel's sessions and sets its cookies.
type Sessions struct {
	m        *session.Manager
	audience string
	cookie   string
}

// New returns Sessions configured by cfg.
func New(cfg Config) *Sessions {
	return &Sessions{m: cfg.Manager, audience: cfg.Audience, cookie: cfg.Cookie}
}

// Session is a checked session of a request.
type Session = session.Session

// Start starts a session of subject (at its token version) and sets its cookie. It
// returns the store's error.
func (s *Sessions) Start(c *gin.Context, subject string, version int) error {
	sess, err := s.m.Start(c.Request.Context(), s.audience, subject, version)
	if err != nil {
		return err
	}
	// A browser-session cookie: the store decides when the session ends.
	s.setCookie(c, s.cookie, sess.Token, 0)
	s.setCookie(c, s.nonceCookie(), "", -1)
	return nil
}

// Check returns the session the cookie of c's request opens, renewed in the store as it
// is used (never past its absolute lifetime). It returns ErrNoSession when the cookie is
// missing or opens no session, and the store's error when the store cannot be reached.
// The caller must still check the session's user as stored now.
func (s *Sessions) Check(c *gin.Context) (*Session, error) {
	raw, err := c.Cookie(s.cookie)
	if err != nil || raw == "" {
		return nil, ErrNoSession
	}
	return s.m.Check(c.Request.Context(), s.audience, raw)
}

// ValidCSRF reports whether the "csrf" form field of c's request is the CSRF token of
// sess.
func (s *Sessions) ValidCSRF(c *gin.Context, sess *Session) bool {
	return s.m.ValidCSRF(sess, c.PostForm("csrf"))
}

// LoginCSRF returns the login CSRF token for the login form it is about to show, and
// sets the nonce cookie it is bound to.
func (s *Sessions) LoginCSRF(c *gin.Context) string {
	nonce := session.NewNonce()
	s.setCookie(c, s.nonceCookie(), nonce, loginNonceAge)
	return s.m.LoginCSRF(nonce)
}

// ValidLoginCSRF reports whether the "csrf" form field of c's login request is the login
// CSRF token of its nonce cookie.
func (s *Sessions) ValidLoginCSRF(c *gin.Context) bool {
	nonce, err := c.Cookie(s.nonceCookie())
	return err == nil && s.m.ValidLoginCSRF(nonce, c.PostForm("csrf"))
}

// End ends the request's session in the store (a logout: every copy of the cookie stops
// working) and clears the cookie. It returns the store's error.
func (s *Sessions) End(c *gin.Context) error {
	s.Clear(c)
	raw, err := c.Cookie(s.cookie)
	if err != nil || raw == "" {
		return nil
	}
	return s.m.End(c.Request.Context(), raw)
}

// Gate admits a request to a panel's signed-in pages, by the same rules in both panels.
// Without a session, the cookie is cleared and the browser sent to login. With one, find
// returns its user as stored now, or ok false when that user may no longer use the panel
// (gone, inactive, another token version): the session is then ended in the store and
// the browser sent to login. A POST's body is bounded to maxBody and must carry the
// session's CSRF token. fail renders an error page for the store's and find's errors,
// and for a CSRF mismatch (ErrCSRF, with the user and the session's CSRF token); fail
// must abort the request. Gate returns the user and the session when the request may go
// on, ok false when it was answered.
func Gate[U any](c *gin.Context, s *Sessions, log *slog.Logger, login string, maxBody int64,
	find func(*Session) (user U, ok bool, err error), fail func(user U, csrf string, err error)) (user U, sess *Session, ok bool) {
	var nobody U
	toLogin := func() {
		s.Clear(c)
		c.Redirect(http.StatusSeeOther, login)
		c.Abort()
	}
	sess, err := s.Check(c)
	if errors.Is(err, ErrNoSession) {
		toLogin()
		return nobody, nil, false
	}
	if err != nil {
		fail(nobody, "", err)
		return nobody, nil, false
	}
	user, ok, err = find(sess)
	if err != nil {
		fail(nobody, "", err)
		return nobody, nil, false
	}
	if !ok {
		if err := s.End(c); err != nil {
			log.Warn("ending an admin panel session", "error", err)
		}
		toLogin()
		return nobody, nil, false
	}
	if c.Request.Method == http.MethodPost {
		c.Request.Body = http.MaxBytesReader(c.Writer, c.Request.Body, maxBody)
		if !s.ValidCSRF(c, sess) {
			fail(user, sess.CSRF, ErrCSRF)
			return nobody, nil, false
		}
	}
	return user, sess, true
}

// Clear removes the session cookie.
func (s *Sessions) Clear(c *gin.Context) { s.setCookie(c, s.cookie, "", -1) }

func (s *Sessions) nonceCookie() string { return s.cookie + "_login" }

func (s *Sessions) setCookie(c *gin.Context, name, value string, maxAge int) {
	http.SetCookie(c.Writer, &http.Cookie{
		Name: name, Value: value, Path: cookiePath, MaxAge: maxAge,
		HttpOnly: true, Secure: c.Request.TLS != nil, SameSite: http.SameSiteStrictMode,
	})
}

// ErrLoginCSRF is the error of a login form without a valid login CSRF token.
var ErrLoginCSRF error = apperr.New(apperr.Forbidden, "csrf", "the login form expired or did not come from this site; reload the page and try again")

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

// Confirm is a confirmation page's question: destructive actions show it first, and
// only its form (a POST with the session's CSRF token) performs them.
type Confirm struct {
	// Question asks what is about to happen.
	Question string
	// Action is the path the confirming form POSTs to.
	Action string
	// Button is the confirming button's label.
	Button string
	// Back is where cancelling leads.
	Back string
	// Danger marks the action as destructive (a red button).
	Danger bool
}
