package auth

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tenantplane/tenantplane/apperr"
	"github.com/tenantplane/tenantplane/dataplane/pool"
	"github.com/tenantplane/tenantplane/pgerr"
)

// User is a user of the tenant as the API shows it.
type User struct {
	ID        int64     `json:"id"`
	Email     string    `json:"email"`
	IsAdmin   bool      `json:"is_admin"`
	IsActive  bool      `json:"is_active"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`

	passwordHash string
	tokenVersion int
}

const userColumns = `id, email, is_admin, is_active, created_at, updated_at, password_hash, token_version`

func scanUser(row pgx.Row) (*User, error) {
	var u User
	if err := row.Scan(&u.ID, &u.Email, &u.IsAdmin, &u.IsActive, &u.CreatedAt, &u.UpdatedAt, &u.passwordHash, &u.tokenVersion); err != nil {
		return nil, interpret(err)
	}
	return &u, nil
}

// userCodes are the domain errors of the users table.
var userCodes = pgerr.Codes{
	NotFound: apperr.New(apperr.NotFound, "not_found", "user not found"),
	Unique: map[string]*apperr.Error{
		"users_email": apperr.New(apperr.Conflict, "email_taken", "a user with this email already exists"),
	},
}

// interpret translates database errors into domain errors (pgerr.Translate).
func interpret(err error) error { return pgerr.Translate(err, userCodes) }

func userByID(ctx context.Context, db pool.DB, id int64) (*User, error) {
	return scanUser(db.QueryRow(ctx, `SELECT `+userColumns+` FROM users WHERE id = $1`, id))
}

func userByIDForUpdate(ctx context.Context, db pool.DB, id int64) (*User, error) {
	return scanUser(db.QueryRow(ctx, `SELECT `+userColumns+` FROM users WHERE id = $1 FOR UPDATE`, id))
}

func userByEmail(ctx context.Context, db pool.DB, email string) (*User, error) {
	return scanUser(db.QueryRow(ctx, `SELECT `+userColumns+` FROM users WHERE lower(email) = lower($1)`, email))
}

func listUsers(ctx context.Context, db pool.DB, afterID int64, limit int) ([]*User, error) {
	rows, err := db.Query(ctx, `SELECT `+userColumns+` FROM users WHERE id > $1 ORDER BY id LIMIT $2`, afterID, limit)
	if err != nil {
		return nil, fmt.Errorf("listing users: %w", interpret(err))
	}
	defer rows.Close()
	var out []*User
	for rows.Next() {
		u, err := scanUser(rows)
		if err != nil {
			return nil, fmt.Errorf("listing users: %w", err)
		}
		out = append(out, u)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("listing users: %w", interpret(err))
	}
	return out, nil
}

func insertUser(ctx context.Context, db pool.DB, email, hash string, admin bool) (*User, error) {
	return scanUser(db.QueryRow(ctx, `INSERT INTO users (email, password_hash, is_admin) VALUES ($1, $2, $3)
		RETURNING `+userColumns, email, hash, admin))
}

// userChange is a change to a user; nil fields stay as they are.
type userChange struct {
	Email        *string
	PasswordHash *string
	IsAdmin      *bool
	IsActive     *bool
	BumpVersion  bool
}

func updateUser(ctx context.Context, db pool.DB, id int64, ch userChange) (*User, error) {
	bump := 0
	if ch.BumpVersion {
		bump = 1
	}
	return scanUser(db.QueryRow(ctx, `UPDATE users SET
			email = COALESCE($2, email),
			password_hash = COALESCE($3, password_hash),
			is_admin = COALESCE($4, is_admin),
			is_active = COALESCE($5, is_active),
			token_version = token_version + $6,
			updated_at = now()
		WHERE id = $1 RETURNING `+userColumns, id, ch.Email, ch.PasswordHash, ch.IsAdmin, ch.IsActive, bump))
}

