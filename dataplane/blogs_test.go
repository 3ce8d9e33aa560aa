package dataplane

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/tenantplane/tenantplane/dataplane/blogs"
	"github.com/tenantplane/tenantplane/dataplane/pool"
	"github.com/tenantplane/tenantplane/dataplane/search"
	"github.com/tenantplane/tenantplane/tenant"
)

func TestBlogs(t *testing.T) {
	t.Parallel()
	e := setup(t, func(c *Config) { c.Outbox = true })
	ts := e.newTenants("acme")
	admin, _ := e.loginAdmin("acme")
	h := host("acme")
	bobID := e.createUser("acme", admin, "bob@acme.example")
	e.createUser("acme", admin, "eve@acme.example")
	bob, _ := e.login("acme", "bob@acme.example", "user password 1")
	eve, _ := e.login("acme", "eve@acme.example", "user password 1")

	var ids []int64
	for i := range 5 {
		ids = append(ids, e.createBlog("acme", bob, fmt.Sprintf("bob %d", i)))
	}
	adminBlog := e.createBlog("acme", admin, "admin's")

	got := e.mustDo(req{method: "GET", path: "/api/v1/blogs/" + strconv.FormatInt(ids[0], 10), host: h, token: eve}, 200).json(t)
	author := got["author"].(map[string]any)
	if got["title"] != "bob 0" || got["description"] != "about bob 0" || int64(author["id"].(float64)) != bobID ||
		author["email"] != "bob@acme.example" || got["created_at"] == nil || got["updated_at"] == nil {
		t.Fatalf("blog: %v", got)
	}

	// Newest first, in pages, filtered by author.
	var titles []string
	cursor := ""
	for {
		p := e.mustDo(req{method: "GET", path: "/api/v1/blogs?limit=2&author=" + strconv.FormatInt(bobID, 10) + "&cursor=" + cursor, host: h, token: eve}, 200).json(t)
		for _, it := range p["items"].([]any) {
			titles = append(titles, it.(map[string]any)["title"].(string))
		}
		if cursor = p["next_cursor"].(string); cursor == "" {
			break
		}
	}
	if strings.Join(titles, ",") != "bob 4,bob 3,bob 2,bob 1,bob 0" {
		t.Fatalf("bob's blogs, newest first: %v", titles)
	}
	all := e.mustDo(req{method: "GET", path: "/api/v1/blogs", host: h, token: eve}, 200).json(t)
	if n := len(all["items"].([]any)); n != 6 || all["next_cursor"] != "" {
		t.Fatalf("all blogs: %d items, next %q", n, all["next_cursor"])
	}

	// Only the author or an admin writes.
	path := "/api/v1/blogs/" + strconv.FormatInt(ids[1], 10)
	for _, r := range []req{
		{method: "PUT", path: path, body: map[string]any{"title": "eve's now"}},
		{method: "PATCH", path: path, body: map[string]any{"title": "eve's now"}},
		{method: "DELETE", path: path},
		{method: "PATCH", path: "/api/v1/blogs/" + strconv.FormatInt(adminBlog, 10), body: map[string]any{"title": "x"}},
	} {
		r.host, r.token = h, eve
		if got := e.do(r); got.status != http.StatusForbidden {
			t.Errorf("eve %s %s: %d %s", r.method, r.path, got.status, got.raw)
		}
	}
	p := e.mustDo(req{method: "PATCH", path: path, host: h, token: bob, body: map[string]any{"description": "patched"}}, 200).json(t)
	if p["title"] != "bob 1" || p["description"] != "patched" {
		t.Fatalf("patched: %v", p)
	}
	p = e.mustDo(req{method: "PUT", path: path, host: h, token: admin, body: map[string]any{"title": "moderated"}}, 200).json(t)
	if p["title"] != "moderated" || p["description"] != "" {
		t.Fatalf("put: %v", p)
	}
	e.mustDo(req{method: "DELETE", path: path, host: h, token: admin}, 204)
	e.mustDo(req{method: "GET", path: path, host: h, token: bob}, 404)
	e.mustDo(req{method: "DELETE", path: path, host: h, token: admin}, 404)

	// Every write left an outbox row in its transaction.
	var ops []string
	err := e.srv.pools.Read(context.Background(), ts[0], func(db pool.DB) error {
		rows, err := db.Query(context.Background(), `SELECT op FROM search_outbox WHERE blog_id = $1 ORDER BY id`, ids[1])
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var op string
			if err := rows.Scan(&op); err != nil {
				return err
			}
			ops = append(ops, op)
		}
		return rows.Err()
	})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(ops, ",") != "upsert,upsert,upsert,delete" {
		t.Fatalf("outbox of blog %d: %v", ids[1], ops)
	}
	// Blogs need authentication.
	e.mustDo(req{method: "GET", path: "/api/v1/blogs", host: h}, 401)
}

