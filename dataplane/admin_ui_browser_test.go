package dataplane

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/tenantplane/tenantplane/internal/browsertest"
)

// TestAdminUIInBrowser walks through a tenant's panel as its admin does, in Chromium, on
// the tenant's own host (acme.localhost, which Chromium resolves to the loopback): the
// login form (a user who is no admin is told only admins log in), the header, the
// users (no action on the admin's own row), deactivating one and deleting a blog, each
// through its confirmation page, and logout. Every page visited is saved as a
// screenshot (browsertest.Screenshot).
func TestAdminUIInBrowser(t *testing.T) {
	t.Parallel()
	ctx := browsertest.New(t)
	e := setup(t, func(c *Config) { c.BaseDomain = "localhost" })
	e.newTenants("acme")
	// The harness's requests name the tenant by X-Tenant: its hosts are the browser's.
	login := func(email, pw string) string {
		t.Helper()
		r := e.mustDo(req{method: "POST", path: "/api/v1/auth/token", tenant: "acme",
			body: map[string]string{"email": email, "password": pw}}, http.StatusOK)
		return r.json(t)["access"].(string)
	}
	admin := login("admin@acme.example", adminPassword)
	r := e.mustDo(req{method: "POST", path: "/api/v1/users", tenant: "acme", token: admin,
		body: map[string]any{"email": "writer@acme.example", "password": "user password 1"}}, http.StatusCreated)
	id := int64(r.json(t)["id"].(float64))
	userTok := login("writer@acme.example", "user password 1")
	me := int64(e.mustDo(req{method: "GET", path: "/api/v1/users/me", tenant: "acme", token: admin}, http.StatusOK).json(t)["id"].(float64))
	r = e.mustDo(req{method: "POST", path: "/api/v1/blogs", tenant: "acme", token: admin,
		body: map[string]any{"title": "Hello world", "description": "the first post"}}, http.StatusCreated)
	blog := int64(r.json(t)["id"].(float64))

	ts := httptest.NewServer(e.h)
	t.Cleanup(ts.Close)
	base := strings.Replace(ts.URL, "127.0.0.1", "acme.localhost", 1)

	start := time.Now()
	do := func(step string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, actions...); err != nil {
			t.Fatalf("%s: %v", step, err)
		}
		browsertest.Screenshot(t, ctx, step)
	}
	get := func(a chromedp.Action[string]) string {
		t.Helper()
		v, err := chromedp.Run(ctx, a)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}

	do("opening the panel without a session",
		chromedp.Navigate(base+"/admin/"),
		chromedp.WaitVisible(chromedp.ID("email")))
	if loc := get(chromedp.Location()); loc != base+"/admin/login" {
		t.Errorf("without a session the panel is at %s, want the login form", loc)
	}

	do("logging in as a user who is no admin",
		chromedp.SendKeys(chromedp.ID("email"), "writer@acme.example"),
		chromedp.SendKeys(chromedp.ID("password"), "user password 1"),
		chromedp.Click(chromedp.ID("login")),
		chromedp.WaitVisible(chromedp.ID("error")))
	if msg := get(chromedp.Text(chromedp.ID("error"))); !strings.Contains(msg, "Only the tenant's admins can log in") {
		t.Errorf("a non-admin's login shows %q", msg)
	}

	do("logging in",
		chromedp.SetValue(chromedp.ID("email"), "admin@acme.example"),
		chromedp.SendKeys(chromedp.ID("password"), adminPassword),
		chromedp.Click(chromedp.ID("login")),
		chromedp.WaitVisible(chromedp.ID("users")))
	if list := get(chromedp.Text(chromedp.ID("users"))); !strings.Contains(list, "writer@acme.example") || !strings.Contains(list, "admin@acme.example") {
		t.Errorf("users list does not show the users: %q", list)
	}
	if who := get(chromedp.Text(chromedp.ID("who"))); who != "Signed in as admin@acme.example" {
		t.Errorf("the header shows %q, want who is signed in", who)
	}
	if own := get(chromedp.Text(chromedp.CSS(fmt.Sprintf("#user-%d .actions", me)))); own != "(you)" {
		t.Errorf("the signed-in admin's own row offers %q, want no actions", own)
	}

	do("asking to deactivate the writer",
		chromedp.Click(chromedp.ID(fmt.Sprintf("deactivate-%d", id))),
		chromedp.WaitVisible(chromedp.ID("confirmation")))
	if q := get(chromedp.Text(chromedp.ID("question"))); !strings.Contains(q, "Deactivate writer@acme.example?") {
		t.Errorf("the confirmation asks %q", q)
	}
	e.mustDo(req{method: "GET", path: "/api/v1/users/me", tenant: "acme", token: userTok}, http.StatusOK)
	do("cancelling",
		chromedp.Click(chromedp.ID("cancel")),
		chromedp.WaitVisible(chromedp.ID("users")))
	if state := get(chromedp.Text(chromedp.ID(fmt.Sprintf("active-%d", id)))); state != "active" {
		t.Errorf("after cancelling the page shows %q", state)
	}
	do("deactivating the writer",
		chromedp.Click(chromedp.ID(fmt.Sprintf("deactivate-%d", id))),
		chromedp.WaitVisible(chromedp.ID("confirmation")),
		chromedp.Click(chromedp.ID("confirm")),
		chromedp.WaitVisible(chromedp.ID(fmt.Sprintf("activate-%d", id))))
	if state := get(chromedp.Text(chromedp.ID(fmt.Sprintf("active-%d", id)))); state != "inactive" {
		t.Errorf("after Deactivate the page shows %q", state)
	}
	e.mustDo(req{method: "GET", path: "/api/v1/users/me", tenant: "acme", token: userTok}, http.StatusUnauthorized)

	do("opening the new-user form",
		chromedp.Click(chromedp.ID("add-user")),
		chromedp.WaitVisible(chromedp.ID("new-user")))
	do("sending a notification",
		chromedp.Navigate(base+"/admin/notifications"),
		chromedp.WaitVisible(chromedp.ID("title")),
		chromedp.SendKeys(chromedp.ID("title"), "Maintenance"),
		chromedp.SendKeys(chromedp.ID("body"), "Tonight at ten."),
		chromedp.Click(chromedp.ID("send")),
		chromedp.WaitVisible(chromedp.ID("notice")))

	do("asking to delete the blog",
		chromedp.Navigate(base+"/admin/blogs"),
		chromedp.WaitVisible(chromedp.ID(fmt.Sprintf("delete-%d", blog))),
		chromedp.Click(chromedp.ID(fmt.Sprintf("delete-%d", blog))),
		chromedp.WaitVisible(chromedp.ID("confirmation")))
	if q := get(chromedp.Text(chromedp.ID("question"))); !strings.Contains(q, "Delete the blog “Hello world”?") {
		t.Errorf("the confirmation asks %q", q)
	}
	e.mustDo(req{method: "GET", path: fmt.Sprintf("/api/v1/blogs/%d", blog), tenant: "acme", token: admin}, http.StatusOK)
	do("deleting the blog",
		chromedp.Click(chromedp.ID("confirm")),
		chromedp.WaitVisible(chromedp.ID("blogs")))
	if list := get(chromedp.Text(chromedp.ID("blogs"))); strings.Contains(list, "Hello world") {
		t.Errorf("after deleting, the blogs list shows %q", list)
	}
	e.mustDo(req{method: "GET", path: fmt.Sprintf("/api/v1/blogs/%d", blog), tenant: "acme", token: admin}, http.StatusNotFound)

	do("logging out",
		chromedp.Click(chromedp.ID("logout")),
		chromedp.WaitVisible(chromedp.ID("email")),
		chromedp.Navigate(base+"/admin/blogs"),
		chromedp.WaitVisible(chromedp.ID("email")))
	if loc := get(chromedp.Location()); loc != base+"/admin/login" {
		t.Errorf("after logout the blogs page is at %s, want the login form", loc)
	}
	t.Logf("browser walk-through took %s", time.Since(start).Round(time.Millisecond))
}
