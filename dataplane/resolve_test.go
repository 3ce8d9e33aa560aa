package dataplane

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/tenantplane/tenantplane/dataplane/auth"
	"github.com/tenantplane/tenantplane/tenant"
)

var testThrottle = auth.ThrottleConfig{AccountFailures: 1000, IPFailures: 10000}

func TestResolution(t *testing.T) {
	t.Parallel()
	e := setup(t, nil)
	e.waitListening()
	ts := e.newTenants("acme", "globex")
	acme, globex := ts[0], ts[1]
	if _, err := e.store.AddDomain(context.Background(), globex.ID, "blog.globex.example", true); err != nil {
		t.Fatal(err)
	}
	whoami := func(r req) (int, string, string) {
		r.method, r.path = "GET", "/test/whoami"+r.path
		got := e.do(r)
		if got.status != http.StatusOK {
			return got.status, got.code(), ""
		}
		return got.status, "", got.who().Read.User
	}
	cases := []struct {
		name     string
		r        req
		wantCode int
		wantErr  string
		want     *tenant.Tenant
	}{
		{"subdomain", req{host: "acme." + base}, 200, "", acme},
		{"subdomain with port and case", req{host: "ACME." + base + ":8000"}, 200, "", acme},
		{"custom domain", req{host: "blog.globex.example"}, 200, "", globex},
		{"X-Tenant", req{tenant: "globex"}, 200, "", globex},
		{"host wins over X-Tenant", req{host: "acme." + base, tenant: "globex"}, 200, "", acme},
		{"unknown custom domain falls back to X-Tenant", req{host: "nobody.example.org", tenant: "acme"}, 200, "", acme},
		{"websocket query", req{header: map[string]string{"Upgrade": "websocket"}, path: "?tenant=acme"}, 200, "", acme},
		{"unknown subdomain", req{host: "nobody." + base}, 404, "tenant_not_found", nil},
		{"unknown X-Tenant", req{tenant: "nobody"}, 404, "tenant_not_found", nil},
		{"malformed X-Tenant", req{tenant: "'; DROP TABLE tenants"}, 404, "tenant_not_found", nil},
		{"no tenant", req{}, 404, "tenant_not_found", nil},
		{"base domain alone", req{host: base}, 404, "tenant_not_found", nil},
	}
	for _, c := range cases {
		status, code, user := whoami(c.r)
		if status != c.wantCode || code != c.wantErr {
			t.Errorf("%s: got %d %q, want %d %q", c.name, status, code, c.wantCode, c.wantErr)
			continue
		}
		if c.want != nil && user != c.want.DBRole {
			t.Errorf("%s: served as %q, want %q", c.name, user, c.want.DBRole)
		}
	}
	// The tenant query parameter counts for WebSocket upgrades only.
	got := e.do(req{method: "GET", path: "/test/whoami?tenant=acme"})
	if got.status != 404 {
		t.Errorf("tenant query without websocket upgrade: got %d, want 404", got.status)
	}

	for _, c := range []struct {
		name string
		r    *http.Request
		want bool
	}{
		{"subdomain", hreq("acme."+base, nil), true},
		{"unknown subdomain", hreq("nobody."+base, nil), true},
		{"custom domain", hreq("blog.globex.example", nil), true},
		{"X-Tenant", hreq("127.0.0.1:8000", map[string]string{"X-Tenant": "acme"}), true},
		{"base domain", hreq(base, nil), false},
		{"reserved subdomain", hreq("api."+base, nil), false},
		{"ip", hreq("127.0.0.1:8000", nil), false},
		{"other host", hreq("control.example.org", nil), false},
	} {
		if got := e.srv.res.resolve(c.r).namesTenant(); got != c.want {
			t.Errorf("names a tenant, %s: got %v, want %v", c.name, got, c.want)
		}
	}
	// The combined server sends what names a tenant to the dataplane, the rest to the
	// other plane.
	other := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusTeapot) })
	dispatch := e.srv.Dispatch(other)
	for _, c := range []struct {
		host string
		want int
	}{{"acme." + base, http.StatusNotFound}, {"nobody." + base, http.StatusNotFound}, {base, http.StatusTeapot}} {
		w := httptest.NewRecorder()
		r := hreq(c.host, nil)
		r.URL.Path = "/api/v1/nope"
		dispatch.ServeHTTP(w, r)
		if w.Code != c.want {
			t.Errorf("dispatch of %s: %d, want %d", c.host, w.Code, c.want)
		}
	}

	// The dataplane reuses the resolution Dispatch made instead of resolving again: a
	// request carrying acme's resolution is served as acme whatever its Host says.
	carried := hreq(base, nil)
	carried.URL.Path = "/test/whoami"
	carried = carried.WithContext(withResolution(carried.Context(), resolution{t: acme, named: true}))
	w := httptest.NewRecorder()
	e.h.ServeHTTP(w, carried)
	if got := (resp{status: w.Code, raw: w.Body.Bytes()}); got.status != http.StatusOK || got.who().Read.User != acme.DBRole {
		t.Errorf("request with a carried resolution: %d %s, want it served as acme", w.Code, w.Body.String())
	}
	// A server starts once.
	if err := e.srv.Start(context.Background()); err == nil {
		t.Error("a second Start of the server was accepted")
	}

	// A suspension takes effect as soon as the registry's NOTIFY reaches the resolver,
	// which drops the cached lookup; resuming brings the tenant back. Each step waits for
	// the resolver to have acted on the change (generously bounded), then checks.
	changed := e.invalidations()
	if st := e.do(req{method: "GET", path: "/test/whoami", host: "acme." + base}).status; st != 200 {
		t.Fatalf("before suspension: %d", st)
	}
	ctx := context.Background()
	if _, err := e.store.Transition(ctx, "acme", []tenant.Status{tenant.StatusActive}, tenant.StatusSuspended, tenant.TransitionInfo{Action: "suspend", Actor: "test"}); err != nil {
		t.Fatal(err)
	}
	e.awaitRegistry(t, changed)
	if r := e.do(req{method: "GET", path: "/test/whoami", host: "acme." + base}); r.status != http.StatusForbidden || r.code() != "tenant_suspended" {
		t.Fatalf("suspended tenant: %d %s, want 403 tenant_suspended", r.status, r.raw)
	}
	// The custom domain follows its tenant too.
	if _, err := e.store.Transition(ctx, "globex", []tenant.Status{tenant.StatusActive}, tenant.StatusPendingDeletion, tenant.TransitionInfo{Action: "delete", Actor: "test"}); err != nil {
		t.Fatal(err)
	}
	e.awaitRegistry(t, changed)
	if r := e.do(req{method: "GET", path: "/test/whoami", host: "blog.globex.example"}); r.status != http.StatusServiceUnavailable || r.code() != "tenant_pending_deletion" {
		t.Fatalf("tenant pending deletion: %d %s, want 503 tenant_pending_deletion", r.status, r.raw)
	}
	if _, err := e.store.Transition(ctx, "acme", []tenant.Status{tenant.StatusSuspended}, tenant.StatusActive, tenant.TransitionInfo{Action: "resume", Actor: "test"}); err != nil {
		t.Fatal(err)
	}
	e.awaitRegistry(t, changed)
	if st := e.do(req{method: "GET", path: "/test/whoami", host: "acme." + base}).status; st != http.StatusOK {
		t.Fatalf("resumed tenant: %d, want 200", st)
	}
	if res := e.srv.res.resolve(hreq("acme."+base, nil)); res.err != nil || res.t == nil || res.t.Serving() != nil {
		t.Errorf("resolution of a served tenant: %+v", res)
	}

	// Health endpoints answer without a tenant.
	for _, p := range []string{"/healthz", "/readyz"} {
		if st := e.do(req{method: "GET", path: p}).status; st != 200 {
			t.Errorf("%s: %d", p, st)
		}
	}
	if r := e.do(req{method: "GET", path: "/nope"}); r.status != 404 || r.code() != "route_not_found" {
		t.Errorf("unknown route: %d %s", r.status, r.raw)
	}
}

