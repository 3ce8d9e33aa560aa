package web

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
)

// CORSConfig configures CORS: which browser origins on other hosts may call the API.
type CORSConfig struct {
	// Origins are the allowed origins, exactly as browsers send them
	// (scheme://host[:port]); "*" allows any origin (never with credentials). Empty turns
	// CORS off: browsers then refuse cross-origin calls, as before.
	Origins []string
	// Credentials lets allowed origins send cookies and HTTP authentication (off by
	// default; bearer tokens in the Authorization header need no credentials).
	Credentials bool
	// MaxAge is how long a browser may cache a preflight answer (default 10 min).
	MaxAge time.Duration
}

// corsHeaders are the request headers an allowed origin may send.
const corsHeaders = "Authorization, Content-Type, Idempotency-Key, X-Tenant, X-Request-Id"

// CORS answers preflight requests and marks the answers of allowed origins, in the way
// of django-cors-headers: an origin not in the list gets no CORS headers (the browser
// blocks its page from reading the answer), and a preflight of an allowed origin is
// answered 204 without reaching the routes.
func CORS(cfg CORSConfig) gin.HandlerFunc {
	allowed := map[string]bool{}
	anyOrigin := false
	for _, o := range cfg.Origins {
		o = strings.TrimRight(strings.TrimSpace(o), "/")
		if o == "*" {
			anyOrigin = true
		} else if o != "" {
			allowed[strings.ToLower(o)] = true
		}
	}
	maxAge := strconv.Itoa(int(cfg.MaxAge.Seconds()))
	if cfg.MaxAge <= 0 {
		maxAge = "600"
	}
	credentials := cfg.Credentials && !anyOrigin
	return func(c *gin.Context) {
		origin := c.GetHeader("Origin")
		if origin == "" || (!anyOrigin && !allowed[strings.ToLower(origin)]) {
			c.Next()
			return
		}
		h := c.Writer.Header()
		h.Add("Vary", "Origin")
		if anyOrigin {
			h.Set("Access-Control-Allow-Origin", "*")
		} else {
			h.Set("Access-Control-Allow-Origin", origin)
		}
		if credentials {
			h.Set("Access-Control-Allow-Credentials", "true")
		}
		h.Set("Access-Control-Expose-Headers", "Location, Retry-After, X-Request-Id")
		if c.Request.Method == http.MethodOptions && c.GetHeader("Access-Control-Request-Method") != "" {
			h.Set("Access-Control-Allow-Methods", "GET, POST, PUT, PATCH, DELETE")
			h.Set("Access-Control-Allow-Headers", corsHeaders)
			h.Set("Access-Control-Max-Age", maxAge)
			c.AbortWithStatus(http.StatusNoContent)
			return
		}
		c.Next()
	}
}
