package notify

import "sync"

// live is one published notification as the hub hands it to a feed: its id (0 when the
// payload had none) and the JSON to send, framed once for every socket (textFrame).
type live struct {
	id    int64
	frame []byte
}

// hub delivers published payloads to the WebSocket subscribers of this process.
type hub struct {
	// mu guards subs; it is taken before any subscriber's mu.
	mu   sync.Mutex
	subs map[string]map[*subscriber]struct{} // tenant id → subscribers
	// ready are the subscribers whose live notifications the fan-out workers write.
	ready ready
}

// subscriber is one WebSocket connection's mailbox: what its feed must write next. The
// hub fills it without blocking and wakes the feed's writer, which runs only while
// there is something to write (an idle socket has no writer). A subscriber that falls
// behind by size messages is dropped rather than slowing everyone else.
type subscriber struct {
	userID int64
	slug   string
	size   int // most live messages queued before the subscriber is dropped

	// mu guards the fields below.
	mu sync.Mutex
	// queue are the live messages not written yet.
	queue []live
	// replies are the error frames answering the client's frames, not written yet.
	replies [][]byte
	// kick is set when the feed must catch up from the database (at the start, and
	// when the fan-out resubscribed: something may have been missed); ping when a
	// ping is due; pong when the client's ping awaits its answer, pongData.
	kick, ping, pong bool
	pongData         []byte
	// gone is set once the hub removed the subscriber; slow when it was dropped for
	// falling behind; endCode and endReason when the connection must end (user
	// revoked, tenant no longer served, token expired, shutdown), for the close frame.
	gone, slow bool
	endCode    int
	endReason  string
	// wake starts the feed's own writer goroutine and drain is a fan-out worker's turn
	// at the feed (both nil until the feed runs); writing is set while one of them
	// holds the feed, closed once the connection is closing and no writer may start.
	wake            func()
	drain           func(scratch []byte) []byte
	writing, closed bool
	ready           *ready
}

func newHub() *hub {
	h := &hub{subs: map[string]map[*subscriber]struct{}{}}
	h.ready.cond = sync.NewCond(&h.ready.mu)
	return h
}

// subscribe registers a mailbox of the given size for the tenant's notifications, for
// user userID of the tenant slug.
func (h *hub) subscribe(tenantID, slug string, userID int64, size int) *subscriber {
	s := &subscriber{userID: userID, slug: slug, size: size, ready: &h.ready}
	h.mu.Lock()
	defer h.mu.Unlock()
	m := h.subs[tenantID]
	if m == nil {
		m = map[*subscriber]struct{}{}
		h.subs[tenantID] = m
	}
	m[s] = struct{}{}
	return s
}

// unsubscribe removes the mailbox; safe to call after the hub dropped it.
func (h *hub) unsubscribe(tenantID string, s *subscriber) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.removeLocked(tenantID, s)
}

func (h *hub) removeLocked(tenantID string, s *subscriber) {
	m := h.subs[tenantID]
	if _, ok := m[s]; !ok {
		return
	}
	delete(m, s)
	if len(m) == 0 {
		delete(h.subs, tenantID)
	}
	s.mu.Lock()
	s.gone = true
	s.mu.Unlock()
}

// deliver hands payload to every subscriber of the tenant without blocking; slow
// subscribers are dropped. It returns how many were dropped.
func (h *hub) deliver(tenantID string, m live) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	dropped := 0
	for s := range h.subs[tenantID] {
		if !s.push(m) {
			h.removeLocked(tenantID, s)
			dropped++
		}
	}
	return dropped
}

// push queues m and wakes the writer; false when the queue is full: the subscriber is
// then marked slow, and its feed ends it.
func (s *subscriber) push(m live) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.queue) >= s.size {
		s.slow = true
		s.startLocked()
		return false
	}
	s.queue = append(s.queue, m)
	s.startLocked()
	return true
}

// startLocked starts the feed's writer unless one runs or the connection is closing:
// a fan-out worker when live notifications are all there is to write and the workers
// run, else the feed's own goroutine; s.mu is held.
func (s *subscriber) startLocked() {
	if s.writing || s.closed || s.wake == nil {
		return
	}
	s.writing = true
	if !s.onlyLiveLocked() || s.drain == nil || !s.ready.add(s) {
		s.wake()
	}
}

