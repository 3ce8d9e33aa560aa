package provisioner_test

import (
	"errors"
	"regexp"
	"strings"
	"testing"

	"github.com/tenantplane/tenantplane/apperr"
	"github.com/tenantplane/tenantplane/provisioner"
	"github.com/tenantplane/tenantplane/tenant"
)

func TestValidateSlug(t *testing.T) {
	t.Parallel()
	cases := []struct {
		slug string
		code string // "" when valid
	}{
		{"acme", ""},
		{"abc", ""},
		{"acme-corp-2", ""},
		{"a" + strings.Repeat("b", 62), ""},
		{"a" + strings.Repeat("b", 63), "invalid_slug"},
		{"ab", "invalid_slug"},
		{"", "invalid_slug"},
		{"Acme", "invalid_slug"},
		{"acme-", "invalid_slug"},
		{"acme--corp", "invalid_slug"},
		{"-acme", "invalid_slug"},
		{"1acme", "invalid_slug"},
		{"acme_corp", "invalid_slug"},
		{"acme.corp", "invalid_slug"},
		{"acmé", "invalid_slug"},
		{"www", "reserved_slug"},
		{"admin", "reserved_slug"},
		{"api", "reserved_slug"},
		{"public", "reserved_slug"},
		{"postgres", "reserved_slug"},
		{"template1", "reserved_slug"},
	}
	for _, tc := range cases {
		err := tenant.ValidateSlug(tc.slug)
		if tc.code == "" {
			if err != nil {
				t.Errorf("ValidateSlug(%q) = %v, want valid", tc.slug, err)
			}
			continue
		}
		var ae *apperr.Error
		if !errors.As(err, &ae) || ae.Kind != apperr.Invalid || ae.Code != tc.code {
			t.Errorf("ValidateSlug(%q) = %v, want Invalid %s", tc.slug, err, tc.code)
		}
		// The provisioner refuses it before touching the registry.
		req := request(tc.slug, tenant.IsolationSchema)
		if err := req.Validate(); apperr.KindOf(err) != apperr.Invalid {
			t.Errorf("CreateRequest{Slug: %q}.Validate() = %v, want Invalid", tc.slug, err)
		}
	}
}

func TestCreateRequestValidate(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		mutate func(*provisioner.CreateRequest)
		code   string
	}{
		{"bad email", func(r *provisioner.CreateRequest) { r.AdminEmail = "not-an-email" }, "invalid_email"},
		{"display email", func(r *provisioner.CreateRequest) { r.AdminEmail = "Admin <a@b.example>" }, "invalid_email"},
		{"no password", func(r *provisioner.CreateRequest) { r.AdminPasswordHash = "" }, "invalid"},
		{"bad isolation", func(r *provisioner.CreateRequest) { r.Isolation = "cluster" }, "invalid"},
		{"long name", func(r *provisioner.CreateRequest) { r.Name = strings.Repeat("n", 201) }, "invalid_name"},
		{"control character in name", func(r *provisioner.CreateRequest) { r.Name = "a\x00b" }, "invalid_name"},
	}
	for _, tc := range cases {
		req := request("valid-slug", tenant.IsolationSchema)
		tc.mutate(&req)
		requireAppErr(t, req.Validate(), apperr.Invalid, tc.code)
	}
	// The limit counts characters, as signup does, not bytes.
	req := request("valid-slug", tenant.IsolationSchema)
	req.Name = strings.Repeat("é", tenant.MaxName)
	if err := req.Validate(); err != nil {
		t.Errorf("a name of %d two-byte characters: %v, want valid", tenant.MaxName, err)
	}
	req = request("valid-slug", "")
	req.Name = "  "
	if err := req.Validate(); err != nil || req.Isolation != tenant.IsolationSchema || req.Name != "valid-slug" {
		t.Errorf("defaults: %v, isolation %q, name %q; want schema isolation named after the slug", err, req.Isolation, req.Name)
	}
}

func TestNewNames(t *testing.T) {
	t.Parallel()
	ident := regexp.MustCompile(`^[a-z_][a-z0-9_]*$`)
	longest := "a" + strings.Repeat("b-", 30) + "cd" // 63 characters
	if err := tenant.ValidateSlug(longest); err != nil {
		t.Fatalf("longest slug invalid: %v", err)
	}
	seen := map[string]bool{}
	for i := 0; i < 500; i++ {
		for _, slug := range []string{longest, "acme", strings.Repeat("x", 63)} {
			for _, iso := range []tenant.Isolation{tenant.IsolationSchema, tenant.IsolationDatabase} {
				n := tenant.NewNames(slug, iso)
				if (n.Database != "") != (iso == tenant.IsolationDatabase) {
					t.Fatalf("NewNames(%q, %s).Database = %q", slug, iso, n.Database)
				}
				for _, name := range []string{n.Schema, n.Role, n.Database} {
					if name == "" {
						continue
					}
					if len(name) > 63 {
						t.Fatalf("name %q is %d bytes, over Postgres' 63", name, len(name))
					}
					if !ident.MatchString(name) {
						t.Fatalf("name %q needs quoting", name)
					}
					if seen[name] {
						t.Fatalf("name %q given out twice", name)
					}
					seen[name] = true
				}
			}
		}
	}
	// Slugs that share their first 24 characters still get different names.
	a := tenant.NewNames(strings.Repeat("x", 30)+"a", tenant.IsolationSchema)
	b := tenant.NewNames(strings.Repeat("x", 30)+"b", tenant.IsolationSchema)
	if a.Schema == b.Schema || a.Role == b.Role {
		t.Errorf("names collide: %+v and %+v", a, b)
	}
}
