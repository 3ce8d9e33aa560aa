package main

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/tenantplane/tenantplane/dataplane/pool"
	"github.com/tenantplane/tenantplane/dataplane/search"
	"github.com/tenantplane/tenantplane/metrics"
	"github.com/tenantplane/tenantplane/provisioner"
	"github.com/tenantplane/tenantplane/tenant"
)

// openSearch returns the OpenSearch backend when OPENSEARCH_URL is set, nil otherwise.
func (a *app) openSearch() (*search.OpenSearch, error) {
	if a.cfg.OpenSearchURL == "" {
		return nil, nil
	}
	if a.os != nil {
		return a.os, nil
	}
	strategy, err := search.ParseStrategy(a.cfg.SearchStrategy)
	if err != nil {
		return nil, &configError{"TENANTPLANE_SEARCH_STRATEGY", err.Error()}
	}
	os, err := search.NewOpenSearch(search.OpenSearchConfig{
		Addresses: []string{a.cfg.OpenSearchURL},
		Strategy:  strategy,
		// While OpenSearch is unreachable, searches are answered from Postgres.
		Fallback: search.NewPostgres(search.PostgresConfig{Logger: a.log}),
		Logger:   a.log,
	})
	if err != nil {
		return nil, &configError{"OPENSEARCH_URL", err.Error()}
	}
	a.os = os
	return os, nil
}

// searchIndexes returns the provisioner's search index creator: none for Postgres search.
func (a *app) searchIndexes(context.Context) (provisioner.SearchIndexes, error) {
	os, err := a.openSearch()
	if os == nil || err != nil {
		return nil, err
	}
	return os, nil
}

// txRunner runs a unit of work bound to a tenant; the dataplane server is one.
type txRunner interface {
	InTx(ctx context.Context, t *tenant.Tenant, fn func(pool.DB) error) error
}

// searchIndexer returns, with OpenSearch, the outbox indexer to run beside the
// dataplane; none for Postgres search.
func (a *app) searchIndexer(store *tenant.Store, tx txRunner, reg *metrics.Metrics) ([]component, error) {
	os, err := a.openSearch()
	if os == nil || err != nil {
		return nil, err
	}
	ix, err := search.NewIndexer(search.IndexerConfig{
		Search: os,
		Tenants: search.TenantSourceFunc(func(ctx context.Context) ([]*tenant.Tenant, error) {
			return store.ListByStatus(ctx, tenant.StatusActive, tenant.StatusSuspended)
		}),
		Tx:      search.TransactorFunc(tx.InTx),
		Logger:  a.log,
		Metrics: reg,
	})
	if err != nil {
		return nil, fmt.Errorf("configuring the search indexer: %w", err)
	}
	return []component{ix}, nil
}

func (a *app) searchCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "search",
		Short: "Manage the OpenSearch backend (OPENSEARCH_URL)",
	}
	var slugs []string
	reindex := &cobra.Command{
		Use:   "reindex [--tenant SLUG]...",
		Short: "Rebuild tenants' search documents from Postgres (every active tenant by default)",
		Long: `Reindex rebuilds each tenant's OpenSearch documents from its blogs in Postgres, creating
its index or alias if missing and removing documents of blogs that no longer exist. It
is safe while the servers run. Without OPENSEARCH_URL there is nothing to rebuild:
Postgres search reads the blogs table itself.`,
		Args: exactArgs(0, ""),
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			os, err := a.openSearch()
			if err != nil {
				return err
			}
			if os == nil {
				return usagef("OPENSEARCH_URL is not set: search is served by Postgres and needs no reindex")
			}
			prov, store, err := a.provisioner(ctx)
			if err != nil {
				return err
			}
			var ts []*tenant.Tenant
			if len(slugs) == 0 {
				if ts, err = store.ListByStatus(ctx, tenant.StatusActive, tenant.StatusSuspended); err != nil {
					return err
				}
			}
			for _, slug := range slugs {
				t, err := store.Get(ctx, slug)
				if err != nil {
					return fmt.Errorf("tenant %q: %w", slug, err)
				}
				ts = append(ts, t)
			}
			failed := 0
			for _, t := range ts {
				if err := a.reindexTenant(ctx, prov, os, t); err != nil {
					failed++
					fmt.Fprintf(a.stderr, "%s: %v\n", t.Slug, err)
				}
			}
			if failed > 0 {
				return fmt.Errorf("%d of %d tenant(s) failed to reindex", failed, len(ts))
			}
			fmt.Fprintf(a.stderr, "reindexed %d tenant(s)\n", len(ts))
			return nil
		},
	}
	reindex.Flags().StringArrayVar(&slugs, "tenant", nil, "only this tenant (repeatable)")
	cmd.AddCommand(reindex)
	return cmd
}

// reindexTenant ensures the tenant's index exists and rebuilds its documents, showing a
// progress bar on a terminal.
func (a *app) reindexTenant(ctx context.Context, prov *provisioner.Provisioner, os *search.OpenSearch, t *tenant.Tenant) error {
	if _, err := os.EnsureIndex(ctx, t); err != nil {
		return err
	}
	var bar *progressbar.ProgressBar
	progress := func(done, total int) {
		if !isTerminal(a.stderr) || a.output == "json" {
			return
		}
		if bar == nil {
			bar = progressbar.NewOptions(total, progressbar.OptionSetWriter(a.stderr), progressbar.OptionSetDescription(t.Slug),
				progressbar.OptionShowCount(), progressbar.OptionThrottle(100*time.Millisecond), progressbar.OptionClearOnFinish())
		}
		_ = bar.Set(done)
	}
	shardURL, ok := prov.ShardURL(t.Shard)
	if !ok {
		return fmt.Errorf("tenant %s is on shard %q, which is not configured (TENANTPLANE_SHARDS)", t.Slug, t.Shard)
	}
	dsn, err := t.ConnString(shardURL)
	if err != nil {
		return err
	}
	// Logged in as the tenant's role: the rebuild reads its schema and nothing else.
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return fmt.Errorf("connecting as tenant %s: %w", t.Slug, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	err = os.Reindex(ctx, t, conn, progress)
	if bar != nil {
		_ = bar.Finish()
	}
	return err
}
