package throttle

import (
	"context"
	"sync"
	"time"
)

// Memory is a Store for a single process: its state is lost at exit and not shared with
// other replicas. Keys whose state has expired are dropped as the map is used.
type Memory struct {
	// mu guards tats and sweepAt.
	mu      sync.Mutex
	tats    map[string]time.Time
	sweepAt time.Time
}

var _ Store = (*Memory)(nil)

// NewMemory returns an empty in-process store.
func NewMemory() *Memory { return &Memory{tats: map[string]time.Time{}} }

// Take implements Store.
func (m *Memory) Take(_ context.Context, now time.Time, keys []Key) (time.Duration, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.sweepLocked(now)
	next := make([]time.Time, len(keys))
	var wait time.Duration
	for i, k := range keys {
		var w time.Duration
		next[i], w = take(m.tats[k.Name], now, k.Rule)
		wait = max(wait, w)
	}
	if wait > 0 {
		return wait, nil
	}
	for i, k := range keys {
		m.tats[k.Name] = next[i]
	}
	return 0, nil
}

// Give implements Store.
func (m *Memory) Give(_ context.Context, now time.Time, keys []Key) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, k := range keys {
		tat, ok := m.tats[k.Name]
		if !ok {
			continue
		}
		if tat, live := give(tat, now, k.Rule); live {
			m.tats[k.Name] = tat
		} else {
			delete(m.tats, k.Name)
		}
	}
	return nil
}

// sweepLocked drops expired keys, at most once a minute.
func (m *Memory) sweepLocked(now time.Time) {
	if now.Before(m.sweepAt) {
		return
	}
	m.sweepAt = now.Add(time.Minute)
	for k, tat := range m.tats {
		if !tat.After(now) {
			delete(m.tats, k)
		}
	}
}
