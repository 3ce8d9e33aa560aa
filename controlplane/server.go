// Package controlplane is the control plane's HTTP API: public tenant signup with
// idempotency keys and per-IP throttling, the signup status endpoint used for polling,
// platform user login with JWTs, and the platform admin endpoints that list, change,
// suspend, delete, restore and retry tenants and manage their custom domains. It owns
// the background goroutines that provision new tenants after signup.
package controlplane

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/tenantplane/tenantplane/apidoc"
	"github.com/tenantplane/tenantplane/apperr"
	"github.com/tenantplane/tenantplane/lifecycle"
	"github.com/tenantplane/tenantplane/metrics"
	"github.com/tenantplane/tenantplane/password"
	"github.com/tenantplane/tenantplane/platform"
	"github.com/tenantplane/tenantplane/provisioner"
	"github.com/tenantplane/tenantplane/session"
	"github.com/tenantplane/tenantplane/tenant"
	"github.com/tenantplane/tenantplane/throttle"
	"github.com/tenantplane/tenantplane/token"
	"github.com/tenantplane/tenantplane/web"
	"github.com/tenantplane/tenantplane/web/adminpanel"
)

// Audience is the JWT audience of platform users' tokens; tenant users' tokens carry
// their tenant instead and are refused here.
const Audience = "tenantplane:platform"

// maxBody is the request body limit of every control-plane endpoint.
const maxBody = 64 << 10

