package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// syncBuffer is a bytes.Buffer safe for the server's writes and the test's reads.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestServeAll runs `tenantplane serve` and drives it over HTTP as a newcomer would: sign
// up a tenant at the control plane, then use its app at the dataplane on the same port.
func TestServeAll(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	c.env["TENANTPLANE_SECRET_KEY"] = strings.Repeat("k", 40)
	c.env["TENANTPLANE_LISTEN"] = "127.0.0.1:0"
	base, logs := startServe(t, c)

	call := func(method, path, tenantHdr, tok, body string) (int, map[string]any) {
		t.Helper()
		req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		if tenantHdr != "" {
			req.Header.Set("X-Tenant", tenantHdr)
		}
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&out)
		return resp.StatusCode, out
	}

	status, body := call("POST", "/api/v1/tenants", "", "", `{"slug":"acme","name":"Acme","admin_email":"admin@acme.test","admin_password":"a-long-passphrase"}`)
	if status != http.StatusCreated || body["status"] != "active" {
		t.Fatalf("signup: %d %v", status, body)
	}
	// The same path names a tenant: the dataplane answers with the tenant's login.
	status, body = call("POST", "/api/v1/auth/token", "acme", "", `{"email":"admin@acme.test","password":"a-long-passphrase"}`)
	if status != http.StatusOK || body["access"] == nil {
		t.Fatalf("tenant login: %d %v", status, body)
	}
	tok := body["access"].(string)
	if status, body = call("POST", "/api/v1/blogs", "acme", tok, `{"title":"Hello tenants","description":"first"}`); status != http.StatusCreated {
		t.Fatalf("create blog: %d %v", status, body)
	}
	if status, body = call("GET", "/api/v1/blogs/search?q=hel", "acme", tok, ""); status != http.StatusOK || len(body["items"].([]any)) != 1 {
		t.Errorf("search: %d %v", status, body)
	}
	// Without a tenant the same login path is the platform's: a tenant admin is no
	// platform user.
	if status, _ = call("POST", "/api/v1/auth/token", "", "", `{"email":"admin@acme.test","password":"a-long-passphrase"}`); status != http.StatusUnauthorized {
		t.Errorf("platform login with a tenant account: %d", status)
	}
	if status, body = call("GET", "/api/v1/blogs", "ghost", tok, ""); status != http.StatusNotFound || body["error"].(map[string]any)["code"] != "tenant_not_found" {
		t.Errorf("unknown tenant: %d %v", status, body)
	}
	if strings.Contains(logs.String(), tok) || strings.Contains(logs.String(), "a-long-passphrase") {
		t.Error("a token or a password reached the logs")
	}
}

// TestDrain shuts a server down the way an orchestrator does: on the signal /readyz
// fails at once, a request in flight is still answered, and one that never finishes
// does not hold the process past the grace.
func TestDrain(t *testing.T) {
	t.Parallel()
	d, err := newDrainer(envOf(map[string]string{"TENANTPLANE_SHUTDOWN_GRACE": "6s", "TENANTPLANE_SHUTDOWN_DELAY": "3s"}), newLogger(io.Discard, 0))
	if err != nil {
		t.Fatal(err)
	}
	entered, release := make(chan string, 2), make(chan struct{})
	mux := http.NewServeMux()
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte(`{"status":"ok"}`)) })
	mux.HandleFunc("/slow/{name}", func(w http.ResponseWriter, r *http.Request) {
		entered <- r.PathValue("name")
		if r.PathValue("name") == "stuck" {
			<-r.Context().Done() // until the server gives up on it
			return
		}
		<-release
		w.Write([]byte("answered"))
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- d.serve(ctx, &http.Server{Handler: d.handler(mux)}, ln) }()

	get := func(path string) (int, string, error) {
		resp, err := http.Get(base + path)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), err
	}
	if code, _, err := get("/readyz"); err != nil || code != http.StatusOK {
		t.Fatalf("/readyz before the signal: %d %v", code, err)
	}
	type answer struct {
		body string
		err  error
	}
	answers := map[string]chan answer{"inflight": make(chan answer, 1), "stuck": make(chan answer, 1)}
	for name, ch := range answers {
		go func() { _, body, err := get("/slow/" + name); ch <- answer{body, err} }()
	}
	for range answers {
		select {
		case <-entered:
		case <-time.After(10 * time.Second):
			t.Fatal("the slow requests did not arrive")
		}
	}

	cancel()
	code, body, err := get("/readyz")
	if err != nil || code != http.StatusServiceUnavailable || !strings.Contains(body, `"code":"draining"`) {
		t.Errorf("/readyz right after the signal: %d %q %v; want 503 draining", code, body, err)
	}
	close(release)
	select {
	case a := <-answers["inflight"]:
		if a.err != nil || a.body != "answered" {
			t.Errorf("the in-flight request got %q, %v; want its answer", a.body, a.err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the in-flight request was not answered")
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("serve after the drain: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("a stuck request holds the server past its grace")
	}
	if a := <-answers["stuck"]; a.err == nil {
		t.Errorf("the stuck request was answered %q after the grace", a.body)
	}
}

func TestDrainConfig(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		env          map[string]string
		grace, delay time.Duration
		err          string
	}{
		{env: nil, grace: 10 * time.Second, delay: 2 * time.Second},
		{env: map[string]string{"TENANTPLANE_SHUTDOWN_GRACE": "3s"}, grace: 3 * time.Second, delay: 1500 * time.Millisecond},
		{env: map[string]string{"TENANTPLANE_SHUTDOWN_DELAY": "0"}, grace: 10 * time.Second, delay: 0},
		{env: map[string]string{"TENANTPLANE_SHUTDOWN_GRACE": "soon"}, err: "TENANTPLANE_SHUTDOWN_GRACE: must be a positive duration"},
		{env: map[string]string{"TENANTPLANE_SHUTDOWN_DELAY": "-1s"}, err: "TENANTPLANE_SHUTDOWN_DELAY: must be a duration"},
		{env: map[string]string{"TENANTPLANE_SHUTDOWN_DELAY": "10s"}, err: "must be shorter than TENANTPLANE_SHUTDOWN_GRACE"},
	} {
		d, err := newDrainer(envOf(tt.env), newLogger(io.Discard, 0))
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("%v: error %v, want one containing %q", tt.env, err, tt.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%v: %v", tt.env, err)
		} else if d.grace != tt.grace || d.delay != tt.delay {
			t.Errorf("%v: grace %v delay %v, want %v and %v", tt.env, d.grace, d.delay, tt.grace, tt.delay)
		}
	}
}
