DROP TABLE IF EXISTS migration_entries;
DROP TABLE IF EXISTS migration_runs;
ALTER TABLE tenants DROP COLUMN IF EXISTS migrating;
