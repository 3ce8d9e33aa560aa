package notify

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/gorilla/websocket"

	"github.com/tenantplane/tenantplane/apperr"
	"github.com/tenantplane/tenantplane/dataplane/tenantdb"
	"github.com/tenantplane/tenantplane/tenant"
)

// maxClientMessage bounds what a client may send; clients only answer pings.
const maxClientMessage = 4096

// wsToken finds the access token of a WebSocket handshake, in this order: an
// `Authorization: Bearer` header, the Sec-WebSocket-Protocol header (`bearer, <token>`
// or just the token, for browsers that cannot set headers), the `token` query
// parameter, or `query_string` (as the Django app accepted: either the token or
// `token=<token>`). It also returns the subprotocol to answer with, if any.
func wsToken(r *http.Request) (tok, protocol string) {
	if scheme, t, ok := strings.Cut(r.Header.Get("Authorization"), " "); ok && strings.EqualFold(scheme, "Bearer") && strings.TrimSpace(t) != "" {
		return strings.TrimSpace(t), ""
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

// checkOrigin allows handshakes without an Origin (non-browser clients) and browser
// pages served from the tenant's own hosts or the configured origins.
func (s *Service) checkOrigin(ctx context.Context, r *http.Request, t *tenant.Tenant) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	for _, o := range s.cfg.AllowedOrigins {
		if strings.EqualFold(strings.TrimRight(o, "/"), origin) {
			return true
		}
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" {
		return false
	}
	host := strings.ToLower(u.Hostname())
	if host == t.Slug+"."+strings.ToLower(s.cfg.BaseDomain) {
		return true
	}
	if s.cfg.Domains != nil {
		if owner, err := s.cfg.Domains.GetByDomain(ctx, host); err == nil && owner.ID == t.ID {
			return true
		}
	}
	return false
}

func (s *Service) websocket(c *gin.Context) error {
	sc, err := tenantdb.From(c)
	if err != nil {
		return err
	}
	if !websocket.IsWebSocketUpgrade(c.Request) {
		return apperr.New(apperr.Invalid, "websocket_required", "this endpoint speaks WebSocket; send an Upgrade: websocket request")
	}
	after, err := afterID(c)
	if err != nil {
		return err
	}
	raw, protocol := wsToken(c.Request)
	if raw == "" {
		return apperr.New(apperr.Unauthenticated, "not_authenticated",
			"authentication required: send the access token as `Authorization: Bearer`, the Sec-WebSocket-Protocol header or the token query parameter")
	}
	user, err := s.cfg.Auth.AuthenticateToken(c, raw)
	if err != nil {
		return err
	}
	if !s.checkOrigin(c.Request.Context(), c.Request, sc.Tenant) {
		return apperr.New(apperr.Forbidden, "origin_not_allowed", "origin %q may not open this tenant's websocket", c.Request.Header.Get("Origin"))
	}
	var hdr http.Header
	if protocol != "" {
		// Set, not a literal map key: the upgrader reads the canonical key.
		hdr = http.Header{}
		hdr.Set("Sec-WebSocket-Protocol", protocol)
	}
	ctx, ok := s.track()
	if !ok {
		return apperr.New(apperr.Unavailable, "shutting_down", "the server is shutting down; reconnect shortly")
	}
	defer s.conns.Done()
	// Subscribe before replaying so nothing published in between is missed; duplicates
	// are skipped by id below.
	sub := s.hub.subscribe(sc.Tenant.ID, s.cfg.SendBuffer)
	conn, err := s.upgrader.Upgrade(c.Writer, c.Request, hdr)
	if err != nil {
		s.hub.unsubscribe(sc.Tenant.ID, sub)
		// Upgrade has already answered the client.
		c.Abort()
		return nil
	}
	c.Abort()
	s.log.Info("websocket connected", "tenant", sc.Tenant.Slug, "user_id", user.ID)
	s.serve(ctx, conn, sc, sub, after, user.Expires)
	s.hub.unsubscribe(sc.Tenant.ID, sub)
	s.log.Info("websocket closed", "tenant", sc.Tenant.Slug, "user_id", user.ID)
	return nil
}

// CloseTokenExpired is the close code sent when the access token that opened the
// WebSocket expires: the client reconnects with a fresh token and after_id. It also
// bounds how long a deactivated user's open connection lives.
const CloseTokenExpired = 4401

// serve replays missed notifications, then forwards live ones and keeps the connection
// alive with pings until the client leaves, falls behind, stops answering or its token
// expires.
func (s *Service) serve(ctx context.Context, conn *websocket.Conn, sc *tenantdb.Scope, sub *subscriber, after int64, expires time.Time) {
	defer conn.Close()
	conn.SetReadLimit(maxClientMessage)
	_ = conn.SetReadDeadline(time.Now().Add(2 * s.cfg.PingInterval))
	conn.SetPongHandler(func(string) error {
		return conn.SetReadDeadline(time.Now().Add(2 * s.cfg.PingInterval))
	})
	closed := make(chan struct{})
	go func() {
		// The reader only handles control frames; any error (close, timeout, oversized
		// message) ends the connection.
		defer close(closed)
		for {
			if _, _, err := conn.NextReader(); err != nil {
				return
			}
		}
	}()
	write := func(kind int, data []byte) bool {
		_ = conn.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout))
		return conn.WriteMessage(kind, data) == nil
	}
	// replayed holds the ids the replay sent, so that their live copies (published
	// between subscribe and the replay's read) are not sent twice. Live messages are
	// otherwise forwarded whatever their id: two notifications may commit in the
	// opposite order of their ids, and skipping "older" ids would lose one.
	var replayed map[int64]bool
	if after > 0 {
		var missed []Message
		err := sc.Read(ctx, func(db tenantdb.DB) error {
			var err error
			missed, err = since(ctx, db, after, s.cfg.ReplayLimit)
			return err
		})
		if err != nil {
			s.log.Error("replaying notifications", "tenant", sc.Tenant.Slug, "error", err)
			_ = conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseInternalServerErr, "replay failed"), time.Now().Add(time.Second))
			return
		}
		replayed = make(map[int64]bool, len(missed))
		for _, m := range missed {
			b, _ := json.Marshal(m)
			if !write(websocket.TextMessage, b) {
				return
			}
			replayed[m.ID] = true
		}
	}
	ping := time.NewTicker(s.cfg.PingInterval)
	defer ping.Stop()
	var expired <-chan time.Time
	if !expires.IsZero() {
		timer := time.NewTimer(time.Until(expires))
		defer timer.Stop()
		expired = timer.C
	}
	for {
		select {
		case <-closed:
			return
		case <-expired:
			_ = conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(CloseTokenExpired, "token expired; reconnect with a fresh token and after_id"), time.Now().Add(time.Second))
			return
		case <-ctx.Done():
			_ = conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseGoingAway, "server shutting down"), time.Now().Add(time.Second))
			return
		case <-ping.C:
			_ = conn.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout))
			if err := conn.WriteControl(websocket.PingMessage, nil, time.Now().Add(s.cfg.WriteTimeout)); err != nil {
				return
			}
		case payload, ok := <-sub.ch:
			if !ok {
				// Dropped for falling behind: the client reconnects with after_id.
				_ = conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.ClosePolicyViolation, "too slow; reconnect with after_id"), time.Now().Add(time.Second))
				return
			}
			var head struct {
				ID int64 `json:"id"`
			}
			if len(replayed) > 0 && json.Unmarshal(payload, &head) == nil && replayed[head.ID] {
				delete(replayed, head.ID) // already sent by the replay; one live copy at most
				continue
			}
			if !write(websocket.TextMessage, payload) {
				return
			}
		}
	}
}
