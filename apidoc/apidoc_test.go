package apidoc

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/gin-gonic/gin"

	"github.com/tenantplane/tenantplane/dataplane/auth"
	"github.com/tenantplane/tenantplane/dataplane/blogs"
	"github.com/tenantplane/tenantplane/dataplane/notify"
	"github.com/tenantplane/tenantplane/provisioner"
	"github.com/tenantplane/tenantplane/tenant"
	"github.com/tenantplane/tenantplane/web"
)

func init() { gin.SetMode(gin.TestMode) }

// decode returns the document as generic JSON.
func decode(t *testing.T, d Doc) map[string]any {
	t.Helper()
	var doc map[string]any
	if err := json.Unmarshal(d.JSON, &doc); err != nil {
		t.Fatalf("the %s document is not JSON: %v", d.Name, err)
	}
	return doc
}

// resolve follows a local JSON pointer ("#/components/schemas/Blog") in doc.
func resolve(doc map[string]any, ref string) (any, bool) {
	rest, ok := strings.CutPrefix(ref, "#/")
	if !ok {
		return nil, false
	}
	var cur any = doc
	for _, part := range strings.Split(rest, "/") {
		part = strings.ReplaceAll(strings.ReplaceAll(part, "~1", "/"), "~0", "~")
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = m[part]; !ok {
			return nil, false
		}
	}
	return cur, true
}

// deref returns v, or what it refers to when it is a {"$ref": ...} object.
func deref(t *testing.T, doc map[string]any, v any) map[string]any {
	t.Helper()
	m, _ := v.(map[string]any)
	if ref, ok := m["$ref"].(string); ok {
		target, ok := resolve(doc, ref)
		if !ok {
			t.Fatalf("unresolved $ref %q", ref)
		}
		m, _ = target.(map[string]any)
	}
	return m
}

// walk calls fn with the JSON path and value of every object in v.
func walk(path string, v any, fn func(path string, m map[string]any)) {
	switch x := v.(type) {
	case map[string]any:
		fn(path, x)
		for k, e := range x {
			walk(path+"/"+k, e, fn)
		}
	case []any:
		for i, e := range x {
			walk(fmt.Sprintf("%s/%d", path, i), e, fn)
		}
	}
}

var templateParam = regexp.MustCompile(`\{([^}]+)\}`)

