package tenant

import (
	"errors"
	"testing"

	"github.com/tenantplane/tenantplane/apperr"
)

func TestValidateSlugRefusesInfrastructureNames(t *testing.T) {
	t.Parallel()
	for _, s := range []string{
		"autodiscover", "autoconfig", "wpad", "isatap", "localhost", "mail", "smtp", "imap",
		"pop", "pop3", "ftp", "ns1", "ns2", "ns3", "ns4", "dns", "vpn", "webmail", "cpanel",
		"whm", "status", "static", "cdn", "assets", "metrics", "grafana", "prometheus",
		"kubernetes", "k8s", "admin", "www",
	} {
		err := ValidateSlug(s)
		var e *apperr.Error
		if !errors.As(err, &e) || e.Code != "reserved_slug" {
			t.Errorf("ValidateSlug(%q) = %v, want reserved_slug", s, err)
		}
	}
	for _, s := range []string{"ns", "mx"} {
		if ValidateSlug(s) == nil {
			t.Errorf("ValidateSlug(%q) accepted a two-letter slug", s)
		}
	}
	if err := ValidateSlug("acme"); err != nil {
		t.Errorf("ValidateSlug(acme) = %v", err)
	}
}

func TestValidateNameRefusesControlCharactersAndCountsCharacters(t *testing.T) {
	t.Parallel()
	long := ""
	for range MaxName {
		long += "é" // two bytes each: the limit is in characters
	}
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{"", true}, {"Acme Inc.", true}, {long, true}, {long + "é", false},
		{"a\x00b", false}, {"a\nb", false}, {"a\x7fb", false}, {"a\xffb", false},
	} {
		if err := ValidateName(tc.in); (err == nil) != tc.ok {
			t.Errorf("ValidateName(%q) = %v, want ok=%v", tc.in, err, tc.ok)
		}
	}
}

func TestRestoringTenantIsNotServed(t *testing.T) {
	t.Parallel()
	tn := &Tenant{Slug: "acme", Status: StatusRestoring}
	var e *apperr.Error
	if err := tn.Serving(); !errors.As(err, &e) || e.Kind != apperr.Unavailable || e.Code != "tenant_restoring" {
		t.Fatalf("Serving() = %v, want 503 tenant_restoring", err)
	}
	if st, err := ParseStatus("restoring"); err != nil || st != StatusRestoring {
		t.Fatalf("ParseStatus(restoring) = %q, %v", st, err)
	}
}
