package provisioner_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"slices"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/tenantplane/tenantplane/apperr"
	"github.com/tenantplane/tenantplane/archive"
	"github.com/tenantplane/tenantplane/internal/pgtest"
	"github.com/tenantplane/tenantplane/password"
	"github.com/tenantplane/tenantplane/provisioner"
	"github.com/tenantplane/tenantplane/tenant"
)

// exportedTables are the tables an archive carries and a round trip must keep equal.
var exportedTables = []string{"notification_counter", "users", "blogs", "notifications"}

const seedPassword = "correct horse battery staple"

// seed fills a tenant with users (one with a real password hash), blogs, notifications
// and a refresh token, as the tenant's role.
func (b *bundle) seed(t *testing.T, tn *tenant.Tenant) {
	t.Helper()
	hash, err := password.NewHasher(password.OWASP, 1).Hash(b.ctx, seedPassword)
	if err != nil {
		t.Fatalf("hashing: %v", err)
	}
	conn := b.tenantConn(t, tn)
	for _, q := range []struct {
		sql  string
		args []any
	}{
		{`INSERT INTO users (email, password_hash, is_admin, token_version) VALUES ('ann@x.test', $1, true, 3), ('bob@x.test', 'x', false, 0)`, []any{hash}},
		{`INSERT INTO blogs (title, description, author_id) SELECT 'zebra crossing ' || g, E'tab\there\nnewline \\ back ünï', 1 FROM generate_series(1, 50) g`, nil},
		{`INSERT INTO blogs (title, author_id) VALUES ('quiet lake', 2)`, nil},
		{`INSERT INTO notifications (id, title, sender_id) VALUES (7, 'hello', 1), (42, 'later', NULL)`, nil},
		// As the notifications service keeps it, from tenant migration 4 on.
		{`DO $$ BEGIN IF to_regclass('notification_counter') IS NOT NULL THEN UPDATE notification_counter SET last_id = 42; END IF; END $$`, nil},
		{`INSERT INTO refresh_tokens (jti, user_id, family, expires_at) VALUES (gen_random_uuid(), 1, gen_random_uuid(), now() + interval '1 day')`, nil},
	} {
		if _, err := conn.Exec(b.ctx, q.sql, q.args...); err != nil {
			t.Fatalf("seeding %s: %v", tn.Slug, err)
		}
	}
}

// seeded creates an active tenant in schema isolation and seeds it.
func (b *bundle) seeded(t *testing.T, slug string) *tenant.Tenant {
	t.Helper()
	tn := b.create(t, slug, tenant.IsolationSchema)
	b.seed(t, tn)
	return tn
}

// dump returns the table's rows as text, ordered by id.
func dump(t *testing.T, ctx context.Context, conn *pgx.Conn, table string) string {
	t.Helper()
	var out string
	if err := conn.QueryRow(ctx, `SELECT COALESCE(string_agg(x::text, E'\n' ORDER BY x::text), '') FROM `+ident(table)+` x`).Scan(&out); err != nil {
		t.Fatalf("dumping %s: %v", table, err)
	}
	return out
}

func (b *bundle) export(t *testing.T, slug string, opt provisioner.ExportOptions) []byte {
	t.Helper()
	var buf bytes.Buffer
	if _, err := b.prov.Export(b.ctx, slug, &buf, opt); err != nil {
		t.Fatalf("exporting %s: %v", slug, err)
	}
	return buf.Bytes()
}

// requireSameData fails unless both tenants hold the same rows in every exported table.
func (b *bundle) requireSameData(t *testing.T, a, c *tenant.Tenant) {
	t.Helper()
	ca, cc := b.tenantConn(t, a), b.tenantConn(t, c)
	for _, table := range exportedTables {
		if got, want := dump(t, b.ctx, cc, table), dump(t, b.ctx, ca, table); got != want || want == "" {
			t.Errorf("table %s differs (or is empty):\n got %q\nwant %q", table, got, want)
		}
	}
}

// requireNoTenant fails if anything of a tenant with the slug is left: a registry row, a
// schema or a role named after it.
func (b *bundle) requireNoTenant(t *testing.T, slug string) {
	t.Helper()
	var rows, schemas, roles int
	like := "%" + slug[:4] + "%" // names use the slug with underscores
	if err := b.admin.QueryRow(b.ctx, `SELECT (SELECT count(*) FROM tenants WHERE slug = $1),
		(SELECT count(*) FROM pg_namespace WHERE nspname LIKE 't\_' || replace($1, '-', '\_') || '\_%'),
		(SELECT count(*) FROM pg_roles WHERE rolname LIKE 'tr\_' || replace($1, '-', '\_') || '\_%')`, slug).Scan(&rows, &schemas, &roles); err != nil {
		t.Fatalf("checking leftovers of %s (%s): %v", slug, like, err)
	}
	if rows+schemas+roles != 0 {
		t.Fatalf("tenant %s left %d registry rows, %d schemas, %d roles; want none", slug, rows, schemas, roles)
	}
}

