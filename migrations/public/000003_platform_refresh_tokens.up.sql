-- Platform users' refresh tokens: single use; presenting a used one revokes its family.
CREATE TABLE platform_refresh_tokens (
    jti        uuid PRIMARY KEY,
    user_id    uuid NOT NULL REFERENCES platform_users (id) ON DELETE CASCADE,
    family     uuid NOT NULL,
    expires_at timestamptz NOT NULL,
    used_at    timestamptz,
    revoked_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX platform_refresh_tokens_family ON platform_refresh_tokens (family);
CREATE INDEX platform_refresh_tokens_expiry ON platform_refresh_tokens (expires_at);
