package controlplane

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/tenantplane/tenantplane/internal/browsertest"
	"github.com/tenantplane/tenantplane/tenant"
)

// TestAdminUIInBrowser walks through the panel as an operator does, in Chromium: the
// login form, the tenant list and the header, a tenant's page, suspend and resume,
// deleting through the confirmation page, and logout. Every page visited is saved as a
// screenshot (browsertest.Screenshot).
func TestAdminUIInBrowser(t *testing.T) {
	t.Parallel()
	ctx := browsertest.New(t)
	b := setup(t, Config{})
	if _, err := b.users.Create(context.Background(), adminEmail, adminPassword); err != nil {
		t.Fatal(err)
	}
	b.do(t, http.MethodPost, "/api/v1/tenants", signupBody("acme"))
	b.waitStatus(t, "acme", tenant.StatusActive)

	start := time.Now()
	base := b.ts.URL
	do, get := browserSteps(t, ctx)

	do("opening the panel without a session",
		chromedp.Navigate(base+"/admin/"),
		chromedp.WaitVisible(chromedp.ID("email")))
	if loc := get(chromedp.Location()); loc != base+"/admin/login" {
		t.Errorf("without a session the panel is at %s, want the login form", loc)
	}

	do("logging in with a wrong password",
		chromedp.SendKeys(chromedp.ID("email"), adminEmail),
		chromedp.SendKeys(chromedp.ID("password"), "wrong-password-1"),
		chromedp.Click(chromedp.ID("login")),
		chromedp.WaitVisible(chromedp.ID("error")))
	if msg := get(chromedp.Text(chromedp.ID("error"))); msg != "Invalid email or password." {
		t.Errorf("wrong password shows %q", msg)
	}

	do("logging in",
		chromedp.SendKeys(chromedp.ID("password"), adminPassword),
		chromedp.Click(chromedp.ID("login")),
		chromedp.WaitVisible(chromedp.ID("tenants")))
	if list := get(chromedp.Text(chromedp.ID("tenants"))); !strings.Contains(list, "acme") || !strings.Contains(list, "Tenant acme") || !strings.Contains(list, "active") {
		t.Errorf("tenant list does not show acme: %q", list)
	}
	if who := get(chromedp.Text(chromedp.ID("who"))); who != "Signed in as "+adminEmail {
		t.Errorf("the header shows %q, want who is signed in", who)
	}

	do("opening the tenant and suspending it",
		chromedp.Click(chromedp.CSS(`a[href="/admin/tenants/acme"]`)),
		chromedp.WaitVisible(chromedp.ID("suspend")),
		chromedp.Click(chromedp.ID("suspend")),
		chromedp.WaitVisible(chromedp.ID("resume")))
	if status := get(chromedp.Text(chromedp.ID("tenant-status"))); status != "suspended" {
		t.Errorf("after Suspend the page shows %q", status)
	}
	if got := b.tenantStatus(t, "acme"); got != tenant.StatusSuspended {
		t.Errorf("after Suspend the registry says %s", got)
	}

	do("resuming it",
		chromedp.Click(chromedp.ID("resume")),
		chromedp.WaitVisible(chromedp.ID("suspend")))
	if status := get(chromedp.Text(chromedp.ID("tenant-status"))); status != "active" || b.tenantStatus(t, "acme") != tenant.StatusActive {
		t.Errorf("after Resume the page shows %q", status)
	}
	if events := get(chromedp.Text(chromedp.ID("events"))); !strings.Contains(events, "resume") || !strings.Contains(events, adminEmail) {
		t.Errorf("recent events do not name the resume by %s: %q", adminEmail, events)
	}

	do("asking to delete it",
		chromedp.Click(chromedp.ID("delete")),
		chromedp.WaitVisible(chromedp.ID("confirmation")))
	if q := get(chromedp.Text(chromedp.ID("question"))); !strings.Contains(q, "Delete the tenant Tenant acme (acme)?") {
		t.Errorf("the confirmation asks %q", q)
	}
	if got := b.tenantStatus(t, "acme"); got != tenant.StatusActive {
		t.Errorf("before confirming, the registry says %s", got)
	}
	do("cancelling",
		chromedp.Click(chromedp.ID("cancel")),
		chromedp.WaitVisible(chromedp.ID("suspend")))
	do("deleting it",
		chromedp.Click(chromedp.ID("delete")),
		chromedp.WaitVisible(chromedp.ID("confirmation")),
		chromedp.Click(chromedp.ID("confirm")),
		chromedp.WaitVisible(chromedp.ID("restore")))
	if status := get(chromedp.Text(chromedp.ID("tenant-status"))); status != "pending_deletion" || b.tenantStatus(t, "acme") != tenant.StatusPendingDeletion {
		t.Errorf("after Delete the page shows %q", status)
	}

	do("opening the platform users",
		chromedp.Navigate(base+"/admin/users"),
		chromedp.WaitVisible(chromedp.ID("users")))
	if own := get(chromedp.Text(chromedp.CSS("#users .actions"))); own != "(you)" {
		t.Errorf("the signed-in user's own row offers %q, want no actions", own)
	}

	do("logging out",
		chromedp.Click(chromedp.ID("logout")),
		chromedp.WaitVisible(chromedp.ID("email")),
		chromedp.Navigate(base+"/admin/tenants/acme"),
		chromedp.WaitVisible(chromedp.ID("email")))
	if loc := get(chromedp.Location()); loc != base+"/admin/login" {
		t.Errorf("after logout the tenant page is at %s, want the login form", loc)
	}
	t.Logf("browser walk-through took %s", time.Since(start).Round(time.Millisecond))
}

// browserSteps returns do, which runs a step's actions in the browser and saves a
// screenshot of the page, and get, which reads a value; both fail the test on errors.
func browserSteps(t *testing.T, ctx context.Context) (do func(step string, actions ...chromedp.Action[chromedp.Void]), get func(chromedp.Action[string]) string) {
	do = func(step string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, actions...); err != nil {
			t.Fatalf("%s: %v", step, err)
		}
		browsertest.Screenshot(t, ctx, step)
	}
	get = func(a chromedp.Action[string]) string {
		t.Helper()
		v, err := chromedp.Run(ctx, a)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	return do, get
}
