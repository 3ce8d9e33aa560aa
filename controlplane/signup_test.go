package controlplane

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/tenantplane/tenantplane/internal/pgtest"
	"github.com/tenantplane/tenantplane/tenant"
)

func TestSignupProvisionsTenant(t *testing.T) {
	t.Parallel()
	b := setup(t, Config{})
	ctx := context.Background()

	r := b.do(t, "POST", "/api/v1/tenants", signupBody("acme")).wantStatus(t, http.StatusCreated)
	got := r.tenant(t)
	if got.Slug != "acme" || got.Status != tenant.StatusActive || got.Name != "Tenant acme" {
		t.Fatalf("signup answered %+v, want acme active", got)
	}
	for _, secret := range []string{"db_password", "pending_admin_hash", "correct horse battery", "argon2"} {
		if strings.Contains(string(r.body), secret) {
			t.Errorf("signup answer leaks %q: %s", secret, r.body)
		}
	}
	wantPublicFields(t, r.body)
	wantPublicFields(t, b.do(t, "GET", "/api/v1/tenants/acme/status", nil).wantStatus(t, http.StatusOK).body)

	// The tenant's schema, role and admin user exist in Postgres.
	reg, err := b.store.Get(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	var schemas, roles int
	if err := b.db.QueryRow(ctx, `SELECT count(*) FROM information_schema.schemata WHERE schema_name = $1`, reg.SchemaName).Scan(&schemas); err != nil {
		t.Fatal(err)
	}
	if err := b.db.QueryRow(ctx, `SELECT count(*) FROM pg_roles WHERE rolname = $1`, reg.DBRole).Scan(&roles); err != nil {
		t.Fatal(err)
	}
	if schemas != 1 || roles != 1 {
		t.Fatalf("schema %s: %d, role %s: %d; want both", reg.SchemaName, schemas, reg.DBRole, roles)
	}
	var email string
	var isAdmin bool
	err = b.db.QueryRow(ctx, `SELECT email, is_admin FROM `+pgx.Identifier{reg.SchemaName, "users"}.Sanitize()).Scan(&email, &isAdmin)
	if err != nil {
		t.Fatalf("reading the tenant's admin user: %v", err)
	}
	if email != "admin@acme.example.com" || !isAdmin {
		t.Fatalf("tenant user %s admin=%v, want the signup's admin", email, isAdmin)
	}
	if reg.PendingAdminHash != "" {
		t.Error("the admin hash is still kept in the registry after provisioning")
	}

	r = b.do(t, "GET", "/api/v1/tenants/acme/status", nil).wantStatus(t, http.StatusOK)
	var st publicTenant
	if err := json.Unmarshal(r.body, &st); err != nil || st.Status != tenant.StatusActive || st.Slug != "acme" {
		t.Fatalf("status endpoint answered %s", r.body)
	}
	b.do(t, "GET", "/api/v1/tenants/nobody/status", nil).wantStatus(t, http.StatusNotFound)
}

func TestSignupAnswers202WhileProvisioning(t *testing.T) {
	t.Parallel()
	b := setup(t, Config{SignupWait: 1}) // a nanosecond: never long enough

	r := b.do(t, "POST", "/api/v1/tenants", signupBody("slowpoke")).wantStatus(t, http.StatusAccepted)
	if got := r.tenant(t); got.Status != tenant.StatusProvisioning {
		t.Fatalf("202 carries status %s, want provisioning", got.Status)
	}
	if loc := r.header.Get("Location"); loc != "/api/v1/tenants/slowpoke/status" {
		t.Fatalf("Location %q, want the status URL", loc)
	}
	b.waitStatus(t, "slowpoke", tenant.StatusActive)
}

func TestSignupRefusesBadRequests(t *testing.T) {
	t.Parallel()
	b := setup(t, Config{})
	b.do(t, "POST", "/api/v1/tenants", signupBody("taken")).wantStatus(t, http.StatusCreated)

	with := func(field string, value any) map[string]any {
		body := signupBody("fresh")
		body[field] = value
		return body
	}
	tests := []struct {
		name   string
		body   map[string]any
		status int
		code   string
	}{
		{"duplicate slug", signupBody("taken"), http.StatusConflict, "slug_taken"},
		{"reserved slug", with("slug", "admin"), http.StatusBadRequest, "reserved_slug"},
		{"uppercase slug", with("slug", "Acme"), http.StatusBadRequest, "invalid_slug"},
		{"short slug", with("slug", "ab"), http.StatusBadRequest, "invalid_slug"},
		{"missing slug", with("slug", ""), http.StatusBadRequest, "invalid_slug"},
		{"bad email", with("admin_email", "not-an-email"), http.StatusBadRequest, "invalid_email"},
		{"display-name email", with("admin_email", "Bob <bob@example.com>"), http.StatusBadRequest, "invalid_email"},
		{"short password", with("admin_password", "short"), http.StatusBadRequest, "weak_password"},
		{"digits-only password", with("admin_password", "1234567890"), http.StatusBadRequest, "weak_password"},
		{"password is the email", with("admin_password", "admin@fresh.example.com"), http.StatusBadRequest, "weak_password"},
		{"bad isolation", with("isolation", "cluster"), http.StatusBadRequest, "invalid_isolation"},
		{"control characters in name", with("name", "a\x00b"), http.StatusBadRequest, "invalid_name"},
		{"long name", with("name", strings.Repeat("n", 201)), http.StatusBadRequest, "invalid_name"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := b.do(t, "POST", "/api/v1/tenants", tc.body).wantStatus(t, tc.status)
			if code := r.errorCode(t); code != tc.code {
				t.Fatalf("code %q, want %q (%s)", code, tc.code, r.body)
			}
		})
	}
	if _, err := b.store.Get(context.Background(), "fresh"); err == nil {
		t.Fatal("a refused signup registered its tenant")
	}
}

