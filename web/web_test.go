package web_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tenantplane/tenantplane/apperr"
	"github.com/tenantplane/tenantplane/redact"
	"github.com/tenantplane/tenantplane/web"
)

func init() { gin.SetMode(gin.TestMode) }

type signup struct {
	Slug     string `json:"slug"`
	Password string `json:"password"`
	Count    int    `json:"count"`
}

// setup returns a router with one JSON endpoint and the buffer its logs go to.
func setup(t *testing.T) (*gin.Engine, *bytes.Buffer) {
	t.Helper()
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{ReplaceAttr: redact.ReplaceAttr}))
	r := gin.New()
	r.Use(web.Middleware(log, "controlplane", nil))
	r.POST("/things", web.Handle(log, func(c *gin.Context) error {
		var in signup
		if err := web.DecodeJSON(c, &in, 256); err != nil {
			return err
		}
		log.Info("login attempt", "password", in.Password, "dsn", "postgres://app:hunter2@db/x")
		c.JSON(http.StatusCreated, in)
		return nil
	}))
	r.GET("/boom", web.Handle(log, func(*gin.Context) error { return errors.New("pq: relation secret_table does not exist") }))
	r.GET("/panic", func(*gin.Context) { panic("kaboom") })
	r.GET("/gone", web.Handle(log, func(*gin.Context) error { return apperr.NotFoundf("blog not found") }))
	r.NoRoute(web.NotFound)
	return r, &buf
}

func do(r http.Handler, method, path, body string, hdr map[string]string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	r.ServeHTTP(w, req)
	return w
}

func errorCode(t *testing.T, w *httptest.ResponseRecorder) string {
	t.Helper()
	var body web.ErrorBody
	if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil {
		t.Fatalf("error answer is not the JSON error shape: %q", w.Body.String())
	}
	return body.Error.Code
}

func TestDecodeJSONRejectsBadInput(t *testing.T) {
	t.Parallel()
	r, _ := setup(t)
	cases := []struct {
		name, body string
		status     int
		code       string
	}{
		{"malformed", `{"slug":`, 400, "invalid_json"},
		{"syntax", `{"slug" "x"}`, 400, "invalid_json"},
		{"wrong type", `{"slug": 5}`, 400, "invalid_field"},
		{"unknown field", `{"slug":"a","admin":true}`, 400, "unknown_field"},
		{"not an object", `[1,2]`, 400, "invalid_json"},
		{"two values", `{"slug":"a"}{"slug":"b"}`, 400, "invalid_json"},
		{"too large", `{"slug":"` + strings.Repeat("a", 300) + `"}`, 413, "body_too_large"},
		{"number overflow", `{"count": 1e40}`, 400, "invalid_field"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := do(r, "POST", "/things", tc.body, nil)
			if w.Code != tc.status || errorCode(t, w) != tc.code {
				t.Errorf("got %d %s, want %d %s", w.Code, w.Body.String(), tc.status, tc.code)
			}
		})
	}
	w := do(r, "POST", "/things", "", nil)
	if w.Code != 400 {
		t.Errorf("empty body: %d", w.Code)
	}
	w = do(r, "POST", "/things", `slug=a`, map[string]string{"Content-Type": "application/x-www-form-urlencoded"})
	if w.Code != 400 || errorCode(t, w) != "unsupported_media_type" {
		t.Errorf("form body: %d %s", w.Code, w.Body.String())
	}
}

func TestInternalErrorsAreNotShown(t *testing.T) {
	t.Parallel()
	r, logs := setup(t)
	w := do(r, "GET", "/boom", "", nil)
	if w.Code != 500 || strings.Contains(w.Body.String(), "secret_table") || errorCode(t, w) != "internal" {
		t.Errorf("internal error answer: %d %s", w.Code, w.Body.String())
	}
	if !strings.Contains(logs.String(), "secret_table") || !strings.Contains(logs.String(), w.Header().Get("X-Request-Id")) {
		t.Errorf("internal error should be logged with the request id: %s", logs.String())
	}
	w = do(r, "GET", "/panic", "", nil)
	if w.Code != 500 || errorCode(t, w) != "internal" {
		t.Errorf("panic answer: %d %s", w.Code, w.Body.String())
	}
	w = do(r, "GET", "/gone", "", nil)
	if w.Code != 404 || errorCode(t, w) != "not_found" || !strings.Contains(w.Body.String(), "blog not found") {
		t.Errorf("domain error answer: %d %s", w.Code, w.Body.String())
	}
	w = do(r, "GET", "/nope", "", nil)
	if w.Code != 404 || errorCode(t, w) != "route_not_found" {
		t.Errorf("unknown route: %d %s", w.Code, w.Body.String())
	}
}

