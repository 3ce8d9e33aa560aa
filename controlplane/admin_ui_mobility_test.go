package controlplane

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/tenantplane/tenantplane/tenant"
)

// The panel's export, clone, move and abort forms refuse a POST without the session's
// CSRF token and change nothing.
func TestAdminUIMobilityFormsRefuseWithoutCSRFToken(t *testing.T) {
	t.Parallel()
	b := setup(t, Config{}, setupOptions{noStart: true})
	b.activeTenant(t, "acme")
	c := b.adminLogin(t)
	for _, action := range []string{"export", "clone", "move", "move/abort"} {
		for name, form := range map[string]url.Values{
			"no token":    {"slug": {"copy"}, "isolation": {"database"}, "confirmed": {"yes"}},
			"wrong token": {"csrf": {strings.Repeat("0", 64)}, "slug": {"copy"}, "isolation": {"database"}, "confirmed": {"yes"}},
		} {
			a := b.adminDo(t, c, "/admin/tenants/acme/"+action, form)
			if a.status != http.StatusForbidden || !strings.Contains(a.body, "reload the page") {
				t.Errorf("%s %s: %d %.200s", action, name, a.status, a.body)
			}
		}
	}
	if _, err := b.store.Get(t.Context(), "copy"); err == nil {
		t.Error("a clone refused for its CSRF token was created")
	}
}

// From a tenant's page the panel downloads its archive, clones it after a confirmation
// and starts a move after a confirmation, whose refusal or progress the next page shows.
func TestAdminUIExportCloneAndMove(t *testing.T) {
	t.Parallel()
	b := setup(t, Config{})
	b.dropTenantRoles(t)
	b.do(t, http.MethodPost, "/api/v1/tenants", signupBody("acme"))
	b.waitStatus(t, "acme", tenant.StatusActive)
	c := b.adminLogin(t)
	page := b.adminDo(t, c, "/admin/tenants/acme", nil)
	csrf := page.csrf(t)
	for _, id := range []string{`id="export"`, `id="clone"`, `id="move-tenant"`} {
		if !strings.Contains(page.body, id) {
			t.Errorf("the tenant page has no %s", id)
		}
	}

	resp, err := c.PostForm(b.ts.URL+"/admin/tenants/acme/export", url.Values{"csrf": {csrf}})
	if err != nil {
		t.Fatal(err)
	}
	archive := make([]byte, 64)
	n, _ := resp.Body.Read(archive)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Disposition"), "attachment;") || n == 0 {
		t.Errorf("export: %d %q, %d bytes", resp.StatusCode, resp.Header.Get("Content-Disposition"), n)
	}
	if a := b.adminDo(t, c, "/admin/tenants/nobody/export", url.Values{"csrf": {csrf}}); a.status != http.StatusNotFound || !strings.Contains(a.body, "tenant not found") {
		t.Errorf("export of an unknown tenant: %d %.200s", a.status, a.body)
	}

	ask := b.adminDo(t, c, "/admin/tenants/acme/clone", url.Values{"csrf": {csrf}, "slug": {"acme-copy"}})
	if ask.status != http.StatusOK || !strings.Contains(ask.body, `id="confirmation"`) || !strings.Contains(ask.body, "acme-copy") {
		t.Fatalf("clone without confirmation: %d %.300s", ask.status, ask.body)
	}
	if _, err := b.store.Get(t.Context(), "acme-copy"); err == nil {
		t.Fatal("the clone was made before its confirmation")
	}
	done := b.adminDo(t, c, "/admin/tenants/acme/clone", url.Values{"csrf": {csrf}, "slug": {"acme-copy"}, "confirmed": {"yes"}})
	if done.status != http.StatusSeeOther || done.location != "/admin/tenants/acme-copy" {
		t.Fatalf("confirmed clone: %d to %q %.300s", done.status, done.location, done.body)
	}
	if got := b.tenantStatus(t, "acme-copy"); got != tenant.StatusActive {
		t.Errorf("the clone is %s", got)
	}
	if a := b.adminDo(t, c, "/admin/tenants/acme/clone", url.Values{"csrf": {csrf}, "slug": {"acme-copy"}, "confirmed": {"yes"}}); a.status != http.StatusConflict || !strings.Contains(a.body, "already exists") {
		t.Errorf("clone onto a taken slug: %d %.300s", a.status, a.body)
	}
	if list := b.adminDo(t, c, "/admin/", nil); !strings.Contains(list.body, `href="/admin/tenants/acme-copy"`) {
		t.Error("the tenant list does not show the clone")
	}

	if a := b.adminDo(t, c, "/admin/tenants/acme/move", url.Values{"csrf": {csrf}, "shard": {"default"}, "isolation": {"schema"}, "confirmed": {"yes"}}); a.status != http.StatusBadRequest || !strings.Contains(a.body, "already") {
		t.Errorf("a move to where the tenant is: %d %.300s", a.status, a.body)
	}
	form := url.Values{"csrf": {csrf}, "shard": {"default"}, "isolation": {"database"}}
	ask = b.adminDo(t, c, "/admin/tenants/acme/move", form)
	if ask.status != http.StatusOK || !strings.Contains(ask.body, "with database isolation") {
		t.Fatalf("move without confirmation: %d %.300s", ask.status, ask.body)
	}
	form.Set("confirmed", "yes")
	a := b.adminDo(t, c, "/admin/tenants/acme/move", form)
	if a.status != http.StatusSeeOther || a.location != "/admin/tenants/acme" {
		t.Fatalf("confirmed move: %d to %q %.300s", a.status, a.location, a.body)
	}
	b.waitIsolation(t, "acme", tenant.IsolationDatabase)
}