func TestExportImportRoundTrip(t *testing.T) {
	t.Parallel()
	for _, iso := range isolations {
		t.Run(string(iso), func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			src := b.create(t, "round-src", iso) // the same isolation on both sides
			b.seed(t, src)
			key := bytes.Repeat([]byte{7}, 32)
			data := b.export(t, src.Slug, provisioner.ExportOptions{Key: key, Actor: "tester"})

			var seen []string
			got, err := b.prov.Import(b.ctx, provisioner.ImportRequest{Archive: bytes.NewReader(data), Key: key, Slug: "round-dst",
				Isolation: iso, Actor: "tester", Progress: func(table string, _ int64) {
					if !slices.Contains(seen, table) {
						seen = append(seen, table)
					}
				}})
			if err != nil {
				t.Fatalf("Import: %v", err)
			}
			if got.Status != tenant.StatusActive || got.MigrationVersion != latest(t) || got.ID == src.ID || got.SchemaName == src.SchemaName {
				t.Fatalf("imported tenant = %+v, want a new active tenant at version %d", got, latest(t))
			}
			dst := b.get(t, got.ID)
			b.requireSameData(t, src, dst)
			if !slices.Equal(seen, exportedTables) {
				t.Errorf("progress saw tables %v, want %v in load order", seen, exportedTables)
			}
			conn := b.tenantConn(t, dst)
			var hash string
			var refresh int
			if err := conn.QueryRow(b.ctx, `SELECT password_hash, (SELECT count(*) FROM refresh_tokens) FROM users WHERE email = 'ann@x.test'`).Scan(&hash, &refresh); err != nil {
				t.Fatal(err)
			}
			if ok, err := password.NewHasher(password.OWASP, 1).Verify(b.ctx, seedPassword, hash); err != nil || !ok {
				t.Errorf("the imported user cannot log in with the old password: %v %v", ok, err)
			}
			if refresh != 0 {
				t.Errorf("%d refresh tokens imported, want none", refresh)
			}
			for _, c := range []*pgx.Conn{b.tenantConn(t, src), conn} {
				var n int
				if err := c.QueryRow(b.ctx, `SELECT count(*) FROM blogs WHERE search_vector @@ to_tsquery('simple', 'zebra')`).Scan(&n); err != nil || n != 50 {
					t.Errorf("search for zebra finds %d blogs (%v), want 50", n, err)
				}
			}
			// Loaded ids are never given out again.
			var id int64
			// A notification takes its id from the tenant's counter (tenant migration 4),
			// which the import leaves past every loaded id, whatever the archive held.
			if err := conn.QueryRow(b.ctx, `WITH n AS (UPDATE notification_counter SET last_id = last_id + 1 RETURNING last_id)
				INSERT INTO notifications (id, title) SELECT last_id, 'new' FROM n RETURNING id`).Scan(&id); err != nil || id <= 42 {
				t.Errorf("new notification id %d (%v), want past 42", id, err)
			}
			if err := conn.QueryRow(b.ctx, `INSERT INTO users (email, password_hash) VALUES ('new@x.test', 'x') RETURNING id`).Scan(&id); err != nil || id <= 2 {
				t.Errorf("new user id %d (%v), want past 2", id, err)
			}
			if ev := b.events(t, src.ID); count(ev, "export") != 1 {
				t.Errorf("source audit log %v, want one export", ev)
			}
			if ev := b.events(t, dst.ID); count(ev, "import") != 1 || count(ev, "import_source") != 1 {
				t.Errorf("imported tenant's audit log %v, want import and import_source", ev)
			}
		})
	}
}

// regzip rewrites a plain archive's uncompressed bytes with edit.
func regzip(t *testing.T, data []byte, edit func([]byte) []byte) []byte {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	zw := gzip.NewWriter(&out)
	_, _ = zw.Write(edit(raw))
	_ = zw.Close()
	return out.Bytes()
}

