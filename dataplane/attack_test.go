package dataplane

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"testing"

	"github.com/tenantplane/tenantplane/internal/attacktest"
	"github.com/tenantplane/tenantplane/session"
	"github.com/tenantplane/tenantplane/throttle"
	"github.com/tenantplane/tenantplane/web/adminpanel"
)

// replicas starts n dataplane servers on e's registry that share the throttle and the
// panel sessions through ts and ss, as replicas behind one load balancer do, and
// returns their handlers and the throttle's clock.
func (e *env) replicas(t *testing.T, n int, ts throttle.Store, ss session.Store) ([]http.Handler, *attacktest.Clock) {
	t.Helper()
	clk := attacktest.NewClock()
	lim, err := throttle.New(throttle.Config{Store: ts, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	sm, err := session.New(session.Config{Store: ss, CSRFKey: e.ring.Derive(adminpanel.CSRFLabel)})
	if err != nil {
		t.Fatal(err)
	}
	var hs []http.Handler
	for range n {
		srv, err := New(Config{
			Control: e.db, BaseDomain: base, Shards: map[string]string{"main": e.dbURL},
			Limiter: lim, Sessions: sm,
			Logger: slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})),
		}, e.store, e.issuer, e.hasher)
		if err != nil {
			t.Fatal(err)
		}
		if err := srv.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(srv.Stop)
		hs = append(hs, srv.Handler())
	}
	return hs, clk
}

// attempt is one request of a burst, built fresh for each send.
type attempt func() *http.Request

// jsonAttempt is a JSON POST to the tenant's API from the client ip.
func jsonAttempt(slug, path, ip, tok, body string) attempt {
	return func() *http.Request {
		r := httptest.NewRequest(http.MethodPost, path, strings.NewReader(body))
		r.Host, r.RemoteAddr = host(slug), ip+":40000"
		r.Header.Set("Content-Type", "application/json")
		if tok != "" {
			r.Header.Set("Authorization", "Bearer "+tok)
		}
		return r
	}
}

// panelLoginAttempt is a panel login form from the client ip, with the login CSRF
// token and nonce cookie of a login page fetched from h once.
func panelLoginAttempt(t *testing.T, h http.Handler, slug, ip, email, pw string) attempt {
	t.Helper()
	r := httptest.NewRequest(http.MethodGet, "/admin/login", nil)
	r.Host = host(slug)
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	csrf := panelAnswer{status: w.Code, body: w.Body.String()}.csrf(t)
	cookies := w.Result().Cookies()
	form := url.Values{"email": {email}, "password": {pw}, "csrf": {csrf}}.Encode()
	return func() *http.Request {
		r := httptest.NewRequest(http.MethodPost, "/admin/login", strings.NewReader(form))
		r.Host, r.RemoteAddr = host(slug), ip+":40000"
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		for _, c := range cookies {
			r.AddCookie(c)
		}
		return r
	}
}

// TestParallelWrongPasswordsAreThrottledAcrossReplicas sends 100 wrong passwords at
// once for one account from one IP, spread over two replicas sharing the throttle, to
// each password check of the tenant (API login, panel login, password change): at most
// the account's burst + 2 are checked, the rest are refused before hashing, also in a
// burst right after a refill.
func TestParallelWrongPasswordsAreThrottledAcrossReplicas(t *testing.T) {
	t.Parallel()
	e := setup(t, nil)
	e.newTenants("acme")
	admin, _ := e.loginAdmin("acme")
	e.createUser("acme", admin, "writer@acme.example")
	limits := (&Config{}).Throttle.Login()
	for name, stores := range attacktest.SharedStores(e.db) {
		t.Run(name, func(t *testing.T) {
			ts, ss := stores(t)
			hs, clk := e.replicas(t, 2, ts, ss)
			// A user's own token, for the password change; logging in refunds.
			writer, _ := e.login("acme", "writer@acme.example", "user password 1")
			for what, mk := range map[string]func(ip string) attempt{
				"api login": func(ip string) attempt {
					return jsonAttempt("acme", "/api/v1/auth/token", ip, "",
						`{"email":"nobody-`+name+`@acme.example","password":"wrong password"}`)
				},
				"panel login": func(ip string) attempt {
					return panelLoginAttempt(t, hs[1], "acme", ip, "admin@acme.example", "wrong password")
				},
				"password change": func(ip string) attempt {
					return jsonAttempt("acme", "/api/v1/users/me/password", ip, writer,
						`{"old_password":"wrong password","new_password":"a new long password 1"}`)
				},
			} {
				ip := attacktest.RandomIP()
				checked := map[string]int{"api login": 401, "panel login": 401, "password change": 400}[what]
				got := attacktest.Burst(t, hs, 100, mk(ip))
				attacktest.CheckBurst(t, what, got, 100, checked, limits.Account.Burst)
				// One refill lets one more guess in, not a burst.
				clk.Add(limits.Account.Refill)
				got = attacktest.Burst(t, hs, 100, mk(ip))
				attacktest.CheckBurst(t, what+" after a refill", got, 100, checked, 1)
			}
		})
	}
}

