package web

import (
	"errors"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/tenantplane/tenantplane/apperr"
)

// Defaults of Limits.
const (
	DefaultBodyTimeout    = 30 * time.Second
	DefaultWriteTimeout   = 60 * time.Second
	DefaultMaxHeaderBytes = 32 << 10
)

// Limits bound how long one request may hold its connection, so that a client cannot
// keep connections open without limit by sending slowly or reading slowly. WebSocket
// upgrades are exempt: once upgraded they are bounded by their own ping/pong.
type Limits struct {
	// BodyTimeout bounds reading the request, body included, from the moment the
	// handlers start (default DefaultBodyTimeout). A body still arriving then is cut
	// off: the handler's read fails with body_timeout and the connection is closed.
	BodyTimeout time.Duration
	// WriteTimeout bounds the writing of the answer, from the moment the handlers start
	// (default DefaultWriteTimeout).
	WriteTimeout time.Duration
	// MaxHeaderBytes is the largest request header block (request line and headers)
	// accepted; larger ones are answered 431 headers_too_large in JSON (default
	// DefaultMaxHeaderBytes). The http.Server's own MaxHeaderBytes must be larger (see
	// ServerHeaderBytes), or net/http answers a plain-text 431 first.
	MaxHeaderBytes int
}

func (l Limits) withDefaults() Limits {
	if l.BodyTimeout <= 0 {
		l.BodyTimeout = DefaultBodyTimeout
	}
	if l.WriteTimeout <= 0 {
		l.WriteTimeout = DefaultWriteTimeout
	}
	if l.MaxHeaderBytes <= 0 {
		l.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	return l
}

// ServerHeaderBytes is the http.Server.MaxHeaderBytes to serve Limit with: room above
// MaxHeaderBytes so that Limit, not net/http, answers headers that are too large.
func (l Limits) ServerHeaderBytes() int { return 2 * l.withDefaults().MaxHeaderBytes }

// Limit returns the middleware enforcing l: it answers 431 headers_too_large for
// headers over MaxHeaderBytes and sets the connection's read and write deadlines of
// every request that is not a WebSocket upgrade.
func Limit(l Limits) gin.HandlerFunc {
	l = l.withDefaults()
	return func(c *gin.Context) {
		if headerBytes(c.Request) > l.MaxHeaderBytes {
			c.Header("Connection", "close")
			c.AbortWithStatusJSON(http.StatusRequestHeaderFieldsTooLarge, ErrorBody{Error: ErrorDetail{
				Code: "headers_too_large", Message: "the request headers are larger than the server accepts",
			}})
			return
		}
		if !isWebSocketUpgrade(c.Request) {
			rc := http.NewResponseController(c.Writer)
			now := time.Now()
			// Writers without deadlines (tests' recorders) have nothing to bound.
			_ = rc.SetReadDeadline(now.Add(l.BodyTimeout))
			_ = rc.SetWriteDeadline(now.Add(l.WriteTimeout))
		}
		c.Next()
	}
}

// headerBytes is the size of r's request line and headers as sent.
func headerBytes(r *http.Request) int {
	n := len(r.Method) + len(r.RequestURI) + len(r.Proto) + 4
	for k, vs := range r.Header {
		for _, v := range vs {
			n += len(k) + len(v) + 4
		}
	}
	return n + len(r.Host) + len("Host: \r\n")
}

// isWebSocketUpgrade reports whether r asks for a WebSocket: a GET without a body,
// so that no request sending a body escapes the body deadline by claiming to upgrade.
func isWebSocketUpgrade(r *http.Request) bool {
	return r.Method == http.MethodGet && r.ContentLength == 0 &&
		strings.EqualFold(r.Header.Get("Upgrade"), "websocket")
}

// BodyReadError turns an error reading a request body into the client's error: a
// body that did not arrive within the deadline is an Invalid body_timeout (408-like:
// the connection is closed after the answer), anything else an Invalid invalid_body.
func BodyReadError(err error) error {
	var ne net.Error
	if errors.Is(err, os.ErrDeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		return &apperr.Error{Kind: apperr.Invalid, Code: "body_timeout", Message: "the request body did not arrive in time", Err: err}
	}
	return &apperr.Error{Kind: apperr.Invalid, Code: "invalid_body", Message: "reading the request body failed", Err: err}
}
