package provisioner

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"slices"
	"testing"
	"time"

	dt "github.com/golang-migrate/migrate/v4/database/testing"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tenantplane/tenantplane/internal/pgtest"
)

// The migration driver passes golang-migrate's own driver conformance tests, over a
// login and over a pooled connection switched to a tenant role, and leaves the pooled
// connection as it found it.
func TestFleetMigrationDriverConformance(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dsn := pgtest.NewDatabase(t, pgtest.URL(t))
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	role := "tr_fleet_driver_" + fleetRandomID()
	if _, err := conn.Exec(ctx, `CREATE SCHEMA bylogin; CREATE ROLE `+role+` NOLOGIN; CREATE SCHEMA byrole AUTHORIZATION `+role); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c, err := pgx.Connect(context.Background(), dsn)
		if err == nil {
			_, _ = c.Exec(context.Background(), `DROP SCHEMA byrole CASCADE; DROP ROLE `+role)
			_ = c.Close(context.Background())
		}
	})
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	migration := []byte(`CREATE TABLE things (id int); INSERT INTO things VALUES (1);`)

	for _, c := range []struct {
		name string
		job  migrateJob
	}{
		{"login", migrateJob{set: "test", dsn: dsn + "&search_path=bylogin", schema: "bylogin"}},
		{"pooled as role", migrateJob{set: "test", pool: pool, role: role, schema: "byrole"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			conn, release, err := openMigrationConn(ctx, c.job)
			if err != nil {
				t.Fatal(err)
			}
			d, err := newPGDriver(ctx, conn, release, c.job.schema)
			if err != nil {
				t.Fatal(err)
			}
			dt.Test(t, d, migration)
			if err := d.Close(); err != nil {
				t.Fatal(err)
			}
		})
	}
	// What a migration creates over a switched connection belongs to the tenant role.
	c, release, err := openMigrationConn(ctx, migrateJob{set: "test", pool: pool, role: role, schema: "byrole"})
	if err != nil {
		t.Fatal(err)
	}
	d, err := newPGDriver(ctx, c, release, "byrole")
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Run(bytes.NewReader(migration)); err != nil {
		t.Fatal(err)
	}
	_ = d.Close()
	rows, err := conn.Query(ctx, `SELECT tablename || ' ' || tableowner FROM pg_tables WHERE schemaname = 'byrole' ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	owners, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if want := []string{"schema_migrations " + role, "things " + role}; err != nil || !slices.Equal(owners, want) {
		t.Errorf("tables and owners = %v, %v; want %v", owners, err, want)
	}
	// The pooled connection is back to the admin role, with no lock left.
	pc, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Release()
	var user, path string
	var locks int
	if err := pc.QueryRow(ctx, `SELECT current_user, current_setting('search_path'),
		(SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid())`).Scan(&user, &path, &locks); err != nil {
		t.Fatal(err)
	}
	if user == role || path == "byrole" || locks != 0 {
		t.Errorf("pooled connection after a migration: user %s, search_path %s, %d advisory locks", user, path, locks)
	}
}

// fleetRandomID returns a short random id for the names of a test's cluster-wide objects.
func fleetRandomID() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
