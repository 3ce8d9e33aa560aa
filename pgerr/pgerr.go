// Package pgerr is the one place where Postgres and pgx errors become domain errors
// (package apperr). Every store, of the control database and of the tenants' databases,
// passes its errors through Translate, so a unique violation is a Conflict, a missing row
// a NotFound, bad text an Invalid and a database that is down or restarting an
// Unavailable (503 with Retry-After) everywhere, and no handler looks at a SQLSTATE.
package pgerr

import (
	"context"
	"errors"
	"io"
	"net"
	"syscall"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tenantplane/tenantplane/apperr"
)

// Codes tells Translate the domain errors of one store: what a missing row is, and what
// a unique violation of a given constraint means. The zero value translates with generic
// codes.
type Codes struct {
	// NotFound is returned for pgx.ErrNoRows (default: NotFound "not_found").
	NotFound *apperr.Error
	// Unique maps a constraint name to the Conflict it means; a constraint not listed is
	// Conflict "conflict".
	Unique map[string]*apperr.Error
}

// ErrUnavailable is the error of a database that cannot be reached or is restarting.
var ErrUnavailable = &apperr.Error{Kind: apperr.Unavailable, Code: "db_unavailable", Message: "the database is temporarily unavailable; retry shortly"}

// Translate maps err to a domain error by the rules of codes; errors that are already
// domain errors, context errors and errors it does not know are returned unchanged (a
// wrapped original stays reachable with errors.As).
func Translate(err error, codes Codes) error {
	if err == nil {
		return nil
	}
	var de *apperr.Error
	if errors.As(err, &de) {
		return err
	}
	if errors.Is(err, pgx.ErrNoRows) {
		if codes.NotFound != nil {
			return codes.NotFound
		}
		return apperr.New(apperr.NotFound, "not_found", "not found")
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch {
		case pgErr.Code == "23505": // unique_violation
			if e, ok := codes.Unique[pgErr.ConstraintName]; ok {
				return &apperr.Error{Kind: e.Kind, Code: e.Code, Message: e.Message, Err: err}
			}
			return &apperr.Error{Kind: apperr.Conflict, Code: "conflict", Message: "already exists", Err: err}
		case pgErr.Code == "22021" || pgErr.Code == "22P05": // character_not_in_repertoire, untranslatable_character
			return &apperr.Error{Kind: apperr.Invalid, Code: "invalid_text", Message: "text must be valid UTF-8 without NUL characters", Err: err}
		case pgErr.Code == "22001": // string_data_right_truncation
			return &apperr.Error{Kind: apperr.Invalid, Code: "too_long", Message: "a value is too long", Err: err}
		case pgErr.Code == "22003" || pgErr.Code == "22008": // numeric_value_out_of_range, datetime_field_overflow
			return &apperr.Error{Kind: apperr.Invalid, Code: "out_of_range", Message: "a value is out of range", Err: err}
		}
	}
	if Unavailable(err) {
		return &apperr.Error{Kind: ErrUnavailable.Kind, Code: ErrUnavailable.Code, Message: ErrUnavailable.Message, Err: err}
	}
	return err
}

// Unavailable reports whether err means the database cannot be used right now: it
// cannot be reached, it is starting or shutting down, it terminated the connection, or
// it has no connection slots left. A request that failed so is answered 503.
func Unavailable(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) {
		return false
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "57P01", "57P02", "57P03", // admin_shutdown, crash_shutdown, cannot_connect_now
			"53300",                                     // too_many_connections
			"08000", "08003", "08006", "08001", "08004": // connection exceptions
			return true
		}
		return false
	}
	var connErr *pgconn.ConnectError
	if errors.As(err, &connErr) {
		return true
	}
	if pgconn.SafeToRetry(err) || pgconn.Timeout(err) {
		return true
	}
	var netErr net.Error
	if errors.As(err, &netErr) {
		return true
	}
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// Retryable reports whether a read that failed with err may be run once more on another
// connection: the connection was killed under it (terminated by an administrator, reset),
// the statement was never sent, or its plan was stale (StalePlan). Writes must not be
// retried by this rule alone.
func Retryable(err error) bool {
	if err == nil {
		return false
	}
	if pgconn.SafeToRetry(err) || StalePlan(err) {
		return true
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code == "57P01" // admin_shutdown: pg_terminate_backend
	}
	return errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, io.EOF)
}

// StalePlan reports whether err is Postgres refusing a prepared statement whose result
// shape changed under it (feature_not_supported, "cached plan must not change result
// type"): a migration altered the tenant's tables after the statement was prepared and
// before the registry's new version reached this process. The statement's transaction
// is aborted and the statement is dropped with the error (by pgx's cache, or with the
// shared connection), so a unit of work that failed so may run again from its start.
func StalePlan(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "0A000"
}
