// Package page is the dataplane's pagination: the `limit` rule (1 to MaxLimit, default
// DefaultLimit), the opaque cursor that continues a list where the previous page ended,
// and the Page a list returns.
package page

import (
	"encoding/base64"
	"strconv"
	"strings"

	"github.com/tenantplane/tenantplane/apperr"
)

// Limits of the `limit` parameter.
const (
	DefaultLimit = 20
	MaxLimit     = 100
)

// Page is one page of a list: its items and the cursor of the next page ("" on the last).
type Page[T any] struct {
	Items []T    `json:"items"`
	Next  string `json:"next_cursor"`
}

var errLimit = apperr.New(apperr.Invalid, "invalid_limit", "limit must be an integer from 1 to %d", MaxLimit)

// ParseLimit parses a `limit` parameter that was given. It returns an Invalid error
// (invalid_limit) unless raw is an integer from 1 to MaxLimit.
func ParseLimit(raw string) (int, error) {
	n, err := strconv.Atoi(raw)
	if err != nil || n < 1 || n > MaxLimit {
		return 0, errLimit
	}
	return n, nil
}

// Limit applies the limit rule to n: def when n is 0, an Invalid error (invalid_limit)
// unless it is from 1 to MaxLimit.
func Limit(n, def int) (int, error) {
	if n == 0 {
		return def, nil
	}
	if n < 1 || n > MaxLimit {
		return 0, errLimit
	}
	return n, nil
}

// Encode makes a cursor of integer parts.
func Encode(parts ...int64) string {
	s := make([]string, len(parts))
	for i, p := range parts {
		s[i] = strconv.FormatInt(p, 10)
	}
	return base64.RawURLEncoding.EncodeToString([]byte(strings.Join(s, ".")))
}

// ErrCursor is the error of a cursor this API did not make.
var ErrCursor = apperr.New(apperr.Invalid, "invalid_cursor", "cursor is not one this API returned")

// Decode decodes a cursor made by Encode with n parts. It returns nil when raw is empty
// and ErrCursor when it is not such a cursor.
func Decode(raw string, n int) ([]int64, error) {
	if raw == "" {
		return nil, nil
	}
	if len(raw) > 128 {
		return nil, ErrCursor
	}
	b, err := base64.RawURLEncoding.DecodeString(raw)
	if err != nil {
		return nil, ErrCursor
	}
	s := strings.Split(string(b), ".")
	if len(s) != n {
		return nil, ErrCursor
	}
	out := make([]int64, n)
	for i, p := range s {
		if out[i], err = strconv.ParseInt(p, 10, 64); err != nil {
			return nil, ErrCursor
		}
	}
	return out, nil
}

// QueryLimit parses the `limit` query parameter as lookup (for instance gin's
// Context.GetQuery) finds it: 0 (the list's default) when absent, ParseLimit's answer
// otherwise.
func QueryLimit(lookup func(key string) (string, bool)) (int, error) {
	raw, ok := lookup("limit")
	if !ok {
		return 0, nil
	}
	return ParseLimit(raw)
}
