package controlplane

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/tenantplane/tenantplane/provisioner"
)

func TestFleetMigrationAPI(t *testing.T) {
	t.Parallel()
	b := setup(t, Config{}, setupOptions{fleet: true})
	tok := b.adminToken(t)
	auth := []string{"Authorization", "Bearer " + tok}
	for _, slug := range []string{"mig-one", "mig-two", "mig-three"} {
		b.do(t, "POST", "/api/v1/tenants", signupBody(slug)).wantStatus(t, http.StatusCreated)
	}

	b.do(t, "POST", "/api/v1/migrations", map[string]any{}).wantStatus(t, http.StatusUnauthorized)
	if code := b.do(t, "POST", "/api/v1/migrations", `{"parallel": "many"}`, auth...).wantStatus(t, http.StatusBadRequest).errorCode(t); code != "invalid_field" {
		t.Errorf("bad parallel: code %s", code)
	}
	if code := b.do(t, "POST", "/api/v1/migrations", map[string]any{"parallel": 1000}, auth...).wantStatus(t, http.StatusBadRequest).errorCode(t); code != "invalid_parallel" {
		t.Errorf("parallel 1000: code %s", code)
	}
	if code := b.do(t, "GET", "/api/v1/migrations/not-a-run", nil, auth...).wantStatus(t, http.StatusNotFound).errorCode(t); code != "run_not_found" {
		t.Errorf("unknown run: code %s", code)
	}

	r := b.do(t, "POST", "/api/v1/migrations", map[string]any{"parallel": 2}, auth...).wantStatus(t, http.StatusAccepted)
	var started struct{ ID string }
	if err := json.Unmarshal(r.body, &started); err != nil || started.ID == "" {
		t.Fatalf("start answer %s: %v", r.body, err)
	}
	if r.header.Get("Location") != "/api/v1/migrations/"+started.ID {
		t.Errorf("Location = %q", r.header.Get("Location"))
	}
	var run provisioner.Run
	deadline := time.Now().Add(time.Minute)
	for {
		r := b.do(t, "GET", "/api/v1/migrations/"+started.ID, nil, auth...).wantStatus(t, http.StatusOK)
		if err := json.Unmarshal(r.body, &run); err != nil {
			t.Fatal(err)
		}
		if run.State != provisioner.RunRunning {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("run still running after a minute: %s", r.body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Every tenant was migrated to the newest version at signup: nothing to do.
	if run.State != provisioner.RunDone || run.Total != 3 || run.Skipped != 3 || run.Failed != 0 {
		t.Errorf("run = %+v", run)
	}
	r = b.do(t, "GET", "/api/v1/migrations?limit=5", nil, auth...).wantStatus(t, http.StatusOK)
	var list struct{ Items []provisioner.Run }
	if err := json.Unmarshal(r.body, &list); err != nil || len(list.Items) != 1 || list.Items[0].ID != started.ID {
		t.Errorf("list = %s (%v)", r.body, err)
	}
}

func TestFleetMigrationAPIDisabled(t *testing.T) {
	t.Parallel()
	b := setup(t, Config{})
	tok := b.adminToken(t)
	if code := b.do(t, "POST", "/api/v1/migrations", map[string]any{}, "Authorization", "Bearer "+tok).wantStatus(t, http.StatusServiceUnavailable).errorCode(t); code != "migrations_unavailable" {
		t.Errorf("code %s", code)
	}
}
