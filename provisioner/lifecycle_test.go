package provisioner_test

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tenantplane/tenantplane/apperr"
	"github.com/tenantplane/tenantplane/provisioner"
	"github.com/tenantplane/tenantplane/tenant"
)

const grace = 7 * 24 * time.Hour

func TestLifecycleTransitions(t *testing.T) {
	t.Parallel()
	clk := newClock()
	b := setup(t, func(c *provisioner.Config) { c.Now = clk.Now })
	ctx := b.ctx
	p := b.prov
	tn := b.create(t, "lifecycle", tenant.IsolationSchema)

	step := func(name string, got *tenant.Tenant, err error, want tenant.Status) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if got.Status != want {
			t.Fatalf("%s: tenant is %s, want %s", name, got.Status, want)
		}
		if row := b.get(t, tn.ID); row.Status != want {
			t.Fatalf("%s: registry says %s, want %s", name, row.Status, want)
		}
	}
	invalid := func(name string, err error) {
		t.Helper()
		var ae *apperr.Error
		if !errors.As(err, &ae) || ae.Kind != apperr.Conflict || ae.Code != "invalid_transition" {
			t.Fatalf("%s: %v, want Conflict invalid_transition", name, err)
		}
	}

	_, err := p.Resume(ctx, "lifecycle", "test")
	invalid("resume active", err)
	_, err = p.Restore(ctx, "lifecycle", "test")
	invalid("restore active", err)
	_, err = p.Retry(ctx, "lifecycle", "test")
	invalid("retry active", err)
	_, err = p.Purge(ctx, "lifecycle", provisioner.PurgeOptions{DryRun: true})
	invalid("purge active", err)

	got, err := p.Suspend(ctx, "lifecycle", "test")
	step("suspend", got, err, tenant.StatusSuspended)
	if err := b.get(t, tn.ID).Serving(); apperr.KindOf(err) != apperr.Forbidden {
		t.Errorf("suspended tenant: Serving() = %v, want Forbidden", err)
	}
	_, err = p.Suspend(ctx, "lifecycle", "test")
	invalid("suspend suspended", err)
	got, err = p.Resume(ctx, "lifecycle", "test")
	step("resume", got, err, tenant.StatusActive)

	got, err = p.Suspend(ctx, "lifecycle", "test")
	step("suspend again", got, err, tenant.StatusSuspended)
	got, err = p.Delete(ctx, "lifecycle", "test", grace)
	step("delete suspended", got, err, tenant.StatusPendingDeletion)
	if got.DeleteAfter == nil || !got.DeleteAfter.Equal(clk.Now().Add(grace)) {
		t.Errorf("delete_after = %v, want now + grace", got.DeleteAfter)
	}
	_, err = p.Delete(ctx, "lifecycle", "test", grace)
	invalid("delete twice", err)
	_, err = p.Suspend(ctx, "lifecycle", "test")
	invalid("suspend pending deletion", err)
	_, err = p.Resume(ctx, "lifecycle", "test")
	invalid("resume pending deletion", err)

	// Within the grace period the tenant comes back whole; it had finished provisioning
	// so it comes back active.
	clk.Advance(grace - time.Minute)
	got, err = p.Restore(ctx, "lifecycle", "test")
	step("restore", got, err, tenant.StatusActive)
	if got.DeleteAfter != nil {
		t.Errorf("restored tenant keeps delete_after %v", got.DeleteAfter)
	}
	b.checkProvisioned(t, tn.ID)

	// After the grace period it cannot be restored.
	got, err = p.Delete(ctx, "lifecycle", "test", grace)
	step("delete active", got, err, tenant.StatusPendingDeletion)
	clk.Advance(grace)
	_, err = p.Restore(ctx, "lifecycle", "test")
	requireAppErr(t, err, apperr.Conflict, "grace_expired")
	if row := b.get(t, tn.ID); row.Status != tenant.StatusPendingDeletion {
		t.Errorf("refused restore changed the status to %s", row.Status)
	}

	want := []string{"create", "activate", "suspend", "resume", "suspend", "delete", "restore", "delete"}
	if ev := b.events(t, tn.ID); !slices.Equal(ev, want) {
		t.Errorf("audit log = %v, want %v", ev, want)
	}

	if _, err := p.Suspend(ctx, "no-such-tenant", "test"); apperr.KindOf(err) != apperr.NotFound {
		t.Errorf("suspending an unknown tenant: %v, want NotFound", err)
	}
}

