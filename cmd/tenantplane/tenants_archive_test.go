package main

import (
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tenantplane/tenantplane/tenant"
)

func TestCLIExportImportClone(t *testing.T) {
	t.Parallel()
	c := newCLI(t)
	c.env["TENANTPLANE_ARCHIVE_KEY"] = base64.StdEncoding.EncodeToString([]byte(strings.Repeat("k", 32)))
	c.ok("a-long-passphrase\n", "tenants", "create", "acme", "--admin-email", "admin@acme.test", "--password-stdin")
	dir := t.TempDir()
	file := filepath.Join(dir, "acme.tpa")

	_, errOut, code := c.run("", "tenants", "export", "acme", "--file", file)
	if code != 0 || !strings.Contains(errOut, "exported acme") || !strings.Contains(errOut, "exporting acme users: 1 rows") {
		t.Fatalf("export: exit %d, %s", code, errOut)
	}
	if st, err := os.Stat(file); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("archive file %v (%v), want mode 0600", st, err)
	}
	if raw, _ := os.ReadFile(file); !strings.HasPrefix(string(raw), "TPAE1") {
		t.Errorf("the archive is not encrypted with the configured key")
	}
	c.fails(1, "exists", "", "tenants", "export", "acme", "--file", file)
	c.fails(2, "needs SLUG and --file", "", "tenants", "export", "acme")

	var imported tenant.Tenant
	out := c.ok("", "tenants", "import", "--file", file, "--slug", "acme-copy", "-o", "json")
	if err := json.Unmarshal([]byte(out), &imported); err != nil || imported.Status != tenant.StatusActive {
		t.Fatalf("import answered %q (%v)", out, err)
	}
	c.fails(2, "one of --slug NEW or --replace SLUG", "", "tenants", "import", "--file", file)

	// --replace asks first, after writing the safety export.
	c.fails(2, "not confirmed", "no\n", "tenants", "import", "--file", file, "--replace", "acme")
	safety := filepath.Join(dir, "safety.tpa")
	out = c.ok("", "tenants", "import", "--file", file, "--replace", "acme", "--yes", "--safety-file", safety, "-o", "json")
	var replaced tenant.Tenant
	if err := json.Unmarshal([]byte(out), &replaced); err != nil || replaced.Status != tenant.StatusActive || replaced.Slug != "acme" {
		t.Fatalf("replace answered %q (%v)", out, err)
	}
	if st, err := os.Stat(safety); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("safety export %v (%v), want a 0600 file", st, err)
	}

	c.ok("", "tenants", "clone", "acme", "acme-clone")

	// Nightly backups keep the newest N per tenant.
	backups := filepath.Join(dir, "nightly")
	if err := os.Mkdir(backups, 0o700); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		c.ok("", "tenants", "export", "--all", "--dir", backups, "--keep", "1", "-o", "json")
	}
	for _, slug := range []string{"acme", "acme-copy", "acme-clone"} {
		got, _ := pruneArchives(backups, slug, 0)
		matches, _ := filepath.Glob(filepath.Join(backups, slug+"-2*.tpa"))
		if len(matches) != 1 || got != nil {
			t.Errorf("tenant %s has backups %v, want exactly one", slug, matches)
		}
	}

	c.env["TENANTPLANE_ARCHIVE_KEY"] = "short"
	c.fails(2, "TENANTPLANE_ARCHIVE_KEY", "", "tenants", "list")
}
