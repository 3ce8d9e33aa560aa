package search

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tenantplane/tenantplane/apperr"
	"github.com/tenantplane/tenantplane/internal/pgtest"
	"github.com/tenantplane/tenantplane/provisioner"
)

var strategies = []Strategy{PerTenant, Shared}

// TestIndexerCrashConverges kills the indexer at the two bad moments: after a blog
// write committed but before it reached the index, and after the bulk write but
// before the outbox rows were deleted (so every event is replayed). The index
// converges either way, and replays and stale events change nothing.
func TestIndexerCrashConverges(t *testing.T) {
	t.Parallel()
	for _, s := range strategies {
		t.Run(string(s), func(t *testing.T) {
			t.Parallel()
			e := setupOpenSearch(t, s)
			d := e.newTenant(t, "crash")
			keep := d.create(t, "Observability basics", "Metrics, logs and traces.")
			gone := d.create(t, "Legacy monolith", "To be removed.")
			d.synced(t)

			// Between commit and index write: the indexer is down while blogs change.
			e.indexer.Stop()
			d.update(t, keep, "Observability in depth", "Metrics, logs, traces and profiles.")
			d.remove(t, gone)
			fresh := d.create(t, "Zig comptime", "Generics without generics.")
			if got := ids(d.search(t, "zig")); len(got) != 0 {
				t.Fatalf(`with the indexer stopped, "zig" = %v; the test needs the index to lag`, got)
			}

			// Between index write and outbox delete: the bulk succeeds, then the batch dies.
			crashes := 0
			e.indexer.afterBulk = func() error {
				crashes++
				return errors.New("simulated crash after bulk")
			}
			if _, err := e.indexer.Drain(e.ctx, d.t); err == nil {
				t.Fatal("Drain with a crashing hook succeeded")
			}
			if crashes != 1 || d.outboxLen(t) != 3 {
				t.Fatalf("after the crash: %d crashes, %d events left; want 1 and all 3 kept", crashes, d.outboxLen(t))
			}
			e.indexer.afterBulk = nil

			// An old event replayed out of order: the blog's first version, long gone.
			d.write(t, func(tx pgx.Tx) error {
				_, err := tx.Exec(e.ctx, `INSERT INTO search_outbox (blog_id, op, version) VALUES ($1, 'upsert', 1), ($2, 'upsert', 1)`, keep, gone)
				return err
			})

			if err := e.indexer.Start(e.ctx); err != nil {
				t.Fatal(err)
			}
			d.synced(t)
			if got := ids(d.search(t, "zig")); !slices.Equal(got, []int64{fresh}) {
				t.Errorf(`after restart, "zig" = %v, want [%d]`, got, fresh)
			}
			if got := ids(d.search(t, "profil")); !slices.Equal(got, []int64{keep}) {
				t.Errorf(`after restart, "profil" = %v, want [%d] (the update)`, got, keep)
			}
			if got := d.search(t, "legacy"); len(got) != 0 {
				t.Errorf(`after restart, "legacy" = %v, want nothing (deleted; its stale event must not revive it)`, ids(got))
			}
			if got := ids(d.search(t, "observability")); !slices.Equal(got, []int64{keep}) {
				t.Errorf(`"observability" = %v, want [%d] once`, got, keep)
			}
		})
	}
}

