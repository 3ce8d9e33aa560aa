package dataplane

import (
	"net/http"
	"strings"
	"testing"

	"github.com/tenantplane/tenantplane/apidoc"
)

// TestOpenAPIDocumentsEveryRoute fails when a route is added, removed or renamed
// without its OpenAPI description (apidoc/dataplane.json) following.
func TestOpenAPIDocumentsEveryRoute(t *testing.T) {
	t.Parallel()
	e := setup(t, nil)
	// A fresh engine: setup adds a test-only route to the server's.
	undocumented, unserved, err := apidoc.DataPlane().Compare(e.srv.newEngine().Routes(), func(p string) bool { return strings.HasPrefix(p, "/admin/") })
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range undocumented {
		t.Errorf("%s is served but not in apidoc/dataplane.json", o)
	}
	for _, o := range unserved {
		t.Errorf("%s is in apidoc/dataplane.json but not served", o)
	}
}

// TestAPIDocsServedWithoutTenant checks that the dataplane's docs need no tenant, on a
// bare host as on a tenant's own.
func TestAPIDocsServedWithoutTenant(t *testing.T) {
	t.Parallel()
	e := setup(t, nil)
	for _, host := range []string{"", "acme." + base} {
		r := e.do(req{method: http.MethodGet, path: "/openapi.json", host: host})
		if r.status != http.StatusOK || !strings.HasPrefix(r.header.Get("Content-Type"), "application/json") ||
			string(r.raw) != string(apidoc.DataPlane().JSON) {
			t.Errorf("GET /openapi.json (host %q): %d %s", host, r.status, r.header.Get("Content-Type"))
		}
		r = e.do(req{method: http.MethodGet, path: "/swagger/", host: host})
		if r.status != http.StatusOK || !strings.Contains(string(r.raw), "swagger-ui-bundle.js") {
			t.Errorf("GET /swagger/ (host %q): %d %.200s", host, r.status, r.raw)
		}
	}
}
