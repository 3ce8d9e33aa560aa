// Package dataplane serves the tenants' application. It resolves the tenant each request
// names (Host {slug}.{base domain} or a custom domain, then X-Tenant, then for
// WebSockets the tenant query parameter), refuses tenants that may not be served, and
// hands the request, its tenant's database scope in the context (tenantdb.WithScope),
// to the HTTP adapters: the JSON API and WebSocket (package api) and the tenant admin
// panel (package adminui), which call the services (auth, blogs, notify).
//
// Tenant lookups are cached and dropped when the registry announces a change (LISTEN on
// the control database), so a suspension takes effect within a second on every replica.
package dataplane

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tenantplane/tenantplane/apidoc"
	"github.com/tenantplane/tenantplane/apperr"
	"github.com/tenantplane/tenantplane/dataplane/adminui"
	"github.com/tenantplane/tenantplane/dataplane/api"
	"github.com/tenantplane/tenantplane/dataplane/auth"
	"github.com/tenantplane/tenantplane/dataplane/blogs"
	"github.com/tenantplane/tenantplane/dataplane/notify"
	"github.com/tenantplane/tenantplane/dataplane/pool"
	"github.com/tenantplane/tenantplane/dataplane/search"
	"github.com/tenantplane/tenantplane/lifecycle"
	"github.com/tenantplane/tenantplane/metrics"
	"github.com/tenantplane/tenantplane/password"
	"github.com/tenantplane/tenantplane/session"
	"github.com/tenantplane/tenantplane/tenant"
	"github.com/tenantplane/tenantplane/throttle"
	"github.com/tenantplane/tenantplane/token"
	"github.com/tenantplane/tenantplane/web"
	"github.com/tenantplane/tenantplane/web/adminpanel"
)

// Control is what the dataplane needs of the control database besides the registry
// store: a ping for /readyz, and the connection settings of the registry listener's own
// connection (LISTEN holds one connection for itself). *pgxpool.Pool implements it.
type Control interface {
	Ping(ctx context.Context) error
	Config() *pgxpool.Config
}

var _ Control = (*pgxpool.Pool)(nil)

