// Package attacktest is what the concurrency suites of both planes share: the stores
// replicas share (the control database, Redis), a clock the test moves, client IPs of
// their own, and bursts of requests sent at once.
package attacktest

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/tenantplane/tenantplane/internal/pgtest"
	"github.com/tenantplane/tenantplane/session"
	"github.com/tenantplane/tenantplane/throttle"
)

// Clock is a clock the test moves.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// NewClock returns a Clock at the wall clock's now.
func NewClock() *Clock { return &Clock{t: time.Now()} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }

// Add moves the clock on by d.
func (c *Clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// Stores returns a throttle store and a session store of one kind, fresh for the test.
type Stores func(t *testing.T) (throttle.Store, session.Store)

// SharedStores returns the stores replicas share in production, by name: "postgres"
// on the control database db, and "redis" on the test Redis (skipped when there is
// none, failed under CI).
func SharedStores(db *pgxpool.Pool) map[string]Stores {
	return map[string]Stores{
		"postgres": func(*testing.T) (throttle.Store, session.Store) {
			return throttle.NewPostgres(db), session.NewPostgres(db)
		},
		"redis": func(t *testing.T) (throttle.Store, session.Store) {
			opt, err := redis.ParseURL(pgtest.Require(t, "TENANTPLANE_TEST_REDIS_URL"))
			if err != nil {
				t.Fatal(err)
			}
			c := redis.NewClient(opt)
			t.Cleanup(func() { _ = c.Close() })
			// Tests share one Redis and one client IP: each counts under keys of its own.
			return throttle.NewRedis(c).WithPrefix("tenantplane:test:" + t.Name() + ":" + RandomIP() + ":"), session.NewRedis(c)
		},
	}
}

// RandomIP returns a client IP no other test uses, so that tests sharing one Redis do
// not share a per-IP key.
func RandomIP() string {
	return fmt.Sprintf("10.%d.%d.%d", rand.IntN(256), rand.IntN(256), 1+rand.IntN(254))
}

// Burst sends n requests made by mk at once, spread over the handlers, and returns how
// many got each status; it fails the test for a 429 without Retry-After.
func Burst(t *testing.T, hs []http.Handler, n int, mk func() *http.Request) map[int]int {
	t.Helper()
	var mu sync.Mutex
	got := map[int]int{}
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			r := mk()
			<-start
			w := httptest.NewRecorder()
			hs[i%len(hs)].ServeHTTP(w, r)
			mu.Lock()
			defer mu.Unlock()
			got[w.Code]++
			if w.Code == http.StatusTooManyRequests && w.Header().Get("Retry-After") == "" {
				t.Errorf("429 without Retry-After: %s", w.Body)
			}
		})
	}
	close(start)
	wg.Wait()
	return got
}

// CheckBurst fails the test unless at most limit+2 of the n requests of a burst were
// checked (answered status checked), at least one was, and the rest were refused
// with 429.
func CheckBurst(t *testing.T, what string, got map[int]int, n, checked, limit int) {
	t.Helper()
	if got[checked] > limit+2 || got[checked] < 1 || got[checked]+got[http.StatusTooManyRequests] != n {
		t.Errorf("%s: %v; want at most %d answered %d, the rest 429", what, got, limit+2, checked)
	}
}
