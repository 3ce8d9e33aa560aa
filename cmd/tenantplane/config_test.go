package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func envOf(m map[string]string) env {
	return func(k string) string { return m[k] }
}

func TestConfigDefaults(t *testing.T) {
	t.Parallel()
	c, err := loadConfig(envOf(map[string]string{"DATABASE_URL": "postgres://u:p@127.0.0.1:5432/tp"}))
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != ":8000" || c.BaseDomain != "localhost" || c.AccessTTL != 5*time.Minute || c.MaxPools != 100 || c.ConnBudget != 40 {
		t.Errorf("defaults: %+v", c)
	}
	if len(c.Shards) != 1 || c.Shards[0].Name != "default" || c.Shards[0].URL != c.DatabaseURL {
		t.Errorf("the control database should be the default shard, got %+v", c.Shards)
	}
	if c.RedisURL != "" || c.OpenSearchURL != "" {
		t.Errorf("redis and opensearch should default to the in-process backends")
	}
	if c.WarmPool != 0 {
		t.Errorf("the warm pool should be off by default, got %d", c.WarmPool)
	}
}

func TestConfigWarmPool(t *testing.T) {
	t.Parallel()
	c, err := loadConfig(envOf(map[string]string{"DATABASE_URL": "postgres://u:p@127.0.0.1/tp", "TENANTPLANE_WARM_POOL": "5"}))
	if err != nil || c.WarmPool != 5 {
		t.Fatalf("TENANTPLANE_WARM_POOL=5: %+v, %v; want a pool of 5", c, err)
	}
}

