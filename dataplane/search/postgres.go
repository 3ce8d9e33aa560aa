package search

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tenantplane/tenantplane/dataplane/pool"
	"github.com/tenantplane/tenantplane/pgerr"
	"github.com/tenantplane/tenantplane/tenant"
)

// PostgresConfig configures the Postgres backend.
type PostgresConfig struct {
	// Logger receives the trigram fallback's failures (default: discard).
	Logger *slog.Logger
}

// Postgres searches blogs in the tenant's own schema: the generated search_vector
// (title weighted A, description B) with its GIN index, and when that finds nothing,
// pg_trgm word similarity on titles to correct typos (see Search). Results are
// consistent with every committed write, since they come from the same database.
//
// Snippets are highlighted in Go rather than with ts_headline: ts_headline lowercases
// words with the database's collation, which under the C collation leaves non-ASCII
// capitals alone, so "Привет" would match the query "привет" (the search vector is
// lowercased with ICU since migration 2) yet come back unmarked. The Go highlighter
// marks exactly the words the sanitized query matches, in any script, and escapes the
// text around them.
type Postgres struct {
	log *slog.Logger
}

// NewPostgres returns the Postgres backend.
func NewPostgres(cfg PostgresConfig) *Postgres {
	return &Postgres{log: cmp.Or(cfg.Logger, slog.New(slog.DiscardHandler))}
}

// rankWeights are ts_rank_cd's weights for D, C, B and A: the title (A) counts most.
const rankWeights = `'{0.05, 0.1, 0.3, 1.0}'`

// maxCandidates bounds how many matches are ranked: the most recent ones. A one- or
// two-letter prefix can match most of a tenant's blogs, and ranking them all would
// make the search box slow exactly when the user starts typing; the newest matches,
// ranked, are what instant search shows anyway. Narrower queries rank every match.
const maxCandidates = 200

// searchSQL ranks the candidate matches of $1 (the whole query), titles matching every
// word ($2, the query restricted to weight A) first, then by cover density, and
// returns the top $3 with their text for highlighting. The tsqueries are written into
// the WHERE clause so that the planner estimates the prefix's selectivity and walks
// the primary key backwards (stopping after maxCandidates matches) for a broad prefix,
// or the GIN index for a narrow one.
var searchSQL = `
WITH candidates AS (
	SELECT id, search_vector FROM blogs
	WHERE search_vector @@ to_tsquery('simple', $1)
	ORDER BY id DESC
	LIMIT ` + strconv.Itoa(maxCandidates) + `
), ranked AS (
	SELECT id, search_vector @@ to_tsquery('simple', $2) AS in_title,
		ts_rank_cd(` + rankWeights + `, search_vector, to_tsquery('simple', $1), 32) AS rank
	FROM candidates
	ORDER BY in_title DESC, rank DESC, id DESC
	LIMIT $3
)
SELECT b.id, b.title, b.description, r.in_title, r.rank
FROM ranked r JOIN blogs b ON b.id = r.id
ORDER BY r.in_title DESC, r.rank DESC, r.id DESC`

// probeSQL returns the typo fallback's probe: up to fuzzyProbe titles that have, for
// each of n words ($1..$n), a similar word (pg_trgm's word similarity, installed in
// schema public by the provisioner: the tenant's search path holds only its schema).
// With no ORDER BY the scan stops at the first titles found, so a misspelling of a
// common word costs as little as one of a rare word.
//
// Each word is passed through a scalar subquery, which hides its value from the
// planner: given the value, pg_trgm's selectivity estimate runs word_similarity
// over the column statistics' sample (0.5 to 2 ms of planning on 10,000 blogs, more
// than the probe itself), and the plan is the trigram index's bitmap scan either way.
func probeSQL(n int) string {
	var cond []string
	for i := 1; i <= n; i++ {
		cond = append(cond, fmt.Sprintf("(SELECT $%d::text) OPERATOR(public.<%%) title", i))
	}
	return `SELECT title FROM blogs WHERE ` + strings.Join(cond, " AND ") + ` LIMIT ` + strconv.Itoa(fuzzyProbe)
}

