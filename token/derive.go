package token

import (
	"crypto/hmac"
	"crypto/sha256"
)

// Derive returns a 32-byte key for purpose label, derived from the ring's signing key
// (HMAC-SHA256 of label under the key's secret, or under its ed25519 seed). Every
// replica configured with the same ring derives the same key, so a key derived here
// (the admin panels' CSRF key) is shared by all of them; a different label gives an
// unrelated key, so the derived key never signs a token.
func (r *KeyRing) Derive(label string) []byte {
	k := r.signingKey()
	secret := k.Secret
	if k.Alg == "EdDSA" {
		secret = k.Private.Seed()
	}
	m := hmac.New(sha256.New, secret)
	m.Write([]byte("tenantplane derived key: " + label))
	return m.Sum(nil)
}

// Derive is the issuer's key ring's Derive.
func (i *Issuer) Derive(label string) []byte { return i.ring.Derive(label) }
