-- The login role of the dataplane's shared pools: NOINHERIT and without privileges of
-- its own, so that it reaches nothing until a transaction is bound to a tenant with
-- set_config('role', <tenant role>, true). It is a member of every tenant role: the
-- roles of existing tenants are granted here, the provisioner's role step grants each
-- new one (and creates this role on shards of other clusters). Its password is set by
-- the dataplane (see package dataplane/pool).
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'tenantplane_gateway') THEN
        CREATE ROLE tenantplane_gateway LOGIN NOINHERIT NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL; -- created meanwhile by another database's migration or a role step
END
$$;

DO $$
DECLARE
    r text;
BEGIN
    FOR r IN
        SELECT t.db_role FROM tenants t JOIN pg_roles p ON p.rolname = t.db_role
        WHERE t.status <> 'purged'
          AND NOT pg_has_role('tenantplane_gateway', t.db_role, 'MEMBER')
    LOOP
        EXECUTE format('GRANT %I TO tenantplane_gateway', r);
    END LOOP;
END
$$;

-- How the dataplane connects for each tenant: the shared gateway pool by default, or
-- connections of the tenant's own (database isolation, premium plans).
ALTER TABLE tenants ADD COLUMN pool_mode text NOT NULL DEFAULT 'shared'
    CHECK (pool_mode IN ('shared', 'dedicated'));
UPDATE tenants SET pool_mode = 'dedicated' WHERE isolation = 'database';
