-- The warm pool: per shard, schemas (with their roles) created and migrated ahead of any
-- signup. A signup of a schema-isolation tenant claims a ready one (FOR UPDATE SKIP
-- LOCKED) and renames it to the tenant's names. A row is filling while its objects are
-- being created, ready once they are at migration_version, claimed for good by
-- tenant_id: a claimed schema is never handed out again. role_password is the pooled
-- role's password, stored as a SCRAM secret in the role (which survives the rename);
-- the claim makes it the tenant's db_password.
CREATE TABLE warm_schemas (
    schema_name       text PRIMARY KEY,
    role_name         text NOT NULL UNIQUE,
    role_password     text NOT NULL,
    shard             text NOT NULL,
    state             text NOT NULL DEFAULT 'filling' CHECK (state IN ('filling', 'ready', 'claimed')),
    migration_version bigint NOT NULL DEFAULT 0,
    tenant_id         uuid UNIQUE,
    created_at        timestamptz NOT NULL DEFAULT now(),
    claimed_at        timestamptz,
    CHECK ((state = 'claimed') = (tenant_id IS NOT NULL))
);

CREATE INDEX warm_schemas_ready ON warm_schemas (shard, created_at) WHERE state = 'ready';
