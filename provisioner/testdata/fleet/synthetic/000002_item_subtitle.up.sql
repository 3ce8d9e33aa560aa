-- An additive migration: a column and an index.
ALTER TABLE items ADD COLUMN subtitle text NOT NULL DEFAULT '';
CREATE INDEX items_subtitle ON items (subtitle);
-- A side effect that a migration applied twice would leave twice.
CREATE TABLE IF NOT EXISTS migration_marks (name text NOT NULL);
INSERT INTO migration_marks (name) VALUES ('subtitle');
