package dataplane

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/hashicorp/golang-lru/v2/simplelru"
	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/singleflight"

	"github.com/tenantplane/tenantplane/apperr"
	"github.com/tenantplane/tenantplane/dataplane/tenantdb"
	"github.com/tenantplane/tenantplane/lifecycle"
	"github.com/tenantplane/tenantplane/tenant"
	"github.com/tenantplane/tenantplane/web"
)

// registryChannel is the channel the registry's triggers notify on every change of a
// tenant (payload: its slug) or a domain (payload: "domain:" + domain).
const registryChannel = "tenantplane_registry"

// Cache lifetimes of tenant lookups. While the listener is connected, changes evict
// entries at once and the TTLs are only a safety net; without it (not started, or
// reconnecting) entries live for staleTTL so a change still takes effect within it.
const (
	liveTTL     = time.Minute
	negativeTTL = 10 * time.Second
	staleTTL    = time.Second
	cacheSize   = 10000
)

// tenantMiddleware resolves the request's tenant (or takes the resolution Dispatch
// made), checks that it may be served and puts its scope in the request's context.
func (s *Server) tenantMiddleware(c *gin.Context) error {
	res, ok := resolutionFrom(c.Request.Context())
	if !ok {
		res = s.res.resolve(c.Request)
	}
	if res.err != nil {
		return res.err
	}
	if !res.named {
		return apperr.New(apperr.NotFound, "tenant_not_found", "the request names no tenant: use the tenant's host or the X-Tenant header")
	}
	if err := res.t.Serving(); err != nil {
		return err
	}
	if res.t.WritesFrozen && writes(c.Request.Method) {
		return &apperr.Error{Kind: apperr.Unavailable, Code: "tenant_moving", RetryAfter: time.Second,
			Message: fmt.Sprintf("tenant %q is being moved and is read-only for a moment; try again shortly", res.t.Slug)}
	}
	web.SetTenant(c, res.t.Slug)
	c.Request = c.Request.WithContext(tenantdb.WithScope(c.Request.Context(), tenantdb.New(res.t, s.pools)))
	c.Next()
	return nil
}

// writes reports whether a request with method may change data: any but GET, HEAD and
// OPTIONS (a WebSocket upgrade is a GET: the socket only reads). While a tenant's writes
// are frozen (a move switching shards), these answer 503 tenant_moving.
func writes(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		return false
	}
	return true
}

// Dispatch returns the handler of a server that combines both planes: a request that
// names a tenant (its Host is {slug}.{base domain} or a custom domain, or it carries
// X-Tenant, or it is a WebSocket upgrade with a tenant query parameter) goes to the
// dataplane, any other to other. A named tenant that does not exist still counts: the
// dataplane answers it 404. The tenant is resolved once: the dataplane reuses the
// resolution.
func (s *Server) Dispatch(other http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		res := s.res.resolve(r)
		if !res.namesTenant() {
			other.ServeHTTP(w, r)
			return
		}
		s.engine.ServeHTTP(w, r.WithContext(withResolution(r.Context(), res)))
	})
}

// resolver finds the tenant a request names and caches registry lookups.
type resolver struct {
	store   *tenant.Store
	control Control // the registry listener connects with its settings
	base    string
	log     *slog.Logger
	now     func() time.Time
	group   singleflight.Group

	// mu guards cache, gen, listening and onInvalidate.
	mu        sync.Mutex
	cache     *simplelru.LRU[string, cached]
	gen       uint64 // bumped by every invalidation
	listening bool
	// onInvalidate, when set, is called with the payload of every registry notification
	// once its entries are dropped (tests wait on it).
	onInvalidate func(payload string)
	// onChange, set once before the listener starts, is called with the payload of every
	// registry notification, and with "" each time the listener (re)connects, since
	// changes may have been missed (the notifications service ends sockets of tenants
	// no longer served).
	onChange func(payload string)
}

// cached is a lookup result: a tenant, or NotFound.
type cached struct {
	t  *tenant.Tenant // nil: not found
	at time.Time
}

