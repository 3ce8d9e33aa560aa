-- Runs with the tenant's schema alone on the search path, as the tenant's own role:
-- unqualified names land in the tenant schema and nowhere else.
CREATE TABLE users (
    id            bigserial PRIMARY KEY,
    email         text NOT NULL,
    password_hash text NOT NULL,
    is_admin      boolean NOT NULL DEFAULT false,
    is_active     boolean NOT NULL DEFAULT true,
    -- Bumped when the user is deactivated or changes password: tokens issued before stop working.
    token_version integer NOT NULL DEFAULT 0,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX users_email ON users (lower(email));

CREATE TABLE refresh_tokens (
    jti         uuid PRIMARY KEY,
    user_id     bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    family      uuid NOT NULL,
    expires_at  timestamptz NOT NULL,
    revoked_at  timestamptz,
    replaced_by uuid,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family);
CREATE INDEX refresh_tokens_user ON refresh_tokens (user_id);

CREATE TABLE blogs (
    id            bigserial PRIMARY KEY,
    title         text NOT NULL,
    description   text NOT NULL DEFAULT '',
    author_id     bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    search_vector tsvector GENERATED ALWAYS AS (
        setweight(to_tsvector('simple', title), 'A') ||
        setweight(to_tsvector('simple', description), 'B')
    ) STORED
);
CREATE INDEX blogs_search ON blogs USING gin (search_vector);
CREATE INDEX blogs_created ON blogs (created_at DESC, id DESC);
CREATE INDEX blogs_author ON blogs (author_id, created_at DESC, id DESC);

CREATE TABLE notifications (
    id         bigserial PRIMARY KEY,
    title      text NOT NULL,
    body       text NOT NULL DEFAULT '',
    sender_id  bigint REFERENCES users (id) ON DELETE SET NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Transactional outbox for the external search index: written in the same transaction
-- as the blog change, drained by the indexer.
CREATE TABLE search_outbox (
    id         bigserial PRIMARY KEY,
    blog_id    bigint NOT NULL,
    op         text NOT NULL CHECK (op IN ('upsert', 'delete')),
    version    bigint NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
