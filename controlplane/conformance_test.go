package controlplane

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/tenantplane/tenantplane/apidoc"
)

// TestAnswersMatchTheDocument runs every operation of the control plane's OpenAPI
// document against a real server, as the document says to call it (with a platform
// token where it says so), and checks each answer's status and body against the
// document; then the secured operations without a token.
func TestAnswersMatchTheDocument(t *testing.T) {
	t.Parallel()
	b := setup(t, Config{}, setupOptions{fleet: true})
	check, err := apidoc.NewChecker(apidoc.ControlPlane())
	if err != nil {
		t.Fatal(err)
	}
	covered := map[string]bool{}
	do := func(op, path string, body any, headers ...string) response {
		t.Helper()
		method, docPath, _ := strings.Cut(op, " ")
		r := b.do(t, method, path, body, headers...)
		covered[op] = true
		if err := check.CheckAnswer(method, docPath, r.status, r.body); err != nil {
			t.Error(err)
		}
		if raw, err := json.Marshal(body); body != nil && err == nil && r.status < 300 {
			if err := check.CheckRequest(method, docPath, raw); err != nil {
				t.Errorf("the server accepted a body the document refuses: %v", err)
			}
		}
		return r
	}
	tok := b.adminToken(t)
	auth := bearer(tok)
	var refresh struct {
		Refresh string `json:"refresh"`
	}
	login := do("POST /api/v1/auth/token", "/api/v1/auth/token", map[string]string{"email": "root@platform.example.com", "password": "platform-password-1"})
	_ = json.Unmarshal(login.body, &refresh)

	calls := []struct {
		op, path string
		body     any
		headers  []string
		want     int
	}{
		{"GET /healthz", "/healthz", nil, nil, 200},
		{"GET /readyz", "/readyz", nil, nil, 200},
		{"POST /api/v1/auth/token/refresh", "/api/v1/auth/token/refresh", map[string]string{"refresh": refresh.Refresh}, nil, 200},
		{"POST /api/v1/tenants", "/api/v1/tenants", signupBody("conf"), nil, 0},
		{"GET /api/v1/tenants/{slug}/status", "/api/v1/tenants/conf/status", nil, nil, 200},
		{"GET /api/v1/tenants", "/api/v1/tenants?limit=1", nil, auth, 200},
		{"GET /api/v1/tenants/{slug}", "/api/v1/tenants/conf", nil, auth, 200},
		{"PATCH /api/v1/tenants/{slug}", "/api/v1/tenants/conf", map[string]any{"name": "Conformance", "plan": nil}, auth, 200},
		{"GET /api/v1/tenants/{slug}/domains", "/api/v1/tenants/conf/domains", nil, auth, 200},
		{"POST /api/v1/tenants/{slug}/domains", "/api/v1/tenants/conf/domains", map[string]any{"domain": "blog.conf.example.com", "primary": nil}, auth, 201},
		{"DELETE /api/v1/tenants/{slug}/domains/{domain}", "/api/v1/tenants/conf/domains/blog.conf.example.com", nil, auth, 204},
		{"POST /api/v1/migrations", "/api/v1/migrations", map[string]any{"parallel": 2, "canary": nil}, auth, 202},
		{"GET /api/v1/migrations", "/api/v1/migrations", nil, auth, 200},
		{"GET /api/v1/migrations/{id}", "/api/v1/migrations/00000000-0000-0000-0000-000000000000", nil, auth, 404},
		{"GET /api/v1/tenants/{slug}/export", "/api/v1/tenants/conf/export", nil, auth, 200},
		{"POST /api/v1/tenants/{slug}/clone", "/api/v1/tenants/conf/clone", map[string]any{"slug": "conf-clone"}, auth, 201},
		{"POST /api/v1/tenants/import", "/api/v1/tenants/import?slug=conf-import", nil, auth, 400},
		{"GET /api/v1/tenants/{slug}/move", "/api/v1/tenants/conf/move", nil, auth, 404},
		{"DELETE /api/v1/tenants/{slug}/move", "/api/v1/tenants/conf/move", nil, auth, 404},
		{"POST /api/v1/tenants/{slug}/move", "/api/v1/tenants/conf/move", map[string]any{"shard": "nowhere", "isolation": "database", "offline": false}, auth, 400},
		{"POST /api/v1/tenants/{slug}/suspend", "/api/v1/tenants/conf/suspend", nil, auth, 200},
		{"POST /api/v1/tenants/{slug}/resume", "/api/v1/tenants/conf/resume", nil, auth, 200},
		{"POST /api/v1/tenants/{slug}/retry", "/api/v1/tenants/conf/retry", nil, auth, 409},
		{"DELETE /api/v1/tenants/{slug}", "/api/v1/tenants/conf", nil, auth, 202},
		{"POST /api/v1/tenants/{slug}/restore", "/api/v1/tenants/conf/restore", nil, auth, 200},
	}
	for _, c := range calls {
		r := do(c.op, c.path, c.body, c.headers...)
		if c.op == "POST /api/v1/tenants" {
			b.waitStatus(t, "conf", "active")
			continue
		}
		if r.status != c.want {
			t.Errorf("%s: %d %s, want %d", c.op, r.status, r.body, c.want)
		}
	}

	ops, err := apidoc.ControlPlane().Operations()
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range ops {
		op := o.Method + " " + o.Path
		if !covered[op] && o.Path != "/metrics" {
			t.Errorf("%s is documented but the conformance test does not call it", op)
		}
	}
	// Without a token every secured operation answers a documented 401.
	for _, c := range calls {
		if c.headers == nil {
			continue
		}
		var body any
		if c.body != nil {
			body = c.body
		}
		if r := do(c.op, c.path, body); r.status != http.StatusUnauthorized {
			t.Errorf("%s without a token: %d, want 401", c.op, r.status)
		}
	}
}
