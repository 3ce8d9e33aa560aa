package main

import (
	"bufio"
	"cmp"
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tenantplane/tenantplane/internal/pgtest"
)

// EnvPodman names the podman binary the image test runs (scripts/test-services.sh
// --podman installs podman and sets it); without it, podman from PATH.
const EnvPodman = "TENANTPLANE_TEST_PODMAN"

// podman runs podman with a containers.conf of the test's own: cgroupfs and runc (crun
// and the systemd cgroup manager fail on hybrid cgroup hosts), no default ulimits, and
// events in a file where there is no journald.
type podman struct {
	t    *testing.T
	bin  string
	conf string
}

// newPodman finds podman, or skips the test (fails it under CI=true) with the reason
// when no container runtime can start here.
func newPodman(t *testing.T) *podman {
	t.Helper()
	unavailable := func(format string, args ...any) {
		t.Helper()
		pgtest.Missing(t, "no container runtime: %s (scripts/test-services.sh --podman installs podman and runc)", fmt.Sprintf(format, args...))
	}
	bin := os.Getenv(EnvPodman)
	if bin == "" {
		var err error
		if bin, err = exec.LookPath("podman"); err != nil {
			unavailable("podman is not installed")
		}
	}
	conf := "[containers]\ndefault_ulimits = []\n\n[engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n"
	if _, err := exec.LookPath("runc"); err == nil {
		conf += "runtime = \"runc\"\n"
	}
	p := &podman{t: t, bin: bin, conf: filepath.Join(t.TempDir(), "containers.conf")}
	if err := os.WriteFile(p.conf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := p.cmd(time.Minute, "info").CombinedOutput(); err != nil {
		unavailable("podman info: %v", cmp.Or(strings.TrimSpace(string(out)), err.Error()))
	}
	return p
}

// cmd is a podman command bounded by timeout.
func (p *podman) cmd(timeout time.Duration, args ...string) *exec.Cmd {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	p.t.Cleanup(cancel)
	c := exec.CommandContext(ctx, p.bin, args...)
	c.Env = append(os.Environ(), "CONTAINERS_CONF="+p.conf)
	return c
}

// run runs podman and returns its trimmed stdout; it fails the test on error.
func (p *podman) run(timeout time.Duration, args ...string) string {
	p.t.Helper()
	var stderr strings.Builder
	c := p.cmd(timeout, args...)
	c.Stderr = &stderr
	out, err := c.Output()
	if err != nil {
		p.t.Fatalf("podman %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return strings.TrimSpace(string(out))
}

// TestContainerImage builds the image FROM scratch with `make image` and runs it as an
// orchestrator would: read-only root filesystem, no capabilities, host network on
// loopback, against the test Postgres. The server answers /readyz, takes a signup, and
// on SIGTERM fails /readyz at once, answers the request in flight and exits within its
// grace even though another request never finishes.
func TestContainerImage(t *testing.T) {
	t.Parallel()
	dbURL := pgtest.NewDatabase(t, pgtest.URL(t))
	p := newPodman(t)

	b := make([]byte, 4)
	_, _ = rand.Read(b)
	id := hex.EncodeToString(b)
	image := "localhost/tenantplane-test:" + id
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	build := exec.CommandContext(ctx, "make", "--no-print-directory", "-C", "../..", "image",
		"BASE=scratch", "IMAGE="+image, "CONTAINER_ENGINE="+p.bin, "VERSION=0.0.0-test."+id,
		"IMAGE_BUILD_FLAGS=--layers=false") // no intermediate images left behind
	build.Env = append(os.Environ(), "CONTAINERS_CONF="+p.conf)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("make image BASE=scratch: %v\n%s", err, out)
	}
	t.Cleanup(func() { _ = p.cmd(time.Minute, "rmi", "--force", image).Run() })

	if user := p.run(time.Minute, "image", "inspect", "--format", "{{.Config.User}}", image); user != "65532:65532" {
		t.Errorf("the image runs as %q, want the numeric non-root 65532:65532", user)
	}
	if label := p.run(time.Minute, "image", "inspect", "--format", `{{index .Labels "org.opencontainers.image.version"}}`, image); label != "0.0.0-test."+id {
		t.Errorf("org.opencontainers.image.version = %q", label)
	}
	// CA certificates for TLS to Postgres, Redis and OpenSearch; no shell to exec into.
	probe := "tenantplane-files-" + id
	p.run(time.Minute, "create", "--name", probe, image)
	t.Cleanup(func() { _ = p.cmd(time.Minute, "rm", "--force", probe).Run() })
	ca := filepath.Join(t.TempDir(), "ca.crt")
	p.run(time.Minute, "cp", probe+":/etc/ssl/certs/ca-certificates.crt", ca)
	if pem, err := os.ReadFile(ca); err != nil || !x509.NewCertPool().AppendCertsFromPEM(pem) {
		t.Errorf("the image's CA bundle holds no certificates (%v)", err)
	}
	if err := p.cmd(time.Minute, "cp", probe+":/bin/sh", t.TempDir()).Run(); err == nil {
		t.Error("the image has a shell at /bin/sh")
	}

	locked := []string{"--network", "host", "--read-only", "--cap-drop", "ALL", "--security-opt", "no-new-privileges", "--tmpfs", "/tmp"}
	var v buildInfo
	if out := p.run(2*time.Minute, append(append([]string{"run", "--rm"}, locked...), image, "version", "-o", "json")...); json.Unmarshal([]byte(out), &v) != nil || v.Version != "0.0.0-test."+id {
		t.Errorf("tenantplane version in the image: %q, want version 0.0.0-test.%s", out, id)
	}
	p.run(2*time.Minute, append(append([]string{"run", "--rm", "-e", "DATABASE_URL=" + dbURL}, locked...), image, "migrate", "shared")...)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	name := "tenantplane-test-" + id
	const grace = 8 * time.Second
	args := append([]string{"run", "--detach", "--name", name,
		"-e", "DATABASE_URL=" + dbURL,
		"-e", "TENANTPLANE_SECRET_KEY=" + strings.Repeat("k", 40),
		"-e", "TENANTPLANE_LISTEN=" + addr,
		"-e", "TENANTPLANE_METRICS_LISTEN=127.0.0.1:0",
		"-e", "TENANTPLANE_SHUTDOWN_GRACE=" + grace.String(),
		"-e", "TENANTPLANE_SHUTDOWN_DELAY=4s",
	}, locked...)
	p.run(2*time.Minute, append(args, image, "serve")...)
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := p.cmd(time.Minute, "logs", name).CombinedOutput()
			t.Logf("container logs:\n%s", out)
		}
		_ = p.cmd(time.Minute, "rm", "--force", "--time", "0", name).Run()
	})
	base := "http://" + addr
	client := &http.Client{Timeout: 30 * time.Second}
	readyz := func() (int, string, error) {
		resp, err := client.Get(base + "/readyz")
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body), nil
	}
	for deadline := time.Now().Add(90 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		if code, _, err := readyz(); err == nil && code == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the container did not answer /readyz with 200 within 90s")
		}
		if p.run(time.Minute, "inspect", "--format", "{{.State.Running}}", name) != "true" {
			t.Fatal("the container exited before it was ready")
		}
	}

	signup := func(slug string) string {
		return fmt.Sprintf(`{"slug":%q,"name":"Acme","admin_email":"admin@%s.test","admin_password":"a-long-passphrase"}`, slug, slug)
	}
	resp, err := client.Post(base+"/api/v1/tenants", "application/json", strings.NewReader(signup("acme")))
	if err != nil {
		t.Fatal(err)
	}
	var created map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&created)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated || created["status"] != "active" {
		t.Fatalf("signup at the container: %d %v", resp.StatusCode, created)
	}

	// Two signups in flight: the server has read their headers and waits for the rest of
	// the bodies. One will be finished after the signal, the other never.
	inflight, inflightRd := startRequest(t, addr, signup("globex"))
	stuck, _ := startRequest(t, addr, signup("initech"))

	p.run(time.Minute, "kill", "--signal", "TERM", name)
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		code, body, err := readyz()
		if err != nil {
			t.Fatalf("/readyz after SIGTERM: %v; want 503 while draining", err)
		}
		if code == http.StatusServiceUnavailable && strings.Contains(body, `"draining"`) {
			break
		}
		if code != http.StatusOK || time.Now().After(deadline) {
			t.Fatalf("/readyz after SIGTERM: %d %s; want 503 draining", code, body)
		}
	}

	body := signup("globex")
	if _, err := io.WriteString(inflight, body[len(body)/2:]); err != nil {
		t.Fatalf("finishing the in-flight signup: %v", err)
	}
	_ = inflight.SetReadDeadline(time.Now().Add(2 * time.Minute))
	resp, err = http.ReadResponse(inflightRd, nil)
	if err != nil {
		t.Fatalf("the in-flight signup got no answer: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Errorf("the in-flight signup: %d, want 201", resp.StatusCode)
	}

	exited := make(chan string, 1)
	go func() {
		out, _ := p.cmd(grace+time.Minute, "wait", name).Output()
		exited <- strings.TrimSpace(string(out))
	}()
	select {
	case code := <-exited:
		if code != "0" {
			t.Errorf("the container exited with %q after SIGTERM, want 0", code)
		}
	case <-time.After(grace + 30*time.Second):
		t.Fatalf("the container still runs %s after SIGTERM; its grace is %s", grace+30*time.Second, grace)
	}
	_ = stuck.SetReadDeadline(time.Now().Add(time.Minute))
	if n, err := stuck.Read(make([]byte, 1)); err == nil && n > 0 {
		t.Error("the stuck request was answered, although its body never came")
	}
	if logs, _ := p.cmd(time.Minute, "logs", name).CombinedOutput(); !strings.Contains(string(logs), "shutdown grace over") {
		t.Errorf("the logs do not say the grace cut the stuck request short:\n%s", logs)
	}
}

// startRequest sends a signup's headers with Expect: 100-continue and half its body once
// the server asks for it, so that the request is in the handler when this returns.
func startRequest(t *testing.T, addr, body string) (net.Conn, *bufio.Reader) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	fmt.Fprintf(conn, "POST /api/v1/tenants HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\nExpect: 100-continue\r\n\r\n", addr, len(body))
	rd := bufio.NewReader(conn)
	_ = conn.SetReadDeadline(time.Now().Add(time.Minute))
	line, err := rd.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "HTTP/1.1 100") {
		t.Fatalf("the server did not ask for the signup's body: %q %v", line, err)
	}
	if _, err := rd.ReadString('\n'); err != nil { // the blank line after 100 Continue
		t.Fatal(err)
	}
	if _, err := io.WriteString(conn, body[:len(body)/2]); err != nil {
		t.Fatal(err)
	}
	return conn, rd
}
