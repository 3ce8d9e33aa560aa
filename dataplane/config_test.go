package dataplane

import (
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tenantplane/tenantplane/password"
	"github.com/tenantplane/tenantplane/tenant"
	"github.com/tenantplane/tenantplane/token"
)

// TestConfigRefused checks that a bad configuration stops New with a clear error.
func TestConfigRefused(t *testing.T) {
	t.Parallel()
	ring, err := token.ParseKeyRing(strings.Repeat("k", 40))
	if err != nil {
		t.Fatal(err)
	}
	issuer := token.NewIssuer(ring, token.Config{AccessTTL: 5 * time.Minute})
	hasher := password.NewHasher(cheap, 1)
	store := tenant.NewStore(nil)
	var control *pgxpool.Pool // New only keeps it
	shards := map[string]string{"main": "postgres://db.example:5432/app"}
	for name, c := range map[string]struct {
		cfg  Config
		want string
	}{
		"no control database": {Config{Shards: shards}, "control database"},
		"no shard":            {Config{Control: control}, "no shard"},
		"bad shard url":       {Config{Control: control, Shards: map[string]string{"main": "postgres://[::1"}}, "shard"},
		"access ttl differs":  {Config{Control: control, Shards: shards, AccessTTL: time.Minute}, "access token TTL"},
		"negative budget":     {Config{Control: control, Shards: shards, ConnBudget: -1}, "positive"},
	} {
		_, err := New(c.cfg, store, issuer, hasher)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want an error about %q", name, err, c.want)
		}
	}
	if _, err := New(Config{Control: control, Shards: shards, AccessTTL: 5 * time.Minute}, store, issuer, hasher); err != nil {
		t.Errorf("good config refused: %v", err)
	}
}
