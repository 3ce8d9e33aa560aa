package dataplane

import (
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"

	"github.com/tenantplane/tenantplane/dataplane/auth"
	"github.com/tenantplane/tenantplane/token"
)

// forge signs claims for the tenant's admin (user 1) with the given method, kid and key.
func forge(t *testing.T, m jwt.SigningMethod, kid string, key any, mod func(*token.Claims)) string {
	t.Helper()
	now := time.Now()
	c := token.Claims{Kind: token.Access}
	c.Issuer = "tenantplane"
	c.Subject = "1"
	c.ID = uuid.NewString()
	c.IssuedAt = jwt.NewNumericDate(now)
	c.ExpiresAt = jwt.NewNumericDate(now.Add(5 * time.Minute))
	mod(&c)
	tok := jwt.NewWithClaims(m, c)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestJWTRejections(t *testing.T) {
	t.Parallel()
	e := setup(t, nil)
	ts := e.newTenants("acme", "globex")
	acme := ts[0]
	access, refresh := e.loginAdmin("acme")
	globexAccess, _ := e.loginAdmin("globex")
	secret := []byte(strings.Repeat("s", 40))
	aud := func(c *token.Claims) { c.Audience = jwt.ClaimStrings{acme.ID} }

	// The genuine article works, and a hand-made token with the right key too.
	e.mustDo(req{method: "GET", path: "/api/v1/users/me", host: host("acme"), token: access}, 200)
	e.mustDo(req{method: "GET", path: "/api/v1/users/me", host: host("acme"), token: forge(t, jwt.SigningMethodHS256, "k1", secret, aud)}, 200)

	cases := map[string]string{
		"alg none":       forge(t, jwt.SigningMethodNone, "k1", jwt.UnsafeAllowNoneSignatureType, aud),
		"wrong key":      forge(t, jwt.SigningMethodHS256, "k1", []byte(strings.Repeat("x", 40)), aud),
		"unknown kid":    forge(t, jwt.SigningMethodHS256, "k9", secret, aud),
		"no kid":         forge(t, jwt.SigningMethodHS256, "", secret, aud),
		"HS384 same key": forge(t, jwt.SigningMethodHS384, "k1", secret, aud),
		"missing exp": forge(t, jwt.SigningMethodHS256, "k1", secret, func(c *token.Claims) {
			aud(c)
			c.ExpiresAt = nil
		}),
		"expired beyond leeway": forge(t, jwt.SigningMethodHS256, "k1", secret, func(c *token.Claims) {
			aud(c)
			c.IssuedAt = jwt.NewNumericDate(time.Now().Add(-time.Hour))
			c.ExpiresAt = jwt.NewNumericDate(time.Now().Add(-2 * time.Minute))
		}),
		"wrong issuer": forge(t, jwt.SigningMethodHS256, "k1", secret, func(c *token.Claims) {
			aud(c)
			c.Issuer = "someone-else"
		}),
		"no audience":            forge(t, jwt.SigningMethodHS256, "k1", secret, func(*token.Claims) {}),
		"refresh used as access": refresh,
		"other tenant's token":   globexAccess,
		"garbage":                "not.a.jwt",
		"user version mismatch": forge(t, jwt.SigningMethodHS256, "k1", secret, func(c *token.Claims) {
			aud(c)
			c.Version = 7
		}),
		"unknown user": forge(t, jwt.SigningMethodHS256, "k1", secret, func(c *token.Claims) {
			aud(c)
			c.Subject = "999"
		}),
	}
	for name, tok := range cases {
		r := e.do(req{method: "GET", path: "/api/v1/users/me", host: host("acme"), token: tok})
		if r.status != http.StatusUnauthorized {
			t.Errorf("%s: got %d %s, want 401", name, r.status, r.raw)
		}
		if r.header.Get("WWW-Authenticate") == "" {
			t.Errorf("%s: 401 without WWW-Authenticate", name)
		}
	}
	r := e.do(req{method: "GET", path: "/api/v1/users/me", host: host("acme")})
	if r.status != http.StatusUnauthorized || r.code() != "unauthenticated" {
		t.Errorf("no token: %d %s", r.status, r.raw)
	}
	// Verify agrees.
	for name, tok := range map[string]string{"other tenant's": globexAccess, "alg none": cases["alg none"]} {
		if r := e.do(req{method: "POST", path: "/api/v1/auth/token/verify", host: host("acme"), body: map[string]string{"token": tok}}); r.status != 401 {
			t.Errorf("verify %s token: %d", name, r.status)
		}
	}
	for _, tok := range []string{access, refresh} {
		e.mustDo(req{method: "POST", path: "/api/v1/auth/token/verify", host: host("acme"), body: map[string]string{"token": tok}}, 200)
	}
}

func TestRefreshRotationAndLogout(t *testing.T) {
	t.Parallel()
	e := setup(t, nil)
	e.newTenants("acme")
	refreshWith := func(tok string) resp {
		return e.do(req{method: "POST", path: "/api/v1/auth/token/refresh", host: host("acme"), body: map[string]string{"refresh": tok}})
	}
	_, r0 := e.loginAdmin("acme")
	first := refreshWith(r0)
	if first.status != 200 {
		t.Fatalf("refresh: %d %s", first.status, first.raw)
	}
	m := first.json(t)
	a1, r1 := m["access"].(string), m["refresh"].(string)
	if r1 == r0 || m["token_type"] != "Bearer" || m["expires_in"].(float64) <= 0 {
		t.Fatalf("refresh answer: %v", m)
	}
	e.mustDo(req{method: "GET", path: "/api/v1/users/me", host: host("acme"), token: a1}, 200)

	// Presenting the used token again revokes the whole family, including r1.
	if r := refreshWith(r0); r.status != 401 {
		t.Fatalf("reused refresh token: %d %s", r.status, r.raw)
	}
	if r := refreshWith(r1); r.status != 401 {
		t.Fatalf("refresh token of a revoked family: %d %s", r.status, r.raw)
	}
	// Another login is another family, untouched by that.
	_, other := e.loginAdmin("acme")
	_, r2 := e.loginAdmin("acme")
	e.mustDo(req{method: "POST", path: "/api/v1/auth/logout", host: host("acme"), body: map[string]string{"refresh": r2}}, 204)
	if r := refreshWith(r2); r.status != 401 {
		t.Fatalf("refresh after logout: %d", r.status)
	}
	if r := refreshWith(other); r.status != 200 {
		t.Fatalf("refresh of an unrelated family: %d %s", r.status, r.raw)
	}
	// An access token is not a refresh token.
	a, _ := e.loginAdmin("acme")
	if r := refreshWith(a); r.status != 401 {
		t.Fatalf("access token used to refresh: %d", r.status)
	}
}

func TestKeyRotation(t *testing.T) {
	t.Parallel()
	e := setup(t, nil)
	e.newTenants("acme")
	old, _ := e.loginAdmin("acme")
	k1 := token.Key{ID: "k1", Alg: "HS256", Secret: []byte(strings.Repeat("s", 40))}
	k2 := token.Key{ID: "k2", Alg: "HS256", Secret: []byte(strings.Repeat("t", 40))}
	if err := e.ring.Replace([]token.Key{k2, k1}); err != nil {
		t.Fatal(err)
	}
	fresh, _ := e.loginAdmin("acme")
	if kid := headerKid(t, fresh); kid != "k2" {
		t.Fatalf("new tokens signed by %q, want k2", kid)
	}
	e.mustDo(req{method: "GET", path: "/api/v1/users/me", host: host("acme"), token: old}, 200)
	e.mustDo(req{method: "GET", path: "/api/v1/users/me", host: host("acme"), token: fresh}, 200)
	if err := e.ring.Replace([]token.Key{k2}); err != nil {
		t.Fatal(err)
	}
	e.mustDo(req{method: "GET", path: "/api/v1/users/me", host: host("acme"), token: old}, 401)
	e.mustDo(req{method: "GET", path: "/api/v1/users/me", host: host("acme"), token: fresh}, 200)
}

func headerKid(t *testing.T, tok string) string {
	t.Helper()
	p, _, err := jwt.NewParser().ParseUnverified(tok, &token.Claims{})
	if err != nil {
		t.Fatal(err)
	}
	kid, _ := p.Header["kid"].(string)
	return kid
}

func TestUsersAndDeactivation(t *testing.T) {
	t.Parallel()
	e := setup(t, nil)
	e.newTenants("acme")
	admin, _ := e.loginAdmin("acme")
	h := host("acme")
	id := e.createUser("acme", admin, "bob@acme.example")
	bob, bobRefresh := e.login("acme", "bob@acme.example", "user password 1")

	me := e.mustDo(req{method: "GET", path: "/api/v1/users/me", host: h, token: bob}, 200).json(t)
	if me["email"] != "bob@acme.example" || me["is_admin"] != false || me["password_hash"] != nil {
		t.Fatalf("me: %v", me)
	}
	// Non-admins cannot manage users.
	for _, r := range []req{
		{method: "GET", path: "/api/v1/users"},
		{method: "POST", path: "/api/v1/users", body: map[string]any{"email": "x@acme.example", "password": "long enough 1"}},
		{method: "PATCH", path: "/api/v1/users/1", body: map[string]any{"is_admin": false}},
		{method: "DELETE", path: "/api/v1/users/1"},
	} {
		r.host, r.token = h, bob
		if got := e.do(r); got.status != 403 {
			t.Errorf("bob %s %s: %d", r.method, r.path, got.status)
		}
	}
	// Duplicate email (any case) is a conflict.
	r := e.do(req{method: "POST", path: "/api/v1/users", host: h, token: admin, body: map[string]any{"email": "BOB@acme.example", "password": "long enough 1"}})
	if r.status != 409 || r.code() != "email_taken" {
		t.Fatalf("duplicate email: %d %s", r.status, r.raw)
	}
	// Pagination.
	for i := range 3 {
		e.createUser("acme", admin, "u"+strconv.Itoa(i)+"@acme.example")
	}
	seen := map[string]bool{}
	cursor := ""
	for pages := 0; ; pages++ {
		page := e.mustDo(req{method: "GET", path: "/api/v1/users?limit=2&cursor=" + cursor, host: h, token: admin}, 200).json(t)
		for _, it := range page["items"].([]any) {
			seen[it.(map[string]any)["email"].(string)] = true
		}
		cursor = page["next_cursor"].(string)
		if cursor == "" {
			break
		}
		if pages > 5 {
			t.Fatal("pagination does not end")
		}
	}
	if len(seen) != 5 {
		t.Fatalf("paginated users: %v", seen)
	}

	// Deactivation stops bob's tokens at once, access and refresh alike.
	e.mustDo(req{method: "PATCH", path: "/api/v1/users/" + strconv.FormatInt(id, 10), host: h, token: admin, body: map[string]any{"is_active": false}}, 200)
	e.mustDo(req{method: "GET", path: "/api/v1/users/me", host: h, token: bob}, 401)
	e.mustDo(req{method: "GET", path: "/api/v1/blogs", host: h, token: bob}, 401)
	e.mustDo(req{method: "POST", path: "/api/v1/blogs", host: h, token: bob, body: map[string]any{"title": "after deactivation"}}, 401)
	e.mustDo(req{method: "POST", path: "/api/v1/auth/token/refresh", host: h, body: map[string]string{"refresh": bobRefresh}}, 401)
	if got := e.mustDo(req{method: "GET", path: "/api/v1/blogs", host: h, token: admin}, 200); strings.Contains(string(got.raw), "after deactivation") {
		t.Fatalf("a deactivated user's write was kept: %s", got.raw)
	}
	r = e.do(req{method: "POST", path: "/api/v1/auth/token", host: h, body: map[string]string{"email": "bob@acme.example", "password": "user password 1"}})
	if r.status != 401 || r.code() != "invalid_credentials" {
		t.Fatalf("inactive user login: %d %s", r.status, r.raw)
	}
	// Reactivated, bob logs in again and changes his password; old tokens die.
	e.mustDo(req{method: "PATCH", path: "/api/v1/users/" + strconv.FormatInt(id, 10), host: h, token: admin, body: map[string]any{"is_active": true}}, 200)
	bob, _ = e.login("acme", "bob@acme.example", "user password 1")
	r = e.do(req{method: "POST", path: "/api/v1/users/me/password", host: h, token: bob, body: map[string]string{"old_password": "wrong password", "new_password": "new password 2"}})
	if r.status != 400 || r.code() != "wrong_password" {
		t.Fatalf("wrong old password: %d %s", r.status, r.raw)
	}
	r = e.do(req{method: "POST", path: "/api/v1/users/me/password", host: h, token: bob, body: map[string]string{"old_password": "user password 1", "new_password": "short"}})
	if r.status != 400 || r.code() != "weak_password" {
		t.Fatalf("weak new password: %d %s", r.status, r.raw)
	}
	e.mustDo(req{method: "POST", path: "/api/v1/users/me/password", host: h, token: bob, body: map[string]string{"old_password": "user password 1", "new_password": "new password 2"}}, 204)
	e.mustDo(req{method: "GET", path: "/api/v1/users/me", host: h, token: bob}, 401)
	bob, _ = e.login("acme", "bob@acme.example", "new password 2")

	// Granting admin takes effect on the next request, without a new token.
	e.mustDo(req{method: "PATCH", path: "/api/v1/users/" + strconv.FormatInt(id, 10), host: h, token: admin, body: map[string]any{"is_admin": true}}, 200)
	e.mustDo(req{method: "GET", path: "/api/v1/users", host: h, token: bob}, 200)
	// The last active admin cannot be removed: demote bob again, then try the founder.
	e.mustDo(req{method: "PATCH", path: "/api/v1/users/" + strconv.FormatInt(id, 10), host: h, token: admin, body: map[string]any{"is_admin": false}}, 200)
	for _, r := range []req{
		{method: "PATCH", path: "/api/v1/users/1", body: map[string]any{"is_admin": false}},
		{method: "PATCH", path: "/api/v1/users/1", body: map[string]any{"is_active": false}},
		{method: "DELETE", path: "/api/v1/users/1"},
	} {
		r.host, r.token = h, admin
		if got := e.do(r); got.status != 409 || got.code() != "last_admin" {
			t.Errorf("%s %s on the last admin: %d %s", r.method, r.path, got.status, got.raw)
		}
	}
	e.mustDo(req{method: "DELETE", path: "/api/v1/users/" + strconv.FormatInt(id, 10), host: h, token: admin}, 204)
	e.mustDo(req{method: "GET", path: "/api/v1/users/" + strconv.FormatInt(id, 10), host: h, token: admin}, 404)
	e.mustDo(req{method: "GET", path: "/api/v1/users/me", host: h, token: bob}, 401)
}

func TestLoginThrottle(t *testing.T) {
	t.Parallel()
	e := setup(t, func(c *Config) { c.Throttle = auth.ThrottleConfig{AccountFailures: 3, IPFailures: 100} })
	e.newTenants("acme")
	try := func(email, pw string) resp {
		return e.do(req{method: "POST", path: "/api/v1/auth/token", host: host("acme"), body: map[string]string{"email": email, "password": pw}})
	}
	// Known and unknown emails get the same answers, failure after failure.
	for _, email := range []string{"admin@acme.example", "nobody@acme.example"} {
		var got []string
		for range 4 {
			r := try(email, "wrong password")
			got = append(got, strconv.Itoa(r.status)+" "+r.code())
		}
		want := "401 invalid_credentials,401 invalid_credentials,401 invalid_credentials,429 too_many_attempts"
		if strings.Join(got, ",") != want {
			t.Errorf("%s: %v, want %s", email, got, want)
		}
	}
	// The right password is refused too while the account is throttled.
	if r := try("admin@acme.example", adminPassword); r.status != 429 || r.header.Get("Retry-After") == "" {
		t.Errorf("throttled correct login: %d %v", r.status, r.header)
	}
}
