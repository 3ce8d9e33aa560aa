DROP INDEX IF EXISTS blogs_title_trgm;
ALTER TABLE blogs DROP COLUMN search_vector;
ALTER TABLE blogs ADD COLUMN search_vector tsvector GENERATED ALWAYS AS (
    setweight(to_tsvector('simple', title), 'A') ||
    setweight(to_tsvector('simple', description), 'B')
) STORED;
CREATE INDEX blogs_search ON blogs USING gin (search_vector);
