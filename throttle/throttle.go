// Package throttle is the platform's one limiter of password guesses, used by every
// password check of both planes and both admin panels.
//
// A check reserves before it hashes: Reserve counts the attempt against every key (the
// account, the client IP) atomically, or refuses it with 429 when any key is exhausted,
// and only a reserved attempt may run the password hash. A successful check refunds its
// reservation, so successes never count against anyone (clients behind one NAT do not
// lock each other out). However many guesses arrive at once, on however many replicas,
// at most a key's burst of them is checked before it is exhausted.
//
// Each key follows GCRA (the generic cell rate algorithm, a token bucket kept as one
// timestamp): Burst attempts at once, then one more every Refill. The state lives in a
// Store shared by the replicas: Redis when the platform has one, the control database
// otherwise; Memory serves a single process (and tests).
package throttle

import (
	"context"
	"fmt"
	"math"
	"sort"
	"time"

	"github.com/tenantplane/tenantplane/apperr"
)

// Rule is one key's limit: Burst attempts at once, then one more every Refill.
type Rule struct {
	// Burst is how many attempts may be made at once (at least 1).
	Burst int
	// Refill is how often one more attempt is allowed (positive).
	Refill time.Duration
}

// Validate reports a rule that cannot limit anything.
func (r Rule) Validate() error {
	if r.Burst < 1 || r.Refill <= 0 {
		return fmt.Errorf("throttle rule needs a burst of at least 1 and a positive refill, not %d per %v", r.Burst, r.Refill)
	}
	return nil
}

// Key is one counted subject of an attempt and its rule.
type Key struct {
	// Name identifies the subject across replicas, e.g. "acct:<tenant>:<email>".
	Name string
	Rule Rule
}

// Store keeps the state of every key. Take and Give must be atomic over all the keys
// they are given, also against other processes sharing the store.
type Store interface {
	// Take reserves one attempt on every key, or on none when any key is exhausted, in
	// which case it returns how long until all of them allow one more.
	Take(ctx context.Context, now time.Time, keys []Key) (wait time.Duration, err error)
	// Give returns one attempt to every key (a reservation that was not needed).
	Give(ctx context.Context, now time.Time, keys []Key) error
}

// Config configures a Limiter.
type Config struct {
	// Store holds the keys' state; required.
	Store Store
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Limiter reserves attempts. It is safe for concurrent use.
type Limiter struct {
	store Store
	now   func() time.Time
}

// New returns a Limiter over cfg.Store.
func New(cfg Config) (*Limiter, error) {
	if cfg.Store == nil {
		return nil, fmt.Errorf("throttle needs a store")
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	return &Limiter{store: cfg.Store, now: now}, nil
}

// ErrThrottled is the kind of error Reserve returns for an exhausted key; errors.Is
// matches it.
var ErrThrottled = &apperr.Error{Kind: apperr.RateLimited, Code: "too_many_attempts"}

// Reservation is one reserved attempt. Call Refund when the attempt succeeded.
type Reservation struct {
	l    *Limiter
	keys []Key
}

// Reserve reserves one attempt on every key. It returns a RateLimited error (code
// too_many_attempts, with RetryAfter set) when any key is exhausted, and a wrapped store
// error when the store cannot be reached; in both cases the attempt must not be checked.
func (l *Limiter) Reserve(ctx context.Context, keys ...Key) (*Reservation, error) {
	keys = canonical(keys)
	wait, err := l.store.Take(ctx, l.now(), keys)
	if err != nil {
		return nil, fmt.Errorf("reserving a login attempt: %w", err)
	}
	if wait > 0 {
		return nil, &apperr.Error{
			Kind:       apperr.RateLimited,
			Code:       "too_many_attempts",
			Message:    "too many failed attempts; try again later",
			RetryAfter: time.Duration(math.Ceil(wait.Seconds())) * time.Second,
		}
	}
	return &Reservation{l: l, keys: keys}, nil
}

// Refund gives the reserved attempt back: the check it was for succeeded. It returns
// the store's error, which callers may log and otherwise ignore (the attempt then stays
// counted, the safe side).
func (r *Reservation) Refund(ctx context.Context) error {
	if r == nil {
		return nil
	}
	if err := r.l.store.Give(ctx, r.l.now(), r.keys); err != nil {
		return fmt.Errorf("refunding a login attempt: %w", err)
	}
	return nil
}

// canonical sorts the keys by name and drops repeats, so stores lock rows in one order
// (no deadlocks between two attempts) and count a key once.
func canonical(keys []Key) []Key {
	out := append([]Key(nil), keys...)
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	n := 0
	for i, k := range out {
		if i > 0 && k.Name == out[n-1].Name {
			continue
		}
		out[n] = k
		n++
	}
	return out[:n]
}

// take is GCRA for one key: given the key's theoretical arrival time tat (zero for a
// key never seen), it returns the new tat when the attempt fits, or how long until it
// would.
func take(tat, now time.Time, r Rule) (time.Time, time.Duration) {
	if tat.Before(now) {
		tat = now
	}
	next := tat.Add(r.Refill)
	if over := next.Sub(now) - time.Duration(r.Burst)*r.Refill; over > 0 {
		return tat, over
	}
	return next, 0
}

// give undoes one take of a key: its tat moves back by one refill. It reports false when
// the key then holds no state (its tat has passed).
func give(tat, now time.Time, r Rule) (time.Time, bool) {
	tat = tat.Add(-r.Refill)
	return tat, tat.After(now)
}
