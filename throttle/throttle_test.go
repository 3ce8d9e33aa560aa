package throttle_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tenantplane/tenantplane/apperr"
	"github.com/tenantplane/tenantplane/internal/pgtest"
	"github.com/tenantplane/tenantplane/provisioner"
	"github.com/tenantplane/tenantplane/throttle"
)

// clock is a settable time shared by the limiters of one test.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// stores returns each Store implementation on real services, fresh for the test.
func stores(t *testing.T) map[string]func(t *testing.T) throttle.Store {
	return map[string]func(t *testing.T) throttle.Store{
		"memory": func(*testing.T) throttle.Store { return throttle.NewMemory() },
		"postgres": func(t *testing.T) throttle.Store {
			dsn := pgtest.NewDatabase(t, pgtest.URL(t))
			if _, err := provisioner.MigrateShared(context.Background(), dsn); err != nil {
				t.Fatalf("migrating: %v", err)
			}
			return throttle.NewPostgres(pgtest.Pool(t, dsn))
		},
		"redis": func(t *testing.T) throttle.Store {
			opt, err := redis.ParseURL(pgtest.Require(t, "TENANTPLANE_TEST_REDIS_URL"))
			if err != nil {
				t.Fatal(err)
			}
			c := redis.NewClient(opt)
			t.Cleanup(func() { _ = c.Close() })
			return throttle.NewRedis(c)
		},
	}
}

// uniqueKey keeps tests sharing one Redis apart.
func uniqueKey(t *testing.T, name string) string {
	return t.Name() + ":" + name + ":" + time.Now().Format(time.RFC3339Nano)
}

func newLimiter(t *testing.T, st throttle.Store, c *clock) *throttle.Limiter {
	l, err := throttle.New(throttle.Config{Store: st, Now: c.now})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestBurstThenRefusedUntilRefill(t *testing.T) {
	t.Parallel()
	for name, mk := range stores(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			c := &clock{t: time.Unix(1_800_000_000, 0)}
			l := newLimiter(t, mk(t), c)
			k := throttle.Key{Name: uniqueKey(t, "acct"), Rule: throttle.Rule{Burst: 3, Refill: time.Minute}}
			ctx := context.Background()
			for i := range 3 {
				if _, err := l.Reserve(ctx, k); err != nil {
					t.Fatalf("attempt %d refused: %v", i+1, err)
				}
			}
			_, err := l.Reserve(ctx, k)
			var e *apperr.Error
			if !errors.As(err, &e) || e.Kind != apperr.RateLimited || e.RetryAfter <= 0 || e.RetryAfter > time.Minute {
				t.Fatalf("4th attempt = %v, want RateLimited with a Retry-After within a minute", err)
			}
			c.add(time.Minute)
			if _, err := l.Reserve(ctx, k); err != nil {
				t.Fatalf("attempt after one refill refused: %v", err)
			}
			if _, err := l.Reserve(ctx, k); err == nil {
				t.Fatal("a second attempt after one refill was allowed")
			}
		})
	}
}

func TestRefundedSuccessesNeverCount(t *testing.T) {
	t.Parallel()
	for name, mk := range stores(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			c := &clock{t: time.Unix(1_800_000_000, 0)}
			l := newLimiter(t, mk(t), c)
			ip := throttle.Key{Name: uniqueKey(t, "ip"), Rule: throttle.Rule{Burst: 2, Refill: time.Hour}}
			ctx := context.Background()
			for i := range 20 {
				r, err := l.Reserve(ctx, ip)
				if err != nil {
					t.Fatalf("successful login %d refused: %v", i+1, err)
				}
				if err := r.Refund(ctx); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

func TestExhaustedKeyCountsNothingOnTheOthers(t *testing.T) {
	t.Parallel()
	for name, mk := range stores(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			c := &clock{t: time.Unix(1_800_000_000, 0)}
			l := newLimiter(t, mk(t), c)
			ip := throttle.Key{Name: uniqueKey(t, "ip"), Rule: throttle.Rule{Burst: 1, Refill: time.Hour}}
			acct := throttle.Key{Name: uniqueKey(t, "acct"), Rule: throttle.Rule{Burst: 1, Refill: time.Hour}}
			ctx := context.Background()
			if _, err := l.Reserve(ctx, ip); err != nil {
				t.Fatal(err)
			}
			if _, err := l.Reserve(ctx, acct, ip); err == nil {
				t.Fatal("attempt with an exhausted IP allowed")
			}
			if _, err := l.Reserve(ctx, acct); err != nil {
				t.Fatalf("the refused attempt was counted on the account: %v", err)
			}
		})
	}
}

// TestParallelGuessesAcrossReplicas is the attack: 100 guesses at once at one account
// from two replicas sharing the store. Only the burst may be checked.
func TestParallelGuessesAcrossReplicas(t *testing.T) {
	t.Parallel()
	for name, mk := range stores(t) {
		if name == "memory" {
			continue // one process only: it is not shared by replicas
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			st := mk(t)
			c := &clock{t: time.Unix(1_800_000_000, 0)}
			replicas := []*throttle.Limiter{newLimiter(t, st, c), newLimiter(t, st, c)}
			acct := throttle.Key{Name: uniqueKey(t, "acct"), Rule: throttle.Rule{Burst: 5, Refill: time.Minute}}
			ip := throttle.Key{Name: uniqueKey(t, "ip"), Rule: throttle.Rule{Burst: 50, Refill: 6 * time.Second}}
			var allowed, refused atomic.Int32
			var wg sync.WaitGroup
			for i := range 100 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					_, err := replicas[i%2].Reserve(context.Background(), acct, ip)
					switch {
					case err == nil:
						allowed.Add(1)
					case apperr.KindOf(err) == apperr.RateLimited:
						refused.Add(1)
					default:
						t.Errorf("reserve: %v", err)
					}
				}()
			}
			wg.Wait()
			if allowed.Load() != 5 || refused.Load() != 95 {
				t.Fatalf("%d guesses allowed, %d refused; want 5 and 95", allowed.Load(), refused.Load())
			}
		})
	}
}

func TestRuleValidate(t *testing.T) {
	t.Parallel()
	for _, r := range []throttle.Rule{{0, time.Second}, {1, 0}, {-1, time.Second}} {
		if r.Validate() == nil {
			t.Errorf("rule %+v accepted", r)
		}
	}
	if err := (throttle.Rule{Burst: 5, Refill: time.Minute}).Validate(); err != nil {
		t.Error(err)
	}
}
