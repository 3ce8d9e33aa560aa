package controlplane

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tenantplane/tenantplane/apperr"
	"github.com/tenantplane/tenantplane/tenant"
	"github.com/tenantplane/tenantplane/throttle"
	"github.com/tenantplane/tenantplane/token"
)

func TestPlatformUsers(t *testing.T) {
	t.Parallel()
	b := setup(t, Config{})
	ctx := context.Background()

	if _, err := b.users.Create(ctx, "ops@example.com", "a-good-password"); err != nil {
		t.Fatal(err)
	}
	_, err := b.users.Create(ctx, "OPS@example.com", "another-password")
	if !errors.Is(err, apperr.ErrConflict) {
		t.Fatalf("same email, other case: %v, want a conflict", err)
	}
	if _, err := b.users.Create(ctx, "not-an-email", "a-good-password"); !errors.Is(err, apperr.ErrInvalid) {
		t.Fatalf("bad email: %v, want invalid", err)
	}
	if _, err := b.users.Create(ctx, "weak@example.com", "short"); !errors.Is(err, apperr.ErrInvalid) {
		t.Fatalf("weak password: %v, want invalid", err)
	}
	u, err := b.users.Authenticate(ctx, "Ops@Example.com", "a-good-password")
	if err != nil || u.Email != "ops@example.com" {
		t.Fatalf("authenticating with the email in another case: %v %+v", err, u)
	}
	for _, tc := range [][2]string{{"ops@example.com", "wrong-password"}, {"nobody@example.com", "a-good-password"}, {"a\x00b", "x"}} {
		if _, err := b.users.Authenticate(ctx, tc[0], tc[1]); !errors.Is(err, apperr.ErrUnauthenticated) {
			t.Fatalf("Authenticate(%q): %v, want unauthenticated", tc[0], err)
		}
	}
}

func TestPlatformLoginAndTokens(t *testing.T) {
	t.Parallel()
	b := setup(t, Config{})
	if _, err := b.users.Create(context.Background(), "ops@example.com", "a-good-password"); err != nil {
		t.Fatal(err)
	}
	login := func(email, pw string) response {
		return b.do(t, "POST", "/api/v1/auth/token", map[string]string{"email": email, "password": pw})
	}

	r := login("ops@example.com", "a-good-password").wantStatus(t, http.StatusOK)
	var pair tokenPair
	if err := json.Unmarshal(r.body, &pair); err != nil || pair.Access == "" || pair.Refresh == "" || pair.TokenType != "Bearer" || pair.ExpiresIn <= 0 {
		t.Fatalf("login answered %s", r.body)
	}

	// A wrong password and an unknown email get the very same answer.
	bad := login("ops@example.com", "wrong-password").wantStatus(t, http.StatusUnauthorized)
	unknown := login("nobody@example.com", "a-good-password").wantStatus(t, http.StatusUnauthorized)
	if string(bad.body) != string(unknown.body) {
		t.Fatalf("wrong password answers %s but unknown email %s", bad.body, unknown.body)
	}

	b.do(t, "GET", "/api/v1/tenants", nil, bearer(pair.Access)...).wantStatus(t, http.StatusOK)

	// Refresh rotates: the new pair works.
	r = b.do(t, "POST", "/api/v1/auth/token/refresh", map[string]string{"refresh": pair.Refresh}).wantStatus(t, http.StatusOK)
	var next tokenPair
	if err := json.Unmarshal(r.body, &next); err != nil || next.Access == "" || next.Refresh == "" || next.Refresh == pair.Refresh {
		t.Fatalf("refresh answered %s", r.body)
	}
	b.do(t, "GET", "/api/v1/tenants", nil, bearer(next.Access)...).wantStatus(t, http.StatusOK)

	// A refresh token is single use; presenting a used one (a stolen copy) revokes its
	// whole family, the legitimate holder's newest token included.
	r = b.do(t, "POST", "/api/v1/auth/token/refresh", map[string]string{"refresh": next.Refresh}).wantStatus(t, http.StatusOK)
	var third tokenPair
	if err := json.Unmarshal(r.body, &third); err != nil || third.Refresh == "" {
		t.Fatalf("second refresh answered %s", r.body)
	}
	b.do(t, "POST", "/api/v1/auth/token/refresh", map[string]string{"refresh": pair.Refresh}).wantStatus(t, http.StatusUnauthorized)
	b.do(t, "POST", "/api/v1/auth/token/refresh", map[string]string{"refresh": third.Refresh}).wantStatus(t, http.StatusUnauthorized)
	// A fresh login starts a new family.
	r = login("ops@example.com", "a-good-password").wantStatus(t, http.StatusOK)
	if err := json.Unmarshal(r.body, &next); err != nil || next.Refresh == "" {
		t.Fatalf("login answered %s", r.body)
	}

	// One kind of token is never taken for the other.
	b.do(t, "POST", "/api/v1/auth/token/refresh", map[string]string{"refresh": pair.Access}).wantStatus(t, http.StatusUnauthorized)
	b.do(t, "GET", "/api/v1/tenants", nil, bearer(pair.Refresh)...).wantStatus(t, http.StatusUnauthorized)

	// Protected endpoints want a platform access token.
	tenantTok, _, err := b.issuer.Issue(token.Access, "1", "acme", token.Claims{Admin: true})
	if err != nil {
		t.Fatal(err)
	}
	for name, headers := range map[string][]string{
		"no token":       nil,
		"garbage":        bearer("not.a.token"),
		"basic auth":     {"Authorization", "Basic b3BzOnB3"},
		"tenant token":   bearer(tenantTok),
		"empty bearer":   {"Authorization", "Bearer "},
		"bad sub claims": bearer(mustIssue(t, b, "not-a-uuid")),
	} {
		r := b.do(t, "GET", "/api/v1/tenants", nil, headers...)
		if r.status != http.StatusUnauthorized {
			t.Errorf("%s: status %d, want 401 (%s)", name, r.status, r.body)
		}
	}

	// A deactivated user's tokens stop working at once.
	if _, err := b.db.Exec(context.Background(), `UPDATE platform_users SET is_active = false`); err != nil {
		t.Fatal(err)
	}
	b.do(t, "GET", "/api/v1/tenants", nil, bearer(next.Access)...).wantStatus(t, http.StatusUnauthorized)
	b.do(t, "POST", "/api/v1/auth/token/refresh", map[string]string{"refresh": next.Refresh}).wantStatus(t, http.StatusUnauthorized)
	login("ops@example.com", "a-good-password").wantStatus(t, http.StatusUnauthorized)
}

