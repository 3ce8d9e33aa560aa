package main

import (
	"cmp"
	"encoding/base64"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/joho/godotenv"

	"github.com/tenantplane/tenantplane/dataplane/pool"
	"github.com/tenantplane/tenantplane/provisioner"
	"github.com/tenantplane/tenantplane/redact"
	"github.com/tenantplane/tenantplane/web"
)

// config is everything read from the environment (and an optional .env file). It is
// read here and nowhere else; packages receive the parts they need.
type config struct {
	DatabaseURL    string              // control database (also the "default" shard unless TENANTPLANE_SHARDS says otherwise)
	Shards         []provisioner.Shard // Postgres servers tenants are placed on
	RedisURL       string              // notification fan-out; empty: in-process broker
	OpenSearchURL  string              // search backend; empty: Postgres full-text search
	SearchStrategy string              // "per-tenant" or "shared"
	SecretKey      string              // JWT key ring spec (see token.ParseKeyRing)
	BaseDomain     string              // tenants are served at {slug}.{BaseDomain}
	Listen         string              // HTTP listen address
	LogLevel       slog.Level
	LogFile        string        // also log to this file, rotated
	MaxPools       int           // per-tenant pools kept open (LRU size)
	ConnBudget     int           // Postgres connections across all tenant pools
	PerTenantConns int           // connections per tenant pool
	AccessTTL      time.Duration // access token lifetime
	RefreshTTL     time.Duration // refresh token lifetime
	DeleteGrace    time.Duration // how long a deleted tenant can be restored

	MetricsListen     string        // the metrics listener's address; "off": none
	CORSOrigins       []string      // browser origins allowed to call the API; empty: CORS off
	WebSocketOrigins  []string      // browser origins allowed to open any tenant's WebSocket besides the tenant's own hosts
	WebSocketsPerIP   int           // WebSockets one client IP may hold open on a replica
	CORSCredentials   bool          // let those origins send cookies
	ReadHeaderTimeout time.Duration // receiving a request's headers, at most
	BodyTimeout       time.Duration // receiving a request's body, at most (WebSockets exempt)
	WriteTimeout      time.Duration // writing an answer, at most (WebSockets exempt)
	IdleTimeout       time.Duration // a kept-alive connection waiting for its next request
	MaxHeaderBytes    int           // request headers larger are answered 431
	// Tenant archives (export, import, clone).
	ArchiveKey     []byte // TENANTPLANE_ARCHIVE_KEY: encrypts exports, decrypts imports (32 bytes); nil: plain
	ImportMaxBytes int64  // TENANTPLANE_IMPORT_MAX_BYTES: largest archive POST /api/v1/tenants/import takes
	PoolMode       string // "" (each tenant's pool_mode), "shared" or "dedicated" for all
	GroupConns     int    // connections per group of a shard's shared pool
	PoolStatements int    // prepared statements kept on each shared connection
	WarmPool       int    // TENANTPLANE_WARM_POOL: migrated schemas kept ready per shard for signups; 0: off
}

// maxWarmPool bounds TENANTPLANE_WARM_POOL: every pooled schema is a schema and a role
// kept on its shard.
const maxWarmPool = 1000

// env reads a variable, falling back to the Django app's older names.
type env func(string) string

func (e env) first(names ...string) string {
	for _, n := range names {
		if v := strings.TrimSpace(e(n)); v != "" {
			return v
		}
	}
	return ""
}

// envFiles are read in order when present: .env (an existing Django app's file keeps
// working), then what `make run` recorded for the checkout (.data/env: the local
// cluster's URL and the generated key). Variables already set win over both, and .env
// over .data/env.
var envFiles = []string{".env", ".data/env"}

// loadDotEnv reads the envFiles of the working directory.
func loadDotEnv() error { return loadEnvFiles(".") }

// loadEnvFiles reads the envFiles of dir that exist into the process environment; it
// never writes them.
func loadEnvFiles(dir string) error {
	for _, f := range envFiles {
		path := filepath.Join(dir, f)
		if _, err := os.Stat(path); err != nil {
			continue
		}
		if err := godotenv.Load(path); err != nil {
			return fmt.Errorf("%s: %w", f, err)
		}
	}
	return nil
}

// configError names the variable at fault; main prints it as one line.
type configError struct {
	name, msg string
}

func (e *configError) Error() string { return "configuration: " + e.name + ": " + e.msg }

