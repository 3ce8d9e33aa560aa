package dataplane

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/tenantplane/tenantplane/apidoc"
)

// conformance sends requests to the dataplane and checks every answer against
// apidoc/dataplane.json: its status is documented for the operation and its body
// matches the documented schema.
type conformance struct {
	e       *env
	check   *apidoc.Checker
	covered map[string]bool
}

func (cf *conformance) do(t *testing.T, op string, r req) resp {
	t.Helper()
	method, path, _ := strings.Cut(op, " ")
	got := cf.e.do(r)
	cf.covered[op] = true
	if err := cf.check.CheckAnswer(method, path, got.status, got.raw); err != nil {
		t.Error(err)
	}
	if r.body != nil {
		raw, ok := r.body.(string)
		if !ok {
			j, _ := json.Marshal(r.body)
			raw = string(j)
		}
		// What the server takes, the document allows; what it refuses as invalid, the
		// document refuses too.
		err := cf.check.CheckRequest(method, path, []byte(raw))
		switch {
		case got.status < 300 && err != nil:
			t.Errorf("the server accepted a body the document refuses: %v", err)
		case got.status == http.StatusBadRequest && err == nil:
			t.Errorf("%s answered 400 %s to %s, which the document allows", op, got.raw, raw)
		}
	}
	return got
}

// TestAnswersMatchTheDocument runs every operation of the dataplane's OpenAPI document
// against a real server, as the document says to call it (authenticated where it says
// so), and checks each answer's status and body against the document; then the same
// operations without credentials and with bodies the document refuses.
func TestAnswersMatchTheDocument(t *testing.T) {
	t.Parallel()
	e := setup(t, nil)
	e.newTenants("conf")
	check, err := apidoc.NewChecker(apidoc.DataPlane())
	if err != nil {
		t.Fatal(err)
	}
	cf := &conformance{e: e, check: check, covered: map[string]bool{}}
	h := host("conf")
	admin, refresh := e.loginAdmin("conf")
	userID := e.createUser("conf", admin, "reader@conf.example")
	other := e.createUser("conf", admin, "other@conf.example")
	blogID := e.createBlog("conf", admin, "Conformance")
	doomed := e.createBlog("conf", admin, "Doomed")
	u := func(format string, args ...any) string { return fmt.Sprintf(format, args...) }

	// Every documented operation, called as documented, in an order where each finds
	// what it needs.
	type call struct {
		op   string
		r    req
		want int
	}
	calls := []call{
		{"GET /healthz", req{method: "GET", path: "/healthz"}, 200},
		{"GET /readyz", req{method: "GET", path: "/readyz"}, 200},
		{"POST /api/v1/auth/token", req{method: "POST", path: "/api/v1/auth/token", host: h,
			body: map[string]any{"email": "admin@conf.example", "password": adminPassword}}, 200},
		{"POST /api/v1/auth/token/verify", req{method: "POST", path: "/api/v1/auth/token/verify", host: h, body: map[string]any{"token": admin}}, 200},
		{"POST /api/v1/auth/token/refresh", req{method: "POST", path: "/api/v1/auth/token/refresh", host: h, body: map[string]any{"refresh": refresh}}, 200},
		{"GET /api/v1/users/me", req{method: "GET", path: "/api/v1/users/me", host: h, token: admin}, 200},
		{"GET /api/v1/users", req{method: "GET", path: "/api/v1/users?limit=1", host: h, token: admin}, 200},
		{"POST /api/v1/users", req{method: "POST", path: "/api/v1/users", host: h, token: admin,
			body: map[string]any{"email": "new@conf.example", "password": "a new password", "is_admin": false}}, 201},
		{"GET /api/v1/users/{id}", req{method: "GET", path: u("/api/v1/users/%d", userID), host: h, token: admin}, 200},
		{"PATCH /api/v1/users/{id}", req{method: "PATCH", path: u("/api/v1/users/%d", userID), host: h, token: admin,
			body: map[string]any{"is_admin": nil, "is_active": true}}, 200},
		{"DELETE /api/v1/users/{id}", req{method: "DELETE", path: u("/api/v1/users/%d", other), host: h, token: admin}, 204},
		{"GET /api/v1/blogs", req{method: "GET", path: "/api/v1/blogs?limit=1", host: h, token: admin}, 200},
		{"POST /api/v1/blogs", req{method: "POST", path: "/api/v1/blogs", host: h, token: admin,
			body: map[string]any{"title": "Null description", "description": nil}}, 201},
		{"GET /api/v1/blogs/search", req{method: "GET", path: "/api/v1/blogs/search?q=conf", host: h, token: admin}, 200},
		{"GET /api/v1/blogs/{id}", req{method: "GET", path: u("/api/v1/blogs/%d", blogID), host: h, token: admin}, 200},
		{"PUT /api/v1/blogs/{id}", req{method: "PUT", path: u("/api/v1/blogs/%d", blogID), host: h, token: admin,
			body: map[string]any{"title": "Conformance", "description": "replaced"}}, 200},
		{"PATCH /api/v1/blogs/{id}", req{method: "PATCH", path: u("/api/v1/blogs/%d", blogID), host: h, token: admin,
			body: map[string]any{"description": nil}}, 200},
		{"DELETE /api/v1/blogs/{id}", req{method: "DELETE", path: u("/api/v1/blogs/%d", doomed), host: h, token: admin}, 204},
		{"POST /api/v1/notifications", req{method: "POST", path: "/api/v1/notifications", host: h, token: admin,
			body: map[string]any{"title": "Hello", "body": nil}}, 201},
		{"GET /api/v1/notifications", req{method: "GET", path: "/api/v1/notifications", host: h, token: admin}, 200},
		{"GET /ws/notifications", req{method: "GET", path: "/ws/notifications", host: h, token: admin}, 400},
		{"POST /api/v1/users/me/password", req{method: "POST", path: "/api/v1/users/me/password", host: h, token: admin,
			body: map[string]any{"old_password": adminPassword, "new_password": "the next admin password"}}, 204},
	}
	for _, c := range calls {
		if got := cf.do(t, c.op, c.r); got.status != c.want {
			t.Errorf("%s: %d %s, want %d", c.op, got.status, got.raw, c.want)
		}
	}
	admin, refresh = e.login("conf", "admin@conf.example", "the next admin password")
	if got := cf.do(t, "POST /api/v1/auth/logout", req{method: "POST", path: "/api/v1/auth/logout", host: h, body: map[string]any{"refresh": refresh}}); got.status != 204 {
		t.Errorf("logout: %d %s", got.status, got.raw)
	}

	// The null the document allows did what it says; the one it refuses is a 400.
	if got := e.do(req{method: "GET", path: u("/api/v1/blogs/%d", blogID), host: h, token: admin}); got.json(t)["description"] != "" {
		t.Errorf("PATCH description null: the description is %v, want empty", got.json(t)["description"])
	}
	for _, c := range []call{
		{"PATCH /api/v1/blogs/{id}", req{method: "PATCH", path: u("/api/v1/blogs/%d", blogID), host: h, token: admin, body: `{"title": null}`}, 400},
		{"POST /api/v1/blogs", req{method: "POST", path: "/api/v1/blogs", host: h, token: admin, body: `{"title": null}`}, 400},
		{"PUT /api/v1/blogs/{id}", req{method: "PUT", path: u("/api/v1/blogs/%d", blogID), host: h, token: admin, body: `{"title": null, "description": "x"}`}, 400},
		{"POST /api/v1/blogs", req{method: "POST", path: "/api/v1/blogs", host: h, token: admin, body: `{"title": "t", "content": "c"}`}, 400},
		{"POST /api/v1/blogs", req{method: "POST", path: "/api/v1/blogs", host: h, token: admin, body: `{"title": "   "}`}, 400},
		{"POST /api/v1/blogs", req{method: "POST", path: "/api/v1/blogs", host: h, token: admin, body: map[string]any{"title": strings.Repeat("t", 201)}}, 400},
		{"POST /api/v1/users", req{method: "POST", path: "/api/v1/users", host: h, token: admin, body: map[string]any{"email": "x@conf.example", "password": "12345678901"}}, 400},
		{"POST /api/v1/users", req{method: "POST", path: "/api/v1/users", host: h, token: admin, body: map[string]any{"email": "x@conf.example", "password": strings.Repeat("p", 257)}}, 400},
	} {
		got := cf.do(t, c.op, c.r)
		if got.status != c.want {
			t.Errorf("%s %v: %d %s, want %d", c.op, c.r.body, got.status, got.raw, c.want)
		}
	}
	if got := e.do(req{method: "POST", path: "/api/v1/blogs", host: h, token: admin, body: `{"title": "t", "content": "c"}`}); !strings.Contains(string(got.raw), `accepted: title, description`) {
		t.Errorf("unknown field: %s", got.raw)
	}

	// Without credentials every secured operation answers a documented 401.
	ops, err := apidoc.DataPlane().Operations()
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range ops {
		op := o.Method + " " + o.Path
		if !cf.covered[op] {
			if o.Path == "/metrics" {
				continue // the metrics listener's, not the public one's
			}
			t.Errorf("%s is documented but the conformance test does not call it", op)
		}
		if !strings.HasPrefix(o.Path, "/api/v1/users") && !strings.HasPrefix(o.Path, "/api/v1/blogs") && !strings.HasPrefix(o.Path, "/api/v1/notifications") {
			continue
		}
		path := strings.NewReplacer("{id}", fmt.Sprint(blogID)).Replace(o.Path)
		if got := cf.do(t, op, req{method: o.Method, path: path, host: h}); got.status != http.StatusUnauthorized {
			t.Errorf("%s without a token: %d, want 401", op, got.status)
		}
	}
}

