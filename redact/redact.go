// Package redact keeps secrets out of logs: a slog attribute filter that masks
// passwords, tokens and keys, and helpers that strip credentials from URLs and query
// strings before they are logged.
package redact

import (
	"log/slog"
	"net/url"
	"strings"
)

// Mask replaces a secret value.
const Mask = "[REDACTED]"

// sensitive reports whether a key (attribute, header, form or query name) holds a secret.
func sensitive(key string) bool {
	k := strings.ToLower(key)
	for _, s := range []string{"password", "passwd", "secret", "token", "authorization", "cookie",
		"refresh", "access", "api_key", "apikey", "query_string", "sec-websocket-protocol", "dsn", "hash"} {
		if strings.Contains(k, s) {
			return true
		}
	}
	return false
}

// ReplaceAttr is a slog.HandlerOptions.ReplaceAttr that masks the values of attributes
// whose keys name secrets and strips passwords from URL-looking string values.
func ReplaceAttr(_ []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() == slog.KindGroup {
		return a
	}
	if sensitive(a.Key) {
		return slog.String(a.Key, Mask)
	}
	if a.Value.Kind() == slog.KindString {
		if s := a.Value.String(); strings.Contains(s, "://") && strings.Contains(s, "@") {
			return slog.String(a.Key, URL(s))
		}
	}
	return a
}

// URL returns u with any password replaced by the mask (and, for unparsable input that
// looks like it carries credentials, the whole value masked).
func URL(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		if strings.Contains(u, "@") {
			return Mask
		}
		return u
	}
	if p.User != nil {
		if _, has := p.User.Password(); has {
			p.User = url.UserPassword(p.User.Username(), "xxxxx")
		}
	}
	if p.RawQuery != "" {
		p.RawQuery = Query(p.RawQuery)
	}
	return p.String()
}

// Query returns a raw query string with the values of sensitive parameters masked
// (token, query_string, password, ...).
func Query(raw string) string {
	if raw == "" {
		return ""
	}
	parts := strings.Split(raw, "&")
	for i, part := range parts {
		k, _, ok := strings.Cut(part, "=")
		name, err := url.QueryUnescape(k)
		if err != nil {
			name = k
		}
		if ok && sensitive(name) {
			parts[i] = k + "=" + url.QueryEscape(Mask)
		}
	}
	return strings.Join(parts, "&")
}
