package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/tenantplane/tenantplane/tenant"
)

// tenants move refuses what it cannot do with a clear line, and moves a tenant with
// progress on stderr once the provisioner can move tenants; tenants show then shows it
// where it went.
func TestCLITenantsMove(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	c.ok("a-long-passphrase\n", "tenants", "create", "acme", "--admin-email", "admin@acme.test", "--password-stdin")
	c.fails(2, "--shard, --isolation or both", "", "tenants", "move", "acme")
	c.fails(2, "--abort takes no", "", "tenants", "move", "acme", "--abort", "--shard", "default")
	c.fails(2, "needs SLUG", "", "tenants", "move")
	c.fails(2, "isolation must be", "", "tenants", "move", "acme", "--isolation", "cluster")
	if out := c.ok("", "tenants", "show", "acme"); strings.Contains(out, "moving to") {
		t.Errorf("show reports a move of a tenant that is not moving:\n%s", out)
	}

	out, errOut, code := c.run("", "tenants", "move", "acme", "--isolation", "database", "-o", "json")
	if code != 0 {
		t.Fatalf("move: exit %d, %s", code, errOut)
	}
	var moved tenant.Tenant
	if err := json.Unmarshal([]byte(out), &moved); err != nil || moved.Isolation != tenant.IsolationDatabase {
		t.Fatalf("move answered %q (%v)", out, err)
	}
	if show := c.ok("", "tenants", "show", "acme"); !strings.Contains(show, "database") {
		t.Errorf("show after the move:\n%s", show)
	}

	// The source stays for the deletion grace period, then drop-moved removes it once.
	if out := c.ok("", "tenants", "drop-moved"); !strings.Contains(out, "dropped 0 ") {
		t.Errorf("drop-moved within the grace period: %q", out)
	}
	c.fails(2, "must not be negative", "", "tenants", "drop-moved", "--grace", "-1h")
	if out := c.ok("", "tenants", "drop-moved", "--grace", "0"); !strings.Contains(out, "dropped 1 ") {
		t.Errorf("drop-moved after the grace period: %q", out)
	}
	if out := c.ok("", "tenants", "drop-moved", "--grace", "0"); !strings.Contains(out, "dropped 0 ") {
		t.Errorf("drop-moved a second time: %q", out)
	}
	if show := c.ok("", "tenants", "show", "acme"); !strings.Contains(show, "database") {
		t.Errorf("show after the source was dropped:\n%s", show)
	}
}
