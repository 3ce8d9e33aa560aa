package auth

import (
	"context"
	"math"
	"strconv"
	"time"

	"github.com/google/uuid"

	"github.com/tenantplane/tenantplane/apperr"
	"github.com/tenantplane/tenantplane/dataplane/caller"
	"github.com/tenantplane/tenantplane/dataplane/pool"
	"github.com/tenantplane/tenantplane/dataplane/tenantdb"
	"github.com/tenantplane/tenantplane/email"
	"github.com/tenantplane/tenantplane/tenant"
	"github.com/tenantplane/tenantplane/token"
)

// Pair is the answer of login and refresh.
type Pair struct {
	Access    string `json:"access"`
	Refresh   string `json:"refresh"`
	TokenType string `json:"token_type"`
	ExpiresIn int    `json:"expires_in"` // seconds until the access token expires
}

// Verified is what Verify found of a valid token.
type Verified struct {
	ExpiresAt time.Time `json:"expires_at"`
	TokenType string    `json:"token_type"` // "access" or "refresh"
}

var errBadCredentials = apperr.New(apperr.Unauthenticated, "invalid_credentials", "invalid email or password")

// RetryAfter is the cause of a RateLimited error: how long the client should wait.
type RetryAfter time.Duration

func (r RetryAfter) Error() string { return "retry after " + time.Duration(r).String() }

// RetryAfterSeconds returns the wait in whole seconds, rounded up (web.RetryAfter).
func (r RetryAfter) RetryAfterSeconds() int { return int(math.Ceil(time.Duration(r).Seconds())) }

// Login checks email and password against the users of ctx's tenant (see CheckPassword)
// and returns a new token pair in a new refresh family. Errors as for CheckPassword,
// plus an Invalid error (invalid) when either is empty.
func (s *Service) Login(ctx context.Context, addr, password, clientIP string) (*Pair, error) {
	if addr == "" || password == "" {
		return nil, apperr.New(apperr.Invalid, "invalid", "email and password are required")
	}
	u, err := s.CheckPassword(ctx, addr, password, clientIP)
	if err != nil {
		return nil, err
	}
	sc, _ := tenantdb.ScopeFrom(ctx) // CheckPassword found it
	var pair *Pair
	err = sc.Write(ctx, func(db pool.DB) error {
		pair, err = s.issuePair(ctx, db, sc.Tenant, u, uuid.NewString())
		return err
	})
	if err != nil {
		return nil, err
	}
	return pair, nil
}

