package controlplane

import (
	"context"
	"net/http"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/tenantplane/tenantplane/apperr"
	"github.com/tenantplane/tenantplane/tenant"
)

// dropTenantRoles removes the roles of the bundle's tenants when the test ends: roles
// outlive the test database.
func (b *bundle) dropTenantRoles(t *testing.T) {
	t.Cleanup(func() {
		ctx := context.Background()
		rows, err := b.db.Query(ctx, `SELECT db_role FROM tenants`)
		if err != nil {
			return
		}
		roles, _ := pgx.CollectRows(rows, pgx.RowTo[string])
		for _, r := range roles {
			id := pgx.Identifier{r}.Sanitize()
			_, _ = b.db.Exec(ctx, `DROP OWNED BY `+id)
			_, _ = b.db.Exec(ctx, `DROP ROLE IF EXISTS `+id)
		}
	})
}

func TestExportImportAndCloneOverTheAPI(t *testing.T) {
	t.Parallel()
	b := setup(t, Config{}, setupOptions{noStart: true})
	b.dropTenantRoles(t)
	auth := bearer(b.adminToken(t))
	src := b.register(t, "api-src")
	if _, err := b.prov.Provision(context.Background(), src.ID); err != nil {
		t.Fatal(err)
	}
	src, _ = b.store.GetByID(context.Background(), src.ID)
	dsn, err := src.ConnString(b.dbURL)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(context.Background(), `INSERT INTO blogs (title, author_id) VALUES ('exported over http', 1)`); err != nil {
		t.Fatal(err)
	}

	b.do(t, "GET", "/api/v1/tenants/api-src/export", nil).wantStatus(t, http.StatusUnauthorized)
	if code := b.do(t, "GET", "/api/v1/tenants/nobody/export", nil, auth...).wantStatus(t, http.StatusNotFound).errorCode(t); code != "tenant_not_found" {
		t.Fatalf("export of an unknown tenant: code %q", code)
	}
	r := b.do(t, "GET", "/api/v1/tenants/api-src/export", nil, auth...).wantStatus(t, http.StatusOK)
	if ct := r.header.Get("Content-Type"); ct != "application/octet-stream" || len(r.body) < 100 {
		t.Fatalf("export answered %q with %d bytes", ct, len(r.body))
	}
	archive := r.body
	binary := append(append([]string{}, auth...), "Content-Type", "application/octet-stream")

	// A cut archive is refused and leaves no tenant.
	if code := b.do(t, "POST", "/api/v1/tenants/import?slug=api-bad", archive[:len(archive)/2], binary...).wantStatus(t, http.StatusBadRequest).errorCode(t); code != "archive_invalid" {
		t.Fatalf("cut archive: code %q, want archive_invalid", code)
	}
	if _, err := b.store.Get(context.Background(), "api-bad"); apperr.KindOf(err) != apperr.NotFound {
		t.Fatalf("a refused import left tenant api-bad: %v", err)
	}
	// One over the limit is refused before it is read.
	b.srv.cfg.ImportMaxBytes = int64(len(archive) - 1)
	if code := b.do(t, "POST", "/api/v1/tenants/import?slug=api-big", archive, binary...).wantStatus(t, http.StatusRequestEntityTooLarge).errorCode(t); code != "body_too_large" {
		t.Fatalf("archive over the limit: code %q", code)
	}
	b.srv.cfg.ImportMaxBytes = defaultImportMax

	imported := b.do(t, "POST", "/api/v1/tenants/import?slug=api-copy", archive, binary...).wantStatus(t, http.StatusCreated).tenant(t)
	if imported.Status != tenant.StatusActive || imported.ID == src.ID {
		t.Fatalf("imported tenant %+v, want a new active one", imported)
	}
	cloned := b.do(t, "POST", "/api/v1/tenants/api-src/clone", map[string]any{"slug": "api-clone"}, auth...).wantStatus(t, http.StatusCreated).tenant(t)
	if cloned.Status != tenant.StatusActive || cloned.SchemaName == src.SchemaName {
		t.Fatalf("cloned tenant %+v, want a new active one with its own schema", cloned)
	}
	if code := b.do(t, "POST", "/api/v1/tenants/api-src/clone", map[string]any{"slug": "api-clone"}, auth...).wantStatus(t, http.StatusConflict).errorCode(t); code != "slug_taken" {
		t.Fatalf("clone onto a taken slug: code %q", code)
	}
	for _, slug := range []string{"api-copy", "api-clone"} {
		tn, err := b.store.Get(context.Background(), slug)
		if err != nil {
			t.Fatal(err)
		}
		dsn, _ := tn.ConnString(b.dbURL)
		c, err := pgx.Connect(context.Background(), dsn)
		if err != nil {
			t.Fatal(err)
		}
		var n int
		err = c.QueryRow(context.Background(), `SELECT count(*) FROM blogs WHERE title = 'exported over http'`).Scan(&n)
		c.Close(context.Background())
		if err != nil || n != 1 {
			t.Errorf("%s holds %d copies of the blog (%v), want 1", slug, n, err)
		}
	}
	events, err := b.store.Events(context.Background(), src.ID)
	if err != nil {
		t.Fatal(err)
	}
	exports := 0
	for _, e := range events {
		if e.Action == "export" {
			exports++
		}
	}
	if exports != 2 { // the download and the clone
		t.Errorf("source audit log has %d exports, want 2", exports)
	}
}
