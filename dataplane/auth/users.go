package auth

import (
	"context"
	"strconv"

	"github.com/tenantplane/tenantplane/apperr"
	"github.com/tenantplane/tenantplane/dataplane/page"
	"github.com/tenantplane/tenantplane/dataplane/pool"
	"github.com/tenantplane/tenantplane/dataplane/tenantdb"
	"github.com/tenantplane/tenantplane/email"
	"github.com/tenantplane/tenantplane/password"
)

// Me returns ctx's caller as stored. It returns caller.ErrUnauthenticated without a
// caller.
func (s *Service) Me(ctx context.Context) (*User, error) {
	_, c, err := tenantdb.ScopeAndCaller(ctx)
	if err != nil {
		return nil, err
	}
	return s.UserByID(ctx, c.ID)
}

// ChangeOwnPassword sets the password of ctx's caller to newPassword once oldPassword
// is theirs (checks throttled like logins, per account and clientIP). Every token of the user
// stops working. It returns an Invalid error (wrong_password) for a wrong current
// password, password.Validate's error for a weak new one and a RateLimited error
// (too_many_attempts) once throttled.
func (s *Service) ChangeOwnPassword(ctx context.Context, oldPassword, newPassword, clientIP string) error {
	sc, cur, err := tenantdb.ScopeAndCaller(ctx)
	if err != nil {
		return err
	}
	if err := sc.Verify(ctx); err != nil { // sets cur.Email
		return err
	}
	res, err := s.reserve(ctx, s.limits.Keys(sc.Tenant.ID, cur.Email, clientIP)...)
	if err != nil {
		return err
	}
	u, err := s.UserByID(ctx, cur.ID)
	if err != nil {
		return err
	}
	if ok, _ := s.hasher.Verify(ctx, oldPassword, u.passwordHash); !ok {
		return apperr.New(apperr.Invalid, "wrong_password", "the current password is incorrect")
	}
	if err := res.Refund(ctx); err != nil {
		s.log.Warn("refunding a password check", "tenant", sc.Tenant.Slug, "error", err)
	}
	if err := password.Validate(newPassword, u.Email); err != nil {
		return err
	}
	hash, err := s.hasher.Hash(ctx, newPassword)
	if err != nil {
		return err
	}
	err = sc.Write(ctx, func(db pool.DB) error {
		if _, err := updateUser(ctx, db, u.ID, userChange{PasswordHash: &hash, BumpVersion: true}); err != nil {
			return err
		}
		return revokeUserTokens(ctx, db, u.ID)
	})
	if err != nil {
		return err
	}
	s.revoked(ctx, u.ID)
	s.endSessions(ctx, sc.Tenant.ID, u.ID)
	return nil
}

// ListFilter selects a page of users.
type ListFilter struct {
	// Cursor continues a previous page ("": the first page).
	Cursor string
	// Limit is the page size (0: page.DefaultLimit; at most page.MaxLimit).
	Limit int
}

// ListUsers returns a page of ctx's tenant's users ordered by id (tenant admins). It
// returns RequireAdmin's errors and an Invalid error for a bad cursor or limit.
func (s *Service) ListUsers(ctx context.Context, f ListFilter) (page.Page[*User], error) {
	var out page.Page[*User]
	if _, err := RequireAdmin(ctx); err != nil {
		return out, err
	}
	limit, err := page.Limit(f.Limit, page.DefaultLimit)
	if err != nil {
		return out, err
	}
	cur, err := page.Decode(f.Cursor, 1)
	if err != nil {
		return out, err
	}
	var after int64
	if cur != nil {
		after = cur[0]
	}
	sc, _ := tenantdb.ScopeFrom(ctx) // RequireAdmin found it
	err = sc.Read(ctx, func(db pool.DB) error {
		out.Items, err = listUsers(ctx, db, after, limit+1)
		return err
	})
	if err != nil {
		return out, err
	}
	if len(out.Items) > limit {
		out.Items = out.Items[:limit]
		out.Next = page.Encode(out.Items[limit-1].ID)
	}
	if out.Items == nil {
		out.Items = []*User{}
	}
	return out, nil
}

// UserByID returns user id of ctx's tenant, or a NotFound error. It checks no caller:
// it serves the caller's own record and the admin panel's session check.
func (s *Service) UserByID(ctx context.Context, id int64) (*User, error) {
	sc, err := tenantdb.ScopeFrom(ctx)
	if err != nil {
		return nil, err
	}
	var u *User
	err = sc.Read(ctx, func(db pool.DB) error {
		u, err = userByID(ctx, db, id)
		return err
	})
	return u, err
}

// GetUser returns user id of ctx's tenant (tenant admins). It returns RequireAdmin's
// errors and a NotFound error for an unknown user.
func (s *Service) GetUser(ctx context.Context, id int64) (*User, error) {
	if _, err := RequireAdmin(ctx); err != nil {
		return nil, err
	}
	return s.UserByID(ctx, id)
}

// NewUser is a user to create.
type NewUser struct {
	Email    string
	Password string
	IsAdmin  bool
}

