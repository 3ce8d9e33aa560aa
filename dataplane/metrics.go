package dataplane

import (
	"fmt"
	"net/http"

	"github.com/gin-gonic/gin"
)

// metrics answers /metrics in the Prometheus text format with the pool LRU's counters.
func (s *Server) metrics(c *gin.Context) {
	st := s.pools.Stats()
	c.Header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	c.Status(http.StatusOK)
	w := c.Writer
	metric := func(name, kind, help string, v any) {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n%s %v\n", name, help, name, kind, name, v)
	}
	metric("tenantplane_pool_hits_total", "counter", "Units of work that found their tenant's pool in the LRU.", st.Hits)
	metric("tenantplane_pool_misses_total", "counter", "Units of work that had to open their tenant's pool.", st.Misses)
	metric("tenantplane_pool_evictions_total", "counter", "Tenant pools pushed out of the LRU.", st.Evictions)
	metric("tenantplane_pool_waits_total", "counter", "New connections that waited for room in the connection budget.", st.Waits)
	metric("tenantplane_pool_wait_timeouts_total", "counter", "Waits for the connection budget that gave up (answered 503).", st.WaitTimeouts)
	metric("tenantplane_pool_reclaimed_total", "counter", "Idle connections closed to make room for another tenant.", st.Reclaimed)
	metric("tenantplane_pools", "gauge", "Tenant pools in the LRU.", st.Pools)
	metric("tenantplane_pools_closing", "gauge", "Evicted tenant pools still finishing their work.", st.Closing)
	metric("tenantplane_pool_open_connections", "gauge", "Postgres connections open across all tenant pools.", st.OpenConns)
	metric("tenantplane_pool_connection_budget", "gauge", "The connection budget across all tenant pools.", st.Budget)
}
