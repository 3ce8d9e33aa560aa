DROP INDEX IF EXISTS platform_refresh_tokens_user;
ALTER TABLE platform_refresh_tokens ADD COLUMN used_at timestamptz;
UPDATE platform_refresh_tokens SET used_at = revoked_at WHERE replaced_by IS NOT NULL;
ALTER TABLE platform_refresh_tokens DROP COLUMN replaced_by;
