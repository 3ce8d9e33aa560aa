package controlplane

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/tenantplane/tenantplane/internal/browsertest"
	"github.com/tenantplane/tenantplane/tenant"
)

// TestAdminUIMobilityInBrowser clones and moves a tenant from its page in Chromium:
// each through its confirmation page, the clone then in the tenant list, the move then
// as progress on the tenant's page or as the clear reason it cannot run. Every page
// visited is saved as a screenshot.
func TestAdminUIMobilityInBrowser(t *testing.T) {
	t.Parallel()
	ctx := browsertest.New(t)
	b := setup(t, Config{Shards: []string{"default"}})
	b.dropTenantRoles(t)
	if _, err := b.users.Create(context.Background(), adminEmail, adminPassword); err != nil {
		t.Fatal(err)
	}
	b.do(t, http.MethodPost, "/api/v1/tenants", signupBody("acme"))
	b.waitStatus(t, "acme", tenant.StatusActive)
	base := b.ts.URL
	do, get := browserSteps(t, ctx)
	text := func(sel string) string { t.Helper(); return get(chromedp.Text(chromedp.CSS(sel))) }

	do("logging in",
		chromedp.Navigate(base+"/admin/login"),
		chromedp.WaitVisible(chromedp.ID("email")),
		chromedp.SendKeys(chromedp.ID("email"), adminEmail),
		chromedp.SendKeys(chromedp.ID("password"), adminPassword),
		chromedp.Click(chromedp.ID("login")),
		chromedp.WaitVisible(chromedp.ID("tenants")))

	do("asking to clone the tenant",
		chromedp.Navigate(base+"/admin/tenants/acme"),
		chromedp.WaitVisible(chromedp.ID("clone-slug")),
		chromedp.SendKeys(chromedp.ID("clone-slug"), "acme-copy"),
		chromedp.Click(chromedp.ID("clone")),
		chromedp.WaitVisible(chromedp.ID("confirmation")))
	if q := text("#question"); !strings.Contains(q, "into a new tenant acme-copy") {
		t.Errorf("the clone's confirmation asks %q", q)
	}
	do("cloning it",
		chromedp.Click(chromedp.ID("confirm")),
		chromedp.WaitVisible(chromedp.ID("tenant-status")))
	if h := text("h1"); !strings.Contains(h, "acme-copy") {
		t.Errorf("after the clone the page shows %q, want the new tenant", h)
	}
	do("finding the clone in the list",
		chromedp.Navigate(base+"/admin/"),
		chromedp.WaitVisible(chromedp.ID("tenants")))
	if list := text("#tenants"); !strings.Contains(list, "acme-copy") {
		t.Errorf("the tenant list does not show the clone: %q", list)
	}

	do("asking to move the tenant",
		chromedp.Navigate(base+"/admin/tenants/acme"),
		chromedp.WaitVisible(chromedp.ID("move-tenant")),
		chromedp.SetValue(chromedp.ID("move-isolation"), "database"),
		chromedp.Click(chromedp.ID("move-tenant")),
		chromedp.WaitVisible(chromedp.ID("confirmation")))
	if q := text("#question"); !strings.Contains(q, "to shard default with database isolation") {
		t.Errorf("the move's confirmation asks %q", q)
	}
	do("moving it",
		chromedp.Click(chromedp.ID("confirm")),
		chromedp.WaitVisible(chromedp.CSS("#move, #move-form")))
	if status := text("#tenant-status"); status != "active" {
		t.Errorf("while moving, the tenant page shows status %q", status)
	}
	b.waitIsolation(t, "acme", tenant.IsolationDatabase)
	do("seeing the moved tenant",
		chromedp.Navigate(base+"/admin/tenants/acme"),
		chromedp.WaitVisible(chromedp.ID("move-form")))
	if page := text("body"); !strings.Contains(page, "database") {
		t.Errorf("the moved tenant's page does not show its database isolation: %.500s", page)
	}
}