// TestMethodsAPathDoesNotServe checks that a method a path does not serve is 405 with an
// Allow header and the JSON error, also where a parameter route of that method could read
// the path as an id.
func TestMethodsAPathDoesNotServe(t *testing.T) {
	t.Parallel()
	e := setup(t, nil)
	e.newTenants("acme")
	admin, _ := e.loginAdmin("acme")
	for _, c := range []struct{ method, path, allow string }{
		{"PATCH", "/api/v1/users/me", "GET"},
		{"DELETE", "/api/v1/users/me", "GET"},
		{"PUT", "/api/v1/users/me", "GET"},
		{"PUT", "/api/v1/blogs/search", "GET"},
		{"PATCH", "/api/v1/blogs/search", "GET"},
		{"DELETE", "/api/v1/blogs/search", "GET"},
		{"GET", "/api/v1/auth/token", "POST"},
		{"PUT", "/api/v1/blogs", "GET, POST"},
	} {
		got := e.do(req{method: c.method, path: c.path, host: host("acme"), token: admin, body: `{}`})
		if got.status != http.StatusMethodNotAllowed || got.code() != "method_not_allowed" || !strings.Contains(got.header.Get("Allow"), c.allow) {
			t.Errorf("%s %s: %d Allow %q %s; want 405 method_not_allowed allowing %s", c.method, c.path, got.status, got.header.Get("Allow"), got.raw, c.allow)
		}
	}
	// The ids are still ids.
	if got := e.do(req{method: "PATCH", path: "/api/v1/users/999", host: host("acme"), token: admin, body: `{}`}); got.status != http.StatusNotFound {
		t.Errorf("PATCH an unknown user: %d", got.status)
	}
}
