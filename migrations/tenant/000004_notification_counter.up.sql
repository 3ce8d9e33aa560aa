-- Notification ids in commit order. A bigserial id is taken when the INSERT runs, not when
-- it commits, so two concurrent posts can become visible in the opposite order of their
-- ids, and a reader resuming from the highest id it saw would skip the late one. Instead
-- each insert takes the next value of this one-row counter with UPDATE ... RETURNING in
-- its own transaction: the row lock orders the inserting transactions, an id is visible
-- only once every smaller one is, and a rolled-back insert rolls its id back (no gaps).
CREATE TABLE notification_counter (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    last_id  bigint NOT NULL
);
INSERT INTO notification_counter (last_id) SELECT coalesce(max(id), 0) FROM notifications;

-- Every id comes from the counter: an insert that forgot it fails instead of taking a
-- sequence value out of order.
ALTER TABLE notifications ALTER COLUMN id DROP DEFAULT;
DROP SEQUENCE IF EXISTS notifications_id_seq;
