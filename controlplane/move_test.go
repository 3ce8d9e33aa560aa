package controlplane

import (
	"context"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/tenantplane/tenantplane/provisioner"
	"github.com/tenantplane/tenantplane/tenant"
)

// moveWait bounds how long a test waits for a move to finish.
const moveWait = 2 * time.Minute

// waitIsolation waits until the tenant is served with isolation and no move is left.
func (b *bundle) waitIsolation(t *testing.T, slug string, want tenant.Isolation) *tenant.Tenant {
	t.Helper()
	deadline := time.Now().Add(moveWait)
	for {
		tn, err := b.store.Get(context.Background(), slug)
		if err != nil {
			t.Fatal(err)
		}
		m, err := b.prov.MoveStatus(context.Background(), slug)
		if err != nil {
			t.Fatal(err)
		}
		if tn.Isolation == want && m == nil {
			return tn
		}
		if time.Now().After(deadline) {
			t.Fatalf("tenant %s is still %s (move %+v) after %v", slug, tn.Isolation, m, moveWait)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// The move endpoints check what they are given before starting anything, and a move
// started answers 202 and runs in the background, audited with the platform user.
func TestMoveOverTheAPI(t *testing.T) {
	t.Parallel()
	b := setup(t, Config{})
	b.dropTenantRoles(t)
	auth := bearer(b.adminToken(t))
	b.do(t, http.MethodPost, "/api/v1/tenants", signupBody("mover"))
	b.waitStatus(t, "mover", tenant.StatusActive)

	b.do(t, "POST", "/api/v1/tenants/mover/move", map[string]any{"isolation": "database"}).wantStatus(t, http.StatusUnauthorized)
	for _, c := range []struct {
		method, path string
		body         any
		status       int
		code         string
	}{
		{"GET", "/api/v1/tenants/mover/move", nil, 404, "no_move"},
		{"DELETE", "/api/v1/tenants/mover/move", nil, 404, "no_move"},
		{"GET", "/api/v1/tenants/nobody/move", nil, 404, "tenant_not_found"},
		{"POST", "/api/v1/tenants/nobody/move", map[string]any{"isolation": "database"}, 404, "tenant_not_found"},
		{"POST", "/api/v1/tenants/mover/move", map[string]any{"shard": "nowhere"}, 400, "invalid_shard"},
		{"POST", "/api/v1/tenants/mover/move", map[string]any{"shard": "a\x00b"}, 400, "invalid_shard"},
		{"POST", "/api/v1/tenants/mover/move", map[string]any{"isolation": "cluster"}, 400, "invalid_isolation"},
		{"POST", "/api/v1/tenants/mover/move", map[string]any{}, 400, "move_nothing"},
		{"POST", "/api/v1/tenants/mover/move", map[string]any{"shard": "default", "isolation": "schema"}, 400, "move_nothing"},
		{"POST", "/api/v1/tenants/mover/move", map[string]any{"isolation": "database", "speed": 1}, 400, ""},
	} {
		r := b.do(t, c.method, c.path, c.body, auth...)
		if r.status != c.status || (c.code != "" && r.errorCode(t) != c.code) {
			t.Errorf("%s %s %v: %d %s, want %d %s", c.method, c.path, c.body, r.status, r.body, c.status, c.code)
		}
	}

	r := b.do(t, "POST", "/api/v1/tenants/mover/move", map[string]any{"isolation": "database"}, auth...)
	if got := r.wantStatus(t, http.StatusAccepted).tenant(t); got.Slug != "mover" {
		t.Fatalf("202 answers tenant %q", got.Slug)
	}
	moved := b.waitIsolation(t, "mover", tenant.IsolationDatabase)
	if moved.WritesFrozen {
		t.Error("the moved tenant's writes are still frozen")
	}
	b.do(t, "GET", "/api/v1/tenants/mover/move", nil, auth...).wantStatus(t, http.StatusNotFound)
	events, err := b.store.Events(context.Background(), moved.ID)
	if err != nil {
		t.Fatal(err)
	}
	var byUser bool
	for _, e := range events {
		byUser = byUser || e.Actor == "root@platform.example.com"
	}
	if !byUser {
		t.Errorf("no audit event of the move names its platform user: %+v", events)
	}
}

// Many requests to move one tenant at once start one move: the others are refused with
// 409 (move_in_progress or tenant_busy), never a 5xx, and the tenant ends moved once.
func TestMoveConcurrentRequests(t *testing.T) {
	t.Parallel()
	b := setup(t, Config{})
	b.dropTenantRoles(t)
	auth := bearer(b.adminToken(t))
	b.do(t, http.MethodPost, "/api/v1/tenants", signupBody("racer"))
	b.waitStatus(t, "racer", tenant.StatusActive)

	const n = 8
	statuses := make(chan response, n)
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			statuses <- b.do(t, "POST", "/api/v1/tenants/racer/move", map[string]any{"isolation": "database"}, auth...)
		}()
	}
	wg.Wait()
	close(statuses)
	accepted := 0
	for r := range statuses {
		switch {
		case r.status == http.StatusAccepted:
			accepted++
		case r.status == http.StatusConflict:
			if code := r.errorCode(t); code != "move_in_progress" && code != "tenant_busy" {
				t.Errorf("a concurrent move answered 409 %s", code)
			}
		default:
			t.Errorf("a concurrent move answered %d %s", r.status, r.body)
		}
	}
	if accepted != 1 {
		t.Errorf("%d of %d concurrent moves were accepted, want 1", accepted, n)
	}
	b.waitIsolation(t, "racer", tenant.IsolationDatabase)
}

// A move interrupted midway (its process gone: here its context cancelled at the first
// step) is finished by POSTing again, as the CLI's tenants move finishes it; a POST
// asking for another target is refused with move_in_progress.
func TestMoveResumedOverTheAPI(t *testing.T) {
	t.Parallel()
	b := setup(t, Config{})
	b.dropTenantRoles(t)
	auth := bearer(b.adminToken(t))
	b.do(t, http.MethodPost, "/api/v1/tenants", signupBody("resumer"))
	b.waitStatus(t, "resumer", tenant.StatusActive)

	other, err := provisioner.New(b.store, provisioner.Config{Shards: []provisioner.Shard{{Name: "default", URL: b.dbURL}}})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	ctx, cancel := context.WithCancel(context.Background())
	_, err = other.Move(ctx, "resumer", provisioner.MoveRequest{
		Isolation: tenant.IsolationDatabase, Actor: "killed",
		Progress: func(provisioner.MoveState) { cancel() },
	})
	cancel()
	if err == nil {
		t.Fatal("the interrupted move finished")
	}
	if m, err := b.prov.MoveStatus(context.Background(), "resumer"); err != nil || m == nil {
		t.Fatalf("no move recorded after the interruption (%v)", err)
	}

	r := b.do(t, "POST", "/api/v1/tenants/resumer/move", map[string]any{"isolation": "schema"}, auth...)
	if r.status != http.StatusConflict || r.errorCode(t) != "move_in_progress" {
		t.Errorf("a move to another target answered %d %s, want 409 move_in_progress", r.status, r.body)
	}
	b.do(t, "POST", "/api/v1/tenants/resumer/move", map[string]any{}, auth...).wantStatus(t, http.StatusAccepted)
	if moved := b.waitIsolation(t, "resumer", tenant.IsolationDatabase); moved.WritesFrozen {
		t.Error("the resumed move left the tenant's writes frozen")
	}
}
