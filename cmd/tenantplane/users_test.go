package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
)

func TestCLIPlatformUsers(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	c.ok("platform-passphrase\n", "users", "createsuperuser", "--email", "ops@example.com", "--password-stdin")
	if out := c.ok("platform-passphrase\n", "users", "create", "second@example.com", "--password-stdin"); !strings.Contains(out, "superuser second@example.com created") {
		t.Errorf("create: %q", out)
	}
	list := c.ok("", "users", "list")
	for _, want := range []string{"EMAIL", "ops@example.com", "second@example.com", "active"} {
		if !strings.Contains(list, want) {
			t.Errorf("list lacks %q:\n%s", want, list)
		}
	}
	c.fails(2, "--admin applies with --tenant", "platform-passphrase\n", "users", "create", "x@example.com", "--admin", "--password-stdin")
	c.fails(2, "at least 8", "short\n", "users", "changepassword", "ops@example.com", "--password-stdin")
	c.ok("new-platform-passphrase\n", "users", "changepassword", "ops@example.com", "--password-stdin")
	c.fails(1, "not found", "new-platform-passphrase\n", "users", "changepassword", "nobody@example.com", "--password-stdin")

	c.ok("", "users", "deactivate", "OPS@example.com")
	c.fails(1, "last active platform user", "", "users", "deactivate", "second@example.com")
	var users []userRow
	if err := json.Unmarshal([]byte(c.ok("", "users", "list", "-o", "json")), &users); err != nil || len(users) != 2 {
		t.Fatalf("list -o json: %v %v", users, err)
	}
	for _, u := range users {
		if u.IsActive != (u.Email == "second@example.com") {
			t.Errorf("after deactivations: %+v", u)
		}
	}
}

func TestCLITenantUsers(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	c.ok("a-long-passphrase\n", "tenants", "create", "acme", "--admin-email", "admin@acme.test", "--password-stdin")
	c.ok("an-editor-passphrase\n", "users", "create", "editor@acme.test", "--tenant", "acme", "--password-stdin")
	list := c.ok("", "users", "list", "--tenant", "acme")
	for _, want := range []string{"ADMIN", "admin@acme.test", "editor@acme.test"} {
		if !strings.Contains(list, want) {
			t.Errorf("tenant list lacks %q:\n%s", want, list)
		}
	}
	if strings.Contains(c.ok("", "users", "list"), "acme.test") {
		t.Error("the platform list shows tenant users")
	}
	c.fails(1, "at least one active admin", "", "users", "deactivate", "admin@acme.test", "--tenant", "acme")
	c.fails(2, "not a valid email", "an-editor-passphrase\n", "users", "create", "nope", "--tenant", "acme", "--password-stdin")
	c.fails(1, "exists", "an-editor-passphrase\n", "users", "create", "EDITOR@acme.test", "--tenant", "acme", "--password-stdin")
	c.fails(2, "differ from the email", "EDITOR@acme.test\n", "users", "changepassword", "editor@acme.test", "--tenant", "acme", "--password-stdin")
	c.ok("a-new-editor-passphrase\n", "users", "changepassword", "editor@acme.test", "--tenant", "acme", "--password-stdin")
	c.ok("", "users", "deactivate", "editor@acme.test", "--tenant", "acme")
	c.fails(1, "no user", "", "users", "deactivate", "ghost@acme.test", "--tenant", "acme")
	c.fails(1, "not found", "", "users", "list", "--tenant", "ghost")
}

