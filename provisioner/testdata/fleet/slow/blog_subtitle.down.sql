DROP INDEX IF EXISTS blogs_subtitle;
ALTER TABLE blogs DROP COLUMN IF EXISTS subtitle;
DELETE FROM migration_marks WHERE name = 'subtitle';
