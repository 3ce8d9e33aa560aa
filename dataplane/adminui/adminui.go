// Package adminui is the tenant admin panel the dataplane serves at /admin/ on each
// tenant's hosts: a server-rendered HTML face (no JavaScript) of the users and blogs
// endpoints for the tenant's admins, calling the same services as the JSON API with the
// signed-in admin as the caller. An admin logs in with email and password
// (throttled like the API's login; a user who is no admin is told only admins log in),
// lists and creates the tenant's users and deactivates, activates, promotes or demotes
// them by the API's rules (never oneself), lists, searches and deletes blogs, and
// posts notifications. Destructive actions (deactivating a user, deleting a blog) show
// a confirmation page first, whose POST form performs them.
//
// The session is a server-side session (package session, through package adminpanel) of
// audience Audience(tenant), whose token is the HttpOnly, SameSite=Strict cookie on
// /admin. Every request checks the user as stored now (exists, active, admin, the token
// version of the login), so a logout, a password change, a deactivation or a demotion
// refuses the very next request with the cookie, on every replica. Every form carries a
// CSRF token bound to the session, the login form a login CSRF token.
package adminui

import (
	"cmp"
	"embed"
	"html/template"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/tenantplane/tenantplane/apperr"
	"github.com/tenantplane/tenantplane/dataplane/auth"
	"github.com/tenantplane/tenantplane/dataplane/blogs"
	"github.com/tenantplane/tenantplane/dataplane/caller"
	"github.com/tenantplane/tenantplane/dataplane/notify"
	"github.com/tenantplane/tenantplane/dataplane/page"
	"github.com/tenantplane/tenantplane/dataplane/tenantdb"
	"github.com/tenantplane/tenantplane/session"
	"github.com/tenantplane/tenantplane/tenant"
	"github.com/tenantplane/tenantplane/web"
	"github.com/tenantplane/tenantplane/web/adminpanel"
)

// Audience is the session audience of t's panel: the tenant's id, so another tenant's
// panel refuses its sessions.
func Audience(t *tenant.Tenant) string { return t.ID }

// CookieName is the name of the panel's session cookie.
const CookieName = "tenantplane_tenant_admin"

// maxForm bounds the bodies of the panel's forms.
const maxForm = 16 << 10

//go:embed files
var files embed.FS

// pages are the panel's templates, each parsed with the layout.
var pages = func() map[string]*template.Template {
	funcs := template.FuncMap{
		"when": func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04 UTC") },
		"actions": func(me, u *auth.User) []string {
			if me != nil && me.ID == u.ID {
				return nil // no button deactivates or demotes the signed-in admin
			}
			a := []string{"deactivate"}
			if !u.IsActive {
				a[0] = "activate"
			}
			if u.IsAdmin {
				return append(a, "revoke-admin")
			}
			return append(a, "grant-admin")
		},
		"label": func(action string) string {
			s := strings.ReplaceAll(action, "-", " ")
			return strings.ToUpper(s[:1]) + s[1:]
		},
		"confirmed": func(action string) bool { return confirmedActions[action] },
	}
	out := map[string]*template.Template{}
	for _, name := range []string{"login", "users", "blogs", "confirm", "newuser", "notify", "error"} {
		out[name] = adminpanel.Parse(files, name, "files/layout.html", "files/"+name+".html", funcs)
	}
	return out
}()

// Config configures a Panel.
type Config struct {
	// Auth checks passwords and reads and changes users; required.
	Auth *auth.Service
	// Blogs lists, searches and deletes blogs; required.
	Blogs *blogs.Service
	// Notify posts notifications; required.
	Notify *notify.Service
	// Sessions keeps the panel sessions; required. Share its store between replicas.
	Sessions *session.Manager
	// Logger receives internal errors (default: discard).
	Logger *slog.Logger
}

// Panel serves the tenant admin panel.
type Panel struct {
	auth     *auth.Service
	blogs    *blogs.Service
	notify   *notify.Service
	sessions *session.Manager
	log      *slog.Logger
}

// New returns a Panel.
func New(cfg Config) *Panel {
	return &Panel{
		auth: cfg.Auth, blogs: cfg.Blogs, notify: cfg.Notify, sessions: cfg.Sessions,
		log: cmp.Or(cfg.Logger, slog.New(slog.DiscardHandler)),
	}
}

