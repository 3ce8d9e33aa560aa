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
// must run the tenant middleware first.
func (a *API) Routes(api, ws gin.IRouter) {
	api.POST("/auth/token", a.open(a.login))
	api.POST("/auth/token/refresh", a.open(a.refresh))
	api.POST("/auth/token/verify", a.open(a.verify))
	api.POST("/auth/logout", a.open(a.logout))

	api.GET("/users/me", a.user(a.me))
	api.POST("/users/me/password", a.user(a.changeOwnPassword))
	api.GET("/users", a.admin(a.listUsers))
	api.POST("/users", a.admin(a.createUser))
	api.GET("/users/:id", a.admin(a.getUser))
	api.PATCH("/users/:id", a.admin(a.patchUser))
	api.DELETE("/users/:id", a.admin(a.deleteUser))

	api.GET("/blogs", a.user(a.listBlogs))
	api.POST("/blogs", a.user(a.createBlog))
	api.GET("/blogs/search", a.user(a.searchBlogs))
	api.GET("/blogs/:id", a.user(a.getBlog))
	api.PUT("/blogs/:id", a.user(a.putBlog))
	api.PATCH("/blogs/:id", a.user(a.patchBlog))
	api.DELETE("/blogs/:id", a.user(a.deleteBlog))

	api.POST("/notifications", a.admin(a.postNotification))
	api.GET("/notifications", a.user(a.listNotifications))
	ws.GET("/notifications", a.open(a.websocket))
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
