package provisioner_test

import (
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/tenantplane/tenantplane/tenant"
)

// permissionDenied is SQLSTATE insufficient_privilege.
const permissionDenied = "42501"

func TestTenantRoleReachesOnlyItsOwnSchema(t *testing.T) {
	t.Parallel()
	for _, iso := range isolations {
		t.Run(string(iso), func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			a := b.create(t, "tenant-a", iso)
			other := b.create(t, "tenant-b", iso)
			ctx := b.ctx

			connA := b.tenantConn(t, a)
			var user, schema string
			if err := connA.QueryRow(ctx, `SELECT current_user, current_schema()`).Scan(&user, &schema); err != nil {
				t.Fatal(err)
			}
			if user != a.DBRole || schema != a.SchemaName {
				t.Fatalf("A's session is %s in %s, want %s in %s", user, schema, a.DBRole, a.SchemaName)
			}
			// A's own data is there.
			var n int
			if err := connA.QueryRow(ctx, `SELECT count(*) FROM users`).Scan(&n); err != nil || n != 1 {
				t.Fatalf("A reading its users: %d, %v", n, err)
			}

			// B's users, qualified by schema.
			if iso == tenant.IsolationSchema {
				_, err := connA.Exec(ctx, `SELECT * FROM `+ident(other.SchemaName)+`.users`)
				if pgCode(err) != permissionDenied {
					t.Errorf("A reading B's users: %v, want permission denied (%s)", err, permissionDenied)
				}
			} else {
				// A's credentials on B's database are refused at connect time.
				dsnA, err := a.ConnString(b.shardURL(t, a.Shard))
				if err != nil {
					t.Fatal(err)
				}
				conn, err := pgx.Connect(ctx, withDatabase(t, dsnA, other.DatabaseName))
				if err == nil {
					_, err = conn.Exec(ctx, `SELECT * FROM `+ident(other.SchemaName)+`.users`)
					_ = conn.Close(ctx)
				}
				if pgCode(err) != permissionDenied {
					t.Errorf("A on B's database: %v, want permission denied (%s)", err, permissionDenied)
				}
			}

			// The registry in the control database (shard "a"'s database) is closed to A,
			// whichever database A's connection string names.
			dsnA, err := a.ConnString(b.shardURL(t, a.Shard))
			if err != nil {
				t.Fatal(err)
			}
			controlDB := withDatabase(t, dsnA, dbName(t, b.controlURL))
			conn, err := pgx.Connect(ctx, controlDB)
			if err == nil {
				_, err = conn.Exec(ctx, `SELECT * FROM public.tenants`)
				_ = conn.Close(ctx)
			}
			if pgCode(err) != permissionDenied {
				t.Errorf("A reading the registry: %v, want permission denied (%s)", err, permissionDenied)
			}

			// A cannot put objects outside its schema either.
			if _, err := connA.Exec(ctx, `CREATE TABLE public.leak (id int)`); pgCode(err) != permissionDenied {
				t.Errorf("A creating a table in public: %v, want permission denied", err)
			}
			// Nor take B's role.
			if _, err := connA.Exec(ctx, `SET ROLE `+ident(other.DBRole)); pgCode(err) != permissionDenied {
				t.Errorf("A taking B's role: %v, want permission denied", err)
			}
		})
	}
}

// dbName is the database a URL names.
func dbName(t *testing.T, dsn string) string {
	t.Helper()
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	return cfg.Database
}
