package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/spf13/cobra"

	"github.com/tenantplane/tenantplane/controlplane"
	"github.com/tenantplane/tenantplane/dataplane"
	"github.com/tenantplane/tenantplane/dataplane/blogs"
	"github.com/tenantplane/tenantplane/dataplane/notify"
	"github.com/tenantplane/tenantplane/metrics"
	"github.com/tenantplane/tenantplane/password"
	"github.com/tenantplane/tenantplane/platform"
	"github.com/tenantplane/tenantplane/provisioner"
	"github.com/tenantplane/tenantplane/tenant"
	"github.com/tenantplane/tenantplane/token"
)

// component is a long-lived part of the server with a start/stop lifecycle.
type component interface {
	Start(ctx context.Context) error
	Stop()
}

func (a *app) serveCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "serve [all|controlplane|dataplane]",
		Short: "Serve HTTP on TENANTPLANE_LISTEN (default :8000)",
		Long: `Serve runs the HTTP servers until SIGINT or SIGTERM. Then /readyz answers 503 at
once, requests are still served for TENANTPLANE_SHUTDOWN_DELAY (default 2s) so load
balancers can stop sending them, the listener closes and in-flight requests finish; the
process exits at most TENANTPLANE_SHUTDOWN_GRACE (default 10s) after the signal.
Prometheus metrics are served on TENANTPLANE_METRICS_LISTEN (default 127.0.0.1:9090,
"off" for none), never on the public listener.

  all           both planes on one listener (default): a request that names a tenant
                (Host {slug}.{base domain} or a custom domain, X-Tenant, or the WebSocket
                tenant query parameter) goes to the dataplane, any other to the control plane
  controlplane  signup, platform API and tenant lifecycle only
  dataplane     the tenants' application only`,
		Args:      cobra.MaximumNArgs(1),
		ValidArgs: []string{"all", "controlplane", "dataplane"},
		RunE: func(cmd *cobra.Command, args []string) error {
			mode := "all"
			if len(args) == 1 {
				mode = args[0]
			}
			if mode != "all" && mode != "controlplane" && mode != "dataplane" {
				return usagef("serve takes all, controlplane or dataplane, not %q", mode)
			}
			if err := a.cfg.requireSecret(); err != nil {
				return err
			}
			return a.serve(cmd.Context(), mode)
		},
	}
}

// serving is what both planes are built from: the control database, the registry and
// the provisioner, the token issuer, the password hasher, the shared auth core and the
// metrics registry.
type serving struct {
	db     *pgxpool.Pool
	store  *tenant.Store
	prov   *provisioner.Provisioner
	issuer *token.Issuer
	hasher *password.Hasher
	core   *authCore
	reg    *metrics.Metrics
}

// serve runs the planes of mode until ctx ends, then drains: it opens what they share,
// builds them, listens, starts their background work and serves.
func (a *app) serve(ctx context.Context, mode string) error {
	drain, err := newDrainer(a.getenv, a.log)
	if err != nil {
		return err
	}
	sv, err := a.openServing(ctx)
	if err != nil {
		return err
	}
	defer sv.core.close()

	var parts []component
	var cp *controlplane.Server
	var dp *dataplane.Server
	if mode != "dataplane" {
		var cpParts []component
		cp, cpParts = a.newControlPlane(sv)
		parts = append(parts, cpParts...)
	}
	if mode != "controlplane" {
		var dpParts []component
		var closeDP func()
		dp, dpParts, closeDP, err = a.newDataplane(sv)
		if err != nil {
			return err
		}
		defer closeDP()
		parts = append(parts, dpParts...)
	}
	var handler http.Handler
	switch mode {
	case "controlplane":
		handler = cp.Handler()
	case "dataplane":
		handler = dp.Handler()
	default:
		handler = dp.Dispatch(cp.Handler())
	}

	ln, err := net.Listen("tcp", a.cfg.Listen)
	if err != nil {
		return &configError{"TENANTPLANE_LISTEN", fmt.Sprintf("cannot listen on %s: %v", a.cfg.Listen, err)}
	}
	metricsAddr, stopMetrics, err := a.listenMetrics(sv.reg)
	if err != nil {
		ln.Close()
		return err
	}
	defer stopMetrics()
	stopParts, err := startAll(ctx, parts)
	if err != nil {
		ln.Close()
		return err
	}
	defer stopParts()
	// Bodies and answers are bounded per request by web.Limit, which exempts WebSockets
	// (bounded by their ping/pong): a server-wide ReadTimeout or WriteTimeout would cut
	// them off.
	srv := &http.Server{
		Handler:           drain.handler(handler),
		ReadHeaderTimeout: a.cfg.ReadHeaderTimeout,
		IdleTimeout:       a.cfg.IdleTimeout,
		MaxHeaderBytes:    a.cfg.limits().ServerHeaderBytes(),
	}
	a.log.Info("serving", "mode", mode, "listen", ln.Addr().String(), "metrics", metricsAddr, "base_domain", a.cfg.BaseDomain,
		"search", map[bool]string{true: "opensearch", false: "postgres"}[a.cfg.OpenSearchURL != ""],
		"fanout", map[bool]string{true: "redis", false: "in-process"}[a.cfg.RedisURL != ""])
	return drain.serve(ctx, srv, ln)
}

