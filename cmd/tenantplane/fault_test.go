package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tenantplane/tenantplane/internal/pgtest"
)

// Bounds of the fault suite: no answer may take longer than answerBound, and every
// route must answer 200 again within recoverBound of the database's restart.
const (
	answerBound  = 5 * time.Second
	recoverBound = 15 * time.Second
	outage       = 5 * time.Second
)

// privatePostgres is a Postgres cluster of the test's own, which it may stop and start
// without disturbing the rest of the suite.
type privatePostgres struct {
	t   *testing.T
	dir string
	url string
}

// startPrivatePostgres starts a cluster in a temporary directory with scripts/pg.sh.
// Without the server binaries the test is skipped, or fails under CI=true.
func startPrivatePostgres(t *testing.T) *privatePostgres {
	t.Helper()
	if bins, _ := filepath.Glob("/usr/lib/postgresql/*/bin/pg_ctl"); len(bins) == 0 {
		pgtest.Missing(t, "PostgreSQL server binaries (/usr/lib/postgresql/N/bin) are not installed: the fault suite needs a private cluster")
	}
	p := &privatePostgres{t: t, dir: filepath.Join(t.TempDir(), "pg")}
	t.Cleanup(func() { _, _ = p.script("stop") })
	out, err := p.script("start")
	if err != nil {
		t.Fatalf("starting a private cluster: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	p.url = lines[len(lines)-1]
	if !strings.HasPrefix(p.url, "postgres://") {
		t.Fatalf("pg.sh printed no URL:\n%s", out)
	}
	return p
}

func (p *privatePostgres) script(verb string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "../../scripts/pg.sh", verb, p.dir)
	cmd.Env = append(os.Environ(), "PG_FAST=1")
	var out strings.Builder
	cmd.Stdout = &out
	cmd.Stderr = &out
	err := cmd.Run()
	return out.String(), err
}

func (p *privatePostgres) stop() {
	p.t.Helper()
	if out, err := p.script("stop"); err != nil {
		p.t.Fatalf("stopping postgres: %v\n%s", err, out)
	}
}

func (p *privatePostgres) start() {
	p.t.Helper()
	if out, err := p.script("start"); err != nil {
		p.t.Fatalf("starting postgres: %v\n%s", err, out)
	}
}

// sample is one request of the load and its answer.
type sample struct {
	op         string
	start, end time.Time
	status     int
	code       string
	retryAfter string
	err        error
}

// load runs the bounded request mix of both planes until stopped, keeping every answer.
type load struct {
	s       *served
	client  *http.Client
	ops     map[string]func(i int) (answer, error)
	mu      sync.Mutex
	samples []sample
	stop    chan struct{}
	wg      sync.WaitGroup
}

func newLoad(s *served, platformToken, tenantToken string) *load {
	l := &load{s: s, client: &http.Client{Timeout: answerBound}, stop: make(chan struct{})}
	platform, tenantAuth := "Authorization: Bearer "+platformToken, "Authorization: Bearer "+tenantToken
	l.ops = map[string]func(int) (answer, error){
		"tenant list": func(int) (answer, error) {
			return call(l.client, "GET", s.base+"/api/v1/tenants", "", platform)
		},
		"signup status": func(int) (answer, error) {
			return call(l.client, "GET", s.base+"/api/v1/tenants/acme/status", "")
		},
		"blog read": func(int) (answer, error) {
			return call(l.client, "GET", s.base+"/api/v1/blogs", "", "X-Tenant: acme", tenantAuth)
		},
		"blog write": func(i int) (answer, error) {
			return call(l.client, "POST", s.base+"/api/v1/blogs", fmt.Sprintf(`{"title":"post %d","description":"under load"}`, i), "X-Tenant: acme", tenantAuth)
		},
	}
	return l
}

// run starts one worker per operation.
func (l *load) run() {
	for op, f := range l.ops {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for i := 0; ; i++ {
				select {
				case <-l.stop:
					return
				default:
				}
				start := time.Now()
				a, err := f(i)
				l.mu.Lock()
				l.samples = append(l.samples, sample{op: op, start: start, end: time.Now(), status: a.status, code: a.code(), retryAfter: a.header.Get("Retry-After"), err: err})
				l.mu.Unlock()
				time.Sleep(50 * time.Millisecond)
			}
		}()
	}
}

func (l *load) end() []sample {
	close(l.stop)
	l.wg.Wait()
	return l.samples
}

// recovered reports whether every operation was answered with success after since.
func (l *load) recovered(since time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	ok := map[string]bool{}
	for _, s := range l.samples {
		if s.start.After(since) && s.err == nil && s.status < 300 {
			ok[s.op] = true
		}
	}
	return len(ok) == len(l.ops)
}

// checkNoFailures fails the test for any answer that is a 5xx other than a JSON 503
// with Retry-After, and any request not answered within answerBound.
func checkNoFailures(t *testing.T, samples []sample) {
	t.Helper()
	counts := map[string]int{}
	for _, s := range samples {
		counts[s.op+" "+strconv.Itoa(s.status)]++
		switch {
		case s.err != nil:
			t.Errorf("%s: no answer within %s: %v", s.op, answerBound, s.err)
		case s.status == http.StatusServiceUnavailable && (s.code == "" || s.retryAfter == ""):
			t.Errorf("%s: 503 without a JSON error code or Retry-After (code %q, Retry-After %q)", s.op, s.code, s.retryAfter)
		case s.status >= 500 && s.status != http.StatusServiceUnavailable:
			t.Errorf("%s: answered %d %s", s.op, s.status, s.code)
		}
	}
	t.Logf("answers: %v", counts)
}

