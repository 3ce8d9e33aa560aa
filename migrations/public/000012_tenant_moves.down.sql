DROP TABLE moved_sources;
DROP TABLE tenant_moves;
