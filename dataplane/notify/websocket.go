package notify

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"math"
	"net/url"
	"strings"
	"sync"
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
// handshake and hands the connection to a feed running in the service's background
// (Stop waits for it), then returns. The feed replays the stored notifications after
// after (none when after is LiveOnly; after 0: all), then sends live ones, in id order
// and each once, and takes notifications the caller sends (see the package doc), until
// the client leaves, falls behind, stops answering pings, its credential expires or is
// revoked, its tenant stops being served, or Stop closes it. Serve returns, before
// upgrading, caller.ErrUnauthenticated without a caller, a RateLimited error
// (too_many_connections) when clientIP has Config.MaxConnsPerIP sockets open, an
// Unavailable error (shutting_down) once Stop has begun, and the database's errors
// reading where a live feed starts; an upgrade that fails has answered the client
// itself, and Serve returns nil.
func (s *Service) Serve(ctx context.Context, clientIP string, after int64, upgrade func() (*websocket.Conn, error)) error {
	sc, c, err := tenantdb.ScopeAndCaller(ctx)
	if err != nil {
		return err
	}
	if !s.acquireConn(clientIP) {
		return errTooManyConns
	}
	// The feed's goroutine starts now, so that Stop waits for the handshake too, and
	// becomes the connection's reader once it is upgraded: one goroutine per open socket.
	// It lives in the group's context: a hijacked connection outlives its request's.
	handoff := make(chan *feed, 1)
	if !s.run.Go(func(ctx context.Context) {
		if f := <-handoff; f != nil {
			f.run(ctx)
		}
	}) {
		s.releaseConn(clientIP)
		return errShuttingDown
	}
	var f *feed
	defer func() { handoff <- f }() // nil: the handshake did not get that far
	// Subscribe before reading the starting point so nothing committed after it is missed;
	// what both bring is sent once, by id.
	sub := s.hub.subscribe(sc.Tenant.ID, sc.Tenant.Slug, c.ID, s.cfg.SendBuffer)
	abort := func() {
		s.hub.unsubscribe(sc.Tenant.ID, sub)
		s.releaseConn(clientIP)
	}
	// A live feed starts at the newest id; so does one resuming from an id the tenant
	// never reached (a stale client), which would otherwise skip what comes next.
	var newest int64
	err = sc.Read(ctx, func(db pool.DB) error {
		newest, err = lastID(ctx, db)
		return err
	})
	if err != nil {
		abort()
		return err
	}
	if after < 0 || after > newest {
		after = newest
	}
	conn, err := upgrade()
	if err != nil {
		abort()
		return nil
	}
	f = &feed{s: s, conn: conn, sc: sc, c: c, ip: clientIP, sub: sub, last: after}
	return nil
}

// feed is one open WebSocket. Its goroutine reads the client's frames; its writer runs
// only while the subscriber holds something to write (see subscriber), and is the only
// one writing data frames: what it sent so far is every notification up to last.
type feed struct {
	s    *Service
	conn *websocket.Conn
	sc   *tenantdb.Scope
	c    *caller.Caller
	ip   string
	sub  *subscriber
	ctx  context.Context // the group's: the writer's database reads end with it
	// last and dropped are the writer's: dropped is set when the feed ended for falling
	// behind.
	last    int64
	dropped bool
	// writers counts the running writer (at most one), for run to wait for it.
	writers sync.WaitGroup
	// ping and expiry are the timers that ask for a ping and end the socket when its
	// token expires; set under sub.mu.
	ping, expiry *time.Timer
}

// run serves the connection until it ends: it starts the writer on the replay, keeps
// the connection alive with pings and reads the client's frames. Pongs extend the read
// deadline; any read error (close, timeout, a frame over MaxRequest) ends the
// connection, and so does the writer closing it.
func (f *feed) run(ctx context.Context) {
	s, sub, tenantID := f.s, f.sub, f.sc.Tenant.ID
	f.ctx = ctx
	s.log.Info("websocket connected", "tenant", f.sc.Tenant.Slug, "user_id", f.c.ID)
	s.cfg.Metrics.WebSocketOpened()
	defer func() {
		sub.mu.Lock()
		sub.closed = true // no writer starts from now on
		f.ping.Stop()
		if f.expiry != nil {
			f.expiry.Stop()
		}
		sub.mu.Unlock()
		s.hub.unsubscribe(tenantID, sub)
		_ = f.conn.Close()
		f.writers.Wait()
		s.releaseConn(f.ip)
		s.cfg.Metrics.WebSocketClosed(f.dropped)
		s.log.Info("websocket closed", "tenant", f.sc.Tenant.Slug, "user_id", f.c.ID)
	}()

	conn, wait := f.conn, 2*s.cfg.PingInterval
	conn.SetReadLimit(MaxRequest)
	_ = conn.SetReadDeadline(time.Now().Add(wait))
	conn.SetPongHandler(func(string) error { return conn.SetReadDeadline(time.Now().Add(wait)) })

	sub.mu.Lock()
	sub.wake = f.startWriter
	sub.kick = true // the replay comes first
	f.ping = time.AfterFunc(s.cfg.PingInterval, f.pingDue)
	if !f.c.Expires.IsZero() {
		f.expiry = time.AfterFunc(f.c.Expires.Sub(s.now()), func() {
			s.hub.end(tenantID, func(x *subscriber) bool { return x == sub },
				CloseTokenExpired, "token expired; reconnect with a fresh token and after_id")
		})
	}
	sub.startLocked()
	sub.mu.Unlock()
	if ctx.Err() != nil { // subscribed after Stop ended the others
		s.hub.end(tenantID, func(x *subscriber) bool { return x == sub }, websocket.CloseGoingAway, "server shutting down")
	}

	for {
		kind, data, err := conn.ReadMessage()
		if err != nil {
			return
		}
		_ = conn.SetReadDeadline(time.Now().Add(wait))
		f.frame(ctx, frame{text: kind == websocket.TextMessage, data: data})
	}
}

