package platform_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/tenantplane/tenantplane/apperr"
	"github.com/tenantplane/tenantplane/internal/pgtest"
	"github.com/tenantplane/tenantplane/password"
	"github.com/tenantplane/tenantplane/platform"
	"github.com/tenantplane/tenantplane/provisioner"
)

// cheap keeps password hashing fast in tests.
var cheap = password.Params{Memory: 1024, Time: 1, Threads: 1, KeyLen: 32, SaltLen: 16}

var lastUser = apperr.New(apperr.Conflict, "last_platform_user", "")

func setup(t *testing.T) *platform.Users {
	t.Helper()
	dbURL := pgtest.NewDatabase(t, pgtest.URL(t))
	if _, err := provisioner.MigrateShared(context.Background(), dbURL); err != nil {
		t.Fatalf("migrating: %v", err)
	}
	return platform.NewUsers(platform.NewStore(pgtest.Pool(t, dbURL)), password.NewHasher(cheap, 0))
}

func create(t *testing.T, users *platform.Users, addr string) {
	t.Helper()
	if _, err := users.Create(context.Background(), addr, "a-long-passphrase"); err != nil {
		t.Fatalf("creating %s: %v", addr, err)
	}
}

func TestDeactivateKeepsOneActiveUser(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	users := setup(t)
	create(t, users, "a@ops.test")
	create(t, users, "b@ops.test")
	if _, err := users.Deactivate(ctx, "a@ops.test"); err != nil {
		t.Fatalf("deactivating one of two: %v", err)
	}
	if _, err := users.Deactivate(ctx, "a@ops.test"); err != nil {
		t.Errorf("deactivating an inactive user again: %v", err)
	}
	if _, err := users.Deactivate(ctx, "B@ops.test"); !errors.Is(err, lastUser) {
		t.Fatalf("deactivating the last active user: %v, want last_platform_user", err)
	}
	if _, err := users.Deactivate(ctx, "nobody@ops.test"); apperr.KindOf(err) != apperr.NotFound {
		t.Errorf("unknown user: %v, want not found", err)
	}
	if _, err := users.Authenticate(ctx, "a@ops.test", "a-long-passphrase"); err == nil {
		t.Error("a deactivated user logged in")
	}
	if _, err := users.Authenticate(ctx, "b@ops.test", "a-long-passphrase"); err != nil {
		t.Errorf("the remaining user cannot log in: %v", err)
	}
}

func TestChangePassword(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	users := setup(t)
	create(t, users, "a@ops.test")
	if _, err := users.ChangePassword(ctx, "a@ops.test", "short"); apperr.KindOf(err) != apperr.Invalid {
		t.Errorf("weak password: %v, want invalid", err)
	}
	if _, err := users.ChangePassword(ctx, "a@ops.test", "another-long-passphrase"); err != nil {
		t.Fatal(err)
	}
	if _, err := users.Authenticate(ctx, "a@ops.test", "a-long-passphrase"); err == nil {
		t.Error("the old password still logs in")
	}
	if _, err := users.Authenticate(ctx, "a@ops.test", "another-long-passphrase"); err != nil {
		t.Errorf("the new password does not log in: %v", err)
	}
}

// Two operators deactivating the last two active users at once: exactly one wins, and
// one user stays active. Each round starts from two active users.
func TestConcurrentDeactivationsLeaveOneActive(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	users := setup(t)
	create(t, users, "u0@ops.test")
	survivor := "u0@ops.test"
	for round := 1; round <= 10; round++ {
		other := fmt.Sprintf("u%d@ops.test", round)
		create(t, users, other)
		pair := []string{survivor, other}
		errs := make([]error, 2)
		var wg sync.WaitGroup
		for i, e := range pair {
			wg.Go(func() { _, errs[i] = users.Deactivate(ctx, e) })
		}
		wg.Wait()
		won := 0
		for i, err := range errs {
			switch {
			case err == nil:
				won++
			case errors.Is(err, lastUser):
				survivor = pair[i]
			default:
				t.Fatalf("round %d: deactivating %s: %v", round, pair[i], err)
			}
		}
		if won != 1 {
			t.Fatalf("round %d: %d of two racing deactivations of the last two users succeeded, want 1 (%v)", round, won, errs)
		}
		list, err := users.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var active []string
		for _, u := range list {
			if u.IsActive {
				active = append(active, u.Email)
			}
		}
		if len(active) != 1 || active[0] != survivor {
			t.Fatalf("round %d: active users %v, want [%s]", round, active, survivor)
		}
	}
}
