package notify

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"math"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"

	"github.com/tenantplane/tenantplane/apperr"
	"github.com/tenantplane/tenantplane/dataplane/caller"
	"github.com/tenantplane/tenantplane/dataplane/pool"
	"github.com/tenantplane/tenantplane/dataplane/tenantdb"
)

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

// Close codes the server ends a WebSocket with, besides the standard ones (1001 going
// away at shutdown, 1008 too slow, 1011 a failed database read: reconnect with
// after_id).
const (
	// CloseTokenExpired: the access token that opened the socket expired; reconnect
	// with a fresh token and after_id.
	CloseTokenExpired = 4401
	// CloseNotAllowed: the socket's user was deactivated, deleted or had their tokens
	// revoked, or its tenant is no longer served.
	CloseNotAllowed = 4403
)

// LiveOnly is the after argument of Serve for a feed of what commits after the
// handshake, without replay.
const LiveOnly = -1

var (
	errShuttingDown = apperr.New(apperr.Unavailable, "shutting_down", "the server is shutting down; reconnect shortly")
	errTooManyConns = apperr.New(apperr.RateLimited, "too_many_connections", "too many open websockets from this address")
)

// Serve is the live feed of ctx's tenant for ctx's caller, connected from clientIP: it
// subscribes to the tenant's notifications, calls upgrade to finish the WebSocket
// handshake, replays the stored notifications after after (none when after is
// LiveOnly; after 0: all), then sends live ones, in id order and each once, and takes
// notifications the caller sends (see the package doc), until the client leaves, falls
// behind, stops answering pings, its credential expires or is revoked, its tenant stops
// being served, or Stop closes it. It returns, before upgrading, caller.ErrUnauthenticated
// without a caller, a RateLimited error (too_many_connections) when clientIP has
// Config.MaxConnsPerIP sockets open, an Unavailable error (shutting_down) once Stop has
// begun, and the database's errors reading where a live feed starts; an upgrade that
// fails has answered the client itself, and Serve returns nil.
func (s *Service) Serve(ctx context.Context, clientIP string, after int64, upgrade func() (*websocket.Conn, error)) error {
	sc, c, err := tenantdb.ScopeAndCaller(ctx)
	if err != nil {
		return err
	}
	if !s.acquireConn(clientIP) {
		return errTooManyConns
	}
	defer s.releaseConn(clientIP)
	// The feed counts in the service's group, so that Stop waits for it, and lives in the
	// group's context: a hijacked connection outlives its request's context.
	ended := make(chan struct{})
	defer close(ended)
	if !s.run.Go(func(context.Context) { <-ended }) {
		return errShuttingDown
	}
	// Subscribe before reading the starting point so nothing committed after it is missed;
	// what both bring is sent once, by id.
	sub := s.hub.subscribe(sc.Tenant.ID, sc.Tenant.Slug, c.ID, s.cfg.SendBuffer)
	defer s.hub.unsubscribe(sc.Tenant.ID, sub)
	// A live feed starts at the newest id; so does one resuming from an id the tenant
	// never reached (a stale client), which would otherwise skip what comes next.
	var newest int64
	err = sc.Read(ctx, func(db pool.DB) error {
		newest, err = lastID(ctx, db)
		return err
	})
	if err != nil {
		return err
	}
	if after < 0 || after > newest {
		after = newest
	}
	conn, err := upgrade()
	if err != nil {
		return nil
	}
	defer conn.Close()
	s.log.Info("websocket connected", "tenant", sc.Tenant.Slug, "user_id", c.ID)
	defer s.log.Info("websocket closed", "tenant", sc.Tenant.Slug, "user_id", c.ID)
	f := &feed{s: s, conn: conn, sc: sc, c: c, sub: sub, last: after, done: make(chan struct{})}
	s.cfg.Metrics.WebSocketOpened()
	defer func() { s.cfg.Metrics.WebSocketClosed(f.dropped) }()
	f.run(s.run.Context())
	return nil
}

