package notify

import (
	"sync"
)

// hub delivers published payloads to the WebSocket subscribers of this process.
type hub struct {
	// mu guards subs.
	mu   sync.Mutex
	subs map[string]map[*subscriber]struct{} // tenant id → subscribers
}

// subscriber is one WebSocket connection's mailbox. A subscriber that falls behind by a
// full buffer is dropped (its channel closed) rather than slowing everyone else.
type subscriber struct {
	ch      chan []byte
	dropped bool // set under hub.mu when the hub closed ch
}

func newHub() *hub { return &hub{subs: map[string]map[*subscriber]struct{}{}} }

// subscribe registers a mailbox of the given size for the tenant's notifications.
func (h *hub) subscribe(tenantID string, size int) *subscriber {
	s := &subscriber{ch: make(chan []byte, size)}
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
func (h *hub) deliver(tenantID string, payload []byte) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	dropped := 0
	for s := range h.subs[tenantID] {
		select {
		case s.ch <- payload:
		default:
			h.removeLocked(tenantID, s)
			dropped++
		}
	}
	return dropped
}

// count returns the number of subscribers of the tenant.
func (h *hub) count(tenantID string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.subs[tenantID])
}
