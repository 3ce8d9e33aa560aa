package search

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tenantplane/tenantplane/dataplane/pool"
	"github.com/tenantplane/tenantplane/tenant"
)

// PostgresConfig configures the Postgres backend.
type PostgresConfig struct {
	// Logger receives the trigram fallback's failures (default: discard).
	Logger *slog.Logger
}

// Postgres searches blogs in the tenant's own schema: the generated search_vector
// (title weighted A, description B) with its GIN index, and when that finds nothing,
// pg_trgm word similarity on titles to forgive typos. Results are consistent with
// every committed write, since they come from the same database.
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

// fuzzySQL returns the query finding titles that have, for each of n words ($1..$n),
// a similar word (pg_trgm's word similarity, installed in schema public by the
// provisioner: the tenant's search path holds only its schema), best first. $n+1 is
// the limit.
func fuzzySQL(n int) string {
	var cond, sim []string
	for i := 1; i <= n; i++ {
		cond = append(cond, fmt.Sprintf("$%d OPERATOR(public.<%%) title", i))
		sim = append(sim, fmt.Sprintf("public.word_similarity($%d, title)", i))
	}
	return `SELECT id, title, description, (` + strings.Join(sim, " + ") + `) / ` + strconv.Itoa(n) + ` AS sim
FROM blogs
WHERE ` + strings.Join(cond, " AND ") + `
ORDER BY sim DESC, id DESC
LIMIT $` + strconv.Itoa(n+1)
}

// minFuzzyLen is the shortest query (in characters) worth a trigram search.
const minFuzzyLen = 4

// Search returns the blogs of the tenant behind db matching q, best first, at most
// limit of them (0: DefaultLimit). t only labels logs: db is what confines the search
// to the tenant. It returns an Invalid error for a bad query or limit (see parseSearch);
// a query with nothing searchable left returns no hits.
func (p *Postgres) Search(ctx context.Context, t *tenant.Tenant, db pool.DB, q string, limit int) ([]Hit, error) {
	pq, limit, err := parseSearch(q, limit)
	if err != nil {
		return nil, err
	}
	hits := []Hit{}
	if pq.empty() {
		return hits, nil
	}
	all, titles := tsqueries(pq)
	// An unnamed statement is planned with its arguments every time; a cached generic
	// plan would not know how broad the prefix is.
	rows, err := db.Query(ctx, searchSQL, pgx.QueryExecModeExec, all, titles, limit)
	if err != nil {
		return nil, fmt.Errorf("searching blogs: %w", err)
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
			return nil, fmt.Errorf("searching blogs: %w", err)
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
		return nil, fmt.Errorf("searching blogs: %w", err)
	}
	if len(hits) > 0 || utf8.RuneCountInString(pq.text()) < minFuzzyLen {
		return hits, nil
	}
	return p.fuzzy(ctx, t, db, pq, limit)
}

// fuzzy is the typo fallback: titles with a word similar to each word of the query.
// It is best effort: a tenant schema without the trigram index (not yet migrated) gets no
// hits rather than an error.
func (p *Postgres) fuzzy(ctx context.Context, t *tenant.Tenant, db pool.DB, pq query, limit int) ([]Hit, error) {
	hits := []Hit{}
	args := make([]any, 0, len(pq.terms)+1)
	for _, w := range pq.terms {
		args = append(args, w)
	}
	rows, err := db.Query(ctx, fuzzySQL(len(pq.terms)), append([]any{pgx.QueryExecModeExec}, append(args, limit)...)...)
	if err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && (pgErr.Code == "42883" || pgErr.Code == "42704" || pgErr.Code == "3F000") {
			// undefined_function, undefined_object, invalid_schema_name: no pg_trgm here.
			p.log.Warn("search: trigram fallback unavailable", "tenant", tenantSlug(t), "error", err)
			return hits, nil
		}
		return nil, fmt.Errorf("searching blogs by similarity: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			id                 int64
			title, description string
			sim                float64
		)
		if err := rows.Scan(&id, &title, &description, &sim); err != nil {
			return nil, fmt.Errorf("searching blogs by similarity: %w", err)
		}
		hits = append(hits, Hit{
			ID:                   id,
			Score:                sim,
			TitleHighlight:       highlight(title, pq, true),
			DescriptionHighlight: highlight(description, pq, false),
		})
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("searching blogs by similarity: %w", err)
	}
	return hits, nil
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
