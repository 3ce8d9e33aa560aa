package controlplane

import (
	"cmp"
	"embed"
	"encoding/base64"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/tenantplane/tenantplane/apperr"
	"github.com/tenantplane/tenantplane/platform"
	"github.com/tenantplane/tenantplane/provisioner"
	"github.com/tenantplane/tenantplane/tenant"
	"github.com/tenantplane/tenantplane/web"
	"github.com/tenantplane/tenantplane/web/adminpanel"
)

// The admin panel at /admin/ is a server-rendered HTML face of the platform admin API
// for platform users with a browser: log in with email and password, list and filter
// tenants, look at one, and suspend, resume, delete (after a confirmation page) or
// restore it, download its archive, clone it and move it to another shard or isolation
// (each after a confirmation page; the tenant's page then follows the move, which can be
// aborted), and list, create and deactivate platform users (never oneself, never the
// last active one). Its session is a
// server-side session (package session, through package adminpanel) of audience
// AdminUIAudience whose token is the HttpOnly cookie; every request checks the user as
// stored now (exists, active), so a logout or a deactivation refuses the very next
// request with the cookie, on every replica. Every form carries a CSRF token bound to
// the session, the login form a login CSRF token.

// AdminUIAudience is the session audience of the platform admin panel; a tenant panel's
// is its tenant's id.
const AdminUIAudience = "platform"

// adminCookie is the name of the admin panel's session cookie.
const adminCookie = "tenantplane_admin"

// adminPageSize is how many tenants a page of the panel's list shows.
const adminPageSize = 50

//go:embed admin_ui
var adminFiles embed.FS

// adminPages are the panel's templates, each parsed with the layout.
var adminPages = func() map[string]*template.Template {
	funcs := template.FuncMap{
		"when": func(v any) string {
			switch t := v.(type) {
			case time.Time:
				return t.UTC().Format("2006-01-02 15:04 UTC")
			case *time.Time:
				if t != nil {
					return t.UTC().Format("2006-01-02 15:04 UTC")
				}
			}
			return ""
		},
		"title": func(s string) string {
			if s == "" {
				return s
			}
			return strings.ToUpper(s[:1]) + s[1:]
		},
	}
	pages := map[string]*template.Template{}
	for _, name := range []string{"login", "tenants", "tenant", "users", "confirm", "ask", "error"} {
		pages[name] = adminpanel.Parse(adminFiles, name, "admin_ui/layout.html", "admin_ui/"+name+".html", funcs)
	}
	return pages
}()

// adminView is what every panel template renders.
type adminView struct {
	Title string
	User  *platform.User
	CSRF  string
	Error string

	// Login form.
	Email string

	// Tenant list.
	Statuses []tenant.Status
	Status   tenant.Status
	Tenants  []*tenant.Tenant
	Next     string

	// Tenant detail.
	Tenant  *tenant.Tenant
	Actions []string
	Domains []tenant.Domain
	Events  []tenant.Event
	// Move is the tenant's move in progress, Shards the move form's choices.
	Move   *provisioner.MoveState
	Shards []string

	// Ask is the question of a confirmation page whose form carries fields.
	Ask *adminAsk

	// Platform users.
	Users []*platform.User

	// Confirm is the question of a confirmation page.
	Confirm *adminpanel.Confirm
}

// adminAsk is a confirmation page that POSTs Fields (hidden) and confirmed=yes to
// Action.
type adminAsk struct {
	Question, Action, Button, Back string
	Fields                         []adminField
}

// adminField is a hidden field of a confirmation form.
type adminField struct{ Name, Value string }

// adminSession is the signed-in user of a panel request.
type adminSession struct {
	user *platform.User
	csrf string
}

// adminSessionKey is the gin context key of the request's *adminSession.
const adminSessionKey = "controlplane.admin_session"