func hreq(host string, h map[string]string) *http.Request {
	r := httptest.NewRequest("GET", "/api/v1/users/me", nil)
	r.Host = host
	for k, v := range h {
		r.Header.Set(k, v)
	}
	return r
}

// eventWait bounds how long a test waits for an event it expects (a registry change
// acted on, a message delivered): generous, so that a loaded machine does not fail it.
const eventWait = 30 * time.Second

// invalidations returns a channel that receives the payload of every registry
// notification the resolver has acted on from now on.
func (e *env) invalidations() <-chan string {
	ch := make(chan string, 256)
	e.srv.res.mu.Lock()
	e.srv.res.onInvalidate = func(p string) {
		select {
		case ch <- p:
		default:
		}
	}
	e.srv.res.mu.Unlock()
	return ch
}

// awaitRegistry waits until the resolver has acted on every registry change committed
// so far: it announces a sentinel on the registry channel and waits for the resolver to
// have handled it (the listener handles notifications one by one, in commit order).
func (e *env) awaitRegistry(t *testing.T, ch <-chan string) {
	t.Helper()
	sentinel := fmt.Sprintf("sentinel-%d", time.Now().UnixNano())
	if _, err := e.db.Exec(context.Background(), `SELECT pg_notify($1, $2)`, registryChannel, sentinel); err != nil {
		t.Fatal(err)
	}
	timeout := time.After(eventWait)
	for {
		select {
		case p := <-ch:
			if p == sentinel {
				return
			}
		case <-timeout:
			t.Fatalf("the resolver did not act on registry changes within %v", eventWait)
		}
	}
}

// expectWithin polls cond until it holds, failing the test when it does not within d.
func expectWithin(t *testing.T, d time.Duration, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		if cond() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
