// Package password hashes and checks passwords with argon2id, with a bound on how many
// hashes run at once so that a burst of logins cannot exhaust memory. It also checks the
// PBKDF2 hashes of users imported from the Django app (pbkdf2_sha256$...), through the
// same bound; NeedsRehash tells the caller to store an argon2id hash in their place on
// the first successful login.
package password

import (
	"context"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"unicode/utf8"

	"golang.org/x/crypto/argon2"

	"github.com/tenantplane/tenantplane/apperr"
)

// Params are argon2id cost parameters.
type Params struct {
	Memory  uint32 // KiB
	Time    uint32
	Threads uint8
	KeyLen  uint32
	SaltLen uint32
}

// OWASP is the OWASP-recommended minimum for argon2id: 19 MiB, 2 iterations, 1 lane.
var OWASP = Params{Memory: 19 * 1024, Time: 2, Threads: 1, KeyLen: 32, SaltLen: 16}

// Hasher hashes and verifies passwords. At most Concurrency hashes run at once (each
// holds Params.Memory); callers beyond that wait, or give up when their context ends.
type Hasher struct {
	params Params
	sem    chan struct{}
	dummy  string
}

// NewHasher returns a Hasher with the given parameters; concurrency <= 0 means the
// number of CPUs.
func NewHasher(p Params, concurrency int) *Hasher {
	if concurrency <= 0 {
		concurrency = runtime.NumCPU()
	}
	h := &Hasher{params: p, sem: make(chan struct{}, concurrency)}
	h.dummy = h.hash("tenantplane-dummy-password", make([]byte, p.SaltLen))
	return h
}

// MinLength and MaxLength bound accepted passwords (in characters and bytes).
const (
	MinLength = 8
	MaxLength = 256
)

// Validate checks a new password against the policy: 8 to 256 characters, valid UTF-8,
// not only digits, not equal to the email.
func Validate(pw, email string) error {
	if !utf8.ValidString(pw) {
		return apperr.New(apperr.Invalid, "weak_password", "password must be valid UTF-8")
	}
	if utf8.RuneCountInString(pw) < MinLength {
		return apperr.New(apperr.Invalid, "weak_password", "password must be at least %d characters", MinLength)
	}
	if len(pw) > MaxLength {
		return apperr.New(apperr.Invalid, "weak_password", "password must be at most %d bytes", MaxLength)
	}
	if strings.Trim(pw, "0123456789") == "" {
		return apperr.New(apperr.Invalid, "weak_password", "password must not be only digits")
	}
	if email != "" && strings.EqualFold(pw, email) {
		return apperr.New(apperr.Invalid, "weak_password", "password must differ from the email")
	}
	return nil
}

func (h *Hasher) acquire(ctx context.Context) error {
	select {
	case h.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("waiting to hash: %w", ctx.Err())
	}
}

func (h *Hasher) release() { <-h.sem }

// Hash returns the PHC-format argon2id hash of pw. It fails only when ctx ends first.
func (h *Hasher) Hash(ctx context.Context, pw string) (string, error) {
	if err := h.acquire(ctx); err != nil {
		return "", err
	}
	defer h.release()
	salt := make([]byte, h.params.SaltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("reading salt: %w", err)
	}
	return h.hash(pw, salt), nil
}

func (h *Hasher) hash(pw string, salt []byte) string {
	p := h.params
	key := argon2.IDKey([]byte(pw), salt, p.Time, p.Memory, p.Threads, p.KeyLen)
	b64 := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, p.Memory, p.Time, p.Threads,
		b64.EncodeToString(salt), b64.EncodeToString(key))
}

// ErrMalformed is returned by Verify for a stored hash it cannot read.
var ErrMalformed = errors.New("malformed password hash")

// Verify reports whether pw matches the stored hash: argon2id, or an imported Django
// pbkdf2_sha256 hash. An empty hash (unknown user) is checked against a dummy hash so
// that the answer takes as long as for a real one. It returns ErrMalformed for a hash it
// cannot read, and the context's error when ctx ends while waiting to hash.
func (h *Hasher) Verify(ctx context.Context, pw, encoded string) (bool, error) {
	if encoded == "" {
		encoded = h.dummy
		pw += "\x00" // never matches
	}
	derive, want, err := parse(encoded)
	if err != nil {
		return false, err
	}
	if err := h.acquire(ctx); err != nil {
		return false, err
	}
	defer h.release()
	got, err := derive(pw, len(want))
	if err != nil {
		return false, ErrMalformed
	}
	return subtle.ConstantTimeCompare(got, want) == 1, nil
}

// WellFormed reports whether encoded is a hash Verify can check, without hashing: for
// validating imported users.
func WellFormed(encoded string) bool {
	_, _, err := parse(encoded)
	return err == nil
}

// parse reads a stored hash into the key derivation it names and the key it holds.
func parse(encoded string) (derive func(pw string, keyLen int) ([]byte, error), want []byte, err error) {
	parts := strings.Split(encoded, "$")
	if len(parts) == 4 && parts[0] == djangoPBKDF2 {
		return parseDjango(parts)
	}
	if len(parts) != 6 || parts[0] != "" || parts[1] != "argon2id" {
		return nil, nil, ErrMalformed
	}
	var p Params
	var version int
	if _, err := fmt.Sscanf(parts[2], "v=%d", &version); err != nil || version != argon2.Version {
		return nil, nil, ErrMalformed
	}
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &p.Memory, &p.Time, &p.Threads); err != nil ||
		p.Memory == 0 || p.Time == 0 || p.Threads == 0 {
		return nil, nil, ErrMalformed
	}
	salt, err := base64.RawStdEncoding.DecodeString(parts[4])
	if err != nil {
		return nil, nil, ErrMalformed
	}
	want, err = base64.RawStdEncoding.DecodeString(parts[5])
	if err != nil || len(want) == 0 {
		return nil, nil, ErrMalformed
	}
	return func(pw string, keyLen int) ([]byte, error) {
		return argon2.IDKey([]byte(pw), salt, p.Time, p.Memory, p.Threads, uint32(keyLen)), nil
	}, want, nil
}

// djangoPBKDF2 is the algorithm name of Django's default password hasher.
const djangoPBKDF2 = "pbkdf2_sha256"

// maxDjangoIterations bounds the work one imported hash may ask for (Django 5.1 uses
// 870,000 to 1,200,000).
const maxDjangoIterations = 5_000_000

// parseDjango reads Django's "pbkdf2_sha256$<iterations>$<salt>$<base64 key>".
func parseDjango(parts []string) (func(pw string, keyLen int) ([]byte, error), []byte, error) {
	iter, err := strconv.Atoi(parts[1])
	if err != nil || iter < 1 || iter > maxDjangoIterations || parts[2] == "" {
		return nil, nil, ErrMalformed
	}
	want, err := base64.StdEncoding.DecodeString(parts[3])
	if err != nil || len(want) == 0 {
		return nil, nil, ErrMalformed
	}
	salt := []byte(parts[2])
	return func(pw string, keyLen int) ([]byte, error) {
		return pbkdf2.Key(sha256.New, pw, salt, iter, keyLen)
	}, want, nil
}

// NeedsRehash reports whether the stored hash uses weaker parameters than the hasher's,
// or another algorithm (an imported Django hash).
func (h *Hasher) NeedsRehash(encoded string) bool {
	want := fmt.Sprintf("$m=%d,t=%d,p=%d$", h.params.Memory, h.params.Time, h.params.Threads)
	return !strings.Contains(encoded, want)
}
