// Package email holds the platform's one rule for email addresses, shared by signup,
// platform users, tenant users and every login form.
package email

import (
	"net/mail"
	"strings"
	"unicode/utf8"

	"github.com/tenantplane/tenantplane/apperr"
)

// MaxLen is the longest address accepted, in bytes (RFC 5321's path limit).
const MaxLen = 254

// Validate checks that s is a bare address (no display name, no angle brackets) with a
// dot in its domain, valid UTF-8 without NUL bytes, at most MaxLen bytes. It returns an
// Invalid error with code invalid_email otherwise.
func Validate(s string) error {
	if !Plausible(s) {
		return invalid(s)
	}
	a, err := mail.ParseAddress(s)
	at := strings.LastIndex(s, "@")
	if err != nil || a.Address != s || at < 0 || !strings.Contains(s[at:], ".") {
		return invalid(s)
	}
	return nil
}

// Plausible reports whether s can be looked up at all: non-empty, valid UTF-8 without
// NUL bytes, at most MaxLen bytes. Login forms use it to skip the database (and answer
// exactly as for a wrong password) for strings no stored address can equal.
func Plausible(s string) bool {
	return s != "" && len(s) <= MaxLen && utf8.ValidString(s) && !strings.ContainsRune(s, 0)
}

func invalid(s string) error {
	if !utf8.ValidString(s) || len(s) > MaxLen {
		return apperr.New(apperr.Invalid, "invalid_email", "the email address is not valid")
	}
	return apperr.New(apperr.Invalid, "invalid_email", "%q is not a valid email address", s)
}
