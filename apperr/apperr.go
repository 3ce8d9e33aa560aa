// Package apperr declares the domain errors shared by both planes. Stores translate
// driver errors into these; the HTTP layer maps them to status codes in one place
// (package web); the CLI prints their messages.
package apperr

import (
	"errors"
	"fmt"
	"time"
)

// Kind classifies an error by what the caller can do about it.
type Kind int

// The kinds of domain error. Each maps to one HTTP status in package web.
const (
	Internal        Kind = iota // a bug or an outage: logged, never shown in detail
	Invalid                     // the input is wrong (400)
	Unauthenticated             // no or bad credentials (401)
	Forbidden                   // authenticated but not allowed (403)
	NotFound                    // absent, or not visible to the caller (404)
	Conflict                    // clashes with existing state (409)
	TooLarge                    // request body over the limit (413)
	RateLimited                 // too many attempts (429)
	Unavailable                 // temporarily not servable (503)
	Unprocessable               // well-formed but refused by the request's own state (422)
)

// Error is a domain error: a kind, a stable machine-readable code and a message safe
// to show to the client.
type Error struct {
	Kind    Kind
	Code    string
	Message string
	Err     error // optional cause, never shown to clients
	// RetryAfter, when positive, is sent as the Retry-After header of a 429 or 503.
	RetryAfter time.Duration
}

func (e *Error) Error() string {
	if e.Err != nil {
		return e.Message + ": " + e.Err.Error()
	}
	return e.Message
}

func (e *Error) Unwrap() error { return e.Err }

// Is reports whether target is an *Error of the same kind and code, so that
// errors.Is(err, apperr.ErrNotFound) matches any not-found error with that code.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Kind == e.Kind && (t.Code == "" || t.Code == e.Code)
}

// Sentinels for errors.Is: they match every error of their kind.
var (
	ErrNotFound        = &Error{Kind: NotFound}
	ErrConflict        = &Error{Kind: Conflict}
	ErrInvalid         = &Error{Kind: Invalid}
	ErrForbidden       = &Error{Kind: Forbidden}
	ErrUnauthenticated = &Error{Kind: Unauthenticated}
	ErrUnavailable     = &Error{Kind: Unavailable}
)

// New returns a domain error of the given kind.
func New(kind Kind, code, format string, args ...any) *Error {
	return &Error{Kind: kind, Code: code, Message: fmt.Sprintf(format, args...)}
}

// Invalidf returns an Invalid error with code "invalid".
func Invalidf(format string, args ...any) *Error {
	return New(Invalid, "invalid", format, args...)
}

// NotFoundf returns a NotFound error with code "not_found".
func NotFoundf(format string, args ...any) *Error {
	return New(NotFound, "not_found", format, args...)
}

// Conflictf returns a Conflict error with code "conflict".
func Conflictf(format string, args ...any) *Error {
	return New(Conflict, "conflict", format, args...)
}

// KindOf returns the kind of err, Internal when it is not a domain error.
func KindOf(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return Internal
}
