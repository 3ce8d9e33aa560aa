package provisioner_test

import (
	"fmt"
	"sync"
	"testing"

	"github.com/tenantplane/tenantplane/internal/pgtest"
	"github.com/tenantplane/tenantplane/provisioner"
	"github.com/tenantplane/tenantplane/tenant"
)

// TestConcurrentPlacementBalances: signups arriving at once see each other's placement,
// so they spread over the shards instead of all landing on the emptiest one.
func TestConcurrentPlacementBalances(t *testing.T) {
	t.Parallel()
	shard2 := pgtest.NewDatabase(t, pgtest.Require(t, pgtest.EnvShard2URL))
	b := setup(t, func(c *provisioner.Config) {
		c.Shards = append(c.Shards, provisioner.Shard{Name: "b", URL: shard2})
	})
	const n = 20
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := b.prov.Register(b.ctx, request(fmt.Sprintf("burst-%02d", i), tenant.IsolationSchema)); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("register: %v", err)
	}
	counts, err := b.store.CountByShard(b.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if counts["a"] != n/2 || counts["b"] != n/2 {
		t.Errorf("%d concurrent signups placed %v, want %d on each shard", n, counts, n/2)
	}
	for i := range n {
		tn, err := b.store.Get(b.ctx, fmt.Sprintf("burst-%02d", i))
		if err != nil {
			t.Fatal(err)
		}
		events, err := b.store.Events(b.ctx, tn.ID)
		if err != nil || len(events) != 1 || events[0].Action != "create" || events[0].Detail != "shard "+tn.Shard+", schema isolation" {
			t.Errorf("%s audit log = %+v (%v)", tn.Slug, events, err)
		}
	}
}
