package provisioner_test

import (
	"fmt"
	"sync"
	"testing"

	"github.com/tenantplane/tenantplane/provisioner"
	"github.com/tenantplane/tenantplane/tenant"
)

func TestConcurrentSignups(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const n = 50
	ids := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			slug := fmt.Sprintf("signup-%02d", i)
			tn, err := b.prov.Register(b.ctx, request(slug, tenant.IsolationSchema))
			if err != nil {
				errs[i] = fmt.Errorf("registering %s: %w", slug, err)
				return
			}
			ids[i] = tn.ID
			got, err := b.prov.Provision(b.ctx, tn.ID)
			if err != nil {
				errs[i] = fmt.Errorf("provisioning %s: %w", slug, err)
				return
			}
			if got.Status != tenant.StatusActive {
				errs[i] = fmt.Errorf("%s ended %s: %s", slug, got.Status, got.LastError)
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	for _, id := range ids {
		b.checkProvisioned(t, id)
	}
	counts, err := b.store.CountByShard(b.ctx)
	if err != nil || counts["a"] != n {
		t.Errorf("CountByShard = %v, %v; want %d on a", counts, err, n)
	}
}

func TestConcurrentProvisionOfOneTenant(t *testing.T) {
	t.Parallel()
	for _, iso := range isolations {
		t.Run(string(iso), func(t *testing.T) {
			t.Parallel()
			idx := newRecordingIndexes()
			b := setup(t, func(c *provisioner.Config) { c.Search = idx })
			tn := b.register(t, b.prov, request("twice", iso))
			// Two processes pick up the same tenant at the same time.
			procs := []*provisioner.Provisioner{b.newProvisioner(t), b.newProvisioner(t)}
			var wg sync.WaitGroup
			results := make([]*tenant.Tenant, len(procs))
			errs := make([]error, len(procs))
			for i, p := range procs {
				wg.Go(func() { results[i], errs[i] = p.Provision(b.ctx, tn.ID) })
			}
			wg.Wait()
			active := 0
			for i := range procs {
				if errs[i] != nil {
					t.Fatalf("Provision %d: %v", i, errs[i])
				}
				switch results[i].Status {
				case tenant.StatusActive:
					active++
				case tenant.StatusProvisioning: // the other process held it
				default:
					t.Fatalf("Provision %d ended %s: %s", i, results[i].Status, results[i].LastError)
				}
			}
			if active == 0 {
				t.Fatalf("neither run reports the tenant active")
			}
			b.checkProvisioned(t, tn.ID)
			row := b.get(t, tn.ID)
			if created, _ := idx.counts(row.SearchIndex); created != 1 {
				t.Errorf("search index created %d times, want once", created)
			}
			if ev := b.events(t, tn.ID); count(ev, "activate") != 1 {
				t.Errorf("audit log %v, want one activation", ev)
			}
		})
	}
}
