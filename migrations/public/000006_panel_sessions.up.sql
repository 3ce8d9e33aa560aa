-- Admin panel sessions of both panels (platform and tenant), shared by every replica
-- when no Redis is configured. The client holds a random token; only its SHA-256 is
-- stored, so a copy of this table opens no session.
CREATE TABLE panel_sessions (
    token_hash  bytea PRIMARY KEY,
    audience    text NOT NULL,
    subject     text NOT NULL,
    version     integer NOT NULL DEFAULT 0,
    created_at  timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL,
    absolute_at timestamptz NOT NULL
);
CREATE INDEX panel_sessions_subject ON panel_sessions (audience, subject);
CREATE INDEX panel_sessions_expiry ON panel_sessions (expires_at);
