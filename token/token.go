// Package token issues and verifies the platform's JWTs: access and refresh tokens for
// tenant users (audience: the tenant) and platform users (audience: the platform). Keys
// live in a key ring addressed by the `kid` header, so keys rotate without a restart:
// a new key signs, older ones still verify until they are removed.
package token

import (
	"cmp"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
	lru "github.com/hashicorp/golang-lru/v2"
)

// Key is one signing key: HS256 with Secret, or EdDSA with Private/Public.
type Key struct {
	ID      string
	Alg     string // "HS256" or "EdDSA"
	Secret  []byte
	Private ed25519.PrivateKey
	Public  ed25519.PublicKey
}

// KeyRing holds the keys tokens are signed and verified with. It is safe for
// concurrent use; Replace swaps keys while the process runs.
type KeyRing struct {
	// mu guards keys and signer.
	mu     sync.RWMutex
	keys   map[string]Key
	signer string
	// gen counts Replace calls: verified tokens cached under an older generation are
	// checked again, so a removed key stops verifying at once.
	gen atomic.Uint64
}

// ParseKeyRing reads a key ring from its configuration string: either one plain secret
// (HS256, kid derived from it), or comma-separated entries `kid:secret` for HS256 and
// `kid:ed25519:<base64 seed>` for EdDSA. The first entry signs; all verify.
// Secrets must be at least 32 bytes.
func ParseKeyRing(spec string) (*KeyRing, error) {
	spec = strings.TrimSpace(spec)
	if spec == "" {
		return nil, errors.New("empty key ring")
	}
	var keys []Key
	if !strings.Contains(spec, ":") {
		sum := sha256.Sum256([]byte(spec))
		keys = append(keys, Key{ID: hex.EncodeToString(sum[:4]), Alg: "HS256", Secret: []byte(spec)})
	} else {
		for _, entry := range strings.Split(spec, ",") {
			kid, rest, ok := strings.Cut(strings.TrimSpace(entry), ":")
			if !ok || kid == "" || rest == "" {
				return nil, fmt.Errorf("key entry %q: want kid:secret", redact(entry))
			}
			if seed, ok := strings.CutPrefix(rest, "ed25519:"); ok {
				b, err := base64.StdEncoding.DecodeString(seed)
				if err != nil || len(b) != ed25519.SeedSize {
					return nil, fmt.Errorf("key %q: ed25519 seed must be %d bytes of base64", kid, ed25519.SeedSize)
				}
				priv := ed25519.NewKeyFromSeed(b)
				keys = append(keys, Key{ID: kid, Alg: "EdDSA", Private: priv, Public: priv.Public().(ed25519.PublicKey)})
				continue
			}
			keys = append(keys, Key{ID: kid, Alg: "HS256", Secret: []byte(rest)})
		}
	}
	r := &KeyRing{}
	if err := r.Replace(keys); err != nil {
		return nil, err
	}
	return r, nil
}

func redact(s string) string {
	if kid, _, ok := strings.Cut(s, ":"); ok {
		return kid + ":***"
	}
	return "***"
}