func TestImportRefusesBadArchivesAndLeavesNothing(t *testing.T) {
	t.Parallel()
	b := setup(t)
	src := b.seeded(t, "bad-src")
	good := b.export(t, src.Slug, provisioner.ExportOptions{})

	var newer bytes.Buffer
	w, err := archive.NewWriter(&newer, archive.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Begin(archive.Header{SchemaVersion: 999999, Tables: []archive.Table{{Name: "users", Columns: []string{"id"}}}}); err != nil {
		t.Fatal(err)
	}
	tw, _ := w.Table("users")
	_, _ = tw.Write([]byte("1\n"))
	_ = tw.Close()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	key := bytes.Repeat([]byte{1}, 32)
	encrypted := b.export(t, src.Slug, provisioner.ExportOptions{Key: key})
	flipped := slices.Clone(encrypted)
	flipped[len(flipped)/2] ^= 1

	for _, tc := range []struct {
		name string
		data []byte
		key  []byte
		code string
		is   error
	}{
		{"tampered", regzip(t, good, func(raw []byte) []byte { return bytes.Replace(raw, []byte("quiet lake"), []byte("quiet lamb"), 1) }), nil, "archive_invalid", archive.ErrChecksum},
		{"truncated", good[:len(good)*2/3], nil, "archive_invalid", archive.ErrTruncated},
		{"truncated at the manifest", regzip(t, good, func(raw []byte) []byte { return raw[:bytes.LastIndexByte(raw, 'M')] }), nil, "archive_invalid", archive.ErrTruncated},
		{"newer schema", newer.Bytes(), nil, "archive_newer", nil},
		{"encrypted and altered", flipped, key, "archive_invalid", archive.ErrChecksum},
		{"encrypted without key", encrypted, nil, "archive_invalid", archive.ErrEncrypted},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := b.prov.Import(b.ctx, provisioner.ImportRequest{Archive: bytes.NewReader(tc.data), Key: tc.key, Slug: "bad-dst"})
			requireAppErr(t, err, apperr.Invalid, tc.code)
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("error %v is not %v", err, tc.is)
			}
			b.requireNoTenant(t, "bad-dst")
		})
	}
	// The source is as it was.
	if got := b.get(t, src.ID); got.Status != tenant.StatusActive {
		t.Fatalf("source is %s after refused imports", got.Status)
	}
}

func TestImportOlderVersionIsMigratedUp(t *testing.T) {
	t.Parallel()
	versions := tenantVersions(t)
	if len(versions) < 2 {
		pgtest.Missing(t, "only one tenant migration: no older schema version to import from")
	}
	b := setup(t)
	src := b.create(t, "old-src", tenant.IsolationSchema)
	if _, err := b.prov.MigrateTenant(b.ctx, src, int(versions[0])); err != nil {
		t.Fatalf("migrating the source down: %v", err)
	}
	b.seed(t, src)
	data := b.export(t, src.Slug, provisioner.ExportOptions{})
	rd, err := archive.NewReader(bytes.NewReader(data), archive.Options{})
	if err != nil || int64(rd.Header().SchemaVersion) != versions[0] {
		t.Fatalf("archive version = %v (%v), want %d", rd, err, versions[0])
	}
	got, err := b.prov.Import(b.ctx, provisioner.ImportRequest{Archive: bytes.NewReader(data), Slug: "old-dst"})
	if err != nil {
		t.Fatalf("Import: %v", err)
	}
	if got.MigrationVersion != latest(t) {
		t.Fatalf("imported at version %d, want %d", got.MigrationVersion, latest(t))
	}
	if _, err := b.prov.MigrateTenant(b.ctx, src, -1); err != nil {
		t.Fatal(err)
	}
	b.requireSameData(t, src, b.get(t, got.ID))
}