// openServing opens what both planes share.
func (a *app) openServing(ctx context.Context) (*serving, error) {
	ring, err := token.ParseKeyRing(a.cfg.SecretKey)
	if err != nil {
		return nil, &configError{"TENANTPLANE_SECRET_KEY", err.Error()}
	}
	sv := &serving{
		issuer: token.NewIssuer(ring, token.Config{AccessTTL: a.cfg.AccessTTL, RefreshTTL: a.cfg.RefreshTTL}),
		hasher: password.NewHasher(password.OWASP, 0),
		reg:    metrics.New(),
	}
	// Room for request handlers, the registry listener and provisioning runs.
	if sv.db, err = a.control(ctx, 20); err != nil {
		return nil, err
	}
	if sv.prov, sv.store, err = a.provisionerWith(ctx, sv.reg); err != nil {
		return nil, err
	}
	if sv.core, err = a.newAuthCore(sv.db, ring); err != nil {
		return nil, err
	}
	return sv, nil
}

// newControlPlane builds the control plane and its fleet migrations.
func (a *app) newControlPlane(sv *serving) (*controlplane.Server, []component) {
	fleet := provisioner.NewFleet(sv.prov, provisioner.FleetConfig{Logger: a.log})
	cp := controlplane.New(controlplane.Config{
		BaseDomain:     a.cfg.BaseDomain,
		DeleteGrace:    a.cfg.DeleteGrace,
		Fleet:          fleet,
		Metrics:        sv.reg,
		Limits:         a.cfg.limits(),
		CORS:           a.cfg.cors(),
		Limiter:        sv.core.limiter,
		Sessions:       sv.core.sessions,
		Logger:         a.log,
		ArchiveKey:     a.cfg.ArchiveKey,
		ImportMaxBytes: a.cfg.ImportMaxBytes,
		Shards:         shardNames(a.cfg.Shards),
	}, sv.store, sv.prov, platform.NewStore(sv.db), sv.issuer, sv.hasher)
	parts := []component{fleet, cp}
	if a.cfg.WarmPool > 0 {
		refiller := provisioner.NewWarmRefiller(sv.prov, provisioner.WarmRefillerConfig{Logger: a.log})
		if err := sv.reg.Register(refiller.Collector()); err != nil {
			a.log.Warn("warm pool gauge not registered", "error", err)
		}
		parts = append(parts, refiller)
	}
	return cp, parts
}