// fuzzyProbe is how many similar titles the typo fallback reads to find the words the
// user meant. The trigram index's candidates must each be checked against the
// title's words (word_similarity, a few microseconds a title) and most fail: for a
// misspelt common word ("kuberentes" on 10,000 blogs) 1,773 candidates came back and
// 25 were checked per similar title, so reading 20 of them visited 265 heap pages and
// was the slowest step of a search. 8 titles name the word the user meant as well
// (they all contain it) at 28 pages.
const fuzzyProbe = 8

// minFuzzyLen is the shortest query (in characters) worth a trigram search.
const minFuzzyLen = 4

// Search returns the blogs of the tenant behind db matching q, best first, at most
// limit of them (0: DefaultLimit). t only labels logs: db is what confines the search
// to the tenant. It returns an Invalid error for a bad query or limit (see parseSearch);
// a query with nothing searchable left returns no hits.
//
// A query of at least minFuzzyLen characters that matches nothing is taken for a typo:
// each word is replaced by the most similar word of the titles similar to the query
// (see correct), and the corrected query is answered as if the user had typed it, with
// its words highlighted.
func (p *Postgres) Search(ctx context.Context, t *tenant.Tenant, db pool.DB, q string, limit int) ([]Hit, error) {
	pq, limit, err := parseSearch(q, limit)
	if err != nil {
		return nil, err
	}
	if pq.empty() {
		return []Hit{}, nil
	}
	hits, err := p.match(ctx, db, pq, limit)
	if err != nil || len(hits) > 0 || utf8.RuneCountInString(pq.text()) < minFuzzyLen {
		return hits, err
	}
	corrected, ok, err := p.correct(ctx, t, db, pq)
	if err != nil || !ok {
		return hits, err
	}
	return p.match(ctx, db, corrected, limit)
}

// match runs the full-text search of pq and highlights its words in the hits.
func (p *Postgres) match(ctx context.Context, db pool.DB, pq query, limit int) ([]Hit, error) {
	hits := []Hit{}
	all, titles := tsqueries(pq)
	// An unnamed statement is planned with its arguments every time; a cached generic
	// plan would not know how broad the prefix is.
	rows, err := db.Query(ctx, searchSQL, pgx.QueryExecModeExec, all, titles, limit)
	if err != nil {
		return nil, fmt.Errorf("searching blogs: %w", pgerr.Translate(err, pgerr.Codes{}))
	}
	defer rows.Close()
	for rows.Next() {
		var (
			id                 int64
			title, description string
			inTitle            bool
			rank               float64
		)
		if err := rows.Scan(&id, &title, &description, &inTitle, &rank); err != nil {
			return nil, fmt.Errorf("searching blogs: %w", pgerr.Translate(err, pgerr.Codes{}))
		}
		if inTitle {
			rank++
		}
		hits = append(hits, Hit{
			ID:                   id,
			Score:                rank,
			TitleHighlight:       highlight(title, pq, true),
			DescriptionHighlight: highlight(description, pq, false),
		})
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("searching blogs: %w", pgerr.Translate(err, pgerr.Codes{}))
	}
	return hits, nil
}

