package search

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/opensearch-project/opensearch-go/v4"

	"github.com/tenantplane/tenantplane/apperr"
	"github.com/tenantplane/tenantplane/tenant"
)

// Strategy is how tenants' documents are laid out in OpenSearch.
type Strategy string

// The index strategies.
const (
	// PerTenant gives each tenant an index of its own (named <prefix>-<schema>-v1,
	// reached through the alias <prefix>-<schema>), as the Django app did. Simple and
	// fully isolated, but every index costs shards: a cluster holds a few thousand.
	PerTenant Strategy = "per-tenant"
	// Shared puts every tenant in one index (<prefix>-shared), routed by tenant id,
	// with a filtered alias <prefix>-<schema> per tenant: the way to 10,000 tenants
	// within shard limits.
	Shared Strategy = "shared"
)

// ParseStrategy validates s as a strategy name; empty means PerTenant.
func ParseStrategy(s string) (Strategy, error) {
	switch Strategy(s) {
	case "", PerTenant:
		return PerTenant, nil
	case Shared:
		return Shared, nil
	}
	return "", apperr.Invalidf("search index strategy must be %q or %q, not %q", PerTenant, Shared, s)
}

// OpenSearchConfig configures the OpenSearch backend.
type OpenSearchConfig struct {
	// Addresses are the cluster's node URLs, e.g. http://127.0.0.1:9200; at least one.
	Addresses []string
	// Username and Password authenticate with HTTP basic auth when set.
	Username string
	Password string
	// Strategy lays out the tenants' documents (default PerTenant).
	Strategy Strategy
	// IndexPrefix starts every index and alias name (default "blogs").
	IndexPrefix string
	// Shards is the number of primary shards of each new index (default 1). The shared
	// index cannot change it later without a split: size it with `make bench`.
	Shards int
	// Replicas is the number of replicas of each new index (default 0, right for a
	// single node; use 1 or more on a cluster).
	Replicas int
	// Refresh is the refresh parameter of bulk writes: "" (default: documents become
	// searchable within the index refresh interval), "wait_for" or "true".
	Refresh string
	// Timeout bounds each request to the cluster (default 10s).
	Timeout time.Duration
	// Fallback, when set, answers searches while OpenSearch is unreachable or the
	// tenant's index is missing, from the tenant's Postgres schema.
	Fallback *Postgres
	// Logger receives failures (default: discard).
	Logger *slog.Logger
}

// OpenSearch is the OpenSearch search backend. It searches through each tenant's alias
// (the name recorded in the registry), creates and drops tenants' indexes and aliases
// for the provisioner, writes documents in bulk for the Indexer and rebuilds a tenant's
// documents from Postgres with Reindex. Create it with NewOpenSearch and Close it.
type OpenSearch struct {
	client   *opensearch.Client
	strategy Strategy
	prefix   string
	shards   int
	replicas int
	refresh  string
	timeout  time.Duration
	fallback *Postgres
	log      *slog.Logger
}

// NewOpenSearch returns the backend for the cluster in cfg. It does not contact the
// cluster. It returns an error for an invalid configuration.
func NewOpenSearch(cfg OpenSearchConfig) (*OpenSearch, error) {
	if len(cfg.Addresses) == 0 {
		return nil, errors.New("opensearch: no address configured")
	}
	strategy, err := ParseStrategy(string(cfg.Strategy))
	if err != nil {
		return nil, err
	}
	switch cfg.Refresh {
	case "", "wait_for", "true":
	default:
		return nil, fmt.Errorf("opensearch: refresh must be empty, wait_for or true, not %q", cfg.Refresh)
	}
	prefix := cmp.Or(cfg.IndexPrefix, "blogs")
	if prefix != strings.ToLower(prefix) || strings.ContainsAny(prefix, `\/*?"<>| ,#:`) || strings.HasPrefix(prefix, "_") {
		return nil, fmt.Errorf("opensearch: index prefix %q is not a valid lowercase index name", prefix)
	}
	if cfg.Shards < 0 || cfg.Replicas < 0 {
		return nil, errors.New("opensearch: shards and replicas cannot be negative")
	}
	noDiscovery := false
	timeout := cmp.Or(cfg.Timeout, 10*time.Second)
	client, err := opensearch.NewClient(opensearch.Config{
		Addresses:            cfg.Addresses,
		Username:             cfg.Username,
		Password:             cfg.Password,
		DiscoverNodesOnStart: &noDiscovery,
		RequestTimeout:       timeout,
		MaxRetries:           2,
	})
	if err != nil {
		return nil, fmt.Errorf("opensearch: creating client: %w", err)
	}
	return &OpenSearch{
		client:   client,
		strategy: strategy,
		prefix:   prefix,
		shards:   cmp.Or(cfg.Shards, 1),
		replicas: cfg.Replicas,
		refresh:  cfg.Refresh,
		timeout:  timeout,
		fallback: cfg.Fallback,
		log:      cmp.Or(cfg.Logger, slog.New(slog.DiscardHandler)),
	}, nil
}

