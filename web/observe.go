package web

import (
	"net/http"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/tenantplane/tenantplane/metrics"
)

// Observe returns the middleware recording every answered request of plane in m: its
// method, route template (never the path, which names tenants and records), status and
// latency. A nil m records nothing; now is the clock (nil: time.Now).
func Observe(m *metrics.Metrics, plane string, now func() time.Time) gin.HandlerFunc {
	if now == nil {
		now = time.Now
	}
	return func(c *gin.Context) {
		start := now()
		defer func() {
			m.HTTPRequest(plane, methodLabel(c.Request.Method), c.FullPath(), c.Writer.Status(), now().Sub(start))
		}()
		c.Next()
	}
}

// methodLabel is the method as a metric label: the standard methods by name, any other
// as "other", so that clients cannot grow the label set.
func methodLabel(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions:
		return m
	}
	return "other"
}