// CreateUser creates a user of ctx's tenant (tenant admins). It returns RequireAdmin's
// errors, email.Validate's and password.Validate's, and a Conflict error (email_taken)
// when the email is in use.
func (s *Service) CreateUser(ctx context.Context, in NewUser) (*User, error) {
	if _, err := RequireAdmin(ctx); err != nil {
		return nil, err
	}
	if err := email.Validate(in.Email); err != nil {
		return nil, err
	}
	if err := password.Validate(in.Password, in.Email); err != nil {
		return nil, err
	}
	hash, err := s.hasher.Hash(ctx, in.Password)
	if err != nil {
		return nil, err
	}
	sc, _ := tenantdb.ScopeFrom(ctx) // RequireAdmin found it
	var u *User
	err = sc.Write(ctx, func(db pool.DB) error {
		u, err = insertUser(ctx, db, in.Email, hash, in.IsAdmin)
		return err
	})
	return u, err
}

// UserChange is a change to a user; nil fields stay as they are.
type UserChange struct {
	Email    *string
	Password *string
	IsAdmin  *bool
	IsActive *bool
}

// UpdateUser changes user id of ctx's tenant (tenant admins). Deactivating a user or
// setting their password revokes every token they hold; the last active admin cannot be
// demoted or deactivated (a Conflict error, last_admin). It returns RequireAdmin's
// errors, the validation errors of the new email and password, and a NotFound error for
// an unknown user.
func (s *Service) UpdateUser(ctx context.Context, id int64, in UserChange) (*User, error) {
	if _, err := RequireAdmin(ctx); err != nil {
		return nil, err
	}
	if in.Email != nil {
		if err := email.Validate(*in.Email); err != nil {
			return nil, err
		}
	}
	ch := userChange{Email: in.Email, IsAdmin: in.IsAdmin, IsActive: in.IsActive}
	if in.Password != nil {
		addr := ""
		if in.Email != nil {
			addr = *in.Email
		}
		if err := password.Validate(*in.Password, addr); err != nil {
			return nil, err
		}
		hash, err := s.hasher.Hash(ctx, *in.Password)
		if err != nil {
			return nil, err
		}
		ch.PasswordHash = &hash
		ch.BumpVersion = true
	}
	sc, _ := tenantdb.ScopeFrom(ctx) // RequireAdmin found it
	var u *User
	losesAdmin := false
	err := sc.Write(ctx, func(db pool.DB) error {
		old, err := userByIDForUpdate(ctx, db, id)
		if err != nil {
			return err
		}
		losesAdmin = old.IsAdmin && old.IsActive &&
			((ch.IsAdmin != nil && !*ch.IsAdmin) || (ch.IsActive != nil && !*ch.IsActive))
		if losesAdmin {
			if err := lastAdminGuard(ctx, db, id); err != nil {
				return err
			}
		}
		if ch.IsActive != nil && !*ch.IsActive && old.IsActive {
			ch.BumpVersion = true
		}
		if u, err = updateUser(ctx, db, id, ch); err != nil {
			return err
		}
		if ch.BumpVersion {
			return revokeUserTokens(ctx, db, id)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if ch.BumpVersion {
		s.revoked(ctx, id)
	}
	if ch.BumpVersion || losesAdmin {
		s.endSessions(ctx, sc.Tenant.ID, id)
	}
	return u, nil
}

// endSessions ends the admin panel sessions of user id of the tenant (Config.EndSessions)
// after a change that must sign them out; a failure is logged (the panel's check of the
// stored user refuses the sessions anyway).
func (s *Service) endSessions(ctx context.Context, tenantID string, id int64) {
	if s.endAll == nil {
		return
	}
	if err := s.endAll(ctx, tenantID, strconv.FormatInt(id, 10)); err != nil {
		s.log.Warn("ending admin panel sessions", "tenant_id", tenantID, "user_id", id, "error", err)
	}
}

// DeleteUser deletes user id of ctx's tenant (tenant admins); their blogs go with them.
// The last active admin cannot be deleted (a Conflict error, last_admin). It returns
// RequireAdmin's errors and a NotFound error for an unknown user.
func (s *Service) DeleteUser(ctx context.Context, id int64) error {
	if _, err := RequireAdmin(ctx); err != nil {
		return err
	}
	sc, _ := tenantdb.ScopeFrom(ctx) // RequireAdmin found it
	err := sc.Write(ctx, func(db pool.DB) error {
		old, err := userByIDForUpdate(ctx, db, id)
		if err != nil {
			return err
		}
		if old.IsAdmin && old.IsActive {
			if err := lastAdminGuard(ctx, db, id); err != nil {
				return err
			}
		}
		return deleteUserRow(ctx, db, id)
	})
	if err != nil {
		return err
	}
	s.revoked(ctx, id)
	s.endSessions(ctx, sc.Tenant.ID, id)
	return nil
}

// lastAdminGuard refuses a change that would leave the tenant without an active admin.
func lastAdminGuard(ctx context.Context, db pool.DB, id int64) error {
	// Serialize admin changes so two concurrent demotions cannot both pass the count.
	if err := lockUsers(ctx, db); err != nil {
		return err
	}
	n, err := otherActiveAdmins(ctx, db, id)
	if err != nil {
		return err
	}
	if n == 0 {
		return apperr.New(apperr.Conflict, "last_admin", "the tenant must keep at least one active admin")
	}
	return nil
}