// feed is one open WebSocket: what it sent so far is every notification up to last.
type feed struct {
	s    *Service
	conn *websocket.Conn
	sc   *tenantdb.Scope
	c    *caller.Caller
	sub  *subscriber
	last int64
	done chan struct{} // closed when run returns: the reader stops handing frames
	// dropped is set when the feed ended for falling behind.
	dropped bool
}

// run replays, then forwards live notifications and the client's frames, and keeps the
// connection alive with pings, until it must end.
func (f *feed) run(ctx context.Context) {
	defer close(f.done)
	frames, closed := f.read()
	if !f.catchUp(ctx, math.MaxInt64) {
		return
	}
	ping := time.NewTicker(f.s.cfg.PingInterval)
	defer ping.Stop()
	var expired <-chan time.Time
	if !f.c.Expires.IsZero() {
		timer := time.NewTimer(f.c.Expires.Sub(f.s.now()))
		defer timer.Stop()
		expired = timer.C
	}
	for {
		select {
		case <-closed:
			return
		case <-expired:
			f.close(CloseTokenExpired, "token expired; reconnect with a fresh token and after_id")
			return
		case <-ctx.Done():
			f.close(websocket.CloseGoingAway, "server shutting down")
			return
		case <-f.sub.end:
			f.close(f.s.hub.ending(f.sub))
			return
		case <-ping.C:
			if err := f.conn.WriteControl(websocket.PingMessage, nil, time.Now().Add(f.s.cfg.WriteTimeout)); err != nil {
				return
			}
		case <-f.sub.kick:
			if !f.catchUp(ctx, math.MaxInt64) {
				return
			}
		case m, ok := <-f.sub.ch:
			if !ok {
				if code, reason := f.s.hub.ending(f.sub); code != 0 {
					f.close(code, reason)
					return
				}
				// Dropped for falling behind: the client reconnects with after_id.
				f.dropped = true
				f.close(websocket.ClosePolicyViolation, "too slow; reconnect with after_id")
				return
			}
			if !f.live(ctx, m) {
				return
			}
		case fr := <-frames:
			if !f.frame(ctx, fr) {
				return
			}
		}
	}
}

// live sends a live notification unless it was sent already; when ids are missing
// before it (the fan-out lost them) it first reads them from the database. It reports
// false when the connection must end.
func (f *feed) live(ctx context.Context, m live) bool {
	if m.id <= f.last {
		return true // sent already (replayed, caught up or a duplicate)
	}
	if m.id > f.last+1 && !f.catchUp(ctx, m.id-1) {
		return false
	}
	if m.id <= f.last {
		return true
	}
	if !f.write(m.payload) {
		return false
	}
	f.s.cfg.Metrics.Delivered(1)
	f.last = m.id
	return true
}

// catchUp sends the stored notifications after the last one sent, up to id upto, in
// pages of Config.ReplayLimit. Ids commit in order, so once id N is known to be stored
// every smaller one is readable. It reports false when the connection must end.
func (f *feed) catchUp(ctx context.Context, upto int64) bool {
	for f.last < upto {
		var page []Message
		err := f.sc.Read(ctx, func(db pool.DB) error {
			var err error
			page, err = since(ctx, db, f.last, upto, f.s.cfg.ReplayLimit)
			return err
		})
		if err != nil {
			if ctx.Err() == nil {
				f.s.log.Error("reading missed notifications", "tenant", f.sc.Tenant.Slug, "error", err)
				f.close(websocket.CloseInternalServerErr, "replay failed; reconnect with after_id")
			}
			return false
		}
		for _, m := range page {
			b, _ := json.Marshal(m)
			if !f.write(b) {
				return false
			}
			f.last = m.ID
		}
		f.s.cfg.Metrics.Delivered(len(page))
		if len(page) < f.s.cfg.ReplayLimit {
			return true
		}
	}
	return true
}

// frame is one message a client sent.
type frame struct {
	text bool
	data []byte
}

