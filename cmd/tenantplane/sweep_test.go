package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"testing"

	"github.com/tenantplane/tenantplane/apidoc"
)

// startServe runs `tenantplane serve` with the cli's environment and returns its base URL
// and its logs; the server stops when the test ends.
func startServe(t *testing.T, c *cli) (string, *syncBuffer) {
	t.Helper()
	s := launchServe(t, c.env)
	return s.base, s.logs
}

// sweepClient sends raw requests to a served platform.
type sweepClient struct {
	t    *testing.T
	base string
}

func (s *sweepClient) do(method, path string, hdr map[string]string, body []byte) (int, []byte) {
	s.t.Helper()
	req, err := http.NewRequest(method, s.base+path, bytes.NewReader(body))
	if err != nil {
		s.t.Fatalf("%s %s: %v", method, path, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, out
}

func (s *sweepClient) json(method, path string, hdr map[string]string, body string, want int) map[string]any {
	s.t.Helper()
	status, out := s.do(method, path, hdr, []byte(body))
	if status != want {
		s.t.Fatalf("%s %s: %d %s, want %d", method, path, status, out, want)
	}
	var m map[string]any
	_ = json.Unmarshal(out, &m)
	return m
}

// badStrings are the hostile values of every text input: NUL bytes, invalid UTF-8,
// control characters, huge and out-of-range numbers, very long text.
var badStrings = []string{
	"a\x00b", "\xff\xfe\xfd", "\xc3\x28", "\x01\x02\x1f\x7f", "\u202e\u0000",
	"-1", "0", "99999999999999999999999", "1e309", "NaN", strings.Repeat("9", 400),
	strings.Repeat("x", 10_000), "%00", "../../etc/passwd", "' OR 1=1 --",
}

// badJSON are hostile values of a JSON property: the strings above (raw, so invalid UTF-8
// reaches the server as bytes), each also inside an array (for list fields), plus wrong
// types and extreme numbers.
var badJSON = func() []string {
	out := []string{"1e308", "-1e308", "99999999999999999999999", "-1", "0", "true", "[]", "{}", `[{"a":1}]`, "1.5"}
	for _, s := range badStrings {
		out = append(out, rawJSONString(s), "["+rawJSONString(s)+"]")
	}
	return out
}()

// rawJSONString quotes s as a JSON string without replacing invalid UTF-8, so the bytes
// reach the server as they are; NUL and control characters are escaped as JSON requires.
func rawJSONString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"' || c == '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c < 0x20:
			fmt.Fprintf(&b, `\u%04x`, c)
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// openAPI is the part of an OpenAPI document the sweep reads.
type openAPI struct {
	Paths      map[string]map[string]json.RawMessage `json:"paths"`
	Components struct {
		Schemas    map[string]schema    `json:"schemas"`
		Parameters map[string]parameter `json:"parameters"`
	} `json:"components"`
}

type parameter struct {
	Ref  string `json:"$ref"`
	Name string `json:"name"`
	In   string `json:"in"`
}

type schema struct {
	Ref        string            `json:"$ref"`
	Type       string            `json:"type"`
	Properties map[string]schema `json:"properties"`
}

// field is one property of a request body and its type.
type field struct{ name, typ string }

type operation struct {
	Parameters  []parameter `json:"parameters"`
	RequestBody struct {
		Content map[string]struct {
			Schema schema `json:"schema"`
		} `json:"content"`
	} `json:"requestBody"`
	Security []map[string][]string `json:"security"`
}

func (d *openAPI) param(p parameter) parameter {
	if p.Ref != "" {
		return d.Components.Parameters[strings.TrimPrefix(p.Ref, "#/components/parameters/")]
	}
	return p
}

func (d *openAPI) properties(s schema) []field {
	if s.Ref != "" {
		s = d.Components.Schemas[strings.TrimPrefix(s.Ref, "#/components/schemas/")]
	}
	var out []field
	for name, p := range s.Properties {
		out = append(out, field{name, p.Type})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

// TestBadInputSweep feeds hostile values to every parameter and body field of every
// operation of both OpenAPI documents, authenticated as a platform user and as a tenant
// admin so that the handlers themselves are reached, and requires that no answer is a
// 5xx and every error is the JSON error shape. A new route is covered as soon as it is
// documented.
func TestBadInputSweep(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	c.env["TENANTPLANE_SECRET_KEY"] = strings.Repeat("k", 40)
	c.env["TENANTPLANE_LISTEN"] = "127.0.0.1:0"
	c.ok("platform-passphrase\n", "users", "createsuperuser", "--email", "ops@example.com", "--password-stdin")
	base, logs := startServe(t, c)
	s := &sweepClient{t: t, base: base}

	s.json("POST", "/api/v1/tenants", nil, `{"slug":"acme","name":"Acme","admin_email":"admin@acme.test","admin_password":"a-long-passphrase"}`, http.StatusCreated)
	platform := s.json("POST", "/api/v1/auth/token", nil, `{"email":"ops@example.com","password":"platform-passphrase"}`, http.StatusOK)
	tenantHdr := map[string]string{"X-Tenant": "acme"}
	admin := s.json("POST", "/api/v1/auth/token", tenantHdr, `{"email":"admin@acme.test","password":"a-long-passphrase"}`, http.StatusOK)
	adminHdr := map[string]string{"X-Tenant": "acme", "Authorization": "Bearer " + admin["access"].(string)}
	other := s.json("POST", "/api/v1/users", adminHdr, `{"email":"other@acme.test","password":"another-passphrase"}`, http.StatusCreated)
	blog := s.json("POST", "/api/v1/blogs", adminHdr, `{"title":"Hello","description":"world"}`, http.StatusCreated)
	platformHdr := map[string]string{"Authorization": "Bearer " + platform["access"].(string)}

	// Valid values of path parameters, for mutations of the other inputs.
	valid := map[string]string{
		"slug":   "acme",
		"id":     fmt.Sprint(int64(other["id"].(float64))),
		"domain": "shop.example.org",
	}
	blogID := fmt.Sprint(int64(blog["id"].(float64)))

	var failures []string
	check := func(what string, status int, body []byte) {
		if status >= 500 {
			failures = append(failures, fmt.Sprintf("%s → %d %.200s", what, status, body))
			return
		}
		if status >= 400 {
			var e struct {
				Error struct{ Code string } `json:"error"`
			}
			if json.Unmarshal(body, &e) != nil || e.Error.Code == "" {
				failures = append(failures, fmt.Sprintf("%s → %d without a JSON error: %.200s", what, status, body))
			}
		}
	}

	// The dataplane goes first and fleet migrations last: a migration run started by a
	// plausible body makes the tenant answer 503 tenant_migrating for a while.
	type sweepOp struct {
		doc          string
		d            *openAPI
		path, method string
		raw          json.RawMessage
	}
	var sweep []sweepOp
	for _, doc := range []apidoc.Doc{apidoc.DataPlane(), apidoc.ControlPlane()} {
		d := &openAPI{}
		if err := json.Unmarshal(doc.JSON, d); err != nil {
			t.Fatalf("%s: %v", doc.Name, err)
		}
		var ops []sweepOp
		for path, byMethod := range d.Paths {
			for method, raw := range byMethod {
				switch method {
				case "get", "put", "post", "delete", "patch", "head", "options":
					ops = append(ops, sweepOp{doc.Name, d, path, method, raw})
				}
			}
		}
		sort.Slice(ops, func(i, j int) bool {
			li, lj := ops[i].path == "/api/v1/migrations", ops[j].path == "/api/v1/migrations"
			if li != lj {
				return lj
			}
			return ops[i].path+ops[i].method < ops[j].path+ops[j].method
		})
		sweep = append(sweep, ops...)
	}
	for _, so := range sweep {
		d, path, method := so.d, so.path, so.method
		var op operation
		if err := json.Unmarshal(so.raw, &op); err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		hdr := map[string]string{}
		for _, sec := range op.Security {
			if _, ok := sec["platformBearer"]; ok {
				hdr = platformHdr
			}
			if _, ok := sec["bearerAuth"]; ok {
				hdr = adminHdr
			}
		}
		if so.doc == "dataplane" && hdr["X-Tenant"] == "" {
			hdr = tenantHdr
		}
		method = strings.ToUpper(method)
		var params []parameter
		for _, p := range op.Parameters {
			params = append(params, d.param(p))
		}
		fill := func(override map[string]string) string {
			p := path
			for _, prm := range params {
				if prm.In != "path" {
					continue
				}
				v, ok := override[prm.Name]
				if !ok {
					v = valid[prm.Name]
					if prm.Name == "id" && strings.Contains(path, "/blogs/") {
						v = blogID
					}
				}
				p = strings.ReplaceAll(p, "{"+prm.Name+"}", url.PathEscape(v))
			}
			return p
		}
		var props []field
		for _, ct := range op.RequestBody.Content {
			props = d.properties(ct.Schema)
		}
		// Each path and query parameter, one hostile value at a time. Only hostile
		// path values are sent to operations without a body, so that a sweep never
		// deletes or suspends the tenant it runs in.
		for _, prm := range params {
			for _, bad := range badStrings {
				var target string
				switch prm.In {
				case "path":
					target = fill(map[string]string{prm.Name: bad})
				case "query":
					if method != "GET" && len(props) == 0 {
						continue
					}
					target = fill(nil) + "?" + url.Values{prm.Name: {bad}}.Encode()
				case "header":
					if strings.ContainsAny(bad, "\x00\x01\x02\x1f\x7f") || prm.Name == "X-Tenant" {
						continue // net/http refuses to send these; X-Tenant is swept by the resolver tests
					}
					if method != "GET" && len(props) == 0 {
						continue
					}
					h := map[string]string{prm.Name: bad}
					for k, v := range hdr {
						h[k] = v
					}
					status, body := s.do(method, fill(nil), h, bodyFor(props, "", ""))
					check(fmt.Sprintf("%s %s header %s=%q", method, path, prm.Name, bad), status, body)
					continue
				default:
					continue
				}
				status, body := s.do(method, target, hdr, bodyFor(props, "", ""))
				check(fmt.Sprintf("%s %s %s %s=%q", method, path, prm.In, prm.Name, bad), status, body)
			}
		}
		// Each body field, one hostile value at a time, and hostile whole bodies.
		if len(props) == 0 {
			continue
		}
		for _, prop := range props {
			for _, bad := range badJSON {
				status, body := s.do(method, fill(nil), hdr, bodyFor(props, prop.name, bad))
				check(fmt.Sprintf("%s %s body %s=%s", method, path, prop.name, bad), status, body)
			}
		}
		for _, whole := range []string{"", "null", "[]", `"x"`, "1e999", "{", `{"a\u0000":1}`, "\xff\xfe", strings.Repeat("[", 10_000)} {
			status, body := s.do(method, fill(nil), hdr, []byte(whole))
			check(fmt.Sprintf("%s %s whole body %.40q", method, path, whole), status, body)
		}
	}
	if len(failures) > 0 {
		sort.Strings(failures)
		t.Errorf("%d hostile inputs were not answered with a 4xx JSON error:\n%s", len(failures), strings.Join(failures, "\n"))
	}
	if strings.Contains(logs.String(), "panic") {
		t.Errorf("the server logged a panic:\n%s", logs.String())
	}
}

// plausible are valid values of well-known body fields, so that a hostile value in one
// field is not refused merely because another field is missing or malformed.
var plausible = map[string]string{
	"slug": `"sweep-tenant"`, "admin_email": `"sweep@example.org"`, "email": `"sweep@example.org"`,
	"admin_password": `"a-long-passphrase"`, "password": `"a-long-passphrase"`,
	"current_password": `"a-long-passphrase"`, "new_password": `"another-passphrase"`,
	"isolation": `"schema"`, "domain": `"sweep.example.org"`, "status": `"active"`,
}

// bodyFor returns a JSON object with every property set to a plausible value of its
// type, except prop set to the raw JSON value bad.
func bodyFor(props []field, prop, bad string) []byte {
	if len(props) == 0 {
		return nil
	}
	var b strings.Builder
	b.WriteByte('{')
	for i, p := range props {
		if i > 0 {
			b.WriteByte(',')
		}
		v, ok := plausible[p.name]
		if !ok {
			v = map[string]string{"integer": "1", "number": "1", "boolean": "false", "array": "[]", "object": "{}"}[p.typ]
			if v == "" {
				v = `"sweep"`
			}
		}
		if p.name == prop {
			v = bad
		}
		b.WriteString(rawJSONString(p.name) + ":" + v)
	}
	b.WriteByte('}')
	return []byte(b.String())
}
