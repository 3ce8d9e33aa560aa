package controlplane

import (
	"context"
	"io/fs"
	"testing"

	"github.com/google/uuid"

	"github.com/tenantplane/tenantplane/internal/pgtest"
	"github.com/tenantplane/tenantplane/migrations"
)

// applyPublic runs the up migration files of the public set with the given names.
func applyPublic(t *testing.T, exec func(sql string) error, names ...string) {
	t.Helper()
	for _, name := range names {
		sql, err := fs.ReadFile(migrations.Public(), name)
		if err != nil {
			t.Fatal(err)
		}
		if err := exec(string(sql)); err != nil {
			t.Fatalf("applying %s: %v", name, err)
		}
	}
}

func TestPlatformRefreshMigrationRevokesUsedTokens(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := pgtest.Pool(t, pgtest.NewDatabase(t, pgtest.URL(t)))
	exec := func(sql string) error { _, err := db.Exec(ctx, sql); return err }
	applyPublic(t, exec, "000001_registry.up.sql", "000002_migration_ledger.up.sql", "000003_platform_refresh_tokens.up.sql")

	user, family, used, live := uuid.NewString(), uuid.NewString(), uuid.NewString(), uuid.NewString()
	if _, err := db.Exec(ctx, `INSERT INTO platform_users (id, email, password_hash) VALUES ($1, 'ops@example.com', 'x')`, user); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(ctx, `INSERT INTO platform_refresh_tokens (jti, user_id, family, expires_at, used_at)
		VALUES ($1, $3, $4, now() + interval '1 day', now()), ($2, $3, $4, now() + interval '1 day', NULL)`, used, live, user, family); err != nil {
		t.Fatal(err)
	}
	applyPublic(t, exec, "000004_platform_refresh_replaced_by.up.sql")

	for jti, wantRevoked := range map[string]bool{used: true, live: false} {
		var revoked, replaced bool
		if err := db.QueryRow(ctx, `SELECT revoked_at IS NOT NULL, replaced_by IS NOT NULL FROM platform_refresh_tokens WHERE jti = $1`, jti).
			Scan(&revoked, &replaced); err != nil {
			t.Fatal(err)
		}
		if revoked != wantRevoked || replaced {
			t.Errorf("token used=%v: revoked %v replaced %v after the migration", jti == used, revoked, replaced)
		}
	}
	// The table now has the tenant table's columns, and no used_at.
	var cols int
	if err := db.QueryRow(ctx, `SELECT count(*) FROM information_schema.columns WHERE table_name = 'platform_refresh_tokens' AND column_name = 'used_at'`).Scan(&cols); err != nil || cols != 0 {
		t.Fatalf("used_at still there (%d, %v)", cols, err)
	}
	applyPublic(t, exec, "000004_platform_refresh_replaced_by.down.sql")
}