func TestSignupIdempotencyKey(t *testing.T) {
	t.Parallel()
	b := setup(t, Config{})
	body, _ := json.Marshal(signupBody("idem"))

	first := b.do(t, "POST", "/api/v1/tenants", body, "Idempotency-Key", "key-1").wantStatus(t, http.StatusCreated)
	again := b.do(t, "POST", "/api/v1/tenants", body, "Idempotency-Key", "key-1")
	if again.status != first.status || string(again.body) != string(first.body) {
		t.Fatalf("replay answered %d %s, want %d %s", again.status, again.body, first.status, first.body)
	}
	if again.header.Get("Idempotent-Replayed") != "true" {
		t.Error("a replay is not marked Idempotent-Replayed")
	}

	other, _ := json.Marshal(signupBody("idem-other"))
	r := b.do(t, "POST", "/api/v1/tenants", other, "Idempotency-Key", "key-1").wantStatus(t, http.StatusUnprocessableEntity)
	if code := r.errorCode(t); code != "idempotency_key_reused" {
		t.Fatalf("code %q, want idempotency_key_reused", code)
	}
	if _, err := b.store.Get(context.Background(), "idem-other"); err == nil {
		t.Fatal("a reused key registered a tenant")
	}

	// A refused request's answer is replayed too.
	bad, _ := json.Marshal(signupBody("admin"))
	b.do(t, "POST", "/api/v1/tenants", bad, "Idempotency-Key", "key-bad").wantStatus(t, http.StatusBadRequest)
	b.do(t, "POST", "/api/v1/tenants", bad, "Idempotency-Key", "key-bad").wantStatus(t, http.StatusBadRequest)

	long := strings.Repeat("k", 201)
	r = b.do(t, "POST", "/api/v1/tenants", body, "Idempotency-Key", long).wantStatus(t, http.StatusBadRequest)
	if code := r.errorCode(t); code != "invalid_idempotency_key" {
		t.Fatalf("code %q, want invalid_idempotency_key", code)
	}
}

