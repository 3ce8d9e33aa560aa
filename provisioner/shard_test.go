package provisioner_test

import (
	"fmt"
	"testing"

	"github.com/tenantplane/tenantplane/apperr"
	"github.com/tenantplane/tenantplane/internal/pgtest"
	"github.com/tenantplane/tenantplane/provisioner"
	"github.com/tenantplane/tenantplane/tenant"
)

func TestShardPlacement(t *testing.T) {
	t.Parallel()
	shard2 := pgtest.NewDatabase(t, pgtest.Require(t, pgtest.EnvShard2URL))
	b := setup(t, func(c *provisioner.Config) {
		c.Shards = append(c.Shards, provisioner.Shard{Name: "b", URL: shard2})
	})
	ctx := b.ctx
	cluster1 := connect(t, ctx, b.shardURL(t, "a"))
	cluster2 := connect(t, ctx, shard2)

	// Least-loaded placement alternates, ties going to the first shard by name.
	var created []*tenant.Tenant
	for i := range 6 {
		iso := tenant.IsolationSchema
		if i == 5 {
			iso = tenant.IsolationDatabase
		}
		tn := b.create(t, fmt.Sprintf("placed-%d", i), iso)
		if want := []string{"a", "b"}[i%2]; tn.Shard != want {
			t.Errorf("tenant %d placed on %s, want %s", i, tn.Shard, want)
		}
		created = append(created, tn)
	}
	counts, err := b.store.CountByShard(ctx)
	if err != nil || counts["a"] != 3 || counts["b"] != 3 {
		t.Fatalf("CountByShard = %v, %v; want 3 and 3", counts, err)
	}

	// Each tenant's objects exist on its own cluster only.
	for _, tn := range created {
		b.checkProvisioned(t, tn.ID)
		home, away := cluster1, cluster2
		if tn.Shard == "b" {
			home, away = cluster2, cluster1
		}
		if tn.Isolation == tenant.IsolationSchema && schemaOwner(t, ctx, home, tn.SchemaName) != tn.DBRole {
			t.Errorf("%s: schema missing on its shard %s", tn.Slug, tn.Shard)
		}
		if tn.Isolation == tenant.IsolationDatabase && databaseOwner(t, ctx, home, tn.DatabaseName) != tn.DBRole {
			t.Errorf("%s: database missing on its shard %s", tn.Slug, tn.Shard)
		}
		if schemaOwner(t, ctx, away, tn.SchemaName) != "" || databaseOwner(t, ctx, away, tn.DatabaseName) != "" || roleExists(ctx, away, tn.DBRole) {
			t.Errorf("%s: objects found on the other cluster too", tn.Slug)
		}
	}

	// An explicit shard wins over the balance.
	req := request("pinned", tenant.IsolationSchema)
	req.Shard = "b"
	pinned := b.register(t, b.prov, req)
	if pinned.Shard != "b" {
		t.Errorf("explicit shard b: placed on %s", pinned.Shard)
	}
	req = request("pinned-unknown", tenant.IsolationSchema)
	req.Shard = "c"
	_, err = b.prov.Register(ctx, req)
	requireAppErr(t, err, apperr.Invalid, "invalid_shard")

	// A draining shard gets no new tenant, even when it holds fewer.
	draining := b.newProvisioner(t, func(c *provisioner.Config) { c.Shards[0].Draining = true })
	for i := range 3 {
		tn := b.register(t, draining, request(fmt.Sprintf("while-draining-%d", i), tenant.IsolationSchema))
		if tn.Shard != "b" {
			t.Errorf("tenant placed on draining shard %s", tn.Shard)
		}
	}
	allDraining := b.newProvisioner(t, func(c *provisioner.Config) {
		c.Shards[0].Draining, c.Shards[1].Draining = true, true
	})
	_, err = allDraining.Register(ctx, request("nowhere", tenant.IsolationSchema))
	requireAppErr(t, err, apperr.Invalid, "invalid_shard")
	if _, err := b.store.Get(ctx, "nowhere"); apperr.KindOf(err) != apperr.NotFound {
		t.Errorf("a refused signup left a registry row: %v", err)
	}
}
