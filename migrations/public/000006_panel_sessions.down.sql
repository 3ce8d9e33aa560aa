DROP TABLE IF EXISTS panel_sessions;