// startWriter runs the writer; sub.mu is held.
func (f *feed) startWriter() {
	f.writers.Add(1)
	go func() {
		defer f.writers.Done()
		f.write()
	}()
}

// pingDue asks the writer for a ping and arms the next one.
func (f *feed) pingDue() {
	f.sub.mu.Lock()
	defer f.sub.mu.Unlock()
	if f.sub.closed {
		return
	}
	f.sub.ping = true
	f.sub.startLocked()
	f.ping.Reset(f.s.cfg.PingInterval)
}

// write writes what the subscriber holds, in this order: the close frame when the
// connection must end, a catch-up from the database, replies to the client's frames,
// live notifications, a ping; it returns once nothing is left, or closes the connection
// when it must end.
func (f *feed) write() {
	sub := f.sub
	for {
		ok := true
		sub.mu.Lock()
		switch {
		case sub.endCode != 0 || sub.slow:
			code, reason := sub.endCode, sub.endReason
			if code == 0 {
				// Dropped for falling behind: the client reconnects with after_id.
				f.dropped = true
				code, reason = websocket.ClosePolicyViolation, "too slow; reconnect with after_id"
			}
			sub.mu.Unlock()
			f.close(code, reason)
			ok = false
		case sub.kick:
			sub.kick = false
			sub.mu.Unlock()
			ok = f.catchUp(f.ctx, math.MaxInt64)
		case len(sub.replies) > 0:
			b := sub.replies[0]
			sub.replies = sub.replies[1:]
			sub.mu.Unlock()
			ok = f.send(b)
		case len(sub.queue) > 0:
			m := sub.queue[0]
			sub.queue[0] = live{}
			sub.queue = sub.queue[1:]
			sub.mu.Unlock()
			ok = f.live(f.ctx, m)
		case sub.ping:
			sub.ping = false
			sub.mu.Unlock()
			ok = f.conn.WriteControl(websocket.PingMessage, nil, time.Now().Add(f.s.cfg.WriteTimeout)) == nil
		default:
			// Idle: let go of the buffers until there is something to write again.
			sub.queue, sub.replies = nil, nil
			sub.writing = false
			sub.mu.Unlock()
			return
		}
		if !ok {
			sub.mu.Lock()
			sub.closed, sub.writing = true, false
			sub.mu.Unlock()
			_ = f.conn.Close() // ends the reader
			return
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
	if m.prepared != nil {
		_ = f.conn.SetWriteDeadline(time.Now().Add(f.s.cfg.WriteTimeout))
		if f.conn.WritePreparedMessage(m.prepared) != nil {
			return false
		}
	} else if !f.send(m.payload) {
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
			if !f.send(b) {
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

// errorFrame is what the server answers a frame it refuses.
type errorFrame struct {
	Type  string `json:"type"`
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// frame stores and fans out the notification a client sent, or answers an error frame.
func (f *feed) frame(ctx context.Context, fr frame) {
	err := f.post(ctx, fr)
	if err == nil {
		return
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
	f.reply(b)
}

// reply queues an error frame for the writer. A client that sends frames faster than
// it reads the answers is dropped as too slow once Config.SendBuffer replies wait.
func (f *feed) reply(b []byte) {
	sub := f.sub
	sub.mu.Lock()
	defer sub.mu.Unlock()
	if len(sub.replies) >= sub.size {
		sub.slow = true
	} else {
		sub.replies = append(sub.replies, b)
	}
	sub.startLocked()
}

var errBadFrame = apperr.New(apperr.Invalid, "invalid_frame",
	`send a JSON text frame {"title": "...", "body": "..."} or {"message": "..."}`)

// post decodes a client's frame and sends its notification as the feed's user, checked
// as stored now (a demoted admin may no longer send).
func (f *feed) post(ctx context.Context, fr frame) error {
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

// send writes one message, bounded by the write timeout, and reports whether it went.
func (f *feed) send(data []byte) bool {
	_ = f.conn.SetWriteDeadline(time.Now().Add(f.s.cfg.WriteTimeout))
	return f.conn.WriteMessage(websocket.TextMessage, data) == nil
}

// close sends a close frame with code and reason.
func (f *feed) close(code int, reason string) {
	_ = f.conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, reason), time.Now().Add(time.Second))
}
