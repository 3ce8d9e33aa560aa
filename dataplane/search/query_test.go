package search

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/tenantplane/tenantplane/apperr"
	"github.com/tenantplane/tenantplane/tenant"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

func TestParseQuery(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		in      string
		want    []string // nil: no terms (an empty result)
		invalid bool
	}{
		{name: "one word", in: "Postgres", want: []string{"postgres"}},
		{name: "words", in: "  Go   concurrency pat ", want: []string{"go", "concurrency", "pat"}},
		{name: "short last word dropped", in: "postgres t", want: []string{"postgres"}},
		{name: "single letter", in: "p", want: nil},
		{name: "punctuation only", in: "!?.,;:-()[]{}", want: nil},
		{name: "tsquery operators", in: "foo & !bar | (baz:*) <-> qux", want: []string{"foo", "bar", "baz", "qux"}},
		{name: "lucene operators", in: `title:foo AND bar~2 "baz" +x -y* \\ /re/`, want: []string{"title", "foo", "and", "bar", "2", "baz", "x", "y", "re"}},
		{name: "sql quotes", in: `'; DROP TABLE blogs; --`, want: []string{"drop", "table", "blogs"}},
		{name: "unicode", in: "Café STRASSE Straße Привет", want: []string{"café", "strasse", "straße", "привет"}},
		{name: "digits", in: "covid19 2024", want: []string{"covid19", "2024"}},
		{name: "control characters", in: "foo\x00bar\tbaz", want: []string{"foo", "bar", "baz"}},
		{name: "empty", in: "", invalid: true},
		{name: "blank", in: " \t\n", invalid: true},
		{name: "invalid utf-8", in: "caf\xe9", invalid: true},
		{name: "10 KB", in: strings.Repeat("a", 10<<10), invalid: true},
		{name: "too many words", in: strings.Repeat("ab ", MaxTerms+1), invalid: true},
		{name: "longest accepted", in: strings.Repeat("é", MaxQueryLen), want: []string{strings.Repeat("é", MaxQueryLen)}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			q, err := parseQuery(tc.in)
			if tc.invalid {
				if apperr.KindOf(err) != apperr.Invalid {
					t.Fatalf("parseQuery(%q) error = %v, want an Invalid error", tc.in, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseQuery(%q): %v", tc.in, err)
			}
			if !slices.Equal(q.terms, tc.want) {
				t.Errorf("parseQuery(%q) = %q, want %q", tc.in, q.terms, tc.want)
			}
		})
	}
}

