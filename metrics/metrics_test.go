package metrics

import (
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestScrapeShowsEveryInstrument(t *testing.T) {
	t.Parallel()
	m := New()
	m.HTTPRequest("dataplane", "GET", "/api/v1/blogs/:id", 200, 3*time.Millisecond)
	m.PoolEvent("miss")
	m.Operation("provision", "ok", 30*time.Millisecond)
	m.FleetTenant("done")
	m.FleetRun(time.Second)
	m.WebSocketOpened()
	m.Delivered(3)
	m.WebSocketClosed(true)
	m.OutboxLag(2 * time.Second)
	m.Throttled("controlplane")

	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	for _, want := range []string{
		`tenantplane_http_requests_total{method="GET",plane="dataplane",route="/api/v1/blogs/:id",status="200"} 1`,
		`tenantplane_http_request_duration_seconds_bucket{method="GET",plane="dataplane",route="/api/v1/blogs/:id",le="0.005"} 1`,
		`tenantplane_pool_events_total{event="miss"} 1`,
		`tenantplane_provisioning_total{operation="provision",outcome="ok"} 1`,
		`tenantplane_fleet_migration_tenants_total{state="done"} 1`,
		`tenantplane_websocket_connections 0`,
		`tenantplane_websocket_deliveries_total 3`,
		`tenantplane_websocket_dropped_total 1`,
		`tenantplane_search_outbox_lag_seconds 2`,
		`tenantplane_throttled_logins_total{plane="controlplane"} 1`,
		`go_goroutines`, `process_cpu_seconds_total`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("scrape lacks %s", want)
		}
	}
	if strings.Contains(string(body), "tenant=") || strings.Contains(string(body), "tenant_id=") {
		t.Error("a metric is labelled by tenant")
	}
}

func TestNilMetricsRecordNothing(t *testing.T) {
	t.Parallel()
	var m *Metrics
	m.HTTPRequest("x", "GET", "", 200, 0)
	m.PoolEvent("hit")
	m.WebSocketOpened()
	m.WebSocketClosed(false)
	if err := m.Register(nil); err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != 404 {
		t.Errorf("nil metrics handler answered %d", rec.Code)
	}
}
