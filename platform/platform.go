// Package platform keeps the control plane's own tables in the control database:
// platform users (the global superusers), their refresh tokens, and the answers of
// signups made under an Idempotency-Key.
//
// Where control-database code goes: the tenant registry (tenants, domains, the audit
// log) is package tenant's Store, because the provisioner and the dataplane read it
// too; what only the control plane uses is here. Both translate every database error
// with pgerr.Translate inside their methods, so the HTTP handlers of package
// controlplane see domain errors (package apperr) only and never write SQL.
package platform

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tenantplane/tenantplane/apperr"
	"github.com/tenantplane/tenantplane/pgerr"
)

// Store reads and writes the platform tables of the control database.
type Store struct {
	db *pgxpool.Pool
}

// NewStore returns the platform store on the control database pool.
func NewStore(db *pgxpool.Pool) *Store { return &Store{db: db} }

// querier is a pool or a transaction.
type querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// userCodes are the domain errors of platform_users.
var userCodes = pgerr.Codes{
	NotFound: apperr.New(apperr.NotFound, "user_not_found", "platform user not found"),
	Unique: map[string]*apperr.Error{
		"platform_users_email": apperr.New(apperr.Conflict, "email_taken", "a platform user with this email already exists"),
	},
}

// translate returns err as "doing: err" with err translated to a domain error by codes;
// nil stays nil. It is the one way errors leave this package's queries.
func translate(err error, codes pgerr.Codes, doing string) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%s: %w", doing, pgerr.Translate(err, codes))
}
