package tenant

import (
	"errors"
	"math/rand/v2"
	"regexp"
	"strings"
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

// TestSlugFormMatchesTheRule compares the byte loop with the rule written as a regular
// expression, over random strings of the slug alphabet and of bytes around it.
func TestSlugFormMatchesTheRule(t *testing.T) {
	t.Parallel()
	rule := regexp.MustCompile(`^[a-z][a-z0-9-]{2,62}$`)
	want := func(s string) bool {
		return rule.MatchString(s) && !strings.HasSuffix(s, "-") && !strings.Contains(s, "--")
	}
	alphabet := []byte("abz019-_A.\x00\xff/")
	rng := rand.New(rand.NewPCG(1, 2))
	valid := 0
	for range 200_000 {
		b := make([]byte, rng.IntN(70))
		for i := range b {
			b[i] = alphabet[rng.IntN(len(alphabet))]
		}
		s := string(b)
		if slugForm(s) != want(s) {
			t.Fatalf("slugForm(%q) = %v, the rule says %v", s, slugForm(s), want(s))
		}
		if want(s) {
			valid++
		}
	}
	if valid < 100 {
		t.Fatalf("only %d of the strings were slugs: the test hardly tries the accepting side", valid)
	}
}