func TestValidLimit(t *testing.T) {
	t.Parallel()
	for in, want := range map[int]int{0: DefaultLimit, 1: 1, MaxLimit: MaxLimit} {
		if got, err := validLimit(in); err != nil || got != want {
			t.Errorf("validLimit(%d) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []int{-1, MaxLimit + 1} {
		if _, err := validLimit(in); !errors.Is(err, apperr.ErrInvalid) {
			t.Errorf("validLimit(%d) error = %v, want Invalid", in, err)
		}
	}
}

func TestCorrectTerms(t *testing.T) {
	t.Parallel()
	titles := []string{"Tuning Postgres for speed", "Postgres replication", "Kubernetes operators", "Postgrest APIs"}
	tests := []struct {
		name   string
		q      string
		titles []string
		want   []string
	}{
		{name: "swapped letters", q: "postgrse", titles: titles, want: []string{"postgres"}},
		{name: "prefix of a title word kept", q: "postgre", titles: titles, want: []string{"postgre"}},
		{name: "missing letter", q: "kubernetes operatrs", titles: titles, want: []string{"kubernetes", "operators"}},
		{name: "correct words kept", q: "tuning postgrse", titles: titles, want: []string{"tuning", "postgres"}},
		{name: "nothing close", q: "xylophone", titles: titles, want: []string{"xylophone"}},
		{name: "no titles", q: "postgrse", want: []string{"postgrse"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			q, err := parseQuery(tc.q)
			if err != nil {
				t.Fatal(err)
			}
			if got := correctTerms(q, tc.titles).terms; !slices.Equal(got, tc.want) {
				t.Errorf("correctTerms(%q) = %q, want %q", tc.q, got, tc.want)
			}
		})
	}
}

func TestHighlight(t *testing.T) {
	t.Parallel()
	long := strings.TrimSpace(strings.Repeat("filler ", 40) + "the Postgres planner " + strings.Repeat("tail ", 40))
	tests := []struct {
		name  string
		text  string
		q     string
		whole bool
		want  string
	}{
		{name: "prefix", text: "Tuning Postgres", q: "postg", whole: true, want: "Tuning <mark>Postgres</mark>"},
		{name: "exact and prefix", text: "Go is fun, going on", q: "go fu", whole: true, want: "<mark>Go</mark> is <mark>fun</mark>, going on"},
		{name: "escapes html", text: `<script>alert("x")</script> & postgres`, q: "postgres", whole: true,
			want: `&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; <mark>postgres</mark>`},
		{name: "cyrillic", text: "Привет, мир", q: "прив", whole: true, want: "<mark>Привет</mark>, мир"},
		{name: "no match", text: "Nothing here", q: "zzz", whole: true, want: "Nothing here"},
		{name: "marks in text are not markup", text: "a" + markOpen + "b" + markClose, q: "zz", whole: true, want: "ab"},
		{name: "snippet around match", text: long, q: "planner", want: "… filler filler filler filler the Postgres <mark>planner</mark> " + strings.TrimSpace(strings.Repeat("tail ", 23)) + " …"},
		{name: "snippet from start", text: long, q: "zzz", want: strings.TrimSpace(strings.Repeat("filler ", 30)) + " …"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			q, err := parseQuery(tc.q)
			if err != nil {
				t.Fatal(err)
			}
			if got := highlight(tc.text, q, tc.whole); got != tc.want {
				t.Errorf("highlight(%q, %q) =\n%q\nwant\n%q", tc.text, tc.q, got, tc.want)
			}
		})
	}
}

func TestTSQueries(t *testing.T) {
	t.Parallel()
	q, err := parseQuery("it's Go con")
	if err != nil {
		t.Fatal(err)
	}
	all, titles := tsqueries(q)
	if want := `'it' & 's' & 'go' & 'con':*`; all != want {
		t.Errorf("tsquery = %s, want %s", all, want)
	}
	if want := `'it':A & 's':A & 'go':A & 'con':*A`; titles != want {
		t.Errorf("title tsquery = %s, want %s", titles, want)
	}
}

// TestIndexBodyGolden pins the index settings and mappings each strategy creates.
func TestIndexBodyGolden(t *testing.T) {
	t.Parallel()
	tn := &tenant.Tenant{ID: "11111111-2222-3333-4444-555555555555", SchemaName: "t_acme_0123456789ab"}
	for _, s := range []Strategy{PerTenant, Shared} {
		o, err := NewOpenSearch(OpenSearchConfig{Addresses: []string{"http://127.0.0.1:1"}, Strategy: s})
		if err != nil {
			t.Fatal(err)
		}
		body := map[string]any{"index": o.indexBody(nil)}
		if s == PerTenant {
			body["index"] = o.indexBody(map[string]any{o.AliasName(tn): map[string]any{}})
		} else {
			body["alias"] = sharedAlias(tn)
		}
		o.Close()
		got, err := json.MarshalIndent(body, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, '\n')
		path := filepath.Join("testdata", "index-"+string(s)+".json")
		if *update {
			if err := os.WriteFile(path, got, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		want, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("reading golden file (run with -update to create it): %v", err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s index body differs from %s (run with -update if intended):\n%s", s, path, got)
		}
	}
}

func TestSearchBodyFiltersTenant(t *testing.T) {
	t.Parallel()
	tn := &tenant.Tenant{ID: "tenant-a"}
	q, err := parseQuery("go pat")
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(searchBody(tn, q, 5))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"filter":[{"term":{"tenant_id":"tenant-a"}}]`) {
		t.Errorf("search body has no tenant filter: %s", b)
	}
}
