package auth

import (
	"cmp"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"
	"golang.org/x/time/rate"
)

// ThrottleConfig limits failed logins. Each key (a tenant's account, a client IP) has a
// bucket of Failures attempts refilled at one per Refill; a login is refused with 429
// while either of its buckets is empty. Only failures take from the buckets, and
// unknown emails count exactly like known ones.
type ThrottleConfig struct {
	// AccountFailures is the burst of failures allowed per (tenant, email) (default 5).
	AccountFailures int
	// AccountRefill is how often one more failure is allowed per account (default 1 min).
	AccountRefill time.Duration
	// IPFailures is the burst of failures allowed per client IP (default 50).
	IPFailures int
	// IPRefill is how often one more failure is allowed per IP (default 6 s).
	IPRefill time.Duration
	// MaxKeys bounds the memory used: the least recently seen keys are forgotten
	// (default 100000).
	MaxKeys int
}

// throttle is an in-process failed-login limiter. Each replica keeps its own.
type throttle struct {
	cfg ThrottleConfig
	now func() time.Time

	// mu guards buckets.
	mu      sync.Mutex
	buckets *simplelru.LRU[string, *rate.Limiter]
}

func newThrottle(cfg ThrottleConfig, now func() time.Time) *throttle {
	cfg.AccountFailures = cmp.Or(cfg.AccountFailures, 5)
	cfg.AccountRefill = cmp.Or(cfg.AccountRefill, time.Minute)
	cfg.IPFailures = cmp.Or(cfg.IPFailures, 50)
	cfg.IPRefill = cmp.Or(cfg.IPRefill, 6*time.Second)
	cfg.MaxKeys = cmp.Or(cfg.MaxKeys, 100000)
	lru, _ := simplelru.NewLRU[string, *rate.Limiter](cfg.MaxKeys, nil) // errors only on size <= 0
	return &throttle{cfg: cfg, now: now, buckets: lru}
}

// keys returns the bucket keys of a login attempt.
func (t *throttle) keys(tenantID, email, ip string) [2]string {
	return [2]string{"acct:" + tenantID + ":" + strings.ToLower(strings.TrimSpace(email)), "ip:" + ip}
}

func (t *throttle) bucketLocked(key string) *rate.Limiter {
	if l, ok := t.buckets.Get(key); ok {
		return l
	}
	var l *rate.Limiter
	if strings.HasPrefix(key, "ip:") {
		l = rate.NewLimiter(rate.Every(t.cfg.IPRefill), t.cfg.IPFailures)
	} else {
		l = rate.NewLimiter(rate.Every(t.cfg.AccountRefill), t.cfg.AccountFailures)
	}
	t.buckets.Add(key, l)
	return l
}

// blocked reports whether an attempt with the keys must be refused now, and for how long.
func (t *throttle) blocked(keys [2]string) (time.Duration, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	var wait time.Duration
	for _, k := range keys {
		l := t.bucketLocked(k)
		if tokens := l.TokensAt(now); tokens < 1 {
			wait = max(wait, time.Duration((1-tokens)/float64(l.Limit())*float64(time.Second)))
		}
	}
	return wait, wait > 0
}

// fail records a failed attempt with the keys.
func (t *throttle) fail(keys [2]string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	for _, k := range keys {
		t.bucketLocked(k).AllowN(now, 1)
	}
}
