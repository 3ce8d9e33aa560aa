package web

import (
	"html/template"
	"log/slog"
	"net/http"

	"github.com/gin-gonic/gin"
)

// errorPage is the page of a browser request that failed before reaching an admin
// panel (its tenant could not be looked up, say): the panels render their own errors.
var errorPage = template.Must(template.New("error").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{.Title}}</title></head>
<body><main><h1>{{.Title}}</h1><p>{{.Message}}</p>{{if .Retry}}<p>Please try again in a moment.</p>{{end}}</main></body></html>
`))

// WritePage answers err as a small HTML page, with the status, message and headers of
// the one error table (see Fail), for the browser faces: the admin panels.
func WritePage(c *gin.Context, log *slog.Logger, err error) {
	status, _, msg := Fail(c, log, err)
	c.Header("Content-Type", "text/html; charset=utf-8")
	c.Header("Cache-Control", "no-store")
	c.Header("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'")
	c.Header("X-Content-Type-Options", "nosniff")
	c.Status(status)
	data := struct {
		Title, Message string
		Retry          bool
	}{http.StatusText(status), msg, status == http.StatusServiceUnavailable}
	if err := errorPage.Execute(c.Writer, data); err != nil {
		log.ErrorContext(c.Request.Context(), "rendering error page", "request_id", RequestID(c), "error", err)
	}
	c.Abort()
}

// HandlePage adapts h to gin like Handle, answering its errors as pages (WritePage).
func HandlePage(log *slog.Logger, h HandlerFunc) gin.HandlerFunc {
	return func(c *gin.Context) {
		if err := h(c); err != nil {
			WritePage(c, log, err)
		}
	}
}
