package email

import (
	"strings"
	"testing"
)

func TestValidate(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{"admin@acme.test", true},
		{"a.b+c@sub.example.com", true},
		{"", false},
		{"admin", false},
		{"admin@localhost", false},
		{"Admin <admin@acme.test>", false},
		{"ad\x00min@acme.test", false},
		{"ad\xffmin@acme.test", false},
		{strings.Repeat("a", 250) + "@a.io", false},
	} {
		if err := Validate(tc.in); (err == nil) != tc.ok {
			t.Errorf("Validate(%q) = %v, want ok=%v", tc.in, err, tc.ok)
		}
	}
}

func TestPlausible(t *testing.T) {
	t.Parallel()
	if !Plausible("anything@x") {
		t.Error("a short valid string is not plausible")
	}
	for _, s := range []string{"", "a\x00b", "\xff", strings.Repeat("a", MaxLen+1)} {
		if Plausible(s) {
			t.Errorf("Plausible(%q) = true", s)
		}
	}
}
