// Package metrics is the platform's Prometheus instrumentation: one registry per process
// holding the HTTP, pool, provisioning, fleet-migration, WebSocket, search-outbox and
// login-throttle instruments, the Go runtime and process collectors, and the handler the
// metrics listener serves (never the public listener).
//
// No label takes values that grow with the number of tenants: routes are gin's route
// templates, and tenants appear only as counts.
package metrics

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics holds every instrument. A nil *Metrics is valid and records nothing, so
// components and tests that do not care need no registry.
type Metrics struct {
	reg *prometheus.Registry

	httpRequests *prometheus.CounterVec
	httpDuration *prometheus.HistogramVec

	// poolEvents counts the dataplane's tenant pool LRU events.
	poolEvents *prometheus.CounterVec

	provisioning    *prometheus.CounterVec
	provisionTime   prometheus.Histogram
	fleetEntries    *prometheus.CounterVec
	fleetRunTime    prometheus.Histogram
	wsConnections   prometheus.Gauge
	wsDeliveries    prometheus.Counter
	wsDropped       prometheus.Counter
	outboxLag       prometheus.Gauge
	throttledLogins *prometheus.CounterVec
}

// New returns Metrics on a new registry with the Go runtime and process collectors.
func New() *Metrics {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	f := func(c prometheus.Collector) { reg.MustRegister(c) }
	m := &Metrics{reg: reg}
	m.httpRequests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tenantplane_http_requests_total", Help: "HTTP requests answered, by plane, method, route template and status.",
	}, []string{"plane", "method", "route", "status"})
	m.httpDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "tenantplane_http_request_duration_seconds", Help: "HTTP request latency, by plane, method and route template.",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
	}, []string{"plane", "method", "route"})
	m.poolEvents = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tenantplane_pool_events_total", Help: "Tenant pool LRU events: hit, miss, eviction, budget_wait, budget_timeout.",
	}, []string{"event"})
	m.provisioning = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tenantplane_provisioning_total", Help: "Tenant operations (provision, export, import, clone, move...) finished, by operation and outcome.",
	}, []string{"operation", "outcome"})
	m.provisionTime = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "tenantplane_provisioning_duration_seconds", Help: "Time from a tenant operation's start to its end.",
		Buckets: prometheus.ExponentialBuckets(0.005, 2, 14),
	})
	m.fleetEntries = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tenantplane_fleet_migration_tenants_total", Help: "Tenants finished by fleet migration runs, by state.",
	}, []string{"state"})
	m.fleetRunTime = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "tenantplane_fleet_migration_run_duration_seconds", Help: "Duration of fleet migration runs.",
		Buckets: prometheus.ExponentialBuckets(0.05, 2, 14),
	})
	m.wsConnections = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "tenantplane_websocket_connections", Help: "Open notification WebSockets.",
	})
	m.wsDeliveries = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "tenantplane_websocket_deliveries_total", Help: "Notifications written to WebSockets.",
	})
	m.wsDropped = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "tenantplane_websocket_dropped_total", Help: "WebSockets closed because their client fell behind.",
	})
	m.outboxLag = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "tenantplane_search_outbox_lag_seconds", Help: "Age of the oldest search outbox event not yet indexed, as of the indexer's last sweep.",
	})
	m.throttledLogins = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tenantplane_throttled_logins_total", Help: "Password checks refused by the login throttle, by plane.",
	}, []string{"plane"})
	for _, c := range []prometheus.Collector{m.httpRequests, m.httpDuration, m.poolEvents, m.provisioning, m.provisionTime,
		m.fleetEntries, m.fleetRunTime, m.wsConnections, m.wsDeliveries, m.wsDropped, m.outboxLag, m.throttledLogins} {
		f(c)
	}
	return m
}

// Handler serves the registry in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	if m == nil {
		return http.NotFoundHandler()
	}
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// Register adds a collector of a component's own (e.g. a pool's gauges read at scrape
// time). It returns the registry's error for a duplicate.
func (m *Metrics) Register(c prometheus.Collector) error {
	if m == nil {
		return nil
	}
	return m.reg.Register(c)
}

// HTTPRequest records one answered request; route is the route template ("" for none).
func (m *Metrics) HTTPRequest(plane, method, route string, status int, took time.Duration) {
	if m == nil {
		return
	}
	if route == "" {
		route = "unmatched"
	}
	m.httpRequests.WithLabelValues(plane, method, route, strconv.Itoa(status)).Inc()
	m.httpDuration.WithLabelValues(plane, method, route).Observe(took.Seconds())
}

// PoolEvent counts a tenant pool event (hit, miss, eviction, budget_wait, budget_timeout).
func (m *Metrics) PoolEvent(event string) {
	if m != nil {
		m.poolEvents.WithLabelValues(event).Inc()
	}
}

// Operation records a finished tenant operation and its duration; outcome is "ok" or
// "failed".
func (m *Metrics) Operation(operation, outcome string, took time.Duration) {
	if m == nil {
		return
	}
	m.provisioning.WithLabelValues(operation, outcome).Inc()
	m.provisionTime.Observe(took.Seconds())
}

// FleetTenant counts a tenant a fleet run finished in state.
func (m *Metrics) FleetTenant(state string) {
	if m != nil {
		m.fleetEntries.WithLabelValues(state).Inc()
	}
}

// FleetRun records a finished fleet migration run.
func (m *Metrics) FleetRun(took time.Duration) {
	if m != nil {
		m.fleetRunTime.Observe(took.Seconds())
	}
}

// WebSocketOpened and WebSocketClosed track open sockets.
func (m *Metrics) WebSocketOpened() {
	if m != nil {
		m.wsConnections.Inc()
	}
}

// WebSocketClosed counts a socket that ended; dropped is true for a slow client.
func (m *Metrics) WebSocketClosed(dropped bool) {
	if m == nil {
		return
	}
	m.wsConnections.Dec()
	if dropped {
		m.wsDropped.Inc()
	}
}

// Delivered counts notifications written to sockets.
func (m *Metrics) Delivered(n int) {
	if m != nil {
		m.wsDeliveries.Add(float64(n))
	}
}

// OutboxLag records the age of the oldest unindexed search event.
func (m *Metrics) OutboxLag(age time.Duration) {
	if m != nil {
		m.outboxLag.Set(age.Seconds())
	}
}

// Throttled counts a password check refused by the throttle on plane.
func (m *Metrics) Throttled(plane string) {
	if m != nil {
		m.throttledLogins.WithLabelValues(plane).Inc()
	}
}
