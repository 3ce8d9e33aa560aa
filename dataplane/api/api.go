// Package api is the dataplane's JSON API and its WebSocket: a thin HTTP adapter over
// the services (auth, blogs, notify). Each handler parses the path and query parameters
// and the JSON body, calls one service method with the request's context.Context (which
// the tenant middleware gave the tenant's scope, and the bearer token authentication the
// caller), and encodes the answer with its success status. Errors go to the one error
// table (web.WriteError).
package api

import (
	"cmp"
	"context"
	"log/slog"
	"net/http"
	"slices"
	"strings"

	"github.com/gin-gonic/gin"

	"github.com/tenantplane/tenantplane/apperr"
	"github.com/tenantplane/tenantplane/dataplane/auth"
	"github.com/tenantplane/tenantplane/dataplane/blogs"
	"github.com/tenantplane/tenantplane/dataplane/caller"
	"github.com/tenantplane/tenantplane/dataplane/notify"
	"github.com/tenantplane/tenantplane/dataplane/page"
	"github.com/tenantplane/tenantplane/web"
)

// Config configures an API.
type Config struct {
	// Auth, Blogs and Notify are the services; required.
	Auth   *auth.Service
	Blogs  *blogs.Service
	Notify *notify.Service
	// Logger receives failed requests (default: discard).
	Logger *slog.Logger
}

// API serves the JSON API and the notifications WebSocket.
type API struct {
	auth   *auth.Service
	blogs  *blogs.Service
	notify *notify.Service
	log    *slog.Logger
}

// New returns an API.
func New(cfg Config) *API {
	return &API{auth: cfg.Auth, blogs: cfg.Blogs, notify: cfg.Notify, log: cmp.Or(cfg.Logger, slog.New(slog.DiscardHandler))}
}

// Routes registers the JSON API on api (/api/v1) and the WebSocket on ws (/ws); both
// must run the tenant middleware first. A method a path does not serve is answered 405
// with an Allow header, also where a parameter route of that method would otherwise take
// the path for an id (PATCH /users/me, PUT /blogs/search): see register.
func (a *API) Routes(api, ws gin.IRouter) {
	register(api, []route{
		{http.MethodPost, "/auth/token", a.open(a.login)},
		{http.MethodPost, "/auth/token/refresh", a.open(a.refresh)},
		{http.MethodPost, "/auth/token/verify", a.open(a.verify)},
		{http.MethodPost, "/auth/logout", a.open(a.logout)},

		{http.MethodGet, "/users/me", a.user(a.me)},
		{http.MethodPost, "/users/me/password", a.user(a.changeOwnPassword)},
		{http.MethodGet, "/users", a.admin(a.listUsers)},
		{http.MethodPost, "/users", a.admin(a.createUser)},
		{http.MethodGet, "/users/:id", a.admin(a.getUser)},
		{http.MethodPatch, "/users/:id", a.admin(a.patchUser)},
		{http.MethodDelete, "/users/:id", a.admin(a.deleteUser)},

		{http.MethodGet, "/blogs", a.user(a.listBlogs)},
		{http.MethodPost, "/blogs", a.user(a.createBlog)},
		{http.MethodGet, "/blogs/search", a.user(a.searchBlogs)},
		{http.MethodGet, "/blogs/:id", a.user(a.getBlog)},
		{http.MethodPut, "/blogs/:id", a.user(a.putBlog)},
		{http.MethodPatch, "/blogs/:id", a.user(a.patchBlog)},
		{http.MethodDelete, "/blogs/:id", a.user(a.deleteBlog)},

		{http.MethodPost, "/notifications", a.admin(a.postNotification)},
		{http.MethodGet, "/notifications", a.user(a.listNotifications)},
	})
	register(ws, []route{{http.MethodGet, "/notifications", a.open(a.websocket)}})
}

// route is one registration of Routes.
type route struct {
	method, path string
	h            gin.HandlerFunc
}

// shadow is a static path that a parameter route of another method would take for a
// parameter value: /users/me for PATCH /users/:id (params id=me).
type shadow struct {
	params map[string]string
	allow  string // the static path's methods, for the Allow header
}

