// Package benchdb holds what every bench program does to the services it is given: it
// refuses any that is not on this machine's loopback (the benches create and drop
// databases and roles, and send load), and it drops what a run created.
package benchdb

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/url"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// RequireLoopback returns an error unless every Postgres URL names a loopback address,
// localhost or a Unix socket.
func RequireLoopback(dbURLs ...string) error {
	for _, u := range dbURLs {
		cfg, err := pgx.ParseConfig(u)
		if err != nil {
			return fmt.Errorf("parsing a database url: %w", err)
		}
		if err := RequireLoopbackHost(cfg.Host); err != nil {
			return err
		}
	}
	return nil
}

// RequireLoopbackHost returns an error unless host (optionally host:port) is a loopback
// address, localhost or a Unix socket directory.
func RequireLoopbackHost(host string) error {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	if strings.HasPrefix(host, "/") || host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("refusing %q: the benches run against loopback services only (127.0.0.1, ::1, localhost or a unix socket)", host)
}

// TenantRoles returns the Postgres roles of the tenants in the control database db,
// which a run's cleanup drops with the database; none when it cannot read them.
func TenantRoles(ctx context.Context, db *pgxpool.Pool) []string {
	rows, err := db.Query(ctx, `SELECT db_role FROM tenants`)
	if err != nil {
		return nil
	}
	roles, _ := pgx.CollectRows(rows, pgx.RowTo[string])
	return roles
}

// Drop drops the database name (closing its sessions) and then the roles, connected
// with adminURL. It tries everything and returns the first error.
func Drop(ctx context.Context, adminURL, name string, roles []string) error {
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return fmt.Errorf("connecting to drop database %s: %w", name, err)
	}
	defer conn.Close(ctx)
	var first error
	if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
		first = fmt.Errorf("dropping database %s: %w", name, err)
	}
	for _, r := range roles {
		if _, err := conn.Exec(ctx, "DROP ROLE IF EXISTS "+pgx.Identifier{r}.Sanitize()); err != nil && first == nil {
			first = fmt.Errorf("dropping role %s: %w", r, err)
		}
	}
	return first
}

// Create makes a throwaway database named prefix + a random suffix on the cluster of
// adminURL and returns its name and URL (adminURL with the database replaced).
func Create(ctx context.Context, adminURL, prefix string) (name, dbURL string, err error) {
	u, err := url.Parse(adminURL)
	if err != nil {
		return "", "", fmt.Errorf("parsing the database url: %w", err)
	}
	b := make([]byte, 5)
	_, _ = rand.Read(b)
	name = prefix + hex.EncodeToString(b)
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return "", "", fmt.Errorf("connecting to %s: %w", u.Redacted(), err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return "", "", fmt.Errorf("creating database: %w", err)
	}
	u.Path = "/" + name
	return name, u.String(), nil
}
