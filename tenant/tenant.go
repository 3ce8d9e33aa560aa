// Package tenant is the tenant model and its registry in the control database's public
// schema: slugs and their rules, lifecycle states, the names of each tenant's Postgres
// objects and how to connect as the tenant. The control plane writes the registry, the
// provisioner records its steps in it and the dataplane reads it. Store translates every
// database error with pgerr; the control plane's own tables (platform users, their
// refresh tokens, idempotency keys) are package platform's.
package tenant

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/tenantplane/tenantplane/apperr"
)

// Status is a tenant's lifecycle state.
type Status string

// The lifecycle: provisioning → active ⇄ suspended → pending_deletion → purged, plus failed,
// and active → restoring → active while an archive replaces the tenant's data in place.
const (
	StatusProvisioning    Status = "provisioning"
	StatusActive          Status = "active"
	StatusSuspended       Status = "suspended"
	StatusPendingDeletion Status = "pending_deletion"
	StatusPurged          Status = "purged"
	StatusFailed          Status = "failed"
	StatusRestoring       Status = "restoring"
)

// Statuses lists every status, in lifecycle order.
var Statuses = []Status{StatusProvisioning, StatusActive, StatusSuspended, StatusPendingDeletion, StatusPurged, StatusFailed, StatusRestoring}

// ParseStatus validates s as a status name.
func ParseStatus(s string) (Status, error) {
	for _, st := range Statuses {
		if string(st) == s {
			return st, nil
		}
	}
	return "", apperr.Invalidf("unknown status %q (want one of provisioning, active, suspended, pending_deletion, purged, failed, restoring)", s)
}

// Isolation is how a tenant's data is separated from the others'.
type Isolation string

// Isolation modes: a schema in the shard's database, or a database of its own.
const (
	IsolationSchema   Isolation = "schema"
	IsolationDatabase Isolation = "database"
)

// ParseIsolation validates s as an isolation mode; empty means schema.
func ParseIsolation(s string) (Isolation, error) {
	switch Isolation(s) {
	case "", IsolationSchema:
		return IsolationSchema, nil
	case IsolationDatabase:
		return IsolationDatabase, nil
	}
	return "", apperr.Invalidf("isolation must be %q or %q, not %q", IsolationSchema, IsolationDatabase, s)
}

// PoolMode is how the dataplane connects for a tenant (see package dataplane/pool).
type PoolMode string

// Pool modes: a shard-wide pool logged in as GatewayRole that binds every transaction
// to the tenant's role and schema (the default), or connections of the tenant's own,
// logged in as its role (database isolation, premium plans).
const (
	PoolShared    PoolMode = "shared"
	PoolDedicated PoolMode = "dedicated"
)

// GatewayRole is the login role of the shared pools on every shard: NOINHERIT, with no
// privileges of its own, a member of every tenant role (granted by the role step and
// public migration 000008) so that it can only act as a tenant, never for itself.
const GatewayRole = "tenantplane_gateway"

// Tenant is one row of the registry.
type Tenant struct {
	ID        string    `json:"id"`
	Slug      string    `json:"slug"`
	Name      string    `json:"name"`
	Status    Status    `json:"status"`
	Isolation Isolation `json:"isolation"`
	Shard     string    `json:"shard"`
	// SchemaName is the tenant's schema; in database isolation it lives in DatabaseName.
	SchemaName   string `json:"schema_name"`
	DatabaseName string `json:"database_name,omitempty"`
	// DBRole is the Postgres role the tenant's connections log in as; DBPassword is its
	// password, never shown in API answers or logs.
	DBRole      string   `json:"db_role"`
	DBPassword  string   `json:"-"`
	SearchIndex string   `json:"search_index,omitempty"`
	PoolMode    PoolMode `json:"pool_mode"`
	// WritesFrozen says the tenant is served for reads only (a move's last moments).
	WritesFrozen     bool       `json:"writes_frozen"`
	Plan             string     `json:"plan"`
	AdminEmail       string     `json:"admin_email"`
	PendingAdminHash string     `json:"-"`
	MigrationVersion int64      `json:"migration_version"`
	MigrationDirty   bool       `json:"migration_dirty"`
	Migrating        bool       `json:"migrating"` // a fleet migration run is working on the schema
	ProvisioningStep Step       `json:"provisioning_step"`
	LastError        string     `json:"last_error,omitempty"`
	DeleteAfter      *time.Time `json:"delete_after,omitempty"`
	CreatedAt        time.Time  `json:"created_at"`
	UpdatedAt        time.Time  `json:"updated_at"`
}

// slugForm reports whether s is 3 to 63 bytes of a-z, 0-9 and single dashes, starting
// with a letter and not ending with a dash. The resolver checks every request's host
// with it, so it is a loop over the bytes rather than a regular expression.
func slugForm(s string) bool {
	if len(s) < 3 || len(s) > 63 || s[0] < 'a' || s[0] > 'z' || s[len(s)-1] == '-' {
		return false
	}
	for i := 1; i < len(s); i++ {
		switch c := s[i]; {
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9':
		case c == '-' && s[i-1] != '-':
		default:
			return false
		}
	}
	return true
}

