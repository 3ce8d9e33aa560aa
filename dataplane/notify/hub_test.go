package notify

import (
	"testing"
)

// recv returns what is waiting in the subscriber's mailbox without blocking, and
// whether the mailbox was closed (the subscriber dropped).
func recv(s *subscriber) (got []string, closed bool) {
	for {
		select {
		case p, ok := <-s.ch:
			if !ok {
				return got, true
			}
			got = append(got, string(p.payload))
		default:
			return got, false
		}
	}
}

func TestHubDropsSlowSubscriber(t *testing.T) {
	t.Parallel()
	h := newHub()
	slow := h.subscribe("acme", "acme", 1, 1)
	fast := h.subscribe("acme", "acme", 1, 4)
	other := h.subscribe("globex", "globex", 1, 4)

	if n := h.deliver("acme", live{payload: []byte("one")}); n != 0 {
		t.Fatalf("first delivery dropped %d subscribers", n)
	}
	// slow has not read "one": its mailbox of one is full, so "two" drops it.
	if n := h.deliver("acme", live{payload: []byte("two")}); n != 1 {
		t.Fatalf("second delivery dropped %d subscribers, want 1", n)
	}
	if n := h.count("acme"); n != 1 {
		t.Fatalf("acme has %d subscribers after the drop, want 1", n)
	}
	// Still delivered to the one that keeps up.
	if n := h.deliver("acme", live{payload: []byte("three")}); n != 0 {
		t.Fatalf("third delivery dropped %d subscribers", n)
	}

	if got, closed := recv(slow); !closed || len(got) != 1 || got[0] != "one" {
		t.Fatalf("slow subscriber got %q (closed %v), want [one] then closed", got, closed)
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
	if n := h.deliver("acme", live{payload: []byte("nobody")}); n != 0 {
		t.Fatalf("delivery to no subscriber dropped %d", n)
	}
	if got, _ := recv(other); len(got) != 0 {
		t.Fatalf("another tenant's subscriber got %q", got)
	}
}
