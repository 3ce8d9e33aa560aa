package search

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tenantplane/tenantplane/apperr"
	"github.com/tenantplane/tenantplane/tenant"
)

// backends are the configurations every behaviour test runs against.
var backends = []struct {
	name  string
	setup func(t *testing.T) *env
}{
	{"postgres", setupPostgres},
	{"opensearch-per-tenant", func(t *testing.T) *env { return setupOpenSearch(t, PerTenant) }},
	{"opensearch-shared", func(t *testing.T) *env { return setupOpenSearch(t, Shared) }},
}

// hostileQueries are inputs no search box sends, with the one answer every backend
// gives: a 400, nothing, or (want 1) the blog "Tuning Postgres for speed" alone.
var hostileQueries = []struct {
	name    string
	q       string
	limit   int
	invalid bool
	want    int
}{
	{name: "NUL only", q: "\x00"},
	{name: "NULs around a word", q: "\x00tuning\x00", want: 1},
	{name: "NUL between words", q: "tuning\x00spe", want: 1},
	{name: "control characters only", q: "\x01\x02\x1b\x7f"},
	{name: "escape sequence after a word", q: "tuning\x1b[31m"}, // "31m" is a word too, matching nothing
	{name: "zero-width space", q: "\u200b"},
	{name: "invalid UTF-8", q: "tun\xe9", invalid: true},
	{name: "lone continuation byte", q: "\x80tuning", invalid: true},
	{name: "one character too long", q: strings.Repeat("a", MaxQueryLen+1), invalid: true},
	{name: "10 KB of NULs", q: strings.Repeat("\x00", 10<<10), invalid: true},
	{name: "longest accepted", q: strings.Repeat("é", MaxQueryLen)},
	{name: "negative limit", q: "tuning", limit: -1, invalid: true},
	{name: "limit too high", q: "tuning", limit: MaxLimit + 1, invalid: true},
}

