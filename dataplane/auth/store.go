package auth

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tenantplane/tenantplane/apperr"
	"github.com/tenantplane/tenantplane/dataplane/pool"
	"github.com/tenantplane/tenantplane/pgerr"
	"github.com/tenantplane/tenantplane/refresh"
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

// TokenVersion is the user's token version: it changes when every token and session of
// the user must stop working (a password change, a deactivation).
func (u *User) TokenVersion() int { return u.tokenVersion }

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

// refreshCodes are the domain errors of refresh_tokens.
var refreshCodes = pgerr.Codes{NotFound: apperr.New(apperr.NotFound, "not_found", "refresh token not found")}

// refreshStore is the tenant's refresh_tokens table inside one transaction: the
// refresh.Store of tenant users (package refresh does the rotation).
type refreshStore struct {
	db pool.DB
}

var _ refresh.Store = (*refreshStore)(nil)

// user reads the user subject (a user id in its text form) in the same transaction: the
// rotation's subject check. It returns NotFound when there is none.
func (r *refreshStore) user(ctx context.Context, subject string) (*User, error) {
	id, err := strconv.ParseInt(subject, 10, 64)
	if err != nil {
		return nil, userCodes.NotFound
	}
	return userByID(ctx, r.db, id)
}

// Lock reads the token jti and locks its row until the transaction ends; found is false
// when there is none. It returns the translated database error.
func (r *refreshStore) Lock(ctx context.Context, jti string) (refresh.State, bool, error) {
	var st refresh.State
	err := r.db.QueryRow(ctx, `SELECT user_id::text, family::text, revoked_at IS NOT NULL, replaced_by IS NOT NULL
		FROM refresh_tokens WHERE jti = $1 FOR UPDATE`, jti).Scan(&st.Subject, &st.Family, &st.Revoked, &st.Replaced)
	if err = pgerr.Translate(err, refreshCodes); apperr.KindOf(err) == apperr.NotFound {
		return refresh.State{}, false, nil
	}
	if err != nil {
		return refresh.State{}, false, fmt.Errorf("reading refresh token: %w", err)
	}
	return st, true, nil
}

// MarkReplaced revokes the token jti and records next as its successor. It returns the
// translated database error.
func (r *refreshStore) MarkReplaced(ctx context.Context, jti, next string) error {
	if _, err := r.db.Exec(ctx, `UPDATE refresh_tokens SET revoked_at = now(), replaced_by = $2 WHERE jti = $1`, jti, next); err != nil {
		return fmt.Errorf("rotating refresh token: %w", interpret(err))
	}
	return nil
}

// RevokeFamily revokes every live token of the family and returns how many. It returns
// the translated database error.
func (r *refreshStore) RevokeFamily(ctx context.Context, family string) (int64, error) {
	tag, err := r.db.Exec(ctx, `UPDATE refresh_tokens SET revoked_at = now() WHERE family = $1 AND revoked_at IS NULL`, family)
	if err != nil {
		return 0, fmt.Errorf("revoking token family: %w", interpret(err))
	}
	return tag.RowsAffected(), nil
}

// Insert records a new live token of the user rec.Subject. It returns the translated
// database error.
func (r *refreshStore) Insert(ctx context.Context, rec refresh.Record) error {
	_, err := r.db.Exec(ctx, `INSERT INTO refresh_tokens (jti, user_id, family, expires_at) VALUES ($1, $2::text::bigint, $3, $4)`,
		rec.JTI, rec.Subject, rec.Family, rec.ExpiresAt)
	if err != nil {
		return fmt.Errorf("recording refresh token: %w", interpret(err))
	}
	return nil
}

// liveRefresh reports whether the token jti of subject and family is recorded and
// neither revoked nor replaced: whether a refresh with it would be let through.
func liveRefresh(ctx context.Context, db pool.DB, jti, subject, family string) (bool, error) {
	var live bool
	err := db.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM refresh_tokens WHERE jti = $1 AND user_id::text = $2
		AND family::text = $3 AND revoked_at IS NULL AND replaced_by IS NULL)`, jti, subject, family).Scan(&live)
	if err != nil {
		return false, fmt.Errorf("reading refresh token: %w", interpret(err))
	}
	return live, nil
}

func revokeUserTokens(ctx context.Context, db pool.DB, userID int64) error {
	if _, err := db.Exec(ctx, `UPDATE refresh_tokens SET revoked_at = now() WHERE user_id = $1 AND revoked_at IS NULL`, userID); err != nil {
		return fmt.Errorf("revoking user tokens: %w", interpret(err))
	}
	return nil
}
