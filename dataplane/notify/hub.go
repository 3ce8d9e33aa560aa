package notify

import (
	"sync"
)

// live is one published notification as the hub hands it to a feed: its id (0 when the
// payload had none) and the JSON to send.
type live struct {
	id      int64
	payload []byte
}

// hub delivers published payloads to the WebSocket subscribers of this process.
type hub struct {
	// mu guards subs and every subscriber's dropped and endCode/endReason.
	mu   sync.Mutex
	subs map[string]map[*subscriber]struct{} // tenant id → subscribers
}

// subscriber is one WebSocket connection's mailbox. A subscriber that falls behind by a
// full buffer is dropped (its channel closed) rather than slowing everyone else.
type subscriber struct {
	ch      chan live
	dropped bool // set under hub.mu when the hub closed ch
	userID  int64
	slug    string
	// kick holds a token when the feed must catch up from the database (the fan-out
	// resubscribed: something may have been missed).
	kick chan struct{}
	// end is closed when the connection must end (user revoked, tenant no longer
	// served), with endCode and endReason for the close frame.
	end       chan struct{}
	endCode   int
	endReason string
}

func newHub() *hub { return &hub{subs: map[string]map[*subscriber]struct{}{}} }

// subscribe registers a mailbox of the given size for the tenant's notifications, for
// user userID of the tenant slug.
func (h *hub) subscribe(tenantID, slug string, userID int64, size int) *subscriber {
	s := &subscriber{ch: make(chan live, size), userID: userID, slug: slug,
		kick: make(chan struct{}, 1), end: make(chan struct{})}
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
	if !s.dropped {
		s.dropped = true
		close(s.ch)
	}
}

// deliver hands payload to every subscriber of the tenant without blocking; slow
// subscribers are dropped. It returns how many were dropped.
func (h *hub) deliver(tenantID string, m live) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	dropped := 0
	for s := range h.subs[tenantID] {
		select {
		case s.ch <- m:
		default:
			h.removeLocked(tenantID, s)
			dropped++
		}
	}
	return dropped
}

// kickAll asks every feed of this process to catch up from the database.
func (h *hub) kickAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, m := range h.subs {
		for s := range m {
			select {
			case s.kick <- struct{}{}:
			default: // a catch-up is already due
			}
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
			if s.endCode == 0 {
				s.endCode, s.endReason = code, reason
				close(s.end)
				n++
			}
		}
	}
	return n
}

// ending returns the close code and reason end gave s.
func (h *hub) ending(s *subscriber) (int, string) {
	h.mu.Lock()
	defer h.mu.Unlock()
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
