package controlplane

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/tenantplane/tenantplane/metrics"
	"github.com/tenantplane/tenantplane/throttle"
)

func TestMetricsThrottledLogins(t *testing.T) {
	t.Parallel()
	reg := metrics.New()
	b := setup(t, Config{Metrics: reg, Login: throttle.Login{Account: throttle.Rule{Burst: 1, Refill: time.Hour}}})
	b.do(t, "POST", "/api/v1/auth/token", map[string]string{"email": "x@example.com", "password": "guess-guess"}).
		wantStatus(t, http.StatusUnauthorized)
	b.do(t, "POST", "/api/v1/auth/token", map[string]string{"email": "x@example.com", "password": "guess-guess"}).
		wantStatus(t, http.StatusTooManyRequests)
	rec := httptest.NewRecorder()
	reg.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if want := "tenantplane_throttled_logins_total{plane=\"controlplane\"} 1\n"; !strings.Contains(rec.Body.String(), want) {
		t.Errorf("metrics lack %q:\n%s", want, rec.Body.String())
	}
}
