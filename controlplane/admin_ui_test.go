package controlplane

import (
	"context"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/tenantplane/tenantplane/tenant"
)

const (
	adminEmail    = "ops@platform.example.com"
	adminPassword = "platform-password-1"
)

// adminAnswer is an admin panel answer, redirects not followed.
type adminAnswer struct {
	status   int
	location string
	cookies  []*http.Cookie
	body     string
}

// adminClient is a browser-like client of the panel: it keeps cookies and does not
// follow redirects, so that tests see them.
func (b *bundle) adminClient(t *testing.T) *http.Client {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	c := *b.ts.Client()
	c.Jar = jar
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &c
}

// adminDo sends a GET, or a POST of form when form is not nil. A login form without a
// csrf field gets the one of a login page fetched first, as a browser's would.
func (b *bundle) adminDo(t *testing.T, c *http.Client, path string, form url.Values) adminAnswer {
	t.Helper()
	if path == "/admin/login" && form != nil && !form.Has("csrf") {
		form.Set("csrf", b.adminDo(t, c, "/admin/login", nil).csrf(t))
	}
	var resp *http.Response
	var err error
	if form == nil {
		resp, err = c.Get(b.ts.URL + path)
	} else {
		resp, err = c.PostForm(b.ts.URL+path, form)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return adminAnswer{status: resp.StatusCode, location: resp.Header.Get("Location"), cookies: resp.Cookies(), body: string(raw)}
}

// adminLogin creates the platform user and returns a client logged in as it.
func (b *bundle) adminLogin(t *testing.T) *http.Client {
	t.Helper()
	if _, err := b.users.Create(context.Background(), adminEmail, adminPassword); err != nil {
		t.Fatalf("creating platform user: %v", err)
	}
	c := b.adminClient(t)
	a := b.adminDo(t, c, "/admin/login", url.Values{"email": {adminEmail}, "password": {adminPassword}})
	if a.status != http.StatusSeeOther || a.location != "/admin/" {
		t.Fatalf("login: %d to %q, want 303 to /admin/; %s", a.status, a.location, a.body)
	}
	return c
}

// setsCookie reports whether cookies set the named one.
func setsCookie(cookies []*http.Cookie, name string) bool {
	for _, c := range cookies {
		if c.Name == name {
			return true
		}
	}
	return false
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([0-9a-f]+)"`)

// csrf returns the CSRF token of the forms on the page.
func (a adminAnswer) csrf(t *testing.T) string {
	t.Helper()
	m := csrfRE.FindStringSubmatch(a.body)
	if m == nil {
		t.Fatalf("no CSRF token on the page: %d %s", a.status, a.body)
	}
	return m[1]
}

// activeTenant registers a tenant and marks it active without provisioning it.
// activeTenant records an active tenant directly in the registry. Tests using it (or
// register) leave the server unstarted: Start resumes tenants left in provisioning in
// the background, which would race with the test's own registrations.
func (b *bundle) activeTenant(t *testing.T, slug string) {
	t.Helper()
	b.register(t, slug)
	if _, err := b.store.Transition(context.Background(), slug, []tenant.Status{tenant.StatusProvisioning}, tenant.StatusActive,
		tenant.TransitionInfo{Action: "test", Actor: "test"}); err != nil {
		t.Fatalf("activating %s: %v", slug, err)
	}
}

func (b *bundle) tenantStatus(t *testing.T, slug string) tenant.Status {
	t.Helper()
	tn, err := b.store.Get(context.Background(), slug)
	if err != nil {
		t.Fatal(err)
	}
	return tn.Status
}

func TestAdminUIRedirectsWithoutSession(t *testing.T) {
	t.Parallel()
	b := setup(t, Config{}, setupOptions{noStart: true})
	b.activeTenant(t, "acme")
	c := b.adminClient(t)
	for _, path := range []string{"/admin/", "/admin/tenants/acme"} {
		if a := b.adminDo(t, c, path, nil); a.status != http.StatusSeeOther || a.location != "/admin/login" {
			t.Errorf("GET %s: %d to %q, want 303 to /admin/login", path, a.status, a.location)
		}
	}
	if a := b.adminDo(t, c, "/admin/tenants/acme/suspend", url.Values{"csrf": {"x"}}); a.status != http.StatusSeeOther || a.location != "/admin/login" {
		t.Errorf("POST suspend: %d to %q, want 303 to /admin/login", a.status, a.location)
	}
	// An API token is no session.
	c.Jar.SetCookies(mustURL(t, b.ts.URL+"/admin/"), []*http.Cookie{{Name: adminCookie, Value: b.adminToken(t), Path: "/admin"}})
	if a := b.adminDo(t, c, "/admin/", nil); a.status != http.StatusSeeOther || a.location != "/admin/login" {
		t.Errorf("GET /admin/ with an API token: %d to %q, want 303 to /admin/login", a.status, a.location)
	}
	if got := b.tenantStatus(t, "acme"); got != tenant.StatusActive {
		t.Errorf("tenant is %s after unauthenticated POST", got)
	}
}

func TestAdminUILoginRefusesBadCredentialsAlike(t *testing.T) {
	t.Parallel()
	b := setup(t, Config{}, setupOptions{noStart: true})
	if _, err := b.users.Create(context.Background(), adminEmail, adminPassword); err != nil {
		t.Fatal(err)
	}
	c := b.adminClient(t)
	var bodies []string
	for _, creds := range [][2]string{{adminEmail, "wrong-password-1"}, {"nobody@platform.example.com", adminPassword}} {
		a := b.adminDo(t, c, "/admin/login", url.Values{"email": {creds[0]}, "password": {creds[1]}})
		if a.status != http.StatusUnauthorized || !strings.Contains(a.body, "Invalid email or password.") || setsCookie(a.cookies, adminCookie) {
			t.Errorf("login as %s: %d, cookies %v; %s", creds[0], a.status, a.cookies, a.body)
		}
		// Each form has its own login CSRF token.
		bodies = append(bodies, csrfRE.ReplaceAllString(strings.ReplaceAll(a.body, creds[0], ""), ""))
	}
	if bodies[0] != bodies[1] {
		t.Error("a wrong password and an unknown email get different pages")
	}
}

func TestAdminUISessionCookie(t *testing.T) {
	t.Parallel()
	b := setup(t, Config{}, setupOptions{noStart: true})
	if _, err := b.users.Create(context.Background(), adminEmail, adminPassword); err != nil {
		t.Fatal(err)
	}
	a := b.adminDo(t, b.adminClient(t), "/admin/login", url.Values{"email": {adminEmail}, "password": {adminPassword}})
	var ck *http.Cookie
	for _, c := range a.cookies {
		if c.Name == adminCookie {
			ck = c
		}
	}
	if ck == nil {
		t.Fatalf("login set no session cookie: %v", a.cookies)
	}
	if !ck.HttpOnly || ck.SameSite != http.SameSiteStrictMode || ck.Path != "/admin" || ck.Secure {
		t.Errorf("session cookie %+v: want HttpOnly, SameSite=Strict, Path=/admin, not Secure over plain HTTP", ck)
	}
	if _, err := b.issuer.Verify(ck.Value, "access", Audience); err == nil {
		t.Error("the admin panel session is accepted by the API")
	}
	b.do(t, "GET", "/api/v1/tenants", nil, bearer(ck.Value)...).wantStatus(t, http.StatusUnauthorized)
}

func TestAdminUISessionKeepsItsTokenAndCSRF(t *testing.T) {
	t.Parallel()
	b := setup(t, Config{}, setupOptions{noStart: true})
	c := b.adminLogin(t)
	a := b.adminDo(t, c, "/admin/", nil)
	if a.status != http.StatusOK {
		t.Fatalf("GET /admin/: %d", a.status)
	}
	if len(a.cookies) != 0 {
		t.Errorf("a session request set cookies: %v", a.cookies)
	}
	// The session keeps its CSRF token, so forms rendered before still work.
	b.activeTenant(t, "acme")
	if before, after := a.csrf(t), b.adminDo(t, c, "/admin/tenants/acme", nil).csrf(t); before != after {
		t.Error("the CSRF token changed within one session")
	}
}

func TestAdminUIRefusesPostsWithoutCSRFToken(t *testing.T) {
	t.Parallel()
	b := setup(t, Config{}, setupOptions{noStart: true})
	b.activeTenant(t, "acme")
	c := b.adminLogin(t)
	page := b.adminDo(t, c, "/admin/tenants/acme", nil)
	for name, form := range map[string]url.Values{
		"no token":    {},
		"wrong token": {"csrf": {strings.Repeat("0", 64)}},
	} {
		a := b.adminDo(t, c, "/admin/tenants/acme/suspend", form)
		if a.status != http.StatusForbidden || !strings.Contains(a.body, "reload the page") {
			t.Errorf("%s: %d %s", name, a.status, a.body)
		}
		if got := b.tenantStatus(t, "acme"); got != tenant.StatusActive {
			t.Fatalf("%s: tenant is %s", name, got)
		}
	}
	if a := b.adminDo(t, c, "/admin/logout", url.Values{}); a.status != http.StatusForbidden {
		t.Errorf("logout without CSRF token: %d", a.status)
	}
	a := b.adminDo(t, c, "/admin/tenants/acme/suspend", url.Values{"csrf": {page.csrf(t)}})
	if a.status != http.StatusSeeOther || a.location != "/admin/tenants/acme" {
		t.Fatalf("suspend with the page's token: %d to %q; %s", a.status, a.location, a.body)
	}
	if got := b.tenantStatus(t, "acme"); got != tenant.StatusSuspended {
		t.Errorf("tenant is %s after suspend", got)
	}
}

func TestAdminUIEscapesTenantNames(t *testing.T) {
	t.Parallel()
	b := setup(t, Config{}, setupOptions{noStart: true})
	b.activeTenant(t, "acme")
	name := `<script>alert("x")</script><img src=x onerror=alert(1)>`
	if _, err := b.store.Update(context.Background(), "acme", tenant.Patch{Name: &name, Actor: "test"}); err != nil {
		t.Fatal(err)
	}
	c := b.adminLogin(t)
	for _, path := range []string{"/admin/", "/admin/tenants/acme"} {
		a := b.adminDo(t, c, path, nil)
		if a.status != http.StatusOK {
			t.Fatalf("GET %s: %d", path, a.status)
		}
		if strings.Contains(a.body, "<script") || strings.Contains(a.body, "<img") {
			t.Errorf("GET %s renders the name as markup: %s", path, a.body)
		}
		if !strings.Contains(a.body, "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;") {
			t.Errorf("GET %s does not show the name escaped: %s", path, a.body)
		}
	}
}

func TestAdminUILogsOutDeactivatedUsers(t *testing.T) {
	t.Parallel()
	b := setup(t, Config{}, setupOptions{noStart: true})
	c := b.adminLogin(t)
	if a := b.adminDo(t, c, "/admin/", nil); a.status != http.StatusOK {
		t.Fatalf("GET /admin/: %d", a.status)
	}
	if _, err := b.db.Exec(context.Background(), `UPDATE platform_users SET is_active = false WHERE email = $1`, adminEmail); err != nil {
		t.Fatal(err)
	}
	if a := b.adminDo(t, c, "/admin/", nil); a.status != http.StatusSeeOther || a.location != "/admin/login" {
		t.Errorf("deactivated user: %d to %q, want 303 to /admin/login", a.status, a.location)
	}
}

func TestAdminUIShowsInvalidTransitions(t *testing.T) {
	t.Parallel()
	b := setup(t, Config{}, setupOptions{noStart: true})
	b.activeTenant(t, "acme")
	b.register(t, "pending") // stays in provisioning
	c := b.adminLogin(t)
	token := b.adminDo(t, c, "/admin/", nil).csrf(t)
	for _, tc := range []struct{ slug, action string }{
		{"acme", "resume"}, {"acme", "restore"}, {"pending", "suspend"}, {"pending", "delete"},
	} {
		a := b.adminDo(t, c, "/admin/tenants/"+tc.slug+"/"+tc.action, url.Values{"csrf": {token}})
		if a.status < 400 || a.status >= 500 || !strings.Contains(a.body, `id="error"`) || !strings.Contains(a.body, `id="tenant-status"`) {
			t.Errorf("%s %s: %d %s", tc.action, tc.slug, a.status, a.body)
		}
	}
	if a := b.adminDo(t, c, "/admin/tenants/nosuch/suspend", url.Values{"csrf": {token}}); a.status != http.StatusNotFound {
		t.Errorf("suspend of an unknown tenant: %d", a.status)
	}
	if a := b.adminDo(t, c, "/admin/?status=bogus", nil); a.status != http.StatusBadRequest || !strings.Contains(a.body, "unknown status") {
		t.Errorf("unknown status filter: %d %s", a.status, a.body)
	}
	if got := b.tenantStatus(t, "acme"); got != tenant.StatusActive {
		t.Errorf("acme is %s", got)
	}
}

func TestAdminUIListFiltersAndPages(t *testing.T) {
	t.Parallel()
	b := setup(t, Config{}, setupOptions{noStart: true})
	for i := range adminPageSize + 1 {
		b.register(t, "t"+strings.Repeat("a", 2)+string(rune('a'+i/26))+string(rune('a'+i%26)))
	}
	b.activeTenant(t, "zeta")
	c := b.adminLogin(t)
	first := b.adminDo(t, c, "/admin/?status=provisioning", nil)
	if first.status != http.StatusOK || strings.Count(first.body, `<a href="/admin/tenants/`) != adminPageSize || strings.Contains(first.body, "zeta") {
		t.Fatalf("first page: %d, %d tenants", first.status, strings.Count(first.body, `<a href="/admin/tenants/`))
	}
	m := regexp.MustCompile(`id="next" href="([^"]+)"`).FindStringSubmatch(first.body)
	if m == nil {
		t.Fatal("no next page link")
	}
	next := b.adminDo(t, c, strings.ReplaceAll(m[1], "&amp;", "&"), nil)
	if next.status != http.StatusOK || strings.Count(next.body, `<a href="/admin/tenants/`) != 1 || strings.Contains(next.body, `id="next"`) {
		t.Errorf("second page: %d %s", next.status, next.body)
	}
	if active := b.adminDo(t, c, "/admin/?status=active", nil); !strings.Contains(active.body, "zeta") || strings.Contains(active.body, "taaaa") {
		t.Errorf("active filter: %s", active.body)
	}
}

func mustURL(t *testing.T, raw string) *url.URL {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func TestAdminUIConfirmsTenantDeletion(t *testing.T) {
	t.Parallel()
	b := setup(t, Config{}, setupOptions{noStart: true})
	b.activeTenant(t, "acme")
	c := b.adminLogin(t)
	page := b.adminDo(t, c, "/admin/tenants/acme", nil)
	// Delete leads to a confirmation page (a GET, which changes nothing).
	if !strings.Contains(page.body, `<form method="get" action="/admin/tenants/acme/delete"`) || !strings.Contains(page.body, `class="status-active"`) {
		t.Errorf("the tenant page does not ask before deleting, or does not colour its status: %s", page.body)
	}
	a := b.adminDo(t, c, "/admin/tenants/acme/delete", nil)
	if a.status != http.StatusOK || !strings.Contains(a.body, `id="confirmation"`) || !strings.Contains(a.body, "Delete the tenant") ||
		!strings.Contains(a.body, `<form method="post" action="/admin/tenants/acme/delete"`) {
		t.Errorf("deletion confirmation: %d %s", a.status, a.body)
	}
	if got := b.tenantStatus(t, "acme"); got != tenant.StatusActive {
		t.Errorf("before confirming acme is %s", got)
	}
	if r := b.adminDo(t, c, "/admin/tenants/acme/delete", url.Values{"csrf": {a.csrf(t)}}); r.status != http.StatusSeeOther {
		t.Fatalf("confirming: %d %s", r.status, r.body)
	}
	if got := b.tenantStatus(t, "acme"); got != tenant.StatusPendingDeletion {
		t.Errorf("after confirming acme is %s", got)
	}
	if r := b.adminDo(t, c, "/admin/tenants/nosuch/delete", nil); r.status != http.StatusNotFound {
		t.Errorf("confirming to delete an unknown tenant: %d", r.status)
	}
}

func TestAdminUIManagesPlatformUsers(t *testing.T) {
	t.Parallel()
	b := setup(t, Config{}, setupOptions{noStart: true})
	c := b.adminLogin(t)
	ctx := context.Background()
	me, err := b.users.ByEmail(ctx, adminEmail)
	if err != nil {
		t.Fatal(err)
	}
	page := b.adminDo(t, c, "/admin/users", nil)
	if page.status != http.StatusOK || !strings.Contains(page.body, adminEmail) || strings.Contains(page.body, `id="deactivate-`+me.ID+`"`) {
		t.Fatalf("platform users page (no Deactivate on one's own row): %d %s", page.status, page.body)
	}
	a := b.adminDo(t, c, "/admin/users", url.Values{"csrf": {page.csrf(t)}, "email": {"ops@example.com"}, "password": {"ops password 12345"}})
	if a.status != http.StatusSeeOther || a.location != "/admin/users" {
		t.Fatalf("creating a platform user: %d to %q; %s", a.status, a.location, a.body)
	}
	ops, err := b.users.ByEmail(ctx, "ops@example.com")
	if err != nil || !ops.IsActive {
		t.Fatalf("the created platform user: %v %v", ops, err)
	}
	if a := b.adminDo(t, c, "/admin/users", url.Values{"csrf": {page.csrf(t)}, "email": {"ops@example.com"}, "password": {"ops password 12345"}}); a.status != http.StatusConflict || !strings.Contains(a.body, `id="error"`) {
		t.Errorf("creating a taken email: %d %s", a.status, a.body)
	}
	// Deactivating oneself is refused, on the confirmation page and on the POST.
	for _, form := range []url.Values{nil, {"csrf": {page.csrf(t)}}} {
		if a := b.adminDo(t, c, "/admin/users/"+me.ID+"/deactivate", form); a.status != http.StatusConflict || !strings.Contains(a.body, "You cannot deactivate yourself") {
			t.Errorf("deactivating oneself (form %v): %d %s", form, a.status, a.body)
		}
	}
	confirm := b.adminDo(t, c, "/admin/users/"+ops.ID+"/deactivate", nil)
	if confirm.status != http.StatusOK || !strings.Contains(confirm.body, "Deactivate ops@example.com?") {
		t.Fatalf("deactivation confirmation: %d %s", confirm.status, confirm.body)
	}
	if a := b.adminDo(t, c, "/admin/users/"+ops.ID+"/deactivate", url.Values{"csrf": {confirm.csrf(t)}}); a.status != http.StatusSeeOther {
		t.Fatalf("confirming: %d %s", a.status, a.body)
	}
	if ops, err = b.users.ByEmail(ctx, "ops@example.com"); err != nil || ops.IsActive {
		t.Errorf("after deactivating: %v %v", ops, err)
	}
	if me, err = b.users.ByEmail(ctx, adminEmail); err != nil || !me.IsActive {
		t.Errorf("the signed-in user after all that: %v %v", me, err)
	}
}
