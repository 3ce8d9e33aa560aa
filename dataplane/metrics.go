package dataplane

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tenantplane/tenantplane/dataplane/pool"
)

// poolMetric is one pool LRU counter or gauge, read from pool.Stats at scrape time.
type poolMetric struct {
	desc  *prometheus.Desc
	kind  prometheus.ValueType
	value func(s pool.Stats) float64
}

// poolCollector exports the pool LRU's counters, read at each scrape.
type poolCollector struct {
	s       *Server
	metrics []poolMetric
}

var _ prometheus.Collector = (*poolCollector)(nil)

// PoolCollector returns a Prometheus collector of the pool LRU's counters (hits, misses,
// evictions, budget waits, open connections...), read from PoolStats at each scrape;
// register it on the metrics listener's registry (metrics.Metrics.Register).
func (s *Server) PoolCollector() prometheus.Collector {
	m := func(name string, kind prometheus.ValueType, help string, v func(pool.Stats) float64) poolMetric {
		return poolMetric{prometheus.NewDesc(name, help, nil, nil), kind, v}
	}
	c, g := prometheus.CounterValue, prometheus.GaugeValue
	return &poolCollector{s: s, metrics: []poolMetric{
		m("tenantplane_pool_hits_total", c, "Units of work that found their tenant's pool in the LRU.", func(s pool.Stats) float64 { return float64(s.Hits) }),
		m("tenantplane_pool_misses_total", c, "Units of work that had to open their tenant's pool.", func(s pool.Stats) float64 { return float64(s.Misses) }),
		m("tenantplane_pool_evictions_total", c, "Tenant pools pushed out of the LRU.", func(s pool.Stats) float64 { return float64(s.Evictions) }),
		m("tenantplane_pool_waits_total", c, "New connections that waited for room in the connection budget.", func(s pool.Stats) float64 { return float64(s.Waits) }),
		m("tenantplane_pool_wait_timeouts_total", c, "Waits for the connection budget that gave up (answered 503).", func(s pool.Stats) float64 { return float64(s.WaitTimeouts) }),
		m("tenantplane_pool_reclaimed_total", c, "Idle connections closed to make room for another tenant.", func(s pool.Stats) float64 { return float64(s.Reclaimed) }),
		m("tenantplane_pool_share_waits_total", c, "Units of work that waited for their tenant's share of a shared pool (noisy neighbours).", func(s pool.Stats) float64 { return float64(s.ShareWaits) }),
		m("tenantplane_pool_retries_total", c, "Units of work run again: reads whose connection was killed, reads and writes whose prepared plan a migration made stale.", func(s pool.Stats) float64 { return float64(s.Retries) }),
		m("tenantplane_pool_tenant_switches_total", c, "Units of work on a shared connection that last served another tenant.", func(s pool.Stats) float64 { return float64(s.Switches) }),
		m("tenantplane_pool_shared_connections", g, "Shared pool connections open now.", func(s pool.Stats) float64 { return float64(s.SharedConns) }),
		m("tenantplane_pool_tenants_per_connection", g, "Mean number of distinct tenants each open shared connection has served (affinity).", func(s pool.Stats) float64 { return s.TenantsPerConn }),
		m("tenantplane_pool_max_tenants_per_connection", g, "Most distinct tenants one open shared connection has served.", func(s pool.Stats) float64 { return float64(s.MaxTenantsPerConn) }),
		m("tenantplane_pools", g, "Tenant pools in the LRU.", func(s pool.Stats) float64 { return float64(s.Pools) }),
		m("tenantplane_pools_closing", g, "Evicted tenant pools still finishing their work.", func(s pool.Stats) float64 { return float64(s.Closing) }),
		m("tenantplane_pool_open_connections", g, "Postgres connections open across all tenant pools.", func(s pool.Stats) float64 { return float64(s.OpenConns) }),
		m("tenantplane_pool_connection_budget", g, "The connection budget across all tenant pools.", func(s pool.Stats) float64 { return float64(s.Budget) }),
	}}
}

// Describe sends the descriptions of the pool metrics.
func (p *poolCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, m := range p.metrics {
		ch <- m.desc
	}
}

// Collect reads the pool stats once and sends every pool metric.
func (p *poolCollector) Collect(ch chan<- prometheus.Metric) {
	st := p.s.PoolStats()
	for _, m := range p.metrics {
		ch <- prometheus.MustNewConstMetric(m.desc, m.kind, m.value(st))
	}
}
