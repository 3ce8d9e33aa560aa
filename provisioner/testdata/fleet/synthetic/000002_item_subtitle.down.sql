DROP INDEX IF EXISTS items_subtitle;
ALTER TABLE items DROP COLUMN IF EXISTS subtitle;
DELETE FROM migration_marks WHERE name = 'subtitle';