// view is what every panel template renders.
type view struct {
	Title  string
	Tenant string
	User   *auth.User
	CSRF   string
	Error  string
	Email  string // login form
	Users  []*auth.User
	Blogs  []*blogs.Blog
	Next   string
	// Query is the blog search's query; Results its results.
	Query   string
	Results []blogs.Result
	// Admin is the new-user form's admin flag; Notice a success message.
	Admin  bool
	Notice string
	// Subject and Body are the notification form's fields.
	Subject, Body string
	// Confirm is the question of a confirmation page.
	Confirm *adminpanel.Confirm
}

// confirmedActions are the user actions whose button leads to a confirmation page
// first.
var confirmedActions = map[string]bool{"deactivate": true}

// signedIn is the signed-in admin of a panel request.
type signedIn struct {
	user *auth.User
	csrf string
}

// sessionKey is the gin context key of the request's *signedIn.
const sessionKey = "tenantplane.dataplane.admin_session"

// Routes registers the panel on r, the /admin group, which must run the tenant
// middleware (tenantdb.WithScope) first.
func (p *Panel) Routes(r gin.IRouter) {
	r.GET("/static/admin.css", adminpanel.Stylesheet)
	r.GET("/login", p.loginForm)
	r.POST("/login", p.login)

	in := r.Group("", p.authenticate)
	in.POST("/logout", p.page(p.logout))
	in.GET("/", p.page(p.users))
	in.GET("/blogs", p.page(p.listBlogs))
	in.GET("/users/new", p.page(p.newUserForm))
	in.POST("/users", p.page(p.createUser))
	in.GET("/notifications", p.page(p.notifyForm))
	in.POST("/notifications", p.page(p.postNotification))
	in.GET("/blogs/:id/delete", p.page(p.confirmDeleteBlog))
	in.POST("/blogs/:id/delete", p.page(p.deleteBlog))
	in.GET("/users/:id/deactivate", p.page(p.confirmDeactivate))
	t, f := true, false
	for action, flags := range map[string][2]*bool{
		"deactivate": {nil, &f}, "activate": {nil, &t},
		"grant-admin": {&t, nil}, "revoke-admin": {&f, nil},
	} {
		in.POST("/users/:id/"+action, p.page(func(c *gin.Context, v *view) error {
			return p.setFlags(c, v, flags[0], flags[1])
		}))
	}
}

// tenantName is the name the panel shows for the request's tenant.
func tenantName(c *gin.Context) string {
	if sc, err := tenantdb.ScopeFrom(c.Request.Context()); err == nil {
		return cmp.Or(sc.Tenant.Name, sc.Tenant.Slug)
	}
	return ""
}

// render writes the named page with status; templates escape every value.
func (p *Panel) render(c *gin.Context, status int, name string, v *view) {
	v.Tenant = tenantName(c)
	adminpanel.Render(c, p.log, pages[name], status, v)
}

// fail renders err as an error page: its message for domain errors, a generic one (and
// a log line) for the rest.
func (p *Panel) fail(c *gin.Context, v *view, err error) {
	status, msg := adminpanel.Problem(c, p.log, err)
	v.Title, v.Error = http.StatusText(status), msg
	p.render(c, status, "error", v)
	c.Abort()
}

// page adapts a panel handler: it receives the view filled with the session's user and
// CSRF token, and errors it returns become error pages.
func (p *Panel) page(f func(c *gin.Context, v *view) error) gin.HandlerFunc {
	return func(c *gin.Context) {
		sess := c.MustGet(sessionKey).(*signedIn)
		v := &view{User: sess.user, CSRF: sess.csrf}
		if err := f(c, v); err != nil {
			p.fail(c, v, err)
		}
	}
}

// panelSessions are the sessions of t's panel.
func (p *Panel) panelSessions(t *tenant.Tenant) *adminpanel.Sessions {
	return adminpanel.New(adminpanel.Config{Manager: p.sessions, Audience: Audience(t), Cookie: CookieName})
}

