-- A tenant that a fleet run is migrating right now is not served: the dataplane answers
-- 503 tenant_migrating until the run records how the migration ended.
ALTER TABLE tenants ADD COLUMN migrating boolean NOT NULL DEFAULT false;

-- The migration ledger. One row per fleet run (`tenantplane migrate tenants`, the
-- platform API), and one entry per tenant the run covers.
CREATE TABLE migration_runs (
    id             uuid PRIMARY KEY,
    actor          text NOT NULL,
    -- The version every tenant is brought to; 0 means no migration applied.
    target_version bigint NOT NULL,
    options        jsonb NOT NULL DEFAULT '{}',
    -- interrupted: the process running it died; a later run marked it so.
    state          text NOT NULL CHECK (state IN ('running', 'done', 'failed', 'canceled', 'interrupted')),
    error          text NOT NULL DEFAULT '',
    started_at     timestamptz NOT NULL,
    finished_at    timestamptz
);
CREATE INDEX migration_runs_started ON migration_runs (started_at DESC);
CREATE INDEX migration_runs_running ON migration_runs (id) WHERE state = 'running';

CREATE TABLE migration_entries (
    run_id         uuid NOT NULL REFERENCES migration_runs (id) ON DELETE CASCADE,
    tenant_id      uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    -- Order in which the run takes its tenants (the canaries first).
    position       integer NOT NULL,
    -- The registry's version of the tenant when the run was planned.
    from_version   bigint NOT NULL,
    target_version bigint NOT NULL,
    -- The version read from the tenant's schema after the migration.
    version        bigint,
    state          text NOT NULL CHECK (state IN ('pending', 'running', 'done', 'failed', 'skipped')),
    -- Why a tenant was skipped.
    detail         text NOT NULL DEFAULT '',
    error          text NOT NULL DEFAULT '',
    attempts       integer NOT NULL DEFAULT 0,
    queued_at      timestamptz NOT NULL,
    started_at     timestamptz,
    finished_at    timestamptz,
    PRIMARY KEY (run_id, tenant_id)
);
CREATE INDEX migration_entries_tenant ON migration_entries (tenant_id, queued_at DESC);
CREATE INDEX migration_entries_run ON migration_entries (run_id, position);
