package controlplane

import (
	"context"
	"net"
	"net/http"
	"strconv"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
)

// unreachable returns the URL of a control database nothing listens for, and a pool on
// it (which connects lazily, so it opens without error).
func unreachable(t *testing.T) (string, *pgxpool.Pool) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	dbURL := "postgres://tenantplane@" + addr + "/control?sslmode=disable&connect_timeout=5"
	db, err := pgxpool.New(context.Background(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	return dbURL, db
}

func TestDatabaseOutageAnswers503WithRetryAfter(t *testing.T) {
	t.Parallel()
	b := setup(t, Config{}, setupOptions{down: true})
	// A well-signed token of some user: checking it needs the database.
	access := mustIssue(t, b, "5b0c6f0e-8f3e-4d1a-9f5e-3a4b2c1d0e9f")
	for _, tc := range []struct {
		name, method, path string
		body               any
		headers            []string
	}{
		{"tenant list", "GET", "/api/v1/tenants", nil, bearer(access)},
		{"tenant detail", "GET", "/api/v1/tenants/acme", nil, bearer(access)},
		{"signup status", "GET", "/api/v1/tenants/acme/status", nil, nil},
		{"signup", "POST", "/api/v1/tenants", signupBody("acme"), nil},
		{"signup with an Idempotency-Key", "POST", "/api/v1/tenants", signupBody("acme"), []string{"Idempotency-Key", "key-1"}},
		{"platform login", "POST", "/api/v1/auth/token", map[string]string{"email": "ops@example.com", "password": "a-good-password"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := b.do(t, tc.method, tc.path, tc.body, tc.headers...).wantStatus(t, http.StatusServiceUnavailable)
			if code := r.errorCode(t); code != "db_unavailable" {
				t.Errorf("code %q, want db_unavailable", code)
			}
			if ct := r.header.Get("Content-Type"); ct != "application/json; charset=utf-8" {
				t.Errorf("Content-Type %q, want JSON", ct)
			}
			if s, err := strconv.Atoi(r.header.Get("Retry-After")); err != nil || s < 1 {
				t.Errorf("Retry-After %q, want a positive number of seconds", r.header.Get("Retry-After"))
			}
		})
	}
}
