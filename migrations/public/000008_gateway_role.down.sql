ALTER TABLE tenants DROP COLUMN pool_mode;
-- The gateway role is left in place: it is cluster-wide, may serve other databases,
-- and owns nothing.
