// Package search is the blog search of a tenant: instant (prefix-of-the-last-word)
// search over titles and descriptions, ranked, with highlighted snippets, never
// returning another tenant's blogs.
//
// Two backends answer the same Search call:
//
//   - Postgres (the default, no extra service) searches the tenant's own schema with
//     its full-text search vector, a trigram fallback for typos, and is always
//     consistent with the last write.
//   - OpenSearch keeps an index per tenant or one shared index with a filtered alias
//     per tenant. Blog writes only record a row in the tenant's search_outbox (see
//     Enqueue); the Indexer drains the outboxes with the bulk API and external
//     versions, so an OpenSearch outage never fails a write and replays change
//     nothing. OpenSearch also implements the provisioner's SearchIndexes and
//     rebuilds a tenant's index from Postgres with Reindex.
//
// Queries are sanitized the same way for both backends (see parseSearch): the
// user's text is split into words of letters and digits, every operator character is
// dropped, the last word is matched as a prefix once it has MinPrefixLen characters,
// and bad input (empty, too long, invalid UTF-8) is an apperr Invalid error, never an
// internal one. NUL bytes and other control characters separate words like spaces.
package search

import (
	"context"
	"fmt"
	"html"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/tenantplane/tenantplane/apperr"
	"github.com/tenantplane/tenantplane/dataplane/pool"
	"github.com/tenantplane/tenantplane/pgerr"
)

// Query limits, the same for every backend.
const (
	// MaxQueryLen is the longest query accepted, in characters.
	MaxQueryLen = 200
	// MaxTerms is the most words a query may have.
	MaxTerms = 16
	// MinPrefixLen is how many characters the last word needs before it is matched as
	// a prefix; a shorter last word is ignored (the user is still typing).
	MinPrefixLen = 2
	// DefaultLimit is the number of hits returned when the caller asks for 0.
	DefaultLimit = 10
	// MaxLimit is the most hits one search returns.
	MaxLimit = 100
)

// Hit is one search result. The highlights are HTML: the blog's text escaped, with the
// matching words wrapped in <mark> and </mark>.
type Hit struct {
	// ID is the blog's id.
	ID int64
	// Score orders the hits, higher first; it only compares hits of one search.
	Score float64
	// TitleHighlight is the whole title with its matches marked.
	TitleHighlight string
	// DescriptionHighlight is a snippet of the description around its matches (its
	// start when nothing in it matched).
	DescriptionHighlight string
}

// Op is the kind of change recorded in the search outbox.
type Op string

// The outbox operations.
const (
	OpUpsert Op = "upsert" // the blog was created or changed
	OpDelete Op = "delete" // the blog was deleted
)

// Enqueue records in the tenant's search_outbox that blog blogID changed, for the
// Indexer. Call it in the transaction that writes the blog, after the write: the
// event's version is the transaction's clock_timestamp() in microseconds, taken while
// the write holds the blog's row lock, so the versions of one blog grow in commit order
// and are never below the updated_at the write stored (Reindex relies on both).
// It returns an Invalid error for an unknown op.
func Enqueue(ctx context.Context, db pool.DB, op Op, blogID int64) error {
	if op != OpUpsert && op != OpDelete {
		return apperr.Invalidf("unknown search outbox operation %q", op)
	}
	_, err := db.Exec(ctx, `INSERT INTO search_outbox (blog_id, op, version)
		VALUES ($1, $2, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint)`, blogID, string(op))
	if err != nil {
		return fmt.Errorf("recording search outbox event: %w", pgerr.Translate(err, pgerr.Codes{}))
	}
	return nil
}

// query is a sanitized search query.
type query struct {
	// terms are the lowercased words in order; the last one is matched as a prefix.
	terms []string
}

// empty reports whether nothing is left to search for.
func (q query) empty() bool { return len(q.terms) == 0 }

// exact returns the words matched whole (all but the last).
func (q query) exact() []string { return q.terms[:len(q.terms)-1] }

// prefix returns the last word, matched as a prefix.
func (q query) prefix() string { return q.terms[len(q.terms)-1] }

// text returns the words joined by spaces.
func (q query) text() string { return strings.Join(q.terms, " ") }

// parseQuery sanitizes the user's query. It returns an Invalid error for invalid
// UTF-8, an empty query or one that is too long or has too many words; a query of
// punctuation only, or whose only word is shorter than MinPrefixLen, is empty.
func parseQuery(raw string) (query, error) {
	if !utf8.ValidString(raw) {
		return query{}, apperr.New(apperr.Invalid, "invalid_query", "the search query must be valid UTF-8")
	}
	if strings.TrimSpace(raw) == "" {
		return query{}, apperr.New(apperr.Invalid, "invalid_query", "the search query (q) is required")
	}
	if utf8.RuneCountInString(raw) > MaxQueryLen {
		return query{}, apperr.New(apperr.Invalid, "invalid_query", "the search query must be at most %d characters", MaxQueryLen)
	}
	var terms []string
	for _, w := range words(raw) {
		terms = append(terms, strings.ToLower(raw[w.start:w.end]))
	}
	if len(terms) > MaxTerms {
		return query{}, apperr.New(apperr.Invalid, "invalid_query", "the search query must have at most %d words", MaxTerms)
	}
	if n := len(terms); n > 0 && utf8.RuneCountInString(terms[n-1]) < MinPrefixLen {
		terms = terms[:n-1]
	}
	return query{terms: terms}, nil
}