// CheckPassword checks email and password against the users of ctx's tenant, with the
// failed-login throttle per (tenant, email) and per clientIP, and returns the user.
// Unknown emails, inactive users and wrong passwords get the same Unauthenticated error
// (invalid_credentials) after the same work; a throttled client gets a RateLimited one
// (too_many_attempts) whose cause is a RetryAfter.
func (s *Service) CheckPassword(ctx context.Context, addr, password, clientIP string) (*User, error) {
	sc, err := tenantdb.ScopeFrom(ctx)
	if err != nil {
		return nil, err
	}
	keys := s.throttle.keys(sc.Tenant.ID, addr, clientIP)
	if wait, blocked := s.throttle.blocked(keys); blocked {
		return nil, &apperr.Error{Kind: apperr.RateLimited, Code: "too_many_attempts",
			Message: "too many failed logins; try again later", Err: RetryAfter(wait)}
	}
	var u *User
	if email.Plausible(addr) {
		err = sc.Read(ctx, func(db pool.DB) error {
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
		s.log.Info("login failed", "tenant", sc.Tenant.Slug, "client_ip", clientIP)
		return nil, errBadCredentials
	}
	if s.hasher.NeedsRehash(u.passwordHash) {
		if h, err := s.hasher.Hash(ctx, password); err == nil {
			_ = sc.Write(ctx, func(db pool.DB) error { return setPasswordHash(ctx, db, u.ID, h) })
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
func (s *Service) issuePair(ctx context.Context, db pool.DB, t *tenant.Tenant, u *User, family string) (*Pair, error) {
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

// parseRefresh verifies a refresh token of the tenant t.
func (s *Service) parseRefresh(raw string, t *tenant.Tenant) (*token.Claims, int64, error) {
	claims, err := s.issuer.Verify(raw, token.Refresh, t.ID)
	if err != nil {
		return nil, 0, caller.ErrInvalidToken
	}
	id, err := strconv.ParseInt(claims.Subject, 10, 64)
	if err != nil || id <= 0 {
		return nil, 0, caller.ErrInvalidToken
	}
	if _, err := uuid.Parse(claims.ID); err != nil {
		return nil, 0, caller.ErrInvalidToken
	}
	if _, err := uuid.Parse(claims.Family); err != nil {
		return nil, 0, caller.ErrInvalidToken
	}
	return claims, id, nil
}

// Refresh exchanges the refresh token raw of ctx's tenant for a new pair of the same
// family: the token is single use. Presenting a token that was already used (or
// revoked) revokes the whole family. It returns an Unauthenticated error (invalid_token)
// for any token that must not be accepted.
func (s *Service) Refresh(ctx context.Context, raw string) (*Pair, error) {
	sc, err := tenantdb.ScopeFrom(ctx)
	if err != nil {
		return nil, err
	}
	claims, uid, err := s.parseRefresh(raw, sc.Tenant)
	if err != nil {
		return nil, err
	}
	var pair *Pair
	err = sc.Write(ctx, func(db pool.DB) error {
		pair, err = s.rotate(ctx, db, sc.Tenant, claims, uid)
		return err
	})
	if apperr.KindOf(err) == apperr.NotFound {
		return nil, caller.ErrInvalidToken
	}
	if err != nil {
		return nil, err
	}
	if pair == nil { // reuse: the family's revocation was committed
		return nil, caller.ErrInvalidToken
	}
	return pair, nil
}

// rotate is the refresh-token rotation, in the transaction db: it replaces the
// presented token (claims, of user uid) by a new pair of its family, or, when the token
// was already used or revoked or its user changed, revokes the family and returns no
// pair (and no error, so that the revocation commits).
func (s *Service) rotate(ctx context.Context, db pool.DB, t *tenant.Tenant, claims *token.Claims, uid int64) (*Pair, error) {
	row, err := lockRefresh(ctx, db, claims.ID)
	if err != nil {
		return nil, err
	}
	if row.UserID != uid || row.Family != claims.Family {
		return nil, caller.ErrInvalidToken
	}
	if row.Revoked || row.ReplacedBy {
		n, err := revokeFamily(ctx, db, row.Family)
		if err != nil {
			return nil, err
		}
		s.log.Warn("refresh token reused; family revoked", "tenant", t.Slug, "user_id", uid, "revoked", n)
		return nil, nil
	}
	u, err := userByID(ctx, db, uid)
	if err != nil {
		return nil, err
	}
	if !u.IsActive || u.tokenVersion != claims.Version {
		_, err := revokeFamily(ctx, db, row.Family)
		return nil, err
	}
	pair, err := s.issuePair(ctx, db, t, u, row.Family)
	if err != nil {
		return nil, err
	}
	next, err := s.issuer.Verify(pair.Refresh, token.Refresh, t.ID)
	if err != nil {
		return nil, err
	}
	if err := markReplaced(ctx, db, claims.ID, next.ID); err != nil {
		return nil, err
	}
	return pair, nil
}

// Verify checks the token raw (access or refresh) for ctx's tenant and its user as
// stored now. It returns an Unauthenticated error (invalid_token) for a token that must
// not be accepted.
func (s *Service) Verify(ctx context.Context, raw string) (*Verified, error) {
	sc, err := tenantdb.ScopeFrom(ctx)
	if err != nil {
		return nil, err
	}
	kind := token.Access
	claims, err := s.issuer.Verify(raw, token.Access, sc.Tenant.ID)
	if err != nil {
		kind = token.Refresh
		if claims, err = s.issuer.Verify(raw, token.Refresh, sc.Tenant.ID); err != nil {
			return nil, caller.ErrInvalidToken
		}
	}
	id, err := strconv.ParseInt(claims.Subject, 10, 64)
	if err != nil || id <= 0 {
		return nil, caller.ErrInvalidToken
	}
	var u *User
	err = sc.Read(ctx, func(db pool.DB) error {
		u, err = userByID(ctx, db, id)
		return err
	})
	if apperr.KindOf(err) == apperr.NotFound {
		return nil, caller.ErrInvalidToken
	}
	if err != nil {
		return nil, err
	}
	if !u.IsActive || u.tokenVersion != claims.Version {
		return nil, caller.ErrInvalidToken
	}
	return &Verified{TokenType: string(kind), ExpiresAt: claims.ExpiresAt.Time}, nil
}

// Logout revokes the whole family of the refresh token raw of ctx's tenant; a family
// already revoked is no error. It returns an Unauthenticated error (invalid_token) for
// a token that must not be accepted.
func (s *Service) Logout(ctx context.Context, raw string) error {
	sc, err := tenantdb.ScopeFrom(ctx)
	if err != nil {
		return err
	}
	claims, uid, err := s.parseRefresh(raw, sc.Tenant)
	if err != nil {
		return err
	}
	err = sc.Write(ctx, func(db pool.DB) error {
		row, err := lockRefresh(ctx, db, claims.ID)
		if err != nil {
			return err
		}
		if row.UserID != uid || row.Family != claims.Family {
			return caller.ErrInvalidToken
		}
		_, err = revokeFamily(ctx, db, row.Family)
		return err
	})
	if apperr.KindOf(err) == apperr.NotFound {
		return caller.ErrInvalidToken
	}
	return err
}