// adminRoutes registers the admin panel under /admin/.
func (s *Server) adminRoutes(r gin.IRouter) {
	g := r.Group("/admin")
	g.GET("/static/admin.css", adminpanel.Stylesheet)
	g.GET("/login", s.adminLoginForm)
	g.POST("/login", s.adminLogin)

	in := g.Group("", s.adminAuthenticate)
	in.POST("/logout", s.adminPage(s.adminLogout))
	in.GET("/", s.adminPage(s.adminTenants))
	in.GET("/tenants/:slug", s.adminPage(s.adminTenant))
	in.GET("/tenants/:slug/delete", s.adminPage(s.adminConfirmDelete))
	in.GET("/users", s.adminPage(s.adminUsers))
	in.POST("/users", s.adminPage(s.adminCreateUser))
	in.GET("/users/:id/deactivate", s.adminPage(s.adminConfirmDeactivate))
	in.POST("/users/:id/deactivate", s.adminPage(s.adminDeactivate))
	in.POST("/tenants/:slug/export", s.adminPage(s.adminExport))
	in.POST("/tenants/:slug/clone", s.adminPage(s.adminClone))
	in.POST("/tenants/:slug/move", s.adminPage(s.adminMove))
	in.POST("/tenants/:slug/move/abort", s.adminPage(s.adminAbortMove))
	for _, action := range []string{"suspend", "resume", "delete", "restore"} {
		in.POST("/tenants/:slug/"+action, s.adminPage(func(c *gin.Context, v *adminView) error {
			return s.adminTransition(c, v, action)
		}))
	}
}

// adminRender writes the named page with status; templates escape every value.
func (s *Server) adminRender(c *gin.Context, status int, name string, v *adminView) {
	adminpanel.Render(c, s.log, adminPages[name], status, v)
}

// adminError renders err as an error page: its message for domain errors, a generic
// one (and a log line) for the rest.
func (s *Server) adminError(c *gin.Context, v *adminView, err error) {
	status, msg := adminpanel.Problem(c, s.log, err)
	v.Title, v.Error = http.StatusText(status), msg
	s.adminRender(c, status, "error", v)
	c.Abort()
}

// adminPage adapts a panel handler: it receives the view filled with the session's user
// and CSRF token, and errors it returns become error pages.
func (s *Server) adminPage(f func(c *gin.Context, v *adminView) error) gin.HandlerFunc {
	return func(c *gin.Context) {
		sess := c.MustGet(adminSessionKey).(*adminSession)
		v := &adminView{User: sess.user, CSRF: sess.csrf}
		if err := f(c, v); err != nil {
			s.adminError(c, v, err)
		}
	}
}

// adminSessions are the panel's sessions.
func (s *Server) adminSessions() *adminpanel.Sessions {
	return adminpanel.New(adminpanel.Config{Manager: s.sessions, Audience: AdminUIAudience, Cookie: adminCookie})
}

// adminAuthenticate requires a session of a platform user that still exists and is
// active, redirecting to the login form otherwise, and checks the CSRF token of POSTs
// (403 on a mismatch).
func (s *Server) adminAuthenticate(c *gin.Context) {
	u, session, ok := adminpanel.Gate(c, s.adminSessions(), s.log, "/admin/login", maxBody,
		func(session *adminpanel.Session) (*platform.User, bool, error) {
			u, err := s.activeUser(c.Request.Context(), session.Subject)
			if errors.Is(err, apperr.ErrUnauthenticated) {
				return nil, false, nil
			}
			return u, err == nil, err
		},
		func(u *platform.User, csrf string, err error) { s.adminError(c, &adminView{User: u, CSRF: csrf}, err) })
	if !ok {
		return
	}
	c.Set(adminSessionKey, &adminSession{user: u, csrf: session.CSRF})
	c.Set(userKey, u)
	c.Next()
}

// adminLoginForm shows the login form, or the tenants to a user already signed in.
func (s *Server) adminLoginForm(c *gin.Context) {
	sessions := s.adminSessions()
	if _, err := sessions.Check(c); err == nil {
		c.Redirect(http.StatusSeeOther, "/admin/")
		return
	}
	s.adminRender(c, http.StatusOK, "login", &adminView{Title: "Log in", CSRF: sessions.LoginCSRF(c)})
}

// adminLogin checks the form's email and password, throttled like the API's login, and
// starts a session. Wrong credentials show the form again with one generic error.
func (s *Server) adminLogin(c *gin.Context) {
	c.Request.Body = http.MaxBytesReader(c.Writer, c.Request.Body, maxBody)
	email, pw := strings.TrimSpace(c.PostForm("email")), c.PostForm("password")
	v := &adminView{Title: "Log in", Email: email}
	sessions := s.adminSessions()
	// fail shows the form again, with a new login CSRF token and err's message; its
	// status is the error table's.
	fail := func(err error) {
		status, msg := adminpanel.Problem(c, s.log, err)
		v.Error = adminpanel.Sentence(msg)
		v.CSRF = sessions.LoginCSRF(c)
		s.adminRender(c, status, "login", v)
	}
	if !sessions.ValidLoginCSRF(c) {
		fail(adminpanel.ErrLoginCSRF)
		return
	}
	if email == "" || pw == "" {
		fail(apperr.New(apperr.Invalid, "invalid", "email and password are required"))
		return
	}
	u, err := s.checkPassword(c.Request.Context(), email, pw, c.ClientIP())
	if errors.Is(err, apperr.ErrUnauthenticated) || apperr.KindOf(err) == apperr.RateLimited {
		fail(err)
		return
	}
	if err != nil {
		s.adminError(c, v, err)
		return
	}
	if err := sessions.Start(c, u.ID, 0); err != nil {
		s.adminError(c, v, err)
		return
	}
	c.Redirect(http.StatusSeeOther, "/admin/")
}

