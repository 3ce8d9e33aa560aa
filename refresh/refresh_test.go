package refresh

import (
	"context"
	"errors"
	"maps"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tenantplane/tenantplane/apperr"
)

// row is a token in the fake table.
type row struct {
	Record
	revoked    bool
	replacedBy string
}

// table is an in-process token table whose transactions run one at a time (as if every
// transaction locked the row it reads) and roll back when fn fails.
type table struct {
	mu   sync.Mutex
	rows map[string]row
}

func newTable() *table { return &table{rows: map[string]row{}} }

// tx is the table seen from inside one transaction.
type tx struct{ rows map[string]row }

var _ Store = (*tx)(nil)

func (t *tx) Lock(_ context.Context, jti string) (State, bool, error) {
	r, ok := t.rows[jti]
	if !ok {
		return State{}, false, nil
	}
	return State{Subject: r.Subject, Family: r.Family, Revoked: r.revoked, Replaced: r.replacedBy != ""}, true, nil
}

func (t *tx) MarkReplaced(_ context.Context, jti, next string) error {
	r := t.rows[jti]
	r.revoked, r.replacedBy = true, next
	t.rows[jti] = r
	return nil
}

func (t *tx) RevokeFamily(_ context.Context, family string) (int64, error) {
	var n int64
	for k, r := range t.rows {
		if r.Family == family && !r.revoked {
			r.revoked = true
			t.rows[k] = r
			n++
		}
	}
	return n, nil
}

func (t *tx) Insert(_ context.Context, r Record) error {
	if _, ok := t.rows[r.JTI]; ok {
		return errors.New("duplicate jti")
	}
	t.rows[r.JTI] = row{Record: r}
	return nil
}

func (tb *table) inTx(_ context.Context, fn func(*tx) error) error {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	work := &tx{rows: maps.Clone(tb.rows)}
	if err := fn(work); err != nil {
		return err
	}
	tb.rows = work.rows
	return nil
}

func (tb *table) get(jti string) row {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	return tb.rows[jti]
}

// live counts the family's tokens that are not revoked.
func (tb *table) live(family string) int {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	n := 0
	for _, r := range tb.rows {
		if r.Family == family && !r.revoked {
			n++
		}
	}
	return n
}

func mintFor(subject string) Mint {
	return func(family string) (Record, error) {
		return Record{JTI: uuid.NewString(), Subject: subject, Family: family, ExpiresAt: time.Now().Add(time.Hour)}, nil
	}
}