// CheckQuery applies the one query rule of every backend (see parseQuery) without
// searching: callers that answer before reaching a backend (no backend configured, a
// test double) refuse the same queries. It returns parseQuery's Invalid errors.
func CheckQuery(raw string) error {
	_, err := parseQuery(raw)
	return err
}

// parseSearch validates a search request, the same way for every backend: the query
// as parseQuery does, the limit as validLimit does. It returns the sanitized query and
// the number of hits to return, or an Invalid error.
func parseSearch(raw string, limit int) (query, int, error) {
	q, err := parseQuery(raw)
	if err != nil {
		return query{}, 0, err
	}
	limit, err = validLimit(limit)
	if err != nil {
		return query{}, 0, err
	}
	return q, limit, nil
}

// validLimit applies the default and bounds to a requested number of hits.
func validLimit(limit int) (int, error) {
	switch {
	case limit == 0:
		return DefaultLimit, nil
	case limit < 0 || limit > MaxLimit:
		return 0, apperr.New(apperr.Invalid, "invalid_limit", "limit must be between 1 and %d", MaxLimit)
	}
	return limit, nil
}

// span is a word's byte range in a string.
type span struct{ start, end int }

// isWordRune reports whether r belongs to a word: letters, digits and the combining
// marks that follow them. Everything else, every operator of tsquery or Lucene
// included, separates words.
func isWordRune(r rune) bool {
	return unicode.IsLetter(r) || unicode.IsDigit(r) || unicode.IsMark(r)
}

// words returns the byte ranges of the words of s.
func words(s string) []span {
	var out []span
	start := -1
	for i, r := range s {
		if isWordRune(r) {
			if start < 0 {
				start = i
			}
			continue
		}
		if start >= 0 {
			out = append(out, span{start, i})
			start = -1
		}
	}
	if start >= 0 {
		out = append(out, span{start, len(s)})
	}
	return out
}

// Private-use characters stand for <mark> and </mark> while a highlight is built, so
// that the text around them can be HTML-escaped without escaping the marks.
const (
	markOpen  = "\ue000"
	markClose = "\ue001"
)

var stripMarks = strings.NewReplacer(markOpen, "", markClose, "")

var marksToHTML = strings.NewReplacer(markOpen, "<mark>", markClose, "</mark>")

// renderMarked escapes s for HTML and turns the mark characters into <mark> tags.
func renderMarked(s string) string {
	return marksToHTML.Replace(html.EscapeString(s))
}

// matches reports whether the lowercased word w matches the query: equal to one of its
// exact words or starting with its prefix.
func (q query) matches(w string) bool {
	if q.empty() {
		return false
	}
	if strings.HasPrefix(w, q.prefix()) {
		return true
	}
	for _, t := range q.exact() {
		if w == t {
			return true
		}
	}
	return false
}

// Snippet sizes of description highlights, in words.
const (
	snippetWords  = 30 // words in a snippet
	snippetBefore = 6  // words kept before the first match
)

// highlight marks the words of text that match q and returns HTML. With whole, all of
// text is returned; otherwise a snippet of snippetWords words around the first match
// (or the start of text), with an ellipsis where text was cut.
func highlight(text string, q query, whole bool) string {
	text = stripMarks.Replace(text)
	ws := words(text)
	first := -1
	matched := make([]bool, len(ws))
	for i, w := range ws {
		if q.matches(strings.ToLower(text[w.start:w.end])) {
			matched[i] = true
			if first < 0 {
				first = i
			}
		}
	}
	from, to := 0, len(text) // byte range returned
	lo, hi := 0, len(ws)     // words in it
	if !whole && len(ws) > snippetWords {
		lo = max(first-snippetBefore, 0)
		hi = min(lo+snippetWords, len(ws))
		lo = max(hi-snippetWords, 0)
		if lo > 0 {
			from = ws[lo].start
		}
		if hi < len(ws) {
			to = ws[hi-1].end
		}
	}
	var b strings.Builder
	if from > 0 {
		b.WriteString("… ")
	}
	pos := from
	for i := lo; i < hi; i++ {
		if !matched[i] {
			continue
		}
		w := ws[i]
		b.WriteString(html.EscapeString(text[pos:w.start]))
		b.WriteString("<mark>")
		b.WriteString(html.EscapeString(text[w.start:w.end]))
		b.WriteString("</mark>")
		pos = w.end
	}
	b.WriteString(html.EscapeString(text[pos:to]))
	if to < len(text) {
		b.WriteString(" …")
	}
	return b.String()
}