// TestDocumentsAreValid checks what a client generator or Swagger UI trips over: the
// version, dangling references, operations without ids or success answers, undeclared
// path parameters, unknown security schemes, and request bodies that allow fields the
// server refuses.
func TestDocumentsAreValid(t *testing.T) {
	t.Parallel()
	for _, d := range []Doc{ControlPlane(), DataPlane()} {
		t.Run(d.Name, func(t *testing.T) {
			t.Parallel()
			doc := decode(t, d)
			if v, _ := doc["openapi"].(string); !strings.HasPrefix(v, "3.0.") {
				t.Errorf("openapi = %q, want 3.0.x", v)
			}
			info, _ := doc["info"].(map[string]any)
			if info["title"] == nil || info["version"] == nil {
				t.Errorf("info needs a title and a version: %v", info)
			}
			refs := 0
			walk("#", doc, func(path string, m map[string]any) {
				ref, ok := m["$ref"].(string)
				if !ok {
					return
				}
				refs++
				if _, ok := resolve(doc, ref); !ok {
					t.Errorf("%s: $ref %q does not resolve", path, ref)
				}
			})
			if refs == 0 {
				t.Error("no $ref at all: the walk is broken")
			}

			schemes, _ := deref(t, doc, doc["components"])["securitySchemes"].(map[string]any)
			ops, err := d.Operations()
			if err != nil {
				t.Fatal(err)
			}
			if len(ops) < 10 {
				t.Fatalf("only %d operations", len(ops))
			}
			ids := map[string]string{}
			paths := doc["paths"].(map[string]any)
			for _, o := range ops {
				op := paths[o.Path].(map[string]any)[strings.ToLower(o.Method)].(map[string]any)
				id, _ := op["operationId"].(string)
				if id == "" {
					t.Errorf("%s has no operationId", o)
				} else if other, dup := ids[id]; dup {
					t.Errorf("%s and %s share operationId %q", o, other, id)
				}
				ids[id] = o.String()

				declared := map[string]bool{}
				params, _ := op["parameters"].([]any)
				for _, p := range params {
					pm := deref(t, doc, p)
					if pm["in"] == "path" {
						declared[pm["name"].(string)] = true
						if pm["required"] != true {
							t.Errorf("%s: path parameter %v must be required", o, pm["name"])
						}
					}
				}
				for _, m := range templateParam.FindAllStringSubmatch(o.Path, -1) {
					if !declared[m[1]] {
						t.Errorf("%s: path parameter {%s} is not declared", o, m[1])
					}
					delete(declared, m[1])
				}
				if len(declared) > 0 {
					t.Errorf("%s declares path parameters not in the path: %v", o, declared)
				}

				responses, _ := op["responses"].(map[string]any)
				success := false
				for code, r := range responses {
					if code[0] == '2' || code == "101" {
						success = true
					}
					if code[0] == '4' || code[0] == '5' {
						content, _ := deref(t, doc, r)["content"].(map[string]any)
						js, _ := content["application/json"].(map[string]any)
						if ref, _ := js["schema"].(map[string]any)["$ref"].(string); ref != "#/components/schemas/Error" {
							t.Errorf("%s: answer %s is not the Error shape", o, code)
						}
					}
				}
				if !success {
					t.Errorf("%s has no success answer", o)
				}

				security, _ := op["security"].([]any)
				for _, req := range security {
					for name := range req.(map[string]any) {
						if schemes[name] == nil {
							t.Errorf("%s: unknown security scheme %q", o, name)
						}
					}
				}

				if rb, ok := op["requestBody"]; ok {
					content, _ := deref(t, doc, rb)["content"].(map[string]any)
					js, isJSON := content["application/json"].(map[string]any)
					schema := deref(t, doc, js["schema"])
					if isJSON && schema["additionalProperties"] != false {
						t.Errorf("%s: the server refuses unknown fields, so its body schema needs additionalProperties: false", o)
					}
				}
			}
		})
	}
}

// jsonFields returns the JSON field names of a struct type and whether each is
// omitempty, following embedded structs as encoding/json does.
func jsonFields(t reflect.Type) map[string]bool {
	out := map[string]bool{}
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" || (!f.IsExported() && !f.Anonymous) {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" {
			ft := f.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				for k, v := range jsonFields(ft) {
					out[k] = v
				}
				continue
			}
		}
		if name == "" {
			name = f.Name
		}
		out[name] = strings.Contains(opts, "omitempty")
	}
	return out
}

