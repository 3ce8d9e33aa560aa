package pgerr

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tenantplane/tenantplane/apperr"
)

func TestTranslate(t *testing.T) {
	t.Parallel()
	slugTaken := apperr.New(apperr.Conflict, "slug_taken", "a tenant with this slug already exists")
	codes := Codes{
		NotFound: apperr.New(apperr.NotFound, "tenant_not_found", "tenant not found"),
		Unique:   map[string]*apperr.Error{"tenants_slug_key": slugTaken},
	}
	for _, tc := range []struct {
		name string
		err  error
		kind apperr.Kind
		code string
	}{
		{"no rows", fmt.Errorf("reading: %w", pgx.ErrNoRows), apperr.NotFound, "tenant_not_found"},
		{"known constraint", &pgconn.PgError{Code: "23505", ConstraintName: "tenants_slug_key"}, apperr.Conflict, "slug_taken"},
		{"other constraint", &pgconn.PgError{Code: "23505", ConstraintName: "x"}, apperr.Conflict, "conflict"},
		{"NUL byte", &pgconn.PgError{Code: "22021"}, apperr.Invalid, "invalid_text"},
		{"terminated", &pgconn.PgError{Code: "57P01"}, apperr.Unavailable, "db_unavailable"},
		{"starting", &pgconn.PgError{Code: "57P03"}, apperr.Unavailable, "db_unavailable"},
		{"syntax error stays internal", &pgconn.PgError{Code: "42601"}, apperr.Internal, ""},
		{"domain error unchanged", apperr.New(apperr.Forbidden, "forbidden", "no"), apperr.Forbidden, "forbidden"},
	} {
		got := Translate(tc.err, codes)
		if k := apperr.KindOf(got); k != tc.kind {
			t.Errorf("%s: kind %v, want %v (%v)", tc.name, k, tc.kind, got)
			continue
		}
		var de *apperr.Error
		if tc.code != "" && (!errors.As(got, &de) || de.Code != tc.code) {
			t.Errorf("%s: code of %v, want %s", tc.name, got, tc.code)
		}
	}
	if Translate(nil, codes) != nil {
		t.Error("Translate(nil) is not nil")
	}
	if Unavailable(context.Canceled) {
		t.Error("a cancelled request counts as an outage")
	}
}
