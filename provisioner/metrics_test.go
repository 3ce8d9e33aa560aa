package provisioner_test

import (
	"net/http/httptest"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/tenantplane/tenantplane/metrics"
	"github.com/tenantplane/tenantplane/provisioner"
	"github.com/tenantplane/tenantplane/tenant"
)

func TestMetricsCountOperations(t *testing.T) {
	t.Parallel()
	reg := metrics.New()
	b := setup(t, func(c *provisioner.Config) { c.Metrics = reg })
	tn := b.register(t, b.prov, request("counted", tenant.IsolationSchema))
	if got, err := b.prov.Provision(b.ctx, tn.ID); err != nil || got.Status != tenant.StatusActive {
		t.Fatalf("Provision = %+v, %v; want active", got, err)
	}
	// A migration that cannot run fails the operation.
	bad := b.newProvisioner(t, func(c *provisioner.Config) {
		c.TenantMigrations = fstest.MapFS{
			"000001_bad.up.sql":   {Data: []byte("SELECT no_such_function();\n")},
			"000001_bad.down.sql": {Data: []byte("SELECT 1;\n")},
		}
	})
	broken := b.register(t, bad, request("broken", tenant.IsolationSchema))
	if got, err := bad.Provision(b.ctx, broken.ID); err != nil || got.Status == tenant.StatusActive {
		t.Fatalf("Provision with a bad migration = %+v, %v; want failed", got, err)
	}
	rec := httptest.NewRecorder()
	reg.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	raw := rec.Body.String()
	for _, want := range []string{
		`tenantplane_provisioning_total{operation="provisioning",outcome="ok"} 1` + "\n",
		`tenantplane_provisioning_total{operation="provisioning",outcome="failed"} 1` + "\n",
		"tenantplane_provisioning_duration_seconds_count 2\n",
	} {
		if !strings.Contains(raw, want) {
			t.Errorf("metrics lack %q:\n%s", want, raw)
		}
	}
	if strings.Contains(raw, "counted") {
		t.Errorf("a metric names the tenant:\n%s", raw)
	}
}

func TestMetricsCountFleetRuns(t *testing.T) {
	t.Parallel()
	b := fleetSetup(t, 3, "synthetic")
	b.breakTenant(t, b.tenants[1])
	reg := metrics.New()
	b.cfg.Metrics = reg
	_, fleet := b.newFleet(t)
	if run := b.run(t, fleet, provisioner.RunOptions{Parallel: 2, Actor: "cli"}); run.Done != 2 || run.Failed != 1 {
		t.Fatalf("run = %d done, %d failed; want 2 and 1", run.Done, run.Failed)
	}
	rec := httptest.NewRecorder()
	reg.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	raw := rec.Body.String()
	for _, want := range []string{
		`tenantplane_fleet_migration_tenants_total{state="done"} 2` + "\n",
		`tenantplane_fleet_migration_tenants_total{state="failed"} 1` + "\n",
		"tenantplane_fleet_migration_run_duration_seconds_count 1\n",
	} {
		if !strings.Contains(raw, want) {
			t.Errorf("metrics lack %q:\n%s", want, raw)
		}
	}
}