func newResolver(store *tenant.Store, control Control, base string, log *slog.Logger, now func() time.Time) *resolver {
	c, _ := simplelru.NewLRU[string, cached](cacheSize, nil) // errors only on size <= 0
	return &resolver{store: store, control: control, base: hostOf(base), log: log, now: now, cache: c}
}

// resolution is the outcome of resolving a request's tenant: t when found, named when
// the request names a tenant at all, err for an unknown tenant or a registry failure.
type resolution struct {
	t     *tenant.Tenant
	named bool
	err   error
}

// namesTenant reports whether the request belongs to the dataplane: it names a tenant,
// even an unknown one, or the registry failed while finding out.
func (r resolution) namesTenant() bool {
	return r.named || (r.err != nil && apperr.KindOf(r.err) != apperr.NotFound)
}

type resolutionKey struct{}

// withResolution returns ctx carrying res, so the tenant middleware does not resolve
// the request again.
func withResolution(ctx context.Context, res resolution) context.Context {
	return context.WithValue(ctx, resolutionKey{}, res)
}

// resolutionFrom returns the resolution ctx carries.
func resolutionFrom(ctx context.Context) (resolution, bool) {
	res, ok := ctx.Value(resolutionKey{}).(resolution)
	return res, ok
}

var errNoTenant = apperr.New(apperr.NotFound, "tenant_not_found", "tenant not found")

// resolve returns the tenant the request names, in order: the Host ({slug}.{base} or a
// custom domain), the X-Tenant header, and for WebSocket upgrades the tenant (or
// tenant_name) query parameter. named is false when the request names no tenant. A
// named but unknown tenant is a NotFound error (tenant_not_found); registry failures are
// Unavailable. Whether the tenant may be served is left to tenant.Serving.
func (r *resolver) resolve(req *http.Request) resolution {
	t, named, err := r.find(req)
	return resolution{t: t, named: named, err: err}
}

func (r *resolver) find(req *http.Request) (t *tenant.Tenant, named bool, err error) {
	ctx := req.Context()
	host := hostOf(req.Host)
	if slug, ok := r.subdomain(host); ok {
		t, err := r.lookup(ctx, "slug:"+slug)
		return t, true, err
	}
	if host != "" && host != r.base && host != "localhost" && net.ParseIP(host) == nil && strings.Contains(host, ".") {
		t, err := r.lookup(ctx, "domain:"+host)
		if err == nil {
			return t, true, nil
		}
		if apperr.KindOf(err) != apperr.NotFound {
			return nil, true, err
		}
	}
	if slug := strings.TrimSpace(req.Header.Get("X-Tenant")); slug != "" {
		t, err := r.bySlug(ctx, slug)
		return t, true, err
	}
	if isWebSocket(req) {
		q := req.URL.Query()
		slug := q.Get("tenant")
		if slug == "" {
			slug = q.Get("tenant_name")
		}
		if slug != "" {
			t, err := r.bySlug(ctx, slug)
			return t, true, err
		}
	}
	return nil, false, nil
}

func (r *resolver) bySlug(ctx context.Context, slug string) (*tenant.Tenant, error) {
	slug = strings.ToLower(slug)
	if tenant.ValidateSlug(slug) != nil {
		return nil, errNoTenant
	}
	return r.lookup(ctx, "slug:"+slug)
}

// subdomain returns the slug of a host {slug}.{base}.
func (r *resolver) subdomain(host string) (string, bool) {
	label, ok := strings.CutSuffix(host, "."+r.base)
	if !ok || label == "" || strings.Contains(label, ".") || tenant.ValidateSlug(label) != nil {
		return "", false
	}
	return label, true
}

// hostOf returns the lowercase host name of a Host header, without port or final dot.
func hostOf(h string) string {
	if host, _, err := net.SplitHostPort(h); err == nil {
		h = host
	}
	h = strings.TrimSuffix(strings.Trim(h, "[]"), ".")
	return strings.ToLower(h)
}

func isWebSocket(req *http.Request) bool {
	return strings.EqualFold(req.Header.Get("Upgrade"), "websocket")
}