// newDataplane builds the dataplane, its fan-out and search backend and the search
// indexer; the function it returns closes the fan-out's connection.
func (a *app) newDataplane(sv *serving) (*dataplane.Server, []component, func(), error) {
	shards := map[string]string{}
	for _, sh := range a.cfg.Shards {
		shards[sh.Name] = sh.URL
	}
	closeFanout := func() {}
	var fanout notify.Transport
	if a.cfg.RedisURL != "" {
		r, err := notify.NewRedis(a.cfg.RedisURL)
		if err != nil {
			return nil, nil, nil, &configError{"REDIS_URL", err.Error()}
		}
		closeFanout = func() { _ = r.Close() }
		fanout = r
	}
	fail := func(err error) (*dataplane.Server, []component, func(), error) {
		closeFanout()
		return nil, nil, nil, err
	}
	var searcher blogs.Searcher
	if os, err := a.openSearch(); err != nil {
		return fail(err)
	} else if os != nil {
		searcher = os
	}
	dp, err := dataplane.New(dataplane.Config{
		Control:            sv.db,
		BaseDomain:         a.cfg.BaseDomain,
		Shards:             shards,
		MaxPools:           a.cfg.MaxPools,
		ConnBudget:         a.cfg.ConnBudget,
		PerTenantConns:     int32(a.cfg.PerTenantConns),
		PoolMode:           tenant.PoolMode(a.cfg.PoolMode),
		GroupConns:         int32(a.cfg.GroupConns),
		SharedStatements:   a.cfg.PoolStatements,
		Logger:             a.log,
		Searcher:           searcher,
		Outbox:             a.cfg.OpenSearchURL != "",
		Fanout:             fanout,
		AllowedOrigins:     a.cfg.WebSocketOrigins,
		MaxWebSocketsPerIP: a.cfg.WebSocketsPerIP,
		Metrics:            sv.reg,
		Limits:             a.cfg.limits(),
		CORS:               a.cfg.cors(),
		Limiter:            sv.core.limiter,
		Sessions:           sv.core.sessions,
	}, sv.store, sv.issuer, sv.hasher)
	if err != nil {
		return fail(&configError{"dataplane", err.Error()})
	}
	if err := sv.reg.Register(dp.PoolCollector()); err != nil {
		return fail(fmt.Errorf("registering pool metrics: %w", err))
	}
	indexer, err := a.searchIndexer(sv.store, dp, sv.reg)
	if err != nil {
		return fail(err)
	}
	return dp, append([]component{dp}, indexer...), closeFanout, nil
}

// listenMetrics serves the metrics on their own listener unless it is "off", and
// returns its address and the function that stops it.
func (a *app) listenMetrics(reg *metrics.Metrics) (string, func(), error) {
	if a.cfg.MetricsListen == "off" {
		return "off", func() {}, nil
	}
	mln, err := net.Listen("tcp", a.cfg.MetricsListen)
	if err != nil {
		return "", nil, &configError{"TENANTPLANE_METRICS_LISTEN", fmt.Sprintf("cannot listen on %s: %v", a.cfg.MetricsListen, err)}
	}
	return mln.Addr().String(), a.serveMetrics(mln, reg), nil
}

// startAll starts the parts in order under a context that outlives ctx (they stop when
// the returned function is called, in reverse order, after the server has drained).
func startAll(ctx context.Context, parts []component) (stop func(), err error) {
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	started := 0
	stop = func() {
		for i := started - 1; i >= 0; i-- {
			parts[i].Stop()
		}
		cancel()
	}
	for _, p := range parts {
		if err := p.Start(runCtx); err != nil {
			stop()
			return nil, fmt.Errorf("starting: %w", err)
		}
		started++
	}
	return stop, nil
}

// serveMetrics serves reg's metrics on ln, in the background, with timeouts of its own;
// the function it returns closes the listener and its connections.
func (a *app) serveMetrics(ln net.Listener, reg *metrics.Metrics) (stop func()) {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", reg.Handler())
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: a.cfg.ReadHeaderTimeout,
		ReadTimeout:       a.cfg.BodyTimeout,
		WriteTimeout:      a.cfg.WriteTimeout,
		IdleTimeout:       a.cfg.IdleTimeout,
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.log.Error("serving metrics", "error", err)
		}
	}()
	return func() {
		_ = srv.Close()
		<-done
	}
}

// shardNames returns the names of the shards that take tenants (not draining), for the
// admin panel's move form.
func shardNames(shards []provisioner.Shard) []string {
	var out []string
	for _, sh := range shards {
		if !sh.Draining {
			out = append(out, sh.Name)
		}
	}
	return out
}
