package notify

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"math"
	"net"
	"net/url"
	"strings"
	"sync"
	"syscall"
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
	f = &feed{s: s, conn: conn, raw: conn.NetConn(), sc: sc, c: c, ip: clientIP, sub: sub, last: after}
	if sc, ok := f.raw.(syscall.Conn); ok {
		f.rc, _ = sc.SyscallConn()
	}
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
	raw  net.Conn        // conn's network connection, for the writer's framed notifications
	rc   syscall.RawConn // raw's, for the fan-out workers' writes (nil: not a socket)
	// rest is what a fan-out worker's write left for the feed's own writer.
	rest net.Buffers
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
	// The answers to the client's pings and close go through the writer like every
	// other frame: the writer writes frames to the connection itself, and a frame
	// written by the reader could land inside one the socket took only part of.
	conn.SetPingHandler(func(data string) error {
		sub.mu.Lock()
		defer sub.mu.Unlock()
		sub.pong, sub.pongData = true, []byte(data) // the latest ping is the one answered
		sub.startLocked()
		return nil
	})
	conn.SetCloseHandler(func(code int, _ string) error {
		sub.mu.Lock()
		idle := !sub.writing && !sub.closed
		sub.closed = true // the connection ends: no writer starts from now on
		sub.mu.Unlock()
		if idle { // else the client goes without the echo: a writer holds the connection
			f.close(code, "")
		}
		return nil
	})

	sub.mu.Lock()
	sub.wake, sub.drain = f.startWriter, f.drain
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

// write writes what the subscriber holds, in this order: what a worker's write left,
// the close frame when the connection must end, a catch-up from the database, replies
// to the client's frames, live notifications, the answer to the client's ping, a ping;
// it returns once nothing is left, or closes the connection when it must end.
func (f *feed) write() {
	sub := f.sub
	ok := f.flush(&f.rest, 0, f.s.cfg.WriteTimeout) == nil
	for {
		if !ok {
			sub.mu.Lock()
			f.abortLocked()
			sub.mu.Unlock()
			return
		}
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
			// Everything queued goes out together: notifications that arrive while
			// earlier ones are being fanned out share one syscall per socket.
			ms := sub.queue
			sub.queue = nil
			sub.mu.Unlock()
			ok = f.live(f.ctx, ms)
		case sub.pong:
			data := sub.pongData
			sub.pong, sub.pongData = false, nil
			sub.mu.Unlock()
			ok = f.conn.WriteControl(websocket.PongMessage, data, time.Now().Add(f.s.cfg.WriteTimeout)) == nil
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
	}
}

// drain is a fan-out worker's turn at the feed: it writes the live notifications queued
// when they are all there is to write and follow the last one sent, in one write that
// never waits (scratch is the worker's buffer for it; drain returns it, grown). All
// else goes to the feed's own writer goroutine: a catch-up, a reply, a ping or the end,
// and the rest of a write the client's socket had no room for, so that a slow client
// never holds a worker.
func (f *feed) drain(scratch []byte) []byte {
	sub := f.sub
	sub.mu.Lock()
	if !sub.onlyLiveLocked() || sub.closed || f.rc == nil {
		sub.handOffLocked()
		sub.mu.Unlock()
		return scratch
	}
	ms := sub.queue
	sub.queue = nil
	sub.mu.Unlock()

	frames, n, gap := f.frames(nil, ms, false)
	b := scratch[:0]
	for _, fr := range frames {
		b = append(b, fr...)
	}
	wrote, err := writeNow(f.rc, b)
	if err == nil {
		f.s.cfg.Metrics.Delivered(n) // what the socket had no room for, the feed's writer finishes
	}
	sub.mu.Lock()
	defer sub.mu.Unlock()
	switch {
	case err != nil:
		f.abortLocked()
	case wrote < len(b) || len(gap) > 0:
		if wrote < len(b) {
			f.rest = net.Buffers{bytes.Clone(b[wrote:])}
		}
		sub.queue = append(gap, sub.queue...)
		sub.handOffLocked()
	case sub.idleLocked():
		sub.writing = false
	case !sub.onlyLiveLocked() || !sub.ready.add(sub):
		sub.handOffLocked()
	}
	return b
}

// abortLocked ends the connection after a failed write by the feed's holder, which lets
// go of it; no writer starts again. sub.mu is held.
func (f *feed) abortLocked() {
	f.sub.closed, f.sub.writing = true, false
	_ = f.conn.Close() // ends the reader
}

// writeNow writes as much of b to the connection as its socket's buffer takes, without
// waiting for room.
func writeNow(rc syscall.RawConn, b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	var n int
	var werr error
	err := rc.Write(func(fd uintptr) bool {
		n, werr = syscall.Write(int(fd), b)
		return true // done either way: never wait for the socket
	})
	switch {
	case err != nil:
		return 0, err
	case werr == syscall.EAGAIN || werr == syscall.EINTR:
		return 0, nil
	case werr != nil:
		return 0, werr
	}
	return n, nil
}

// live sends the live notifications of ms not sent already, those that follow each
// other in one write; when ids are missing before one (the fan-out lost them) it first
// reads them from the database. It reports false when the connection must end.
func (f *feed) live(ctx context.Context, ms []live) bool {
	for gapOK := false; len(ms) > 0; gapOK = true {
		out, n, rest := f.frames(nil, ms, gapOK)
		if f.flush(&out, n, f.s.cfg.WriteTimeout) != nil {
			return false
		}
		if ms = rest; len(ms) > 0 && !f.catchUp(ctx, ms[0].id-1) {
			return false
		}
	}
	return true
}

// frames appends to out the frames of the notifications of ms not sent yet and counts
// them as sent (last), stopping at the first one that leaves ids missing after the last
// sent, unless it is the first of ms and gapOK; rest is ms from there.
func (f *feed) frames(out net.Buffers, ms []live, gapOK bool) (_ net.Buffers, n int, rest []live) {
	for i, m := range ms {
		if m.id <= f.last {
			continue // sent already (replayed, caught up or a duplicate)
		}
		if m.id > f.last+1 && !(i == 0 && gapOK) {
			return out, n, ms[i:]
		}
		out = append(out, m.frame)
		n++
		f.last = m.id
	}
	return out, n, nil
}

// flush writes out, the frames of n notifications, within wait.
func (f *feed) flush(out *net.Buffers, n int, wait time.Duration) error {
	if len(*out) == 0 {
		return nil
	}
	_ = f.raw.SetWriteDeadline(time.Now().Add(wait))
	if _, err := out.WriteTo(f.raw); err != nil {
		return err
	}
	f.s.cfg.Metrics.Delivered(n)
	return nil
}

// textFrame frames payload as one unfragmented text message from a server (RFC 6455
// §5.2: unmasked; compression is never negotiated), so that a fanned-out notification
// is framed once for every socket and several go out in one write. They are written to
// the connection beside gorilla's own writes (replies, control frames) by whoever holds
// the feed, a worker or the feed's writer, one at a time, so frames never interleave.
func textFrame(payload []byte) []byte {
	n := len(payload)
	var b []byte
	switch {
	case n < 126:
		b = append(make([]byte, 0, 2+n), 0x81, byte(n))
	case n <= math.MaxUint16:
		b = append(make([]byte, 0, 4+n), 0x81, 126, byte(n>>8), byte(n))
	default:
		b = append(make([]byte, 0, 10+n), 0x81, 127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	return append(b, payload...)
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
