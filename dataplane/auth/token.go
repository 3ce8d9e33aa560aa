package auth

import (
	"context"
	"math"
	"net/http"
	"strconv"

	"github.com/gin-gonic/gin"
	"github.com/google/uuid"

	"github.com/tenantplane/tenantplane/apperr"
	"github.com/tenantplane/tenantplane/dataplane/tenantdb"
	"github.com/tenantplane/tenantplane/email"
	"github.com/tenantplane/tenantplane/tenant"
	"github.com/tenantplane/tenantplane/token"
	"github.com/tenantplane/tenantplane/web"
)

// maxAuthBody bounds the bodies of the auth endpoints.
const maxAuthBody = 16 << 10

// Pair is the answer of login and refresh.
type Pair struct {
	Access    string `json:"access"`
	Refresh   string `json:"refresh"`
	TokenType string `json:"token_type"`
	ExpiresIn int    `json:"expires_in"` // seconds until the access token expires
}

var errBadCredentials = apperr.New(apperr.Unauthenticated, "invalid_credentials", "invalid email or password")

// login answers POST /auth/token {email, password}. Unknown emails, inactive users and
// wrong passwords get the same answer after the same work; failures are throttled per
// (tenant, email) and per client IP.
func (s *Service) login(c *gin.Context) error {
	sc, err := tenantdb.From(c)
	if err != nil {
		return err
	}
	var in struct {
		Email    string `json:"email"`
		Password string `json:"password"`
	}
	if err := web.DecodeJSON(c, &in, maxAuthBody); err != nil {
		return err
	}
	if in.Email == "" || in.Password == "" {
		return apperr.New(apperr.Invalid, "invalid", "email and password are required")
	}
	u, err := s.checkPassword(c, sc, in.Email, in.Password)
	if err != nil {
		return err
	}
	ctx := c.Request.Context()
	var pair *Pair
	err = sc.Write(ctx, func(db tenantdb.DB) error {
		pair, err = s.issuePair(ctx, db, sc.Tenant, u, uuid.NewString())
		return err
	})
	if err != nil {
		return err
	}
	c.JSON(http.StatusOK, pair)
	return nil
}

// CheckPassword checks email and password against the request's tenant's users, with
// the throttle and the constant work of the API's login, and returns the user. Unknown
// emails, inactive users and wrong passwords all get the same Unauthenticated error
// (invalid_credentials); a throttled client gets a RateLimited one (too_many_attempts,
// with Retry-After set).
func (s *Service) CheckPassword(c *gin.Context, addr, password string) (*User, error) {
	sc, err := tenantdb.From(c)
	if err != nil {
		return nil, err
	}
	return s.checkPassword(c, sc, addr, password)
}

func (s *Service) checkPassword(c *gin.Context, sc *tenantdb.Scope, addr, password string) (*User, error) {
	ctx := c.Request.Context()
	keys := s.throttle.keys(sc.Tenant.ID, addr, c.ClientIP())
	if wait, blocked := s.throttle.blocked(keys); blocked {
		c.Header("Retry-After", strconv.Itoa(int(math.Ceil(wait.Seconds()))))
		return nil, apperr.New(apperr.RateLimited, "too_many_attempts", "too many failed logins; try again later")
	}
	var u *User
	var err error
	if email.Plausible(addr) {
		err = sc.Read(ctx, func(db tenantdb.DB) error {
			u, err = userByEmail(ctx, db, addr)
			return err
		})
		if err != nil && apperr.KindOf(err) != apperr.NotFound {
			return nil, err
		}
	}
	hash := ""
	if u != nil {
		hash = u.passwordHash
	}
	ok, err := s.hasher.Verify(ctx, password, hash)
	if err != nil && ctx.Err() == nil {
		s.log.Error("checking password", "tenant", sc.Tenant.Slug, "user_id", userID(u), "error", err)
	}
	if !ok || u == nil || !u.IsActive {
		s.throttle.fail(keys)
		s.log.Info("login failed", "tenant", sc.Tenant.Slug, "client_ip", c.ClientIP())
		return nil, errBadCredentials
	}
	if s.hasher.NeedsRehash(u.passwordHash) {
		if h, err := s.hasher.Hash(ctx, password); err == nil {
			_ = sc.Write(ctx, func(db tenantdb.DB) error { return setPasswordHash(ctx, db, u.ID, h) })
		}
	}
	return u, nil
}

func userID(u *User) int64 {
	if u == nil {
		return 0
	}
	return u.ID
}

// issuePair signs an access and a refresh token for u, and records the refresh token in
// the family.
func (s *Service) issuePair(ctx context.Context, db tenantdb.DB, t *tenant.Tenant, u *User, family string) (*Pair, error) {
	sub := strconv.FormatInt(u.ID, 10)
	access, _, err := s.issuer.Issue(token.Access, sub, t.ID, token.Claims{Admin: u.IsAdmin, Version: u.tokenVersion})
	if err != nil {
		return nil, err
	}
	refresh, rc, err := s.issuer.Issue(token.Refresh, sub, t.ID, token.Claims{Version: u.tokenVersion, Family: family})
	if err != nil {
		return nil, err
	}
	if err := insertRefresh(ctx, db, rc.ID, u.ID, family, rc.ExpiresAt.Time); err != nil {
		return nil, err
	}
	return &Pair{Access: access, Refresh: refresh, TokenType: "Bearer", ExpiresIn: int(s.issuer.TTL(token.Access).Seconds())}, nil
}

