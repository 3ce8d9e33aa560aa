// Package page parses the dataplane's list parameters: `limit` and the opaque `cursor`
// that continues a list where the previous page ended.
package page

import (
	"encoding/base64"
	"strconv"
	"strings"

	"github.com/gin-gonic/gin"

	"github.com/tenantplane/tenantplane/apperr"
)

// Limits of the `limit` parameter.
const (
	DefaultLimit = 20
	MaxLimit     = 100
)

// Limit returns the request's `limit` parameter: DefaultLimit when absent, an Invalid
// error (invalid_limit) unless it is an integer from 1 to MaxLimit.
func Limit(c *gin.Context) (int, error) {
	raw, ok := c.GetQuery("limit")
	if !ok {
		return DefaultLimit, nil
	}
	n, err := strconv.Atoi(raw)
	if err != nil || n < 1 || n > MaxLimit {
		return 0, apperr.New(apperr.Invalid, "invalid_limit", "limit must be an integer from 1 to %d", MaxLimit)
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

// Cursor decodes the request's `cursor` parameter made by Encode with n parts. It
// returns nil when there is none and an Invalid error (invalid_cursor) when it is not
// such a cursor.
func Cursor(c *gin.Context, n int) ([]int64, error) {
	raw := c.Query("cursor")
	if raw == "" {
		return nil, nil
	}
	bad := apperr.New(apperr.Invalid, "invalid_cursor", "cursor is not one this API returned")
	if len(raw) > 128 {
		return nil, bad
	}
	b, err := base64.RawURLEncoding.DecodeString(raw)
	if err != nil {
		return nil, bad
	}
	s := strings.Split(string(b), ".")
	if len(s) != n {
		return nil, bad
	}
	out := make([]int64, n)
	for i, p := range s {
		if out[i], err = strconv.ParseInt(p, 10, 64); err != nil {
			return nil, bad
		}
	}
	return out, nil
}

// ID parses the path parameter name as a positive integer id. Anything else cannot name
// a record, so it is a NotFound error with the given message.
func ID(c *gin.Context, name, notFound string) (int64, error) {
	id, err := strconv.ParseInt(c.Param(name), 10, 64)
	if err != nil || id <= 0 {
		return 0, apperr.New(apperr.NotFound, "not_found", "%s", notFound)
	}
	return id, nil
}