// Config configures a Server.
type Config struct {
	// Control is the control database, for /readyz and the registry listener; required.
	Control Control
	// BaseDomain is the domain tenants are subdomains of: {slug}.{BaseDomain}
	// (default "localhost").
	BaseDomain string
	// Shards maps a shard name to its admin URL. Only host, port, database and options
	// are used in the default mode: tenant connections log in as the tenant's role (see
	// tenant.ConnString). SET LOCAL mode logs in with the URL as given.
	Shards map[string]string
	// MaxPools is how many tenant pools the LRU holds (default 100).
	MaxPools int
	// ConnBudget bounds the Postgres connections open across all tenant pools (default 40).
	ConnBudget int
	// PerTenantConns bounds the connections one tenant's work uses at once (default 4).
	PerTenantConns int32
	// ConnWait is how long a request waits for room in the connection budget before it
	// is answered 503 db_busy (default 2 s).
	ConnWait time.Duration
	// PoolMode, when set, serves every tenant in that mode whatever its registry row
	// says (see package pool); by default each tenant's pool_mode decides.
	PoolMode tenant.PoolMode
	// SetLocalMode is the former name of PoolMode shared: every tenant in the shared
	// gateway pools (behind PgBouncer transaction pooling).
	SetLocalMode bool
	// GroupConns is the size of a group of a shard's shared pool (default 1), and
	// SharedTenantConns how many of them one tenant holds at once (default
	// PerTenantConns): the noisy neighbour bound.
	GroupConns        int32
	SharedTenantConns int
	// SharedStatements bounds the prepared statements kept on each shared connection
	// (default pool.DefaultStatements).
	SharedStatements int
	// AccessTTL and RefreshTTL are the token lifetimes; the Issuer's rule, and New
	// refuses values (other than zero) that differ from them, so that the two cannot
	// silently disagree.
	AccessTTL, RefreshTTL time.Duration
	// Throttle limits password checks (defaults in auth.ThrottleConfig).
	Throttle auth.ThrottleConfig
	// Limiter counts password checks; share its store between replicas (default: in
	// process, for one replica).
	Limiter *throttle.Limiter
	// Sessions keeps the tenant admin panel's sessions; share its store between
	// replicas (default: in process, for one replica).
	Sessions *session.Manager
	// TrustedProxies are the proxies (IPs or CIDRs) whose X-Forwarded-For is believed
	// for the client IP of login throttling and logs (default: none).
	TrustedProxies []string
	// Logger receives access logs and errors (default: discard).
	Logger *slog.Logger
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Searcher serves blog search (default: Postgres full-text search in the tenant's
	// own schema).
	Searcher blogs.Searcher
	// Fanout carries notifications to every replica (default: in-process, for one
	// replica; use notify.NewRedis when there are several).
	Fanout notify.Transport
	// AllowedOrigins are browser origins (scheme://host[:port]) allowed to open any
	// tenant's WebSocket besides the tenant's own hosts.
	AllowedOrigins []string
	// MaxWebSocketsPerIP bounds the WebSockets open at once from one client IP on this
	// replica (default 32, see notify.Config.MaxConnsPerIP).
	MaxWebSocketsPerIP int
	// Outbox writes search_outbox rows with blog writes (for the OpenSearch backend).
	Outbox bool
	// StopTimeout bounds how long Stop waits for pools to finish their work (default 10 s).
	StopTimeout time.Duration
	// Metrics records every answered request, the notification sockets and throttled
	// logins (nil: none). The server never serves it:
	// the metrics listener does. Register PoolCollector on it for the pool LRU's counters.
	Metrics *metrics.Metrics
	// Limits bound how long one request may hold its connection (defaults in web.Limits).
	Limits web.Limits
	// CORS lets browser pages on other origins call the API (default: off).
	CORS web.CORSConfig
}

// Server is the dataplane. Create it with New, Start it, serve Handler, Stop it.
type Server struct {
	cfg    Config
	log    *slog.Logger
	now    func() time.Time
	pools  *pool.Manager
	res    *resolver
	auth   *auth.Service
	blogs  *blogs.Service
	notify *notify.Service
	engine *gin.Engine
	// run is the registry listener.
	run lifecycle.Group
}

// New returns a dataplane server reading the registry through store. It opens no
// connection; Start begins listening for registry changes.
func New(cfg Config, store *tenant.Store, issuer *token.Issuer, hasher *password.Hasher) (*Server, error) {
	if store == nil || issuer == nil || hasher == nil || cfg.Control == nil {
		return nil, errors.New("dataplane needs a registry store, the control database, a token issuer and a password hasher")
	}
	if cfg.AccessTTL != 0 && cfg.AccessTTL != issuer.TTL(token.Access) {
		return nil, fmt.Errorf("access token TTL %v differs from the token issuer's %v", cfg.AccessTTL, issuer.TTL(token.Access))
	}
	if cfg.RefreshTTL != 0 && cfg.RefreshTTL != issuer.TTL(token.Refresh) {
		return nil, fmt.Errorf("refresh token TTL %v differs from the token issuer's %v", cfg.RefreshTTL, issuer.TTL(token.Refresh))
	}
	cfg.BaseDomain = cmp.Or(cfg.BaseDomain, "localhost")
	cfg.StopTimeout = cmp.Or(cfg.StopTimeout, 10*time.Second)
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	log := cmp.Or(cfg.Logger, slog.New(slog.DiscardHandler))
	mode := cfg.PoolMode
	if cfg.SetLocalMode {
		mode = tenant.PoolShared
	}
	pools, err := pool.New(pool.Config{
		Shards:            cfg.Shards,
		Mode:              mode,
		MaxPools:          cfg.MaxPools,
		Budget:            cfg.ConnBudget,
		PerTenantConns:    cfg.PerTenantConns,
		GroupConns:        cfg.GroupConns,
		SharedTenantConns: cfg.SharedTenantConns,
		Statements:        cfg.SharedStatements,
		BudgetWait:        cfg.ConnWait,
		Logger:            log,
	})
	if err != nil {
		return nil, fmt.Errorf("configuring tenant pools: %w", err)
	}
	s := &Server{
		cfg:   cfg,
		log:   log,
		now:   cfg.Now,
		pools: pools,
		res:   newResolver(store, cfg.Control, cfg.BaseDomain, log, cfg.Now),
	}
	s.notify = notify.New(notify.Config{
		Transport:      cfg.Fanout,
		Domains:        store,
		Registry:       store,
		BaseDomain:     cfg.BaseDomain,
		AllowedOrigins: cfg.AllowedOrigins,
		MaxConnsPerIP:  cfg.MaxWebSocketsPerIP,
		Logger:         log,
		Metrics:        cfg.Metrics,
		Now:            cfg.Now,
	})
	// Open sockets end when their tenant stops being served (and, through auth's
	// OnRevoke below, when their user is revoked).
	s.res.onChange = func(payload string) {
		switch {
		case payload == "":
			s.notify.TenantsChanged()
		case !strings.HasPrefix(payload, "domain:"):
			s.notify.TenantChanged(payload)
		}
	}
	if cfg.Sessions == nil {
		if cfg.Sessions, err = session.New(session.Config{Store: session.NewMemory(), CSRFKey: issuer.Derive(adminpanel.CSRFLabel), Now: cfg.Now}); err != nil {
			return nil, fmt.Errorf("configuring admin panel sessions: %w", err)
		}
		s.cfg.Sessions = cfg.Sessions
	}
	s.auth = auth.New(auth.Config{
		Issuer: issuer, Hasher: hasher, Throttle: cfg.Throttle, Limiter: cfg.Limiter, Logger: log, Metrics: cfg.Metrics, Now: cfg.Now,
		EndSessions: cfg.Sessions.EndAll, // a tenant panel's audience is its tenant's id
		OnRevoke:    s.notify.UserRevoked,
	})
	if cfg.Searcher == nil {
		cfg.Searcher = search.NewPostgres(search.PostgresConfig{Logger: log})
	}
	s.blogs = blogs.New(blogs.Config{Searcher: cfg.Searcher, Outbox: cfg.Outbox, Logger: log})
	s.engine = s.newEngine()
	return s, nil
}

func (s *Server) newEngine() *gin.Engine {
	e := gin.New()
	e.HandleMethodNotAllowed = true
	// A malformed proxy list only makes gin trust none, which is the safe side.
	_ = e.SetTrustedProxies(s.cfg.TrustedProxies)
	e.Use(web.Observe(s.cfg.Metrics, "dataplane", s.now), web.Middleware(s.log, "dataplane", s.now),
		web.Limit(s.cfg.Limits), web.CORS(s.cfg.CORS))
	e.NoRoute(web.NotFound)
	e.NoMethod(web.MethodNotAllowed)
	e.GET("/healthz", func(c *gin.Context) { c.JSON(http.StatusOK, gin.H{"status": "ok"}) })
	e.GET("/readyz", web.Handle(s.log, s.ready))
	apidoc.Routes(e, apidoc.DataPlane())
	named := web.Handle(s.log, s.tenantMiddleware)
	api.New(api.Config{Auth: s.auth, Blogs: s.blogs, Notify: s.notify, Logger: s.log}).
		Routes(e.Group("/api/v1", named), e.Group("/ws", named))
	// The panel's browsers get a page, not JSON, when the tenant cannot be looked up.
	adminui.New(adminui.Config{Auth: s.auth, Blogs: s.blogs, Notify: s.notify, Sessions: s.cfg.Sessions, Logger: s.log}).
		Routes(e.Group("/admin", web.HandlePage(s.log, s.tenantMiddleware)))
	return e
}

// Handler returns the dataplane's HTTP handler: the tenant routes (/api/v1, /ws and the
// admin panel at /admin/) plus /healthz, /readyz and the API documents. It never serves
// metrics: they have a listener of their own.
func (s *Server) Handler() http.Handler { return s.engine }

// ready answers /readyz: 200 when the registry answers.
func (s *Server) ready(c *gin.Context) error {
	ctx, cancel := context.WithTimeout(c.Request.Context(), 2*time.Second)
	defer cancel()
	if err := s.cfg.Control.Ping(ctx); err != nil {
		return &apperr.Error{Kind: apperr.Unavailable, Code: "not_ready", Message: "the tenant registry is unreachable", Err: err}
	}
	c.JSON(http.StatusOK, gin.H{"status": "ready"})
	return nil
}

// Start begins listening for registry changes and receiving notifications in the
// background and returns at once. It returns an error when already started or stopped.
func (s *Server) Start(ctx context.Context) error {
	if err := s.run.Start(ctx); err != nil {
		return fmt.Errorf("starting dataplane: %w", err)
	}
	s.run.Go(s.res.listen)
	return s.notify.Start(ctx)
}

// Stop ends the registry listener and the notifications, and closes every tenant pool
// once its work has ended, waiting at most Config.StopTimeout.
func (s *Server) Stop() {
	s.notify.Stop()
	if !s.run.Stop(s.cfg.StopTimeout) {
		s.log.Warn("registry listener did not stop in time")
	}
	ctx, cancelStop := context.WithTimeout(context.Background(), s.cfg.StopTimeout)
	defer cancelStop()
	if err := s.pools.Close(ctx); err != nil {
		s.log.Warn("tenant pools did not close in time", "error", err)
	}
}

// PoolStats returns the pool LRU's counters: hits, misses, evictions, open
// connections, waits.
func (s *Server) PoolStats() pool.Stats { return s.pools.Stats() }

// InTx runs fn in a transaction bound to tenant t, through the pool LRU; the search
// indexer drains tenants' outboxes with it.
func (s *Server) InTx(ctx context.Context, t *tenant.Tenant, fn func(pool.DB) error) error {
	return s.pools.Write(ctx, t, fn)
}