func TestDeleteAndRestoreFailedTenant(t *testing.T) {
	t.Parallel()
	b := setup(t)
	broken := b.newProvisioner(t, func(c *provisioner.Config) {
		c.Shards = []provisioner.Shard{{Name: "a", URL: "postgres://postgres:x@127.0.0.1:1/postgres?sslmode=disable"}}
	})
	tn := b.register(t, broken, request("never-made-it", tenant.IsolationSchema))
	if got, err := broken.Provision(b.ctx, tn.ID); err != nil || got.Status != tenant.StatusFailed {
		t.Fatalf("Provision on a dead shard = %+v, %v; want failed", got, err)
	}
	if _, err := b.prov.Delete(b.ctx, tn.Slug, "test", grace); err != nil {
		t.Fatalf("deleting a failed tenant: %v", err)
	}
	got, err := b.prov.Restore(b.ctx, tn.Slug, "test")
	if err != nil || got.Status != tenant.StatusFailed || got.LastError == "" {
		t.Fatalf("Restore = %+v, %v; want it back as failed with its error", got, err)
	}
}

func TestPurge(t *testing.T) {
	t.Parallel()
	for _, iso := range isolations {
		t.Run(string(iso), func(t *testing.T) {
			t.Parallel()
			clk := newClock()
			idx := newRecordingIndexes()
			b := setup(t, func(c *provisioner.Config) { c.Now = clk.Now; c.Search = idx })
			ctx := b.ctx
			p := b.prov
			tn := b.create(t, "purge-me", iso)
			if _, err := p.Delete(ctx, tn.Slug, "test", grace); err != nil {
				t.Fatal(err)
			}

			// The dry run lists exactly what would go, and removes nothing.
			plan, err := p.Purge(ctx, tn.Slug, provisioner.PurgeOptions{DryRun: true, Actor: "test"})
			if err != nil {
				t.Fatalf("dry run: %v", err)
			}
			first := "drop schema " + tn.SchemaName + " on shard a"
			if iso == tenant.IsolationDatabase {
				first = "drop database " + tn.DatabaseName + " on shard a"
			}
			wantPlan := []string{first, "drop role " + tn.DBRole + " on shard a", "delete search index " + tn.SearchIndex}
			if !slices.Equal(plan, wantPlan) {
				t.Errorf("dry run plan = %q, want %q", plan, wantPlan)
			}
			if row := b.get(t, tn.ID); row.Status != tenant.StatusPendingDeletion {
				t.Errorf("dry run changed the status to %s", row.Status)
			}
			b.checkDataKept(t, tn)

			// Before the grace period ends only a forced purge goes ahead.
			_, err = p.Purge(ctx, tn.Slug, provisioner.PurgeOptions{Actor: "test"})
			requireAppErr(t, err, apperr.Conflict, "grace_period")
			b.checkDataKept(t, tn)

			// A session of the tenant still open does not block the purge.
			_ = b.tenantConn(t, tn)
			opt := provisioner.PurgeOptions{Actor: "test"}
			if iso == tenant.IsolationSchema {
				clk.Advance(grace)
			} else {
				opt.Force = true
			}
			plan, err = p.Purge(ctx, tn.Slug, opt)
			if err != nil {
				t.Fatalf("purge: %v", err)
			}
			if !slices.Equal(plan, wantPlan) {
				t.Errorf("purge removed %q, want %q", plan, wantPlan)
			}
			cluster := connect(t, ctx, b.shardURL(t, "a"))
			if owner := schemaOwner(t, ctx, cluster, tn.SchemaName); owner != "" {
				t.Errorf("schema %s still exists after purge", tn.SchemaName)
			}
			if owner := databaseOwner(t, ctx, cluster, tn.DatabaseName); owner != "" {
				t.Errorf("database %s still exists after purge", tn.DatabaseName)
			}
			if roleExists(ctx, cluster, tn.DBRole) {
				t.Errorf("role %s still exists after purge", tn.DBRole)
			}
			if _, dropped := idx.counts(tn.SearchIndex); dropped != 1 {
				t.Errorf("search index dropped %d times, want once", dropped)
			}
			row := b.get(t, tn.ID)
			if row.Status != tenant.StatusPurged {
				t.Errorf("registry row is %s after purge, want purged", row.Status)
			}
			if _, err := b.store.Get(ctx, tn.Slug); apperr.KindOf(err) != apperr.NotFound {
				t.Errorf("purged tenant still found by slug: %v", err)
			}
			_, err = p.Purge(ctx, tn.Slug, opt)
			if apperr.KindOf(err) != apperr.NotFound {
				t.Errorf("purging again: %v, want NotFound", err)
			}

			// The slug is free again; the names are not.
			again := b.create(t, tn.Slug, iso)
			if again.ID == tn.ID || again.SchemaName == tn.SchemaName || again.DBRole == tn.DBRole ||
				(iso == tenant.IsolationDatabase && again.DatabaseName == tn.DatabaseName) {
				t.Errorf("new tenant reuses the purged tenant's names: %+v", again)
			}
			b.checkProvisioned(t, again.ID)
			if purged := b.get(t, tn.ID); purged.Status != tenant.StatusPurged {
				t.Errorf("old row is %s, want purged", purged.Status)
			}
			// A live slug cannot be taken twice.
			_, err = p.Register(ctx, request(tn.Slug, iso))
			requireAppErr(t, err, apperr.Conflict, "slug_taken")
		})
	}
}