// Close releases the client's connections.
func (o *OpenSearch) Close() { _ = o.client.Close() }

// Strategy returns the index strategy of new tenants.
func (o *OpenSearch) Strategy() Strategy { return o.strategy }

// AliasName returns the name of t's alias: what EnsureIndex records in the registry
// and every query and write goes through.
func (o *OpenSearch) AliasName(t *tenant.Tenant) string { return o.prefix + "-" + t.SchemaName }

// SharedIndexName returns the name of the shared index.
func (o *OpenSearch) SharedIndexName() string { return o.prefix + "-shared" }

// tenantIndexName returns the name of t's own index in the per-tenant strategy.
func (o *OpenSearch) tenantIndexName(t *tenant.Tenant) string { return o.AliasName(t) + "-v1" }

// docID is a blog's document id: unique across tenants, so that the shared index can
// never mix two tenants' blogs up.
func docID(t *tenant.Tenant, blogID int64) string {
	return t.ID + ":" + strconv.FormatInt(blogID, 10)
}

// Analysis and mapping of blog indexes: title and description are analyzed twice, by
// the standard analyzer for whole words and, in their "prefix" subfield, into edge
// n-grams at index time (searched with the standard analyzer, truncated to the longest
// gram) for instant search.
const maxGram = 20

func textMapping() map[string]any {
	return map[string]any{
		"type":     "text",
		"analyzer": "standard",
		"fields": map[string]any{
			"prefix": map[string]any{
				"type":            "text",
				"analyzer":        "blog_prefix",
				"search_analyzer": "blog_prefix_search",
			},
		},
	}
}

// indexBody returns the body of the create-index request.
func (o *OpenSearch) indexBody(aliases map[string]any) map[string]any {
	body := map[string]any{
		"settings": map[string]any{
			"index": map[string]any{
				"number_of_shards":   o.shards,
				"number_of_replicas": o.replicas,
			},
			"analysis": map[string]any{
				"filter": map[string]any{
					"blog_edge": map[string]any{
						"type":              "edge_ngram",
						"min_gram":          MinPrefixLen,
						"max_gram":          maxGram,
						"preserve_original": true,
					},
					"blog_truncate": map[string]any{"type": "truncate", "length": maxGram},
				},
				"analyzer": map[string]any{
					"blog_prefix": map[string]any{
						"type":      "custom",
						"tokenizer": "standard",
						"filter":    []string{"lowercase", "blog_edge"},
					},
					"blog_prefix_search": map[string]any{
						"type":      "custom",
						"tokenizer": "standard",
						"filter":    []string{"lowercase", "blog_truncate"},
					},
				},
			},
		},
		"mappings": map[string]any{
			"dynamic": "strict",
			"properties": map[string]any{
				"tenant_id":   map[string]any{"type": "keyword"},
				"id":          map[string]any{"type": "long"},
				"title":       textMapping(),
				"description": textMapping(),
				"updated_at":  map[string]any{"type": "date"},
			},
		},
	}
	if aliases != nil {
		body["aliases"] = aliases
	}
	return body
}

// sharedAlias returns the definition of t's filtered, routed alias on the shared index.
func sharedAlias(t *tenant.Tenant) map[string]any {
	return map[string]any{
		"filter":  map[string]any{"term": map[string]any{"tenant_id": t.ID}},
		"routing": t.ID,
	}
}

