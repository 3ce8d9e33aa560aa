package api

import (
	"context"

	"github.com/gin-gonic/gin"

	"github.com/tenantplane/tenantplane/dataplane/auth"
	"github.com/tenantplane/tenantplane/web"
)

// maxAuthBody bounds the bodies of the auth and users endpoints.
const maxAuthBody = 16 << 10

const userNotFound = "user not found"

// login answers POST /auth/token {email, password} with a token pair.
func (a *API) login(ctx context.Context, c *gin.Context) error {
	var in struct {
		Email    string `json:"email"`
		Password string `json:"password"`
	}
	if err := web.DecodeJSON(c, &in, maxAuthBody); err != nil {
		return err
	}
	pair, err := a.auth.Login(ctx, in.Email, in.Password, c.ClientIP())
	if err != nil {
		return err
	}
	return tokenJSON(c, pair)
}

// tokenJSON answers 200 with a token pair, which no cache may keep.
func tokenJSON(c *gin.Context, pair *auth.Pair) error {
	c.Header("Cache-Control", "no-store")
	return okJSON(c, pair)
}

// refresh answers POST /auth/token/refresh {refresh} with the next token pair.
func (a *API) refresh(ctx context.Context, c *gin.Context) error {
	var in struct {
		Refresh string `json:"refresh"`
	}
	if err := web.DecodeJSON(c, &in, maxAuthBody); err != nil {
		return err
	}
	pair, err := a.auth.Refresh(ctx, in.Refresh)
	if err != nil {
		return err
	}
	return tokenJSON(c, pair)
}

// verify answers POST /auth/token/verify {token}: 200 when the token is valid.
func (a *API) verify(ctx context.Context, c *gin.Context) error {
	var in struct {
		Token string `json:"token"`
	}
	if err := web.DecodeJSON(c, &in, maxAuthBody); err != nil {
		return err
	}
	v, err := a.auth.Verify(ctx, in.Token)
	if err != nil {
		return err
	}
	return okJSON(c, v)
}

// logout answers POST /auth/logout {refresh} with 204.
func (a *API) logout(ctx context.Context, c *gin.Context) error {
	var in struct {
		Refresh string `json:"refresh"`
	}
	if err := web.DecodeJSON(c, &in, maxAuthBody); err != nil {
		return err
	}
	if err := a.auth.Logout(ctx, in.Refresh); err != nil {
		return err
	}
	return noContent(c)
}

// me answers GET /users/me.
func (a *API) me(ctx context.Context, c *gin.Context) error {
	u, err := a.auth.Me(ctx)
	if err != nil {
		return err
	}
	return okJSON(c, u)
}

// changeOwnPassword answers POST /users/me/password {old_password, new_password} with
// 204; the user logs in again.
func (a *API) changeOwnPassword(ctx context.Context, c *gin.Context) error {
	var in struct {
		OldPassword string `json:"old_password"`
		NewPassword string `json:"new_password"`
	}
	if err := web.DecodeJSON(c, &in, maxAuthBody); err != nil {
		return err
	}
	if err := a.auth.ChangeOwnPassword(ctx, in.OldPassword, in.NewPassword, c.ClientIP()); err != nil {
		return err
	}
	return noContent(c)
}

// listUsers answers GET /users?cursor=&limit=.
func (a *API) listUsers(ctx context.Context, c *gin.Context) error {
	limit, err := queryLimit(c)
	if err != nil {
		return err
	}
	p, err := a.auth.ListUsers(ctx, auth.ListFilter{Cursor: c.Query("cursor"), Limit: limit})
	if err != nil {
		return err
	}
	return okJSON(c, p)
}

// createUser answers POST /users {email, password, is_admin} with 201.
func (a *API) createUser(ctx context.Context, c *gin.Context) error {
	var in struct {
		Email    string `json:"email"`
		Password string `json:"password"`
		IsAdmin  bool   `json:"is_admin"`
	}
	if err := web.DecodeJSON(c, &in, maxAuthBody); err != nil {
		return err
	}
	u, err := a.auth.CreateUser(ctx, auth.NewUser{Email: in.Email, Password: in.Password, IsAdmin: in.IsAdmin})
	if err != nil {
		return err
	}
	return createdJSON(c, u)
}

// getUser answers GET /users/{id}.
func (a *API) getUser(ctx context.Context, c *gin.Context) error {
	id, err := web.PathID(c, "id", userNotFound)
	if err != nil {
		return err
	}
	u, err := a.auth.GetUser(ctx, id)
	if err != nil {
		return err
	}
	return okJSON(c, u)
}

// patchUser answers PATCH /users/{id} {email, password, is_admin, is_active}; absent
// fields stay.
func (a *API) patchUser(ctx context.Context, c *gin.Context) error {
	id, err := web.PathID(c, "id", userNotFound)
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
	u, err := a.auth.UpdateUser(ctx, id, auth.UserChange{Email: in.Email, Password: in.Password, IsAdmin: in.IsAdmin, IsActive: in.IsActive})
	if err != nil {
		return err
	}
	return okJSON(c, u)
}

// deleteUser answers DELETE /users/{id} with 204.
func (a *API) deleteUser(ctx context.Context, c *gin.Context) error {
	id, err := web.PathID(c, "id", userNotFound)
	if err != nil {
		return err
	}
	if err := a.auth.DeleteUser(ctx, id); err != nil {
		return err
	}
	return noContent(c)
}
