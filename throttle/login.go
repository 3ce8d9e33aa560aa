package throttle

import (
	"cmp"
	"strings"
	"time"
)

// Login is the limit of password checks, the same on both planes: per account and per
// client IP.
type Login struct {
	// Account limits the checks of one account (default 5 at once, then 1 a minute).
	Account Rule
	// IP limits the checks from one client IP (default 50 at once, then 1 every 6 s).
	IP Rule
}

// WithDefaults returns l with the documented defaults in its zero fields.
func (l Login) WithDefaults() Login {
	l.Account.Burst = cmp.Or(l.Account.Burst, 5)
	l.Account.Refill = cmp.Or(l.Account.Refill, time.Minute)
	l.IP.Burst = cmp.Or(l.IP.Burst, 50)
	l.IP.Refill = cmp.Or(l.IP.Refill, 6*time.Second)
	return l
}

// Keys returns the keys of a password check of email at scope (a tenant's id, or
// "platform") from the client ip: the account, whatever the email's case and spaces,
// and the IP.
func (l Login) Keys(scope, email, ip string) []Key {
	return []Key{
		{Name: "acct:" + scope + ":" + strings.ToLower(strings.TrimSpace(email)), Rule: l.Account},
		{Name: "ip:" + ip, Rule: l.IP},
	}
}
