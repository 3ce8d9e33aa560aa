package notify

import (
	"testing"
	"time"
)

// recv takes what is waiting in the subscriber's mailbox, and whether the hub removed
// the subscriber (dropped or ended).
func recv(s *subscriber) (got []string, closed bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, m := range s.queue {
		got = append(got, string(m.frame))
	}
	s.queue = nil
	return got, s.gone
}

func TestHubDropsSlowSubscriber(t *testing.T) {
	t.Parallel()
	h := newHub()
	slow := h.subscribe("acme", "acme", 1, 1)
	fast := h.subscribe("acme", "acme", 1, 4)
	other := h.subscribe("globex", "globex", 1, 4)

	if n := h.deliver("acme", live{frame: []byte("one")}); n != 0 {
		t.Fatalf("first delivery dropped %d subscribers", n)
	}
	// slow has not read "one": its mailbox of one is full, so "two" drops it.
	if n := h.deliver("acme", live{frame: []byte("two")}); n != 1 {
		t.Fatalf("second delivery dropped %d subscribers, want 1", n)
	}
	if n := h.count("acme"); n != 1 {
		t.Fatalf("acme has %d subscribers after the drop, want 1", n)
	}
	// Still delivered to the one that keeps up.
	if n := h.deliver("acme", live{frame: []byte("three")}); n != 0 {
		t.Fatalf("third delivery dropped %d subscribers", n)
	}

	if got, closed := recv(slow); !closed || len(got) != 1 || got[0] != "one" || !slow.slow {
		t.Fatalf("slow subscriber got %q (closed %v, slow %v), want [one] then dropped as slow", got, closed, slow.slow)
	}
	if got, closed := recv(fast); closed || len(got) != 3 || got[0] != "one" || got[1] != "two" || got[2] != "three" {
		t.Fatalf("fast subscriber got %q (closed %v), want [one two three] and open", got, closed)
	}
	if got, closed := recv(other); closed || len(got) != 0 {
		t.Fatalf("another tenant's subscriber got %q (closed %v)", got, closed)
	}

	// Unsubscribing a dropped subscriber (the connection ending afterwards) is safe, and
	// twice too; it leaves the others alone.
	h.unsubscribe("acme", slow)
	h.unsubscribe("acme", slow)
	if n := h.count("acme"); n != 1 {
		t.Fatalf("acme has %d subscribers, want 1", n)
	}
	h.unsubscribe("acme", fast)
	h.unsubscribe("acme", fast)
	if _, closed := recv(fast); !closed {
		t.Fatal("an unsubscribed mailbox stays open")
	}
	if n := h.count("acme"); n != 0 {
		t.Fatalf("acme has %d subscribers after all left", n)
	}
	if n := h.deliver("acme", live{frame: []byte("nobody")}); n != 0 {
		t.Fatalf("delivery to no subscriber dropped %d", n)
	}
	if got, _ := recv(other); len(got) != 0 {
		t.Fatalf("another tenant's subscriber got %q", got)
	}
}

func TestHubWakesTheWriterOnlyWhenThereIsWork(t *testing.T) {
	t.Parallel()
	h := newHub()
	s := h.subscribe("acme", "acme", 1, 4)
	wakes := 0
	s.mu.Lock()
	s.wake = func() { wakes++ }
	s.mu.Unlock()
	h.deliver("acme", live{id: 1, frame: []byte("one")})
	h.deliver("acme", live{id: 2, frame: []byte("two")}) // the writer runs already
	h.kickAll()
	if wakes != 1 {
		t.Fatalf("woken %d times, want once while a writer runs", wakes)
	}
	s.mu.Lock()
	s.writing = false // the writer went idle
	s.mu.Unlock()
	h.deliver("acme", live{id: 3, frame: []byte("three")})
	if wakes != 2 {
		t.Fatalf("woken %d times, want again once idle", wakes)
	}
	s.mu.Lock()
	s.writing, s.closed = false, true // the connection is closing
	s.mu.Unlock()
	h.deliver("acme", live{id: 4, frame: []byte("four")})
	if wakes != 2 {
		t.Fatalf("a closing connection's writer was woken")
	}
}

// waitEnded waits for the hub to end s, and returns its close code.
func waitEnded(t *testing.T, h *hub, s *subscriber) int {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if code, _ := h.ending(s); code != 0 || time.Now().After(deadline) {
			return code
		}
		time.Sleep(10 * time.Millisecond)
	}
}
