// Package refresh is the one refresh-token rotation of the platform, used by the control
// plane for platform users and by the dataplane for tenant users. It knows no HTTP and no
// database: each side implements Store over its own table (one design on both sides: jti
// uuid, subject, family uuid, expires_at, revoked_at, replaced_by) and signs its own JWTs.
//
// The rules, all applied inside one transaction:
//
//   - A refresh token is single use. Presenting it locks its row (so of several
//     presentations of one token at once exactly one goes first), records the next token
//     of the same family and marks the presented one replaced by it.
//   - A token that is unknown, or whose row names another subject or family, is refused
//     and nothing else changes.
//   - A token that is already replaced or revoked is a reuse: a stolen copy, or the
//     owner's after the thief's. Its whole family is revoked, the newest token included,
//     and the presentation is refused; both holders must log in again. So when several
//     presentations of one token race, the first wins a new pair, the others are reuses,
//     and the family (the winner's new token too) ends revoked.
//   - The subject check (the user still exists, is active, has the token version the
//     token was issued with) runs after the lock; when it fails the family is revoked and
//     the presentation refused.
//
// A refusal is an error matching ErrRefused (Unauthenticated "invalid_token"); its
// revocation is committed before Rotate returns.
package refresh

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/tenantplane/tenantplane/apperr"
)

// Record is one refresh token as a Store keeps it.
type Record struct {
	JTI       string    // the token's id, a UUID
	Subject   string    // whose token: a user id in its text form
	Family    string    // the login the token descends from, a UUID
	ExpiresAt time.Time // when the token stops being accepted
}

// State is what a Store has recorded of a token.
type State struct {
	Subject  string // the user id the token was issued to
	Family   string // the token's family
	Revoked  bool   // revoked_at is set
	Replaced bool   // replaced_by is set: the token was rotated already
}

// Store is one refresh-token table, seen from inside one transaction.
type Store interface {
	// Lock reads the token jti and locks its row until the transaction ends. found is
	// false when no token has the jti.
	Lock(ctx context.Context, jti string) (st State, found bool, err error)
	// MarkReplaced records that the token jti was rotated into next (and so is revoked).
	MarkReplaced(ctx context.Context, jti, next string) error
	// RevokeFamily revokes every live token of family and returns how many it revoked.
	RevokeFamily(ctx context.Context, family string) (int64, error)
	// Insert records a new live token.
	Insert(ctx context.Context, r Record) error
}

// Presented is a refresh token presented for rotation: the claims of a JWT whose
// signature, kind, audience and expiry the caller has verified.
type Presented struct {
	JTI     string
	Subject string
	Family  string
}

// Mint signs the next token of family for the presented subject and returns its record;
// the caller keeps the signed token to answer with. It is called at most once per
// Rotate or Start, inside the transaction.
type Mint func(family string) (Record, error)

// Hooks are what a rotation asks of its caller. S is the caller's Store, so that Check
// can read the subject in the same transaction.
type Hooks[S Store] struct {
	// Check reports whether subject may still refresh (exists, is active, has the
	// token's version). false revokes the family and refuses; an error aborts the
	// transaction. nil means every subject may.
	Check func(ctx context.Context, s S, subject string) (bool, error)
	// Mint signs the next token; required.
	Mint Mint
}

// ErrRefused is the error of every refused presentation. Rotate returns a *RefusedError
// that matches it with errors.Is and errors.As (*apperr.Error).
var ErrRefused = apperr.New(apperr.Unauthenticated, "invalid_token", "the token is invalid, expired or revoked")

// Reason says why a presentation was refused.
type Reason string

// The reasons of a refusal.
const (
	Unknown        Reason = "unknown"         // no such token, or of another subject or family
	Reused         Reason = "reused"          // replaced or revoked already: the family is revoked
	SubjectRefused Reason = "subject_refused" // the subject check failed: the family is revoked
)

// RefusedError is a refused presentation, for logs: why, and how many tokens of its
// family were revoked because of it.
type RefusedError struct {
	Reason  Reason
	Family  string
	Revoked int64
}

// Error says why the token was refused and how many tokens of its family it revoked.
func (e *RefusedError) Error() string {
	return fmt.Sprintf("refresh token refused (%s); %d tokens of its family revoked", e.Reason, e.Revoked)
}

// Unwrap returns ErrRefused, so web.Status answers 401 invalid_token.
func (e *RefusedError) Unwrap() error { return ErrRefused }

// InTx runs fn in one transaction over the token table, committing when fn returns nil
// and rolling back otherwise, and returns fn's error or the transaction's.
type InTx[S Store] func(ctx context.Context, fn func(s S) error) error

// Rotate exchanges the presented token for the next of its family by the package's
// rules, in one transaction that inTx runs. It returns the next token's record, a
// *RefusedError (matching ErrRefused) when the presentation is refused, or the error of
// the store, a hook or the transaction.
func Rotate[S Store](ctx context.Context, inTx InTx[S], p Presented, h Hooks[S]) (Record, error) {
	var next Record
	var refused *RefusedError
	err := inTx(ctx, func(s S) error {
		next, refused = Record{}, nil
		st, found, err := s.Lock(ctx, p.JTI)
		if err != nil {
			return fmt.Errorf("locking refresh token: %w", err)
		}
		if !found || st.Subject != p.Subject || st.Family != p.Family {
			refused = &RefusedError{Reason: Unknown, Family: p.Family}
			return nil
		}
		if st.Revoked || st.Replaced {
			refused, err = revoke(ctx, s, st.Family, Reused)
			return err
		}
		if h.Check != nil {
			ok, err := h.Check(ctx, s, st.Subject)
			if err != nil {
				return fmt.Errorf("checking refresh token subject: %w", err)
			}
			if !ok {
				refused, err = revoke(ctx, s, st.Family, SubjectRefused)
				return err
			}
		}
		next, err = record(ctx, s, h.Mint, st.Family)
		if err != nil {
			return err
		}
		if err := s.MarkReplaced(ctx, p.JTI, next.JTI); err != nil {
			return fmt.Errorf("marking refresh token replaced: %w", err)
		}
		return nil
	})
	if err != nil {
		return Record{}, err
	}
	if refused != nil {
		return Record{}, refused
	}
	return next, nil
}

// Start begins a new family (a login): it mints its first token and records it in s.
func Start(ctx context.Context, s Store, mint Mint) (Record, error) {
	return record(ctx, s, mint, uuid.NewString())
}

func record(ctx context.Context, s Store, mint Mint, family string) (Record, error) {
	if mint == nil {
		return Record{}, errors.New("refresh: no Mint hook")
	}
	r, err := mint(family)
	if err != nil {
		return Record{}, fmt.Errorf("minting refresh token: %w", err)
	}
	if r.Family != family {
		return Record{}, fmt.Errorf("minted refresh token of family %q, want %q", r.Family, family)
	}
	if err := s.Insert(ctx, r); err != nil {
		return Record{}, fmt.Errorf("recording refresh token: %w", err)
	}
	return r, nil
}

func revoke(ctx context.Context, s Store, family string, why Reason) (*RefusedError, error) {
	n, err := s.RevokeFamily(ctx, family)
	if err != nil {
		return nil, fmt.Errorf("revoking refresh token family: %w", err)
	}
	return &RefusedError{Reason: why, Family: family, Revoked: n}, nil
}
