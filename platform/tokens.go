package platform

import (
	"context"

	"github.com/jackc/pgx/v5"

	"github.com/tenantplane/tenantplane/apperr"
	"github.com/tenantplane/tenantplane/pgerr"
	"github.com/tenantplane/tenantplane/refresh"
)

// Tokens is the platform_refresh_tokens table, on the pool or inside one transaction:
// the refresh.Store of platform users. Its table has the design of the tenants'
// refresh_tokens (replaced_by, revoked_at), so the rotation is package refresh's.
type Tokens struct {
	q querier
}

var _ refresh.Store = (*Tokens)(nil)

// tokenCodes are the domain errors of platform_refresh_tokens.
var tokenCodes = pgerr.Codes{NotFound: apperr.New(apperr.NotFound, "token_not_found", "refresh token not found")}

// Tokens returns the refresh token table on the pool, for starting a family (a login).
func (s *Store) Tokens() *Tokens { return &Tokens{q: s.db} }

// InTokenTx runs fn in one transaction over the refresh token table, committing when fn
// returns nil; it is the refresh.InTx of platform tokens. It returns fn's error, or the
// transaction's translated (Unavailable when the database is down).
func (s *Store) InTokenTx(ctx context.Context, fn func(t *Tokens) error) error {
	err := pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error { return fn(&Tokens{q: tx}) })
	return translate(err, tokenCodes, "platform refresh token transaction")
}

// User returns the platform user with the id, read in the same transaction as the
// tokens (a rotation's subject check, which must not wait for a second connection while
// it holds a token's row lock). It returns NotFound (user_not_found) when there is none,
// and Unavailable when the database is down.
func (t *Tokens) User(ctx context.Context, id string) (*User, error) {
	return userByID(ctx, t.q, id)
}

// Lock reads the token jti and locks its row until the transaction ends; found is false
// when there is none. It returns Unavailable when the database is down.
func (t *Tokens) Lock(ctx context.Context, jti string) (refresh.State, bool, error) {
	var st refresh.State
	err := t.q.QueryRow(ctx, `SELECT user_id::text, family::text, revoked_at IS NOT NULL, replaced_by IS NOT NULL
		FROM platform_refresh_tokens WHERE jti = $1 FOR UPDATE`, jti).Scan(&st.Subject, &st.Family, &st.Revoked, &st.Replaced)
	err = translate(err, tokenCodes, "reading platform refresh token")
	if apperr.KindOf(err) == apperr.NotFound {
		return refresh.State{}, false, nil
	}
	if err != nil {
		return refresh.State{}, false, err
	}
	return st, true, nil
}

// MarkReplaced revokes the token jti and records next as its successor. It returns
// Unavailable when the database is down.
func (t *Tokens) MarkReplaced(ctx context.Context, jti, next string) error {
	_, err := t.q.Exec(ctx, `UPDATE platform_refresh_tokens SET revoked_at = now(), replaced_by = $2 WHERE jti = $1`, jti, next)
	return translate(err, tokenCodes, "rotating platform refresh token")
}

// RevokeFamily revokes every live token of family and returns how many. It returns
// Unavailable when the database is down.
func (t *Tokens) RevokeFamily(ctx context.Context, family string) (int64, error) {
	tag, err := t.q.Exec(ctx, `UPDATE platform_refresh_tokens SET revoked_at = now() WHERE family = $1 AND revoked_at IS NULL`, family)
	if err != nil {
		return 0, translate(err, tokenCodes, "revoking platform refresh token family")
	}
	return tag.RowsAffected(), nil
}

// Insert records a new live token of the user r.Subject. It returns Unavailable when the
// database is down.
func (t *Tokens) Insert(ctx context.Context, r refresh.Record) error {
	_, err := t.q.Exec(ctx, `INSERT INTO platform_refresh_tokens (jti, user_id, family, expires_at) VALUES ($1, $2, $3, $4)`,
		r.JTI, r.Subject, r.Family, r.ExpiresAt)
	return translate(err, tokenCodes, "recording platform refresh token")
}