// TestFaultPostgres runs `tenantplane serve` on a private Postgres cluster under a
// bounded load of both planes, kills tenant backends, then stops the cluster for a
// while: every answer is a success or a JSON 503 with Retry-After within the bound,
// never a 500 or a hang; the routes recover soon after the restart, and nothing is
// left half-written.
func TestFaultPostgres(t *testing.T) {
	pg := startPrivatePostgres(t)
	c := &cli{t: t, dbURL: pg.url, env: map[string]string{"DATABASE_URL": pg.url}}
	c.ok("", "migrate", "shared")
	c.ok("ops-long-passphrase\n", "users", "createsuperuser", "--email", "ops@example.com", "--password-stdin")
	s := launchServe(t, c.env)
	client := &http.Client{Timeout: 30 * time.Second}
	must := mustAnswer(t)
	s.signup(t, client, "acme")
	platform := must(call(client, "POST", s.base+"/api/v1/auth/token", `{"email":"ops@example.com","password":"ops-long-passphrase"}`))
	tenant := must(call(client, "POST", s.base+"/api/v1/auth/token", `{"email":"admin@acme.test","password":"a-long-passphrase"}`, "X-Tenant: acme"))
	platformToken, _ := platform.body["access"].(string)
	tenantToken, _ := tenant.body["access"].(string)
	if platformToken == "" || tenantToken == "" {
		t.Fatalf("logins: platform %d %s, tenant %d %s", platform.status, platform.raw, tenant.status, tenant.raw)
	}
	db, err := pgx.Connect(context.Background(), pg.url)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("tenant backends terminated", func(t *testing.T) {
		l := newLoad(s, platformToken, tenantToken)
		l.run()
		killed := 0
		for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
			var n int
			if err := db.QueryRow(context.Background(), `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
				WHERE usename LIKE 'tr\_%' AND pid <> pg_backend_pid()`).Scan(&n); err != nil {
				t.Fatal(err)
			}
			killed += n
		}
		samples := l.end()
		t.Logf("terminated %d tenant backends", killed)
		checkNoFailures(t, samples)
	})
	_ = db.Close(context.Background())

	t.Run("postgres stopped", func(t *testing.T) {
		l := newLoad(s, platformToken, tenantToken)
		l.run()
		time.Sleep(time.Second)
		pg.stop()
		down := time.Now()
		// A signup during the outage must leave no half-made tenant behind.
		signup, signupErr := call(l.client, "POST", s.base+"/api/v1/tenants", `{"slug":"during","name":"During","admin_email":"admin@during.test","admin_password":"a-long-passphrase"}`)
		ready, readyErr := call(l.client, "GET", s.base+"/readyz", "")
		// Both admin panels show a page, never a 500.
		var panels []string
		for _, hdr := range [][]string{nil, {"X-Tenant: acme"}} {
			for _, path := range []string{"/admin/", "/admin/login"} {
				a, err := call(l.client, "GET", s.base+path, "", hdr...)
				if err != nil || (a.status >= 500 && a.status != http.StatusServiceUnavailable) ||
					(a.status == http.StatusServiceUnavailable && !strings.HasPrefix(a.header.Get("Content-Type"), "text/html")) {
					t.Errorf("panel %s %v during the outage: %d %v", path, hdr, a.status, err)
				}
				panels = append(panels, fmt.Sprintf("%s %v: %d", path, hdr, a.status))
			}
		}
		t.Logf("panels during the outage: %v", panels)
		time.Sleep(time.Until(down.Add(outage)))
		up := time.Now()
		pg.start()
		for !l.recovered(up) {
			if time.Since(up) > recoverBound {
				t.Errorf("not every route answered 200 within %s of the restart", recoverBound)
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Logf("recovered %s after the restart", time.Since(up).Round(time.Millisecond))
		samples := l.end()
		checkNoFailures(t, samples)

		// While the database was down, every answer was a 503.
		unavailable := map[string]int{}
		for _, sm := range samples {
			if sm.start.After(down) && sm.end.Before(up) {
				if sm.status != http.StatusServiceUnavailable {
					t.Errorf("%s during the outage: %d %s", sm.op, sm.status, sm.code)
				}
				unavailable[sm.op]++
			}
		}
		for op := range l.ops {
			if unavailable[op] == 0 {
				t.Errorf("%s: no request fell inside the outage", op)
			}
		}
		if readyErr != nil || ready.status != http.StatusServiceUnavailable {
			t.Errorf("/readyz during the outage: %d %v", ready.status, readyErr)
		}
		if signupErr != nil || (signup.status >= 500 && signup.status != http.StatusServiceUnavailable) {
			t.Errorf("signup during the outage: %d %s %v", signup.status, signup.raw, signupErr)
		}

		// Nothing half-written: the outage's signup is absent or completes, and no
		// tenant stays in provisioning.
		for deadline := time.Now().Add(time.Minute); ; time.Sleep(200 * time.Millisecond) {
			st := must(call(client, "GET", s.base+"/api/v1/tenants/during/status", ""))
			var stuck int
			db, err := pgx.Connect(context.Background(), pg.url)
			if err == nil {
				err = db.QueryRow(context.Background(), `SELECT count(*) FROM tenants WHERE status = 'provisioning'`).Scan(&stuck)
				_ = db.Close(context.Background())
			}
			done := (st.status == http.StatusNotFound || st.body["status"] == "active") && err == nil && stuck == 0
			if done {
				t.Logf("outage signup: answered %d, then status %d %v", signup.status, st.status, st.body["status"])
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("half-written after the outage: signup answered %d, status %d %s; %d tenants in provisioning (%v)", signup.status, st.status, st.raw, stuck, err)
			}
		}
	})
}