// TestReindex rebuilds a tenant's documents from Postgres: blogs whose events were
// lost appear, blogs deleted behind the index's back disappear, and progress reaches
// the total.
func TestReindex(t *testing.T) {
	t.Parallel()
	for _, s := range strategies {
		t.Run(string(s), func(t *testing.T) {
			t.Parallel()
			e := setupOpenSearch(t, s)
			d := e.newTenant(t, "rebuild")
			other := e.newTenant(t, "bystander")
			stale := d.create(t, "Stale entry", "Deleted without an event.")
			theirs := other.create(t, "Stale but someone else's", "Must survive.")
			d.synced(t)
			other.synced(t)

			e.indexer.Stop()
			var want []int64
			for i := range 1203 {
				want = append(want, d.create(t, fmt.Sprintf("Rebuilt blog %d", i), "Recovered from Postgres."))
			}
			if _, err := d.db.Exec(e.ctx, `DELETE FROM search_outbox`); err != nil {
				t.Fatal(err)
			}
			if _, err := d.db.Exec(e.ctx, `DELETE FROM blogs WHERE id = $1`, stale); err != nil {
				t.Fatal(err)
			}
			var calls, lastDone, lastTotal int
			err := e.os.Reindex(e.ctx, d.t, d.db, func(done, total int) {
				calls++
				lastDone, lastTotal = done, total
			})
			if err != nil {
				t.Fatalf("Reindex: %v", err)
			}
			if calls < 3 || lastDone != len(want) || lastTotal != len(want) {
				t.Errorf("progress: %d calls ending at %d/%d, want several ending at %d/%d", calls, lastDone, lastTotal, len(want), len(want))
			}
			hits, err := e.os.Search(e.ctx, d.t, d.db, "rebuilt", MaxLimit)
			if err != nil || len(hits) != MaxLimit {
				t.Errorf(`"rebuilt" = %d hits, %v; want %d`, len(hits), err, MaxLimit)
			}
			if got := ids(d.search(t, "rebuilt blog 1202")); !slices.Equal(got, []int64{want[1202]}) {
				t.Errorf(`"rebuilt blog 1202" = %v, want [%d]`, got, want[1202])
			}
			if got := d.search(t, "stale"); len(got) != 0 {
				t.Errorf(`"stale" = %v, want nothing: the blog is gone`, ids(got))
			}
			if got := ids(other.search(t, "stale")); !slices.Equal(got, []int64{theirs}) {
				t.Errorf(`bystander's "stale" = %v, want its own [%d] untouched`, got, theirs)
			}
			// Running it again changes nothing.
			if err := e.os.Reindex(e.ctx, d.t, d.db, nil); err != nil {
				t.Fatalf("second Reindex: %v", err)
			}
			if got := ids(d.search(t, "rebuilt blog 1007")); !slices.Equal(got, []int64{want[1007]}) {
				t.Errorf(`after a second reindex, "rebuilt blog 1007" = %v, want [%d]`, got, want[1007])
			}
		})
	}
}

// TestPurgeDropsIndex checks that purging a tenant removes its documents (its index,
// or its part of the shared index and its alias) and nothing of another tenant.
func TestPurgeDropsIndex(t *testing.T) {
	t.Parallel()
	for _, s := range strategies {
		t.Run(string(s), func(t *testing.T) {
			t.Parallel()
			e := setupOpenSearch(t, s)
			d := e.newTenant(t, "leaving")
			stay := e.newTenant(t, "staying")
			d.create(t, "Farewell post", "Goodbye.")
			kept := stay.create(t, "Farewell to nobody", "Still here.")
			d.synced(t)
			stay.synced(t)
			e.indexer.Stop() // the purged tenant's pool goes away

			if _, err := e.prov.Delete(e.ctx, d.t.Slug, "test", 0); err != nil {
				t.Fatal(err)
			}
			if _, err := e.prov.Purge(e.ctx, d.t.Slug, provisioner.PurgeOptions{Force: true, Actor: "test"}); err != nil {
				t.Fatalf("purge: %v", err)
			}
			_, err := e.os.Search(e.ctx, d.t, nil, "farewell", 0)
			if apperr.KindOf(err) != apperr.Unavailable {
				t.Errorf("search of the purged tenant error = %v, want Unavailable (its alias is gone)", err)
			}
			left, err := e.os.indexedVersions(e.ctx, d.t, e.os.SharedIndexName(), d.t.ID)
			if s == Shared && (err != nil || len(left) != 0) {
				t.Errorf("shared index still holds %d documents of the purged tenant (%v)", len(left), err)
			}
			if got := ids(stay.search(t, "farewell")); !slices.Equal(got, []int64{kept}) {
				t.Errorf(`other tenant's "farewell" = %v, want [%d]`, got, kept)
			}
			// Purging twice (or a tenant whose index is already gone) is fine.
			if err := e.os.DropIndex(e.ctx, d.t); err != nil {
				t.Errorf("dropping a dropped index: %v", err)
			}
		})
	}
}

