package provisioner_test

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/tenantplane/tenantplane/apperr"
	"github.com/tenantplane/tenantplane/provisioner"
	"github.com/tenantplane/tenantplane/tenant"
)

var isolations = []tenant.Isolation{tenant.IsolationSchema, tenant.IsolationDatabase}

func TestProvisionHappyPath(t *testing.T) {
	t.Parallel()
	for _, iso := range isolations {
		t.Run(string(iso), func(t *testing.T) {
			t.Parallel()
			idx := newRecordingIndexes()
			b := setup(t, func(c *provisioner.Config) { c.Search = idx })
			tn := b.register(t, b.prov, request("acme-corp", iso))
			if tn.Status != tenant.StatusProvisioning || tn.ProvisioningStep != "registered" || tn.Shard != "a" {
				t.Fatalf("registered tenant is %s at %s on %q, want provisioning at registered on a", tn.Status, tn.ProvisioningStep, tn.Shard)
			}
			if (tn.DatabaseName != "") != (iso == tenant.IsolationDatabase) {
				t.Fatalf("database name %q for %s isolation", tn.DatabaseName, iso)
			}
			got, err := b.prov.Provision(b.ctx, tn.ID)
			if err != nil {
				t.Fatalf("Provision: %v", err)
			}
			if got.Status != tenant.StatusActive {
				t.Fatalf("Provision ended %s (%s), want active", got.Status, got.LastError)
			}
			b.checkProvisioned(t, tn.ID)

			row := b.get(t, tn.ID)
			if created, _ := idx.counts(row.SearchIndex); row.SearchIndex == "" || created != 1 {
				t.Errorf("search index %q created %d times, want recorded and created once", row.SearchIndex, created)
			}
			if ev := b.events(t, tn.ID); !slices.Equal(ev, []string{"create", "activate"}) {
				t.Errorf("audit log = %v, want [create activate]", ev)
			}
			if err := row.Serving(); err != nil {
				t.Errorf("active tenant is not served: %v", err)
			}
			// Provisioning an active tenant again changes nothing.
			again, err := b.prov.Provision(b.ctx, tn.ID)
			if err != nil || again.Status != tenant.StatusActive {
				t.Fatalf("second Provision = %v, %v; want the active tenant", again, err)
			}
			b.checkProvisioned(t, tn.ID)
		})
	}
}

// TestCrashAfterEachStepIsFinishedByTheNextRun kills the process right after each
// recorded step of the provisioning plan in turn (and right after registration), so a
// step added to the plan is covered without touching the test.
func TestCrashAfterEachStepIsFinishedByTheNextRun(t *testing.T) {
	t.Parallel()
	crashSteps := append([]tenant.Step{tenant.StepRegistered}, provisioner.ProvisioningSteps()...)
	if len(crashSteps) < 3 || crashSteps[len(crashSteps)-1] != tenant.StepActive {
		t.Fatalf("provisioning steps %v do not end with %s", crashSteps, tenant.StepActive)
	}
	for _, iso := range isolations {
		t.Run(string(iso), func(t *testing.T) {
			t.Parallel()
			idx := newRecordingIndexes()
			b := setup(t, func(c *provisioner.Config) { c.Search = idx })
			for _, resume := range []string{"ResumeInterrupted", "Retry"} {
				for _, step := range crashSteps {
					slug := fmt.Sprintf("crash-%s-%s", strings.ReplaceAll(string(step), "_", "-"), strings.ToLower(resume[:5]))
					// The first process dies right after recording step.
					first := b.newProvisioner(t)
					first.SetAfterStep(provisioner.CrashAt(step))
					tn := b.register(t, first, request(slug, iso))
					if step != tenant.StepRegistered {
						_, err := first.Provision(b.ctx, tn.ID)
						if !errors.Is(err, provisioner.ErrCrash) {
							t.Fatalf("%s: Provision = %v, want the simulated crash", slug, err)
						}
					}
					first.Close()
					row := b.get(t, tn.ID)
					wantStatus := tenant.StatusProvisioning
					if step == tenant.StepActive {
						wantStatus = tenant.StatusActive
					}
					if row.Status != wantStatus || row.ProvisioningStep != step {
						t.Fatalf("%s: after the crash the tenant is %s at %s, want %s at %s", slug, row.Status, row.ProvisioningStep, wantStatus, step)
					}

					// The next process finishes it.
					next := b.newProvisioner(t)
					switch resume {
					case "ResumeInterrupted":
						n, err := next.ResumeInterrupted(b.ctx)
						want := 1
						if step == tenant.StepActive {
							want = 0
						}
						if err != nil || n != want {
							t.Fatalf("%s: ResumeInterrupted = %d, %v; want %d, nil", slug, n, err, want)
						}
					case "Retry":
						got, err := next.Retry(b.ctx, slug, "test")
						if step == tenant.StepActive {
							requireAppErr(t, err, apperr.Conflict, "invalid_transition")
							break
						}
						if err != nil || got.Status != tenant.StatusActive {
							t.Fatalf("%s: Retry = %+v, %v; want active", slug, got, err)
						}
					}
					b.checkProvisioned(t, tn.ID)
					row = b.get(t, tn.ID)
					if created, _ := idx.counts(row.SearchIndex); created != 1 {
						t.Errorf("%s: search index created %d times, want 1", slug, created)
					}
					if ev := b.events(t, tn.ID); count(ev, "activate") != 1 {
						t.Errorf("%s: audit log %v, want one activation", slug, ev)
					}
				}
			}
		})
	}
}