// register registers routes on r. Gin answers 405 itself for a method whose routes
// match nothing; where a parameter route of the method matches a static path of other
// methods, the route's handler answers 405 for it instead of reading the segment as an
// id.
func register(r gin.IRouter, routes []route) {
	methods := map[string][]string{}
	for _, rt := range routes {
		methods[rt.path] = append(methods[rt.path], rt.method)
	}
	for _, rt := range routes {
		var shadows []shadow
		for path, ms := range methods {
			if params, ok := takes(rt.path, path); ok && !slices.Contains(ms, rt.method) {
				shadows = append(shadows, shadow{params: params, allow: strings.Join(slices.Sorted(slices.Values(ms)), ", ")})
			}
		}
		h := rt.h
		if len(shadows) > 0 {
			h = func(c *gin.Context) {
				for _, sh := range shadows {
					if matches(c, sh.params) {
						c.Header("Allow", sh.allow)
						web.MethodNotAllowed(c)
						return
					}
				}
				rt.h(c)
			}
		}
		r.Handle(rt.method, rt.path, h)
	}
}

// takes reports whether the parameter route pattern matches the static path, and with
// which parameter values.
func takes(pattern, path string) (map[string]string, bool) {
	if strings.ContainsAny(path, ":*") || !strings.Contains(pattern, ":") {
		return nil, false
	}
	ps, ss := strings.Split(pattern, "/"), strings.Split(path, "/")
	if len(ps) != len(ss) {
		return nil, false
	}
	params := map[string]string{}
	for i := range ps {
		switch {
		case strings.HasPrefix(ps[i], ":"):
			params[ps[i][1:]] = ss[i]
		case ps[i] != ss[i]:
			return nil, false
		}
	}
	return params, true
}

func matches(c *gin.Context, params map[string]string) bool {
	for k, v := range params {
		if c.Param(k) != v {
			return false
		}
	}
	return true
}

// handler is an API handler: ctx is the request's context, with the caller once
// authenticated.
type handler func(ctx context.Context, c *gin.Context) error

// open adapts a handler that needs no caller.
func (a *API) open(h handler) gin.HandlerFunc {
	return web.Handle(a.log, func(c *gin.Context) error { return h(c.Request.Context(), c) })
}

// user adapts a handler for authenticated callers: the bearer access token is verified
// here and its user checked with the request's first statement (auth.Authenticate). It
// answers 401 without a valid token.
func (a *API) user(h handler) gin.HandlerFunc {
	return web.Handle(a.log, func(c *gin.Context) error {
		raw, ok := bearer(c.GetHeader("Authorization"))
		if !ok {
			return errNoToken
		}
		ctx := c.Request.Context()
		u, err := a.auth.Authenticate(ctx, raw)
		if err != nil {
			return err
		}
		return h(caller.With(ctx, u), c)
	})
}

// admin adapts a handler for tenant admins: as user, then 403 for a caller who is not
// an admin as stored, before the request is read further.
func (a *API) admin(h handler) gin.HandlerFunc {
	return a.user(func(ctx context.Context, c *gin.Context) error {
		if _, err := auth.RequireAdmin(ctx); err != nil {
			return err
		}
		return h(ctx, c)
	})
}

var errNoToken = apperr.New(apperr.Unauthenticated, "unauthenticated", "authentication required: send an access token as `Authorization: Bearer <token>`")

// bearer returns the token of an `Authorization: Bearer` header.
func bearer(h string) (string, bool) {
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	tok = strings.TrimSpace(tok)
	return tok, tok != ""
}

// queryLimit returns the `limit` query parameter: 0 (the list's default) when absent.
func queryLimit(c *gin.Context) (int, error) { return page.QueryLimit(c.GetQuery) }

// okJSON answers 200 with v as JSON.
func okJSON(c *gin.Context, v any) error {
	c.JSON(http.StatusOK, v)
	return nil
}

// createdJSON answers 201 with v as JSON.
func createdJSON(c *gin.Context, v any) error {
	c.JSON(http.StatusCreated, v)
	return nil
}

// noContent answers 204.
func noContent(c *gin.Context) error {
	c.Status(http.StatusNoContent)
	return nil
}
