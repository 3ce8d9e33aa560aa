package controlplane

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/gin-gonic/gin"

	"github.com/tenantplane/tenantplane/apidoc"
)

// TestOpenAPIDocumentsEveryRoute fails when a route is added, removed or renamed
// without its OpenAPI description (apidoc/controlplane.json) following.
func TestOpenAPIDocumentsEveryRoute(t *testing.T) {
	t.Parallel()
	b := setup(t, Config{}, setupOptions{noStart: true})
	e, ok := b.srv.Handler().(*gin.Engine)
	if !ok {
		t.Fatalf("Handler is a %T, not a gin engine", b.srv.Handler())
	}
	undocumented, unserved, err := apidoc.ControlPlane().Compare(e.Routes(), func(p string) bool { return strings.HasPrefix(p, "/admin/") })
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range undocumented {
		t.Errorf("%s is served but not in apidoc/controlplane.json", o)
	}
	for _, o := range unserved {
		t.Errorf("%s is in apidoc/controlplane.json but not served", o)
	}
}

// TestAPIDocsServed checks what a developer opening the docs at the platform host gets:
// the control plane's document, the dataplane's (the combined server sends requests
// naming no tenant here), and Swagger UI offering both.
func TestAPIDocsServed(t *testing.T) {
	t.Parallel()
	b := setup(t, Config{}, setupOptions{noStart: true})
	for path, title := range map[string]string{
		"/openapi.json":           "tenantplane control plane",
		"/openapi/dataplane.json": "tenantplane dataplane",
	} {
		r := b.do(t, http.MethodGet, path, nil)
		var doc struct {
			OpenAPI string `json:"openapi"`
			Info    struct {
				Title string `json:"title"`
			} `json:"info"`
		}
		if r.status != http.StatusOK || !strings.HasPrefix(r.header.Get("Content-Type"), "application/json") {
			t.Fatalf("GET %s: %d %s", path, r.status, r.header.Get("Content-Type"))
		}
		if err := json.Unmarshal(r.body, &doc); err != nil || doc.Info.Title != title || !strings.HasPrefix(doc.OpenAPI, "3.0.") {
			t.Errorf("GET %s: openapi %q, title %q (%v)", path, doc.OpenAPI, doc.Info.Title, err)
		}
	}
	r := b.do(t, http.MethodGet, "/swagger/", nil)
	if r.status != http.StatusOK || !strings.Contains(string(r.body), "swagger-ui-bundle.js") ||
		!strings.Contains(string(r.body), "../openapi/dataplane.json") {
		t.Errorf("GET /swagger/: %d %s", r.status, r.body)
	}
	if r := b.do(t, http.MethodGet, "/swagger/swagger-ui-bundle.js", nil); r.status != http.StatusOK || len(r.body) < 100_000 {
		t.Errorf("GET /swagger/swagger-ui-bundle.js: %d, %d bytes", r.status, len(r.body))
	}
}