// fakeSearcher answers with fixed hits, whatever the query; it stands for the search
// backends, which are tested in their own package.
type fakeSearcher struct{ hits []blogs.Hit }

func (f fakeSearcher) Search(ctx context.Context, t *tenant.Tenant, db pool.DB, q string, limit int) ([]blogs.Hit, error) {
	// Prove the handle is the tenant's.
	var schema string
	if err := db.QueryRow(ctx, `SELECT current_schema()`).Scan(&schema); err != nil {
		return nil, err
	}
	if schema != t.SchemaName {
		return nil, fmt.Errorf("search ran in schema %q, not %q", schema, t.SchemaName)
	}
	return f.hits[:min(limit, len(f.hits))], nil
}

func TestSearchRoute(t *testing.T) {
	t.Parallel()
	searcher := &fakeSearcher{}
	e := setup(t, func(c *Config) { c.Searcher = searcher })
	e.newTenants("acme")
	admin, _ := e.loginAdmin("acme")
	h := host("acme")
	a := e.createBlog("acme", admin, "alpha")
	b := e.createBlog("acme", admin, "beta")
	searcher.hits = []blogs.Hit{
		{ID: b, Score: 2, TitleHighlight: "<em>be</em>ta"},
		{ID: 999, Score: 1.5}, // deleted since indexed: left out
		{ID: a, Score: 1, DescriptionHighlight: "about <em>al</em>pha"},
	}
	got := e.mustDo(req{method: "GET", path: "/api/v1/blogs/search?q=be", host: h, token: admin}, 200).json(t)
	items := got["items"].([]any)
	if len(items) != 2 {
		t.Fatalf("items: %v", items)
	}
	first, second := items[0].(map[string]any), items[1].(map[string]any)
	if first["title"] != "beta" || first["score"].(float64) != 2 || first["highlight"].(map[string]any)["title"] != "<em>be</em>ta" ||
		first["author"].(map[string]any)["email"] != "admin@acme.example" {
		t.Errorf("first hit: %v", first)
	}
	if second["title"] != "alpha" || second["highlight"].(map[string]any)["description"] != "about <em>al</em>pha" {
		t.Errorf("second hit: %v", second)
	}
	for q, code := range map[string]string{"": "invalid_query", "%20%20": "invalid_query", strings.Repeat("a", search.MaxQueryLen+1): "invalid_query", "%ff": "invalid_query"} {
		if r := e.do(req{method: "GET", path: "/api/v1/blogs/search?q=" + q, host: h, token: admin}); r.status != 400 || r.code() != code {
			t.Errorf("q=%.10q: %d %s", q, r.status, r.raw)
		}
	}
	e.mustDo(req{method: "GET", path: "/api/v1/blogs/search?q=" + strings.Repeat("é", search.MaxQueryLen), host: h, token: admin}, 200)

}