func mustIssue(t *testing.T, b *bundle, sub string) string {
	t.Helper()
	tok, _, err := b.issuer.Issue(token.Access, sub, Audience, token.Claims{})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestLoginThrottle(t *testing.T) {
	t.Parallel()
	b := setup(t, Config{Login: throttle.Login{Account: throttle.Rule{Burst: 3, Refill: time.Hour}}})
	for range 3 {
		b.do(t, "POST", "/api/v1/auth/token", map[string]string{"email": "x@example.com", "password": "guess-guess"}).
			wantStatus(t, http.StatusUnauthorized)
	}
	r := b.do(t, "POST", "/api/v1/auth/token", map[string]string{"email": "x@example.com", "password": "guess-guess"}).
		wantStatus(t, http.StatusTooManyRequests)
	if r.header.Get("Retry-After") == "" {
		t.Error("429 without Retry-After")
	}
}

func TestListTenantsPaginates(t *testing.T) {
	t.Parallel()
	// Not started: Start would resume the registered tenants in the background.
	b := setup(t, Config{}, setupOptions{noStart: true})
	tok := b.adminToken(t)
	slugs := []string{"echo", "alpha", "delta", "bravo", "charlie"}
	for _, s := range slugs {
		b.register(t, s)
	}
	for _, s := range []string{"bravo", "delta"} {
		tn, err := b.store.Get(context.Background(), s)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := b.prov.Provision(context.Background(), tn.ID); err != nil {
			t.Fatal(err)
		}
	}

	var seen []string
	pages := 0
	cursor := ""
	for {
		path := "/api/v1/tenants?limit=2"
		if cursor != "" {
			path += "&cursor=" + cursor
		}
		r := b.do(t, "GET", path, nil, bearer(tok)...).wantStatus(t, http.StatusOK)
		var p page[tenant.Tenant]
		if err := json.Unmarshal(r.body, &p); err != nil {
			t.Fatal(err)
		}
		if len(p.Items) > 2 {
			t.Fatalf("page of %d items with limit=2", len(p.Items))
		}
		for _, tn := range p.Items {
			seen = append(seen, tn.Slug)
		}
		pages++
		if p.NextCursor == "" {
			break
		}
		cursor = p.NextCursor
		if pages > 5 {
			t.Fatal("pagination does not end")
		}
	}
	want := slices.Clone(slugs)
	slices.Sort(want)
	if !slices.Equal(seen, want) || pages != 3 {
		t.Fatalf("walked %v in %d pages, want %v in 3", seen, pages, want)
	}

	r := b.do(t, "GET", "/api/v1/tenants?status=active", nil, bearer(tok)...).wantStatus(t, http.StatusOK)
	var p page[tenant.Tenant]
	if err := json.Unmarshal(r.body, &p); err != nil {
		t.Fatal(err)
	}
	if len(p.Items) != 2 || p.Items[0].Slug != "bravo" || p.Items[1].Slug != "delta" || p.NextCursor != "" {
		t.Fatalf("status=active listed %s", r.body)
	}
	if strings.Contains(string(r.body), "db_password") {
		t.Fatal("the list leaks db_password")
	}
	r = b.do(t, "GET", "/api/v1/tenants?status=suspended", nil, bearer(tok)...).wantStatus(t, http.StatusOK)
	if !strings.Contains(string(r.body), `"items":[]`) {
		t.Fatalf("an empty list answers %s, want an empty items array", r.body)
	}
}

func TestTenantLifecycleThroughAPI(t *testing.T) {
	t.Parallel()
	b := setup(t, Config{})
	tok := b.adminToken(t)
	auth := bearer(tok)
	b.do(t, "POST", "/api/v1/tenants", signupBody("cycle")).wantStatus(t, http.StatusCreated)

	step := func(method, path string, body any, status int, want tenant.Status) {
		t.Helper()
		r := b.do(t, method, "/api/v1/tenants/cycle"+path, body, auth...).wantStatus(t, status)
		if want != "" {
			if got := r.tenant(t); got.Status != want {
				t.Fatalf("%s %s left the tenant %s, want %s", method, path, got.Status, want)
			}
		} else if code := r.errorCode(t); code != "invalid_transition" {
			t.Fatalf("%s %s: code %q, want invalid_transition", method, path, code)
		}
	}
	step("POST", "/suspend", nil, http.StatusOK, tenant.StatusSuspended)
	step("POST", "/suspend", nil, http.StatusConflict, "")
	b.waitStatus(t, "cycle", tenant.StatusSuspended)
	step("POST", "/resume", nil, http.StatusOK, tenant.StatusActive)
	step("POST", "/resume", nil, http.StatusConflict, "")
	step("PATCH", "", map[string]string{"status": "suspended"}, http.StatusOK, tenant.StatusSuspended)
	step("PATCH", "", map[string]string{"status": "active"}, http.StatusOK, tenant.StatusActive)
	step("PATCH", "", map[string]string{"status": "active"}, http.StatusOK, tenant.StatusActive) // already: kept
	step("POST", "/retry", nil, http.StatusConflict, "")
	step("POST", "/restore", nil, http.StatusConflict, "")

	r := b.do(t, "PATCH", "/api/v1/tenants/cycle", map[string]string{"name": "  Cycle Inc  ", "plan": "pro"}, auth...).wantStatus(t, http.StatusOK)
	if got := r.tenant(t); got.Name != "Cycle Inc" || got.Plan != "pro" || got.Status != tenant.StatusActive {
		t.Fatalf("patch answered %+v", got)
	}

	r = b.do(t, "DELETE", "/api/v1/tenants/cycle", nil, auth...).wantStatus(t, http.StatusAccepted)
	if got := r.tenant(t); got.Status != tenant.StatusPendingDeletion || got.DeleteAfter == nil {
		t.Fatalf("delete answered %+v, want pending_deletion with delete_after", got)
	}
	step("POST", "/suspend", nil, http.StatusConflict, "")
	step("PATCH", "", map[string]string{"status": "active"}, http.StatusConflict, "")
	step("DELETE", "", nil, http.StatusConflict, "")
	step("POST", "/restore", nil, http.StatusOK, tenant.StatusActive)

	r = b.do(t, "GET", "/api/v1/tenants/cycle", nil, auth...).wantStatus(t, http.StatusOK)
	var detail struct {
		tenant.Tenant
		Domains []tenant.Domain `json:"domains"`
		Events  []tenant.Event  `json:"events"`
	}
	if err := json.Unmarshal(r.body, &detail); err != nil {
		t.Fatal(err)
	}
	if detail.Name != "Cycle Inc" || detail.Status != tenant.StatusActive || detail.Domains == nil {
		t.Fatalf("detail answered %s", r.body)
	}
	var actions []string
	for _, e := range detail.Events {
		actions = append(actions, e.Action)
	}
	if len(actions) == 0 || actions[0] != "restore" || !slices.Contains(actions, "update") || !slices.Contains(actions, "delete") {
		t.Fatalf("recent events %v, want newest first with restore, delete and update", actions)
	}
	if detail.Events[0].Actor != "root@platform.example.com" {
		t.Fatalf("audit actor %q, want the platform user", detail.Events[0].Actor)
	}

	for _, path := range []string{"", "/suspend", "/restore", "/domains"} {
		method := "POST"
		if path == "" || path == "/domains" {
			method = "GET"
		}
		b.do(t, method, "/api/v1/tenants/ghost"+path, nil, auth...).wantStatus(t, http.StatusNotFound)
	}
}

func TestTenantDomains(t *testing.T) {
	t.Parallel()
	b := setup(t, Config{BaseDomain: "tenantplane.test"}, setupOptions{noStart: true})
	auth := bearer(b.adminToken(t))
	b.register(t, "owner")
	b.register(t, "other")

	r := b.do(t, "POST", "/api/v1/tenants/owner/domains", map[string]any{"domain": "Blog.Example.COM.", "primary": true}, auth...).
		wantStatus(t, http.StatusCreated)
	var d tenant.Domain
	if err := json.Unmarshal(r.body, &d); err != nil || d.Domain != "blog.example.com" || !d.IsPrimary {
		t.Fatalf("add domain answered %s", r.body)
	}
	b.do(t, "POST", "/api/v1/tenants/owner/domains", map[string]any{"domain": "www.example.org"}, auth...).wantStatus(t, http.StatusCreated)

	r = b.do(t, "GET", "/api/v1/tenants/owner/domains", nil, auth...).wantStatus(t, http.StatusOK)
	var list page[tenant.Domain]
	if err := json.Unmarshal(r.body, &list); err != nil || len(list.Items) != 2 || list.Items[0].Domain != "blog.example.com" {
		t.Fatalf("domains listed %s", r.body)
	}

	for _, tc := range []struct {
		domain string
		status int
		code   string
	}{
		{"blog.example.com", http.StatusConflict, "domain_taken"},
		{"tenantplane.test", http.StatusBadRequest, "reserved_domain"},
		{"shop.tenantplane.test", http.StatusBadRequest, "reserved_domain"},
		{"localhost", http.StatusBadRequest, "invalid_domain"},
		{"10.0.0.1", http.StatusBadRequest, "invalid_domain"},
		{"bad_label.example.com", http.StatusBadRequest, "invalid_domain"},
		{"-dash.example.com", http.StatusBadRequest, "invalid_domain"},
		{"exämple.com", http.StatusBadRequest, "invalid_domain"},
		{"", http.StatusBadRequest, "invalid_domain"},
	} {
		r := b.do(t, "POST", "/api/v1/tenants/other/domains", map[string]any{"domain": tc.domain}, auth...)
		if r.status != tc.status || r.errorCode(t) != tc.code {
			t.Errorf("adding %q: %d %s, want %d %s", tc.domain, r.status, r.body, tc.status, tc.code)
		}
	}

	b.do(t, "DELETE", "/api/v1/tenants/other/domains/blog.example.com", nil, auth...).wantStatus(t, http.StatusNotFound)
	b.do(t, "DELETE", "/api/v1/tenants/owner/domains/blog.example.com", nil, auth...).wantStatus(t, http.StatusNoContent)
	b.do(t, "DELETE", "/api/v1/tenants/owner/domains/blog.example.com", nil, auth...).wantStatus(t, http.StatusNotFound)
	// Freed, the domain can go to another tenant.
	b.do(t, "POST", "/api/v1/tenants/other/domains", map[string]any{"domain": "blog.example.com"}, auth...).wantStatus(t, http.StatusCreated)
	var owner string
	if err := b.db.QueryRow(context.Background(), `SELECT t.slug FROM domains d JOIN tenants t ON t.id = d.tenant_id
		WHERE d.domain = 'blog.example.com'`).Scan(&owner); err != nil || owner != "other" {
		t.Fatalf("blog.example.com routes to %q (%v), want other", owner, err)
	}
}

func TestHealthAndReadiness(t *testing.T) {
	t.Parallel()
	b := setup(t, Config{})
	r := b.do(t, "GET", "/healthz", nil).wantStatus(t, http.StatusOK)
	if string(r.body) != `{"status":"ok"}` {
		t.Fatalf("healthz answered %s", r.body)
	}
	b.do(t, "GET", "/readyz", nil).wantStatus(t, http.StatusOK)

	// A server whose control database is gone is not ready.
	down := setup(t, Config{})
	down.db.Close()
	r = down.do(t, "GET", "/readyz", nil).wantStatus(t, http.StatusServiceUnavailable)
	if code := r.errorCode(t); code != "not_ready" {
		t.Fatalf("code %q, want not_ready", code)
	}
}
