package dataplane

import (
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tenantplane/tenantplane/dataplane/auth"
	"github.com/tenantplane/tenantplane/metrics"
)

// scrape reads the value of the metric line that starts with series ("" when absent).
func scrape(t testing.TB, reg *metrics.Metrics, series string) string {
	t.Helper()
	rec := httptest.NewRecorder()
	reg.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindStringSubmatch(rec.Body.String())
	if m == nil {
		return ""
	}
	return m[1]
}

// waitMetric waits, with a generous bound, until ok accepts series' value.
func waitMetric(t testing.TB, reg *metrics.Metrics, series string, ok func(float64) bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		raw := scrape(t, reg, series)
		v, err := strconv.ParseFloat(raw, 64)
		if err == nil && ok(v) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s = %q", series, raw)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestMetricsWebSockets(t *testing.T) {
	t.Parallel()
	reg := metrics.New()
	e := setup(t, func(c *Config) { c.Metrics = reg })
	e.newTenants("acme")
	admin, _ := e.loginAdmin("acme")
	ws := serveWS(t, e.h) + "/ws/notifications"

	a := mustWS(t, ws, wsHeader("acme", "Authorization", "Bearer "+admin))
	a.expect(t, postNote(t, e.h, "acme", admin, "Deploy", "v2 is live"))
	waitMetric(t, reg, "tenantplane_websocket_connections", func(v float64) bool { return v == 1 })
	waitMetric(t, reg, "tenantplane_websocket_deliveries_total", func(v float64) bool { return v >= 1 })
	a.close()
	waitMetric(t, reg, "tenantplane_websocket_connections", func(v float64) bool { return v == 0 })
	if got := scrape(t, reg, "tenantplane_websocket_dropped_total"); got != "0" {
		t.Errorf("dropped = %q, want 0", got)
	}
}

func TestMetricsThrottledLogins(t *testing.T) {
	t.Parallel()
	reg := metrics.New()
	e := setup(t, func(c *Config) {
		c.Metrics = reg
		c.Throttle = auth.ThrottleConfig{AccountFailures: 2, IPFailures: 100}
	})
	e.newTenants("acme")
	for range 3 {
		e.do(req{method: "POST", path: "/api/v1/auth/token", host: host("acme"),
			body: map[string]string{"email": "admin@acme.example", "password": "wrong password"}})
	}
	if got := scrape(t, reg, `tenantplane_throttled_logins_total{plane="dataplane"}`); got != "1" {
		t.Errorf("throttled logins = %q, want 1", got)
	}
	rec := httptest.NewRecorder()
	reg.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if strings.Contains(rec.Body.String(), "acme") {
		t.Errorf("a metric names the tenant:\n%s", rec.Body.String())
	}
}
