package controlplane

import (
	"math"
	"strconv"
	"sync"
	"time"

	"github.com/gin-gonic/gin"
	"golang.org/x/time/rate"

	"github.com/tenantplane/tenantplane/apperr"
)

// signupThrottle is a token bucket per client IP for signups (not a password check,
// so not package throttle's). Buckets that have filled up again are forgotten, so the
// map stays as small as the set of recent callers.
type signupThrottle struct {
	limit rate.Limit
	burst int
	now   func() time.Time

	// mu guards buckets and lastSweep.
	mu        sync.Mutex
	buckets   map[string]*rate.Limiter
	lastSweep time.Time
}

// sweepEvery is how often, at most, full buckets are dropped.
const sweepEvery = time.Minute

func newSignupThrottle(perSecond float64, burst int, now func() time.Time) *signupThrottle {
	return &signupThrottle{limit: rate.Limit(perSecond), burst: burst, now: now, buckets: map[string]*rate.Limiter{}}
}

// allow takes one token from key's bucket. When the bucket is empty it takes none and
// returns how long until one is available.
func (t *signupThrottle) allow(key string) (time.Duration, bool) {
	now := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if now.Sub(t.lastSweep) >= sweepEvery {
		t.sweepLocked(now)
	}
	l, ok := t.buckets[key]
	if !ok {
		l = rate.NewLimiter(t.limit, t.burst)
		t.buckets[key] = l
	}
	r := l.ReserveN(now, 1)
	if !r.OK() {
		return time.Minute, false
	}
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return d, false
	}
	return 0, true
}

// sweepLocked drops the buckets that are full again: they hold no state worth keeping.
func (t *signupThrottle) sweepLocked(now time.Time) {
	t.lastSweep = now
	for k, l := range t.buckets {
		if l.TokensAt(now) >= float64(t.burst) {
			delete(t.buckets, k)
		}
	}
}

// check answers a RateLimited error with a Retry-After header when key's bucket is
// empty; what names the throttled action in the message.
func (t *signupThrottle) check(c *gin.Context, key, what string) error {
	wait, ok := t.allow(key)
	if ok {
		return nil
	}
	secs := int(math.Ceil(wait.Seconds()))
	if secs < 1 {
		secs = 1
	}
	c.Header("Retry-After", strconv.Itoa(secs))
	return apperr.New(apperr.RateLimited, "rate_limited", "too many %s attempts; retry in %d seconds", what, secs)
}