func TestCloneIsIsolated(t *testing.T) {
	t.Parallel()
	shard2 := pgtest.NewDatabase(t, pgtest.Require(t, pgtest.EnvShard2URL))
	b := setup(t, func(c *provisioner.Config) {
		c.Shards = append(c.Shards, provisioner.Shard{Name: "b", URL: shard2})
	})
	src := b.seeded(t, "clone-src")
	for _, shard := range []string{"a", "b"} {
		got, err := b.prov.Clone(b.ctx, src.Slug, provisioner.ImportRequest{Slug: "clone-" + shard, Shard: shard, Actor: "tester"})
		if err != nil {
			t.Fatalf("Clone to %s: %v", shard, err)
		}
		dst := b.get(t, got.ID)
		if dst.Shard != shard || dst.DBRole == src.DBRole || dst.SchemaName == src.SchemaName {
			t.Fatalf("clone = %+v, want its own role and schema on shard %s", dst, shard)
		}
		b.requireSameData(t, src, dst)
		sc, dc := b.tenantConn(t, src), b.tenantConn(t, dst)
		if _, err := dc.Exec(b.ctx, `INSERT INTO blogs (title, author_id) VALUES ('only in clone', 1)`); err != nil {
			t.Fatal(err)
		}
		if _, err := sc.Exec(b.ctx, `INSERT INTO blogs (title, author_id) VALUES ('only in source `+shard+`', 1)`); err != nil {
			t.Fatal(err)
		}
		var inSrc, inDst int
		_ = sc.QueryRow(b.ctx, `SELECT count(*) FROM blogs WHERE title = 'only in clone'`).Scan(&inSrc)
		_ = dc.QueryRow(b.ctx, `SELECT count(*) FROM blogs WHERE title = 'only in source `+shard+`'`).Scan(&inDst)
		if inSrc != 0 || inDst != 0 {
			t.Errorf("writes crossed: %d clone rows in the source, %d source rows in the clone", inSrc, inDst)
		}
		if shard == "a" {
			_, err := dc.Exec(b.ctx, `SELECT count(*) FROM `+ident(src.SchemaName)+`.users`)
			if code := pgCode(err); code != "42501" {
				t.Errorf("the clone's role reading the source: %v, want permission denied", err)
			}
		}
	}
}

