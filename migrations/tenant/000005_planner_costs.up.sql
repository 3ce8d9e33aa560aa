-- The tenant's tables are small next to a shard's memory and sit on SSDs: price a random
-- page read close to a sequential one (Postgres' default of 4 dates from spinning disks).
-- With 4, a search for a word held by a few percent of the blogs walks the primary key
-- over half the table (800 pages) instead of reading its few hundred matches through the
-- GIN index, the slowest search there is. A role may set its own session defaults, so
-- the tenant's role sets it for every session that logs in as the tenant (dedicated
-- pools, migrations); the shared pools' gateway role carries the same setting.
ALTER ROLE CURRENT_USER SET random_page_cost = 1.1;