func TestConfigDjangoFallbacks(t *testing.T) {
	t.Parallel()
	c, err := loadConfig(envOf(map[string]string{
		"DATABASE_NAME": "blog", "DATABASE_USER": "app", "DATABASE_PASSWORD": "s3cret", "DATABASE_HOST": "db.internal", "DATABASE_PORT": "6543",
		"REDIS_HOST": "cache", "ELASTIC_SEARCH_HOST": "search:9201", "SECRET_KEY": "django-secret",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if c.DatabaseURL != "postgres://app:s3cret@db.internal:6543/blog?sslmode=prefer" {
		t.Errorf("DatabaseURL = %q", c.DatabaseURL)
	}
	if c.RedisURL != "redis://cache:6379/0" || c.OpenSearchURL != "http://search:9201" || c.SecretKey != "django-secret" {
		t.Errorf("fallbacks not applied: %+v", c)
	}
}

func TestConfigErrorsNameTheVariable(t *testing.T) {
	t.Parallel()
	base := map[string]string{"DATABASE_URL": "postgres://u:hunter2@127.0.0.1/tp"}
	cases := []struct {
		name, key, value, want string
	}{
		{"no database", "DATABASE_URL", "", "DATABASE_URL: is not set"},
		{"not a url", "DATABASE_URL", "mysql://x:hunter2@h/db", "DATABASE_URL"},
		{"listen", "TENANTPLANE_LISTEN", "8000", "TENANTPLANE_LISTEN"},
		{"level", "LOG_LEVEL", "loud", "LOG_LEVEL"},
		{"pools", "TENANTPLANE_MAX_POOLS", "-3", "TENANTPLANE_MAX_POOLS"},
		{"ttl", "TENANTPLANE_ACCESS_TTL", "5", "TENANTPLANE_ACCESS_TTL"},
		{"shards", "TENANTPLANE_SHARDS", "a=postgres://h/db,a=postgres://h2/db", "appears twice"},
		{"shards syntax", "TENANTPLANE_SHARDS", "nourl", "TENANTPLANE_SHARDS"},
		{"strategy", "TENANTPLANE_SEARCH_STRATEGY", "both", "TENANTPLANE_SEARCH_STRATEGY"},
		{"redis", "REDIS_URL", "::nope", "REDIS_URL"},
		{"metrics listen", "TENANTPLANE_METRICS_LISTEN", "9090", "TENANTPLANE_METRICS_LISTEN"},
		{"cors origin", "TENANTPLANE_CORS_ORIGINS", "https://ok.example.com,app.example.com", "TENANTPLANE_CORS_ORIGINS"},
		{"cors origin path", "TENANTPLANE_CORS_ORIGINS", "https://app.example.com/x", "TENANTPLANE_CORS_ORIGINS"},
		{"websocket origin", "TENANTPLANE_WS_ORIGINS", "*", "TENANTPLANE_WS_ORIGINS"},
		{"websocket cap", "TENANTPLANE_WS_PER_IP", "0", "TENANTPLANE_WS_PER_IP"},
		{"cors credentials", "TENANTPLANE_CORS_CREDENTIALS", "maybe", "TENANTPLANE_CORS_CREDENTIALS"},
		{"body timeout", "TENANTPLANE_BODY_TIMEOUT", "0", "TENANTPLANE_BODY_TIMEOUT"},
		{"header bytes", "TENANTPLANE_MAX_HEADER_BYTES", "big", "TENANTPLANE_MAX_HEADER_BYTES"},
		{"warm pool negative", "TENANTPLANE_WARM_POOL", "-1", "TENANTPLANE_WARM_POOL"},
		{"warm pool word", "TENANTPLANE_WARM_POOL", "some", "TENANTPLANE_WARM_POOL"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			m := map[string]string{}
			for k, v := range base {
				m[k] = v
			}
			m[tc.key] = tc.value
			_, err := loadConfig(envOf(m))
			if err == nil {
				t.Fatalf("%s=%q accepted", tc.key, tc.value)
			}
			msg := err.Error()
			if !strings.Contains(msg, tc.want) || strings.Contains(msg, "\n") {
				t.Errorf("error %q should be one line naming %q", msg, tc.want)
			}
			if strings.Contains(msg, "hunter2") {
				t.Errorf("error %q leaks a password", msg)
			}
		})
	}
}

func TestShardsConfig(t *testing.T) {
	t.Parallel()
	c, err := loadConfig(envOf(map[string]string{
		"DATABASE_URL":       "postgres://u:p@127.0.0.1/tp",
		"TENANTPLANE_SHARDS": "eu1=postgres://u:p@10.0.0.1/tp, eu2!=postgres://u:p@10.0.0.2/tp",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Shards) != 2 || c.Shards[0].Name != "eu1" || c.Shards[1].Name != "eu2" || !c.Shards[1].Draining || c.Shards[0].Draining {
		t.Errorf("shards = %+v", c.Shards)
	}
}

// TestEnvFiles: the CLI run from a checkout finds what `make run` recorded in .data/env,
// .env wins over it, and the environment wins over both.
func TestEnvFiles(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, ".data"), 0o700); err != nil {
		t.Fatal(err)
	}
	write := func(name, body string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(".data/env", "DATABASE_URL=postgres://recorded/db\nTENANTPLANE_SECRET_KEY=recorded-key\nLOG_LEVEL=debug\n")
	write(".env", "TENANTPLANE_SECRET_KEY=dotenv-key\n")
	for _, v := range []string{"DATABASE_URL", "TENANTPLANE_SECRET_KEY"} {
		t.Setenv(v, "")
		os.Unsetenv(v)
	}
	t.Setenv("LOG_LEVEL", "warn")
	if err := loadEnvFiles(dir); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{
		"DATABASE_URL":           "postgres://recorded/db",
		"TENANTPLANE_SECRET_KEY": "dotenv-key",
		"LOG_LEVEL":              "warn",
	} {
		if got := os.Getenv(name); got != want {
			t.Errorf("%s = %q, want %q", name, got, want)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(dir, ".env")); string(b) != "TENANTPLANE_SECRET_KEY=dotenv-key\n" {
		t.Errorf(".env was modified: %q", b)
	}
}

func TestConfigOperationsDefaults(t *testing.T) {
	t.Parallel()
	c, err := loadConfig(envOf(map[string]string{"DATABASE_URL": "postgres://u:p@127.0.0.1/tp"}))
	if err != nil {
		t.Fatal(err)
	}
	if c.MetricsListen != "127.0.0.1:9090" || len(c.CORSOrigins) != 0 || c.CORSCredentials ||
		c.ReadHeaderTimeout != 10*time.Second || c.BodyTimeout != 30*time.Second || c.WriteTimeout != time.Minute ||
		c.IdleTimeout != 2*time.Minute || c.MaxHeaderBytes != 32<<10 {
		t.Errorf("defaults: %+v", c)
	}
	c, err = loadConfig(envOf(map[string]string{"DATABASE_URL": "postgres://u:p@127.0.0.1/tp",
		"TENANTPLANE_CORS_ORIGINS": " https://a.example.com, http://localhost:3000 ", "TENANTPLANE_CORS_CREDENTIALS": "true"}))
	if err != nil {
		t.Fatal(err)
	}
	if c.WebSocketsPerIP != 32 || len(c.WebSocketOrigins) != 0 {
		t.Errorf("websocket defaults: %d %v", c.WebSocketsPerIP, c.WebSocketOrigins)
	}
	if !slices.Equal(c.CORSOrigins, []string{"https://a.example.com", "http://localhost:3000"}) || !c.CORSCredentials {
		t.Errorf("CORS: %v %v", c.CORSOrigins, c.CORSCredentials)
	}
	if _, err := loadConfig(envOf(map[string]string{"DATABASE_URL": "postgres://u:p@127.0.0.1/tp",
		"TENANTPLANE_CORS_ORIGINS": "*", "TENANTPLANE_CORS_CREDENTIALS": "true"})); err == nil {
		t.Error("credentials with any origin accepted")
	}
}

// TestPoolModeConfig: TENANTPLANE_SET_LOCAL=true is the former name of the shared pool
// mode, and contradicting TENANTPLANE_POOL_MODE stops the process.
func TestPoolModeConfig(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		env     map[string]string
		want    string
		wantErr bool
	}{
		{env: map[string]string{}, want: ""},
		{env: map[string]string{"TENANTPLANE_POOL_MODE": "dedicated"}, want: "dedicated"},
		{env: map[string]string{"TENANTPLANE_SET_LOCAL": "true"}, want: "shared"},
		{env: map[string]string{"TENANTPLANE_SET_LOCAL": "false"}, want: ""},
		{env: map[string]string{"TENANTPLANE_SET_LOCAL": "true", "TENANTPLANE_POOL_MODE": "dedicated"}, wantErr: true},
		{env: map[string]string{"TENANTPLANE_POOL_MODE": "bound"}, wantErr: true},
	} {
		tc.env["DATABASE_URL"] = "postgres://u:p@127.0.0.1/tp"
		c, err := loadConfig(envOf(tc.env))
		if (err != nil) != tc.wantErr || (err == nil && c.PoolMode != tc.want) {
			t.Errorf("%v: mode %v, error %v", tc.env, c, err)
		}
	}
}
