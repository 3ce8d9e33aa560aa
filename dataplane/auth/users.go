package auth

import (
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/tenantplane/tenantplane/apperr"
	"github.com/tenantplane/tenantplane/dataplane/page"
	"github.com/tenantplane/tenantplane/dataplane/tenantdb"
	"github.com/tenantplane/tenantplane/email"
	"github.com/tenantplane/tenantplane/password"
	"github.com/tenantplane/tenantplane/web"
)

const userNotFound = "user not found"

// me answers GET /users/me.
func (s *Service) me(c *gin.Context) error {
	sc, err := tenantdb.From(c)
	if err != nil {
		return err
	}
	cur, err := tenantdb.UserFrom(c)
	if err != nil {
		return err
	}
	ctx := c.Request.Context()
	var u *User
	err = sc.Read(ctx, func(db tenantdb.DB) error {
		u, err = userByID(ctx, db, cur.ID)
		return err
	})
	if err != nil {
		return err
	}
	c.JSON(http.StatusOK, u)
	return nil
}

// changeOwnPassword answers POST /users/me/password {old_password, new_password}. Every
// token of the user stops working; the answer is 204 and the user logs in again.
func (s *Service) changeOwnPassword(c *gin.Context) error {
	sc, err := tenantdb.From(c)
	if err != nil {
		return err
	}
	cur, err := tenantdb.UserFrom(c)
	if err != nil {
		return err
	}
	var in struct {
		OldPassword string `json:"old_password"`
		NewPassword string `json:"new_password"`
	}
	if err := web.DecodeJSON(c, &in, maxAuthBody); err != nil {
		return err
	}
	ctx := c.Request.Context()
	if err := sc.Verify(ctx); err != nil { // sets cur.Email
		return err
	}
	keys := s.throttle.keys(sc.Tenant.ID, cur.Email, c.ClientIP())
	if _, blocked := s.throttle.blocked(keys); blocked {
		return apperr.New(apperr.RateLimited, "too_many_attempts", "too many failed attempts; try again later")
	}
	var u *User
	err = sc.Read(ctx, func(db tenantdb.DB) error {
		u, err = userByID(ctx, db, cur.ID)
		return err
	})
	if err != nil {
		return err
	}
	if ok, _ := s.hasher.Verify(ctx, in.OldPassword, u.passwordHash); !ok {
		s.throttle.fail(keys)
		return apperr.New(apperr.Invalid, "wrong_password", "the current password is incorrect")
	}
	if err := password.Validate(in.NewPassword, u.Email); err != nil {
		return err
	}
	hash, err := s.hasher.Hash(ctx, in.NewPassword)
	if err != nil {
		return err
	}
	err = sc.Write(ctx, func(db tenantdb.DB) error {
		if _, err := updateUser(ctx, db, u.ID, userChange{PasswordHash: &hash, BumpVersion: true}); err != nil {
			return err
		}
		return revokeUserTokens(ctx, db, u.ID)
	})
	if err != nil {
		return err
	}
	c.Status(http.StatusNoContent)
	return nil
}

// listUsers answers GET /users?cursor=&limit= (tenant admins), ordered by id.
func (s *Service) listUsers(c *gin.Context) error {
	users, next, err := s.ListUsers(c)
	if err != nil {
		return err
	}
	if users == nil {
		users = []*User{}
	}
	c.JSON(http.StatusOK, gin.H{"items": users, "next_cursor": next})
	return nil
}

// ListUsers returns a page of the request's tenant's users ordered by id, as its
// ?cursor=&limit= parameters ask (the API's pagination), and the cursor of the next page
// ("" on the last). It returns an Invalid error for a bad cursor or limit.
func (s *Service) ListUsers(c *gin.Context) ([]*User, string, error) {
	sc, err := tenantdb.From(c)
	if err != nil {
		return nil, "", err
	}
	limit, err := page.Limit(c)
	if err != nil {
		return nil, "", err
	}
	cur, err := page.Cursor(c, 1)
	if err != nil {
		return nil, "", err
	}
	var after int64
	if cur != nil {
		after = cur[0]
	}
	ctx := c.Request.Context()
	var users []*User
	err = sc.Read(ctx, func(db tenantdb.DB) error {
		users, err = listUsers(ctx, db, after, limit+1)
		return err
	})
	if err != nil {
		return nil, "", err
	}
	next := ""
	if len(users) > limit {
		users = users[:limit]
		next = page.Encode(users[limit-1].ID)
	}
	return users, next, nil
}

// UserByID returns the request's tenant's user id, or a NotFound error.
func (s *Service) UserByID(c *gin.Context, id int64) (*User, error) {
	sc, err := tenantdb.From(c)
	if err != nil {
		return nil, err
	}
	ctx := c.Request.Context()
	var u *User
	err = sc.Read(ctx, func(db tenantdb.DB) error {
		u, err = userByID(ctx, db, id)
		return err
	})
	return u, err
}

