package controlplane

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tenantplane/tenantplane/password"
	"github.com/tenantplane/tenantplane/platform"
	"github.com/tenantplane/tenantplane/provisioner"
	"github.com/tenantplane/tenantplane/tenant"
	"github.com/tenantplane/tenantplane/token"
)

// closedPort returns a local TCP address nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// setupDown builds a server whose control database cannot be reached: its pool targets
// a port nothing listens on.
func setupDown(t *testing.T) *bundle {
	t.Helper()
	dbURL := "postgres://tenantplane@" + closedPort(t) + "/control?sslmode=disable&connect_timeout=5"
	db, err := pgxpool.New(context.Background(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	store := tenant.NewStore(db)
	prov, err := provisioner.New(store, provisioner.Config{Shards: []provisioner.Shard{{Name: "default", URL: dbURL}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(prov.Close)
	ring, err := token.ParseKeyRing("test-signing-secret-of-at-least-32-bytes")
	if err != nil {
		t.Fatal(err)
	}
	issuer := token.NewIssuer(ring, token.Config{})
	hasher := password.NewHasher(cheap, 0)
	srv := New(Config{SignupRate: 1000, SignupBurst: 1000, LoginRate: 1000, LoginBurst: 1000}, store, prov, platform.NewStore(db), issuer, hasher)
	t.Cleanup(srv.Stop)
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(ts.Close)
	return &bundle{srv: srv, ts: ts, db: db, store: store, prov: prov, users: srv.users, issuer: issuer, dbURL: dbURL}
}

func TestDatabaseOutageAnswers503WithRetryAfter(t *testing.T) {
	t.Parallel()
	b := setupDown(t)
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