func TestAccessLogCarriesContextButNoSecrets(t *testing.T) {
	t.Parallel()
	r, logs := setup(t)
	w := do(r, "POST", "/things?token=eyJhbGciOi.secret.sig&query_string=token%3Dabc&page=2",
		`{"slug":"acme","password":"correct-horse-battery"}`,
		map[string]string{"Authorization": "Bearer eyJhbGciOi.secret.sig", "X-Request-Id": "req-123"})
	if w.Code != 201 {
		t.Fatalf("status %d: %s", w.Code, w.Body.String())
	}
	out := logs.String()
	for _, secret := range []string{"eyJhbGciOi", "correct-horse-battery", "hunter2", "token%3Dabc"} {
		if strings.Contains(out, secret) {
			t.Errorf("log contains secret %q:\n%s", secret, out)
		}
	}
	var entry map[string]any
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err == nil && m["msg"] == "request" {
			entry = m
		}
	}
	if entry == nil {
		t.Fatalf("no request log line in:\n%s", out)
	}
	for _, k := range []string{"request_id", "plane", "tenant", "route", "status", "latency_ms"} {
		if _, ok := entry[k]; !ok {
			t.Errorf("request log lacks %q: %v", k, entry)
		}
	}
	if entry["request_id"] != "req-123" || entry["route"] != "/things" || entry["status"] != float64(201) || entry["plane"] != "controlplane" {
		t.Errorf("request log = %v", entry)
	}
	if !strings.Contains(entry["query"].(string), "page=2") {
		t.Errorf("harmless query params should stay: %v", entry["query"])
	}
}

// retryIn is a cause telling the client when to try again.
type retryIn int

func (r retryIn) Error() string          { return "throttled" }
func (r retryIn) RetryAfterSeconds() int { return int(r) }

func TestUnavailableIsLoggedWithItsCause(t *testing.T) {
	t.Parallel()
	var logs bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	r := gin.New()
	r.Use(web.Middleware(log, "test", nil))
	r.GET("/down", web.Handle(log, func(*gin.Context) error {
		return &apperr.Error{Kind: apperr.Unavailable, Code: "db_unavailable", Message: "the database is temporarily unavailable", Err: errors.New("dial tcp 10.0.0.7:5432: connection refused")}
	}))
	r.GET("/throttled", web.Handle(log, func(*gin.Context) error {
		return &apperr.Error{Kind: apperr.RateLimited, Code: "too_many_attempts", Message: "try later", Err: retryIn(7)}
	}))
	w := do(r, "GET", "/down", "", nil)
	if w.Code != 503 || errorCode(t, w) != "db_unavailable" || strings.Contains(w.Body.String(), "10.0.0.7") {
		t.Errorf("unavailable answer: %d %s", w.Code, w.Body.String())
	}
	if !strings.Contains(logs.String(), `"level":"WARN"`) || !strings.Contains(logs.String(), "10.0.0.7") {
		t.Errorf("a 503 must be logged at warn with its cause: %s", logs.String())
	}
	w = do(r, "GET", "/throttled", "", nil)
	if w.Code != 429 || w.Header().Get("Retry-After") != "7" {
		t.Errorf("throttled answer: %d Retry-After %q", w.Code, w.Header().Get("Retry-After"))
	}
}

func TestEveryUnavailableAnswerTellsWhenToRetry(t *testing.T) {
	t.Parallel()
	log := slog.New(slog.DiscardHandler)
	r := gin.New()
	r.GET("/down", web.Handle(log, func(*gin.Context) error {
		return &apperr.Error{Kind: apperr.Unavailable, Code: "db_unavailable", Message: "the database is temporarily unavailable"}
	}))
	r.GET("/later", web.Handle(log, func(*gin.Context) error {
		return &apperr.Error{Kind: apperr.Unavailable, Code: "db_busy", Message: "busy", RetryAfter: 1500 * time.Millisecond}
	}))
	r.GET("/limited", web.Handle(log, func(*gin.Context) error {
		return &apperr.Error{Kind: apperr.RateLimited, Code: "too_many_attempts", Message: "later", RetryAfter: 30 * time.Second}
	}))
	r.GET("/missing", web.Handle(log, func(*gin.Context) error { return apperr.NotFoundf("no") }))
	for path, want := range map[string]string{"/down": "2", "/later": "2", "/limited": "30", "/missing": ""} {
		if got := do(r, "GET", path, "", nil).Header().Get("Retry-After"); got != want {
			t.Errorf("%s: Retry-After %q, want %q", path, got, want)
		}
	}
}

func TestUntranslatedDatabaseOutageIsUnavailable(t *testing.T) {
	t.Parallel()
	killed := fmt.Errorf("beginning: %w", &pgconn.PgError{Severity: "FATAL", Code: "57P01", Message: "terminating connection due to administrator command"})
	status, code, msg := web.Status(killed)
	if status != http.StatusServiceUnavailable || code != "db_unavailable" || strings.Contains(msg, "administrator") {
		t.Errorf("a killed connection: %d %s %q", status, code, msg)
	}
	if status, _, _ := web.Status(errors.New("boom")); status != http.StatusInternalServerError {
		t.Errorf("an unknown error: %d", status)
	}
}