// TestSearch checks what a user of the search box sees, on every backend: their own
// tenant's blogs only, as they type, ranked titles first, highlighted, in any script,
// following creates, updates and deletes, and a 400 or nothing for junk.
func TestSearch(t *testing.T) {
	t.Parallel()
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			e := b.setup(t)
			a := e.newTenant(t, "acme")
			other := e.newTenant(t, "globex")

			tuning := a.create(t, "Tuning Postgres for speed", "Indexes, vacuum and the planner.")
			goBlog := a.create(t, "Go concurrency patterns", "Channels and goroutines in practice; postgres drivers too.")
			rust := a.create(t, "Rust ownership explained", "Borrowing without tears.")
			rustDesc := a.create(t, "Systems programming notes", "rust rust rust: rust everywhere, rust all day, rust rust.")
			cafe := a.create(t, "Café culture in Paris", "Where to drink coffee.")
			strasse := a.create(t, "Die Straße nach Berlin", "Eine Reise.")
			cyr := a.create(t, "Привет мир", "Первый пост на русском языке.")
			xss := a.create(t, `<script>alert("x")</script> Postgres tricks`, "Escaping & quoting.")
			secret := other.create(t, "Postgres secrets of Globex", "Confidential zeppelin plans.")
			a.synced(t)
			other.synced(t)

			t.Run("prefix of the last word", func(t *testing.T) {
				got := ids(a.search(t, "postg"))
				for _, want := range []int64{tuning, goBlog, xss} {
					if !slices.Contains(got, want) {
						t.Errorf(`"postg" = %v, missing blog %d`, got, want)
					}
				}
				for _, h := range a.search(t, "postg") {
					if strings.Contains(h.TitleHighlight, "Globex") {
						t.Errorf(`"postg" as acme returned globex's blog: %+v`, h)
					}
				}
			})
			t.Run("titles rank first", func(t *testing.T) {
				hits := a.search(t, "postgres")
				if len(hits) != 3 || hits[2].ID != goBlog {
					t.Errorf(`"postgres" = %v, want the two title matches first, then %d (description only)`, ids(hits), goBlog)
				}
				hits = a.search(t, "rust")
				if len(hits) != 2 || hits[0].ID != rust || hits[1].ID != rustDesc {
					t.Errorf(`"rust" = %v, want [%d %d]: one title match beats many description matches`, ids(hits), rust, rustDesc)
				}
				if len(hits) == 2 && !(hits[0].Score > hits[1].Score) {
					t.Errorf("scores %v and %v do not order the hits", hits[0].Score, hits[1].Score)
				}
			})
			t.Run("every word must match", func(t *testing.T) {
				if got := ids(a.search(t, "postgres tun")); !slices.Equal(got, []int64{tuning}) {
					t.Errorf(`"postgres tun" = %v, want [%d]`, got, tuning)
				}
				if got := ids(a.search(t, "go concurrency pat")); !slices.Equal(got, []int64{goBlog}) {
					t.Errorf(`"go concurrency pat" = %v, want [%d]`, got, goBlog)
				}
				if got := a.search(t, "postgres zebra"); len(got) != 0 {
					t.Errorf(`"postgres zebra" = %v, want nothing`, ids(got))
				}
			})
			t.Run("unicode", func(t *testing.T) {
				for q, want := range map[string]int64{"café": cafe, "CAF": cafe, "straße": strasse, "Stra": strasse, "привет": cyr, "ПРИ": cyr, "русск": cyr} {
					if got := ids(a.search(t, q)); !slices.Equal(got, []int64{want}) {
						t.Errorf("%q = %v, want [%d]", q, got, want)
					}
				}
				hits := a.search(t, "прив")
				if len(hits) != 1 || !strings.Contains(hits[0].TitleHighlight, "<mark>Привет</mark>") {
					t.Errorf(`"прив" highlights = %+v, want <mark>Привет</mark> in the title`, hits)
				}
			})
			t.Run("highlights", func(t *testing.T) {
				hits := a.search(t, "tricks postg")
				if len(hits) != 1 {
					t.Fatalf(`"tricks postg" = %v, want one hit`, ids(hits))
				}
				h := hits[0].TitleHighlight
				if !strings.Contains(h, "<mark>Postgres</mark>") || !strings.Contains(h, "<mark>tricks</mark>") {
					t.Errorf("title highlight %q does not mark both words", h)
				}
				if strings.Contains(h, "<script>") || !strings.Contains(h, "&lt;script&gt;") {
					t.Errorf("title highlight %q is not HTML-escaped", h)
				}
				hits = a.search(t, "planner")
				if len(hits) != 1 || !strings.Contains(hits[0].DescriptionHighlight, "<mark>planner</mark>") {
					t.Errorf(`"planner" = %+v, want the description's match marked`, hits)
				}
			})
			t.Run("tenants never see each other", func(t *testing.T) {
				if got := a.search(t, "zeppelin"); len(got) != 0 {
					t.Errorf(`acme searching "zeppelin" = %v, want nothing (it is globex's)`, ids(got))
				}
				if got := ids(other.search(t, "postgres")); !slices.Equal(got, []int64{secret}) {
					t.Errorf(`globex searching "postgres" = %v, want only its own [%d]`, got, secret)
				}
				if got := ids(other.search(t, "tuning")); len(got) != 0 {
					t.Errorf(`globex searching "tuning" = %v, want nothing`, got)
				}
				if hits := other.search(t, "postgres"); len(hits) == 1 && !strings.Contains(hits[0].TitleHighlight, "Globex") {
					t.Errorf("globex's hit is %+v, not its own blog", hits[0])
				}
			})
			t.Run("bad queries", func(t *testing.T) {
				for _, q := range []string{"", "   ", strings.Repeat("x", 10<<10), "caf\xe9", "\xff\xfe"} {
					if _, err := e.search.Search(e.ctx, a.t, a.db, q, 0); apperr.KindOf(err) != apperr.Invalid {
						t.Errorf("Search(%.20q) error = %v, want Invalid", q, err)
					}
				}
				for _, q := range []string{"!!!", "&|!()", "'", `\`, ":*", "<->", `"unterminated`, "title:(", "a AND OR NOT", "*?~^", "{[}]", "/regex/", "p"} {
					hits, err := e.search.Search(e.ctx, a.t, a.db, q, 0)
					if err != nil && apperr.KindOf(err) != apperr.Invalid {
						t.Errorf("Search(%q) error = %v, want a 400 or a result", q, err)
					}
					if len(hits) != 0 {
						t.Errorf("Search(%q) = %v, want nothing", q, ids(hits))
					}
				}
				if got := ids(a.search(t, "postgres:* & !tuning")); !slices.Contains(got, tuning) {
					t.Errorf("operators are searched as words: got %v, want %d among them", got, tuning)
				}
				if _, err := e.search.Search(e.ctx, a.t, a.db, "postgres", MaxLimit+1); !errors.Is(err, apperr.ErrInvalid) {
					t.Errorf("limit %d error = %v, want Invalid", MaxLimit+1, err)
				}
				if hits, err := e.search.Search(e.ctx, a.t, a.db, "postgres", 1); err != nil || len(hits) != 1 {
					t.Errorf("limit 1 = %v, %v; want one hit", ids(hits), err)
				}
			})
			t.Run("hostile input is treated alike by every backend", func(t *testing.T) {
				for _, tc := range hostileQueries {
					hits, err := e.search.Search(e.ctx, a.t, a.db, tc.q, tc.limit)
					switch {
					case tc.invalid:
						if apperr.KindOf(err) != apperr.Invalid {
							t.Errorf("%s: error = %v, want Invalid (400)", tc.name, err)
						}
					case err != nil:
						t.Errorf("%s: error = %v, want a result", tc.name, err)
					case tc.want == 0 && len(hits) != 0:
						t.Errorf("%s: %v, want nothing", tc.name, ids(hits))
					case tc.want != 0 && !slices.Equal(ids(hits), []int64{tuning}):
						t.Errorf("%s: %v, want [%d]", tc.name, ids(hits), tuning)
					}
				}
			})
			t.Run("writes are reflected", func(t *testing.T) {
				id := a.create(t, "Kubernetes operators", "Reconcile loops.")
				a.synced(t)
				if got := ids(a.search(t, "kube")); !slices.Equal(got, []int64{id}) {
					t.Fatalf(`after create, "kube" = %v, want [%d]`, got, id)
				}
				a.update(t, id, "Nomad schedulers", "Reconcile loops.")
				a.synced(t)
				if got := a.search(t, "kube"); len(got) != 0 {
					t.Errorf(`after update, "kube" = %v, want nothing`, ids(got))
				}
				if got := ids(a.search(t, "noma")); !slices.Equal(got, []int64{id}) {
					t.Errorf(`after update, "noma" = %v, want [%d]`, got, id)
				}
				a.remove(t, id)
				a.synced(t)
				if got := a.search(t, "noma"); len(got) != 0 {
					t.Errorf(`after delete, "noma" = %v, want nothing`, ids(got))
				}
			})
		})
	}
}