// onlyLiveLocked reports whether the subscriber holds nothing to write but live
// notifications; s.mu is held.
func (s *subscriber) onlyLiveLocked() bool {
	return s.endCode == 0 && !s.slow && !s.kick && !s.ping && !s.pong && len(s.replies) == 0
}

// handOffLocked gives the feed, held by a worker, to its own writer goroutine, unless
// the connection is closing; s.mu is held.
func (s *subscriber) handOffLocked() {
	if s.closed {
		s.writing = false
		return
	}
	s.wake()
}

// idleLocked reports whether the subscriber holds nothing to write; s.mu is held.
func (s *subscriber) idleLocked() bool { return s.onlyLiveLocked() && len(s.queue) == 0 }

// ready is the fan-out workers' run queue: the subscribers with live notifications to
// write. A few workers (GOMAXPROCS) take turns at them instead of a goroutine per
// socket, so a notification to many sockets does not flood the scheduler ahead of the
// requests that post the next ones, and a socket reached after several arrived gets
// them in one write.
type ready struct {
	mu      sync.Mutex
	cond    *sync.Cond
	queue   []*subscriber
	running bool
}

// add queues s for a worker; false when the workers do not run.
func (r *ready) add(s *subscriber) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.running {
		return false
	}
	r.queue = append(r.queue, s)
	r.cond.Signal()
	return true
}

// start lets add queue subscribers; the caller then runs work in n goroutines.
func (r *ready) start() {
	r.mu.Lock()
	r.running = true
	r.mu.Unlock()
}

// work takes subscribers from the queue and drains them until stop.
func (r *ready) work() {
	var scratch []byte
	for {
		r.mu.Lock()
		for len(r.queue) == 0 && r.running {
			r.cond.Wait()
		}
		if !r.running {
			r.mu.Unlock()
			return
		}
		s := r.queue[0]
		r.queue[0] = nil
		r.queue = r.queue[1:]
		r.mu.Unlock()
		scratch = s.drain(scratch)
	}
}

// stop ends the workers and hands the subscribers still queued to their own writers.
func (r *ready) stop() {
	r.mu.Lock()
	r.running = false
	left := r.queue
	r.queue = nil
	r.cond.Broadcast()
	r.mu.Unlock()
	for _, s := range left {
		s.mu.Lock()
		s.handOffLocked()
		s.mu.Unlock()
	}
}

// kickAll asks every feed of this process to catch up from the database.
func (h *hub) kickAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, m := range h.subs {
		for s := range m {
			s.mu.Lock()
			s.kick = true // coalesced: one catch-up reads everything missed
			s.startLocked()
			s.mu.Unlock()
		}
	}
}

// end ends the connections of the subscribers match selects, of one tenant (tenantID
// not empty) or of all, with the close code and reason. It returns how many it ended.
func (h *hub) end(tenantID string, match func(*subscriber) bool, code int, reason string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for id, m := range h.subs {
		if tenantID != "" && id != tenantID {
			continue
		}
		for s := range m {
			if !match(s) {
				continue
			}
			h.removeLocked(id, s)
			s.mu.Lock()
			if s.endCode == 0 {
				s.endCode, s.endReason = code, reason
				s.startLocked()
				n++
			}
			s.mu.Unlock()
		}
	}
	return n
}

// ending returns the close code and reason end gave s (0 when none).
func (h *hub) ending(s *subscriber) (int, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.endCode, s.endReason
}

// hasSlug reports whether a subscriber of the tenant slug is connected.
func (h *hub) hasSlug(slug string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, m := range h.subs {
		for s := range m {
			if s.slug == slug {
				return true
			}
			break // one tenant's subscribers share a slug
		}
	}
	return false
}

// slugs returns the slugs of the tenants with subscribers.
func (h *hub) slugs() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for _, m := range h.subs {
		for s := range m {
			out = append(out, s.slug)
			break // one tenant's subscribers share a slug
		}
	}
	return out
}

// count returns the number of subscribers of the tenant.
func (h *hub) count(tenantID string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.subs[tenantID])
}
