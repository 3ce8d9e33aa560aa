// Package apidoc serves the platform's API documentation: the OpenAPI 3.0 documents of
// the control plane and of the dataplane at /openapi.json, and Swagger UI at /swagger/.
//
// It is a top-level leaf package because both planes use it: each plane's server calls
// Routes with its own document. The documents are written by hand from the handlers
// (controlplane.json, dataplane.json) and embedded; the planes' tests check that every
// route their engines register is documented, and nothing else. The Swagger UI assets
// are the pinned swagger-ui-dist files under swagger/, embedded as well, so the
// documentation needs nothing from outside the binary.
package apidoc

import (
	"bytes"
	"embed"
	"encoding/json"
	"fmt"
	"html/template"
	"net/http"
	"slices"
	"strings"

	"github.com/gin-gonic/gin"

	"github.com/tenantplane/tenantplane/web"
)

// SwaggerUIVersion is the version of the embedded swagger-ui-dist assets.
const SwaggerUIVersion = "5.35.0"

var (
	//go:embed controlplane.json
	controlPlaneJSON []byte
	//go:embed dataplane.json
	dataPlaneJSON []byte
	//go:embed swagger
	swaggerFS embed.FS
)

// Doc is an OpenAPI document and the name it is served under.
type Doc struct {
	// Name is the document's short name: Routes serves it at /openapi/{Name}.json.
	Name string
	// Title names the document in Swagger UI's document picker.
	Title string
	// JSON is the OpenAPI 3.0 document.
	JSON []byte
}

// ControlPlane returns the control plane's document: signup, platform login and the
// platform admin API.
func ControlPlane() Doc {
	return Doc{Name: "controlplane", Title: "Control plane", JSON: controlPlaneJSON}
}

// DataPlane returns the dataplane's document: a tenant's auth, users, blogs, search and
// notifications.
func DataPlane() Doc {
	return Doc{Name: "dataplane", Title: "Dataplane (tenant API)", JSON: dataPlaneJSON}
}

// assets are the files under /swagger/ besides the page, with their content types.
var assets = map[string]string{
	"swagger-ui-bundle.js":                        "text/javascript; charset=utf-8",
	"swagger-ui-standalone-preset.js":             "text/javascript; charset=utf-8",
	"swagger-ui.css":                              "text/css; charset=utf-8",
	"swagger-ui-bundle.js.LICENSE.txt":            "text/plain; charset=utf-8",
	"swagger-ui-standalone-preset.js.LICENSE.txt": "text/plain; charset=utf-8",
	"LICENSE": "text/plain; charset=utf-8",
	"NOTICE":  "text/plain; charset=utf-8",
}

// uiURL is one entry of Swagger UI's document picker.
type uiURL struct {
	URL  string `json:"url"`
	Name string `json:"name"`
}

var indexTemplate = template.Must(template.ParseFS(swaggerFS, "swagger/index.html"))

// Routes registers on r:
//
//   - GET /openapi.json: the primary document, the plane's own;
//   - GET /openapi/{name}.json: the primary and every other document, so that a plane
//     can offer another's (the control plane answers every request that names no
//     tenant, the dataplane's document included);
//   - GET /swagger/ (and /swagger/index.html): Swagger UI, with a picker over the
//     documents, the primary first; its assets under /swagger/.
//
// The page refers to the documents and assets by relative URLs, so r may be a group
// under a path prefix. It panics when a name is empty or taken twice, as gin does for
// conflicting routes.
func Routes(r gin.IRouter, primary Doc, others ...Doc) {
	docs := append([]Doc{primary}, others...)
	urls := []uiURL{{URL: "../openapi.json", Name: primary.Title}}
	seen := map[string]bool{}
	for _, d := range docs {
		if d.Name == "" || seen[d.Name] {
			panic(fmt.Sprintf("apidoc: document name %q is empty or used twice", d.Name))
		}
		seen[d.Name] = true
		r.GET("/openapi/"+d.Name+".json", serveDoc(d.JSON))
		if d.Name != primary.Name {
			urls = append(urls, uiURL{URL: "../openapi/" + d.Name + ".json", Name: d.Title})
		}
	}
	r.GET("/openapi.json", serveDoc(primary.JSON))

	var page bytes.Buffer
	err := indexTemplate.Execute(&page, struct {
		Title   string
		URLs    []uiURL
		Primary string
	}{primary.Title, urls, primary.Title})
	if err != nil {
		panic(fmt.Sprintf("apidoc: rendering the Swagger UI page: %v", err))
	}
	index := page.Bytes()
	r.GET("/swagger/*file", func(c *gin.Context) {
		name := strings.TrimPrefix(c.Param("file"), "/")
		if name == "" || name == "index.html" {
			c.Header("Cache-Control", "no-cache")
			c.Data(http.StatusOK, "text/html; charset=utf-8", index)
			return
		}
		ctype, ok := assets[name]
		if !ok {
			web.NotFound(c)
			return
		}
		b, err := swaggerFS.ReadFile("swagger/" + name)
		if err != nil {
			web.NotFound(c)
			return
		}
		c.Header("Cache-Control", "public, max-age=86400")
		c.Data(http.StatusOK, ctype, b)
	})
}