// authenticate requires a session of this tenant whose user still exists, is an active
// admin and has the token version of the login, redirecting to the login form
// otherwise, and checks the CSRF token of POSTs (403 on a mismatch).
func (p *Panel) authenticate(c *gin.Context) {
	ctx := c.Request.Context()
	sc, err := tenantdb.ScopeFrom(ctx)
	if err != nil {
		p.fail(c, &view{}, err)
		return
	}
	u, cur, ok := adminpanel.Gate(c, p.panelSessions(sc.Tenant), p.log, "/admin/login", maxForm,
		func(cur *adminpanel.Session) (*auth.User, bool, error) {
			id, err := strconv.ParseInt(cur.Subject, 10, 64)
			if err != nil || id <= 0 {
				return nil, false, nil
			}
			u, err := p.auth.UserByID(ctx, id)
			if apperr.KindOf(err) == apperr.NotFound {
				return nil, false, nil
			}
			if err != nil {
				return nil, false, err
			}
			return u, u.IsActive && u.IsAdmin && u.TokenVersion() == cur.Version, nil
		},
		func(u *auth.User, csrf string, err error) { p.fail(c, &view{User: u, CSRF: csrf}, err) })
	if !ok {
		return
	}
	c.Set(sessionKey, &signedIn{user: u, csrf: cur.CSRF})
	// The signed-in admin is the caller of every service the panel calls.
	c.Request = c.Request.WithContext(caller.With(ctx, &caller.Caller{ID: u.ID, Email: u.Email, Admin: u.IsAdmin, Expires: cur.Expires}))
	c.Next()
}

// loginForm shows the login form, or the users to an admin already signed in.
func (p *Panel) loginForm(c *gin.Context) {
	sc, err := tenantdb.ScopeFrom(c.Request.Context())
	if err != nil {
		p.fail(c, &view{}, err)
		return
	}
	sessions := p.panelSessions(sc.Tenant)
	if _, err := sessions.Check(c); err == nil {
		c.Redirect(http.StatusSeeOther, "/admin/")
		return
	}
	p.render(c, http.StatusOK, "login", &view{Title: "Log in", CSRF: sessions.LoginCSRF(c)})
}

// errNotAdminLogin is what a refused login shows: unknown email, wrong password or
// inactive user.
var errNotAdminLogin = apperr.New(apperr.Unauthenticated, "invalid_credentials", "Invalid email or password.")

// errAdminsOnly is what a user who is no admin sees after giving the right password:
// only the tenant's admins log in to the panel.
var errAdminsOnly = apperr.New(apperr.Unauthenticated, "admin_required", "Only the tenant's admins can log in to this panel; use the app to sign in.")

// errSelf refuses a change that would deactivate or demote the signed-in admin.
var errSelf = apperr.New(apperr.Conflict, "self_change", "You cannot deactivate or demote yourself; ask another admin.")

// errLoginRequired is the answer to a login form sent incomplete.
var errLoginRequired = apperr.New(apperr.Invalid, "invalid", "Email and password are required.")

// login checks the form's email and password with the API's check and throttle, lets
// only active admins in and starts a session. Refused logins show the form again with
// one generic error.
func (p *Panel) login(c *gin.Context) {
	c.Request.Body = http.MaxBytesReader(c.Writer, c.Request.Body, maxForm)
	email, pw := strings.TrimSpace(c.PostForm("email")), c.PostForm("password")
	v := &view{Title: "Log in", Email: email}
	ctx := c.Request.Context()
	sc, err := tenantdb.ScopeFrom(ctx)
	if err != nil {
		p.fail(c, v, err)
		return
	}
	sessions := p.panelSessions(sc.Tenant)
	// refuse shows the form again, with a new login CSRF token, err's message and
	// status (web.Fail).
	refuse := func(err error) {
		var status int
		status, _, v.Error = web.Fail(c, p.log, err)
		v.CSRF = sessions.LoginCSRF(c)
		p.render(c, status, "login", v)
	}
	if !sessions.ValidLoginCSRF(c) {
		refuse(adminpanel.ErrLoginCSRF)
		return
	}
	if email == "" || pw == "" {
		refuse(errLoginRequired)
		return
	}
	u, err := p.auth.CheckPassword(ctx, email, pw, c.ClientIP())
	switch {
	case apperr.KindOf(err) == apperr.Unauthenticated:
		refuse(errNotAdminLogin)
		return
	case err == nil && !u.IsAdmin:
		refuse(errAdminsOnly)
		return
	case apperr.KindOf(err) == apperr.RateLimited:
		refuse(err)
		return
	case err != nil:
		p.fail(c, v, err)
		return
	}
	if err := sessions.Start(c, strconv.FormatInt(u.ID, 10), u.TokenVersion()); err != nil {
		p.fail(c, v, err)
		return
	}
	c.Redirect(http.StatusSeeOther, "/admin/")
}

