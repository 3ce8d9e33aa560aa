package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"
)

// served is a `tenantplane serve` running in-process for a test.
type served struct {
	base    string // the public listener, http://host:port
	metrics string // the metrics listener, http://host:port
	logs    *syncBuffer
}

// launchServe runs `tenantplane serve` with env (on loopback ports of its own) until the
// test ends, and returns where it listens.
func launchServe(t *testing.T, env map[string]string) *served {
	t.Helper()
	env["TENANTPLANE_SECRET_KEY"] = strings.Repeat("k", 40)
	env["TENANTPLANE_LISTEN"] = "127.0.0.1:0"
	env["TENANTPLANE_METRICS_LISTEN"] = "127.0.0.1:0"
	env["TENANTPLANE_SHUTDOWN_DELAY"] = "0"
	logs := &syncBuffer{}
	root := newRoot(strings.NewReader(""), logs, io.Discard, envOf(env))
	root.SetArgs([]string{"serve"})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- root.ExecuteContext(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve ended with %v", err)
		}
		if t.Failed() {
			for _, line := range strings.Split(logs.String(), "\n") {
				if strings.Contains(line, `"level":"ERROR"`) {
					t.Log(line)
				}
			}
		}
	})
	re := regexp.MustCompile(`"msg":"serving".*"listen":"([^"]+)".*"metrics":"([^"]+)"`)
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if m := re.FindStringSubmatch(logs.String()); m != nil {
			return &served{base: "http://" + m[1], metrics: "http://" + m[2], logs: logs}
		}
		select {
		case err := <-done:
			t.Fatalf("serve ended with %v:\n%s", err, logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve did not start:\n%s", logs.String())
		}
	}
}

// answer is a decoded HTTP answer.
type answer struct {
	status int
	header http.Header
	body   map[string]any
	raw    string
}

func (a answer) code() string {
	e, _ := a.body["error"].(map[string]any)
	s, _ := e["code"].(string)
	return s
}

// call sends one request with the headers ("Name: value") and returns the answer, or an
// error when none came within the client's bound.
func call(client *http.Client, method, url, body string, headers ...string) (answer, error) {
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		return answer{}, err
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for _, h := range headers {
		k, v, _ := strings.Cut(h, ": ")
		if strings.EqualFold(k, "Host") {
			req.Host = v
		} else {
			req.Header.Set(k, v)
		}
	}
	resp, err := client.Do(req)
	if err != nil {
		return answer{}, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return answer{}, err
	}
	a := answer{status: resp.StatusCode, header: resp.Header, raw: string(raw)}
	_ = json.Unmarshal(raw, &a.body)
	return a, nil
}

// mustAnswer returns a function that fails the test when a call got no answer.
func mustAnswer(t *testing.T) func(answer, error) answer {
	return func(a answer, err error) answer {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
}

// signup signs up the tenant slug (admin admin@{slug}.test, password
// a-long-passphrase) and waits for it to be active.
func (s *served) signup(t *testing.T, client *http.Client, slug string) {
	t.Helper()
	body := fmt.Sprintf(`{"slug":%q,"name":"Tenant %s","admin_email":"admin@%s.test","admin_password":"a-long-passphrase"}`, slug, slug, slug)
	if a := mustAnswer(t)(call(client, "POST", s.base+"/api/v1/tenants", body)); a.status != http.StatusCreated {
		t.Fatalf("signup: %d %s", a.status, a.raw)
	}
}

// TestServeOperations checks what operators rely on: metrics on their own listener and
// nowhere on the public one, CORS preflights answered on both planes, slow bodies cut
// off while normal requests pass, and a JSON 431 for oversized headers.
func TestServeOperations(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	c.env["TENANTPLANE_CORS_ORIGINS"] = "https://app.example.com, https://other.example.com"
	c.env["TENANTPLANE_BODY_TIMEOUT"] = "2s"
	c.env["TENANTPLANE_MAX_HEADER_BYTES"] = "8192"
	s := launchServe(t, c.env)
	client := &http.Client{Timeout: 30 * time.Second}
	must := mustAnswer(t)

	// A normal request passes the body deadline.
	s.signup(t, client, "acme")

	// The public listener never serves metrics, whatever tenant the request names.
	for _, hdr := range [][]string{nil, {"X-Tenant: acme"}, {"X-Tenant: ghost"}, {"Host: acme.localhost"}, {"Host: ghost.localhost"}} {
		if a := must(call(client, "GET", s.base+"/metrics", "", hdr...)); a.status != http.StatusNotFound || strings.Contains(a.raw, "tenantplane_") {
			t.Errorf("public /metrics with %v: %d %.200s", hdr, a.status, a.raw)
		}
	}

	// A preflight from a listed origin is answered on both planes; another origin gets
	// no CORS headers.
	for _, hdr := range [][]string{{"Origin: https://app.example.com"}, {"Origin: https://app.example.com", "Host: acme.localhost"}} {
		a := must(call(client, "OPTIONS", s.base+"/api/v1/auth/token", "", append(hdr, "Access-Control-Request-Method: POST", "Access-Control-Request-Headers: content-type")...))
		if a.status != http.StatusNoContent || a.header.Get("Access-Control-Allow-Origin") != "https://app.example.com" ||
			!strings.Contains(a.header.Get("Access-Control-Allow-Methods"), "POST") {
			t.Errorf("preflight %v: %d %v", hdr, a.status, a.header)
		}
	}
	if a := must(call(client, "OPTIONS", s.base+"/api/v1/auth/token", "", "Origin: https://evil.example.com", "Access-Control-Request-Method: POST")); a.header.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("preflight of an unlisted origin allowed: %v", a.header)
	}

	// Headers over the limit are answered in JSON like every other error.
	if a := must(call(client, "GET", s.base+"/healthz", "", "X-Padding: "+strings.Repeat("p", 10<<10))); a.status != http.StatusRequestHeaderFieldsTooLarge || a.code() != "headers_too_large" {
		t.Errorf("oversized headers: %d %s", a.status, a.raw)
	}

	// A body trickling in is cut off: the connection ends within a bound, long before
	// the declared body could arrive.
	conn, err := net.Dial("tcp", strings.TrimPrefix(s.base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /api/v1/tenants HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{")
	closed := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, bufio.NewReader(conn))
		closed <- err
	}()
	start := time.Now()
	trickle := time.NewTicker(time.Second)
	defer trickle.Stop()
	bound := time.After(30 * time.Second)
	for cut := false; !cut; {
		select {
		case err := <-closed:
			if err != nil && !errors.Is(err, net.ErrClosed) && !strings.Contains(err.Error(), "reset") {
				t.Logf("slow body connection ended with %v", err)
			}
			cut = true
		case <-trickle.C:
			_, _ = conn.Write([]byte(" "))
		case <-bound:
			t.Fatalf("a slow body held its connection for %s", time.Since(start))
		}
	}
	t.Logf("slow body cut off after %s", time.Since(start).Round(time.Millisecond))

	// The metrics listener counts the requests of both planes by route template.
	m := must(call(client, "GET", s.metrics+"/metrics", ""))
	for _, want := range []string{
		`tenantplane_http_requests_total{method="POST",plane="controlplane",route="/api/v1/tenants",status="201"} 1`,
		`tenantplane_http_requests_total{method="OPTIONS",plane="dataplane",route="unmatched",status="204"}`,
		`tenantplane_pool_connection_budget `,
		`go_goroutines `,
	} {
		if !strings.Contains(m.raw, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if strings.Contains(m.raw, "acme") {
		t.Error("a metric names a tenant")
	}
}