// parseRefresh verifies a refresh token of the request's tenant.
func (s *Service) parseRefresh(raw string, t *tenant.Tenant) (*token.Claims, int64, error) {
	claims, err := s.issuer.Verify(raw, token.Refresh, t.ID)
	if err != nil {
		return nil, 0, errInvalidToken
	}
	id, err := strconv.ParseInt(claims.Subject, 10, 64)
	if err != nil || id <= 0 {
		return nil, 0, errInvalidToken
	}
	if _, err := uuid.Parse(claims.ID); err != nil {
		return nil, 0, errInvalidToken
	}
	if _, err := uuid.Parse(claims.Family); err != nil {
		return nil, 0, errInvalidToken
	}
	return claims, id, nil
}

// refresh answers POST /auth/token/refresh {refresh}: the token is single use and
// replaced by a new pair of the same family. Presenting a token that was already used
// (or revoked) revokes the whole family.
func (s *Service) refresh(c *gin.Context) error {
	sc, err := tenantdb.From(c)
	if err != nil {
		return err
	}
	var in struct {
		Refresh string `json:"refresh"`
	}
	if err := web.DecodeJSON(c, &in, maxAuthBody); err != nil {
		return err
	}
	claims, uid, err := s.parseRefresh(in.Refresh, sc.Tenant)
	if err != nil {
		return err
	}
	ctx := c.Request.Context()
	var pair *Pair
	reused := false
	err = sc.Write(ctx, func(db tenantdb.DB) error {
		row, err := lockRefresh(ctx, db, claims.ID)
		if err != nil {
			return err
		}
		if row.UserID != uid || row.Family != claims.Family {
			return errInvalidToken
		}
		if row.Revoked || row.ReplacedBy {
			n, err := revokeFamily(ctx, db, row.Family)
			if err != nil {
				return err
			}
			reused = true
			s.log.Warn("refresh token reused; family revoked", "tenant", sc.Tenant.Slug, "user_id", uid, "revoked", n)
			return nil // commit the revocation
		}
		u, err := userByID(ctx, db, uid)
		if err != nil {
			return err
		}
		if !u.IsActive || u.tokenVersion != claims.Version {
			if _, err := revokeFamily(ctx, db, row.Family); err != nil {
				return err
			}
			reused = true
			return nil
		}
		pair, err = s.issuePair(ctx, db, sc.Tenant, u, row.Family)
		if err != nil {
			return err
		}
		next, err := s.issuer.Verify(pair.Refresh, token.Refresh, sc.Tenant.ID)
		if err != nil {
			return err
		}
		return markReplaced(ctx, db, claims.ID, next.ID)
	})
	if apperr.KindOf(err) == apperr.NotFound {
		return errInvalidToken
	}
	if err != nil {
		return err
	}
	if reused {
		return errInvalidToken
	}
	c.JSON(http.StatusOK, pair)
	return nil
}

// verify answers POST /auth/token/verify {token}: 200 when the token (access or
// refresh) is valid for this tenant and its user still active, 401 otherwise.
func (s *Service) verify(c *gin.Context) error {
	sc, err := tenantdb.From(c)
	if err != nil {
		return err
	}
	var in struct {
		Token string `json:"token"`
	}
	if err := web.DecodeJSON(c, &in, maxAuthBody); err != nil {
		return err
	}
	kind := token.Access
	claims, err := s.issuer.Verify(in.Token, token.Access, sc.Tenant.ID)
	if err != nil {
		kind = token.Refresh
		if claims, err = s.issuer.Verify(in.Token, token.Refresh, sc.Tenant.ID); err != nil {
			return errInvalidToken
		}
	}
	id, err := strconv.ParseInt(claims.Subject, 10, 64)
	if err != nil || id <= 0 {
		return errInvalidToken
	}
	ctx := c.Request.Context()
	var u *User
	err = sc.Read(ctx, func(db tenantdb.DB) error {
		u, err = userByID(ctx, db, id)
		return err
	})
	if apperr.KindOf(err) == apperr.NotFound {
		return errInvalidToken
	}
	if err != nil {
		return err
	}
	if !u.IsActive || u.tokenVersion != claims.Version {
		return errInvalidToken
	}
	c.JSON(http.StatusOK, gin.H{"token_type": string(kind), "expires_at": claims.ExpiresAt.Time})
	return nil
}

// logout answers POST /auth/logout {refresh}: the token's whole family is revoked. It
// answers 204 even when the family was already revoked.
func (s *Service) logout(c *gin.Context) error {
	sc, err := tenantdb.From(c)
	if err != nil {
		return err
	}
	var in struct {
		Refresh string `json:"refresh"`
	}
	if err := web.DecodeJSON(c, &in, maxAuthBody); err != nil {
		return err
	}
	claims, uid, err := s.parseRefresh(in.Refresh, sc.Tenant)
	if err != nil {
		return err
	}
	ctx := c.Request.Context()
	err = sc.Write(ctx, func(db tenantdb.DB) error {
		row, err := lockRefresh(ctx, db, claims.ID)
		if err != nil {
			return err
		}
		if row.UserID != uid || row.Family != claims.Family {
			return errInvalidToken
		}
		_, err = revokeFamily(ctx, db, row.Family)
		return err
	})
	if apperr.KindOf(err) == apperr.NotFound {
		return errInvalidToken
	}
	if err != nil {
		return err
	}
	c.Status(http.StatusNoContent)
	return nil
}
