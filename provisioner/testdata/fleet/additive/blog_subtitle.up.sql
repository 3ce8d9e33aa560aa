-- An additive migration: a column and an index. The tests number it after the newest
-- embedded tenant migration.
ALTER TABLE blogs ADD COLUMN subtitle text NOT NULL DEFAULT '';
CREATE INDEX blogs_subtitle ON blogs (subtitle);
-- A side effect that a migration applied twice would leave twice.
CREATE TABLE IF NOT EXISTS migration_marks (name text NOT NULL);
INSERT INTO migration_marks (name) VALUES ('subtitle');
