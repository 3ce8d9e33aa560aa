-- Platform refresh tokens get the tenant table's design: a rotated token is revoked and
-- names its successor in replaced_by. A token already used under the old design is
-- revoked (presenting it again still revokes its family).
ALTER TABLE platform_refresh_tokens ADD COLUMN replaced_by uuid;
UPDATE platform_refresh_tokens SET revoked_at = COALESCE(revoked_at, used_at) WHERE used_at IS NOT NULL;
ALTER TABLE platform_refresh_tokens DROP COLUMN used_at;
CREATE INDEX platform_refresh_tokens_user ON platform_refresh_tokens (user_id);