func serveDoc(doc []byte) gin.HandlerFunc {
	return func(c *gin.Context) {
		c.Header("Cache-Control", "no-cache")
		c.Data(http.StatusOK, "application/json; charset=utf-8", doc)
	}
}

// Operation is one method and path of a document, the path in OpenAPI form
// (/api/v1/blogs/{id}).
type Operation struct {
	Method string
	Path   string
}

func (o Operation) String() string { return o.Method + " " + o.Path }

var methods = []string{"get", "put", "post", "delete", "options", "head", "patch", "trace"}

// Operations returns every operation the document describes, sorted by path then
// method. It returns an error when the document is not JSON with a paths object.
func (d Doc) Operations() ([]Operation, error) {
	var doc struct {
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(d.JSON, &doc); err != nil {
		return nil, fmt.Errorf("decoding the %s document: %w", d.Name, err)
	}
	if doc.Paths == nil {
		return nil, fmt.Errorf("the %s document has no paths", d.Name)
	}
	var ops []Operation
	for p, item := range doc.Paths {
		for m := range item {
			if slices.Contains(methods, m) {
				ops = append(ops, Operation{Method: strings.ToUpper(m), Path: p})
			}
		}
	}
	slices.SortFunc(ops, cmpOps)
	return ops, nil
}

func cmpOps(a, b Operation) int {
	if c := strings.Compare(a.Path, b.Path); c != 0 {
		return c
	}
	return strings.Compare(a.Method, b.Method)
}

// OpenAPIPath turns a gin route path into OpenAPI form: :name and *name segments
// become {name}.
func OpenAPIPath(ginPath string) string {
	segs := strings.Split(ginPath, "/")
	for i, s := range segs {
		if len(s) > 1 && (s[0] == ':' || s[0] == '*') {
			segs[i] = "{" + s[1:] + "}"
		}
	}
	return strings.Join(segs, "/")
}

// Compare matches the document against the routes an engine serves (gin's
// Engine.Routes), leaving out the documentation routes themselves (/openapi.json,
// /openapi/..., /swagger/...) and the paths skip reports true for. It returns the
// routes the document lacks and the operations it describes that no route serves,
// each sorted; both are empty when the document matches the engine.
func (d Doc) Compare(routes gin.RoutesInfo, skip func(path string) bool) (undocumented, unserved []Operation, err error) {
	ops, err := d.Operations()
	if err != nil {
		return nil, nil, err
	}
	ignore := func(p string) bool {
		return p == "/openapi.json" || strings.HasPrefix(p, "/openapi/") || strings.HasPrefix(p, "/swagger/") ||
			(skip != nil && skip(p))
	}
	served := map[Operation]bool{}
	for _, r := range routes {
		if ignore(r.Path) {
			continue
		}
		served[Operation{Method: r.Method, Path: OpenAPIPath(r.Path)}] = true
	}
	documented := map[Operation]bool{}
	for _, o := range ops {
		if ignore(o.Path) {
			continue
		}
		documented[o] = true
		if !served[o] {
			unserved = append(unserved, o)
		}
	}
	for o := range served {
		if !documented[o] {
			undocumented = append(undocumented, o)
		}
	}
	slices.SortFunc(undocumented, cmpOps)
	slices.SortFunc(unserved, cmpOps)
	return undocumented, unserved, nil
}
