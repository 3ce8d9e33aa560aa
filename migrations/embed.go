// Package migrations holds the SQL migrations of the platform, embedded in the binary:
// Public for the control database's public schema (the tenant registry) and Tenant for
// every tenant's schema. Files follow golang-migrate's NNNNNN_name.{up,down}.sql naming.
package migrations

import (
	"embed"
	"io/fs"
)

//go:embed public/*.sql tenant/*.sql
var files embed.FS

// Public returns the migrations of the registry in the public schema.
func Public() fs.FS { return sub("public") }

// Tenant returns the migrations applied to each tenant's schema.
func Tenant() fs.FS { return sub("tenant") }

func sub(dir string) fs.FS {
	f, err := fs.Sub(files, dir)
	if err != nil {
		panic(err) // the directory is embedded above; this cannot fail
	}
	return f
}
