package web

import (
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/tenantplane/tenantplane/apperr"
	"github.com/tenantplane/tenantplane/redact"
)

const (
	requestIDKey = "tenantplane.request_id"
	tenantKey    = "tenantplane.tenant"
)

// RequestID returns the id of the request, as set by the RequestID middleware.
func RequestID(c *gin.Context) string { return c.GetString(requestIDKey) }

// SetTenant records the tenant slug of the request for the access log.
func SetTenant(c *gin.Context, slug string) { c.Set(tenantKey, slug) }

// Tenant returns the slug recorded with SetTenant, or "".
func Tenant(c *gin.Context) string { return c.GetString(tenantKey) }

// Middleware returns the request-id, recovery and access-log middleware for a plane
// ("controlplane" or "dataplane"). The access log carries request id, plane, tenant,
// method, route, status and latency; never the query string's secrets, never headers.
func Middleware(log *slog.Logger, plane string, now func() time.Time) gin.HandlerFunc {
	if now == nil {
		now = time.Now
	}
	return func(c *gin.Context) {
		start := now()
		id := c.GetHeader("X-Request-Id")
		if id == "" || len(id) > 64 {
			b := make([]byte, 8)
			_, _ = rand.Read(b)
			id = hex.EncodeToString(b)
		}
		c.Set(requestIDKey, id)
		c.Header("X-Request-Id", id)
		defer func() {
			if r := recover(); r != nil {
				log.ErrorContext(c.Request.Context(), "panic serving request", "request_id", id, "panic", r)
				if !c.Writer.Written() {
					WriteError(c, log, apperr.New(apperr.Internal, "internal", "internal error"))
				}
			}
			route := c.FullPath()
			if route == "" {
				route = "unmatched"
			}
			status := c.Writer.Status()
			level := slog.LevelInfo
			switch {
			case status == http.StatusServiceUnavailable:
				level = slog.LevelWarn
			case status >= 500:
				level = slog.LevelError
			}
			log.LogAttrs(c.Request.Context(), level, "request",
				slog.String("request_id", id),
				slog.String("plane", plane),
				slog.String("tenant", Tenant(c)),
				slog.String("method", c.Request.Method),
				slog.String("route", route),
				slog.String("path", c.Request.URL.Path),
				slog.String("query", redact.Query(c.Request.URL.RawQuery)),
				slog.Int("status", status),
				slog.Float64("latency_ms", float64(now().Sub(start).Microseconds())/1000),
				slog.String("client_ip", c.ClientIP()),
			)
		}()
		c.Next()
	}
}

// NotFound answers unknown routes with the JSON error shape.
func NotFound(c *gin.Context) {
	c.AbortWithStatusJSON(http.StatusNotFound, ErrorBody{Error: ErrorDetail{Code: "route_not_found", Message: "no such route: " + c.Request.Method + " " + c.Request.URL.Path}})
}

// MethodNotAllowed answers known routes called with the wrong method.
func MethodNotAllowed(c *gin.Context) {
	c.AbortWithStatusJSON(http.StatusMethodNotAllowed, ErrorBody{Error: ErrorDetail{Code: "method_not_allowed", Message: "method " + c.Request.Method + " is not allowed on " + c.Request.URL.Path}})
}