// TestPurgeCrashAfterEachStepIsFinishedByTheNextPurge kills the process right after
// each recorded step of the purge plan in turn: the tenant can no longer be restored,
// the next purge finishes it without redoing what was recorded, and nothing is left.
func TestPurgeCrashAfterEachStepIsFinishedByTheNextPurge(t *testing.T) {
	t.Parallel()
	steps := provisioner.PurgeSteps()
	if len(steps) == 0 || steps[len(steps)-1] != tenant.StepPurged {
		t.Fatalf("purge steps %v do not end with %s", steps, tenant.StepPurged)
	}
	for _, iso := range isolations {
		t.Run(string(iso), func(t *testing.T) {
			t.Parallel()
			idx := newRecordingIndexes()
			b := setup(t, func(c *provisioner.Config) { c.Search = idx })
			for _, step := range steps {
				slug := "purge-crash-" + strings.ReplaceAll(string(step), "_", "-")
				tn := b.create(t, slug, iso)
				if _, err := b.prov.Delete(b.ctx, slug, "test", grace); err != nil {
					t.Fatal(err)
				}
				opt := provisioner.PurgeOptions{Force: true, Actor: "test"}
				first := b.newProvisioner(t, func(c *provisioner.Config) { c.Search = idx })
				first.SetAfterStep(provisioner.CrashAt(step))
				if _, err := first.Purge(b.ctx, slug, opt); !errors.Is(err, provisioner.ErrCrash) {
					t.Fatalf("%s: Purge = %v, want the simulated crash", slug, err)
				}
				first.Close()
				row := b.get(t, tn.ID)
				if row.ProvisioningStep != step {
					t.Fatalf("%s: after the crash the recorded step is %s, want %s", slug, row.ProvisioningStep, step)
				}
				if step == tenant.StepPurged {
					if row.Status != tenant.StatusPurged {
						t.Fatalf("%s: crashed after its last step the tenant is %s, want purged", slug, row.Status)
					}
				} else {
					_, err := b.prov.Restore(b.ctx, slug, "test")
					requireAppErr(t, err, apperr.Conflict, "purge_started")
					next := b.newProvisioner(t, func(c *provisioner.Config) { c.Search = idx })
					if _, err := next.Purge(b.ctx, slug, opt); err != nil {
						t.Fatalf("%s: the next purge: %v", slug, err)
					}
				}
				if row := b.get(t, tn.ID); row.Status != tenant.StatusPurged {
					t.Errorf("%s: tenant is %s, want purged", slug, row.Status)
				}
				cluster := connect(t, b.ctx, b.shardURL(t, "a"))
				if owner := schemaOwner(t, b.ctx, cluster, tn.SchemaName); owner != "" {
					t.Errorf("%s: schema %s still exists", slug, tn.SchemaName)
				}
				if owner := databaseOwner(t, b.ctx, cluster, tn.DatabaseName); owner != "" {
					t.Errorf("%s: database %s still exists", slug, tn.DatabaseName)
				}
				if roleExists(b.ctx, cluster, tn.DBRole) {
					t.Errorf("%s: role %s still exists", slug, tn.DBRole)
				}
				if _, dropped := idx.counts(tn.SearchIndex); dropped != 1 {
					t.Errorf("%s: search index dropped %d times, want once", slug, dropped)
				}
				if ev := b.events(t, tn.ID); count(ev, "purge") != 1 {
					t.Errorf("%s: audit log %v, want one purge", slug, ev)
				}
			}
		})
	}
}