// TestStepNotRecordedOnceTheTenantLeftTheOperation covers a run still going when its
// tenant changed status under it: its step is refused and the registry row kept as it is.
func TestStepNotRecordedOnceTheTenantLeftTheOperation(t *testing.T) {
	t.Parallel()
	b := setup(t)
	tn := b.create(t, "moved-on", tenant.IsolationSchema)
	err := b.store.RecordStep(b.ctx, tn.ID, tenant.StatusProvisioning, tenant.StepSearchIndex, tenant.StepResult{SearchIndex: "late"})
	requireAppErr(t, err, apperr.Conflict, "invalid_transition")
	if row := b.get(t, tn.ID); row.ProvisioningStep != tenant.StepActive || row.SearchIndex == "late" {
		t.Errorf("refused step changed the registry: step %s, search index %q", row.ProvisioningStep, row.SearchIndex)
	}
	err = b.store.RecordStep(b.ctx, "6f1c4c52-0000-4000-8000-000000000000", tenant.StatusProvisioning, tenant.StepRole, tenant.StepResult{})
	if apperr.KindOf(err) != apperr.NotFound {
		t.Errorf("RecordStep of an unknown tenant = %v, want NotFound", err)
	}
}

// TestStepDoneButNotRecorded covers a process killed after a step's work committed and
// before the registry recorded it: the next run redoes the step over what exists.
func TestStepDoneButNotRecorded(t *testing.T) {
	t.Parallel()
	for _, iso := range isolations {
		t.Run(string(iso), func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			// Each case stops the first run after step and then does by hand what the
			// step after it does, as the killed process had.
			cases := []struct {
				name  string
				after tenant.Step
				done  func(t *testing.T, tn *tenant.Tenant)
			}{
				{"role", "registered", func(t *testing.T, tn *tenant.Tenant) {
					// An earlier run's role, with a password the registry does not know.
					shard := connect(t, b.ctx, b.shardURL(t, tn.Shard))
					if _, err := shard.Exec(b.ctx, `CREATE ROLE `+ident(tn.DBRole)+` LOGIN NOINHERIT PASSWORD 'stale-password'`); err != nil {
						t.Fatal(err)
					}
				}},
				{"schema", "role", func(t *testing.T, tn *tenant.Tenant) {
					shard := connect(t, b.ctx, b.shardURL(t, tn.Shard))
					if tn.Isolation == tenant.IsolationDatabase {
						if _, err := shard.Exec(b.ctx, `CREATE DATABASE `+ident(tn.DatabaseName)+` OWNER `+ident(tn.DBRole)); err != nil {
							t.Fatal(err)
						}
						return // the schema inside is left for the next run
					}
					if _, err := shard.Exec(b.ctx, `CREATE SCHEMA `+ident(tn.SchemaName)+` AUTHORIZATION `+ident(tn.DBRole)); err != nil {
						t.Fatal(err)
					}
				}},
				{"migrations", "schema", func(t *testing.T, tn *tenant.Tenant) {
					if _, err := b.prov.MigrateTenant(b.ctx, tn, -1); err != nil {
						t.Fatal(err)
					}
				}},
				{"first-migration-interrupted", "schema", func(t *testing.T, tn *tenant.Tenant) {
					// Killed inside the first migration: golang-migrate had marked it dirty
					// and the migration's own transaction rolled back.
					conn := b.tenantConn(t, tn)
					if _, err := conn.Exec(b.ctx, `CREATE TABLE schema_migrations (version bigint NOT NULL PRIMARY KEY, dirty boolean NOT NULL);
						INSERT INTO schema_migrations VALUES (`+fmt.Sprint(tenantVersions(t)[0])+`, true)`); err != nil {
						t.Fatal(err)
					}
				}},
				{"later-migration-interrupted", "schema", func(t *testing.T, tn *tenant.Tenant) {
					versions := tenantVersions(t)
					if len(versions) < 2 {
						t.Fatalf("this case needs at least two tenant migrations; the set has %d", len(versions))
					}
					if _, err := b.prov.MigrateTenant(b.ctx, tn, int(versions[0])); err != nil {
						t.Fatal(err)
					}
					conn := b.tenantConn(t, tn)
					if _, err := conn.Exec(b.ctx, `UPDATE schema_migrations SET version = $1, dirty = true`, versions[1]); err != nil {
						t.Fatal(err)
					}
				}},
				{"admin-user", "migrations", func(t *testing.T, tn *tenant.Tenant) {
					conn := b.tenantConn(t, tn)
					if _, err := conn.Exec(b.ctx, `INSERT INTO users (email, password_hash, is_admin) VALUES ($1, $2, true)`,
						tn.AdminEmail, tn.PendingAdminHash); err != nil {
						t.Fatal(err)
					}
				}},
			}
			for _, tc := range cases {
				first := b.newProvisioner(t)
				first.SetAfterStep(provisioner.CrashAt(tc.after))
				tn := b.register(t, first, request("done-"+tc.name, iso))
				if tc.after != "registered" {
					if _, err := first.Provision(b.ctx, tn.ID); !errors.Is(err, provisioner.ErrCrash) {
						t.Fatalf("%s: Provision = %v, want the simulated crash", tc.name, err)
					}
				}
				first.Close()
				tn = b.get(t, tn.ID)
				tc.done(t, tn)

				got, err := b.newProvisioner(t).Provision(b.ctx, tn.ID)
				if err != nil || got.Status != tenant.StatusActive {
					t.Fatalf("%s: Provision over the unrecorded step = %+v, %v; want active", tc.name, got, err)
				}
				b.checkProvisioned(t, tn.ID)
			}
		})
	}
}