// TestPostgresTypoFallback checks that a misspelt word still finds the title, in
// schema and in database isolation (where pg_trgm lives in the tenant's database).
func TestPostgresTypoFallback(t *testing.T) {
	t.Parallel()
	e := setupPostgres(t)
	for _, iso := range []tenant.Isolation{tenant.IsolationSchema, tenant.IsolationDatabase} {
		d := e.newTenant(t, "typo-"+string(iso), iso)
		id := d.create(t, "Tuning Postgres for speed", "Indexes and vacuum.")
		d.create(t, "Gardening in spring", "Tulips.")
		hits := d.search(t, "postgrse")
		if len(hits) != 1 || hits[0].ID != id {
			t.Errorf("%s isolation: \"postgrse\" = %v, want [%d]", iso, ids(hits), id)
		}
		if got := d.search(t, "xylophone"); len(got) != 0 {
			t.Errorf("%s isolation: \"xylophone\" = %v, want nothing", iso, ids(got))
		}
	}
}

// TestPostgresTypoAnswersAsCorrected checks the typo fallback's rule: a misspelt query
// is answered as its corrected spelling would be, so a typo finds descriptions too,
// ranks title matches first and highlights the words the user meant.
func TestPostgresTypoAnswersAsCorrected(t *testing.T) {
	t.Parallel()
	e := setupPostgres(t)
	d := e.newTenant(t, "typo-rule")
	inTitle := d.create(t, "Kubernetes operators", "Reconcile loops.")
	inDesc := d.create(t, "Cluster notes", "Running kubernetes at home.")
	d.create(t, "Gardening in spring", "Tulips.")
	hits := d.search(t, "kubernetse")
	if got := ids(hits); !slices.Equal(got, []int64{inTitle, inDesc}) {
		t.Fatalf(`"kubernetse" = %v, want [%d %d]: the title match, then the description match`, got, inTitle, inDesc)
	}
	if !strings.Contains(hits[0].TitleHighlight, "<mark>Kubernetes</mark>") ||
		!strings.Contains(hits[1].DescriptionHighlight, "<mark>kubernetes</mark>") {
		t.Errorf("highlights %q and %q do not mark the corrected word", hits[0].TitleHighlight, hits[1].DescriptionHighlight)
	}
	if got := ids(d.search(t, "kubernetse operators")); !slices.Equal(got, []int64{inTitle}) {
		t.Errorf(`"kubernetse operators" = %v, want [%d]: every word must still match`, got, inTitle)
	}
}