// logout ends the session in the store, so no copy of its cookie opens it again, and
// shows the login form.
func (p *Panel) logout(c *gin.Context, _ *view) error {
	sc, err := tenantdb.ScopeFrom(c.Request.Context()) // set, or authenticate would have failed
	if err != nil {
		return err
	}
	if err := p.panelSessions(sc.Tenant).End(c); err != nil {
		return err
	}
	c.Redirect(http.StatusSeeOther, "/admin/login")
	return nil
}

// users lists the tenant's users by id, paged by ?cursor= as the API pages them.
func (p *Panel) users(c *gin.Context, v *view) error {
	return p.showUsers(c, v, http.StatusOK)
}

// showUsers renders the users page with status.
func (p *Panel) showUsers(c *gin.Context, v *view, status int) error {
	limit, err := page.QueryLimit(c.GetQuery)
	if err != nil {
		return err
	}
	us, err := p.auth.ListUsers(c.Request.Context(), auth.ListFilter{Cursor: c.Query("cursor"), Limit: limit})
	if err != nil {
		return err
	}
	v.Title, v.Users, v.Next = "Users", us.Items, us.Next
	p.render(c, status, "users", v)
	return nil
}

// setFlags changes a user's admin or active flag by the API's rules and goes back to the
// users; a change the rules refuse (the last active admin) shows the users again with
// the reason.
func (p *Panel) setFlags(c *gin.Context, v *view, admin, active *bool) error {
	id, err := web.PathID(c, "id", "user not found")
	if err != nil {
		return err
	}
	if id == v.User.ID && ((admin != nil && !*admin) || (active != nil && !*active)) {
		v.Error = errSelf.Error()
		return p.showUsers(c, v, http.StatusConflict)
	}
	_, err = p.auth.UpdateUser(c.Request.Context(), id, auth.UserChange{IsAdmin: admin, IsActive: active})
	if k := apperr.KindOf(err); k == apperr.Conflict || k == apperr.Invalid {
		status, _, msg := web.Status(err)
		v.Error = msg
		return p.showUsers(c, v, status)
	}
	if err != nil {
		return err
	}
	c.Redirect(http.StatusSeeOther, "/admin/")
	return nil
}

// listBlogs lists the tenant's blogs newest first, paged by ?cursor= as the API pages
// them, or with ?q= the blogs the API's search finds.
func (p *Panel) listBlogs(c *gin.Context, v *view) error {
	if q := strings.TrimSpace(c.Query("q")); q != "" {
		v.Title, v.Query = "Blogs", q
		rs, err := p.blogs.Search(c.Request.Context(), q, 0)
		if k := apperr.KindOf(err); k == apperr.Invalid || k == apperr.Unavailable {
			status, msg := adminpanel.Refusal(err)
			v.Error = msg
			p.render(c, status, "blogs", v)
			return nil
		}
		if err != nil {
			return err
		}
		v.Results = rs
		p.render(c, http.StatusOK, "blogs", v)
		return nil
	}
	limit, err := page.QueryLimit(c.GetQuery)
	if err != nil {
		return err
	}
	bs, err := p.blogs.List(c.Request.Context(), blogs.Filter{Cursor: c.Query("cursor"), Limit: limit})
	if err != nil {
		return err
	}
	v.Title, v.Blogs, v.Next = "Blogs", bs.Items, bs.Next
	p.render(c, http.StatusOK, "blogs", v)
	return nil
}