// Config configures a Server. Zero values take the documented defaults.
type Config struct {
	// BaseDomain is the domain tenants are served under as {slug}.{BaseDomain}; custom
	// domains equal to it or under it are refused (default "localhost").
	BaseDomain string
	// SignupWait is how long POST /api/v1/tenants waits for provisioning before
	// answering 202 (default 3s).
	SignupWait time.Duration
	// DeleteGrace is how long a deleted tenant can be restored (default 7 days).
	DeleteGrace time.Duration
	// SignupRate and SignupBurst throttle signups per client IP: SignupRate per second
	// sustained, SignupBurst at once (defaults 0.2/s, i.e. 12 a minute, and 10).
	SignupRate  float64
	SignupBurst int
	// Login limits the password checks of platform logins (API and panel), per email
	// and per client IP: the dataplane's limits (defaults in throttle.Login).
	Login throttle.Login
	// Limiter counts password checks against Login; share its store between replicas
	// (throttle.NewRedis, throttle.NewPostgres). Default: in process, for one replica.
	Limiter *throttle.Limiter
	// Sessions keeps the admin panel's sessions; share its store between replicas.
	// Default: in process, for one replica, with a CSRF key derived from the issuer's
	// key ring.
	Sessions *session.Manager
	// TrustedProxies lists the proxies (IPs or CIDRs) whose X-Forwarded-For header
	// Handler believes when it works out the client IP for throttling (default none:
	// the peer address is the client). Routes leaves this to the caller's router.
	TrustedProxies []string
	// IdempotencyTTL is how long signup answers are kept for Idempotency-Key replays
	// (default 24h).
	IdempotencyTTL time.Duration
	// MaxProvisioning bounds how many provisioning runs (signups, retries) the server
	// runs at once; more wait their turn. Each run holds a control database connection
	// for its lock and needs another for its steps, so the default is what the control
	// pool carries besides the requests: (MaxConns-2)/2, at least 1. The provisioner's
	// own Parallel bounds them too.
	MaxProvisioning int
	// StopTimeout bounds how long Stop waits for provisioning in flight before
	// cancelling it; cancelled tenants are finished by the next Start (default 10s).
	StopTimeout time.Duration
	// Fleet runs fleet migrations for POST/GET /api/v1/migrations; nil answers 503
	// migrations_unavailable. The caller starts and stops it.
	Fleet *provisioner.Fleet
	// Metrics records every answered request (nil: none). The server never serves it:
	// the metrics listener does.
	Metrics *metrics.Metrics
	// Limits bound how long one request may hold its connection (defaults in web.Limits).
	Limits web.Limits
	// CORS lets browser pages on other origins call the API (default: off).
	CORS web.CORSConfig
	// ArchiveKey encrypts the archives GET /api/v1/tenants/{slug}/export streams and
	// decrypts those POST /api/v1/tenants/import takes (32 bytes; nil: plain archives).
	ArchiveKey []byte
	// Shards names the shards the admin panel's move form offers (default none: the
	// form takes a shard's name).
	Shards []string
	// ImportMaxBytes bounds the archive POST /api/v1/tenants/import takes (default 1 GiB).
	ImportMaxBytes int64
	// Logger receives errors and background progress (default: discard).
	Logger *slog.Logger
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Server serves the control-plane API. Create it with New, call Start before serving
// and Stop when done.
type Server struct {
	cfg      Config
	store    *tenant.Store
	platform *platform.Store
	prov     *provisioner.Provisioner
	users    *platform.Users
	issuer   *token.Issuer
	hasher   *password.Hasher
	log      *slog.Logger
	now      func() time.Time

	signupThrottle *signupThrottle
	limiter        *throttle.Limiter
	sessions       *session.Manager

	// provSlots bounds the provisioning runs in flight.
	provSlots chan struct{}

	// bg runs provisioning (after signups, retries, and at Start); Stop drains it.
	bg lifecycle.Group
	// janitor runs the idempotency key cleanup, which Stop ends at once.
	janitor lifecycle.Group
}

// New returns a Server on the registry store, the provisioner, the platform store (users,
// their refresh tokens, idempotency keys), the token issuer and the password hasher. It
// starts nothing.
func New(cfg Config, store *tenant.Store, prov *provisioner.Provisioner, plat *platform.Store, issuer *token.Issuer, hasher *password.Hasher) *Server {
	cfg.BaseDomain = cmp.Or(cfg.BaseDomain, "localhost")
	cfg.SignupWait = cmp.Or(cfg.SignupWait, 3*time.Second)
	cfg.DeleteGrace = cmp.Or(cfg.DeleteGrace, 7*24*time.Hour)
	cfg.SignupRate = cmp.Or(cfg.SignupRate, 0.2)
	cfg.SignupBurst = cmp.Or(cfg.SignupBurst, 10)
	cfg.Login = cfg.Login.WithDefaults()
	cfg.IdempotencyTTL = cmp.Or(cfg.IdempotencyTTL, 24*time.Hour)
	cfg.StopTimeout = cmp.Or(cfg.StopTimeout, 10*time.Second)
	cfg.ImportMaxBytes = cmp.Or(cfg.ImportMaxBytes, defaultImportMax)
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.MaxProvisioning <= 0 {
		cfg.MaxProvisioning = max(1, (store.MaxConns()-2)/2)
	}
	if cfg.Limiter == nil {
		cfg.Limiter, _ = throttle.New(throttle.Config{Store: throttle.NewMemory(), Now: cfg.Now}) // errors only without a store
	}
	if cfg.Sessions == nil {
		// Errors only without a store or with a short key; the derived key is 32 bytes.
		cfg.Sessions, _ = session.New(session.Config{Store: session.NewMemory(), CSRFKey: issuer.Derive(adminpanel.CSRFLabel), Now: cfg.Now})
	}
	return &Server{
		cfg:            cfg,
		store:          store,
		platform:       plat,
		prov:           prov,
		users:          platform.NewUsers(plat, hasher),
		issuer:         issuer,
		hasher:         hasher,
		log:            cfg.Logger,
		now:            cfg.Now,
		signupThrottle: newSignupThrottle(cfg.SignupRate, cfg.SignupBurst, cfg.Now),
		limiter:        cfg.Limiter,
		sessions:       cfg.Sessions,
		provSlots:      make(chan struct{}, cfg.MaxProvisioning),
	}
}

// Handler returns a gin engine serving every control-plane route, with request ids,
// access logs, and JSON answers for unknown routes (404) and wrong methods (405).
func (s *Server) Handler() http.Handler {
	e := gin.New()
	e.HandleMethodNotAllowed = true
	if err := e.SetTrustedProxies(s.cfg.TrustedProxies); err != nil {
		s.log.Error("ignoring trusted proxies: client IPs are peer addresses", "error", err)
		_ = e.SetTrustedProxies(nil)
	}
	e.Use(web.Observe(s.cfg.Metrics, "controlplane", s.now), web.Middleware(s.log, "controlplane", s.now),
		web.Limit(s.cfg.Limits), web.CORS(s.cfg.CORS))
	e.NoRoute(web.NotFound)
	e.NoMethod(web.MethodNotAllowed)
	s.Routes(e)
	s.adminRoutes(e)
	apidoc.Routes(e, apidoc.ControlPlane(), apidoc.DataPlane())
	return e
}

// Routes registers the control-plane routes on r.
func (s *Server) Routes(r gin.IRouter) {
	h := s.handle

	r.GET("/healthz", s.healthz)
	r.GET("/readyz", h(s.readyz))

	api := r.Group("/api/v1")
	api.POST("/tenants", h(s.signup))
	api.GET("/tenants/:slug/status", h(s.signupStatus))
	api.POST("/auth/token", h(s.login))
	api.POST("/auth/token/refresh", h(s.refresh))

	admin := api.Group("", h(s.authenticate))
	admin.GET("/tenants", h(s.listTenants))
	admin.GET("/tenants/:slug", h(s.getTenant))
	admin.PATCH("/tenants/:slug", h(s.patchTenant))
	admin.DELETE("/tenants/:slug", h(s.deleteTenant))
	admin.POST("/tenants/:slug/restore", h(s.restoreTenant))
	admin.POST("/tenants/:slug/retry", h(s.retryTenant))
	admin.POST("/tenants/:slug/suspend", h(s.suspendTenant))
	admin.POST("/tenants/:slug/resume", h(s.resumeTenant))
	admin.GET("/tenants/:slug/domains", h(s.listDomains))
	admin.POST("/tenants/:slug/domains", h(s.addDomain))
	admin.DELETE("/tenants/:slug/domains/:domain", h(s.removeDomain))
	admin.POST("/migrations", h(s.startMigration))
	admin.GET("/migrations", h(s.listMigrations))
	admin.GET("/migrations/:id", h(s.getMigration))
	s.mobilityRoutes(admin)
}

// handle adapts f to gin through web.Handle, the one error writer (which also sets
// Retry-After and logs the cause of 503 answers).
func (s *Server) handle(f web.HandlerFunc) gin.HandlerFunc { return web.Handle(s.log, f) }

// Start starts the background work and returns at once: tenants a stopped process left
// in provisioning are finished, and expired idempotency keys are deleted periodically.
// Provisioning runs until Stop; the key cleanup also ends with ctx. It returns an error
// when the server was already started or stopped.
func (s *Server) Start(ctx context.Context) error {
	// Provisioning outlives ctx: only Stop cancels it, after its grace.
	if err := s.bg.Start(context.WithoutCancel(ctx)); err != nil {
		return errors.New("control plane server already started or stopped")
	}
	if err := s.janitor.Start(ctx); err != nil {
		return errors.New("control plane server already started or stopped")
	}
	s.bg.Go(func(ctx context.Context) {
		n, err := s.prov.ResumeInterrupted(ctx)
		if err != nil && ctx.Err() == nil {
			s.log.Error("resuming interrupted provisioning", "tenants", n, "error", err)
		} else if n > 0 {
			s.log.Info("resumed interrupted provisioning", "tenants", n)
		}
	})
	s.janitor.Go(s.cleanIdempotencyKeys)
	return nil
}

// Stop ends the background work: it waits up to StopTimeout for provisioning in flight,
// then cancels what is left (those tenants stay in provisioning, for the next Start) and
// waits a little more. Signups after Stop are refused with 503.
func (s *Server) Stop() {
	if s.bg.Stopping() {
		return
	}
	s.janitor.Stop(0)
	if !s.bg.Drain(s.cfg.StopTimeout, 5*time.Second) {
		s.log.Error("background work did not end after cancellation")
	}
}

func (s *Server) healthz(c *gin.Context) {
	c.JSON(http.StatusOK, gin.H{"status": "ok"})
}

func (s *Server) readyz(c *gin.Context) error {
	ctx, cancel := context.WithTimeout(c.Request.Context(), 2*time.Second)
	defer cancel()
	if err := s.store.Ping(ctx); err != nil {
		s.log.Warn("control database unreachable", "error", err)
		return apperr.New(apperr.Unavailable, "not_ready", "the control database is unreachable")
	}
	c.JSON(http.StatusOK, gin.H{"status": "ok"})
	return nil
}