func loadConfig(get env) (*config, error) {
	c := &config{
		BaseDomain:     strings.ToLower(cmp.Or(get.first("TENANTPLANE_BASE_DOMAIN"), "localhost")),
		Listen:         cmp.Or(get.first("TENANTPLANE_LISTEN"), ":8000"),
		LogFile:        get.first("LOG_FILE"),
		RedisURL:       get.first("REDIS_URL"),
		OpenSearchURL:  get.first("OPENSEARCH_URL"),
		SearchStrategy: cmp.Or(get.first("TENANTPLANE_SEARCH_STRATEGY"), "shared"),
		SecretKey:      get.first("TENANTPLANE_SECRET_KEY", "SECRET_KEY"),
		MetricsListen:  cmp.Or(get.first("TENANTPLANE_METRICS_LISTEN"), "127.0.0.1:9090"),
	}
	var err error
	if c.DatabaseURL, err = databaseURL(get); err != nil {
		return nil, err
	}
	if c.RedisURL == "" {
		if h := get.first("REDIS_HOST"); h != "" {
			c.RedisURL = "redis://" + hostPort(h, "6379") + "/0"
		}
	}
	if c.OpenSearchURL == "" {
		if h := get.first("ELASTIC_SEARCH_HOST"); h != "" {
			c.OpenSearchURL = h
			if !strings.Contains(h, "://") {
				c.OpenSearchURL = "http://" + hostPort(h, "9200")
			}
		}
	}
	for name, v := range map[string]string{"REDIS_URL": c.RedisURL, "OPENSEARCH_URL": c.OpenSearchURL} {
		if v == "" {
			continue
		}
		if u, err := url.Parse(v); err != nil || u.Host == "" {
			return nil, &configError{name, fmt.Sprintf("%q is not a URL", redact.URL(v))}
		}
	}
	if c.SearchStrategy != "shared" && c.SearchStrategy != "per-tenant" {
		return nil, &configError{"TENANTPLANE_SEARCH_STRATEGY", fmt.Sprintf("must be shared or per-tenant, not %q", c.SearchStrategy)}
	}
	if c.Shards, err = parseShards(get.first("TENANTPLANE_SHARDS"), c.DatabaseURL); err != nil {
		return nil, err
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		return nil, &configError{"TENANTPLANE_LISTEN", fmt.Sprintf("%q is not host:port", c.Listen)}
	}
	if _, _, err := net.SplitHostPort(c.MetricsListen); err != nil && c.MetricsListen != "off" {
		return nil, &configError{"TENANTPLANE_METRICS_LISTEN", fmt.Sprintf("%q is not host:port (or off)", c.MetricsListen)}
	}
	if c.CORSOrigins, err = origins(get, "TENANTPLANE_CORS_ORIGINS", true); err != nil {
		return nil, err
	}
	if c.WebSocketOrigins, err = origins(get, "TENANTPLANE_WS_ORIGINS", false); err != nil {
		return nil, err
	}
	if c.LogLevel, err = parseLevel(get.first("LOG_LEVEL")); err != nil {
		return nil, err
	}
	ints := []struct {
		name string
		dst  *int
		def  int
	}{
		{"TENANTPLANE_MAX_POOLS", &c.MaxPools, 100},
		{"TENANTPLANE_CONN_BUDGET", &c.ConnBudget, 40},
		{"TENANTPLANE_TENANT_CONNS", &c.PerTenantConns, 4},
		{"TENANTPLANE_WS_PER_IP", &c.WebSocketsPerIP, 32},
		{"TENANTPLANE_MAX_HEADER_BYTES", &c.MaxHeaderBytes, web.DefaultMaxHeaderBytes},
		{"TENANTPLANE_POOL_GROUP_CONNS", &c.GroupConns, 1},
		{"TENANTPLANE_POOL_STATEMENTS", &c.PoolStatements, pool.DefaultStatements},
	}
	for _, f := range ints {
		if *f.dst, err = positiveInt(get, f.name, f.def); err != nil {
			return nil, err
		}
	}
	durs := []struct {
		name string
		dst  *time.Duration
		def  time.Duration
	}{
		{"TENANTPLANE_ACCESS_TTL", &c.AccessTTL, 5 * time.Minute},
		{"TENANTPLANE_REFRESH_TTL", &c.RefreshTTL, 24 * time.Hour},
		{"TENANTPLANE_DELETE_GRACE", &c.DeleteGrace, 7 * 24 * time.Hour},
		{"TENANTPLANE_READ_HEADER_TIMEOUT", &c.ReadHeaderTimeout, 10 * time.Second},
		{"TENANTPLANE_BODY_TIMEOUT", &c.BodyTimeout, web.DefaultBodyTimeout},
		{"TENANTPLANE_WRITE_TIMEOUT", &c.WriteTimeout, web.DefaultWriteTimeout},
		{"TENANTPLANE_IDLE_TIMEOUT", &c.IdleTimeout, 2 * time.Minute},
	}
	for _, f := range durs {
		if *f.dst, err = positiveDuration(get, f.name, f.def); err != nil {
			return nil, err
		}
	}
	if v := get.first("TENANTPLANE_CORS_CREDENTIALS"); v != "" {
		if c.CORSCredentials, err = strconv.ParseBool(v); err != nil {
			return nil, &configError{"TENANTPLANE_CORS_CREDENTIALS", fmt.Sprintf("must be true or false, not %q", v)}
		}
	}
	// TENANTPLANE_POOL_MODE forces a pool mode on every schema tenant; the former
	// TENANTPLANE_SET_LOCAL=true is its alias for "shared".
	switch c.PoolMode = get.first("TENANTPLANE_POOL_MODE"); c.PoolMode {
	case "", "shared", "dedicated":
	default:
		return nil, &configError{"TENANTPLANE_POOL_MODE", fmt.Sprintf("must be shared or dedicated, not %q", c.PoolMode)}
	}
	if v := get.first("TENANTPLANE_SET_LOCAL"); v != "" {
		setLocal, err := strconv.ParseBool(v)
		if err != nil {
			return nil, &configError{"TENANTPLANE_SET_LOCAL", fmt.Sprintf("must be true or false, not %q", v)}
		}
		if setLocal && c.PoolMode == "dedicated" {
			return nil, &configError{"TENANTPLANE_SET_LOCAL", "is the former name of TENANTPLANE_POOL_MODE=shared and contradicts TENANTPLANE_POOL_MODE=dedicated"}
		}
		if setLocal {
			c.PoolMode = "shared"
		}
	}
	if c.CORSCredentials && slices.Contains(c.CORSOrigins, "*") {
		return nil, &configError{"TENANTPLANE_CORS_CREDENTIALS", "cannot be true with TENANTPLANE_CORS_ORIGINS=*: list the origins"}
	}
	if v := get.first("TENANTPLANE_WARM_POOL"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > maxWarmPool {
			return nil, &configError{"TENANTPLANE_WARM_POOL", fmt.Sprintf("must be a number of schemas from 0 (off) to %d, not %q", maxWarmPool, v)}
		}
		c.WarmPool = n
	}
	if err := c.loadArchive(get); err != nil {
		return nil, err
	}
	return c, nil
}