// TestOperationsOfOneTenantExcludeEachOther holds a tenant's operation lock as another
// process's run would: a purge is refused as busy and leaves the tenant as it is, and a
// provisioning run returns the tenant untouched for that run to finish.
func TestOperationsOfOneTenantExcludeEachOther(t *testing.T) {
	t.Parallel()
	b := setup(t)
	gone := b.create(t, "purge-busy", tenant.IsolationSchema)
	if _, err := b.prov.Delete(b.ctx, gone.Slug, "test", grace); err != nil {
		t.Fatal(err)
	}
	pending := b.register(t, b.prov, request("provision-busy", tenant.IsolationSchema))
	other := connect(t, b.ctx, b.controlURL)
	for _, id := range []string{gone.ID, pending.ID} {
		if _, err := other.Exec(b.ctx, `SELECT pg_advisory_lock($1)`, provisioner.LockKey(id)); err != nil {
			t.Fatal(err)
		}
	}

	_, err := b.prov.Purge(b.ctx, gone.Slug, provisioner.PurgeOptions{Force: true, Actor: "test"})
	requireAppErr(t, err, apperr.Conflict, "tenant_busy")
	if row := b.get(t, gone.ID); row.Status != tenant.StatusPendingDeletion || row.ProvisioningStep != tenant.StepActive {
		t.Errorf("busy purge changed the tenant: %s at %s", row.Status, row.ProvisioningStep)
	}
	b.checkDataKept(t, gone)

	got, err := b.prov.Provision(b.ctx, pending.ID)
	if err != nil || got.Status != tenant.StatusProvisioning || got.ProvisioningStep != tenant.StepRegistered {
		t.Fatalf("Provision while another run holds the lock = %+v, %v; want the tenant as registered", got, err)
	}

	// Once the other run is gone, both go ahead.
	if _, err := other.Exec(b.ctx, `SELECT pg_advisory_unlock_all()`); err != nil {
		t.Fatal(err)
	}
	if _, err := b.prov.Purge(b.ctx, gone.Slug, provisioner.PurgeOptions{Force: true, Actor: "test"}); err != nil {
		t.Fatalf("purge after the lock was released: %v", err)
	}
	if got, err := b.prov.Provision(b.ctx, pending.ID); err != nil || got.Status != tenant.StatusActive {
		t.Fatalf("Provision after the lock was released = %+v, %v; want active", got, err)
	}
}

// checkDataKept asserts that a tenant's data survives: its role logs in and its admin
// user is there.
func (b *bundle) checkDataKept(t *testing.T, tn *tenant.Tenant) {
	t.Helper()
	conn := b.tenantConn(t, tn)
	var n int
	if err := conn.QueryRow(b.ctx, `SELECT count(*) FROM users`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("tenant data after a refused or dry purge: %d users, %v", n, err)
	}
	if err := conn.Close(b.ctx); err != nil {
		t.Fatal(err)
	}
}
