package controlplane

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/tenantplane/tenantplane/internal/attacktest"
	"github.com/tenantplane/tenantplane/platform"
	"github.com/tenantplane/tenantplane/session"
	"github.com/tenantplane/tenantplane/throttle"
	"github.com/tenantplane/tenantplane/web/adminpanel"
)

// replicas returns the handlers of n control-plane servers (not started) on b's
// databases sharing the login throttle and the panel sessions through ts and ss, with
// the default login limits, and the throttle's clock.
func (b *bundle) replicas(t *testing.T, n int, ts throttle.Store, ss session.Store) ([]http.Handler, *attacktest.Clock) {
	t.Helper()
	clk := attacktest.NewClock()
	lim, err := throttle.New(throttle.Config{Store: ts, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	sm, err := session.New(session.Config{Store: ss, CSRFKey: b.srv.issuer.Derive(adminpanel.CSRFLabel)})
	if err != nil {
		t.Fatal(err)
	}
	var hs []http.Handler
	for range n {
		srv := New(Config{Limiter: lim, Sessions: sm, SignupRate: 1000, SignupBurst: 1000}, b.store, b.prov, platform.NewStore(b.db), b.srv.issuer, b.srv.hasher)
		hs = append(hs, srv.Handler())
	}
	return hs, clk
}

func apiLogin(ip, email, pw string) func() *http.Request {
	body := fmt.Sprintf(`{"email":%q,"password":%q}`, email, pw)
	return func() *http.Request {
		r := httptest.NewRequest(http.MethodPost, "/api/v1/auth/token", strings.NewReader(body))
		r.RemoteAddr = ip + ":40000"
		r.Header.Set("Content-Type", "application/json")
		return r
	}
}

// panelLogin is a panel login form from ip, with the login CSRF token and nonce cookie
// of a login page fetched from h once.
func panelLogin(t *testing.T, h http.Handler, ip, email, pw string) func() *http.Request {
	t.Helper()
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/admin/login", nil))
	csrf := adminAnswer{body: w.Body.String()}.csrf(t)
	cookies := w.Result().Cookies()
	form := url.Values{"email": {email}, "password": {pw}, "csrf": {csrf}}.Encode()
	return func() *http.Request {
		r := httptest.NewRequest(http.MethodPost, "/admin/login", strings.NewReader(form))
		r.RemoteAddr = ip + ":40000"
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		for _, c := range cookies {
			r.AddCookie(c)
		}
		return r
	}
}

// TestParallelWrongPlatformPasswordsAreThrottledAcrossReplicas sends 100 wrong
// passwords at once for one platform account from one IP, over two replicas sharing the
// throttle, to the API login and the panel login: at most the account's burst + 2 are
// checked, also in a burst right after a refill.
func TestParallelWrongPlatformPasswordsAreThrottledAcrossReplicas(t *testing.T) {
	t.Parallel()
	b := setup(t, Config{}, setupOptions{noStart: true})
	if _, err := b.users.Create(context.Background(), adminEmail, adminPassword); err != nil {
		t.Fatal(err)
	}
	limits := throttle.Login{}.WithDefaults()
	for name, stores := range attacktest.SharedStores(b.db) {
		t.Run(name, func(t *testing.T) {
			ts, ss := stores(t)
			hs, clk := b.replicas(t, 2, ts, ss)
			for what, mk := range map[string]func(ip string) func() *http.Request{
				"api login": func(ip string) func() *http.Request {
					return apiLogin(ip, "Nobody-"+name+"@platform.example.com", "wrong password")
				},
				"panel login": func(ip string) func() *http.Request { return panelLogin(t, hs[1], ip, adminEmail, "wrong password") },
			} {
				ip := attacktest.RandomIP()
				attacktest.CheckBurst(t, what, attacktest.Burst(t, hs, 100, mk(ip)), 100, http.StatusUnauthorized, limits.Account.Burst)
				clk.Add(limits.Account.Refill)
				attacktest.CheckBurst(t, what+" after a refill", attacktest.Burst(t, hs, 100, mk(ip)), 100, http.StatusUnauthorized, 1)
			}
		})
	}
}

// TestSuccessfulPlatformLoginsDoNotCountAgainstTheIP logs in more often from one IP
// than its failure limit allows: every login succeeds, so clients behind one NAT do not
// lock each other out.
func TestSuccessfulPlatformLoginsDoNotCountAgainstTheIP(t *testing.T) {
	t.Parallel()
	b := setup(t, Config{}, setupOptions{noStart: true})
	if _, err := b.users.Create(context.Background(), adminEmail, adminPassword); err != nil {
		t.Fatal(err)
	}
	hs, _ := b.replicas(t, 1, throttle.NewPostgres(b.db), session.NewMemory())
	ip := attacktest.RandomIP()
	n := throttle.Login{}.WithDefaults().IP.Burst + 10
	for i := range n {
		w := httptest.NewRecorder()
		hs[0].ServeHTTP(w, apiLogin(ip, adminEmail, adminPassword)())
		if w.Code != http.StatusOK {
			t.Fatalf("login %d from one IP: %d %s", i+1, w.Code, w.Body)
		}
		if got := w.Header().Get("Cache-Control"); got != "no-store" {
			t.Fatalf("login answer Cache-Control %q", got)
		}
	}
}

// TestPlatformPanelSessionsEndOnEveryReplica signs in to the platform panel on one
// replica and presents the cookie to another after a logout and after the user's
// deactivation: the very next request is refused.
func TestPlatformPanelSessionsEndOnEveryReplica(t *testing.T) {
	t.Parallel()
	b := setup(t, Config{}, setupOptions{noStart: true})
	u, err := b.users.Create(context.Background(), adminEmail, adminPassword)
	if err != nil {
		t.Fatal(err)
	}
	for name, stores := range attacktest.SharedStores(b.db) {
		t.Run(name, func(t *testing.T) {
			ts, ss := stores(t)
			hs, _ := b.replicas(t, 2, ts, ss)
			// signIn logs in on replica 0 and returns the session cookie, checked on
			// replica 1.
			signIn := func() *http.Cookie {
				t.Helper()
				w := httptest.NewRecorder()
				hs[0].ServeHTTP(w, panelLogin(t, hs[0], attacktest.RandomIP(), adminEmail, adminPassword)())
				for _, c := range w.Result().Cookies() {
					if c.Name == adminCookie && c.Value != "" {
						if code, _ := get(hs[1], c); code != http.StatusOK {
							t.Fatalf("the session is refused on another replica: %d", code)
						}
						return c
					}
				}
				t.Fatalf("panel login: %d, no session cookie; %s", w.Code, w.Body)
				return nil
			}
			refused := func(what string, c *http.Cookie) {
				t.Helper()
				if code, loc := get(hs[1], c); code != http.StatusSeeOther || loc != "/admin/login" {
					t.Errorf("after %s: %d to %q, want 303 to /admin/login", what, code, loc)
				}
			}

			ck := signIn()
			_, page := get(hs[0], ck)
			r := httptest.NewRequest(http.MethodPost, "/admin/logout", strings.NewReader(url.Values{"csrf": {adminAnswer{body: page}.csrf(t)}}.Encode()))
			r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			r.AddCookie(ck)
			w := httptest.NewRecorder()
			hs[0].ServeHTTP(w, r)
			if w.Code != http.StatusSeeOther {
				t.Fatalf("logout: %d %s", w.Code, w.Body)
			}
			refused("logout", ck)

			ck = signIn()
			if _, err := b.db.Exec(context.Background(), `UPDATE platform_users SET is_active = false WHERE id = $1`, u.ID); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				_, _ = b.db.Exec(context.Background(), `UPDATE platform_users SET is_active = true WHERE id = $1`, u.ID)
			})
			refused("a deactivation", ck)
			if _, err := b.db.Exec(context.Background(), `UPDATE platform_users SET is_active = true WHERE id = $1`, u.ID); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// get sends GET /admin/ with the cookie to h and returns the status and the Location
// header, or the body of a 200.
func get(h http.Handler, c *http.Cookie) (int, string) {
	r := httptest.NewRequest(http.MethodGet, "/admin/", nil)
	r.AddCookie(c)
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Code == http.StatusOK {
		return w.Code, w.Body.String()
	}
	return w.Code, w.Header().Get("Location")
}