func TestFailedStepMarksTenantFailedAndRetryFinishes(t *testing.T) {
	t.Parallel()

	t.Run("schema squatted", func(t *testing.T) {
		t.Parallel()
		for _, iso := range isolations {
			b := setup(t)
			tn := b.register(t, b.prov, request("squat-"+string(iso), iso))
			// Another role already owns an object with the tenant's schema (or database) name.
			shard := connect(t, b.ctx, b.shardURL(t, "a"))
			squatter := "squatter_" + tn.DBRole
			if _, err := shard.Exec(b.ctx, `CREATE ROLE `+ident(squatter)); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				if err := dropObjects(b.ctx, b.shardURL(t, "a"), "", "", squatter); err != nil {
					t.Errorf("dropping role %s: %v", squatter, err)
				}
			})
			squat := `CREATE SCHEMA ` + ident(tn.SchemaName) + ` AUTHORIZATION ` + ident(squatter)
			unsquat := `DROP SCHEMA ` + ident(tn.SchemaName)
			if iso == tenant.IsolationDatabase {
				squat = `CREATE DATABASE ` + ident(tn.DatabaseName) + ` OWNER ` + ident(squatter)
				unsquat = `DROP DATABASE ` + ident(tn.DatabaseName)
			}
			if _, err := shard.Exec(b.ctx, squat); err != nil {
				t.Fatal(err)
			}

			got, err := b.prov.Provision(b.ctx, tn.ID)
			if err != nil {
				t.Fatalf("%s: Provision: %v", iso, err)
			}
			row := b.get(t, tn.ID)
			if got.Status != tenant.StatusFailed || row.Status != tenant.StatusFailed {
				t.Fatalf("%s: tenant is %s (returned %s), want failed", iso, row.Status, got.Status)
			}
			if !strings.HasPrefix(row.LastError, "step schema:") || !strings.Contains(row.LastError, "owned by") {
				t.Errorf("%s: last_error = %q, want it to name the schema step and the owner clash", iso, row.LastError)
			}
			if row.ProvisioningStep != "role" {
				t.Errorf("%s: recorded step %s, want role", iso, row.ProvisioningStep)
			}
			if ev := b.events(t, tn.ID); count(ev, "provision_failed") != 1 {
				t.Errorf("%s: audit log %v, want one provision_failed", iso, ev)
			}
			if err := row.Serving(); !errors.Is(err, apperr.ErrUnavailable) {
				t.Errorf("%s: failed tenant served: %v", iso, err)
			}
			// The squatter's object was left alone.
			if iso == tenant.IsolationSchema {
				if owner := schemaOwner(t, b.ctx, shard, tn.SchemaName); owner != squatter {
					t.Errorf("squatted schema now owned by %q", owner)
				}
			} else if owner := databaseOwner(t, b.ctx, shard, tn.DatabaseName); owner != squatter {
				t.Errorf("squatted database now owned by %q", owner)
			}

			if _, err := shard.Exec(b.ctx, unsquat); err != nil {
				t.Fatal(err)
			}
			got, err = b.prov.Retry(b.ctx, tn.Slug, "test")
			if err != nil || got.Status != tenant.StatusActive {
				t.Fatalf("%s: Retry = %+v, %v; want active", iso, got, err)
			}
			b.checkProvisioned(t, tn.ID)
		}
	})

	t.Run("shard refuses connections", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		// Shard "a" is misconfigured: nothing listens there.
		broken := b.newProvisioner(t, func(c *provisioner.Config) {
			c.Shards = []provisioner.Shard{{Name: "a", URL: "postgres://postgres:x@127.0.0.1:1/postgres?sslmode=disable&connect_timeout=5"}}
		})
		tn := b.register(t, broken, request("refused", tenant.IsolationSchema))
		got, err := broken.Provision(b.ctx, tn.ID)
		if err != nil {
			t.Fatalf("Provision: %v", err)
		}
		row := b.get(t, tn.ID)
		if got.Status != tenant.StatusFailed || row.Status != tenant.StatusFailed || !strings.HasPrefix(row.LastError, "step role:") {
			t.Fatalf("tenant is %s with last_error %q, want failed at step role", row.Status, row.LastError)
		}
		// Retrying without a fix fails again, still not stuck in provisioning.
		got, err = broken.Retry(b.ctx, tn.Slug, "test")
		if err != nil || got.Status != tenant.StatusFailed {
			t.Fatalf("Retry on the broken shard = %+v, %v; want failed", got, err)
		}
		// Fixed configuration: the next process finishes it.
		got, err = b.newProvisioner(t).Retry(b.ctx, tn.Slug, "test")
		if err != nil || got.Status != tenant.StatusActive {
			t.Fatalf("Retry = %+v, %v; want active", got, err)
		}
		b.checkProvisioned(t, tn.ID)
	})
}