// deleteBlog deletes a blog and goes back to the blogs.
func (p *Panel) deleteBlog(c *gin.Context, _ *view) error {
	id, err := web.PathID(c, "id", "blog not found")
	if err != nil {
		return err
	}
	if err := p.blogs.Delete(c.Request.Context(), id); err != nil {
		return err
	}
	c.Redirect(http.StatusSeeOther, "/admin/blogs")
	return nil
}

// confirmDeleteBlog asks whether to delete a blog; its form POSTs the deletion.
func (p *Panel) confirmDeleteBlog(c *gin.Context, v *view) error {
	id, err := web.PathID(c, "id", "blog not found")
	if err != nil {
		return err
	}
	b, err := p.blogs.Get(c.Request.Context(), id)
	if err != nil {
		return err
	}
	v.Title = "Delete blog"
	v.Confirm = &adminpanel.Confirm{
		Question: "Delete the blog “" + b.Title + "”? This cannot be undone.",
		Action:   "/admin/blogs/" + strconv.FormatInt(id, 10) + "/delete", Button: "Yes, delete it",
		Back: "/admin/blogs", Danger: true,
	}
	p.render(c, http.StatusOK, "confirm", v)
	return nil
}

// confirmDeactivate asks whether to deactivate a user; its form POSTs the
// deactivation.
func (p *Panel) confirmDeactivate(c *gin.Context, v *view) error {
	id, err := web.PathID(c, "id", "user not found")
	if err != nil {
		return err
	}
	u, err := p.auth.GetUser(c.Request.Context(), id)
	if err != nil {
		return err
	}
	if u.ID == v.User.ID {
		v.Error = errSelf.Error()
		return p.showUsers(c, v, http.StatusConflict)
	}
	v.Title = "Deactivate user"
	v.Confirm = &adminpanel.Confirm{
		Question: "Deactivate " + u.Email + "? They are signed out everywhere and cannot log in until activated again.",
		Action:   "/admin/users/" + strconv.FormatInt(id, 10) + "/deactivate", Button: "Yes, deactivate",
		Back: "/admin/", Danger: true,
	}
	p.render(c, http.StatusOK, "confirm", v)
	return nil
}

// newUserForm shows the form creating a user.
func (p *Panel) newUserForm(c *gin.Context, v *view) error {
	v.Title = "Add user"
	p.render(c, http.StatusOK, "newuser", v)
	return nil
}

// createUser creates a user by the API's rules (auth.Service.CreateUser) and goes back
// to the users; a refused one (a bad email or password, a taken email) shows the form
// again with the reason.
func (p *Panel) createUser(c *gin.Context, v *view) error {
	v.Title = "Add user"
	v.Email, v.Admin = strings.TrimSpace(c.PostForm("email")), c.PostForm("admin") == "on"
	_, err := p.auth.CreateUser(c.Request.Context(), auth.NewUser{Email: v.Email, Password: c.PostForm("password"), IsAdmin: v.Admin})
	if k := apperr.KindOf(err); k == apperr.Conflict || k == apperr.Invalid {
		status, msg := adminpanel.Refusal(err)
		v.Error = msg
		p.render(c, status, "newuser", v)
		return nil
	}
	if err != nil {
		return err
	}
	c.Redirect(http.StatusSeeOther, "/admin/")
	return nil
}

// notifyForm shows the form posting a notification.
func (p *Panel) notifyForm(c *gin.Context, v *view) error {
	v.Title = "Send a notification"
	p.render(c, http.StatusOK, "notify", v)
	return nil
}

// postNotification posts a notification by the API's rules (notify.Service.Post: stored
// and fanned out to the tenant's feeds) and shows the form again with a notice, or
// with the reason it was refused.
func (p *Panel) postNotification(c *gin.Context, v *view) error {
	v.Title = "Send a notification"
	v.Subject, v.Body = c.PostForm("title"), c.PostForm("body")
	m, err := p.notify.Post(c.Request.Context(), v.Subject, v.Body)
	if apperr.KindOf(err) == apperr.Invalid {
		status, msg := adminpanel.Refusal(err)
		v.Error = msg
		p.render(c, status, "notify", v)
		return nil
	}
	if err != nil {
		return err
	}
	v.Subject, v.Body, v.Notice = "", "", "Notification “"+m.Title+"” sent."
	p.render(c, http.StatusOK, "notify", v)
	return nil
}
