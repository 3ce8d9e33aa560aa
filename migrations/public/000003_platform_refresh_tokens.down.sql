DROP TABLE IF EXISTS platform_refresh_tokens;