// EnsureIndex creates t's index and alias (per-tenant) or the shared index if missing
// and t's filtered alias on it (shared), and returns the alias name. It is idempotent.
// It returns an error when the cluster is unreachable or refuses.
func (o *OpenSearch) EnsureIndex(ctx context.Context, t *tenant.Tenant) (string, error) {
	alias := o.AliasName(t)
	if o.strategy == PerTenant {
		index := o.tenantIndexName(t)
		if err := o.createIndex(ctx, index, map[string]any{alias: map[string]any{}}); err != nil {
			return "", err
		}
		// The index is created with its alias; put it again for an index made by hand.
		if _, err := o.do(ctx, http.MethodPut, "/"+index+"/_alias/"+alias, nil, nil, nil); err != nil {
			return "", fmt.Errorf("creating search alias %s: %w", alias, err)
		}
		return alias, nil
	}
	shared := o.SharedIndexName()
	if err := o.createIndex(ctx, shared, nil); err != nil {
		return "", err
	}
	body := map[string]any{"actions": []any{
		map[string]any{"add": mergeMaps(map[string]any{"index": shared, "alias": alias}, sharedAlias(t))},
	}}
	if _, err := o.do(ctx, http.MethodPost, "/_aliases", nil, body, nil); err != nil {
		return "", fmt.Errorf("creating search alias %s: %w", alias, err)
	}
	return alias, nil
}

// createIndex creates an index unless it exists.
func (o *OpenSearch) createIndex(ctx context.Context, index string, aliases map[string]any) error {
	_, err := o.do(ctx, http.MethodPut, "/"+index, nil, o.indexBody(aliases), nil)
	var oe *osError
	if errors.As(err, &oe) && oe.Type == "resource_already_exists_exception" {
		return nil
	}
	if err != nil {
		return fmt.Errorf("creating search index %s: %w", index, err)
	}
	return nil
}

// DropIndex removes t's documents and alias: its own index in the per-tenant
// strategy, its documents and alias in the shared index. Missing ones are not an
// error. It returns an error when the cluster is unreachable or refuses.
func (o *OpenSearch) DropIndex(ctx context.Context, t *tenant.Tenant) error {
	alias := cmp.Or(t.SearchIndex, o.AliasName(t))
	var targets map[string]json.RawMessage
	_, err := o.do(ctx, http.MethodGet, "/_alias/"+alias, nil, nil, &targets)
	var oe *osError
	if err != nil && !(errors.As(err, &oe) && oe.Status == http.StatusNotFound) {
		return fmt.Errorf("resolving search alias %s: %w", alias, err)
	}
	shared := o.strategy == Shared
	for index := range targets {
		switch {
		case index == o.SharedIndexName():
			shared = true
		case strings.HasPrefix(index, alias+"-"):
			if err := o.deleteIndex(ctx, index); err != nil {
				return err
			}
		}
	}
	if shared {
		// Delete by query needs the reindex module, which not every node has: list the
		// tenant's documents (on its shard only) and delete them in bulk.
		if err := o.deleteTenantDocs(ctx, t); err != nil && !isIndexMissing(err) {
			return fmt.Errorf("deleting tenant documents from %s: %w", o.SharedIndexName(), err)
		}
		_, err = o.do(ctx, http.MethodDelete, "/"+o.SharedIndexName()+"/_alias/"+alias, nil, nil, nil)
		if err != nil && !(errors.As(err, &oe) && oe.Status == http.StatusNotFound) {
			return fmt.Errorf("deleting search alias %s: %w", alias, err)
		}
	}
	// An index whose alias was removed by hand.
	return o.deleteIndex(ctx, o.tenantIndexName(t))
}

// deleteTenantDocs deletes t's documents from the shared index, addressed directly
// with t's routing (its alias may be gone already).
func (o *OpenSearch) deleteTenantDocs(ctx context.Context, t *tenant.Tenant) error {
	shared := o.SharedIndexName()
	for round := 0; ; round++ {
		versions, err := o.indexedVersions(ctx, t, shared, t.ID)
		if err != nil {
			return err
		}
		if len(versions) == 0 {
			return nil
		}
		if round == 3 {
			return fmt.Errorf("%d documents still there after %d rounds of deletes", len(versions), round)
		}
		items := make([]bulkItem, 0, len(versions))
		for id, v := range versions {
			items = append(items, bulkItem{blogID: id, version: v, versionType: "external_gte"})
		}
		for len(items) > 0 {
			n := min(len(items), reindexBatch)
			if err := o.bulkAll(ctx, t, bulkTarget{name: shared, routing: t.ID}, items[:n]); err != nil {
				return err
			}
			items = items[n:]
		}
		if _, err := o.do(ctx, http.MethodPost, "/"+shared+"/_refresh", nil, nil, nil); err != nil {
			return err
		}
	}
}

