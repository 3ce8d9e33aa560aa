package dataplane

import (
	"context"
	"net/http"
	"strings"
	"testing"
)

// While a tenant's writes are frozen (a move switching shards) every request that can
// write answers 503 tenant_moving with Retry-After, on the API and the admin panel,
// while reads keep working; thawing brings writes back.
func TestWritesFrozen(t *testing.T) {
	e := setup(t, nil)
	e.waitListening()
	tn := e.newTenants("acme")[0]
	tok, _ := e.loginAdmin("acme")
	e.createBlog("acme", tok, "before")
	changed := e.invalidations()
	ctx := context.Background()

	if err := e.store.SetWritesFrozen(ctx, tn.ID, true, "test", "freeze test"); err != nil {
		t.Fatal(err)
	}
	e.awaitRegistry(t, changed)
	post := req{method: "POST", path: "/api/v1/blogs", host: host("acme"), token: tok,
		body: map[string]any{"title": "during", "description": "frozen"}}
	r := e.do(post)
	if r.status != http.StatusServiceUnavailable || r.code() != "tenant_moving" || r.header.Get("Retry-After") != "1" {
		t.Fatalf("write while frozen: %d %s Retry-After %q, want 503 tenant_moving, Retry-After 1", r.status, r.raw, r.header.Get("Retry-After"))
	}
	if msg, _ := r.json(t)["error"].(map[string]any)["message"].(string); !strings.Contains(msg, "moved") {
		t.Errorf("message %q does not say the tenant is being moved", msg)
	}
	for _, m := range []string{"PUT", "PATCH", "DELETE"} {
		if r := e.do(req{method: m, path: "/api/v1/blogs/1", host: host("acme"), token: tok, body: map[string]any{}}); r.code() != "tenant_moving" {
			t.Errorf("%s while frozen: %d %s, want tenant_moving", m, r.status, r.raw)
		}
	}
	if r := e.do(req{method: "GET", path: "/api/v1/blogs", host: host("acme"), token: tok}); r.status != http.StatusOK {
		t.Errorf("read while frozen: %d %s, want 200", r.status, r.raw)
	}
	// The panel's form POSTs get the error page with the same status, not a 500.
	p := e.do(req{method: "POST", path: "/admin/login", host: host("acme"), body: "email=a&password=b",
		header: map[string]string{"Content-Type": "application/x-www-form-urlencoded"}})
	if p.status != http.StatusServiceUnavailable || !strings.Contains(p.header.Get("Content-Type"), "text/html") ||
		!strings.Contains(string(p.raw), "being moved") || p.header.Get("Retry-After") != "1" {
		t.Errorf("panel form while frozen: %d %s %q", p.status, p.header.Get("Content-Type"), p.raw)
	}
	if p := e.do(req{method: "GET", path: "/admin/login", host: host("acme")}); p.status != http.StatusOK {
		t.Errorf("panel page while frozen: %d, want 200", p.status)
	}

	if err := e.store.SetWritesFrozen(ctx, tn.ID, false, "test", "freeze test"); err != nil {
		t.Fatal(err)
	}
	e.awaitRegistry(t, changed)
	e.mustDo(post, http.StatusCreated)
}
