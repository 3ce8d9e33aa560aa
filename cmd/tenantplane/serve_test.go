package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"regexp"
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
	logs := &syncBuffer{}
	root := newRoot(strings.NewReader(""), logs, io.Discard, envOf(c.env))
	root.SetArgs([]string{"serve"})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- root.ExecuteContext(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve ended with %v", err)
		}
	}()

	addrRE := regexp.MustCompile(`"msg":"serving".*"listen":"([^"]+)"`)
	var base string
	for deadline := time.Now().Add(30 * time.Second); base == ""; {
		if m := addrRE.FindStringSubmatch(logs.String()); m != nil {
			base = "http://" + m[1]
		} else if time.Now().After(deadline) {
			t.Fatalf("serve did not start:\n%s", logs.String())
		} else {
			time.Sleep(20 * time.Millisecond)
		}
	}

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
