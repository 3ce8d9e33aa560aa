package token

import (
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestParseKeyRing(t *testing.T) {
	t.Parallel()
	seed := base64.StdEncoding.EncodeToString(make([]byte, ed25519.SeedSize))
	good := []string{
		strings.Repeat("s", 32),
		"k1:" + strings.Repeat("a", 32) + ",k0:" + strings.Repeat("b", 40),
		"ed:ed25519:" + seed,
	}
	for _, spec := range good {
		if _, err := ParseKeyRing(spec); err != nil {
			t.Errorf("ParseKeyRing(%.12q...): %v", spec, err)
		}
	}
	bad := map[string]string{
		"":                             "empty",
		"short":                        "at least 32 bytes",
		"k1:" + strings.Repeat("a", 8): "at least 32 bytes",
		"k1:" + strings.Repeat("a", 32) + ",k1:" + strings.Repeat("b", 32): "twice",
		"k1:ed25519:not-base64!":      "seed",
		":" + strings.Repeat("a", 32): "kid:secret",
	}
	for spec, want := range bad {
		_, err := ParseKeyRing(spec)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseKeyRing(%.12q...) = %v, want an error mentioning %q", spec, err, want)
		}
		if err != nil && strings.Contains(err.Error(), "aaaaaaaa") {
			t.Errorf("the error shows the secret: %v", err)
		}
	}
}

func TestIssueVerify(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	seed := base64.StdEncoding.EncodeToString([]byte(strings.Repeat("e", ed25519.SeedSize)))
	for _, spec := range []string{"h1:" + strings.Repeat("s", 32), "ed1:ed25519:" + seed} {
		ring, err := ParseKeyRing(spec)
		if err != nil {
			t.Fatal(err)
		}
		iss := NewIssuer(ring, Config{Now: clock})
		raw, claims, err := iss.Issue(Access, "42", "tenant-a", Claims{Admin: true, Version: 3})
		if err != nil {
			t.Fatal(err)
		}
		got, err := iss.Verify(raw, Access, "tenant-a")
		if err != nil || got.Subject != "42" || !got.Admin || got.Version != 3 || got.ID != claims.ID {
			t.Fatalf("%s: Verify = %+v, %v", spec[:3], got, err)
		}
		for name, check := range map[string]func() error{
			"other audience": func() error { _, err := iss.Verify(raw, Access, "tenant-b"); return err },
			"wrong kind":     func() error { _, err := iss.Verify(raw, Refresh, "tenant-a"); return err },
			"tampered":       func() error { _, err := iss.Verify(raw[:len(raw)-2]+"xx", Access, "tenant-a"); return err },
			"garbage":        func() error { _, err := iss.Verify("not.a.jwt", Access, "tenant-a"); return err },
		} {
			if err := check(); !errors.Is(err, ErrInvalid) {
				t.Errorf("%s: %s accepted (%v)", spec[:3], name, err)
			}
		}
	}
}

func TestExpiryAndRotation(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	ring, _ := ParseKeyRing("old:" + strings.Repeat("o", 32))
	iss := NewIssuer(ring, Config{Now: func() time.Time { return now }, AccessTTL: time.Minute, Leeway: 10 * time.Second})
	raw, _, _ := iss.Issue(Access, "1", "t", Claims{})

	now = now.Add(65 * time.Second) // expired, but within the leeway
	if _, err := iss.Verify(raw, Access, "t"); err != nil {
		t.Errorf("within leeway: %v", err)
	}
	now = now.Add(10 * time.Second)
	if _, err := iss.Verify(raw, Access, "t"); !errors.Is(err, ErrInvalid) {
		t.Errorf("expired beyond leeway accepted: %v", err)
	}
	now = now.Add(-75 * time.Second)

	// A new key signs; the old one still verifies until it is removed.
	if err := ring.Replace([]Key{{ID: "new", Alg: "HS256", Secret: []byte(strings.Repeat("n", 32))}, {ID: "old", Alg: "HS256", Secret: []byte(strings.Repeat("o", 32))}}); err != nil {
		t.Fatal(err)
	}
	if _, err := iss.Verify(raw, Access, "t"); err != nil {
		t.Errorf("old key retired too early: %v", err)
	}
	fresh, _, _ := iss.Issue(Access, "1", "t", Claims{})
	if err := ring.Replace([]Key{{ID: "new", Alg: "HS256", Secret: []byte(strings.Repeat("n", 32))}}); err != nil {
		t.Fatal(err)
	}
	if _, err := iss.Verify(raw, Access, "t"); !errors.Is(err, ErrInvalid) {
		t.Errorf("token of a removed key accepted: %v", err)
	}
	if _, err := iss.Verify(fresh, Access, "t"); err != nil {
		t.Errorf("token of the new key refused: %v", err)
	}
	if err := ring.Replace(nil); err == nil {
		t.Error("an empty key ring was accepted")
	}
}