// origins reads a comma-separated list of browser origins (scheme://host[:port]) from
// the variable name; "*" is accepted when wildcard is.
func origins(get env, name string, wildcard bool) ([]string, error) {
	var out []string
	for _, o := range strings.Split(get.first(name), ",") {
		if o = strings.TrimSpace(o); o == "" {
			continue
		}
		if wildcard && o == "*" {
			out = append(out, o)
			continue
		}
		if u, err := url.Parse(o); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Path != "" {
			return nil, &configError{name, fmt.Sprintf("%q is not an origin such as https://app.example.com", o)}
		}
		out = append(out, o)
	}
	return out, nil
}

// limits are the request limits of both planes.
func (c *config) limits() web.Limits {
	return web.Limits{BodyTimeout: c.BodyTimeout, WriteTimeout: c.WriteTimeout, MaxHeaderBytes: c.MaxHeaderBytes}
}

// cors is the CORS setting of both planes.
func (c *config) cors() web.CORSConfig {
	return web.CORSConfig{Origins: c.CORSOrigins, Credentials: c.CORSCredentials}
}

// loadArchive reads the tenant archive settings: the key, base64 of 32 bytes, and the
// import size limit in bytes (default 1 GiB).
func (c *config) loadArchive(get env) error {
	if v := get.first("TENANTPLANE_ARCHIVE_KEY"); v != "" {
		key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(v))
		if err != nil || len(key) != 32 {
			return &configError{"TENANTPLANE_ARCHIVE_KEY", "must be the base64 of 32 bytes (openssl rand -base64 32)"}
		}
		c.ArchiveKey = key
	}
	c.ImportMaxBytes = 1 << 30
	if v := get.first("TENANTPLANE_IMPORT_MAX_BYTES"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n <= 0 {
			return &configError{"TENANTPLANE_IMPORT_MAX_BYTES", fmt.Sprintf("must be a positive number of bytes, not %q", v)}
		}
		c.ImportMaxBytes = n
	}
	return nil
}