// lookup returns the tenant of a cache key ("slug:x" or "domain:x"), from the cache
// when fresh, else from the registry (one query per key at a time).
func (r *resolver) lookup(ctx context.Context, key string) (*tenant.Tenant, error) {
	r.mu.Lock()
	e, ok := r.cache.Get(key)
	fresh := ok && r.now().Sub(e.at) < r.ttlLocked(e.t != nil)
	r.mu.Unlock()
	if fresh {
		if e.t == nil {
			return nil, errNoTenant
		}
		return e.t, nil
	}
	v, err, _ := r.group.Do(key, func() (any, error) {
		r.mu.Lock()
		gen := r.gen
		r.mu.Unlock()
		// The lookup outlives a cancelled caller: others may share it.
		lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		var t *tenant.Tenant
		var err error
		if d, ok := strings.CutPrefix(key, "domain:"); ok {
			t, err = r.store.GetByDomain(lctx, d)
		} else {
			t, err = r.store.Get(lctx, strings.TrimPrefix(key, "slug:"))
		}
		if err != nil && apperr.KindOf(err) != apperr.NotFound {
			return nil, &apperr.Error{Kind: apperr.Unavailable, Code: "registry_unavailable",
				Message: "the tenant registry is unavailable; try again shortly", Err: err}
		}
		if err != nil {
			t = nil
		}
		r.mu.Lock()
		if r.gen == gen { // no change was announced while we read: the answer may be cached
			r.cache.Add(key, cached{t: t, at: r.now()})
		}
		r.mu.Unlock()
		return t, nil
	})
	if err != nil {
		return nil, err
	}
	t, _ := v.(*tenant.Tenant)
	if t == nil {
		return nil, errNoTenant
	}
	return t, nil
}

func (r *resolver) ttlLocked(found bool) time.Duration {
	switch {
	case !r.listening:
		return staleTTL
	case found:
		return liveTTL
	default:
		return negativeTTL
	}
}

// invalidate drops the cached lookups a registry notification is about: a tenant's slug
// entry and every domain entry pointing at it, or one domain entry.
func (r *resolver) invalidate(payload string) {
	r.mu.Lock()
	r.invalidateLocked(payload)
	hook := r.onInvalidate
	r.mu.Unlock()
	if r.onChange != nil {
		r.onChange(payload)
	}
	if hook != nil {
		hook(payload)
	}
}

func (r *resolver) invalidateLocked(payload string) {
	r.gen++
	if d, ok := strings.CutPrefix(payload, "domain:"); ok {
		r.cache.Remove("domain:" + d)
		return
	}
	r.cache.Remove("slug:" + payload)
	for _, k := range r.cache.Keys() {
		if e, ok := r.cache.Peek(k); ok && strings.HasPrefix(k, "domain:") && (e.t == nil || e.t.Slug == payload) {
			r.cache.Remove(k)
		}
	}
}

// setListening records whether notifications are being received; either way the whole
// cache is dropped, since changes may have been missed.
func (r *resolver) setListening(on bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.listening = on
	r.gen++
	r.cache.Purge()
}

// listen receives registry notifications until ctx ends, reconnecting after failures
// (lifecycle.Retry).
func (r *resolver) listen(ctx context.Context) {
	lifecycle.Retry(ctx, r.log, "registry listener", lifecycle.Backoff{}, func(ctx context.Context) error {
		err := r.listenOnce(ctx)
		r.setListening(false)
		return err
	})
}

// listenOnce holds one LISTEN connection to the control database, dropping cached
// lookups as changes are announced, until ctx ends or the connection fails.
func (r *resolver) listenOnce(ctx context.Context) error {
	conn, err := pgx.ConnectConfig(ctx, r.control.Config().ConnConfig.Copy())
	if err != nil {
		return fmt.Errorf("connecting registry listener: %w", err)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = conn.Close(cctx)
	}()
	if _, err := conn.Exec(ctx, "LISTEN "+registryChannel); err != nil {
		return fmt.Errorf("listening for registry changes: %w", err)
	}
	r.setListening(true)
	if r.onChange != nil {
		r.onChange("")
	}
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			if errors.Is(err, context.Canceled) {
				return nil
			}
			return fmt.Errorf("waiting for registry changes: %w", err)
		}
		r.invalidate(n.Payload)
	}
}