// read sets up the connection's read side: it returns the client's data frames, and a
// channel closed when the client leaves. Pongs extend the read deadline; any read
// error (close, timeout, a frame over MaxRequest) ends the connection.
func (f *feed) read() (<-chan frame, <-chan struct{}) {
	conn, wait := f.conn, 2*f.s.cfg.PingInterval
	conn.SetReadLimit(MaxRequest)
	_ = conn.SetReadDeadline(time.Now().Add(wait))
	conn.SetPongHandler(func(string) error { return conn.SetReadDeadline(time.Now().Add(wait)) })
	frames, closed := make(chan frame), make(chan struct{})
	go func() {
		defer close(closed)
		for {
			kind, data, err := conn.ReadMessage()
			if err != nil {
				return
			}
			_ = conn.SetReadDeadline(time.Now().Add(wait))
			select {
			case frames <- frame{text: kind == websocket.TextMessage, data: data}:
			case <-f.done:
				return
			}
		}
	}()
	return frames, closed
}

// errorFrame is what the server answers a frame it refuses.
type errorFrame struct {
	Type  string `json:"type"`
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// frame stores and fans out the notification a client sent, or answers an error frame.
// It reports false when the connection must end.
func (f *feed) frame(ctx context.Context, fr frame) bool {
	err := f.send(ctx, fr)
	if err == nil {
		return true
	}
	e := errorFrame{Type: "error"}
	var de *apperr.Error
	if errors.As(err, &de) && de.Kind != apperr.Internal {
		e.Error.Code, e.Error.Message = de.Code, de.Message
	} else {
		f.s.log.Error("notification sent over a websocket", "tenant", f.sc.Tenant.Slug, "error", err)
		e.Error.Code, e.Error.Message = "internal", "internal error"
	}
	b, _ := json.Marshal(e)
	return f.write(b)
}

var errBadFrame = apperr.New(apperr.Invalid, "invalid_frame",
	`send a JSON text frame {"title": "...", "body": "..."} or {"message": "..."}`)

// send decodes a client's frame and sends its notification as the feed's user, checked
// as stored now (a demoted admin may no longer send).
func (f *feed) send(ctx context.Context, fr frame) error {
	if !fr.text {
		return errBadFrame
	}
	var in struct {
		Title   *string `json:"title"`
		Body    string  `json:"body"`
		Message *string `json:"message"`
	}
	dec := json.NewDecoder(bytes.NewReader(fr.data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&in); err != nil || dec.More() || (in.Title == nil) == (in.Message == nil) {
		return errBadFrame
	}
	if !f.c.Admin {
		return errNotAdmin
	}
	title, body := "", in.Body
	if in.Title != nil {
		title = *in.Title
	} else {
		if in.Body != "" {
			return errBadFrame
		}
		title, body = fromMessage(*in.Message)
	}
	_, err := f.s.send(ctx, f.sc, f.c.ID, title, body)
	return err
}

// fromMessage maps the Django app's {"message": m} to a notification: the first line of
// m, cut to MaxTitle characters, is the title; the body is m when it did not fit in
// the title, else empty.
func fromMessage(m string) (title, body string) {
	title, _, _ = strings.Cut(strings.TrimSpace(m), "\n")
	title = strings.TrimSpace(title)
	if utf8.RuneCountInString(title) > MaxTitle {
		title = string([]rune(title)[:MaxTitle])
	}
	if title != strings.TrimSpace(m) {
		body = m
	}
	return title, body
}

// write sends one message, bounded by the write timeout, and reports whether it went.
func (f *feed) write(data []byte) bool {
	_ = f.conn.SetWriteDeadline(time.Now().Add(f.s.cfg.WriteTimeout))
	return f.conn.WriteMessage(websocket.TextMessage, data) == nil
}

// close sends a close frame with code and reason.
func (f *feed) close(code int, reason string) {
	_ = f.conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), time.Now().Add(time.Second))
}
