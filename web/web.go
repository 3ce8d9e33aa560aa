// Package web holds the HTTP plumbing both planes share: handlers that return errors
// and the one table that turns errors into statuses and JSON bodies, strict JSON
// decoding with size limits, request ids and access logs that never carry secrets.
package web

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"strings"

	"github.com/gin-gonic/gin"

	"github.com/tenantplane/tenantplane/apperr"
)

// ErrorBody is the JSON shape of every error answer.
type ErrorBody struct {
	Error ErrorDetail `json:"error"`
}

// ErrorDetail is the code and message of an error answer.
type ErrorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

var statusOf = map[apperr.Kind]int{
	apperr.Internal:        http.StatusInternalServerError,
	apperr.Invalid:         http.StatusBadRequest,
	apperr.Unauthenticated: http.StatusUnauthorized,
	apperr.Forbidden:       http.StatusForbidden,
	apperr.NotFound:        http.StatusNotFound,
	apperr.Conflict:        http.StatusConflict,
	apperr.TooLarge:        http.StatusRequestEntityTooLarge,
	apperr.RateLimited:     http.StatusTooManyRequests,
	apperr.Unavailable:     http.StatusServiceUnavailable,
	apperr.Unprocessable:   http.StatusUnprocessableEntity,
}

var defaultCode = map[apperr.Kind]string{
	apperr.Invalid:         "invalid",
	apperr.Unauthenticated: "unauthenticated",
	apperr.Forbidden:       "forbidden",
	apperr.NotFound:        "not_found",
	apperr.Conflict:        "conflict",
	apperr.TooLarge:        "body_too_large",
	apperr.RateLimited:     "rate_limited",
	apperr.Unavailable:     "unavailable",
	apperr.Unprocessable:   "unprocessable",
}

// Status returns the HTTP status, code and client-safe message for err. Errors that are
// not domain errors are internal: their detail is never returned.
func Status(err error) (int, string, string) {
	var e *apperr.Error
	if !errors.As(err, &e) || e.Kind == apperr.Internal {
		return http.StatusInternalServerError, "internal", "internal error"
	}
	code := e.Code
	if code == "" {
		code = defaultCode[e.Kind]
	}
	return statusOf[e.Kind], code, e.Message
}

// RetryAfter is implemented by the causes of errors that tell the client when to try
// again (a throttled login): Fail sends it as the Retry-After header.
type RetryAfter interface {
	RetryAfterSeconds() int
}

// Fail prepares the answer to a request that failed with err, for any face (JSON API,
// admin pages): it logs the failures that are the server's (internal errors at error
// level, 503s at warn level, each with its cause, which is never sent), sets the
// Retry-After header when err's cause tells one, and returns Status(err).
func Fail(c *gin.Context, log *slog.Logger, err error) (status int, code, msg string) {
	status, code, msg = Status(err)
	switch {
	case status == http.StatusServiceUnavailable:
		log.WarnContext(c.Request.Context(), "request unavailable", "request_id", RequestID(c), "route", c.FullPath(), "code", code, "error", err)
	case status >= 500:
		log.ErrorContext(c.Request.Context(), "request failed", "request_id", RequestID(c), "route", c.FullPath(), "error", err)
	}
	var ra RetryAfter
	var ae *apperr.Error
	switch {
	case errors.As(err, &ra):
		c.Header("Retry-After", strconv.Itoa(ra.RetryAfterSeconds()))
	case errors.As(err, &ae) && ae.RetryAfter > 0:
		c.Header("Retry-After", strconv.Itoa(int(math.Ceil(ae.RetryAfter.Seconds()))))
	}
	return status, code, msg
}

// WriteError answers with err as JSON (see Fail).
func WriteError(c *gin.Context, log *slog.Logger, err error) {
	status, code, msg := Fail(c, log, err)
	if status == http.StatusUnauthorized {
		c.Header("WWW-Authenticate", `Bearer realm="tenantplane"`)
	}
	c.AbortWithStatusJSON(status, ErrorBody{Error: ErrorDetail{Code: code, Message: msg}})
}

// HandlerFunc is a gin handler that returns an error instead of writing it.
type HandlerFunc func(c *gin.Context) error

// Handle adapts h to gin, writing any error it returns through WriteError.
func Handle(log *slog.Logger, h HandlerFunc) gin.HandlerFunc {
	return func(c *gin.Context) {
		if err := h(c); err != nil {
			WriteError(c, log, err)
		}
	}
}

// DefaultMaxBody is the body limit of DecodeJSON when none is given.
const DefaultMaxBody = 1 << 20

// DecodeJSON reads the request body as one JSON value into v, refusing unknown fields,
// trailing data and bodies over maxBytes (0: DefaultMaxBody). Errors are domain errors
// naming the problem: Invalid (400) or TooLarge (413).
func DecodeJSON(c *gin.Context, v any, maxBytes int64) error {
	if maxBytes <= 0 {
		maxBytes = DefaultMaxBody
	}
	if ct := c.ContentType(); ct != "" && ct != "application/json" {
		return apperr.New(apperr.Invalid, "unsupported_media_type", "content type must be application/json, not %q", ct)
	}
	if c.Request.ContentLength > maxBytes {
		return apperr.New(apperr.TooLarge, "body_too_large", "request body is larger than %d bytes", maxBytes)
	}
	body := http.MaxBytesReader(c.Writer, c.Request.Body, maxBytes)
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return jsonError(err, maxBytes)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return apperr.New(apperr.TooLarge, "body_too_large", "request body is larger than %d bytes", maxBytes)
		}
		return apperr.New(apperr.Invalid, "invalid_json", "request body must hold a single JSON object")
	}
	return nil
}

func jsonError(err error, maxBytes int64) error {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		return apperr.New(apperr.TooLarge, "body_too_large", "request body is larger than %d bytes", maxBytes)
	case errors.Is(err, io.EOF):
		return apperr.New(apperr.Invalid, "invalid_json", "request body is empty; a JSON object is required")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return apperr.New(apperr.Invalid, "invalid_json", "request body is truncated JSON")
	case errors.As(err, &syn):
		return apperr.New(apperr.Invalid, "invalid_json", "malformed JSON at byte %d", syn.Offset)
	case errors.As(err, &typ):
		field := typ.Field
		if field == "" {
			return apperr.New(apperr.Invalid, "invalid_json", "request body must be a JSON object")
		}
		return apperr.New(apperr.Invalid, "invalid_field", "field %q must be %s, not %s", field, kindName(typ.Type.Kind().String()), typ.Value)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return apperr.New(apperr.Invalid, "unknown_field", "unknown field %s", strings.TrimPrefix(err.Error(), "json: unknown field "))
	}
	return apperr.New(apperr.Invalid, "invalid_json", "invalid JSON: %s", err.Error())
}

func kindName(k string) string {
	switch {
	case strings.HasPrefix(k, "int"), strings.HasPrefix(k, "uint"), strings.HasPrefix(k, "float"):
		return "a number"
	case k == "bool":
		return "a boolean"
	case k == "string":
		return "a string"
	case k == "slice":
		return "an array"
	}
	return fmt.Sprintf("a %s", k)
}

// PathID parses the path parameter name as a positive integer id. Anything else cannot
// name a record, so it is a NotFound error (not_found) saying notFound.
func PathID(c *gin.Context, name, notFound string) (int64, error) {
	id, err := strconv.ParseInt(c.Param(name), 10, 64)
	if err != nil || id <= 0 {
		return 0, apperr.New(apperr.NotFound, "not_found", "%s", notFound)
	}
	return id, nil
}
