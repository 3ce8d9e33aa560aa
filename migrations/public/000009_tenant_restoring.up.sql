-- A tenant whose data an archive replaces in place is "restoring": not served meanwhile.
ALTER TABLE tenants DROP CONSTRAINT tenants_status_check;
ALTER TABLE tenants ADD CONSTRAINT tenants_status_check
    CHECK (status IN ('provisioning', 'active', 'suspended', 'pending_deletion', 'purged', 'failed', 'restoring'));
