-- A tenant whose writes are frozen (the last moments of a move between shards) is served
-- for reads only: the dataplane answers its writes 503 tenant_moving.
ALTER TABLE tenants ADD COLUMN writes_frozen boolean NOT NULL DEFAULT false;