// adminLogout ends the session in the store, so no copy of its cookie opens it again,
// and shows the login form.
func (s *Server) adminLogout(c *gin.Context, _ *adminView) error {
	if err := s.adminSessions().End(c); err != nil {
		return err
	}
	c.Redirect(http.StatusSeeOther, "/admin/login")
	return nil
}

// adminTenants lists tenants ordered by slug, filtered by ?status= and paged by ?cursor=.
func (s *Server) adminTenants(c *gin.Context, v *adminView) error {
	v.Title, v.Statuses = "Tenants", tenant.Statuses
	f := tenant.ListFilter{Limit: adminPageSize}
	if st := c.Query("status"); st != "" {
		parsed, err := tenant.ParseStatus(st)
		if err != nil {
			return err
		}
		f.Status, v.Status = parsed, parsed
	}
	if cur := c.Query("cursor"); cur != "" {
		b, err := base64.RawURLEncoding.DecodeString(cur)
		if err != nil || !cursorRE.Match(b) {
			return apperr.New(apperr.Invalid, "invalid_cursor", "this page link is not one the panel made")
		}
		f.After = string(b)
	}
	ts, next, err := s.store.List(c.Request.Context(), f)
	if err != nil {
		return err
	}
	v.Tenants = ts
	if next != "" {
		v.Next = base64.RawURLEncoding.EncodeToString([]byte(next))
	}
	s.adminRender(c, http.StatusOK, "tenants", v)
	return nil
}

// adminTenant shows a tenant with its domains, its recent audit events and the
// lifecycle actions its status allows.
func (s *Server) adminTenant(c *gin.Context, v *adminView) error {
	t, err := s.tenantBySlug(c)
	if err != nil {
		return err
	}
	return s.adminShowTenant(c, v, http.StatusOK, t)
}

// adminShowTenant renders t's page with status.
func (s *Server) adminShowTenant(c *gin.Context, v *adminView, status int, t *tenant.Tenant) error {
	ctx := c.Request.Context()
	domains, err := s.store.Domains(ctx, t.ID)
	if err != nil {
		return err
	}
	events, err := s.store.Events(ctx, t.ID)
	if err != nil {
		return err
	}
	for i := len(events) - 1; i >= 0 && len(v.Events) < recentEvents; i-- {
		v.Events = append(v.Events, events[i])
	}
	move, err := s.prov.MoveStatus(ctx, t.Slug)
	if err != nil {
		return err
	}
	v.Move = move
	v.Title, v.Tenant, v.Domains, v.Shards = t.Slug, t, domains, s.cfg.Shards
	switch t.Status {
	case tenant.StatusActive:
		v.Actions = []string{"suspend", "delete"}
	case tenant.StatusSuspended:
		v.Actions = []string{"resume", "delete"}
	case tenant.StatusFailed:
		v.Actions = []string{"delete"}
	case tenant.StatusPendingDeletion:
		v.Actions = []string{"restore"}
	}
	s.adminRender(c, status, "tenant", v)
	return nil
}

// adminTransition runs a lifecycle action with the user as actor and goes back to the
// tenant's page; a transition the tenant's status does not allow shows the page again
// with the reason.
func (s *Server) adminTransition(c *gin.Context, v *adminView, action string) error {
	slug := c.Param("slug")
	if tenant.ValidateSlug(slug) != nil {
		return apperr.New(apperr.NotFound, "tenant_not_found", "tenant not found")
	}
	ctx, who := c.Request.Context(), actor(c)
	var err error
	switch action {
	case "suspend":
		_, err = s.prov.Suspend(ctx, slug, who)
	case "resume":
		_, err = s.prov.Resume(ctx, slug, who)
	case "delete":
		_, err = s.prov.Delete(ctx, slug, who, s.cfg.DeleteGrace)
	case "restore":
		_, err = s.prov.Restore(ctx, slug, who)
	}
	return s.adminBackToTenant(c, v, slug, err)
}

