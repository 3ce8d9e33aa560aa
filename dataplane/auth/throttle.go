package auth

import (
	"time"

	"github.com/tenantplane/tenantplane/throttle"
)

// ThrottleConfig limits password checks (package throttle, the same rule on both
// planes): each key (a tenant's account, a client IP) allows a burst of checks, then one
// more every refill; a check is refused with 429 while either key is exhausted. Every
// check reserves before it hashes and only successes are refunded, so unknown emails
// count exactly like known ones.
type ThrottleConfig struct {
	// AccountFailures is the burst of checks allowed per (tenant, email) (default 5).
	AccountFailures int
	// AccountRefill is how often one more check is allowed per account (default 1 min).
	AccountRefill time.Duration
	// IPFailures is the burst of checks allowed per client IP (default 50).
	IPFailures int
	// IPRefill is how often one more check is allowed per IP (default 6 s).
	IPRefill time.Duration
}

// Login returns the limits as package throttle's rules, with the defaults filled in.
func (c ThrottleConfig) Login() throttle.Login {
	return throttle.Login{
		Account: throttle.Rule{Burst: c.AccountFailures, Refill: c.AccountRefill},
		IP:      throttle.Rule{Burst: c.IPFailures, Refill: c.IPRefill},
	}.WithDefaults()
}