// reserved are slugs that would shadow platform hosts, well-known infrastructure names
// that clients probe by DNS (autodiscover, wpad, ...), or names that confuse operators.
// Names shorter than three characters (ns, mx) are already refused by the slug rule.
var reserved = map[string]bool{}

func init() {
	for _, s := range strings.Fields(`
		www admin api public app static assets cdn mail smtp imap pop pop3 ftp webmail
		root system platform control controlplane dataplane status docs swagger metrics
		health support help billing login signup auth ws postgres template0 template1
		tenantplane autodiscover autoconfig wpad isatap localhost ns1 ns2 ns3 ns4 dns vpn
		cpanel whm grafana prometheus kubernetes k8s`) {
		reserved[s] = true
	}
}

// ValidateSlug checks a tenant slug: lowercase letters, digits and dashes, 3 to 63
// characters, starting with a letter, not ending with a dash, not reserved.
func ValidateSlug(slug string) error {
	if !slugForm(slug) {
		return apperr.New(apperr.Invalid, "invalid_slug",
			"slug %q must be 3-63 characters of a-z, 0-9 and single dashes, start with a letter and not end with a dash", slug)
	}
	if reserved[slug] {
		return apperr.New(apperr.Invalid, "reserved_slug", "slug %q is reserved", slug)
	}
	return nil
}

// MaxName is the longest tenant display name, in characters.
const MaxName = 200

// ValidateName checks a tenant display name: valid UTF-8, at most MaxName characters, no
// control characters (NUL included). Empty is allowed: the slug stands in for it. It
// returns an Invalid error with code invalid_name otherwise.
func ValidateName(name string) error {
	if !utf8.ValidString(name) {
		return apperr.New(apperr.Invalid, "invalid_name", "name must be valid UTF-8")
	}
	if utf8.RuneCountInString(name) > MaxName {
		return apperr.New(apperr.Invalid, "invalid_name", "name must be at most %d characters", MaxName)
	}
	if strings.ContainsFunc(name, unicode.IsControl) {
		return apperr.New(apperr.Invalid, "invalid_name", "name must not contain control characters")
	}
	return nil
}

// Names are the Postgres object names of a new tenant. Each carries a random short id,
// and the registry keeps purged rows, so a name is never given out twice.
type Names struct {
	Schema   string
	Database string // empty in schema isolation
	Role     string
}

// NewNames derives object names for a tenant with the given slug and isolation.
func NewNames(slug string, iso Isolation) Names {
	b := make([]byte, 6)
	_, _ = rand.Read(b) // crypto/rand never fails on supported platforms
	id := hex.EncodeToString(b)
	short := strings.ReplaceAll(slug, "-", "_")
	if len(short) > 24 {
		short = short[:24]
	}
	n := Names{
		Schema: "t_" + short + "_" + id,
		Role:   "tr_" + short + "_" + id,
	}
	if iso == IsolationDatabase {
		n.Database = "td_" + short + "_" + id
	}
	return n
}

// NewPassword returns a random password for a tenant role.
func NewPassword() string {
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// ConnString returns the connection string for the tenant's own role on its shard:
// shardURL with the tenant's credentials, database and search_path. A connection made
// with it can reach the tenant's schema and nothing else.
func (t *Tenant) ConnString(shardURL string) (string, error) {
	u, err := url.Parse(shardURL)
	if err != nil {
		return "", fmt.Errorf("parsing shard %q url: %w", t.Shard, err)
	}
	u.User = url.UserPassword(t.DBRole, t.DBPassword)
	if t.DatabaseName != "" {
		u.Path = "/" + t.DatabaseName
	}
	q := u.Query()
	q.Set("search_path", t.SchemaName)
	u.RawQuery = q.Encode()
	return u.String(), nil
}

// Serving reports whether requests for the tenant may be served, and if not, the
// domain error that says why.
func (t *Tenant) Serving() error {
	switch t.Status {
	case StatusActive:
		if t.MigrationDirty {
			return apperr.New(apperr.Unavailable, "tenant_migration_dirty", "tenant %q is unavailable: a migration was interrupted", t.Slug)
		}
		if t.Migrating {
			return apperr.New(apperr.Unavailable, "tenant_migrating", "tenant %q is unavailable while its schema is migrated", t.Slug)
		}
		return nil
	case StatusSuspended:
		return apperr.New(apperr.Forbidden, "tenant_suspended", "tenant %q is suspended", t.Slug)
	case StatusPendingDeletion:
		return apperr.New(apperr.Unavailable, "tenant_pending_deletion", "tenant %q is scheduled for deletion", t.Slug)
	case StatusProvisioning:
		return apperr.New(apperr.Unavailable, "tenant_provisioning", "tenant %q is still being provisioned", t.Slug)
	case StatusFailed:
		return apperr.New(apperr.Unavailable, "tenant_failed", "tenant %q failed to provision", t.Slug)
	case StatusRestoring:
		return apperr.New(apperr.Unavailable, "tenant_restoring", "tenant %q is unavailable while its data is restored from an archive", t.Slug)
	}
	return apperr.New(apperr.NotFound, "tenant_not_found", "tenant not found")
}