// TestSearchBeforeIndexExists answers a tenant without an index 503, or from Postgres
// when a fallback is set.
func TestSearchBeforeIndexExists(t *testing.T) {
	t.Parallel()
	e := setupOpenSearch(t, PerTenant)
	d := e.newTenant(t, "noindex")
	id := d.create(t, "Postgres still answers", "")
	tn := *d.t
	tn.SearchIndex = ""
	if _, err := e.os.Search(e.ctx, &tn, d.db, "postgres", 0); apperr.KindOf(err) != apperr.Unavailable {
		t.Errorf("no index: error = %v, want Unavailable", err)
	}
	tn.SearchIndex = e.os.AliasName(d.t) + "-missing"
	withFallback := *e.os
	withFallback.fallback = NewPostgres(PostgresConfig{})
	hits, err := withFallback.Search(e.ctx, &tn, d.db, "postgres", 0)
	if err != nil || !slices.Equal(ids(hits), []int64{id}) {
		t.Errorf("missing index with fallback = %v, %v; want [%d] from postgres", ids(hits), err, id)
	}
}

// TestOpenSearchOutage stops the node: blog writes keep succeeding (they only touch
// Postgres), searches say 503, and once the node is back the index catches up.
// It is not parallel: nothing else may use the node while it is down.
func TestOpenSearchOutage(t *testing.T) {
	dir := pgtest.Require(t, envOpenSearchDir)
	e := setupOpenSearch(t, Shared)
	d := e.newTenant(t, "outage")
	before := d.create(t, "Written before the outage", "")
	d.synced(t)

	script, err := filepath.Abs(filepath.Join("..", "..", "scripts", "opensearch.sh"))
	if err != nil {
		t.Fatal(err)
	}
	nodeCtl(t, script, "stop", dir)
	restarted := false
	t.Cleanup(func() {
		if !restarted {
			nodeCtl(t, script, "start", dir)
		}
	})

	var during []int64
	for i := range 5 {
		during = append(during, d.create(t, fmt.Sprintf("Written during the outage %d", i), "Lighthouse keeper notes."))
	}
	d.update(t, before, "Written before the outage, edited during it", "")
	if n := d.outboxLen(t); n != 6 {
		t.Errorf("outbox holds %d events during the outage, want 6", n)
	}
	if _, err := e.os.Search(e.ctx, d.t, d.db, "lighthouse", 0); apperr.KindOf(err) != apperr.Unavailable {
		t.Errorf("search during the outage error = %v, want Unavailable", err)
	}

	nodeCtl(t, script, "start", dir)
	restarted = true
	d.synced(t)
	got := ids(d.search(t, "lighthouse"))
	slices.Sort(got)
	if !slices.Equal(got, during) {
		t.Errorf(`after the outage, "lighthouse" = %v, want %v`, got, during)
	}
	if got := ids(d.search(t, "edited")); !slices.Equal(got, []int64{before}) {
		t.Errorf(`after the outage, "edited" = %v, want [%d]`, got, before)
	}
}

// nodeCtl runs scripts/opensearch.sh ACTION DIR.
func nodeCtl(t *testing.T, script, action, dir string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, script, action, dir)
	cmd.Stderr = os.Stderr
	if out, err := cmd.Output(); err != nil {
		t.Fatalf("opensearch.sh %s: %v (%s)", action, err, out)
	}
}