// correct is the typo fallback: it reads a few titles with a word similar to each word
// of pq and returns pq with its words corrected from them (see correctTerms), and
// whether anything changed. It is best effort: a tenant schema without the trigram
// index (not yet migrated) gets no correction rather than an error.
func (p *Postgres) correct(ctx context.Context, t *tenant.Tenant, db pool.DB, pq query) (query, bool, error) {
	args := make([]any, 0, len(pq.terms)+1)
	args = append(args, pgx.QueryExecModeExec)
	for _, w := range pq.terms {
		args = append(args, w)
	}
	rows, err := db.Query(ctx, probeSQL(len(pq.terms)), args...)
	if err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && (pgErr.Code == "42883" || pgErr.Code == "42704" || pgErr.Code == "3F000") {
			// undefined_function, undefined_object, invalid_schema_name: no pg_trgm here.
			p.log.Warn("search: trigram fallback unavailable", "tenant", tenantSlug(t), "error", err)
			return pq, false, nil
		}
		return pq, false, fmt.Errorf("searching blogs by similarity: %w", pgerr.Translate(err, pgerr.Codes{}))
	}
	titles, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return pq, false, fmt.Errorf("searching blogs by similarity: %w", pgerr.Translate(err, pgerr.Codes{}))
	}
	corrected := correctTerms(pq, titles)
	return corrected, !slices.Equal(corrected.terms, pq.terms), nil
}

// minCorrection is the share of a misspelt word's trigrams a replacement must have.
const minCorrection = 0.4

// correctTerms replaces each word of pq that no title word matches (equal to it, or
// starting with it for the last word) by the title word sharing most of its trigrams
// (ties: the closer in length, then the more frequent in titles, then the first in
// alphabetical order), when it shares at least minCorrection of them.
func correctTerms(pq query, titles []string) query {
	count := map[string]int{}
	for _, title := range titles {
		for _, w := range words(title) {
			count[strings.ToLower(title[w.start:w.end])]++
		}
	}
	out := query{terms: make([]string, len(pq.terms))}
	for i, term := range pq.terms {
		last := i == len(pq.terms)-1
		out.terms[i] = term
		if _, ok := count[term]; ok {
			continue
		}
		tt := trigrams(term)
		best, bestShare, bestJaccard := "", 0.0, 0.0
		found := false
		for w, n := range count {
			if last && strings.HasPrefix(w, term) {
				found = true
				break
			}
			wt := trigrams(w)
			shared := 0
			for g := range tt {
				if _, ok := wt[g]; ok {
					shared++
				}
			}
			share := float64(shared) / float64(len(tt))
			jaccard := float64(shared) / float64(len(tt)+len(wt)-shared)
			better := share > bestShare ||
				share == bestShare && (jaccard > bestJaccard ||
					jaccard == bestJaccard && (n > count[best] || n == count[best] && w < best))
			if better {
				best, bestShare, bestJaccard = w, share, jaccard
			}
		}
		if !found && best != "" && bestShare >= minCorrection {
			out.terms[i] = best
		}
	}
	return out
}

// trigrams returns the set of trigrams of a lowercased word, padded as pg_trgm pads it
// (two spaces before, one after).
func trigrams(w string) map[string]struct{} {
	r := []rune("  " + w + " ")
	out := make(map[string]struct{}, len(r))
	for i := 0; i+3 <= len(r); i++ {
		out[string(r[i:i+3])] = struct{}{}
	}
	return out
}

// tsqueries returns the tsquery text of pq over every weight, and restricted to titles
// (weight A): exact words AND-ed, the last word as a prefix.
func tsqueries(pq query) (all, titles string) {
	var a, t []string
	for _, w := range pq.exact() {
		a = append(a, tsLiteral(w))
		t = append(t, tsLiteral(w)+":A")
	}
	a = append(a, tsLiteral(pq.prefix())+":*")
	t = append(t, tsLiteral(pq.prefix())+":*A")
	return strings.Join(a, " & "), strings.Join(t, " & ")
}

// tsLiteral quotes a word as a tsquery operand. Words hold only letters, digits and
// marks, so this is belt and braces.
func tsLiteral(w string) string {
	return "'" + strings.NewReplacer(`'`, `''`, `\`, `\\`).Replace(w) + "'"
}

func tenantSlug(t *tenant.Tenant) string {
	if t == nil {
		return ""
	}
	return t.Slug
}
