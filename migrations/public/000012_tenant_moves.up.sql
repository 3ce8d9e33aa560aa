-- A tenant's move between shards (or isolation modes) in progress: at most one per tenant.
-- The tenant stays served from its registry placement (the source) until the move's
-- switch rewrites it; a resumed run finds here where the move stands.
CREATE TABLE tenant_moves (
    tenant_id      uuid PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    id             uuid NOT NULL,
    from_shard     text NOT NULL,
    from_isolation text NOT NULL,
    from_database  text NOT NULL DEFAULT '',
    to_shard       text NOT NULL,
    to_isolation   text NOT NULL CHECK (to_isolation IN ('schema', 'database')),
    to_database    text NOT NULL DEFAULT '',
    offline        boolean NOT NULL,
    -- The target is on the source's cluster: roles are shared, the slot is made apart.
    same_cluster   boolean NOT NULL,
    -- The subscription's oid on the target, to find its table-sync slots on the source.
    sub_oid        bigint NOT NULL DEFAULT 0,
    step           text NOT NULL DEFAULT 'move_registered',
    actor          text NOT NULL,
    last_error     text NOT NULL DEFAULT '',
    copied_rows    bigint NOT NULL DEFAULT 0,
    total_rows     bigint NOT NULL DEFAULT 0,
    lag_bytes      bigint NOT NULL DEFAULT 0,
    started_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);

-- The schema or database a finished move left on its source, unwritable, kept for the
-- tenant's deletion grace period and then dropped.
CREATE TABLE moved_sources (
    id            bigserial PRIMARY KEY,
    tenant_id     uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    shard         text NOT NULL,
    isolation     text NOT NULL,
    schema_name   text NOT NULL,
    database_name text NOT NULL DEFAULT '',
    db_role       text NOT NULL,
    -- The role is the tenant's own on another cluster, dropped with the source.
    drop_role     boolean NOT NULL,
    moved_at      timestamptz NOT NULL DEFAULT now(),
    dropped_at    timestamptz
);
CREATE INDEX moved_sources_pending ON moved_sources (moved_at) WHERE dropped_at IS NULL;