// TestCLIImportDjangoUsers imports an export of the Django app's users, then logs in
// through the tenant API with a Django user's old password.
func TestCLIImportDjangoUsers(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	c.ok("a-long-passphrase\n", "tenants", "create", "acme", "--admin-email", "admin@acme.test", "--password-stdin")
	c.fails(2, "--tenant is required", "", "users", "import", "testdata/django_users.csv")

	out, _, code := c.run("", "users", "import", "--tenant", "acme", "testdata/django_users.csv", "-o", "json")
	var res struct {
		Imported, Exists, Refused int
		Rows                      []importResult
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("import output %q: %v", out, err)
	}
	if code != 1 || res.Imported != 3 || res.Refused != 3 {
		t.Fatalf("import: exit %d, %+v; want 3 imported and 3 refused, exit 1", code, res)
	}
	reasons := map[string]string{}
	for _, r := range res.Rows {
		reasons[r.Email] = r.Result + ": " + r.Reason
	}
	for addr, want := range map[string]string{"not-an-email": "email", "weak@acme.test": "hash", "Reader@acme.test": "line 3"} {
		if !strings.Contains(reasons[addr], want) {
			t.Errorf("row %s: %q, want a reason mentioning %q", addr, reasons[addr], want)
		}
	}
	// A second run imports nothing twice.
	out, _, _ = c.run("", "users", "import", "--tenant", "acme", "testdata/django_users.csv")
	if !strings.Contains(out, "0 imported, 3 already present, 3 refused") {
		t.Errorf("re-run:\n%s", out)
	}
	// --strict refuses the whole file for one bad row.
	c.fails(2, "nothing imported", "", "users", "import", "--tenant", "acme", "--strict", "testdata/django_users.json")
	if strings.Contains(c.ok("", "users", "list", "--tenant", "acme"), "editor@acme.test") {
		t.Fatal("--strict imported a row of a refused file")
	}
	out, _, _ = c.run("", "users", "import", "--tenant", "acme", "testdata/django_users.json")
	if !strings.Contains(out, "1 imported, 1 already present, 1 refused") {
		t.Errorf("JSON import:\n%s", out)
	}
	var users []userRow
	_ = json.Unmarshal([]byte(c.ok("", "users", "list", "--tenant", "acme", "-o", "json")), &users)
	got := map[string]userRow{}
	for _, u := range users {
		got[u.Email] = u
	}
	if !got["owner@acme.test"].IsAdmin || got["reader@acme.test"].IsAdmin || !got["editor@acme.test"].IsAdmin || got["gone@acme.test"].IsActive {
		t.Errorf("imported flags: %+v", got)
	}

	base := c.serve(t)
	loginAt := func(tenantHdr, addr, pw string) (int, string) {
		req, _ := http.NewRequest("POST", base+"/api/v1/auth/token", strings.NewReader(`{"email":"`+addr+`","password":"`+pw+`"}`))
		req.Header.Set("Content-Type", "application/json")
		if tenantHdr != "" {
			req.Header.Set("X-Tenant", tenantHdr)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	login := func(addr, pw string) int {
		s, _ := loginAt("acme", addr, pw)
		return s
	}
	// Without a tenant the login is the platform's, and its refusal says so.
	if s, body := loginAt("", "owner@acme.test", "django-passphrase"); s != http.StatusUnauthorized ||
		!strings.Contains(body, "invalid_credentials") || !strings.Contains(body, "this is the platform login") {
		t.Errorf("platform login with a tenant user's credentials: %d %s", s, body)
	}
	if s := login("owner@acme.test", "django-passphrase"); s != http.StatusOK {
		t.Fatalf("login with the Django password: %d", s)
	}
	if s := login("gone@acme.test", "django-passphrase"); s != http.StatusUnauthorized {
		t.Errorf("an inactive Django user logged in: %d", s)
	}
	if h := c.tenantHash(t, "owner@acme.test"); !strings.HasPrefix(h, "$argon2id$") {
		t.Errorf("the Django hash was not rehashed on login: %s", h)
	}
	if s := login("owner@acme.test", "django-passphrase"); s != http.StatusOK {
		t.Errorf("login after the rehash: %d", s)
	}
}

// tenantHash reads the stored password hash of the acme user addr.
func (c *cli) tenantHash(t *testing.T, addr string) string {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, c.dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var schema, hash string
	if err := conn.QueryRow(ctx, `SELECT schema_name FROM tenants WHERE slug = 'acme'`).Scan(&schema); err != nil {
		t.Fatal(err)
	}
	if err := conn.QueryRow(ctx, `SELECT password_hash FROM `+pgx.Identifier{schema, "users"}.Sanitize()+` WHERE email = $1`, addr).Scan(&hash); err != nil {
		t.Fatal(err)
	}
	return hash
}

// serve runs `tenantplane serve` on free ports until the test ends and returns its base
// URL.
func (c *cli) serve(t *testing.T) string {
	t.Helper()
	return launchServe(t, c.env).base
}