// Replace swaps in a new set of keys; the first signs. It returns an error (and keeps
// the old keys) when a key is unusable.
func (r *KeyRing) Replace(keys []Key) error {
	if len(keys) == 0 {
		return errors.New("key ring needs at least one key")
	}
	m := make(map[string]Key, len(keys))
	for _, k := range keys {
		if _, dup := m[k.ID]; dup {
			return fmt.Errorf("key id %q appears twice", k.ID)
		}
		switch k.Alg {
		case "HS256":
			if len(k.Secret) < 32 {
				return fmt.Errorf("key %q: HS256 secret must be at least 32 bytes", k.ID)
			}
		case "EdDSA":
			if len(k.Public) != ed25519.PublicKeySize {
				return fmt.Errorf("key %q: missing ed25519 public key", k.ID)
			}
		default:
			return fmt.Errorf("key %q: unsupported algorithm %q", k.ID, k.Alg)
		}
		m[k.ID] = k
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.keys, r.signer = m, keys[0].ID
	r.gen.Add(1)
	return nil
}

func (r *KeyRing) signingKey() Key {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.keys[r.signer]
}

func (r *KeyRing) lookup(kid string) (Key, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	k, ok := r.keys[kid]
	return k, ok
}

// Kind tells access tokens from refresh tokens; one is never accepted as the other.
type Kind string

// Token kinds.
const (
	Access  Kind = "access"
	Refresh Kind = "refresh"
)

// Claims are the claims of every token.
type Claims struct {
	jwt.RegisteredClaims
	Kind Kind `json:"typ"`
	// Admin is the tenant superuser (or platform user) flag at issue time.
	Admin bool `json:"adm,omitempty"`
	// Version is the user's token version at issue time; bumping it revokes tokens.
	Version int `json:"ver,omitempty"`
	// Family groups refresh tokens descended from one login.
	Family string `json:"fam,omitempty"`
}

// Config configures an Issuer.
type Config struct {
	Issuer     string        // iss of every token (default "tenantplane")
	AccessTTL  time.Duration // default 5 minutes
	RefreshTTL time.Duration // default 24 hours
	Leeway     time.Duration // clock skew allowed on exp/nbf/iat (default 30 s)
	// CacheSize is how many verified tokens are remembered, so that a token presented
	// again skips parsing and signature checks (default 10,000; negative: no cache).
	// Expiry, audience and kind are still checked on every use, and replacing the key
	// ring forgets them all.
	CacheSize int
	Now       func() time.Time
}

// Issuer signs and verifies tokens with a key ring.
type Issuer struct {
	ring  *KeyRing
	cfg   Config
	cache *lru.Cache[string, verified] // nil when disabled
}

// verified is a token that passed every check, under key ring generation gen.
type verified struct {
	claims Claims
	gen    uint64
}

// NewIssuer returns an Issuer using ring.
func NewIssuer(ring *KeyRing, cfg Config) *Issuer {
	if cfg.Issuer == "" {
		cfg.Issuer = "tenantplane"
	}
	if cfg.AccessTTL <= 0 {
		cfg.AccessTTL = 5 * time.Minute
	}
	if cfg.RefreshTTL <= 0 {
		cfg.RefreshTTL = 24 * time.Hour
	}
	if cfg.Leeway <= 0 {
		cfg.Leeway = 30 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	i := &Issuer{ring: ring, cfg: cfg}
	if cfg.CacheSize >= 0 {
		i.cache, _ = lru.New[string, verified](cmp.Or(cfg.CacheSize, 10_000)) // errors only for size <= 0
	}
	return i
}

// TTL returns the lifetime of tokens of the kind.
func (i *Issuer) TTL(k Kind) time.Duration {
	if k == Refresh {
		return i.cfg.RefreshTTL
	}
	return i.cfg.AccessTTL
}

// Issue signs a token of kind k for subject in audience. Fields of c other than the
// registered claims and Kind are kept (Admin, Version, Family); its ID is generated
// when empty. It returns the token and the claims it carries.
func (i *Issuer) Issue(k Kind, subject, audience string, c Claims) (string, *Claims, error) {
	now := i.cfg.Now()
	c.Kind = k
	c.Issuer = i.cfg.Issuer
	c.Subject = subject
	c.Audience = jwt.ClaimStrings{audience}
	c.IssuedAt = jwt.NewNumericDate(now)
	c.NotBefore = jwt.NewNumericDate(now)
	c.ExpiresAt = jwt.NewNumericDate(now.Add(i.TTL(k)))
	if c.ID == "" {
		c.ID = uuid.NewString()
	}
	key := i.ring.signingKey()
	var t *jwt.Token
	var signKey any
	if key.Alg == "EdDSA" {
		t, signKey = jwt.NewWithClaims(jwt.SigningMethodEdDSA, c), key.Private
	} else {
		t, signKey = jwt.NewWithClaims(jwt.SigningMethodHS256, c), key.Secret
	}
	t.Header["kid"] = key.ID
	s, err := t.SignedString(signKey)
	if err != nil {
		return "", nil, fmt.Errorf("signing token: %w", err)
	}
	return s, &c, nil
}

// ErrInvalid is returned by Verify for any token that must not be accepted; the
// wrapped detail is for logs, never for clients.
var ErrInvalid = errors.New("invalid token")

// Verify parses and checks a token: algorithm pinned to the key its kid names,
// signature, exp required (with leeway), iss, aud equal to audience, and kind.
// Every failure wraps ErrInvalid.
func (i *Issuer) Verify(tokenString string, k Kind, audience string) (*Claims, error) {
	if i.cache != nil {
		if v, ok := i.cache.Get(tokenString); ok && v.gen == i.ring.gen.Load() {
			return i.recheck(v.claims, k, audience)
		}
	}
	gen := i.ring.gen.Load()
	var c Claims
	parser := jwt.NewParser(
		jwt.WithValidMethods([]string{"HS256", "EdDSA"}),
		jwt.WithExpirationRequired(),
		jwt.WithIssuer(i.cfg.Issuer),
		jwt.WithAudience(audience),
		jwt.WithLeeway(i.cfg.Leeway),
		jwt.WithIssuedAt(),
		jwt.WithTimeFunc(i.cfg.Now),
	)
	_, err := parser.ParseWithClaims(tokenString, &c, func(t *jwt.Token) (any, error) {
		kid, _ := t.Header["kid"].(string)
		key, ok := i.ring.lookup(kid)
		if !ok {
			return nil, fmt.Errorf("unknown kid %q", kid)
		}
		if t.Method.Alg() != key.Alg {
			return nil, fmt.Errorf("algorithm %s does not match key %q", t.Method.Alg(), kid)
		}
		if key.Alg == "EdDSA" {
			return key.Public, nil
		}
		return key.Secret, nil
	})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if c.Kind != k {
		return nil, fmt.Errorf("%w: a %s token where %s was expected", ErrInvalid, c.Kind, k)
	}
	if c.Subject == "" || c.ID == "" {
		return nil, fmt.Errorf("%w: missing sub or jti", ErrInvalid)
	}
	if i.cache != nil {
		i.cache.Add(tokenString, verified{claims: c, gen: gen})
	}
	return &c, nil
}

// recheck applies to a cached, once verified token the checks that can change with time
// or with the caller: expiry (with leeway), audience and kind.
func (i *Issuer) recheck(c Claims, k Kind, audience string) (*Claims, error) {
	if c.ExpiresAt == nil || !i.cfg.Now().Before(c.ExpiresAt.Add(i.cfg.Leeway)) {
		return nil, fmt.Errorf("%w: token is expired", ErrInvalid)
	}
	if !slices.Contains(c.Audience, audience) {
		return nil, fmt.Errorf("%w: token has invalid audience", ErrInvalid)
	}
	if c.Kind != k {
		return nil, fmt.Errorf("%w: a %s token where %s was expected", ErrInvalid, c.Kind, k)
	}
	return &c, nil
}
