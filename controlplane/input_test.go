package controlplane

import (
	"net/http"
	"strconv"
	"strings"
	"testing"
)

func TestBadInputIsRefusedWithJSON(t *testing.T) {
	t.Parallel()
	b := setup(t, Config{}, setupOptions{noStart: true})
	auth := bearer(b.adminToken(t))
	b.register(t, "target")
	huge := `{"slug":"` + strings.Repeat("a", 70<<10) + `"}`

	tests := []struct {
		name        string
		method      string
		path        string
		body        any
		contentType string
		status      int
		code        string
	}{
		{"signup: malformed JSON", "POST", "/api/v1/tenants", `{"slug":`, "", 400, "invalid_json"},
		{"signup: not JSON", "POST", "/api/v1/tenants", `slug=acme`, "", 400, "invalid_json"},
		{"signup: wrong type", "POST", "/api/v1/tenants", `{"slug": 5}`, "", 400, "invalid_field"},
		{"signup: array", "POST", "/api/v1/tenants", `[]`, "", 400, "invalid_json"},
		{"signup: unknown field", "POST", "/api/v1/tenants", `{"slug":"acme","plan":"gold"}`, "", 400, "unknown_field"},
		{"signup: trailing data", "POST", "/api/v1/tenants", `{"slug":"acme"} {}`, "", 400, "invalid_json"},
		{"signup: too large", "POST", "/api/v1/tenants", huge, "", 413, "body_too_large"},
		{"signup: empty body", "POST", "/api/v1/tenants", "", "", 400, "invalid_json"},
		{"signup: wrong content type", "POST", "/api/v1/tenants", `{"slug":"acme"}`, "text/plain", 400, "unsupported_media_type"},
		{"signup: form content type", "POST", "/api/v1/tenants", `slug=acme`, "application/x-www-form-urlencoded", 400, "unsupported_media_type"},
		{"login: wrong type", "POST", "/api/v1/auth/token", `{"email": ["a"], "password": "x"}`, "", 400, "invalid_field"},
		{"login: missing password", "POST", "/api/v1/auth/token", `{"email": "a@example.com"}`, "", 400, "invalid"},
		{"login: too large", "POST", "/api/v1/auth/token", huge, "", 413, "body_too_large"},
		{"refresh: empty object", "POST", "/api/v1/auth/token/refresh", `{}`, "", 400, "invalid"},
		{"refresh: garbage token", "POST", "/api/v1/auth/token/refresh", `{"refresh":"x.y.z"}`, "", 401, "invalid_token"},
		{"list: limit not a number", "GET", "/api/v1/tenants?limit=abc", nil, "", 400, "invalid_limit"},
		{"list: limit zero", "GET", "/api/v1/tenants?limit=0", nil, "", 400, "invalid_limit"},
		{"list: limit negative", "GET", "/api/v1/tenants?limit=-1", nil, "", 400, "invalid_limit"},
		{"list: limit huge", "GET", "/api/v1/tenants?limit=100000", nil, "", 400, "invalid_limit"},
		{"list: limit over 100", "GET", "/api/v1/tenants?limit=101", nil, "", 400, "invalid_limit"},
		{"list: limit overflow", "GET", "/api/v1/tenants?limit=99999999999999999999", nil, "", 400, "invalid_limit"},
		{"list: bad status", "GET", "/api/v1/tenants?status=happy", nil, "", 400, "invalid_status"},
		{"list: bad cursor", "GET", "/api/v1/tenants?cursor=!!!", nil, "", 400, "invalid_cursor"},
		{"list: cursor of bytes", "GET", "/api/v1/tenants?cursor=_w", nil, "", 400, "invalid_cursor"},
		{"patch: nothing", "PATCH", "/api/v1/tenants/target", `{}`, "", 400, "invalid"},
		{"patch: bad status", "PATCH", "/api/v1/tenants/target", `{"status":"purged"}`, "", 400, "invalid_status"},
		{"patch: wrong type", "PATCH", "/api/v1/tenants/target", `{"name": true}`, "", 400, "invalid_field"},
		{"patch: empty name", "PATCH", "/api/v1/tenants/target", `{"name": "  "}`, "", 400, "invalid_name"},
		{"patch: bad plan", "PATCH", "/api/v1/tenants/target", `{"plan": "Gold Plan"}`, "", 400, "invalid_plan"},
		{"patch: unknown field", "PATCH", "/api/v1/tenants/target", `{"slug": "x"}`, "", 400, "unknown_field"},
		{"domains: wrong type", "POST", "/api/v1/tenants/target/domains", `{"domain": 1}`, "", 400, "invalid_field"},
		{"domains: primary not bool", "POST", "/api/v1/tenants/target/domains", `{"domain": "a.example.com", "primary": "yes"}`, "", 400, "invalid_field"},
		{"status: bytes in slug", "GET", "/api/v1/tenants/%ff%fe/status", nil, "", 404, "tenant_not_found"},
		{"status: NUL in slug", "GET", "/api/v1/tenants/a%00b/status", nil, "", 404, "tenant_not_found"},
		{"detail: bytes in slug", "GET", "/api/v1/tenants/%ff", nil, "", 404, "tenant_not_found"},
		{"suspend: bytes in slug", "POST", "/api/v1/tenants/%ff/suspend", nil, "", 404, "tenant_not_found"},
		{"domain delete: bytes", "DELETE", "/api/v1/tenants/target/domains/%ff", nil, "", 404, "not_found"},
		{"unknown route", "GET", "/api/v2/nothing", nil, "", 404, "route_not_found"},
		{"wrong method", "PUT", "/api/v1/tenants", `{}`, "", 405, "method_not_allowed"},
		{"wrong method on status", "DELETE", "/api/v1/tenants/target/status", nil, "", 405, "method_not_allowed"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			headers := auth
			if tc.contentType != "" {
				headers = append(append([]string{}, auth...), "Content-Type", tc.contentType)
			}
			r := b.do(t, tc.method, tc.path, tc.body, headers...)
			if r.status != tc.status {
				t.Fatalf("status %d, want %d; body %s", r.status, tc.status, r.body)
			}
			if code := r.errorCode(t); code != tc.code {
				t.Fatalf("code %q, want %q; body %s", code, tc.code, r.body)
			}
		})
	}
}

func TestSignupBadInputWithIdempotencyKey(t *testing.T) {
	t.Parallel()
	b := setup(t, Config{})
	for i, body := range []string{`{"slug":`, `{"slug": 5}`, ""} {
		key := "key-" + strconv.Itoa(i)
		r := b.do(t, "POST", "/api/v1/tenants", body, "Idempotency-Key", key)
		if r.status != http.StatusBadRequest {
			t.Fatalf("%q: status %d, want 400; body %s", body, r.status, r.body)
		}
		again := b.do(t, "POST", "/api/v1/tenants", body, "Idempotency-Key", key)
		if again.status != r.status || string(again.body) != string(r.body) {
			t.Fatalf("%q: replay answered %d %s, want %d %s", body, again.status, again.body, r.status, r.body)
		}
	}
	r := b.do(t, "POST", "/api/v1/tenants", `{}`, "Idempotency-Key", "bad key with spaces")
	if r.status != http.StatusBadRequest || r.errorCode(t) != "invalid_idempotency_key" {
		t.Fatalf("key with spaces: %d %s", r.status, r.body)
	}
}
