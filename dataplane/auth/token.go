package auth

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/google/uuid"

	"github.com/tenantplane/tenantplane/apperr"
	"github.com/tenantplane/tenantplane/dataplane/caller"
	"github.com/tenantplane/tenantplane/dataplane/pool"
	"github.com/tenantplane/tenantplane/dataplane/tenantdb"
	"github.com/tenantplane/tenantplane/email"
	"github.com/tenantplane/tenantplane/refresh"
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
	var pair Pair
	err = sc.Write(ctx, func(db pool.DB) error {
		_, err := refresh.Start(ctx, &refreshStore{db: db}, s.mint(sc.Tenant, u, &pair))
		return err
	})
	if err != nil {
		return nil, err
	}
	return &pair, nil
}

// CheckPassword checks email and password against the users of ctx's tenant, and
// returns the user. Each check first reserves an attempt on the throttle (package
// throttle: per (tenant, email) and per clientIP, shared by the replicas), before any
// hashing, and a success refunds it. Unknown emails, inactive users and wrong passwords
// get the same Unauthenticated error (invalid_credentials) after the same work; a
// throttled client gets a RateLimited one (too_many_attempts, with RetryAfter set) and
// nothing is checked.
func (s *Service) CheckPassword(ctx context.Context, addr, password, clientIP string) (*User, error) {
	sc, err := tenantdb.ScopeFrom(ctx)
	if err != nil {
		return nil, err
	}
	res, err := s.reserve(ctx, s.limits.Keys(sc.Tenant.ID, addr, clientIP)...)
	if err != nil {
		if apperr.KindOf(err) != apperr.RateLimited {
			s.log.Error("reserving a password check", "tenant", sc.Tenant.Slug, "error", err)
		}
		return nil, err
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
		s.log.Info("login failed", "tenant", sc.Tenant.Slug, "client_ip", clientIP)
		return nil, errBadCredentials
	}
	if err := res.Refund(ctx); err != nil {
		s.log.Warn("refunding a password check", "tenant", sc.Tenant.Slug, "error", err)
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

// mint returns the refresh.Mint of u's tokens at tenant t: it signs an access token and
// a refresh token of the family into pair and returns the refresh token's record.
func (s *Service) mint(t *tenant.Tenant, u *User, pair *Pair) refresh.Mint {
	return func(family string) (refresh.Record, error) {
		sub := strconv.FormatInt(u.ID, 10)
		access, _, err := s.issuer.Issue(token.Access, sub, t.ID, token.Claims{Admin: u.IsAdmin, Version: u.tokenVersion})
		if err != nil {
			return refresh.Record{}, fmt.Errorf("issuing access token: %w", err)
		}
		raw, rc, err := s.issuer.Issue(token.Refresh, sub, t.ID, token.Claims{Version: u.tokenVersion, Family: family})
		if err != nil {
			return refresh.Record{}, fmt.Errorf("issuing refresh token: %w", err)
		}
		*pair = Pair{Access: access, Refresh: raw, TokenType: "Bearer", ExpiresIn: int(s.issuer.TTL(token.Access).Seconds())}
		return refresh.Record{JTI: rc.ID, Subject: sub, Family: family, ExpiresAt: rc.ExpiresAt.Time}, nil
	}
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
// family by package refresh's rotation: the token is single use, and presenting one
// that was already used or revoked (or whose user is gone, inactive or has another
// token version now) revokes the whole family. It returns an Unauthenticated error
// (invalid_token) for any token that must not be accepted.
func (s *Service) Refresh(ctx context.Context, raw string) (*Pair, error) {
	sc, err := tenantdb.ScopeFrom(ctx)
	if err != nil {
		return nil, err
	}
	claims, _, err := s.parseRefresh(raw, sc.Tenant)
	if err != nil {
		return nil, err
	}
	var u *User
	var pair Pair
	inTx := func(ctx context.Context, fn func(*refreshStore) error) error {
		return sc.Write(ctx, func(db pool.DB) error { return fn(&refreshStore{db: db}) })
	}
	_, err = refresh.Rotate(ctx, inTx,
		refresh.Presented{JTI: claims.ID, Subject: claims.Subject, Family: claims.Family},
		refresh.Hooks[*refreshStore]{
			Check: func(ctx context.Context, rs *refreshStore, subject string) (bool, error) {
				var cerr error
				u, cerr = rs.user(ctx, subject)
				if apperr.KindOf(cerr) == apperr.NotFound {
					return false, nil
				}
				if cerr != nil {
					return false, cerr
				}
				return u.IsActive && u.tokenVersion == claims.Version, nil
			},
			Mint: func(family string) (refresh.Record, error) { return s.mint(sc.Tenant, u, &pair)(family) },
		})
	var refused *refresh.RefusedError
	if errors.As(err, &refused) && refused.Reason != refresh.Unknown {
		s.log.Warn("refresh token refused; family revoked", "tenant", sc.Tenant.Slug, "user_id", claims.Subject,
			"reason", refused.Reason, "revoked", refused.Revoked)
	}
	if errors.Is(err, refresh.ErrRefused) {
		return nil, caller.ErrInvalidToken
	}
	if err != nil {
		return nil, err
	}
	return &pair, nil
}

// Verify checks the token raw (access or refresh) for ctx's tenant and its user as
// stored now, and says what using it would: a refresh token whose row is revoked or
// replaced (after a logout, a rotation or a family revocation) is refused as Refresh
// would refuse it. It returns an Unauthenticated error (invalid_token) for a token that
// must not be accepted.
func (s *Service) Verify(ctx context.Context, raw string) (*Verified, error) {
	sc, err := tenantdb.ScopeFrom(ctx)
	if err != nil {
		return nil, err
	}
	kind := token.Access
	claims, err := s.issuer.Verify(raw, token.Access, sc.Tenant.ID)
	if err != nil {
		kind = token.Refresh
		if claims, _, err = s.parseRefresh(raw, sc.Tenant); err != nil {
			return nil, caller.ErrInvalidToken
		}
	}
	id, err := strconv.ParseInt(claims.Subject, 10, 64)
	if err != nil || id <= 0 {
		return nil, caller.ErrInvalidToken
	}
	var u *User
	live := true
	err = sc.Read(ctx, func(db pool.DB) error {
		if u, err = userByID(ctx, db, id); err != nil {
			return err
		}
		if kind == token.Refresh {
			live, err = liveRefresh(ctx, db, claims.ID, claims.Subject, claims.Family)
		}
		return err
	})
	if apperr.KindOf(err) == apperr.NotFound {
		return nil, caller.ErrInvalidToken
	}
	if err != nil {
		return nil, err
	}
	if !live || !u.IsActive || u.tokenVersion != claims.Version {
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
	claims, _, err := s.parseRefresh(raw, sc.Tenant)
	if err != nil {
		return err
	}
	return sc.Write(ctx, func(db pool.DB) error {
		rs := &refreshStore{db: db}
		st, found, err := rs.Lock(ctx, claims.ID)
		if err != nil {
			return err
		}
		if !found || st.Subject != claims.Subject || st.Family != claims.Family {
			return caller.ErrInvalidToken
		}
		_, err = rs.RevokeFamily(ctx, st.Family)
		return err
	})
}