// setup returns a table holding one fresh login of user "7".
func setup(t *testing.T) (*table, Presented) {
	t.Helper()
	tb := newTable()
	var first Record
	err := tb.inTx(context.Background(), func(s *tx) error {
		var err error
		first, err = Start(context.Background(), s, mintFor("7"))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return tb, Presented{JTI: first.JTI, Subject: first.Subject, Family: first.Family}
}

func rotate(tb *table, p Presented, h Hooks[*tx]) (Record, error) {
	if h.Mint == nil {
		h.Mint = mintFor(p.Subject)
	}
	return Rotate(context.Background(), tb.inTx, p, h)
}

func wantRefused(t *testing.T, err error, why Reason) *RefusedError {
	t.Helper()
	var re *RefusedError
	if !errors.As(err, &re) || re.Reason != why {
		t.Fatalf("err %v, want a refusal (%s)", err, why)
	}
	if !errors.Is(err, ErrRefused) || apperr.KindOf(err) != apperr.Unauthenticated {
		t.Fatalf("refusal %v does not match ErrRefused as Unauthenticated", err)
	}
	return re
}

func TestRotateReplacesTheTokenWithTheNextOfItsFamily(t *testing.T) {
	t.Parallel()
	tb, p := setup(t)
	next, err := rotate(tb, p, Hooks[*tx]{})
	if err != nil {
		t.Fatal(err)
	}
	if next.Family != p.Family || next.Subject != p.Subject || next.JTI == p.JTI {
		t.Fatalf("next %+v of %+v", next, p)
	}
	if got := tb.get(p.JTI); got.replacedBy != next.JTI || !got.revoked {
		t.Fatalf("presented token is %+v after rotation, want replaced by %s", got, next.JTI)
	}
	// The next token rotates in turn.
	if _, err := rotate(tb, Presented{JTI: next.JTI, Subject: next.Subject, Family: next.Family}, Hooks[*tx]{}); err != nil {
		t.Fatalf("rotating the next token: %v", err)
	}
}

func TestRotateRevokesTheFamilyOnReuse(t *testing.T) {
	t.Parallel()
	tb, p := setup(t)
	next, err := rotate(tb, p, Hooks[*tx]{})
	if err != nil {
		t.Fatal(err)
	}
	re := wantRefused(t, second(rotate(tb, p, Hooks[*tx]{})), Reused)
	if re.Revoked != 1 || tb.live(p.Family) != 0 {
		t.Fatalf("reuse revoked %d, %d live left; want the newest revoked", re.Revoked, tb.live(p.Family))
	}
	// The legitimate holder's newest token is refused too, as a reuse of a revoked one.
	wantRefused(t, second(rotate(tb, Presented{JTI: next.JTI, Subject: next.Subject, Family: next.Family}, Hooks[*tx]{})), Reused)
}

func TestRotateRefusesUnknownAndMismatchedTokensWithoutRevoking(t *testing.T) {
	t.Parallel()
	tb, p := setup(t)
	for name, bad := range map[string]Presented{
		"unknown jti":    {JTI: uuid.NewString(), Subject: p.Subject, Family: p.Family},
		"other subject":  {JTI: p.JTI, Subject: "8", Family: p.Family},
		"other family":   {JTI: p.JTI, Subject: p.Subject, Family: uuid.NewString()},
		"empty presence": {},
	} {
		wantRefused(t, second(rotate(tb, bad, Hooks[*tx]{})), Unknown)
		if tb.live(p.Family) != 1 {
			t.Fatalf("%s: the family lost its live token", name)
		}
	}
	if _, err := rotate(tb, p, Hooks[*tx]{}); err != nil {
		t.Fatalf("the real token after refusals: %v", err)
	}
}

func TestRotateRevokesTheFamilyWhenTheSubjectCheckFails(t *testing.T) {
	t.Parallel()
	tb, p := setup(t)
	var checked string
	re := wantRefused(t, second(rotate(tb, p, Hooks[*tx]{Check: func(_ context.Context, _ *tx, subject string) (bool, error) {
		checked = subject
		return false, nil
	}})), SubjectRefused)
	if checked != "7" || re.Revoked != 1 || tb.live(p.Family) != 0 {
		t.Fatalf("checked %q, revoked %d, %d live left", checked, re.Revoked, tb.live(p.Family))
	}
}

func TestRotateRollsBackWhenAHookFails(t *testing.T) {
	t.Parallel()
	boom := errors.New("boom")
	for name, h := range map[string]Hooks[*tx]{
		"check": {Check: func(context.Context, *tx, string) (bool, error) { return false, boom }},
		"mint":  {Mint: func(string) (Record, error) { return Record{}, boom }},
	} {
		tb, p := setup(t)
		if _, err := rotate(tb, p, h); !errors.Is(err, boom) {
			t.Fatalf("%s: err %v, want boom", name, err)
		}
		if got := tb.get(p.JTI); got.revoked || got.replacedBy != "" {
			t.Fatalf("%s: the presented token changed in a failed rotation: %+v", name, got)
		}
		if _, err := rotate(tb, p, Hooks[*tx]{}); err != nil {
			t.Fatalf("%s: the token after a failed rotation: %v", name, err)
		}
	}
}

func TestRotateRefusesAMintOfAnotherFamily(t *testing.T) {
	t.Parallel()
	tb, p := setup(t)
	_, err := rotate(tb, p, Hooks[*tx]{Mint: func(string) (Record, error) { return mintFor("7")(uuid.NewString()) }})
	if err == nil || errors.Is(err, ErrRefused) {
		t.Fatalf("err %v, want a failure", err)
	}
	if tb.get(p.JTI).replacedBy != "" {
		t.Fatal("the token was replaced by a token of another family")
	}
}

func TestConcurrentPresentationsOfOneTokenHaveOneWinner(t *testing.T) {
	t.Parallel()
	tb, p := setup(t)
	const n = 20
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { _, errs[i] = rotate(tb, p, Hooks[*tx]{}) })
	}
	wg.Wait()
	won := 0
	for _, err := range errs {
		if err == nil {
			won++
			continue
		}
		wantRefused(t, err, Reused)
	}
	if won != 1 {
		t.Fatalf("%d presentations won, want exactly 1", won)
	}
	if tb.live(p.Family) != 0 {
		t.Fatal("the family is not revoked after the reuses")
	}
}

func second[T any](_ T, err error) error { return err }