// TestParallelRefreshesOfOneTokenOneWins presents one refresh token 20 times at once
// over two replicas: exactly one gets a new pair, the others are reuses that revoke the
// family, so the winner's new refresh token is refused too.
func TestParallelRefreshesOfOneTokenOneWins(t *testing.T) {
	t.Parallel()
	e := setup(t, nil)
	e.newTenants("acme")
	hs, _ := e.replicas(t, 2, throttle.NewMemory(), session.NewMemory())
	_, rt := e.loginAdmin("acme")
	got := attacktest.Burst(t, hs, 20, func() *http.Request {
		return jsonAttempt("acme", "/api/v1/auth/token/refresh", "198.51.100.200", "", `{"refresh":"`+rt+`"}`)()
	})
	if got[http.StatusOK] != 1 || got[http.StatusUnauthorized] != 19 {
		t.Fatalf("20 parallel refreshes: %v, want one 200 and nineteen 401", got)
	}
	if r := e.do(req{method: "POST", path: "/api/v1/auth/token/verify", host: host("acme"), body: map[string]string{"token": rt}}); r.status != 401 {
		t.Errorf("verify of the raced token: %d", r.status)
	}
}

// TestVerifySaysWhatRefreshWould checks that verify refuses a refresh token that
// refresh would refuse: after a logout and after its family's revocation.
func TestVerifySaysWhatRefreshWould(t *testing.T) {
	t.Parallel()
	e := setup(t, nil)
	e.newTenants("acme")
	verify := func(tok string) resp {
		return e.do(req{method: "POST", path: "/api/v1/auth/token/verify", host: host("acme"), body: map[string]string{"token": tok}})
	}
	_, live := e.loginAdmin("acme")
	if r := verify(live); r.status != 200 {
		t.Fatalf("verify of a live refresh token: %d %s", r.status, r.raw)
	}
	e.mustDo(req{method: "POST", path: "/api/v1/auth/logout", host: host("acme"), body: map[string]string{"refresh": live}}, 204)
	if r := verify(live); r.status != 401 || r.code() != "invalid_token" {
		t.Errorf("verify after logout: %d %s", r.status, r.raw)
	}
	_, r0 := e.loginAdmin("acme")
	m := e.mustDo(req{method: "POST", path: "/api/v1/auth/token/refresh", host: host("acme"), body: map[string]string{"refresh": r0}}, 200).json(t)
	r1 := m["refresh"].(string)
	if r := verify(r0); r.status != 401 {
		t.Errorf("verify of a replaced refresh token: %d", r.status)
	}
	e.mustDo(req{method: "POST", path: "/api/v1/auth/token/refresh", host: host("acme"), body: map[string]string{"refresh": r0}}, 401) // a reuse
	if r := verify(r1); r.status != 401 {
		t.Errorf("verify of a token of a revoked family: %d", r.status)
	}
}

// TestTokenAnswersAreNotCached checks Cache-Control: no-store on login and refresh.
func TestTokenAnswersAreNotCached(t *testing.T) {
	t.Parallel()
	e := setup(t, nil)
	e.newTenants("acme")
	r := e.mustDo(req{method: "POST", path: "/api/v1/auth/token", host: host("acme"),
		body: map[string]string{"email": "admin@acme.example", "password": adminPassword}}, 200)
	if got := r.header.Get("Cache-Control"); got != "no-store" {
		t.Errorf("login Cache-Control %q", got)
	}
	rt := r.json(t)["refresh"].(string)
	r = e.mustDo(req{method: "POST", path: "/api/v1/auth/token/refresh", host: host("acme"), body: map[string]string{"refresh": rt}}, 200)
	if got := r.header.Get("Cache-Control"); got != "no-store" {
		t.Errorf("refresh Cache-Control %q", got)
	}
}