// adminBackToTenant ends an action on the tenant slug that returned err: back to its
// page, or its page again with the reason when the action was refused (Conflict,
// Invalid); other errors are returned, for the error page.
func (s *Server) adminBackToTenant(c *gin.Context, v *adminView, slug string, err error) error {
	if apperr.KindOf(err) == apperr.Conflict || apperr.KindOf(err) == apperr.Invalid {
		t, gerr := s.store.Get(c.Request.Context(), slug)
		if gerr != nil {
			return gerr
		}
		status, _, msg := web.Status(err)
		v.Error = msg
		return s.adminShowTenant(c, v, status, t)
	}
	if err != nil {
		return err
	}
	c.Redirect(http.StatusSeeOther, "/admin/tenants/"+slug)
	return nil
}

// panelDetail is the audit detail of the panel's actions.
const panelDetail = "in the admin panel"

// adminExport downloads the tenant's archive, as GET /api/v1/tenants/{slug}/export does.
func (s *Server) adminExport(c *gin.Context, _ *adminView) error {
	return s.streamExport(c, panelDetail)
}

// adminConfirmed reports whether a form POST is the confirmation of its action; when
// it is not, it renders the confirmation page ask, whose form POSTs the same fields
// again with confirmed=yes.
func (s *Server) adminConfirmed(c *gin.Context, v *adminView, title string, ask *adminAsk) bool {
	if c.PostForm("confirmed") == "yes" {
		return true
	}
	v.Title, v.Ask = title, ask
	s.adminRender(c, http.StatusOK, "ask", v)
	return false
}

// adminClone creates a tenant with a copy of the tenant's data after a confirmation
// page, as POST /api/v1/tenants/{slug}/clone does, and shows the new tenant.
func (s *Server) adminClone(c *gin.Context, v *adminView) error {
	t, err := s.tenantBySlug(c)
	if err != nil {
		return err
	}
	slug := strings.TrimSpace(c.PostForm("slug"))
	if !s.adminConfirmed(c, v, "Clone tenant", &adminAsk{
		Question: fmt.Sprintf("Clone the tenant %s (%s) into a new tenant %s? Its users, blogs and settings are copied; the new tenant gets hosts of its own.", t.Name, t.Slug, slug),
		Action:   "/admin/tenants/" + t.Slug + "/clone", Button: "Yes, clone it", Back: "/admin/tenants/" + t.Slug,
		Fields: []adminField{{"slug", slug}},
	}) {
		return nil
	}
	clone, err := s.clone(c, cloneRequest{Slug: slug}, panelDetail)
	if err != nil {
		return s.adminBackToTenant(c, v, t.Slug, err)
	}
	c.Redirect(http.StatusSeeOther, "/admin/tenants/"+clone.Slug)
	return nil
}

// adminMove starts a move of the tenant after a confirmation page, as POST
// /api/v1/tenants/{slug}/move does, and goes back to the tenant's page, which shows the
// move's progress.
func (s *Server) adminMove(c *gin.Context, v *adminView) error {
	t, err := s.tenantBySlug(c)
	if err != nil {
		return err
	}
	body := moveRequest{Shard: strings.TrimSpace(c.PostForm("shard")), Isolation: c.PostForm("isolation"), Offline: c.PostForm("offline") != ""}
	how := "online: it keeps serving, and writes pause for a moment while it switches"
	offline := ""
	if body.Offline {
		how, offline = "offline: writes are refused until it is done", "on"
	}
	if !s.adminConfirmed(c, v, "Move tenant", &adminAsk{
		Question: fmt.Sprintf("Move the tenant %s (%s) to shard %s with %s isolation, %s?", t.Name, t.Slug,
			cmp.Or(body.Shard, t.Shard), cmp.Or(body.Isolation, string(t.Isolation)), how),
		Action: "/admin/tenants/" + t.Slug + "/move", Button: "Yes, move it", Back: "/admin/tenants/" + t.Slug,
		Fields: []adminField{{"shard", body.Shard}, {"isolation", body.Isolation}, {"offline", offline}},
	}) {
		return nil
	}
	_, err = s.startMove(c, body, panelDetail)
	return s.adminBackToTenant(c, v, t.Slug, err)
}

// adminAbortMove aborts the tenant's move in progress, as DELETE
// /api/v1/tenants/{slug}/move does, and goes back to the tenant's page.
func (s *Server) adminAbortMove(c *gin.Context, v *adminView) error {
	t, err := s.tenantBySlug(c)
	if err != nil {
		return err
	}
	_, err = s.stopMove(c)
	return s.adminBackToTenant(c, v, t.Slug, err)
}