// createUser answers POST /users {email, password, is_admin} (tenant admins) with 201.
func (s *Service) createUser(c *gin.Context) error {
	sc, err := tenantdb.From(c)
	if err != nil {
		return err
	}
	var in struct {
		Email    string `json:"email"`
		Password string `json:"password"`
		IsAdmin  bool   `json:"is_admin"`
	}
	if err := web.DecodeJSON(c, &in, maxAuthBody); err != nil {
		return err
	}
	if err := email.Validate(in.Email); err != nil {
		return err
	}
	if err := password.Validate(in.Password, in.Email); err != nil {
		return err
	}
	ctx := c.Request.Context()
	hash, err := s.hasher.Hash(ctx, in.Password)
	if err != nil {
		return err
	}
	var u *User
	err = sc.Write(ctx, func(db tenantdb.DB) error {
		u, err = insertUser(ctx, db, in.Email, hash, in.IsAdmin)
		return err
	})
	if err != nil {
		return err
	}
	c.JSON(http.StatusCreated, u)
	return nil
}

// getUser answers GET /users/{id} (tenant admins).
func (s *Service) getUser(c *gin.Context) error {
	u, err := tenantdb.ReadByID(c, userNotFound, userByID)
	if err != nil {
		return err
	}
	c.JSON(http.StatusOK, u)
	return nil
}

// patchUser answers PATCH /users/{id} {email, password, is_admin, is_active} (tenant
// admins; absent fields stay). Deactivating a user or setting their password revokes
// every token they hold. The last active admin cannot be demoted or deactivated (409).
func (s *Service) patchUser(c *gin.Context) error {
	sc, err := tenantdb.From(c)
	if err != nil {
		return err
	}
	id, err := page.ID(c, "id", userNotFound)
	if err != nil {
		return err
	}
	var in struct {
		Email    *string `json:"email"`
		Password *string `json:"password"`
		IsAdmin  *bool   `json:"is_admin"`
		IsActive *bool   `json:"is_active"`
	}
	if err := web.DecodeJSON(c, &in, maxAuthBody); err != nil {
		return err
	}
	if in.Email != nil {
		if err := email.Validate(*in.Email); err != nil {
			return err
		}
	}
	ctx := c.Request.Context()
	ch := userChange{Email: in.Email, IsAdmin: in.IsAdmin, IsActive: in.IsActive}
	if in.Password != nil {
		email := ""
		if in.Email != nil {
			email = *in.Email
		}
		if err := password.Validate(*in.Password, email); err != nil {
			return err
		}
		hash, err := s.hasher.Hash(ctx, *in.Password)
		if err != nil {
			return err
		}
		ch.PasswordHash = &hash
		ch.BumpVersion = true
	}
	u, err := s.changeUser(c, sc, id, ch)
	if err != nil {
		return err
	}
	c.JSON(http.StatusOK, u)
	return nil
}

// SetFlags changes the admin and active flags of the request's tenant's user id (nil
// leaves a flag as it is) by the rules of PATCH /users/{id}: deactivating a user revokes
// every token they hold, and the last active admin cannot be demoted or deactivated (a
// Conflict error, last_admin). It returns a NotFound error for an unknown user.
func (s *Service) SetFlags(c *gin.Context, id int64, admin, active *bool) (*User, error) {
	sc, err := tenantdb.From(c)
	if err != nil {
		return nil, err
	}
	return s.changeUser(c, sc, id, userChange{IsAdmin: admin, IsActive: active})
}

// changeUser applies ch to user id in one transaction, guarding the last active admin
// and revoking the user's tokens when ch bumps their version or deactivates them.
func (s *Service) changeUser(c *gin.Context, sc *tenantdb.Scope, id int64, ch userChange) (*User, error) {
	ctx := c.Request.Context()
	var u *User
	err := sc.Write(ctx, func(db tenantdb.DB) error {
		old, err := userByIDForUpdate(ctx, db, id)
		if err != nil {
			return err
		}
		losesAdmin := old.IsAdmin && old.IsActive &&
			((ch.IsAdmin != nil && !*ch.IsAdmin) || (ch.IsActive != nil && !*ch.IsActive))
		if losesAdmin {
			if err := lastAdminGuard(c, db, id); err != nil {
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
	return u, nil
}

// deleteUser answers DELETE /users/{id} (tenant admins) with 204; the user's blogs go
// with them. The last active admin cannot be deleted (409).
func (s *Service) deleteUser(c *gin.Context) error {
	sc, err := tenantdb.From(c)
	if err != nil {
		return err
	}
	id, err := page.ID(c, "id", userNotFound)
	if err != nil {
		return err
	}
	ctx := c.Request.Context()
	err = sc.Write(ctx, func(db tenantdb.DB) error {
		old, err := userByIDForUpdate(ctx, db, id)
		if err != nil {
			return err
		}
		if old.IsAdmin && old.IsActive {
			if err := lastAdminGuard(c, db, id); err != nil {
				return err
			}
		}
		return deleteUserRow(ctx, db, id)
	})
	if err != nil {
		return err
	}
	c.Status(http.StatusNoContent)
	return nil
}

// lastAdminGuard refuses a change that would leave the tenant without an active admin.
func lastAdminGuard(c *gin.Context, db tenantdb.DB, id int64) error {
	// Serialize admin changes so two concurrent demotions cannot both pass the count.
	if _, err := db.Exec(c.Request.Context(), `LOCK TABLE users IN SHARE ROW EXCLUSIVE MODE`); err != nil {
		return err
	}
	n, err := otherActiveAdmins(c.Request.Context(), db, id)
	if err != nil {
		return err
	}
	if n == 0 {
		return apperr.New(apperr.Conflict, "last_admin", "the tenant must keep at least one active admin")
	}
	return nil
}
