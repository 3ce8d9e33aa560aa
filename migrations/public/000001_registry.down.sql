DROP TABLE IF EXISTS idempotency_keys;
DROP TABLE IF EXISTS tenant_events;
DROP TABLE IF EXISTS platform_users;
DROP TABLE IF EXISTS domains;
DROP TABLE IF EXISTS tenants;
DROP FUNCTION IF EXISTS tenants_notify();
DROP FUNCTION IF EXISTS domains_notify();
