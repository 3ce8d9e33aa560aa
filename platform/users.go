package platform

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/tenantplane/tenantplane/apperr"
	"github.com/tenantplane/tenantplane/email"
	"github.com/tenantplane/tenantplane/password"
)

// User is a platform user: a global superuser of the control plane.
type User struct {
	ID        string    `json:"id"`
	Email     string    `json:"email"`
	IsActive  bool      `json:"is_active"`
	CreatedAt time.Time `json:"created_at"`
}

// Users is the platform user service: the rules for creating users and checking their
// passwords, over the platform_users table of a Store.
type Users struct {
	store  *Store
	hasher *password.Hasher
}

// NewUsers returns the platform user service on the store, hashing with hasher.
func NewUsers(store *Store, hasher *password.Hasher) *Users {
	return &Users{store: store, hasher: hasher}
}

var errBadCredentials = apperr.New(apperr.Unauthenticated, "invalid_credentials", "invalid email or password")

var errUserNotFound = userCodes.NotFound

// Create adds an active platform user. It returns Invalid (invalid_email, weak_password)
// for a bad email or a password the policy refuses, Conflict (email_taken) when a user
// already has the email, whatever its case, and Unavailable when the database is down.
func (u *Users) Create(ctx context.Context, addr, pw string) (*User, error) {
	addr = strings.TrimSpace(addr)
	if err := email.Validate(addr); err != nil {
		return nil, err
	}
	if err := password.Validate(pw, addr); err != nil {
		return nil, err
	}
	hash, err := u.hasher.Hash(ctx, pw)
	if err != nil {
		return nil, fmt.Errorf("hashing password: %w", err)
	}
	usr := &User{ID: uuid.NewString(), Email: addr, IsActive: true}
	err = u.store.db.QueryRow(ctx, `INSERT INTO platform_users (id, email, password_hash) VALUES ($1, $2, $3) RETURNING created_at`,
		usr.ID, usr.Email, hash).Scan(&usr.CreatedAt)
	if err != nil {
		return nil, translate(err, userCodes, "creating platform user")
	}
	return usr, nil
}

// Authenticate checks an email and password and returns the active user they belong to.
// It returns Unauthenticated (invalid_credentials) for a wrong password, an unknown
// email and an inactive user alike, after the same amount of hashing work, and
// Unavailable when the database is down.
func (u *Users) Authenticate(ctx context.Context, addr, pw string) (*User, error) {
	var usr User
	var hash string
	found := false
	if email.Plausible(addr) {
		err := u.store.db.QueryRow(ctx, `SELECT id, email, is_active, created_at, password_hash FROM platform_users WHERE lower(email) = lower($1)`,
			strings.TrimSpace(addr)).Scan(&usr.ID, &usr.Email, &usr.IsActive, &usr.CreatedAt, &hash)
		err = translate(err, userCodes, "looking up platform user")
		switch {
		case err == nil:
			found = true
		case apperr.KindOf(err) != apperr.NotFound:
			return nil, err
		}
	}
	ok, err := u.hasher.Verify(ctx, pw, hash) // an empty hash costs as much as a real one
	if err != nil {
		return nil, fmt.Errorf("checking password: %w", err)
	}
	if !found || !ok || !usr.IsActive {
		return nil, errBadCredentials
	}
	if u.hasher.NeedsRehash(hash) {
		if newHash, err := u.hasher.Hash(ctx, pw); err == nil {
			// Best effort: the old hash still works if this fails.
			_, _ = u.store.db.Exec(ctx, `UPDATE platform_users SET password_hash = $2, updated_at = now() WHERE id = $1`, usr.ID, newHash)
		}
	}
	return &usr, nil
}

// Get returns the platform user with the id. It returns NotFound (user_not_found) when
// there is none, and Unavailable when the database is down.
func (u *Users) Get(ctx context.Context, id string) (*User, error) {
	return userByID(ctx, u.store.db, id)
}

// userByID reads the platform user with the id through q, a pool or a transaction.
func userByID(ctx context.Context, q querier, id string) (*User, error) {
	if _, err := uuid.Parse(id); err != nil {
		return nil, errUserNotFound
	}
	var usr User
	err := q.QueryRow(ctx, `SELECT id, email, is_active, created_at FROM platform_users WHERE id = $1`, id).
		Scan(&usr.ID, &usr.Email, &usr.IsActive, &usr.CreatedAt)
	if err != nil {
		return nil, translate(err, userCodes, "reading platform user")
	}
	return &usr, nil
}
