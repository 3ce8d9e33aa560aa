-- A small schema for the big fleet test; the fixture creates it in bulk.
CREATE TABLE items (
    id    bigserial PRIMARY KEY,
    title text NOT NULL
);
