package dataplane

import (
	"bytes"
	"fmt"
	"strconv"
	"testing"
)

// TestCrossTenant runs every dataplane route with tenant A's credentials or host against
// tenant B's resources: the answer is 404 or 401, and never carries B's data.
func TestCrossTenant(t *testing.T) {
	t.Parallel()
	for _, setLocal := range []bool{false, true} {
		t.Run(fmt.Sprintf("set_local=%v", setLocal), func(t *testing.T) {
			t.Parallel()
			crossTenant(t, setLocal)
		})
	}
}

func crossTenant(t *testing.T, setLocal bool) {
	e := setup(t, func(c *Config) {
		c.Searcher = fakeSearcher{}
		c.SetLocalMode = setLocal
	})
	e.newTenants("acme", "globex")
	aAccess, aRefresh := e.loginAdmin("acme")
	bAdmin, _ := e.loginAdmin("globex")

	// B has more users and blogs than A, so B's ids name nothing in A.
	var bUser, bBlog int64
	for i := range 3 {
		bUser = e.createUser("globex", bAdmin, fmt.Sprintf("globex-secret-%d@globex.example", i))
	}
	for i := range 4 {
		bBlog = e.createBlog("globex", bAdmin, fmt.Sprintf("globex-secret-%d", i))
	}
	aBlog := e.createBlog("acme", aAccess, "acme's own")
	if bBlog <= aBlog || bUser <= 1 {
		t.Fatalf("fixture: B's ids must be past A's (blog %d vs %d)", bBlog, aBlog)
	}
	secret := []byte("globex-secret")
	bu, bb := strconv.FormatInt(bUser, 10), strconv.FormatInt(bBlog, 10)

	routes := []req{
		{method: "GET", path: "/api/v1/users/me"},
		{method: "POST", path: "/api/v1/users/me/password", body: map[string]string{"old_password": adminPassword, "new_password": "taken over 1"}},
		{method: "GET", path: "/api/v1/users"},
		{method: "POST", path: "/api/v1/users", body: map[string]any{"email": "intruder@acme.example", "password": "long enough 1"}},
		{method: "GET", path: "/api/v1/users/" + bu},
		{method: "PATCH", path: "/api/v1/users/" + bu, body: map[string]any{"is_admin": true}},
		{method: "DELETE", path: "/api/v1/users/" + bu},
		{method: "GET", path: "/api/v1/blogs"},
		{method: "POST", path: "/api/v1/blogs", body: map[string]any{"title": "planted"}},
		{method: "GET", path: "/api/v1/blogs/search?q=globex"},
		{method: "GET", path: "/api/v1/blogs/" + bb},
		{method: "PUT", path: "/api/v1/blogs/" + bb, body: map[string]any{"title": "defaced"}},
		{method: "PATCH", path: "/api/v1/blogs/" + bb, body: map[string]any{"title": "defaced"}},
		{method: "DELETE", path: "/api/v1/blogs/" + bb},
	}
	check := func(what string, r req, allowed ...int) {
		t.Helper()
		got := e.do(r)
		ok := false
		for _, s := range allowed {
			ok = ok || got.status == s
		}
		if !ok {
			t.Errorf("%s: %s %s answered %d %s, want one of %v", what, r.method, r.path, got.status, got.raw, allowed)
		}
		if bytes.Contains(got.raw, secret) {
			t.Errorf("%s: %s %s leaked B's data: %s", what, r.method, r.path, got.raw)
		}
	}

	// A's token at B's host, or naming B by X-Tenant: 401 everywhere.
	for _, r := range routes {
		r.token = aAccess
		r.host = host("globex")
		check("A's token at B's host", r, 401)
		r.host, r.tenant = "", "globex"
		check("A's token with X-Tenant B", r, 401)
	}
	// The auth endpoints refuse A's tokens and credentials at B.
	for _, r := range []req{
		{method: "POST", path: "/api/v1/auth/token", body: map[string]string{"email": "admin@acme.example", "password": adminPassword}},
		{method: "POST", path: "/api/v1/auth/token/refresh", body: map[string]string{"refresh": aRefresh}},
		{method: "POST", path: "/api/v1/auth/token/verify", body: map[string]string{"token": aAccess}},
		{method: "POST", path: "/api/v1/auth/logout", body: map[string]string{"refresh": aRefresh}},
	} {
		r.host = host("globex")
		check("A's credentials at B", r, 401)
	}
	// A's token at A's host (even with X-Tenant B) against B's ids: 404, and lists show
	// only A's data.
	for _, r := range routes {
		if r.path == "/api/v1/users/me/password" || r.method == "POST" {
			continue // these act on A itself; nothing of B to reach
		}
		r.token, r.host = aAccess, host("acme")
		check("A's token at A's host, B's ids", r, 200, 404)
		r.tenant = "globex"
		check("A's host with X-Tenant B", r, 200, 404)
	}
	// B's data is intact.
	got := e.mustDo(req{method: "GET", path: "/api/v1/blogs/" + bb, host: host("globex"), token: bAdmin}, 200)
	if !bytes.Contains(got.raw, []byte("globex-secret-3")) {
		t.Fatalf("B's blog changed: %s", got.raw)
	}
	e.mustDo(req{method: "GET", path: "/api/v1/users/" + bu, host: host("globex"), token: bAdmin}, 200)
	// A's refresh token still works at A: the attempts at B did not revoke it.
	e.mustDo(req{method: "POST", path: "/api/v1/auth/token/refresh", host: host("acme"), body: map[string]string{"refresh": aRefresh}}, 200)
}
