-- Search support on top of 000001, as the tenant's own role.
--
-- 1. Case-insensitive matching in every script. The 'simple' text search configuration
--    lowercases with the database's collation, and under the C collation that leaves
--    non-ASCII capitals alone ("Привет" would never match "привет"). The search vector
--    is rebuilt from lower(... COLLATE "und-x-icu") when the server has ICU; the search
--    backend lowercases queries with full Unicode rules too.
-- 2. A trigram index on titles for the typo fallback. pg_trgm lives in schema public:
--    the provisioner creates it before migrations run (a tenant role cannot), and the
--    tenant's search path holds only its own schema, hence the qualified names.
DO $$
DECLARE
    coll text := '';
BEGIN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_collation WHERE collname = 'und-x-icu') THEN
        coll := ' COLLATE "und-x-icu"';
    END IF;
    ALTER TABLE blogs DROP COLUMN search_vector;
    EXECUTE format($sql$
        ALTER TABLE blogs ADD COLUMN search_vector tsvector GENERATED ALWAYS AS (
            setweight(to_tsvector('simple', lower(title%1$s)), 'A') ||
            setweight(to_tsvector('simple', lower(description%1$s)), 'B')
        ) STORED$sql$, coll);
END
$$;
CREATE INDEX blogs_search ON blogs USING gin (search_vector);
CREATE INDEX blogs_title_trgm ON blogs USING gin (title public.gin_trgm_ops);
