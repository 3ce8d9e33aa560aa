package platform

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/tenantplane/tenantplane/apperr"
	"github.com/tenantplane/tenantplane/email"
	"github.com/tenantplane/tenantplane/password"
)

// errLastUser is the refusal to deactivate the only active platform user: nobody could
// log in to the platform afterwards.
var errLastUser = apperr.New(apperr.Conflict, "last_platform_user",
	"this is the last active platform user; create or reactivate another first")

// List returns every platform user, oldest first. It returns Unavailable when the
// database is down.
func (u *Users) List(ctx context.Context) ([]*User, error) {
	rows, err := u.store.db.Query(ctx, `SELECT id, email, is_active, created_at FROM platform_users ORDER BY created_at, id`)
	if err != nil {
		return nil, translate(err, userCodes, "listing platform users")
	}
	list, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (*User, error) {
		var usr User
		err := r.Scan(&usr.ID, &usr.Email, &usr.IsActive, &usr.CreatedAt)
		return &usr, err
	})
	if err != nil {
		return nil, translate(err, userCodes, "listing platform users")
	}
	return list, nil
}

// ByEmail returns the platform user with the email, whatever its case. It returns
// NotFound (user_not_found) when there is none, and Unavailable when the database is
// down.
func (u *Users) ByEmail(ctx context.Context, addr string) (*User, error) {
	return userByEmail(ctx, u.store.db, addr)
}

// Deactivate stops the platform user with the email from logging in and revokes their
// refresh tokens. Deactivating an inactive user changes nothing. It returns NotFound
// (user_not_found) for an unknown email, Conflict (last_platform_user) when the user is
// the last active one — also when several deactivations race: the active users' rows
// are locked before they are counted — and Unavailable when the database is down.
func (u *Users) Deactivate(ctx context.Context, addr string) (*User, error) {
	var usr *User
	err := pgx.BeginFunc(ctx, u.store.db, func(tx pgx.Tx) error {
		var err error
		if usr, err = userByEmail(ctx, tx, addr); err != nil {
			return err
		}
		if !usr.IsActive {
			return nil
		}
		// Lock every active row: a concurrent deactivation waits here and then counts
		// the rows as this transaction left them.
		rows, err := tx.Query(ctx, `SELECT id FROM platform_users WHERE is_active FOR UPDATE`)
		if err != nil {
			return translate(err, userCodes, "locking platform users")
		}
		active, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return translate(err, userCodes, "locking platform users")
		}
		still := false
		for _, id := range active {
			still = still || id == usr.ID
		}
		if !still {
			usr.IsActive = false
			return nil
		}
		if len(active) < 2 {
			return errLastUser
		}
		if _, err := tx.Exec(ctx, `UPDATE platform_users SET is_active = false, updated_at = now() WHERE id = $1`, usr.ID); err != nil {
			return translate(err, userCodes, "deactivating platform user")
		}
		usr.IsActive = false
		return revokeTokens(ctx, tx, usr.ID)
	})
	if err != nil {
		return nil, translate(err, userCodes, "platform user transaction")
	}
	return usr, nil
}

// ChangePassword sets the password of the platform user with the email and revokes
// their refresh tokens. It returns Invalid (weak_password) for a password the policy
// refuses, NotFound (user_not_found) for an unknown email and Unavailable when the
// database is down.
func (u *Users) ChangePassword(ctx context.Context, addr, pw string) (*User, error) {
	usr, err := u.ByEmail(ctx, addr)
	if err != nil {
		return nil, err
	}
	if err := password.Validate(pw, usr.Email); err != nil {
		return nil, err
	}
	hash, err := u.hasher.Hash(ctx, pw)
	if err != nil {
		return nil, fmt.Errorf("hashing password: %w", err)
	}
	err = pgx.BeginFunc(ctx, u.store.db, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `UPDATE platform_users SET password_hash = $2, updated_at = now() WHERE id = $1`, usr.ID, hash); err != nil {
			return translate(err, userCodes, "changing platform user password")
		}
		return revokeTokens(ctx, tx, usr.ID)
	})
	if err != nil {
		return nil, translate(err, userCodes, "platform user transaction")
	}
	return usr, nil
}

// userByEmail reads the platform user with the email through q.
func userByEmail(ctx context.Context, q querier, addr string) (*User, error) {
	addr = strings.TrimSpace(addr)
	if !email.Plausible(addr) {
		return nil, errUserNotFound
	}
	var usr User
	err := q.QueryRow(ctx, `SELECT id, email, is_active, created_at FROM platform_users WHERE lower(email) = lower($1)`, addr).
		Scan(&usr.ID, &usr.Email, &usr.IsActive, &usr.CreatedAt)
	if err != nil {
		return nil, translate(err, userCodes, "reading platform user")
	}
	return &usr, nil
}

// revokeTokens revokes every live refresh token of the platform user id.
func revokeTokens(ctx context.Context, q querier, id string) error {
	_, err := q.Exec(ctx, `UPDATE platform_refresh_tokens SET revoked_at = now() WHERE user_id = $1 AND revoked_at IS NULL`, id)
	return translate(err, tokenCodes, "revoking platform refresh tokens")
}