func deleteUserRow(ctx context.Context, db pool.DB, id int64) error {
	tag, err := db.Exec(ctx, `DELETE FROM users WHERE id = $1`, id)
	if err != nil {
		return fmt.Errorf("deleting user: %w", interpret(err))
	}
	if tag.RowsAffected() == 0 {
		return userCodes.NotFound
	}
	return nil
}

// lockUsers locks the users table against concurrent admin changes, for the
// transaction.
func lockUsers(ctx context.Context, db pool.DB) error {
	if _, err := db.Exec(ctx, `LOCK TABLE users IN SHARE ROW EXCLUSIVE MODE`); err != nil {
		return fmt.Errorf("locking users: %w", interpret(err))
	}
	return nil
}

// otherActiveAdmins counts the active admins other than id.
func otherActiveAdmins(ctx context.Context, db pool.DB, id int64) (int, error) {
	var n int
	if err := db.QueryRow(ctx, `SELECT count(*) FROM users WHERE is_admin AND is_active AND id <> $1`, id).Scan(&n); err != nil {
		return 0, fmt.Errorf("counting admins: %w", interpret(err))
	}
	return n, nil
}

func setPasswordHash(ctx context.Context, db pool.DB, id int64, hash string) error {
	if _, err := db.Exec(ctx, `UPDATE users SET password_hash = $2 WHERE id = $1`, id, hash); err != nil {
		return fmt.Errorf("updating password hash: %w", interpret(err))
	}
	return nil
}

// The SQL of refresh-token rotation (Service.rotate) and revocation.

var errRefreshNotFound = apperr.New(apperr.NotFound, "not_found", "refresh token not found")

// refreshRow is a row of refresh_tokens.
type refreshRow struct {
	UserID     int64
	Family     string
	Revoked    bool
	ReplacedBy bool
}

func insertRefresh(ctx context.Context, db pool.DB, jti string, userID int64, family string, expires time.Time) error {
	_, err := db.Exec(ctx, `INSERT INTO refresh_tokens (jti, user_id, family, expires_at) VALUES ($1, $2, $3, $4)`,
		jti, userID, family, expires)
	if err != nil {
		return fmt.Errorf("recording refresh token: %w", interpret(err))
	}
	return nil
}

// lockRefresh returns the refresh token row, locked for the transaction, or NotFound.
func lockRefresh(ctx context.Context, db pool.DB, jti string) (*refreshRow, error) {
	var r refreshRow
	err := db.QueryRow(ctx, `SELECT user_id, family::text, revoked_at IS NOT NULL, replaced_by IS NOT NULL
		FROM refresh_tokens WHERE jti = $1 FOR UPDATE`, jti).Scan(&r.UserID, &r.Family, &r.Revoked, &r.ReplacedBy)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, errRefreshNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("reading refresh token: %w", interpret(err))
	}
	return &r, nil
}

func markReplaced(ctx context.Context, db pool.DB, jti, next string) error {
	if _, err := db.Exec(ctx, `UPDATE refresh_tokens SET revoked_at = now(), replaced_by = $2 WHERE jti = $1`, jti, next); err != nil {
		return fmt.Errorf("rotating refresh token: %w", interpret(err))
	}
	return nil
}

// revokeFamily revokes every live token of the family and returns how many.
func revokeFamily(ctx context.Context, db pool.DB, family string) (int64, error) {
	tag, err := db.Exec(ctx, `UPDATE refresh_tokens SET revoked_at = now() WHERE family = $1 AND revoked_at IS NULL`, family)
	if err != nil {
		return 0, fmt.Errorf("revoking token family: %w", interpret(err))
	}
	return tag.RowsAffected(), nil
}

func revokeUserTokens(ctx context.Context, db pool.DB, userID int64) error {
	if _, err := db.Exec(ctx, `UPDATE refresh_tokens SET revoked_at = now() WHERE user_id = $1 AND revoked_at IS NULL`, userID); err != nil {
		return fmt.Errorf("revoking user tokens: %w", interpret(err))
	}
	return nil
}
