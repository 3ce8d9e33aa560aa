package tenant

import (
	"context"
	"fmt"
)

// StepResult is what a finished provisioning step leaves in the registry besides its
// name. Zero fields leave the registry as it is.
type StepResult struct {
	// Migrated says MigrationVersion and MigrationDirty hold the tenant's schema version.
	Migrated         bool
	MigrationVersion int64
	MigrationDirty   bool
	// AdminCreated forgets the pending admin password hash: the admin user exists.
	AdminCreated bool
	// SearchIndex, when not empty, is the name of the tenant's search index or alias.
	SearchIndex string
}

// RecordStep records that provisioning step is done for the tenant, together with what
// the step produced, in one statement: a crash never keeps one without the other.
func (s *Store) RecordStep(ctx context.Context, id, step string, r StepResult) error {
	_, err := s.db.Exec(ctx, `UPDATE tenants SET provisioning_step = $2,
			migration_version = CASE WHEN $3 THEN $4 ELSE migration_version END,
			migration_dirty = CASE WHEN $3 THEN $5 ELSE migration_dirty END,
			pending_admin_hash = CASE WHEN $6 THEN NULL ELSE pending_admin_hash END,
			search_index = COALESCE(NULLIF($7, ''), search_index),
			updated_at = now()
		WHERE id = $1`,
		id, step, r.Migrated, r.MigrationVersion, r.MigrationDirty, r.AdminCreated, r.SearchIndex)
	if err != nil {
		return fmt.Errorf("recording step %s: %w", step, err)
	}
	return nil
}

// Activate marks a provisioned tenant active (its last step "active", its last error
// cleared) and writes the audit entry, in one statement.
func (s *Store) Activate(ctx context.Context, id, actor string) error {
	_, err := s.db.Exec(ctx, `WITH activated AS (
			UPDATE tenants SET status = 'active', provisioning_step = 'active', last_error = '', updated_at = now()
			WHERE id = $1 RETURNING id)
		INSERT INTO tenant_events (tenant_id, action, actor) SELECT id, 'activate', $2 FROM activated`, id, actor)
	if err != nil {
		return fmt.Errorf("activating: %w", err)
	}
	return nil
}
