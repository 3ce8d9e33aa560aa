package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/tenantplane/tenantplane/provisioner"
)

func (a *app) migrateCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "migrate",
		Short: "Apply migrations to the registry (shared) and to tenant schemas",
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "shared",
		Short: "Apply the public schema (tenant registry) migrations to the control database",
		Args:  exactArgs(0, ""),
		RunE: func(cmd *cobra.Command, _ []string) error {
			v, err := provisioner.MigrateShared(cmd.Context(), a.cfg.DatabaseURL)
			if err != nil {
				return fmt.Errorf("migrating the registry: %w", err)
			}
			if a.output == "json" {
				return printJSON(a.stdout, map[string]any{"version": v})
			}
			fmt.Fprintf(a.stdout, "registry at version %d\n", v)
			return nil
		},
	})
	cmd.AddCommand(a.migrateTenantsCmd(), a.migrateStatusCmd(), a.migrateForceCmd())
	return cmd
}
