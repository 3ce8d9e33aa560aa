-- Login throttle state shared by every replica when no Redis is configured: one row per
-- throttled key (an account, a client IP) holding its GCRA "theoretical arrival time" in
-- microseconds since the Unix epoch. A row whose time has passed holds no state.
CREATE TABLE throttle_buckets (
    key    text PRIMARY KEY,
    tat_us bigint NOT NULL
);
CREATE INDEX throttle_buckets_tat ON throttle_buckets (tat_us);
