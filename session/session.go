// Package session is the one session model of both admin panels: server-side sessions
// that a logout, a password change, a deactivation or a demotion ends at once, on every
// replica.
//
// The client holds an opaque random token (in the panel's cookie); the store keeps only
// its SHA-256, the session's audience (the platform panel, or a tenant's id), its subject
// (the user) and the user's token version at login, so a changed password or a bumped
// version ends the session at the next check. A session lives Idle past its last use,
// renewed as it is used, but never past Absolute from its start: renewal cannot keep a
// copied cookie alive forever. Stores: Redis when the platform has one, the control
// database otherwise, Memory for a single process.
package session

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"time"
)

// ErrNoSession is returned by Check for a token that opens no session: unknown, ended,
// expired, or of another audience.
var ErrNoSession = errors.New("no session")

// Record is a session as stored.
type Record struct {
	// Hash is the SHA-256 of the client's token, the store key.
	Hash [32]byte
	// Audience is whose panel the session is for: the platform, or a tenant's id.
	Audience string
	// Subject is the signed-in user's id.
	Subject string
	// Version is the user's token version when the session started.
	Version int
	// Created is when the session started.
	Created time.Time
	// Expires is when it ends unless used again.
	Expires time.Time
	// Absolute is when it ends however it is used.
	Absolute time.Time
}

// Store keeps sessions. Every method is safe for concurrent use and shared by replicas
// (Memory excepted).
type Store interface {
	// Put records r, replacing a record of the same hash.
	Put(ctx context.Context, r Record) error
	// Get returns the record of hash, or ErrNoSession when there is none or it has
	// expired at now.
	Get(ctx context.Context, hash [32]byte, now time.Time) (*Record, error)
	// Delete removes the record of hash; removing none is not an error.
	Delete(ctx context.Context, hash [32]byte) error
	// DeleteSubject removes every record of the subject at the audience.
	DeleteSubject(ctx context.Context, audience, subject string) error
}

// Config configures a Manager.
type Config struct {
	// Store keeps the sessions; required.
	Store Store
	// Idle is how long a session lives past its last use (default 30 min).
	Idle time.Duration
	// Absolute is how long a session lives at most (default 12 h).
	Absolute time.Duration
	// CSRFKey keys the CSRF tokens; every replica must use the same one (derive it from
	// the platform's secret key). At least 32 bytes.
	CSRFKey []byte
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Manager starts, checks and ends sessions.
type Manager struct {
	store    Store
	idle     time.Duration
	absolute time.Duration
	csrfKey  []byte
	now      func() time.Time
}

// New returns a Manager, or an error for a configuration that cannot work.
func New(cfg Config) (*Manager, error) {
	if cfg.Store == nil {
		return nil, errors.New("sessions need a store")
	}
	if len(cfg.CSRFKey) < 32 {
		return nil, errors.New("sessions need a CSRF key of at least 32 bytes")
	}
	m := &Manager{store: cfg.Store, idle: cfg.Idle, absolute: cfg.Absolute, csrfKey: cfg.CSRFKey, now: cfg.Now}
	if m.idle <= 0 {
		m.idle = 30 * time.Minute
	}
	if m.absolute <= 0 {
		m.absolute = 12 * time.Hour
	}
	m.idle = min(m.idle, m.absolute)
	if m.now == nil {
		m.now = time.Now
	}
	return m, nil
}

// Session is a checked session.
type Session struct {
	// Token is the client's token (the cookie value).
	Token string
	// Subject is the signed-in user's id.
	Subject string
	// Version is the user's token version at login: a user whose version differs now
	// must be refused.
	Version int
	// CSRF is the session's CSRF token.
	CSRF string
	// Expires is when the session ends unless used again; the cookie's lifetime.
	Expires time.Time
}

// Start begins a session of subject at audience and returns it. It returns the store's
// error.
func (m *Manager) Start(ctx context.Context, audience, subject string, version int) (*Session, error) {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // never fails (crypto/rand panics instead)
	tok := base64.RawURLEncoding.EncodeToString(b)
	now := m.now()
	r := Record{
		Hash: hash(tok), Audience: audience, Subject: subject, Version: version,
		Created: now, Expires: now.Add(m.idle), Absolute: now.Add(m.absolute),
	}
	if err := m.store.Put(ctx, r); err != nil {
		return nil, fmt.Errorf("starting a session: %w", err)
	}
	return m.session(tok, &r), nil
}

// Check returns the session tok opens at audience, renewing it when more than a
// quarter of its idle time has passed. It returns ErrNoSession for a token that opens
// none, and the store's error when the store cannot be reached.
func (m *Manager) Check(ctx context.Context, audience, tok string) (*Session, error) {
	if tok == "" || len(tok) > 100 {
		return nil, ErrNoSession
	}
	now := m.now()
	r, err := m.store.Get(ctx, hash(tok), now)
	if err != nil {
		return nil, err
	}
	if r.Audience != audience || !now.Before(r.Absolute) {
		return nil, ErrNoSession
	}
	if r.Expires.Sub(now) < m.idle*3/4 {
		r.Expires = now.Add(m.idle)
		if r.Expires.After(r.Absolute) {
			r.Expires = r.Absolute
		}
		if err := m.store.Put(ctx, *r); err != nil {
			return nil, fmt.Errorf("renewing a session: %w", err)
		}
	}
	return m.session(tok, r), nil
}

// End ends the session of tok (a logout). Ending no session is not an error.
func (m *Manager) End(ctx context.Context, tok string) error {
	if err := m.store.Delete(ctx, hash(tok)); err != nil {
		return fmt.Errorf("ending a session: %w", err)
	}
	return nil
}

// EndAll ends every session of subject at audience: after a password change, a
// deactivation or a demotion.
func (m *Manager) EndAll(ctx context.Context, audience, subject string) error {
	if err := m.store.DeleteSubject(ctx, audience, subject); err != nil {
		return fmt.Errorf("ending the sessions of a user: %w", err)
	}
	return nil
}

// ValidCSRF reports whether form is the CSRF token of the session.
func (m *Manager) ValidCSRF(s *Session, form string) bool {
	return s != nil && hmac.Equal([]byte(form), []byte(s.CSRF))
}

// LoginCSRF returns a CSRF token for a login form, bound to nonce (a random value the
// form's page also sets in a short-lived cookie): login CSRF protection, before any
// session exists.
func (m *Manager) LoginCSRF(nonce string) string { return m.mac("login:" + nonce) }

// ValidLoginCSRF reports whether form is the login CSRF token of nonce.
func (m *Manager) ValidLoginCSRF(nonce, form string) bool {
	return nonce != "" && hmac.Equal([]byte(form), []byte(m.LoginCSRF(nonce)))
}

// NewNonce returns a random value for LoginCSRF.
func NewNonce() string {
	b := make([]byte, 18)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

func (m *Manager) session(tok string, r *Record) *Session {
	return &Session{Token: tok, Subject: r.Subject, Version: r.Version, CSRF: m.mac("session:" + hex.EncodeToString(r.Hash[:])), Expires: r.Expires}
}

func (m *Manager) mac(s string) string {
	h := hmac.New(sha256.New, m.csrfKey)
	h.Write([]byte(s))
	return hex.EncodeToString(h.Sum(nil))
}

func hash(tok string) [32]byte { return sha256.Sum256([]byte(tok)) }