// TestSchemasMatchGoTypes keeps the documented answers in step with the structs the
// handlers encode: the same fields, required exactly when always present.
func TestSchemasMatchGoTypes(t *testing.T) {
	t.Parallel()
	cp, dp := decode(t, ControlPlane()), decode(t, DataPlane())
	for _, tc := range []struct {
		doc    map[string]any
		schema string
		value  any
	}{
		{cp, "Tenant", tenant.Tenant{}},
		{cp, "Domain", tenant.Domain{}},
		{cp, "Event", tenant.Event{}},
		{cp, "MigrationRun", provisioner.Run{}},
		{cp, "MigrationEntry", provisioner.Entry{}},
		{cp, "MigrationRunOptions", provisioner.RunOptions{}},
		{cp, "TokenPair", auth.Pair{}},
		{cp, "Error", web.ErrorBody{}},
		{cp, "Error/properties/error", web.ErrorDetail{}},
		{dp, "TokenPair", auth.Pair{}},
		{dp, "User", auth.User{}},
		{dp, "Blog", blogs.Blog{}},
		{dp, "Author", blogs.Author{}},
		{dp, "Notification", notify.Message{}},
		{dp, "Error", web.ErrorBody{}},
	} {
		title, _ := tc.doc["info"].(map[string]any)["title"].(string)
		t.Run(title+"/"+tc.schema, func(t *testing.T) {
			s, ok := resolve(tc.doc, "#/components/schemas/"+tc.schema)
			if !ok {
				t.Fatalf("no schema %s", tc.schema)
			}
			schema := s.(map[string]any)
			props, _ := schema["properties"].(map[string]any)
			required := map[string]bool{}
			for _, r := range schema["required"].([]any) {
				required[r.(string)] = true
			}
			fields := jsonFields(reflect.TypeOf(tc.value))
			for name, omitempty := range fields {
				if props[name] == nil {
					t.Errorf("field %q of %T is not documented", name, tc.value)
				}
				if !omitempty && !required[name] {
					t.Errorf("field %q is always present, so it should be required", name)
				}
				if omitempty && required[name] {
					t.Errorf("field %q is omitted when empty, so it must not be required", name)
				}
			}
			for name := range props {
				if _, ok := fields[name]; !ok {
					t.Errorf("documented property %q is not a field of %T", name, tc.value)
				}
			}
		})
	}
}

func get(t *testing.T, h http.Handler, path string) (*http.Response, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	res := rec.Result()
	body, _ := io.ReadAll(res.Body)
	return res, string(body)
}

func TestRoutesServeDocumentsAndSwaggerUI(t *testing.T) {
	t.Parallel()
	e := gin.New()
	e.NoRoute(web.NotFound)
	Routes(e, ControlPlane(), DataPlane())

	for path, want := range map[string][]byte{
		"/openapi.json":              ControlPlane().JSON,
		"/openapi/controlplane.json": ControlPlane().JSON,
		"/openapi/dataplane.json":    DataPlane().JSON,
	} {
		res, body := get(t, e, path)
		if res.StatusCode != http.StatusOK || !strings.HasPrefix(res.Header.Get("Content-Type"), "application/json") {
			t.Errorf("GET %s: %d %s", path, res.StatusCode, res.Header.Get("Content-Type"))
		}
		if body != string(want) {
			t.Errorf("GET %s did not answer the document", path)
		}
	}

	for _, path := range []string{"/swagger/", "/swagger/index.html"} {
		res, body := get(t, e, path)
		if res.StatusCode != http.StatusOK || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/html") {
			t.Fatalf("GET %s: %d %s", path, res.StatusCode, res.Header.Get("Content-Type"))
		}
		for _, want := range []string{
			`src="swagger-ui-bundle.js"`, `src="swagger-ui-standalone-preset.js"`, `href="swagger-ui.css"`,
			`"url":"../openapi.json","name":"Control plane"`,
			`"url":"../openapi/dataplane.json","name":"Dataplane (tenant API)"`,
		} {
			if !strings.Contains(body, want) {
				t.Errorf("GET %s: the page lacks %s:\n%s", path, want, body)
			}
		}
	}

	res, _ := get(t, e, "/swagger")
	if res.StatusCode != http.StatusMovedPermanently || res.Header.Get("Location") != "/swagger/" {
		t.Errorf("GET /swagger: %d to %q, want a redirect to /swagger/", res.StatusCode, res.Header.Get("Location"))
	}

	for name, ctype := range map[string]string{
		"swagger-ui-bundle.js":            "text/javascript",
		"swagger-ui-standalone-preset.js": "text/javascript",
		"swagger-ui.css":                  "text/css",
		"LICENSE":                         "text/plain",
	} {
		res, body := get(t, e, "/swagger/"+name)
		want, err := os.ReadFile("swagger/" + name)
		if err != nil {
			t.Fatal(err)
		}
		if res.StatusCode != http.StatusOK || !strings.HasPrefix(res.Header.Get("Content-Type"), ctype) || body != string(want) {
			t.Errorf("GET /swagger/%s: %d %s, %d bytes (want %d)", name, res.StatusCode, res.Header.Get("Content-Type"), len(body), len(want))
		}
	}

	for _, path := range []string{"/swagger/README.md", "/swagger/nope.js", "/swagger/../apidoc.go", "/openapi/other.json"} {
		res, body := get(t, e, path)
		if res.StatusCode != http.StatusNotFound || !strings.Contains(body, `"code":"route_not_found"`) {
			t.Errorf("GET %s: %d %s, want 404 route_not_found", path, res.StatusCode, body)
		}
	}
}

