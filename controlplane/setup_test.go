package controlplane

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tenantplane/tenantplane/internal/pgtest"
	"github.com/tenantplane/tenantplane/password"
	"github.com/tenantplane/tenantplane/platform"
	"github.com/tenantplane/tenantplane/provisioner"
	"github.com/tenantplane/tenantplane/tenant"
	"github.com/tenantplane/tenantplane/throttle"
	"github.com/tenantplane/tenantplane/token"
	"github.com/tenantplane/tenantplane/web"
)

func init() { gin.SetMode(gin.TestMode) }

// cheap keeps argon2 fast in tests that are not about hashing.
var cheap = password.Params{Memory: 1024, Time: 1, Threads: 1, KeyLen: 32, SaltLen: 16}

// bundle is what a control-plane test works with: a server on a fresh control database
// whose only shard is that same database.
type bundle struct {
	srv    *Server
	ts     *httptest.Server
	db     *pgxpool.Pool
	store  *tenant.Store
	prov   *provisioner.Provisioner
	users  *platform.Users
	issuer *token.Issuer
	dbURL  string
}

// setupOptions changes what setup builds.
type setupOptions struct {
	shardURL string // default: the control database
	noStart  bool   // leave Start to the test
	fleet    bool   // serve the fleet migration routes
	// maxConns sizes the control pool (default 24).
	maxConns string
	// down points the server at a control database that cannot be reached (a port
	// nothing listens on) and leaves it unstarted.
	down bool
}

// setup builds a bundle with cfg; signups are not throttled unless cfg says so.
func setup(t *testing.T, cfg Config, opts ...setupOptions) *bundle {
	t.Helper()
	var opt setupOptions
	if len(opts) > 0 {
		opt = opts[0]
	}
	ctx := context.Background()
	var dbURL string
	var db *pgxpool.Pool
	if opt.down {
		dbURL, db = unreachable(t)
		opt.noStart = true
	} else {
		dbURL = pgtest.NewDatabase(t, pgtest.URL(t))
		if _, err := provisioner.MigrateShared(ctx, dbURL); err != nil {
			t.Fatalf("migrating control database: %v", err)
		}
		// Room for the provisioning runs (two connections each) and the requests at once.
		db = pgtest.Pool(t, withQuery(t, dbURL, "pool_max_conns", cmp.Or(opt.maxConns, "24")))
	}
	store := tenant.NewStore(db)
	shard := opt.shardURL
	if shard == "" {
		shard = dbURL
	}
	prov, err := provisioner.New(store, provisioner.Config{Shards: []provisioner.Shard{{Name: "default", URL: shard}}})
	if err != nil {
		t.Fatalf("creating provisioner: %v", err)
	}
	t.Cleanup(prov.Close)
	hasher := password.NewHasher(cheap, 0)
	ring, err := token.ParseKeyRing("test-signing-secret-of-at-least-32-bytes")
	if err != nil {
		t.Fatal(err)
	}
	issuer := token.NewIssuer(ring, token.Config{})
	if cfg.SignupRate == 0 {
		cfg.SignupRate, cfg.SignupBurst = 1000, 1000
	}
	if cfg.Login == (throttle.Login{}) {
		cfg.Login = throttle.Login{Account: throttle.Rule{Burst: 1000, Refill: time.Millisecond}, IP: throttle.Rule{Burst: 1000, Refill: time.Millisecond}}
	}
	if cfg.SignupWait == 0 {
		cfg.SignupWait = time.Minute
	}
	if opt.fleet {
		fleet := provisioner.NewFleet(prov, provisioner.FleetConfig{})
		if err := fleet.Start(ctx); err != nil {
			t.Fatalf("starting fleet: %v", err)
		}
		t.Cleanup(fleet.Stop)
		cfg.Fleet = fleet
	}
	srv := New(cfg, store, prov, platform.NewStore(db), issuer, hasher)
	if !opt.noStart {
		if err := srv.Start(ctx); err != nil {
			t.Fatalf("starting server: %v", err)
		}
	}
	t.Cleanup(srv.Stop)
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(ts.Close)
	return &bundle{srv: srv, ts: ts, db: db, store: store, prov: prov, users: srv.users, issuer: issuer, dbURL: dbURL}
}

func withQuery(t *testing.T, raw, key, value string) string {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set(key, value)
	u.RawQuery = q.Encode()
	return u.String()
}

