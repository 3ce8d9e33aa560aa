package tenant

import (
	"context"
	"fmt"

	"github.com/tenantplane/tenantplane/apperr"
	"github.com/tenantplane/tenantplane/pgerr"
)

// Step names one step of a tenant operation (provisioning, purge) as the registry records
// it once done: the registry keeps the last step done of the tenant's current operation,
// and the next run of that operation starts after it.
type Step string

// StepRegistered is the step a new tenant starts at: registered, nothing provisioned.
const StepRegistered Step = "registered"

// The provisioning steps, in the order they run.
const (
	StepRole        Step = "role"         // the tenant's login role
	StepSchema      Step = "schema"       // its schema (and database, in database isolation)
	StepMigrations  Step = "migrations"   // its schema at the newest migration
	StepAdminUser   Step = "admin_user"   // its admin user
	StepSearchIndex Step = "search_index" // its search index or alias
	StepActive      Step = "active"       // served
)

// StepWarmClaim replaces StepRole, StepSchema and StepMigrations in a signup served by
// the provisioner's warm pool: its role and schema claimed from the pool and renamed to
// its names, at the newest migration (created, with the pool empty).
const StepWarmClaim Step = "warm_claim"

// The purge steps, in the order they run.
const (
	StepDropStorage     Step = "drop_storage"      // sessions closed, schema or database dropped
	StepDropRole        Step = "drop_role"         // role and what it owned dropped
	StepDropSearchIndex Step = "drop_search_index" // search index or alias deleted
	StepPurged          Step = "purged"            // marked purged
)

// The steps of an import into a new tenant, in the order they run; the tenant is
// registered at StepImportRegistered and ends at StepActive. An import interrupted before
// StepImportLoad is undone (its archive stream is gone): StepImportUndoStorage,
// StepImportUndoRole, StepImportUndoIndex, then the registry row is removed.
const (
	StepImportRegistered  Step = "import_registered"   // registered for an import, nothing provisioned
	StepImportRole        Step = "import_role"         // the tenant's login role
	StepImportSchema      Step = "import_schema"       // its schema (and database)
	StepImportMigrations  Step = "import_migrations"   // its schema at the archive's version
	StepImportLoad        Step = "import_load"         // the archive's data loaded and verified
	StepImportMigrateUp   Step = "import_migrate_up"   // its schema at the newest migration
	StepImportSearchIndex Step = "import_search_index" // its search index, marked for reindex
	StepImportUndoStorage Step = "import_undo_storage" // an interrupted import's schema or database dropped
	StepImportUndoRole    Step = "import_undo_role"    // its role dropped
	StepImportUndoIndex   Step = "import_undo_index"   // its search index deleted
)

// StepReplaceLoad is the step of an in-place restore that replaced the tenant's data
// with an archive's; the restore ends at StepActive.
const StepReplaceLoad Step = "replace_load"

// The steps of a move between shards (or isolation modes), recorded in the move's own
// row (public migration 000012), not in the registry's provisioning step: the tenant
// stays active and served from its source until StepMoveSwitch.
const (
	StepMoveRegistered   Step = "move_registered"   // recorded, nothing made yet
	StepMoveRole         Step = "move_role"         // the tenant's role on the target
	StepMoveSchema       Step = "move_schema"       // its schema (and database) on the target
	StepMoveMigrations   Step = "move_migrations"   // the target at the source's schema version
	StepMovePublication  Step = "move_publication"  // publication and replication slot on the source
	StepMoveSubscription Step = "move_subscription" // subscription on the target, copying
	StepMoveCopy         Step = "move_copy"         // every table copied, replication caught up
	StepMoveFreeze       Step = "move_freeze"       // writes refused on the source, the target caught up
	StepMoveOfflineCopy  Step = "move_offline_copy" // offline: the data copied with COPY while frozen
	StepMoveVerify       Step = "move_verify"       // counts and checksums equal, sequences set
	StepMoveSwitch       Step = "move_switch"       // the registry points at the target, writes thawed
	StepMoveCleanup      Step = "move_cleanup"      // replication objects dropped, source recorded
	StepMoveUndoSource   Step = "move_undo_source"  // an undone move: the source as before, writable
	StepMoveUndoTarget   Step = "move_undo_target"  // an undone move: the target's objects dropped
)

// StepResult is what a finished step leaves in the registry besides its name. Zero fields
// leave the registry as it is.
type StepResult struct {
	// Migrated says MigrationVersion and MigrationDirty hold the tenant's schema version.
	Migrated         bool
	MigrationVersion int64
	MigrationDirty   bool
	// AdminCreated forgets the pending admin password hash: the admin user exists.
	AdminCreated bool
	// SearchIndex, when not empty, is the name of the tenant's search index or alias.
	SearchIndex string
	// Status, when not empty, is the tenant's new status (its last error and deletion
	// date cleared), and Event the audit log entry written with it, by Actor.
	Status Status
	Event  string
	Actor  string
}

// Apply sets on t what RecordStep writes to the registry for step and r.
func (r StepResult) Apply(t *Tenant, step Step) {
	t.ProvisioningStep = step
	if r.Migrated {
		t.MigrationVersion, t.MigrationDirty = r.MigrationVersion, r.MigrationDirty
	}
	if r.AdminCreated {
		t.PendingAdminHash = ""
	}
	if r.SearchIndex != "" {
		t.SearchIndex = r.SearchIndex
	}
	if r.Status != "" {
		t.Status, t.LastError, t.DeleteAfter = r.Status, "", nil
	}
}

// RecordStep records that step is done for the tenant, together with what the step
// produced and its audit entry, in one statement: a crash never keeps one without the
// other. It writes only while the tenant is in status during (the status of the
// operation the step belongs to), and returns Conflict (invalid_transition) when it is
// not, NotFound for an unknown id, and Unavailable when the registry is unreachable.
func (s *Store) RecordStep(ctx context.Context, id string, during Status, step Step, r StepResult) error {
	var n int
	err := s.db.QueryRow(ctx, `WITH rec AS (
			UPDATE tenants SET provisioning_step = $3,
				migration_version = CASE WHEN $4 THEN $5 ELSE migration_version END,
				migration_dirty = CASE WHEN $4 THEN $6 ELSE migration_dirty END,
				pending_admin_hash = CASE WHEN $7 THEN NULL ELSE pending_admin_hash END,
				search_index = COALESCE(NULLIF($8, ''), search_index),
				status = COALESCE(NULLIF($9, ''), status),
				last_error = CASE WHEN $9 = '' THEN last_error ELSE '' END,
				delete_after = CASE WHEN $9 = '' THEN delete_after END,
				updated_at = now()
			WHERE id = $1 AND status = $2
			RETURNING id),
		ev AS (INSERT INTO tenant_events (tenant_id, action, actor) SELECT id, $10, $11 FROM rec WHERE $10 <> '')
		SELECT count(*) FROM rec`,
		id, during, step, r.Migrated, r.MigrationVersion, r.MigrationDirty, r.AdminCreated, r.SearchIndex,
		string(r.Status), r.Event, r.Actor).Scan(&n)
	if err != nil {
		return fmt.Errorf("recording step %s: %w", step, pgerr.Translate(err, pgerr.Codes{}))
	}
	if n == 0 {
		if _, err := s.GetByID(ctx, id); err != nil {
			return err
		}
		return apperr.New(apperr.Conflict, "invalid_transition", "tenant is no longer %s; step %s was not recorded", during, step)
	}
	return nil
}
