-- The additive migration, slow enough for two migrators to meet in it.
SELECT pg_sleep(0.2);
ALTER TABLE blogs ADD COLUMN subtitle text NOT NULL DEFAULT '';
CREATE INDEX blogs_subtitle ON blogs (subtitle);
CREATE TABLE IF NOT EXISTS migration_marks (name text NOT NULL);
INSERT INTO migration_marks (name) VALUES ('subtitle');