func (o *OpenSearch) deleteIndex(ctx context.Context, index string) error {
	_, err := o.do(ctx, http.MethodDelete, "/"+index, nil, nil, nil)
	var oe *osError
	if err != nil && !(errors.As(err, &oe) && oe.Status == http.StatusNotFound) {
		return fmt.Errorf("deleting search index %s: %w", index, err)
	}
	return nil
}

// Search returns t's blogs matching q, best first (titles matching every word first),
// at most limit (0: DefaultLimit), searching through t's alias with a tenant filter on
// top. db is only used by the Postgres fallback. It returns an Invalid error for a bad
// query or limit, an Unavailable error when the cluster is unreachable or t has no
// index (unless a fallback is configured).
func (o *OpenSearch) Search(ctx context.Context, t *tenant.Tenant, db DB, q string, limit int) ([]Hit, error) {
	pq, err := parseQuery(q)
	if err != nil {
		return nil, err
	}
	limit, err = validLimit(limit)
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
func (o *OpenSearch) unavailable(ctx context.Context, t *tenant.Tenant, db DB, q string, limit int, err error) ([]Hit, error) {
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

// blogDoc is a blog as indexed.
type blogDoc struct {
	TenantID    string    `json:"tenant_id"`
	ID          int64     `json:"id"`
	Title       string    `json:"title"`
	Description string    `json:"description"`
	UpdatedAt   time.Time `json:"updated_at"`
}

// bulkItem is one write of a bulk request: the blog's document at version, or its
// deletion when doc is nil.
type bulkItem struct {
	blogID      int64
	version     int64
	versionType string // "external" or "external_gte"
	doc         *blogDoc
}

// bulkTarget is where a bulk request writes: a tenant's alias (routing empty), or an
// index addressed directly with the given routing.
type bulkTarget struct {
	name    string
	routing string
}

// bulk writes items to target. Through an alias, the alias must exist: a missing one
// fails each item instead of creating a stray index. It returns one error per item,
// nil when the item is applied or was already superseded (an external version
// conflict, or deleting a missing document), and an error for the whole request when
// it failed.
func (o *OpenSearch) bulk(ctx context.Context, t *tenant.Tenant, target bulkTarget, items []bulkItem) ([]error, error) {
	alias := target.name
	if len(items) == 0 {
		return nil, nil
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	for _, it := range items {
		meta := map[string]any{"_id": docID(t, it.blogID), "version": it.version, "version_type": it.versionType}
		if target.routing != "" {
			meta["routing"] = target.routing
		}
		action := "delete"
		if it.doc != nil {
			action = "index"
		}
		if err := enc.Encode(map[string]any{action: meta}); err != nil {
			return nil, fmt.Errorf("encoding bulk request: %w", err)
		}
		if it.doc != nil {
			if err := enc.Encode(it.doc); err != nil {
				return nil, fmt.Errorf("encoding bulk request: %w", err)
			}
		}
	}
	params := url.Values{}
	if target.routing == "" {
		params.Set("require_alias", "true")
	}
	if o.refresh != "" {
		params.Set("refresh", o.refresh)
	}
	var res struct {
		Items []map[string]struct {
			Status int    `json:"status"`
			Result string `json:"result"`
			Error  *struct {
				Type   string `json:"type"`
				Reason string `json:"reason"`
			} `json:"error"`
		} `json:"items"`
	}
	if _, err := o.doRaw(ctx, http.MethodPost, "/"+alias+"/_bulk", params, buf.Bytes(), "application/x-ndjson", &res); err != nil {
		return nil, fmt.Errorf("writing to search index %s: %w", alias, err)
	}
	if len(res.Items) != len(items) {
		return nil, fmt.Errorf("writing to search index %s: %d results for %d items", alias, len(res.Items), len(items))
	}
	errs := make([]error, len(items))
	for i, m := range res.Items {
		for action, r := range m {
			switch {
			case r.Status >= 200 && r.Status < 300:
			case action == "delete" && r.Status == http.StatusNotFound && r.Result == "not_found":
			case r.Status == http.StatusConflict && r.Error != nil && r.Error.Type == "version_conflict_engine_exception":
			default:
				e := &osError{Status: r.Status}
				if r.Error != nil {
					e.Type, e.Reason = r.Error.Type, r.Error.Reason
				}
				errs[i] = fmt.Errorf("blog %d: %w", items[i].blogID, e)
			}
		}
	}
	return errs, nil
}

// Reindex rebuilds t's documents from the blogs in db (the tenant's own database
// handle), reporting progress (done, total) after each batch when progress is set.
// It creates the index or alias if missing, writes every blog at the version
// max(updated_at in microseconds, version already indexed) with version_type
// external_gte, so that a document rewritten by a concurrent Indexer with a newer
// outbox event is left alone, and deletes documents of blogs that no longer exist.
// It may run while the Indexer drains the tenant's outbox. It returns an error when
// Postgres or the cluster fails; running it again finishes the job.
func (o *OpenSearch) Reindex(ctx context.Context, t *tenant.Tenant, db DB, progress func(done, total int)) error {
	alias, err := o.EnsureIndex(ctx, t)
	if err != nil {
		return err
	}
	if progress == nil {
		progress = func(int, int) {}
	}
	// What the index holds is read before the blogs, so that any document indexed
	// from an outbox event by then is older than the snapshot read below.
	indexed, err := o.indexedVersions(ctx, t, alias, "")
	if err != nil {
		return err
	}
	var total int
	if err := db.QueryRow(ctx, `SELECT count(*) FROM blogs`).Scan(&total); err != nil {
		return fmt.Errorf("counting blogs: %w", err)
	}
	progress(0, total)
	rows, err := db.Query(ctx, `SELECT id, title, description, updated_at FROM blogs ORDER BY id`)
	if err != nil {
		return fmt.Errorf("reading blogs: %w", err)
	}
	defer rows.Close()
	done := 0
	batch := make([]bulkItem, 0, reindexBatch)
	flush := func() error {
		if err := o.bulkAll(ctx, t, bulkTarget{name: alias}, batch); err != nil {
			return err
		}
		done += len(batch)
		batch = batch[:0]
		progress(done, max(total, done))
		return nil
	}
	for rows.Next() {
		d := &blogDoc{TenantID: t.ID}
		if err := rows.Scan(&d.ID, &d.Title, &d.Description, &d.UpdatedAt); err != nil {
			return fmt.Errorf("reading blogs: %w", err)
		}
		version := max(d.UpdatedAt.UnixMicro(), indexed[d.ID], 1)
		delete(indexed, d.ID)
		batch = append(batch, bulkItem{blogID: d.ID, version: version, versionType: "external_gte", doc: d})
		if len(batch) == reindexBatch {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("reading blogs: %w", err)
	}
	rows.Close()
	if len(batch) > 0 {
		if err := flush(); err != nil {
			return err
		}
	}
	// Blogs IDs are never reused: an indexed blog missing from the snapshot is deleted.
	var gone []bulkItem
	for id, v := range indexed {
		gone = append(gone, bulkItem{blogID: id, version: v, versionType: "external_gte"})
	}
	for len(gone) > 0 {
		n := min(len(gone), reindexBatch)
		if err := o.bulkAll(ctx, t, bulkTarget{name: alias}, gone[:n]); err != nil {
			return err
		}
		gone = gone[n:]
	}
	return nil
}

// reindexBatch is the number of documents per bulk request of Reindex.
const reindexBatch = 500

// bulkAll writes items and fails if any item failed.
func (o *OpenSearch) bulkAll(ctx context.Context, t *tenant.Tenant, target bulkTarget, items []bulkItem) error {
	errs, err := o.bulk(ctx, t, target, items)
	if err != nil {
		return err
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("writing to search index %s: %w", target.name, err)
	}
	return nil
}

// indexedVersions returns the version of each of t's documents in target (t's alias,
// or an index searched with the given routing).
func (o *OpenSearch) indexedVersions(ctx context.Context, t *tenant.Tenant, target, routing string) (map[int64]int64, error) {
	var params url.Values
	if routing != "" {
		params = url.Values{"routing": {routing}}
	}
	out := map[int64]int64{}
	var after []any
	for {
		body := map[string]any{
			"size":             1000,
			"_source":          false,
			"version":          true,
			"track_total_hits": false,
			"query":            map[string]any{"bool": map[string]any{"filter": []any{map[string]any{"term": map[string]any{"tenant_id": t.ID}}}}},
			"sort":             []any{map[string]any{"id": "asc"}},
		}
		if after != nil {
			body["search_after"] = after
		}
		var res struct {
			Hits struct {
				Hits []struct {
					Version int64   `json:"_version"`
					Sort    []int64 `json:"sort"`
				} `json:"hits"`
			} `json:"hits"`
		}
		if _, err := o.do(ctx, http.MethodPost, "/"+target+"/_search", params, body, &res); err != nil {
			return nil, fmt.Errorf("listing indexed blogs: %w", err)
		}
		for _, h := range res.Hits.Hits {
			if len(h.Sort) == 1 {
				out[h.Sort[0]] = h.Version
			}
		}
		if len(res.Hits.Hits) < 1000 {
			return out, nil
		}
		after = []any{res.Hits.Hits[len(res.Hits.Hits)-1].Sort[0]}
	}
}

// osError is an error answer of the cluster.
type osError struct {
	Status int
	Type   string
	Reason string
}

func (e *osError) Error() string {
	if e.Type == "" {
		return fmt.Sprintf("opensearch answered %d", e.Status)
	}
	return fmt.Sprintf("opensearch answered %d: %s: %s", e.Status, e.Type, e.Reason)
}

// errUnreachable wraps failures to get any answer from the cluster.
var errUnreachable = errors.New("opensearch unreachable")

// unreachable reports whether err means the cluster could not answer: no connection,
// a timeout, or a 5xx or 429 answer.
func unreachable(err error) bool {
	var oe *osError
	if errors.As(err, &oe) {
		return oe.Status >= 500 || oe.Status == http.StatusTooManyRequests
	}
	return errors.Is(err, errUnreachable)
}

func isIndexMissing(err error) bool {
	var oe *osError
	return errors.As(err, &oe) && oe.Status == http.StatusNotFound && oe.Type == "index_not_found_exception"
}

// do sends a JSON request and decodes a 2xx answer into out (when not nil).
func (o *OpenSearch) do(ctx context.Context, method, path string, params url.Values, body, out any) (int, error) {
	var raw []byte
	if body != nil {
		var err error
		if raw, err = json.Marshal(body); err != nil {
			return 0, fmt.Errorf("encoding opensearch request: %w", err)
		}
	}
	return o.doRaw(ctx, method, path, params, raw, "application/json", out)
}

// doRaw sends a request and decodes a 2xx answer into out (when not nil). Any other
// answer is an *osError; no answer at all wraps errUnreachable.
func (o *OpenSearch) doRaw(ctx context.Context, method, path string, params url.Values, body []byte, contentType string, out any) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	req := request{path: path, params: params, body: body, contentType: contentType}
	resp, err := opensearch.Do(ctx, o.client, method, req, (*opensearch.NoBody)(nil))
	if resp == nil {
		if err == nil {
			err = errors.New("no response")
		}
		return 0, fmt.Errorf("%w: %s %s: %w", errUnreachable, method, path, err)
	}
	var data []byte
	if resp.Body != nil {
		data, _ = io.ReadAll(resp.Body)
		_ = resp.Body.Close()
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		e := &osError{Status: resp.StatusCode}
		var parsed struct {
			Error json.RawMessage `json:"error"`
		}
		if json.Unmarshal(data, &parsed) == nil && len(parsed.Error) > 0 {
			var detail struct {
				Type   string `json:"type"`
				Reason string `json:"reason"`
			}
			if json.Unmarshal(parsed.Error, &detail) == nil {
				e.Type, e.Reason = detail.Type, detail.Reason
			} else {
				e.Reason = string(parsed.Error)
			}
		}
		return resp.StatusCode, e
	}
	if err != nil {
		return resp.StatusCode, fmt.Errorf("%w: %s %s: %w", errUnreachable, method, path, err)
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return resp.StatusCode, fmt.Errorf("decoding opensearch answer to %s %s: %w", method, path, err)
		}
	}
	return resp.StatusCode, nil
}

// request is an opensearch.Request with a ready body.
type request struct {
	path        string
	params      url.Values
	body        []byte
	contentType string
}

// GetRequest builds the HTTP request; the transport fills in the node's address.
func (r request) GetRequest(method string) (*http.Request, error) {
	u := &url.URL{Path: r.path, RawQuery: r.params.Encode()}
	var body io.Reader
	if r.body != nil {
		body = bytes.NewReader(r.body)
	}
	req, err := http.NewRequest(method, u.String(), body)
	if err != nil {
		return nil, err
	}
	if r.body != nil {
		req.Header.Set("Content-Type", r.contentType)
	}
	req.Header.Set("Accept", "application/json")
	return req, nil
}

func mergeMaps(ms ...map[string]any) map[string]any {
	out := map[string]any{}
	for _, m := range ms {
		for k, v := range m {
			out[k] = v
		}
	}
	return out
}
