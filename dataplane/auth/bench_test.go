package auth

import (
	"context"
	"strings"
	"testing"

	"github.com/tenantplane/tenantplane/password"
	"github.com/tenantplane/tenantplane/token"
)

// BenchmarkJWTVerify measures the verification of an access token, as every
// authenticated request does it.
func BenchmarkJWTVerify(b *testing.B) {
	ring, err := token.ParseKeyRing("k1:" + strings.Repeat("s", 40))
	if err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name  string
		cache int
	}{{"first-use", -1}, {"cached", 0}} {
		b.Run(bc.name, func(b *testing.B) {
			iss := token.NewIssuer(ring, token.Config{CacheSize: bc.cache})
			tok, _, err := iss.Issue(token.Access, "1", "tenant-id", token.Claims{Version: 3})
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := iss.Verify(tok, token.Access, "tenant-id"); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkArgon2idLogin measures password checks with the OWASP parameters, as many at
// once as the hasher allows (one per CPU); ns/op is the inverse of logins per second.
func BenchmarkArgon2idLogin(b *testing.B) {
	h := password.NewHasher(password.OWASP, 0)
	hash, err := h.Hash(context.Background(), "correct horse battery")
	if err != nil {
		b.Fatal(err)
	}
	b.SetParallelism(4)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if ok, err := h.Verify(context.Background(), "correct horse battery", hash); !ok || err != nil {
				b.Fatal("verification failed")
			}
		}
	})
}