// TestPanelSessionsEndOnEveryReplica signs in to the tenant panel on one replica and
// presents the cookie to another after a logout, a password change, a deactivation and
// a demotion: the very next request is refused each time.
func TestPanelSessionsEndOnEveryReplica(t *testing.T) {
	t.Parallel()
	e := setup(t, nil)
	e.newTenants("acme")
	admin, _ := e.loginAdmin("acme")
	for name, stores := range attacktest.SharedStores(e.db) {
		t.Run(name, func(t *testing.T) {
			ts, ss := stores(t)
			hs, _ := e.replicas(t, 2, ts, ss)
			// signIn signs email in on replica 0 and returns its panel there and a panel
			// on replica 1 holding a copy of its cookie.
			signIn := func(email, pw string) (*panel, *panel) {
				t.Helper()
				p := &panel{e: e, host: host("acme"), h: hs[0]}
				p.login(email, pw)
				other := &panel{e: e, host: host("acme"), h: hs[1], cookie: p.cookie}
				other.mustGet("/admin/")
				return p, other
			}
			refused := func(what string, p *panel) {
				t.Helper()
				if a := p.do("/admin/", nil); a.status != http.StatusSeeOther || a.location != "/admin/login" {
					t.Errorf("after %s: %d to %q, want 303 to /admin/login", what, a.status, a.location)
				}
			}
			newAdmin := func(email string) int64 {
				t.Helper()
				id := e.createUser("acme", admin, email)
				e.mustDo(req{method: "PATCH", path: fmt.Sprintf("/api/v1/users/%d", id), host: host("acme"), token: admin,
					body: map[string]any{"is_admin": true}}, 200)
				return id
			}

			p, copied := signIn("admin@acme.example", adminPassword)
			if a := p.do("/admin/logout", url.Values{"csrf": {p.mustGet("/admin/").csrf(t)}}); a.status != http.StatusSeeOther {
				t.Fatalf("logout: %d %s", a.status, a.body)
			}
			refused("logout", copied)

			email := "changer-" + name + "@acme.example"
			newAdmin(email)
			_, copied = signIn(email, "user password 1")
			own, _ := e.login("acme", email, "user password 1")
			e.mustDo(req{method: "POST", path: "/api/v1/users/me/password", host: host("acme"), token: own,
				body: map[string]string{"old_password": "user password 1", "new_password": "a new long password 1"}}, 204)
			refused("a password change", copied)

			email = "leaver-" + name + "@acme.example"
			id := newAdmin(email)
			_, copied = signIn(email, "user password 1")
			e.mustDo(req{method: "PATCH", path: fmt.Sprintf("/api/v1/users/%d", id), host: host("acme"), token: admin,
				body: map[string]any{"is_active": false}}, 200)
			refused("a deactivation", copied)

			email = "demoted-" + name + "@acme.example"
			id = newAdmin(email)
			_, copied = signIn(email, "user password 1")
			e.mustDo(req{method: "PATCH", path: fmt.Sprintf("/api/v1/users/%d", id), host: host("acme"), token: admin,
				body: map[string]any{"is_admin": false}}, 200)
			refused("a demotion", copied)
		})
	}
}

// TestPanelLoginNeedsLoginCSRF checks that a login form without the login CSRF token of
// its nonce cookie is refused, whatever the password.
func TestPanelLoginNeedsLoginCSRF(t *testing.T) {
	t.Parallel()
	e := setup(t, nil)
	e.newTenants("acme")
	p := e.panel("acme")
	a := p.do("/admin/login", url.Values{"email": {"admin@acme.example"}, "password": {adminPassword}, "csrf": {strings.Repeat("0", 64)}})
	if a.status != http.StatusForbidden || a.setsCookie {
		t.Errorf("login with a forged login CSRF token: %d, session cookie %v", a.status, a.setsCookie)
	}
}