// response is an answer as the client sees it.
type response struct {
	status int
	header http.Header
	body   []byte
}

// do sends a request; body is sent as is when it is a string or []byte, as JSON
// otherwise. headers are name, value pairs. It must run on the test's goroutine; other
// goroutines use send.
func (b *bundle) do(t *testing.T, method, path string, body any, headers ...string) response {
	t.Helper()
	r, err := b.send(method, path, body, headers...)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// send is do for any goroutine: it returns the error instead of failing the test.
func (b *bundle) send(method, path string, body any, headers ...string) (response, error) {
	var r io.Reader
	switch v := body.(type) {
	case nil:
	case string:
		r = strings.NewReader(v)
	case []byte:
		r = bytes.NewReader(v)
	default:
		raw, err := json.Marshal(v)
		if err != nil {
			return response{}, err
		}
		r = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, b.ts.URL+path, r)
	if err != nil {
		return response{}, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := b.ts.Client().Do(req)
	if err != nil {
		return response{}, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return response{}, fmt.Errorf("reading %s %s: %w", method, path, err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: raw}, nil
}

// tenant decodes the answer as a tenant.
func (r response) tenant(t *testing.T) tenant.Tenant {
	t.Helper()
	var out tenant.Tenant
	if err := json.Unmarshal(r.body, &out); err != nil {
		t.Fatalf("decoding tenant from %d %s: %v", r.status, r.body, err)
	}
	return out
}

// errorCode decodes the answer as an error and returns its code.
func (r response) errorCode(t *testing.T) string {
	t.Helper()
	var e web.ErrorBody
	if err := json.Unmarshal(r.body, &e); err != nil || e.Error.Code == "" {
		t.Fatalf("want a JSON error, got %d %q", r.status, r.body)
	}
	return e.Error.Code
}

func (r response) errorMessage(t *testing.T) string {
	t.Helper()
	var e web.ErrorBody
	if err := json.Unmarshal(r.body, &e); err != nil {
		t.Fatalf("want a JSON error, got %d %q", r.status, r.body)
	}
	return e.Error.Message
}

// wantStatus fails the test unless the answer has the status.
func (r response) wantStatus(t *testing.T, status int) response {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d; body %s", r.status, status, r.body)
	}
	return r
}

// signupBody is a valid signup for slug.
func signupBody(slug string) map[string]any {
	return map[string]any{
		"slug":           slug,
		"name":           "Tenant " + slug,
		"admin_email":    "admin@" + slug + ".example.com",
		"admin_password": "correct horse battery",
	}
}

// adminToken creates a platform user and returns an access token for it.
func (b *bundle) adminToken(t *testing.T) string {
	t.Helper()
	email := "root@platform.example.com"
	if _, err := b.users.Create(context.Background(), email, "platform-password-1"); err != nil {
		t.Fatalf("creating platform user: %v", err)
	}
	var pair tokenPair
	r := b.do(t, "POST", "/api/v1/auth/token", map[string]string{"email": email, "password": "platform-password-1"}).wantStatus(t, http.StatusOK)
	if err := json.Unmarshal(r.body, &pair); err != nil || pair.Access == "" {
		t.Fatalf("decoding token pair %s: %v", r.body, err)
	}
	return pair.Access
}

// register records a tenant without provisioning it (it stays in provisioning).
func (b *bundle) register(t *testing.T, slug string) *tenant.Tenant {
	t.Helper()
	tn, err := b.prov.Register(context.Background(), provisioner.CreateRequest{
		Slug: slug, AdminEmail: "admin@" + slug + ".example.com", AdminPasswordHash: "x", Actor: "test",
	})
	if err != nil {
		t.Fatalf("registering %s: %v", slug, err)
	}
	return tn
}

// waitStatus polls the public status endpoint until the tenant has the status, failing
// the test if it does not within a generous bound.
func (b *bundle) waitStatus(t *testing.T, slug string, want tenant.Status) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		r := b.do(t, "GET", "/api/v1/tenants/"+slug+"/status", nil).wantStatus(t, http.StatusOK)
		var s publicTenant
		if err := json.Unmarshal(r.body, &s); err != nil {
			t.Fatal(err)
		}
		if s.Status == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("tenant %s is %s, want %s", slug, s.Status, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// bearer is the Authorization header pair for tok.
func bearer(tok string) []string { return []string{"Authorization", "Bearer " + tok} }
