package main

import (
	"context"

	"github.com/spf13/cobra"

	"github.com/tenantplane/tenantplane/dataplane/blogs"
	"github.com/tenantplane/tenantplane/provisioner"
	"github.com/tenantplane/tenantplane/tenant"
)

func (a *app) searchCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "search",
		Short: "Manage the search backend",
	}
}

// searchIndexes returns the provisioner's search index creator: none for Postgres search.
func (a *app) searchIndexes(context.Context) (provisioner.SearchIndexes, error) {
	return nil, nil
}

// searchBackend returns the blog searcher and any background component it needs.
func (a *app) searchBackend(context.Context, *tenant.Store) (blogs.Searcher, []component, error) {
	return nil, nil, nil
}
