package search

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/tenantplane/tenantplane/tenant"
)

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

func mergeMaps(ms ...map[string]any) map[string]any {
	out := map[string]any{}
	for _, m := range ms {
		for k, v := range m {
			out[k] = v
		}
	}
	return out
}
