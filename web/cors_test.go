package web

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/gin-gonic/gin"
)

func corsEngine(cfg CORSConfig) *gin.Engine {
	gin.SetMode(gin.ReleaseMode)
	e := gin.New()
	e.Use(CORS(cfg))
	e.GET("/api/v1/blogs", func(c *gin.Context) { c.JSON(http.StatusOK, gin.H{"items": []any{}}) })
	return e
}

func TestCORS(t *testing.T) {
	t.Parallel()
	e := corsEngine(CORSConfig{Origins: []string{"https://app.example.com"}})
	do := func(method, origin string, hdr map[string]string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(method, "/api/v1/blogs", nil)
		if origin != "" {
			req.Header.Set("Origin", origin)
		}
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		rec := httptest.NewRecorder()
		e.ServeHTTP(rec, req)
		return rec
	}

	pre := do("OPTIONS", "https://app.example.com", map[string]string{"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization, x-tenant"})
	if pre.Code != http.StatusNoContent || pre.Header().Get("Access-Control-Allow-Origin") != "https://app.example.com" ||
		pre.Header().Get("Access-Control-Allow-Headers") == "" || pre.Header().Get("Access-Control-Allow-Credentials") != "" {
		t.Errorf("preflight of an allowed origin: %d %v", pre.Code, pre.Header())
	}
	get := do("GET", "https://app.example.com", nil)
	if get.Code != http.StatusOK || get.Header().Get("Access-Control-Allow-Origin") != "https://app.example.com" || get.Header().Get("Vary") != "Origin" {
		t.Errorf("GET of an allowed origin: %d %v", get.Code, get.Header())
	}
	evil := do("OPTIONS", "https://evil.example", map[string]string{"Access-Control-Request-Method": "POST"})
	if evil.Header().Get("Access-Control-Allow-Origin") != "" || evil.Code == http.StatusNoContent {
		t.Errorf("preflight of another origin was allowed: %d %v", evil.Code, evil.Header())
	}
	if h := do("GET", "", nil).Header().Get("Access-Control-Allow-Origin"); h != "" {
		t.Errorf("a same-origin request got CORS headers: %q", h)
	}

	cred := corsEngine(CORSConfig{Origins: []string{"https://app.example.com"}, Credentials: true})
	req := httptest.NewRequest("GET", "/api/v1/blogs", nil)
	req.Header.Set("Origin", "https://app.example.com")
	rec := httptest.NewRecorder()
	cred.ServeHTTP(rec, req)
	if rec.Header().Get("Access-Control-Allow-Credentials") != "true" {
		t.Error("credentials were not allowed when configured")
	}
	star := corsEngine(CORSConfig{Origins: []string{"*"}, Credentials: true})
	rec = httptest.NewRecorder()
	star.ServeHTTP(rec, req)
	if rec.Header().Get("Access-Control-Allow-Origin") != "*" || rec.Header().Get("Access-Control-Allow-Credentials") != "" {
		t.Errorf("wildcard origins: %v (credentials must stay off with *)", rec.Header())
	}
}