// adminConfirmDelete asks whether to delete a tenant; its form POSTs the deletion.
func (s *Server) adminConfirmDelete(c *gin.Context, v *adminView) error {
	t, err := s.tenantBySlug(c)
	if err != nil {
		return err
	}
	v.Title = "Delete tenant"
	v.Confirm = &adminpanel.Confirm{
		Question: fmt.Sprintf("Delete the tenant %s (%s)? Its hosts stop answering at once; it can be restored until it is purged, %s after the deletion.", t.Name, t.Slug, graceText(s.cfg.DeleteGrace)),
		Action:   "/admin/tenants/" + t.Slug + "/delete", Button: "Yes, delete it",
		Back: "/admin/tenants/" + t.Slug, Danger: true,
	}
	s.adminRender(c, http.StatusOK, "confirm", v)
	return nil
}

// errSelfDeactivate refuses a platform user's deactivation of themselves.
var errSelfDeactivate = apperr.New(apperr.Conflict, "self_change", "You cannot deactivate yourself; ask another platform user.")

// adminUsers lists the platform users, with the form creating one.
func (s *Server) adminUsers(c *gin.Context, v *adminView) error {
	return s.adminShowUsers(c, v, http.StatusOK)
}

// adminShowUsers renders the platform users page with status.
func (s *Server) adminShowUsers(c *gin.Context, v *adminView, status int) error {
	us, err := s.users.List(c.Request.Context())
	if err != nil {
		return err
	}
	v.Title, v.Users = "Platform users", us
	s.adminRender(c, status, "users", v)
	return nil
}

// adminCreateUser creates a platform user by the platform's rules (platform.Users.Create)
// and goes back to the list; a refused one shows the list again with the reason.
func (s *Server) adminCreateUser(c *gin.Context, v *adminView) error {
	v.Email = strings.TrimSpace(c.PostForm("email"))
	_, err := s.users.Create(c.Request.Context(), v.Email, c.PostForm("password"))
	return s.adminBackToUsers(c, v, err)
}

// adminBackToUsers ends a change of platform users that returned err: back to the list,
// or the list again with the reason when the platform's rules refused the change
// (Conflict, Invalid); other errors are returned.
func (s *Server) adminBackToUsers(c *gin.Context, v *adminView, err error) error {
	if k := apperr.KindOf(err); k == apperr.Conflict || k == apperr.Invalid {
		status, msg := adminpanel.Refusal(err)
		v.Error = msg
		return s.adminShowUsers(c, v, status)
	}
	if err != nil {
		return err
	}
	c.Redirect(http.StatusSeeOther, "/admin/users")
	return nil
}

// adminPlatformUser returns the platform user the path's id names, refusing the
// signed-in user with errSelfDeactivate.
func (s *Server) adminPlatformUser(c *gin.Context, v *adminView) (*platform.User, error) {
	id := c.Param("id")
	if id == v.User.ID {
		return nil, errSelfDeactivate
	}
	return s.users.Get(c.Request.Context(), id)
}

// adminConfirmDeactivate asks whether to deactivate a platform user; its form POSTs the
// deactivation.
func (s *Server) adminConfirmDeactivate(c *gin.Context, v *adminView) error {
	u, err := s.adminPlatformUser(c, v)
	if errors.Is(err, errSelfDeactivate) {
		v.Error = err.Error()
		return s.adminShowUsers(c, v, http.StatusConflict)
	}
	if err != nil {
		return err
	}
	v.Title = "Deactivate platform user"
	v.Confirm = &adminpanel.Confirm{
		Question: "Deactivate " + u.Email + "? They can no longer log in to the platform.",
		Action:   "/admin/users/" + u.ID + "/deactivate", Button: "Yes, deactivate",
		Back: "/admin/users", Danger: true,
	}
	s.adminRender(c, http.StatusOK, "confirm", v)
	return nil
}

// adminDeactivate deactivates a platform user (never the signed-in one, never the last
// active one: platform.Users.Deactivate) and goes back to the list; a refusal shows the
// list with the reason.
func (s *Server) adminDeactivate(c *gin.Context, v *adminView) error {
	u, err := s.adminPlatformUser(c, v)
	if err == nil {
		_, err = s.users.Deactivate(c.Request.Context(), u.Email)
	}
	return s.adminBackToUsers(c, v, err)
}

// graceText says a deletion grace period as a person would: in days when it is whole
// days.
func graceText(d time.Duration) string {
	const day = 24 * time.Hour
	switch {
	case d == day:
		return "1 day"
	case d > day && d%day == 0:
		return fmt.Sprintf("%d days", d/day)
	}
	return d.String()
}