// requireSecret checks the JWT key ring setting, needed by the servers only.
func (c *config) requireSecret() error {
	if c.SecretKey == "" {
		return &configError{"TENANTPLANE_SECRET_KEY", "is required to sign tokens (at least 32 bytes; `make run` generates one)"}
	}
	return nil
}

func databaseURL(get env) (string, error) {
	if v := get.first("DATABASE_URL"); v != "" {
		u, err := url.Parse(v)
		if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") || u.Host == "" {
			return "", &configError{"DATABASE_URL", fmt.Sprintf("%q is not a postgres:// URL", redact.URL(v))}
		}
		return v, nil
	}
	name := get.first("DATABASE_NAME")
	if name == "" {
		return "", &configError{"DATABASE_URL", "is not set (nor DATABASE_NAME): point it at the control database, e.g. postgres://user:pass@127.0.0.1:5432/tenantplane"}
	}
	u := url.URL{
		Scheme:   "postgres",
		Host:     hostPort(cmp.Or(get.first("DATABASE_HOST"), "127.0.0.1"), cmp.Or(get.first("DATABASE_PORT"), "5432")),
		Path:     "/" + name,
		RawQuery: "sslmode=prefer",
	}
	if user := get.first("DATABASE_USER"); user != "" {
		u.User = url.UserPassword(user, get.first("DATABASE_PASSWORD"))
	}
	return u.String(), nil
}

func hostPort(h, port string) string {
	if _, _, err := net.SplitHostPort(h); err == nil {
		return h
	}
	return net.JoinHostPort(h, port)
}

// parseShards reads "name=url,name2=url2". Without it, the control database is the one
// shard, named "default".
func parseShards(spec, controlURL string) ([]provisioner.Shard, error) {
	if spec == "" {
		return []provisioner.Shard{{Name: "default", URL: controlURL}}, nil
	}
	var out []provisioner.Shard
	seen := map[string]bool{}
	for _, entry := range strings.Split(spec, ",") {
		name, u, ok := strings.Cut(strings.TrimSpace(entry), "=")
		name = strings.TrimSpace(name)
		draining := strings.HasSuffix(name, "!")
		name = strings.TrimSuffix(name, "!")
		if !ok || name == "" || u == "" {
			return nil, &configError{"TENANTPLANE_SHARDS", "want name=postgres://...,name2=postgres://... (a trailing ! on a name marks it draining)"}
		}
		if seen[name] {
			return nil, &configError{"TENANTPLANE_SHARDS", fmt.Sprintf("shard %q appears twice", name)}
		}
		seen[name] = true
		if p, err := url.Parse(u); err != nil || p.Host == "" {
			return nil, &configError{"TENANTPLANE_SHARDS", fmt.Sprintf("shard %q: %q is not a postgres:// URL", name, redact.URL(u))}
		}
		out = append(out, provisioner.Shard{Name: name, URL: u, Draining: draining})
	}
	return out, nil
}

func parseLevel(v string) (slog.Level, error) {
	if v == "" {
		return slog.LevelInfo, nil
	}
	var l slog.Level
	if err := l.UnmarshalText([]byte(v)); err != nil {
		return 0, &configError{"LOG_LEVEL", fmt.Sprintf("must be debug, info, warn or error, not %q", v)}
	}
	return l, nil
}

func positiveInt(get env, name string, def int) (int, error) {
	v := get.first(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		return 0, &configError{name, fmt.Sprintf("must be a positive integer, not %q", v)}
	}
	return n, nil
}

func positiveDuration(get env, name string, def time.Duration) (time.Duration, error) {
	v := get.first(name)
	if v == "" {
		return def, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return 0, &configError{name, fmt.Sprintf("must be a positive duration such as 90s, 15m or 24h, not %q", v)}
	}
	return d, nil
}