func TestReplaceKeepsIDAndRefusesOldTokens(t *testing.T) {
	t.Parallel()
	b := setup(t)
	tn := b.seeded(t, "replace-me")
	backup := b.export(t, tn.Slug, provisioner.ExportOptions{})
	conn := b.tenantConn(t, tn)
	// Life goes on after the backup: a new user, a password change, a refresh token.
	if _, err := conn.Exec(b.ctx, `INSERT INTO users (email, password_hash, token_version) VALUES ('carl@x.test', 'x', 9);
		UPDATE users SET token_version = 5 WHERE email = 'bob@x.test';
		INSERT INTO refresh_tokens (jti, user_id, family, expires_at) VALUES (gen_random_uuid(), 3, gen_random_uuid(), now() + interval '1 day')`); err != nil {
		t.Fatal(err)
	}
	var oldMax int
	_ = conn.QueryRow(b.ctx, `SELECT max(token_version) FROM users`).Scan(&oldMax)

	// Interrupted after the load: the tenant is not served until a run finishes it.
	p1 := b.newProvisioner(t)
	p1.SetAfterStep(provisioner.CrashAt(tenant.StepReplaceLoad))
	if _, err := p1.Replace(b.ctx, tn.Slug, provisioner.ImportRequest{Archive: bytes.NewReader(backup), Actor: "tester"}); !errors.Is(err, provisioner.ErrCrash) {
		t.Fatalf("Replace = %v, want the simulated crash", err)
	}
	mid := b.get(t, tn.ID)
	requireAppErr(t, mid.Serving(), apperr.Unavailable, "tenant_restoring")
	got, err := b.newProvisioner(t).Retry(b.ctx, tn.Slug, "tester")
	if err != nil || got.Status != tenant.StatusActive || got.ID != tn.ID {
		t.Fatalf("Retry = %+v, %v; want the same tenant active", got, err)
	}
	var users, refresh, minVersion int
	if err := conn.QueryRow(b.ctx, `SELECT count(*), min(token_version), (SELECT count(*) FROM refresh_tokens) FROM users`).Scan(&users, &minVersion, &refresh); err != nil {
		t.Fatal(err)
	}
	if users != 3 || refresh != 0 || minVersion <= oldMax {
		t.Errorf("after replace: %d users, %d refresh tokens, lowest token version %d; want 3 (the backup's), 0 and above %d", users, refresh, minVersion, oldMax)
	}
	if ev := b.events(t, tn.ID); count(ev, "replace_begin") != 1 || count(ev, "replace") != 1 {
		t.Errorf("audit log %v, want replace_begin and replace", ev)
	}

	// A refused archive changes nothing and serves the tenant again.
	before := dump(t, b.ctx, conn, "users")
	_, err = b.prov.Replace(b.ctx, tn.Slug, provisioner.ImportRequest{Archive: bytes.NewReader(backup[:len(backup)/2])})
	requireAppErr(t, err, apperr.Invalid, "archive_invalid")
	if after := dump(t, b.ctx, conn, "users"); after != before {
		t.Errorf("a refused replace changed the users:\n%s\n%s", before, after)
	}
	if got := b.get(t, tn.ID); got.Status != tenant.StatusActive {
		t.Errorf("after a refused replace the tenant is %s, want active", got.Status)
	}

	// A process killed before the load leaves the tenant restoring with its data: the
	// next run serves it again as it was.
	if _, err := b.store.Transition(b.ctx, tn.Slug, []tenant.Status{tenant.StatusActive}, tenant.StatusRestoring,
		tenant.TransitionInfo{Action: "replace_begin", Actor: "tester"}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.newProvisioner(t).ResumeInterrupted(b.ctx); err != nil {
		t.Fatalf("resuming: %v", err)
	}
	if got := b.get(t, tn.ID); got.Status != tenant.StatusActive || dump(t, b.ctx, conn, "users") != before {
		t.Errorf("after an interrupted replace the tenant is %s with changed users, want active as it was", got.Status)
	}

	// An archive of another schema version is refused: replace loads in place only.
	versions := tenantVersions(t)
	if len(versions) > 1 {
		old := b.seeded(t, "replace-old")
		if _, err := b.prov.MigrateTenant(b.ctx, old, int(versions[0])); err != nil {
			t.Fatal(err)
		}
		_, err := b.prov.Replace(b.ctx, tn.Slug, provisioner.ImportRequest{Archive: bytes.NewReader(b.export(t, old.Slug, provisioner.ExportOptions{}))})
		requireAppErr(t, err, apperr.Invalid, "archive_version_mismatch")
	}
}

// TestImportCrashAfterEachStepFinishesOrRollsBack stops an import after each of its
// steps in turn; the next process's run finishes it when its data was loaded and
// removes every trace of it otherwise.
func TestImportCrashAfterEachStepFinishesOrRollsBack(t *testing.T) {
	t.Parallel()
	b := setup(t)
	src := b.seeded(t, "crash-src")
	data := b.export(t, src.Slug, provisioner.ExportOptions{})
	steps := provisioner.ImportSteps()
	loaded := slices.Index(steps, tenant.StepImportLoad)
	for i, step := range steps {
		slug := "crash-" + string(rune('a'+i)) + "-dst"
		p := b.newProvisioner(t)
		p.SetAfterStep(provisioner.CrashAt(step))
		_, err := p.Import(b.ctx, provisioner.ImportRequest{Archive: bytes.NewReader(data), Slug: slug})
		if !errors.Is(err, provisioner.ErrCrash) {
			t.Fatalf("crash after %s: Import = %v, want the simulated crash", step, err)
		}
		if _, err := b.newProvisioner(t).ResumeInterrupted(b.ctx); err != nil {
			t.Fatalf("crash after %s: resuming: %v", step, err)
		}
		if i < loaded {
			b.requireNoTenant(t, slug)
			continue
		}
		got, err := b.store.Get(b.ctx, slug)
		if err != nil || got.Status != tenant.StatusActive || got.MigrationVersion != latest(t) {
			t.Fatalf("crash after %s: tenant = %+v, %v; want active at the newest version", step, got, err)
		}
		b.requireSameData(t, src, got)
	}
	// A cancelled import (a client gone mid-upload) is undone at once: nobody could
	// finish it without its archive.
	cctx, stop := context.WithCancel(b.ctx)
	p := b.newProvisioner(t)
	p.SetAfterStep(func(s tenant.Step) error {
		if s == tenant.StepImportSchema {
			stop()
		}
		return nil
	})
	if _, err := p.Import(cctx, provisioner.ImportRequest{Archive: bytes.NewReader(data), Slug: "crash-cancel"}); err == nil {
		t.Fatal("cancelled Import succeeded")
	}
	b.requireNoTenant(t, "crash-cancel")
}

func TestImportQueuesExternalReindex(t *testing.T) {
	t.Parallel()
	idx := newRecordingIndexes()
	b := setup(t, func(c *provisioner.Config) { c.Search = idx })
	src := b.seeded(t, "index-src")
	got, err := b.prov.Import(b.ctx, provisioner.ImportRequest{Archive: bytes.NewReader(b.export(t, src.Slug, provisioner.ExportOptions{})), Slug: "index-dst"})
	if err != nil {
		t.Fatalf("Import: %v", err)
	}
	if created, _ := idx.counts(got.SearchIndex); got.SearchIndex == "" || created != 1 {
		t.Errorf("search index %q created %d times, want once", got.SearchIndex, created)
	}
	var queued, blogs int
	if err := b.tenantConn(t, got).QueryRow(b.ctx, `SELECT (SELECT count(DISTINCT blog_id) FROM search_outbox WHERE op = 'upsert'), (SELECT count(*) FROM blogs)`).Scan(&queued, &blogs); err != nil {
		t.Fatal(err)
	}
	if queued != blogs || blogs == 0 {
		t.Errorf("%d of %d blogs queued for the indexer", queued, blogs)
	}
}