func TestSignupIdempotencyKeyConcurrent(t *testing.T) {
	t.Parallel()
	b := setup(t, Config{})
	body, _ := json.Marshal(signupBody("racer"))

	const n = 5
	answers := make([]response, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			var err error
			if answers[i], err = b.send("POST", "/api/v1/tenants", body, "Idempotency-Key", "same-key"); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	for i, a := range answers {
		if a.status != http.StatusCreated || string(a.body) != string(answers[0].body) {
			t.Errorf("request %d answered %d %s; want every request to get the one 201", i, a.status, a.body)
		}
	}
	var created int
	if err := b.db.QueryRow(context.Background(), `SELECT count(*) FROM tenant_events e JOIN tenants t ON t.id = e.tenant_id
		WHERE t.slug = 'racer' AND e.action = 'create'`).Scan(&created); err != nil {
		t.Fatal(err)
	}
	if created != 1 {
		t.Fatalf("%d tenants registered for one key, want 1", created)
	}
}

func TestSignupFailedProvisioning(t *testing.T) {
	t.Parallel()
	// The shard's database does not exist: provisioning fails at its first step.
	b := setup(t, Config{}, setupOptions{shardURL: withPath(t, pgtest.URL(t), "/no_such_database")})

	r := b.do(t, "POST", "/api/v1/tenants", signupBody("doomed")).wantStatus(t, http.StatusServiceUnavailable)
	if code := r.errorCode(t); code != "provisioning_failed" {
		t.Fatalf("code %q, want provisioning_failed", code)
	}
	if msg := r.errorMessage(t); strings.Contains(msg, "no_such_database") || !strings.Contains(msg, "role") {
		t.Fatalf("message %q: want the failed step and no internal detail", msg)
	}
	b.waitStatus(t, "doomed", tenant.StatusFailed)

	// An operator's retry fails the same way and says why.
	tok := b.adminToken(t)
	r = b.do(t, "POST", "/api/v1/tenants/doomed/retry", nil, bearer(tok)...).wantStatus(t, http.StatusOK)
	if got := r.tenant(t); got.Status != tenant.StatusFailed || got.LastError == "" {
		t.Fatalf("retry answered %+v, want failed with last_error", got)
	}
}

func TestConcurrentSignups(t *testing.T) {
	t.Parallel()
	b := setup(t, Config{})
	const n = 50
	answers := make([]response, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			var err error
			if answers[i], err = b.send("POST", "/api/v1/tenants", signupBody("crowd-"+strconv.Itoa(i))); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	for i, a := range answers {
		if a.status != http.StatusCreated {
			t.Fatalf("signup %d answered %d %s", i, a.status, a.body)
		}
		if got := a.tenant(t); got.Status != tenant.StatusActive {
			t.Fatalf("signup %d left tenant %s", i, got.Status)
		}
	}
	var schemas int
	err := b.db.QueryRow(context.Background(), `SELECT count(*) FROM information_schema.schemata s
		JOIN tenants t ON t.schema_name = s.schema_name WHERE t.status = 'active'`).Scan(&schemas)
	if err != nil {
		t.Fatal(err)
	}
	if schemas != n {
		t.Fatalf("%d tenant schemas exist, want %d", schemas, n)
	}
}

func TestSignupThrottle(t *testing.T) {
	t.Parallel()
	b := setup(t, Config{SignupRate: 0.001, SignupBurst: 2})
	// Refused bodies still spend the budget: the throttle comes first.
	for i := range 2 {
		r := b.do(t, "POST", "/api/v1/tenants", "{}")
		if r.status == http.StatusTooManyRequests {
			t.Fatalf("request %d throttled inside the burst", i)
		}
	}
	r := b.do(t, "POST", "/api/v1/tenants", "{}").wantStatus(t, http.StatusTooManyRequests)
	if code := r.errorCode(t); code != "rate_limited" {
		t.Fatalf("code %q, want rate_limited", code)
	}
	if s, err := strconv.Atoi(r.header.Get("Retry-After")); err != nil || s < 1 {
		t.Fatalf("Retry-After %q, want a positive number of seconds", r.header.Get("Retry-After"))
	}
}

func TestStartResumesInterruptedProvisioning(t *testing.T) {
	t.Parallel()
	b := setup(t, Config{}, setupOptions{noStart: true})
	b.register(t, "leftover") // as a process stopped mid-signup leaves it
	if err := b.srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	b.waitStatus(t, "leftover", tenant.StatusActive)
	if err := b.srv.Start(context.Background()); err == nil {
		t.Error("a second Start succeeded")
	}
	b.srv.Stop()
	r := b.do(t, "POST", "/api/v1/tenants", signupBody("too-late")).wantStatus(t, http.StatusServiceUnavailable)
	if code := r.errorCode(t); code != "shutting_down" {
		t.Fatalf("code %q after Stop, want shutting_down", code)
	}
}

func withPath(t *testing.T, raw, path string) string {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	u.Path = path
	return u.String()
}

// wantPublicFields checks that an anonymous answer about a tenant carries exactly the
// public fields: nothing of where or how the tenant is stored.
func wantPublicFields(t *testing.T, body []byte) {
	t.Helper()
	var fields map[string]any
	if err := json.Unmarshal(body, &fields); err != nil {
		t.Fatalf("answer %s: %v", body, err)
	}
	want := map[string]bool{"slug": true, "name": true, "status": true, "message": true, "created_at": true}
	for k := range fields {
		if !want[k] {
			t.Errorf("public answer carries %q: %s", k, body)
		}
	}
	for k := range want {
		if _, ok := fields[k]; !ok {
			t.Errorf("public answer lacks %q: %s", k, body)
		}
	}
}
