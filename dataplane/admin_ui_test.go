package dataplane

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/tenantplane/tenantplane/dataplane/adminui"
)

// panel is a browser-like client of one tenant's admin panel: it keeps the session
// cookie and does not follow redirects, so that tests see them.
type panel struct {
	e      *env
	host   string
	cookie string
	// nonce is the login CSRF nonce cookie.
	nonce string
	// h serves the requests (default e.h): another replica's handler.
	h http.Handler
}

// panelAnswer is an answer of the panel.
type panelAnswer struct {
	status     int
	location   string
	body       string
	setsCookie bool
}

func (e *env) panel(slug string) *panel { return &panel{e: e, host: host(slug)} }

// do sends a GET, or a POST of form when form is not nil. A login form without a csrf
// field gets the one of a login page fetched first, as a browser's would.
func (p *panel) do(path string, form url.Values) panelAnswer {
	p.e.t.Helper()
	if path == "/admin/login" && form != nil && !form.Has("csrf") {
		form.Set("csrf", p.do("/admin/login", nil).csrf(p.e.t))
	}
	method, body := http.MethodGet, ""
	if form != nil {
		method, body = http.MethodPost, form.Encode()
	}
	r := httptest.NewRequest(method, path, strings.NewReader(body))
	r.Host = p.host
	if form != nil {
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if p.cookie != "" {
		r.AddCookie(&http.Cookie{Name: adminui.CookieName, Value: p.cookie})
	}
	if p.nonce != "" {
		r.AddCookie(&http.Cookie{Name: adminui.CookieName + "_login", Value: p.nonce})
	}
	w := httptest.NewRecorder()
	h := p.h
	if h == nil {
		h = p.e.h
	}
	h.ServeHTTP(w, r)
	a := panelAnswer{status: w.Code, location: w.Header().Get("Location"), body: w.Body.String()}
	for _, c := range w.Result().Cookies() {
		switch c.Name {
		case adminui.CookieName:
			a.setsCookie = true
			p.cookie = c.Value
			if c.MaxAge < 0 {
				p.cookie = ""
			}
		case adminui.CookieName + "_login":
			p.nonce = c.Value
			if c.MaxAge < 0 {
				p.nonce = ""
			}
		}
	}
	return a
}

// login logs in with email and password and fails the test unless it is let in.
func (p *panel) login(email, pw string) {
	p.e.t.Helper()
	a := p.do("/admin/login", url.Values{"email": {email}, "password": {pw}})
	if a.status != http.StatusSeeOther || a.location != "/admin/" || p.cookie == "" {
		p.e.t.Fatalf("panel login as %s: %d to %q; %s", email, a.status, a.location, a.body)
	}
}

// loginAdmin logs in as the tenant's admin and returns the users page.
func (p *panel) loginAdmin(slug string) panelAnswer {
	p.e.t.Helper()
	p.login("admin@"+slug+".example", adminPassword)
	return p.mustGet("/admin/")
}

// mustGet fails the test unless GET path answers 200.
func (p *panel) mustGet(path string) panelAnswer {
	p.e.t.Helper()
	a := p.do(path, nil)
	if a.status != http.StatusOK {
		p.e.t.Fatalf("GET %s: %d to %q; %s", path, a.status, a.location, a.body)
	}
	return a
}

var panelCSRF = regexp.MustCompile(`name="csrf" value="([0-9a-f]+)"`)

// csrf returns the CSRF token of the forms on the page.
func (a panelAnswer) csrf(t testing.TB) string {
	t.Helper()
	m := panelCSRF.FindStringSubmatch(a.body)
	if m == nil {
		t.Fatalf("no CSRF token on the page: %d %s", a.status, a.body)
	}
	return m[1]
}

func TestAdminUIRedirectsWithoutSession(t *testing.T) {
	t.Parallel()
	e := setup(t, nil)
	e.newTenants("acme")
	admin, _ := e.loginAdmin("acme")
	p := e.panel("acme")
	for _, path := range []string{"/admin/", "/admin/blogs"} {
		if a := p.do(path, nil); a.status != http.StatusSeeOther || a.location != "/admin/login" {
			t.Errorf("GET %s: %d to %q, want 303 to /admin/login", path, a.status, a.location)
		}
	}
	if a := p.do("/admin/users/1/deactivate", url.Values{"csrf": {"x"}}); a.status != http.StatusSeeOther || a.location != "/admin/login" {
		t.Errorf("POST deactivate: %d to %q, want 303 to /admin/login", a.status, a.location)
	}
	// An API access token is no session.
	p.cookie = admin
	if a := p.do("/admin/", nil); a.status != http.StatusSeeOther || a.location != "/admin/login" {
		t.Errorf("GET /admin/ with an API token: %d to %q, want 303 to /admin/login", a.status, a.location)
	}
	e.mustDo(req{method: "GET", path: "/api/v1/users/me", host: host("acme"), token: admin}, http.StatusOK)
	if a := p.do("/admin/login", nil); a.status != http.StatusOK || !strings.Contains(a.body, `id="email"`) {
		t.Errorf("login form: %d %s", a.status, a.body)
	}
}

func TestAdminUILoginOnlyAdmins(t *testing.T) {
	t.Parallel()
	e := setup(t, nil)
	e.newTenants("acme")
	admin, _ := e.loginAdmin("acme")
	e.createUser("acme", admin, "writer@acme.example")
	p := e.panel("acme")
	// A user who is no admin, with the right password, is told only admins log in.
	if a := p.do("/admin/login", url.Values{"email": {"writer@acme.example"}, "password": {"user password 1"}}); a.status != http.StatusUnauthorized ||
		!strings.Contains(a.body, "Only the tenant&#39;s admins can log in to this panel") || a.setsCookie {
		t.Errorf("login as a user who is no admin: %d, cookie %v; %s", a.status, a.setsCookie, a.body)
	}
	var bodies []string
	for _, creds := range [][2]string{
		{"admin@acme.example", "wrong password 1"},
		{"nobody@acme.example", adminPassword},
	} {
		a := p.do("/admin/login", url.Values{"email": {creds[0]}, "password": {creds[1]}})
		if a.status != http.StatusUnauthorized || !strings.Contains(a.body, "Invalid email or password.") || a.setsCookie {
			t.Errorf("login as %s: %d, cookie %v; %s", creds[0], a.status, a.setsCookie, a.body)
		}
		// Each form has its own login CSRF token.
		bodies = append(bodies, panelCSRF.ReplaceAllString(strings.ReplaceAll(a.body, creds[0], ""), ""))
	}
	if bodies[0] != bodies[1] {
		t.Error("a wrong password and an unknown email get different pages")
	}
	page := p.loginAdmin("acme")
	if !strings.Contains(page.body, "writer@acme.example") || !strings.Contains(page.body, "admin@acme.example") {
		t.Errorf("users page does not list the users: %s", page.body)
	}
	// The panel's session token is refused by the API.
	e.mustDo(req{method: "GET", path: "/api/v1/users/me", host: host("acme"), token: p.cookie}, http.StatusUnauthorized)
	// Logging out ends the session.
	if a := p.do("/admin/logout", url.Values{"csrf": {page.csrf(t)}}); a.status != http.StatusSeeOther || a.location != "/admin/login" || p.cookie != "" {
		t.Errorf("logout: %d to %q, cookie %q", a.status, a.location, p.cookie)
	}
}

func TestAdminUIRefusesPostsWithoutCSRF(t *testing.T) {
	t.Parallel()
	e := setup(t, nil)
	e.newTenants("acme")
	admin, _ := e.loginAdmin("acme")
	id := e.createUser("acme", admin, "writer@acme.example")
	userTok, _ := e.login("acme", "writer@acme.example", "user password 1")
	p := e.panel("acme")
	p.loginAdmin("acme")
	for _, form := range []url.Values{{}, {"csrf": {strings.Repeat("0", 64)}}} {
		a := p.do(fmt.Sprintf("/admin/users/%d/deactivate", id), form)
		if a.status != http.StatusForbidden || !strings.Contains(a.body, "the form expired") {
			t.Errorf("POST deactivate with csrf %q: %d %s", form.Get("csrf"), a.status, a.body)
		}
	}
	e.mustDo(req{method: "GET", path: "/api/v1/users/me", host: host("acme"), token: userTok}, http.StatusOK)
}

func TestAdminUIEscapesAndDeletesBlogs(t *testing.T) {
	t.Parallel()
	e := setup(t, nil)
	e.newTenants("acme")
	admin, _ := e.loginAdmin("acme")
	e.createUser("acme", admin, "o'neil&co@acme.example")
	blog := e.createBlog("acme", admin, `<script>alert("x")</script>`)
	p := e.panel("acme")
	users := p.loginAdmin("acme")
	if strings.Contains(users.body, "o'neil&co") || !strings.Contains(users.body, "o&#39;neil&amp;co@acme.example") {
		t.Errorf("email not escaped: %s", users.body)
	}
	blogs := p.mustGet("/admin/blogs")
	if strings.Contains(blogs.body, "<script>") || !strings.Contains(blogs.body, "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;") {
		t.Errorf("blog title not escaped: %s", blogs.body)
	}
	if !strings.Contains(blogs.body, "admin@acme.example") {
		t.Errorf("blogs page does not name the author: %s", blogs.body)
	}
	a := p.do(fmt.Sprintf("/admin/blogs/%d/delete", blog), url.Values{"csrf": {blogs.csrf(t)}})
	if a.status != http.StatusSeeOther || a.location != "/admin/blogs" {
		t.Fatalf("delete blog: %d to %q; %s", a.status, a.location, a.body)
	}
	e.mustDo(req{method: "GET", path: fmt.Sprintf("/api/v1/blogs/%d", blog), host: host("acme"), token: admin}, http.StatusNotFound)
	if a := p.do("/admin/blogs/999999/delete", url.Values{"csrf": {blogs.csrf(t)}}); a.status != http.StatusNotFound {
		t.Errorf("delete unknown blog: %d %s", a.status, a.body)
	}
}

func TestAdminUISessionIsTenantBound(t *testing.T) {
	t.Parallel()
	e := setup(t, nil)
	e.newTenants("acme", "globex")
	p := e.panel("acme")
	p.loginAdmin("acme")
	at := e.panel("globex")
	at.cookie = p.cookie
	for _, path := range []string{"/admin/", "/admin/blogs"} {
		if a := at.do(path, nil); a.status != http.StatusSeeOther || a.location != "/admin/login" {
			t.Errorf("acme's session at globex GET %s: %d to %q, want 303 to /admin/login", path, a.status, a.location)
		}
	}
}

func TestAdminUIDeactivateEndsAPIAccess(t *testing.T) {
	t.Parallel()
	e := setup(t, nil)
	e.newTenants("acme")
	admin, _ := e.loginAdmin("acme")
	id := e.createUser("acme", admin, "writer@acme.example")
	userTok, _ := e.login("acme", "writer@acme.example", "user password 1")
	e.mustDo(req{method: "GET", path: "/api/v1/users/me", host: host("acme"), token: userTok}, http.StatusOK)

	p := e.panel("acme")
	page := p.loginAdmin("acme")
	a := p.do(fmt.Sprintf("/admin/users/%d/deactivate", id), url.Values{"csrf": {page.csrf(t)}})
	if a.status != http.StatusSeeOther || a.location != "/admin/" {
		t.Fatalf("deactivate: %d to %q; %s", a.status, a.location, a.body)
	}
	e.mustDo(req{method: "GET", path: "/api/v1/users/me", host: host("acme"), token: userTok}, http.StatusUnauthorized)
	page = p.mustGet("/admin/")
	if !strings.Contains(page.body, fmt.Sprintf(`<td id="active-%d" class="status-inactive">inactive</td>`, id)) {
		t.Errorf("users page does not show the user inactive: %s", page.body)
	}

	// Promoted, the user may log in to the panel once active again; demoted, their
	// session ends on the next request.
	csrf := page.csrf(t)
	for _, action := range []string{"activate", "grant-admin"} {
		if a := p.do(fmt.Sprintf("/admin/users/%d/%s", id, action), url.Values{"csrf": {csrf}}); a.status != http.StatusSeeOther {
			t.Fatalf("%s: %d %s", action, a.status, a.body)
		}
	}
	writer := e.panel("acme")
	writer.login("writer@acme.example", "user password 1")
	writer.mustGet("/admin/")
	if a := p.do(fmt.Sprintf("/admin/users/%d/revoke-admin", id), url.Values{"csrf": {csrf}}); a.status != http.StatusSeeOther {
		t.Fatalf("revoke-admin: %d %s", a.status, a.body)
	}
	if a := writer.do("/admin/", nil); a.status != http.StatusSeeOther || a.location != "/admin/login" {
		t.Errorf("a demoted admin's session: %d to %q, want 303 to /admin/login", a.status, a.location)
	}
}

func TestAdminUIKeepsLastAdmin(t *testing.T) {
	t.Parallel()
	e := setup(t, nil)
	e.newTenants("acme")
	admin, _ := e.loginAdmin("acme")
	me := int64(e.mustDo(req{method: "GET", path: "/api/v1/users/me", host: host("acme"), token: admin}, http.StatusOK).json(t)["id"].(float64))
	p := e.panel("acme")
	page := p.loginAdmin("acme")
	for _, action := range []string{"deactivate", "revoke-admin"} {
		a := p.do(fmt.Sprintf("/admin/users/%d/%s", me, action), url.Values{"csrf": {page.csrf(t)}})
		if a.status != http.StatusConflict || !strings.Contains(a.body, "You cannot deactivate or demote yourself") || !strings.Contains(a.body, `id="users"`) {
			t.Errorf("%s the last admin, oneself: %d %s", action, a.status, a.body)
		}
	}
	// The admin's own row has no buttons, and its confirmation page is refused too.
	if strings.Contains(page.body, fmt.Sprintf(`id="deactivate-%d"`, me)) || strings.Contains(page.body, fmt.Sprintf(`id="revoke-admin-%d"`, me)) {
		t.Errorf("the users page offers to deactivate or demote oneself: %s", page.body)
	}
	if a := p.do(fmt.Sprintf("/admin/users/%d/deactivate", me), nil); a.status != http.StatusConflict || !strings.Contains(a.body, "You cannot deactivate or demote yourself") {
		t.Errorf("confirming to deactivate oneself: %d %s", a.status, a.body)
	}
	e.mustDo(req{method: "GET", path: "/api/v1/users/me", host: host("acme"), token: admin}, http.StatusOK)
	p.mustGet("/admin/")
	if a := p.do("/admin/users/999999/deactivate", url.Values{"csrf": {page.csrf(t)}}); a.status != http.StatusNotFound {
		t.Errorf("deactivate unknown user: %d %s", a.status, a.body)
	}
}

func TestAdminUIPagesUsers(t *testing.T) {
	t.Parallel()
	e := setup(t, nil)
	e.newTenants("acme")
	admin, _ := e.loginAdmin("acme")
	e.createUser("acme", admin, "writer@acme.example")
	p := e.panel("acme")
	p.loginAdmin("acme")
	first := p.mustGet("/admin/?limit=1")
	m := regexp.MustCompile(`id="next" href="/admin/\?cursor=([^"]+)"`).FindStringSubmatch(first.body)
	if m == nil || strings.Contains(first.body, "writer@acme.example") {
		t.Fatalf("first page of one: no next link or too many users: %s", first.body)
	}
	second := p.mustGet("/admin/?limit=1&cursor=" + m[1])
	if !strings.Contains(second.body, "writer@acme.example") {
		t.Errorf("second page does not list the second user: %s", second.body)
	}
}

func TestAdminUIConfirmsDestructiveActions(t *testing.T) {
	t.Parallel()
	e := setup(t, nil)
	e.newTenants("acme")
	admin, _ := e.loginAdmin("acme")
	id := e.createUser("acme", admin, "writer@acme.example")
	userTok, _ := e.login("acme", "writer@acme.example", "user password 1")
	blog := e.createBlog("acme", admin, "Hello <world>")
	p := e.panel("acme")
	users := p.loginAdmin("acme")
	// The list's buttons lead to confirmation pages (GETs, which change nothing).
	if !strings.Contains(users.body, fmt.Sprintf(`<form method="get" action="/admin/users/%d/deactivate"`, id)) {
		t.Errorf("Deactivate does not ask first: %s", users.body)
	}
	a := p.mustGet(fmt.Sprintf("/admin/users/%d/deactivate", id))
	if !strings.Contains(a.body, "Deactivate writer@acme.example?") || !strings.Contains(a.body, fmt.Sprintf(`<form method="post" action="/admin/users/%d/deactivate"`, id)) {
		t.Errorf("deactivation confirmation: %s", a.body)
	}
	e.mustDo(req{method: "GET", path: "/api/v1/users/me", host: host("acme"), token: userTok}, http.StatusOK)
	if r := p.do(fmt.Sprintf("/admin/users/%d/deactivate", id), url.Values{"csrf": {a.csrf(t)}}); r.status != http.StatusSeeOther {
		t.Fatalf("confirming the deactivation: %d %s", r.status, r.body)
	}
	e.mustDo(req{method: "GET", path: "/api/v1/users/me", host: host("acme"), token: userTok}, http.StatusUnauthorized)

	a = p.mustGet(fmt.Sprintf("/admin/blogs/%d/delete", blog))
	if !strings.Contains(a.body, "Delete the blog “Hello &lt;world&gt;”?") || !strings.Contains(a.body, fmt.Sprintf(`<form method="post" action="/admin/blogs/%d/delete"`, blog)) {
		t.Errorf("blog deletion confirmation: %s", a.body)
	}
	e.mustDo(req{method: "GET", path: fmt.Sprintf("/api/v1/blogs/%d", blog), host: host("acme"), token: admin}, http.StatusOK)
	if r := p.do(fmt.Sprintf("/admin/blogs/%d/delete", blog), url.Values{"csrf": {a.csrf(t)}}); r.status != http.StatusSeeOther {
		t.Fatalf("confirming the deletion: %d %s", r.status, r.body)
	}
	e.mustDo(req{method: "GET", path: fmt.Sprintf("/api/v1/blogs/%d", blog), host: host("acme"), token: admin}, http.StatusNotFound)
	if r := p.do("/admin/blogs/999999/delete", nil); r.status != http.StatusNotFound {
		t.Errorf("confirming to delete an unknown blog: %d %s", r.status, r.body)
	}
}

func TestAdminUICreatesUsersAndPostsNotifications(t *testing.T) {
	t.Parallel()
	e := setup(t, nil)
	e.newTenants("acme")
	admin, _ := e.loginAdmin("acme")
	p := e.panel("acme")
	users := p.loginAdmin("acme")
	form := p.mustGet("/admin/users/new")
	if !strings.Contains(form.body, `id="new-user"`) {
		t.Fatalf("new-user form: %s", form.body)
	}
	a := p.do("/admin/users", url.Values{"csrf": {users.csrf(t)}, "email": {"editor@acme.example"}, "password": {"editor password 1"}, "admin": {"on"}})
	if a.status != http.StatusSeeOther || a.location != "/admin/" {
		t.Fatalf("creating a user: %d to %q; %s", a.status, a.location, a.body)
	}
	tok, _ := e.login("acme", "editor@acme.example", "editor password 1")
	if me := e.mustDo(req{method: "GET", path: "/api/v1/users/me", host: host("acme"), token: tok}, http.StatusOK).json(t); me["is_admin"] != true {
		t.Errorf("the created user: %v", me)
	}
	// The API's rules refuse a taken email, and the form shows why.
	a = p.do("/admin/users", url.Values{"csrf": {users.csrf(t)}, "email": {"editor@acme.example"}, "password": {"editor password 1"}})
	if a.status != http.StatusConflict || !strings.Contains(a.body, `id="error"`) || !strings.Contains(a.body, `value="editor@acme.example"`) {
		t.Errorf("creating a taken email: %d %s", a.status, a.body)
	}

	a = p.do("/admin/notifications", url.Values{"csrf": {users.csrf(t)}, "title": {"Maintenance"}, "body": {"tonight at ten"}})
	if a.status != http.StatusOK || !strings.Contains(a.body, "Notification “Maintenance” sent.") {
		t.Fatalf("posting a notification: %d %s", a.status, a.body)
	}
	list := e.mustDo(req{method: "GET", path: "/api/v1/notifications", host: host("acme"), token: admin}, http.StatusOK)
	if !strings.Contains(string(list.raw), "Maintenance") {
		t.Errorf("the API does not list the panel's notification: %s", list.raw)
	}
	if a := p.do("/admin/notifications", url.Values{"csrf": {users.csrf(t)}, "title": {""}}); a.status != http.StatusBadRequest || !strings.Contains(a.body, `id="error"`) {
		t.Errorf("posting an empty notification: %d %s", a.status, a.body)
	}
}