// TestDefaultPostgresSearch goes through the route with the default backend: Postgres
// full-text search in the tenant's own schema, consistent with the write.
func TestDefaultPostgresSearch(t *testing.T) {
	t.Parallel()
	e := setup(t, nil)
	e.newTenants("acme", "globex")
	admin, _ := e.loginAdmin("acme")
	other, _ := e.loginAdmin("globex")
	e.createBlog("acme", admin, "Postgres tuning notes")
	e.createBlog("acme", admin, "Gardening in spring")
	e.createBlog("globex", other, "Postgres secrets of globex")

	r := e.mustDo(req{method: "GET", path: "/api/v1/blogs/search?q=postg", host: host("acme"), token: admin}, 200)
	items := r.json(t)["items"].([]any)
	if len(items) != 1 {
		t.Fatalf("want acme's one Postgres blog, got %s", r.raw)
	}
	hit := items[0].(map[string]any)
	if hit["title"] != "Postgres tuning notes" || !strings.Contains(hit["highlight"].(map[string]any)["title"].(string), "<mark>Postgres</mark>") {
		t.Errorf("hit = %v", hit)
	}
	if strings.Contains(string(r.raw), "globex") {
		t.Errorf("another tenant's blog in the results: %s", r.raw)
	}
	// A typo still finds the title (trigram fallback).
	r = e.mustDo(req{method: "GET", path: "/api/v1/blogs/search?q=gardenig", host: host("acme"), token: admin}, 200)
	if !strings.Contains(string(r.raw), "Gardening in spring") {
		t.Errorf("typo search: %s", r.raw)
	}
}

