-- Tenant registry: one row per tenant, kept after purge so that names are never reused.
CREATE TABLE tenants (
    id                 uuid PRIMARY KEY,
    slug               text NOT NULL,
    name               text NOT NULL,
    status             text NOT NULL CHECK (status IN ('provisioning', 'active', 'suspended', 'pending_deletion', 'purged', 'failed')),
    isolation          text NOT NULL CHECK (isolation IN ('schema', 'database')),
    shard              text NOT NULL,
    schema_name        text NOT NULL UNIQUE,
    database_name      text UNIQUE,
    db_role            text NOT NULL UNIQUE,
    db_password        text NOT NULL,
    search_index       text NOT NULL DEFAULT '',
    plan               text NOT NULL DEFAULT 'free',
    admin_email        text NOT NULL,
    pending_admin_hash text,
    migration_version  bigint NOT NULL DEFAULT 0,
    migration_dirty    boolean NOT NULL DEFAULT false,
    provisioning_step  text NOT NULL DEFAULT 'registered',
    last_error         text NOT NULL DEFAULT '',
    delete_after       timestamptz,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);

-- A slug names one live tenant; a purged tenant frees its slug but never its schema or role names.
CREATE UNIQUE INDEX tenants_slug_live ON tenants (slug) WHERE status <> 'purged';
CREATE INDEX tenants_status ON tenants (status, created_at);
CREATE INDEX tenants_shard ON tenants (shard) WHERE status <> 'purged';

CREATE TABLE domains (
    domain     text PRIMARY KEY,
    tenant_id  uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    is_primary boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX domains_tenant ON domains (tenant_id);

CREATE TABLE platform_users (
    id            uuid PRIMARY KEY,
    email         text NOT NULL,
    password_hash text NOT NULL,
    is_active     boolean NOT NULL DEFAULT true,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX platform_users_email ON platform_users (lower(email));

-- Audit log of lifecycle operations (who did what to which tenant, and how it ended).
CREATE TABLE tenant_events (
    id         bigserial PRIMARY KEY,
    tenant_id  uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    action     text NOT NULL,
    actor      text NOT NULL,
    detail     text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX tenant_events_tenant ON tenant_events (tenant_id, id);

-- Replayed answers for signup requests carrying an Idempotency-Key.
CREATE TABLE idempotency_keys (
    key          text PRIMARY KEY,
    request_hash text NOT NULL,
    status_code  integer NOT NULL,
    body         bytea NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);

-- Registry changes are announced so every replica drops its cached tenant lookups at once.
CREATE FUNCTION tenants_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('tenantplane_registry', COALESCE(NEW.slug, OLD.slug));
    RETURN NULL;
END $$;
CREATE TRIGGER tenants_notify AFTER UPDATE OR DELETE ON tenants
    FOR EACH ROW EXECUTE FUNCTION tenants_notify();
CREATE FUNCTION domains_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('tenantplane_registry', 'domain:' || COALESCE(NEW.domain, OLD.domain));
    RETURN NULL;
END $$;
CREATE TRIGGER domains_notify AFTER INSERT OR UPDATE OR DELETE ON domains
    FOR EACH ROW EXECUTE FUNCTION domains_notify();
