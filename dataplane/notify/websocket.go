package notify

import (
	"context"
	"encoding/json"
	"net/url"
	"strings"
	"time"

	"github.com/gorilla/websocket"

	"github.com/tenantplane/tenantplane/apperr"
	"github.com/tenantplane/tenantplane/dataplane/pool"
	"github.com/tenantplane/tenantplane/dataplane/tenantdb"
)

// maxClientMessage bounds what a client may send; clients only answer pings.
const maxClientMessage = 4096

// CheckOrigin allows handshakes without an Origin (non-browser clients) and browser
// pages served from the hosts of ctx's tenant or the configured origins. It returns a
// Forbidden error (origin_not_allowed) for any other origin.
func (s *Service) CheckOrigin(ctx context.Context, origin string) error {
	sc, err := tenantdb.ScopeFrom(ctx)
	if err != nil {
		return err
	}
	if origin == "" || s.originAllowed(ctx, origin, sc) {
		return nil
	}
	return apperr.New(apperr.Forbidden, "origin_not_allowed", "origin %q may not open this tenant's websocket", origin)
}

func (s *Service) originAllowed(ctx context.Context, origin string, sc *tenantdb.Scope) bool {
	for _, o := range s.cfg.AllowedOrigins {
		if strings.EqualFold(strings.TrimRight(o, "/"), origin) {
			return true
		}
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" {
		return false
	}
	t := sc.Tenant
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

// CloseTokenExpired is the close code sent when the access token that opened the
// WebSocket expires: the client reconnects with a fresh token and after_id. It also
// bounds how long a deactivated user's open connection lives.
const CloseTokenExpired = 4401

var errShuttingDown = apperr.New(apperr.Unavailable, "shutting_down", "the server is shutting down; reconnect shortly")

// Serve is the live feed of ctx's tenant for ctx's caller: it subscribes to the
// tenant's notifications, calls upgrade to finish the WebSocket handshake, replays the
// notifications after after (when after > 0), then forwards live ones until the client
// leaves, falls behind, stops answering pings, its credential expires or Stop closes it.
// It returns, before upgrading, caller.ErrUnauthenticated without a caller and an
// Unavailable error (shutting_down) once Stop has begun; an upgrade that fails has
// answered the client itself, and Serve returns nil.
func (s *Service) Serve(ctx context.Context, after int64, upgrade func() (*websocket.Conn, error)) error {
	sc, c, err := tenantdb.ScopeAndCaller(ctx)
	if err != nil {
		return err
	}
	// The feed counts in the service's group, so that Stop waits for it, and lives in the
	// group's context: a hijacked connection outlives its request's context.
	ended := make(chan struct{})
	defer close(ended)
	if !s.run.Go(func(context.Context) { <-ended }) {
		return errShuttingDown
	}
	// Subscribe before replaying so nothing published in between is missed; duplicates
	// are skipped by id in pump.
	sub := s.hub.subscribe(sc.Tenant.ID, s.cfg.SendBuffer)
	defer s.hub.unsubscribe(sc.Tenant.ID, sub)
	conn, err := upgrade()
	if err != nil {
		return nil
	}
	defer conn.Close()
	s.log.Info("websocket connected", "tenant", sc.Tenant.Slug, "user_id", c.ID)
	defer s.log.Info("websocket closed", "tenant", sc.Tenant.Slug, "user_id", c.ID)
	feed := s.run.Context()
	closed := s.readControl(conn)
	replayed, ok := s.replay(feed, conn, sc, after)
	if ok {
		s.pump(feed, conn, sub, closed, replayed, c.Expires)
	}
	return nil
}

// readControl sets up the connection's read side and returns a channel closed when the
// client leaves. The reader only handles control frames (pongs); any error (close,
// timeout, oversized message) ends the connection.
func (s *Service) readControl(conn *websocket.Conn) <-chan struct{} {
	conn.SetReadLimit(maxClientMessage)
	_ = conn.SetReadDeadline(time.Now().Add(2 * s.cfg.PingInterval))
	conn.SetPongHandler(func(string) error {
		return conn.SetReadDeadline(time.Now().Add(2 * s.cfg.PingInterval))
	})
	closed := make(chan struct{})
	go func() {
		defer close(closed)
		for {
			if _, _, err := conn.NextReader(); err != nil {
				return
			}
		}
	}()
	return closed
}

// write sends one message, bounded by the write timeout, and reports whether it went.
func (s *Service) write(conn *websocket.Conn, data []byte) bool {
	_ = conn.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout))
	return conn.WriteMessage(websocket.TextMessage, data) == nil
}

// closeWith sends a close frame with code and reason.
func closeWith(conn *websocket.Conn, code int, reason string) {
	_ = conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), time.Now().Add(time.Second))
}

// replay sends the stored notifications after after (none when after is 0) and returns
// their ids, so that their live copies (published between subscribe and the replay's
// read) are not sent twice. It reports false when the connection must end.
func (s *Service) replay(ctx context.Context, conn *websocket.Conn, sc *tenantdb.Scope, after int64) (map[int64]bool, bool) {
	if after <= 0 {
		return nil, true
	}
	var missed []Message
	err := sc.Read(ctx, func(db pool.DB) error {
		var err error
		missed, err = since(ctx, db, after, s.cfg.ReplayLimit)
		return err
	})
	if err != nil {
		s.log.Error("replaying notifications", "tenant", sc.Tenant.Slug, "error", err)
		closeWith(conn, websocket.CloseInternalServerErr, "replay failed")
		return nil, false
	}
	replayed := make(map[int64]bool, len(missed))
	for _, m := range missed {
		b, _ := json.Marshal(m)
		if !s.write(conn, b) {
			return nil, false
		}
		replayed[m.ID] = true
	}
	return replayed, true
}

// pump forwards live notifications and keeps the connection alive with pings until the
// client leaves (closed), falls behind, stops answering, its credential expires or ctx
// ends. Live messages are forwarded whatever their id, except one copy of each replayed
// one: two notifications may commit in the opposite order of their ids, and skipping
// "older" ids would lose one.
func (s *Service) pump(ctx context.Context, conn *websocket.Conn, sub *subscriber, closed <-chan struct{}, replayed map[int64]bool, expires time.Time) {
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
			closeWith(conn, CloseTokenExpired, "token expired; reconnect with a fresh token and after_id")
			return
		case <-ctx.Done():
			closeWith(conn, websocket.CloseGoingAway, "server shutting down")
			return
		case <-ping.C:
			_ = conn.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout))
			if err := conn.WriteControl(websocket.PingMessage, nil, time.Now().Add(s.cfg.WriteTimeout)); err != nil {
				return
			}
		case payload, ok := <-sub.ch:
			if !ok {
				// Dropped for falling behind: the client reconnects with after_id.
				closeWith(conn, websocket.ClosePolicyViolation, "too slow; reconnect with after_id")
				return
			}
			var head struct {
				ID int64 `json:"id"`
			}
			if len(replayed) > 0 && json.Unmarshal(payload, &head) == nil && replayed[head.ID] {
				delete(replayed, head.ID) // already sent by the replay; one live copy at most
				continue
			}
			if !s.write(conn, payload) {
				return
			}
		}
	}
}
