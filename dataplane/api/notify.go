package api

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"

	"github.com/gin-gonic/gin"
	"github.com/gorilla/websocket"

	"github.com/tenantplane/tenantplane/apperr"
	"github.com/tenantplane/tenantplane/dataplane/caller"
	"github.com/tenantplane/tenantplane/dataplane/notify"
	"github.com/tenantplane/tenantplane/dataplane/page"
	"github.com/tenantplane/tenantplane/web"
)

// postNotification answers POST /notifications {title, body} with 201 (tenant admins).
func (a *API) postNotification(ctx context.Context, c *gin.Context) error {
	var in struct {
		Title string `json:"title"`
		Body  string `json:"body"`
	}
	if err := web.DecodeJSON(c, &in, notify.MaxRequest); err != nil {
		return err
	}
	m, err := a.notify.Post(ctx, in.Title, in.Body)
	if err != nil {
		return err
	}
	return createdJSON(c, m)
}

// listNotifications answers GET /notifications?after_id=&limit=, oldest first.
func (a *API) listNotifications(ctx context.Context, c *gin.Context) error {
	after, _, err := afterID(c)
	if err != nil {
		return err
	}
	limit := 0
	if raw := c.Query("limit"); raw != "" {
		if limit, err = page.ParseLimit(raw); err != nil {
			return err
		}
	}
	items, err := a.notify.Since(ctx, after, limit)
	if err != nil {
		return err
	}
	return okJSON(c, gin.H{"items": items})
}

// afterID parses the after_id query parameter; present is false (and the id 0) when
// it is absent.
func afterID(c *gin.Context) (id int64, present bool, err error) {
	v, present := c.GetQuery("after_id")
	if !present {
		return 0, false, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0, true, apperr.New(apperr.Invalid, "invalid_after_id", "after_id must be a non-negative integer")
	}
	return n, true, nil
}

// upgrader finishes WebSocket handshakes; the Origin check runs before, with the tenant
// at hand (notify.Service.CheckOrigin). An idle socket holds only its small read
// buffer: write buffers are taken from the pool for one message (fanned-out
// notifications are written prepared, without one), and compression stays off.
var upgrader = websocket.Upgrader{
	ReadBufferSize:  512,
	WriteBufferSize: 4096,
	WriteBufferPool: &sync.Pool{},
	CheckOrigin:     func(*http.Request) bool { return true },
}

// websocket answers GET /ws/notifications?after_id=: it authenticates the handshake's
// token (see wsToken) and its user at once, checks the Origin, and hands the upgraded
// connection to the tenant's live feed (notify.Service.Serve), which replays what was
// stored after after_id first (after_id=0: everything; absent: live only). A client IP
// over the per-IP socket cap is answered 429 too_many_connections.
func (a *API) websocket(ctx context.Context, c *gin.Context) error {
	if !websocket.IsWebSocketUpgrade(c.Request) {
		return apperr.New(apperr.Invalid, "websocket_required", "this endpoint speaks WebSocket; send an Upgrade: websocket request")
	}
	after, present, err := afterID(c)
	if err != nil {
		return err
	}
	if !present {
		after = notify.LiveOnly
	}
	raw, protocol := wsToken(c.Request)
	if raw == "" {
		return apperr.New(apperr.Unauthenticated, "unauthenticated",
			"authentication required: send the access token as `Authorization: Bearer`, the Sec-WebSocket-Protocol header or the token query parameter")
	}
	u, err := a.auth.AuthenticateNow(ctx, raw)
	if err != nil {
		return err
	}
	if err := a.notify.CheckOrigin(ctx, c.Request.Header.Get("Origin")); err != nil {
		return err
	}
	var hdr http.Header
	if protocol != "" {
		// Set, not a literal map key: the upgrader reads the canonical key.
		hdr = http.Header{}
		hdr.Set("Sec-WebSocket-Protocol", protocol)
	}
	upgraded := false
	err = a.notify.Serve(caller.With(ctx, u), c.ClientIP(), after, func() (*websocket.Conn, error) {
		upgraded = true // answered, whether it worked or not
		return upgrader.Upgrade(c.Writer, c.Request, hdr)
	})
	if upgraded {
		c.Abort()
		return nil
	}
	return err
}

// wsToken finds the access token of a WebSocket handshake, in this order: an
// `Authorization: Bearer` header, the Sec-WebSocket-Protocol header (`bearer, <token>`
// or just the token, for browsers that cannot set headers), the `token` query
// parameter, or `query_string` (as the Django app accepted: either the token or
// `token=<token>`). It also returns the subprotocol to answer with, if any.
func wsToken(r *http.Request) (tok, protocol string) {
	if t, ok := bearer(r.Header.Get("Authorization")); ok {
		return t, ""
	}
	for _, p := range websocket.Subprotocols(r) {
		if strings.Count(p, ".") == 2 {
			tok = p
		} else if protocol == "" {
			protocol = p
		}
	}
	if tok != "" {
		return tok, protocol
	}
	q := r.URL.Query()
	if t := q.Get("token"); t != "" {
		return t, ""
	}
	if qs := q.Get("query_string"); qs != "" {
		if inner, err := url.ParseQuery(qs); err == nil && inner.Get("token") != "" {
			return inner.Get("token"), ""
		}
		return qs, ""
	}
	return "", ""
}
