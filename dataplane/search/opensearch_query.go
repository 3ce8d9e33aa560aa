package search

import (
	"context"
	"fmt"
	"net/http"
	"strings"

	"github.com/tenantplane/tenantplane/apperr"
	"github.com/tenantplane/tenantplane/dataplane/pool"
	"github.com/tenantplane/tenantplane/tenant"
)

// Search returns t's blogs matching q, best first (titles matching every word first),
// at most limit (0: DefaultLimit), searching through t's alias with a tenant filter on
// top. db is only used by the Postgres fallback. It returns an Invalid error for a bad
// query or limit, an Unavailable error when the cluster is unreachable or t has no
// index (unless a fallback is configured).
func (o *OpenSearch) Search(ctx context.Context, t *tenant.Tenant, db pool.DB, q string, limit int) ([]Hit, error) {
	pq, limit, err := parseSearch(q, limit)
	if err != nil {
		return nil, err
	}
	if pq.empty() {
		return []Hit{}, nil
	}
	if t.SearchIndex == "" {
		return o.unavailable(ctx, t, db, q, limit, apperr.New(apperr.Unavailable, "search_index_missing",
			"search is not set up for this tenant yet"))
	}
	var res searchResponse
	_, err = o.do(ctx, http.MethodPost, "/"+t.SearchIndex+"/_search", nil, searchBody(t, pq, limit), &res)
	if err != nil {
		if unreachable(err) || isIndexMissing(err) {
			return o.unavailable(ctx, t, db, q, limit, &apperr.Error{Kind: apperr.Unavailable, Code: "search_unavailable",
				Message: "search is temporarily unavailable", Err: err})
		}
		return nil, fmt.Errorf("searching blogs in %s: %w", t.SearchIndex, err)
	}
	hits := make([]Hit, 0, len(res.Hits.Hits))
	for _, h := range res.Hits.Hits {
		if h.Source.TenantID != t.ID {
			// The alias filters by tenant and so does the query; never trust one alone.
			o.log.Error("search: document of another tenant returned", "tenant", t.Slug, "index", t.SearchIndex, "doc", h.ID)
			continue
		}
		hit := Hit{ID: h.Source.ID, Score: h.Score}
		if hl := h.Highlight["title.prefix"]; len(hl) > 0 {
			hit.TitleHighlight = renderMarked(strings.Join(hl, " "))
		} else {
			hit.TitleHighlight = highlight(h.Source.Title, pq, true)
		}
		if hl := h.Highlight["description.prefix"]; len(hl) > 0 {
			hit.DescriptionHighlight = renderMarked(strings.Join(hl, " … "))
		} else {
			hit.DescriptionHighlight = highlight(h.Source.Description, pq, false)
		}
		hits = append(hits, hit)
	}
	return hits, nil
}

// unavailable answers a search OpenSearch cannot: from the fallback if there is one,
// else with err.
func (o *OpenSearch) unavailable(ctx context.Context, t *tenant.Tenant, db pool.DB, q string, limit int, err error) ([]Hit, error) {
	if o.fallback == nil || db == nil {
		return nil, err
	}
	o.log.Warn("search: answering from postgres", "tenant", t.Slug, "error", err)
	return o.fallback.Search(ctx, t, db, q, limit)
}

type searchResponse struct {
	Hits struct {
		Hits []struct {
			ID     string  `json:"_id"`
			Score  float64 `json:"_score"`
			Source struct {
				TenantID    string `json:"tenant_id"`
				ID          int64  `json:"id"`
				Title       string `json:"title"`
				Description string `json:"description"`
			} `json:"_source"`
			Highlight map[string][]string `json:"highlight"`
		} `json:"hits"`
	} `json:"hits"`
}

// Highlight fragments of descriptions.
const (
	fragmentSize      = 160
	fragmentsPerField = 2
)

// searchBody builds the query: every word must match the title or the description
// (exact words on the standard fields, the last word on the edge n-gram fields),
// titles matching every word get a large constant boost, and the tenant filter applies
// whatever the alias does.
func searchBody(t *tenant.Tenant, pq query, limit int) map[string]any {
	var must, inTitle, marks []any
	for _, w := range pq.exact() {
		must = append(must, multiMatch(w, "title^2", "description"))
		inTitle = append(inTitle, match("title", w))
	}
	last := pq.prefix()
	must = append(must, multiMatch(last, "title.prefix^2", "description.prefix"))
	inTitle = append(inTitle, match("title.prefix", last))
	for _, w := range pq.terms {
		marks = append(marks, match("title.prefix", w), match("description.prefix", w))
	}
	return map[string]any{
		"size":             limit,
		"track_total_hits": false,
		"_source":          []string{"tenant_id", "id", "title", "description"},
		"query": map[string]any{"bool": map[string]any{
			"filter": []any{map[string]any{"term": map[string]any{"tenant_id": t.ID}}},
			"must":   must,
			"should": []any{map[string]any{"constant_score": map[string]any{
				"filter": map[string]any{"bool": map[string]any{"must": inTitle}},
				"boost":  100,
			}}},
		}},
		"sort": []any{map[string]any{"_score": "desc"}, map[string]any{"id": "desc"}},
		"highlight": map[string]any{
			"pre_tags":        []string{markOpen},
			"post_tags":       []string{markClose},
			"highlight_query": map[string]any{"bool": map[string]any{"should": marks}},
			"fields": map[string]any{
				"title.prefix":       map[string]any{"number_of_fragments": 0},
				"description.prefix": map[string]any{"fragment_size": fragmentSize, "number_of_fragments": fragmentsPerField},
			},
		},
	}
}

func multiMatch(w string, fields ...string) map[string]any {
	return map[string]any{"multi_match": map[string]any{"query": w, "fields": fields, "operator": "and"}}
}

func match(field, w string) map[string]any {
	return map[string]any{"match": map[string]any{field: map[string]any{"query": w, "operator": "and"}}}
}
