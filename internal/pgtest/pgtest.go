// Package pgtest gives tests a throwaway database on the real Postgres clusters that
// `make test` starts. Each call makes a fresh database, dropped when the test ends.
// When the cluster is not configured the test is skipped, except under CI=true, where
// a missing service fails the test instead of passing silently.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Environment variables naming the test clusters' superuser URLs.
const (
	EnvURL       = "TENANTPLANE_TEST_DATABASE_URL"
	EnvShard2URL = "TENANTPLANE_TEST_SHARD2_URL"
)

// Require returns the value of the environment variable, or skips the test (fails it
// under CI=true) when it is unset.
func Require(t testing.TB, env string) string {
	t.Helper()
	v := os.Getenv(env)
	if v == "" {
		Missing(t, "%s is not set; `make test` starts the services this test needs", env)
	}
	return v
}

// Missing ends a test that cannot run here (a service, a tool or a fixture it needs is
// absent): it skips with the reason, and fails under CI=true, where a missing thing must
// never pass silently.
func Missing(t testing.TB, format string, args ...any) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf(format, args...)
	}
	t.Skipf(format, args...)
}

// URL returns the superuser URL of the first test cluster.
func URL(t testing.TB) string { return Require(t, EnvURL) }

// NewDatabase creates an empty database on the cluster at adminURL and returns its URL;
// the database is dropped when the test ends.
func NewDatabase(t testing.TB, adminURL string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	name := "test_" + hex.EncodeToString(b)
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		t.Fatalf("connecting to test cluster: %v", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("creating test database: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, adminURL)
		if err != nil {
			t.Errorf("connecting to drop test database: %v", err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Errorf("dropping test database: %v", err)
		}
	})
	u, err := url.Parse(adminURL)
	if err != nil {
		t.Fatalf("parsing %s: %v", adminURL, err)
	}
	u.Path = "/" + name
	return u.String()
}

// Pool opens a pool on dsn, closed when the test ends.
func Pool(t testing.TB, dsn string) *pgxpool.Pool {
	t.Helper()
	p, err := pgxpool.New(context.Background(), dsn)
	if err != nil {
		t.Fatalf("opening pool: %v", err)
	}
	t.Cleanup(p.Close)
	return p
}