func TestMigrateTenantWithoutSchemaTouchesNothing(t *testing.T) {
	t.Parallel()
	for _, iso := range isolations {
		t.Run(string(iso), func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			p := b.newProvisioner(t)
			p.SetAfterStep(provisioner.CrashAt("role"))
			tn := b.register(t, p, request("no-schema", iso))
			if _, err := p.Provision(b.ctx, tn.ID); !errors.Is(err, provisioner.ErrCrash) {
				t.Fatalf("Provision = %v, want the simulated crash", err)
			}
			tn = b.get(t, tn.ID)
			publicDB := b.admin
			if iso == tenant.IsolationDatabase {
				// The database exists, the schema inside it does not.
				shard := connect(t, b.ctx, b.shardURL(t, "a"))
				if _, err := shard.Exec(b.ctx, `CREATE DATABASE `+ident(tn.DatabaseName)+` OWNER `+ident(tn.DBRole)); err != nil {
					t.Fatal(err)
				}
			}
			var before int64
			if err := b.admin.QueryRow(b.ctx, `SELECT version FROM public.schema_migrations`).Scan(&before); err != nil {
				t.Fatal(err)
			}

			_, err := b.prov.MigrateTenant(b.ctx, tn, -1)
			if err == nil || !strings.Contains(err.Error(), tn.SchemaName) || !strings.Contains(err.Error(), "does not exist") {
				t.Fatalf("MigrateTenant = %v, want an error saying schema %s does not exist", err, tn.SchemaName)
			}
			if iso == tenant.IsolationDatabase {
				conn := b.shardConn(t, tn)
				if got := tablesIn(t, b.ctx, conn, "public"); len(got) != 0 {
					t.Errorf("tenant database public schema gained %v", got)
				}
			}
			if got := tablesIn(t, b.ctx, publicDB, "public"); !slices.Equal(got, b.publicTables) {
				t.Errorf("control database public tables = %v, want %v", got, b.publicTables)
			}
			var after int64
			if err := b.admin.QueryRow(b.ctx, `SELECT version FROM public.schema_migrations`).Scan(&after); err != nil || after != before {
				t.Errorf("registry migration version %d -> %d (%v), want unchanged", before, after, err)
			}
			if row := b.get(t, tn.ID); row.MigrationVersion != 0 || row.MigrationDirty {
				t.Errorf("registry records version %d dirty %v for a tenant never migrated", row.MigrationVersion, row.MigrationDirty)
			}
		})
	}
}
