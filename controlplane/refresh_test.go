package controlplane

import (
	"context"
	"encoding/json"
	"net/http"
	"sync"
	"testing"

	"github.com/tenantplane/tenantplane/token"
)

func TestConcurrentRefreshesOfOneTokenHaveOneWinner(t *testing.T) {
	t.Parallel()
	// Fewer connections than presentations: a rotation holding a row lock must not wait
	// for a second connection while the others hold theirs waiting for that lock.
	b := setup(t, Config{}, setupOptions{noStart: true, maxConns: "8"})
	if _, err := b.users.Create(context.Background(), "ops@example.com", "a-good-password"); err != nil {
		t.Fatal(err)
	}
	r := b.do(t, "POST", "/api/v1/auth/token", map[string]string{"email": "ops@example.com", "password": "a-good-password"}).wantStatus(t, http.StatusOK)
	var pair tokenPair
	if err := json.Unmarshal(r.body, &pair); err != nil {
		t.Fatal(err)
	}
	claims, err := b.issuer.Verify(pair.Refresh, token.Refresh, Audience)
	if err != nil {
		t.Fatal(err)
	}

	const n = 20
	answers := make([]response, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			answers[i], errs[i] = b.send("POST", "/api/v1/auth/token/refresh", map[string]string{"refresh": pair.Refresh})
		})
	}
	wg.Wait()
	var won []tokenPair
	for i, a := range answers {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		switch a.status {
		case http.StatusOK:
			var next tokenPair
			if err := json.Unmarshal(a.body, &next); err != nil || next.Access == "" || next.Refresh == "" || next.Refresh == pair.Refresh {
				t.Fatalf("a winning refresh answered %s", a.body)
			}
			won = append(won, next)
		case http.StatusUnauthorized:
			if code := a.errorCode(t); code != "invalid_token" {
				t.Fatalf("a refused refresh has code %q, want invalid_token", code)
			}
		default:
			t.Fatalf("a refresh answered %d %s", a.status, a.body)
		}
	}
	if len(won) != 1 {
		t.Fatalf("%d refreshes won, want exactly 1", len(won))
	}

	// The others were reuses: the family is revoked, the winner's new token with it.
	var live int
	if err := b.db.QueryRow(context.Background(), `SELECT count(*) FROM platform_refresh_tokens WHERE family = $1 AND revoked_at IS NULL`,
		claims.Family).Scan(&live); err != nil {
		t.Fatal(err)
	}
	if live != 0 {
		t.Fatalf("%d tokens of the family are live after the reuses, want 0", live)
	}
	b.do(t, "POST", "/api/v1/auth/token/refresh", map[string]string{"refresh": won[0].Refresh}).wantStatus(t, http.StatusUnauthorized)
}