func TestRoutesWithOneDocument(t *testing.T) {
	t.Parallel()
	e := gin.New()
	Routes(e, DataPlane())
	_, page := get(t, e, "/swagger/")
	if !strings.Contains(page, `"url":"../openapi.json","name":"Dataplane (tenant API)"`) || strings.Contains(page, "Control plane") {
		t.Errorf("the page should offer the dataplane document only:\n%s", page)
	}
	if res, _ := get(t, e, "/openapi/controlplane.json"); res.StatusCode != http.StatusNotFound {
		t.Errorf("GET /openapi/controlplane.json: %d, want 404", res.StatusCode)
	}
}

func TestRoutesRefusesDuplicateNames(t *testing.T) {
	t.Parallel()
	defer func() {
		if recover() == nil {
			t.Error("Routes accepted the same document name twice")
		}
	}()
	Routes(gin.New(), DataPlane(), DataPlane())
}

func TestSwaggerUIVersion(t *testing.T) {
	t.Parallel()
	bundle, err := os.ReadFile("swagger/swagger-ui-bundle.js")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(bundle), `PACKAGE_VERSION:"`+SwaggerUIVersion+`"`) {
		t.Errorf("swagger-ui-bundle.js is not version %s", SwaggerUIVersion)
	}
	readme, err := os.ReadFile("swagger/README.md")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(readme), "**"+SwaggerUIVersion+"**") {
		t.Errorf("swagger/README.md does not name version %s", SwaggerUIVersion)
	}
}

func TestOpenAPIPath(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"/healthz":                              "/healthz",
		"/api/v1/blogs/:id":                     "/api/v1/blogs/{id}",
		"/api/v1/tenants/:slug/domains/:domain": "/api/v1/tenants/{slug}/domains/{domain}",
		"/files/*path":                          "/files/{path}",
	} {
		if got := OpenAPIPath(in); got != want {
			t.Errorf("OpenAPIPath(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestCompare checks the comparison the planes' route coverage tests rely on: a route
// missing from the document, or documented but not served, is reported.
func TestCompare(t *testing.T) {
	t.Parallel()
	doc := Doc{Name: "test", JSON: []byte(`{"openapi":"3.0.3","paths":{
		"/a/{id}":{"get":{},"delete":{},"parameters":[]},
		"/gone":{"post":{}}}}`)}
	e := gin.New()
	noop := func(*gin.Context) {}
	e.GET("/a/:id", noop)
	e.DELETE("/a/:id", noop)
	e.PATCH("/a/:id", noop)
	e.GET("/test/only", noop)
	Routes(e, doc)
	undocumented, unserved, err := doc.Compare(e.Routes(), func(p string) bool { return strings.HasPrefix(p, "/test/") })
	if err != nil {
		t.Fatal(err)
	}
	if want := []Operation{{"PATCH", "/a/{id}"}}; !slices.Equal(undocumented, want) {
		t.Errorf("undocumented = %v, want %v", undocumented, want)
	}
	if want := []Operation{{"POST", "/gone"}}; !slices.Equal(unserved, want) {
		t.Errorf("unserved = %v, want %v", unserved, want)
	}
	if _, _, err := (Doc{Name: "bad", JSON: []byte(`{`)}).Compare(nil, nil); err == nil {
		t.Error("Compare accepted a document that is not JSON")
	}
}