func TestBadInput(t *testing.T) {
	t.Parallel()
	e := setup(t, nil)
	e.newTenants("acme")
	admin, _ := e.loginAdmin("acme")
	h := host("acme")
	blog := strconv.FormatInt(e.createBlog("acme", admin, "target"), 10)
	big := `{"title":"t","description":"` + strings.Repeat("x", 120<<10) + `"}`
	desc := `{"title":"t","description":"` + strings.Repeat("x", 101<<10) + `"}`
	cases := []struct {
		r    req
		want int
	}{
		{req{method: "POST", path: "/api/v1/blogs", body: `{"title":`}, 400},
		{req{method: "POST", path: "/api/v1/blogs", body: `not json`}, 400},
		{req{method: "POST", path: "/api/v1/blogs", body: `[]`}, 400},
		{req{method: "POST", path: "/api/v1/blogs", body: `{"title": 5}`}, 400},
		{req{method: "POST", path: "/api/v1/blogs", body: `{"title": "t", "extra": 1}`}, 400},
		{req{method: "POST", path: "/api/v1/blogs", body: `{"title": "t"} {"title": "u"}`}, 400},
		{req{method: "POST", path: "/api/v1/blogs", body: `{"title": ""}`}, 400},
		{req{method: "POST", path: "/api/v1/blogs", body: `{"title": "   "}`}, 400},
		{req{method: "POST", path: "/api/v1/blogs", body: `{"title": "` + strings.Repeat("é", 201) + `"}`}, 400},
		{req{method: "POST", path: "/api/v1/blogs", body: `{"title": "nul \u0000 inside"}`}, 400},
		{req{method: "POST", path: "/api/v1/blogs", body: `{"title": "two\nlines"}`}, 400}, // control characters, as in tenant names
		{req{method: "POST", path: "/api/v1/blogs", body: `{"title": "bell \u0007"}`}, 400},
		{req{method: "PATCH", path: "/api/v1/blogs/" + blog, body: `{"title": "tab\there"}`}, 400},
		{req{method: "POST", path: "/api/v1/blogs", body: `{"title": "t", "description": "nul \u0000"}`}, 400},
		{req{method: "POST", path: "/api/v1/blogs", body: `{"title": "\ud800 lone surrogate"}`}, 201},
		{req{method: "POST", path: "/api/v1/blogs", body: desc}, 400},
		{req{method: "POST", path: "/api/v1/blogs", body: big}, 413},
		{req{method: "POST", path: "/api/v1/blogs", body: ``}, 400},
		{req{method: "POST", path: "/api/v1/blogs", body: `{"title":"t"}`, header: map[string]string{"Content-Type": "text/plain"}}, 400},
		{req{method: "PUT", path: "/api/v1/blogs/" + blog, body: `{"description": "no title"}`}, 400},
		{req{method: "PATCH", path: "/api/v1/blogs/" + blog, body: `{"title": null}`}, 400}, // a title is never null (the document says so)
		{req{method: "PATCH", path: "/api/v1/blogs/" + blog, body: `{"title": ["a"]}`}, 400},
		{req{method: "GET", path: "/api/v1/blogs/abc"}, 404},
		{req{method: "GET", path: "/api/v1/blogs/-1"}, 404},
		{req{method: "GET", path: "/api/v1/blogs/99999999999999999999999"}, 404},
		{req{method: "DELETE", path: "/api/v1/blogs/1e3"}, 404},
		{req{method: "GET", path: "/api/v1/blogs?limit=0"}, 400},
		{req{method: "GET", path: "/api/v1/blogs?limit=101"}, 400},
		{req{method: "GET", path: "/api/v1/blogs?limit=ten"}, 400},
		{req{method: "GET", path: "/api/v1/blogs?cursor=garbage!"}, 400},
		{req{method: "GET", path: "/api/v1/blogs?cursor=bm90LmEuY3Vyc29y"}, 400},
		{req{method: "GET", path: "/api/v1/blogs?cursor=OTk5OTk5OTk5OTk5OTk5OTk5OTkuMQ"}, 400},
		{req{method: "GET", path: "/api/v1/blogs?cursor=LTkwMDAwMDAwMDAwMDAwMDAwMDAuMQ"}, 400},
		{req{method: "GET", path: "/api/v1/blogs?cursor=NS4xLjI"}, 400},
		{req{method: "GET", path: "/api/v1/blogs?cursor=LTk5OTk5OTk5OTk5OTk5OTk5LjE"}, 400},
		{req{method: "GET", path: "/api/v1/blogs?author=abc"}, 400},
		{req{method: "GET", path: "/api/v1/blogs?author=0"}, 400},
		{req{method: "GET", path: "/api/v1/users/abc"}, 404},
		{req{method: "GET", path: "/api/v1/users?cursor=%21%21"}, 400},
		{req{method: "PATCH", path: "/api/v1/users/1", body: `{"email": "not an email"}`}, 400},
		{req{method: "PATCH", path: "/api/v1/users/1", body: `{"is_admin": "yes"}`}, 400},
		{req{method: "POST", path: "/api/v1/users", body: `{"email": "a@b.example", "password": "` + strings.Repeat("p", 300) + `"}`}, 400},
		{req{method: "POST", path: "/api/v1/users", body: `{"email": "nul\u0000@b.example", "password": "long enough 1"}`}, 400},
		{req{method: "POST", path: "/api/v1/auth/token", body: `{"email": "nul\u0000@acme.example", "password": "x"}`}, 401},
		{req{method: "POST", path: "/api/v1/auth/token", body: `{"email": "admin@acme.example"}`}, 400},
		{req{method: "POST", path: "/api/v1/auth/token", body: `{"email": 1, "password": 2}`}, 400},
		{req{method: "POST", path: "/api/v1/auth/token/refresh", body: `{"refresh": "x.y.z"}`}, 401},
		{req{method: "POST", path: "/api/v1/auth/token/refresh", body: `{}`}, 401},
		{req{method: "POST", path: "/api/v1/auth/logout", body: `{"refresh": 5}`}, 400},
		{req{method: "POST", path: "/api/v1/auth/token/verify", body: `{"token": ""}`}, 401},
		{req{method: "POST", path: "/api/v1/blogs/" + blog}, 405},
		{req{method: "GET", path: "/api/v1/blogs/search"}, 400},
	}
	for _, c := range cases {
		c.r.host, c.r.token = h, admin
		got := e.do(c.r)
		if got.status != c.want {
			t.Errorf("%s %s %.40q: got %d %s, want %d", c.r.method, c.r.path, fmt.Sprint(c.r.body), got.status, got.raw, c.want)
		}
		if got.status >= 500 {
			t.Errorf("%s %s: 5xx", c.r.method, c.r.path)
		}
	}
}
