package search

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/tenantplane/tenantplane/dataplane/pool"
	"github.com/tenantplane/tenantplane/tenant"
)

// docID is a blog's document id: unique across tenants, so that the shared index can
// never mix two tenants' blogs up.
func docID(t *tenant.Tenant, blogID int64) string {
	return t.ID + ":" + strconv.FormatInt(blogID, 10)
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
func (o *OpenSearch) Reindex(ctx context.Context, t *tenant.Tenant, db pool.DB, progress func(done, total int)) error {
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