// TestPostgresTypoOfCommonWord checks that the typo fallback's bounded probe still
// corrects a misspelling of a word many titles hold, among lookalike words: the probe
// reads only the first few similar titles, and the correction must be the word they
// share, not a lookalike.
func TestPostgresTypoOfCommonWord(t *testing.T) {
	t.Parallel()
	e := setupPostgres(t)
	d := e.newTenant(t, "typo-common")
	want := map[int64]bool{}
	for i := range 40 {
		if i%4 == 0 {
			d.create(t, fmt.Sprintf("Kubelet flags %d", i), "Node agent settings.")
		}
		want[d.create(t, fmt.Sprintf("Kubernetes upgrade notes %d", i), "Cluster work.")] = true
	}
	hits := d.search(t, "kubernetse")
	if len(hits) != DefaultLimit {
		t.Fatalf(`"kubernetse" = %v, want %d hits`, ids(hits), DefaultLimit)
	}
	for _, h := range hits {
		if !want[h.ID] || !strings.Contains(h.TitleHighlight, "<mark>Kubernetes</mark>") {
			t.Errorf(`"kubernetse" returned %d (%q), want only Kubernetes titles, marked`, h.ID, h.TitleHighlight)
		}
	}
}

// TestPostgresDatabaseDownIsUnavailable checks that a search whose database cannot be
// reached is a 503 the client may retry, not an internal error, and so is recording an
// outbox event.
func TestPostgresDatabaseDownIsUnavailable(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	// Nothing listens on port 1: every connection attempt is refused.
	down, err := pgxpool.New(ctx, "postgres://nobody@127.0.0.1:1/none?connect_timeout=5")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(down.Close)
	_, err = NewPostgres(PostgresConfig{}).Search(ctx, &tenant.Tenant{Slug: "down"}, down, "postgres", 0)
	if apperr.KindOf(err) != apperr.Unavailable {
		t.Errorf("search with the database down: error = %v, want Unavailable", err)
	}
	if err := Enqueue(ctx, down, OpUpsert, 1); apperr.KindOf(err) != apperr.Unavailable {
		t.Errorf("enqueue with the database down: error = %v, want Unavailable", err)
	}
}

// TestPostgresWritesLeaveNoPendingEntries checks that blog writes go straight into the
// search indexes: entries left in a GIN pending list are read by every search until a
// vacuum merges them, which made searches several times slower after a burst of writes.
func TestPostgresWritesLeaveNoPendingEntries(t *testing.T) {
	t.Parallel()
	e := setupPostgres(t)
	d := e.newTenant(t, "pending")
	for i := range 50 {
		d.create(t, fmt.Sprintf("Pending list post %d", i), "Written in a burst, searched at once.")
	}
	for _, index := range []string{"blogs_search", "blogs_title_trgm"} {
		var pages int64
		if err := d.db.QueryRow(e.ctx, `SELECT pg_catalog.gin_clean_pending_list($1::regclass)`, index).Scan(&pages); err != nil {
			t.Fatalf("reading the pending list of %s: %v", index, err)
		}
		if pages != 0 {
			t.Errorf("%s had %d pending-list pages after 50 writes, want 0 (fastupdate off)", index, pages)
		}
	}
}
