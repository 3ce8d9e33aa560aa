CREATE SEQUENCE IF NOT EXISTS notifications_id_seq OWNED BY notifications.id;
SELECT setval('notifications_id_seq', coalesce((SELECT max(id) FROM notifications), 0) + 1, false);
ALTER TABLE notifications ALTER COLUMN id SET DEFAULT nextval('notifications_id_seq');
DROP TABLE IF EXISTS notification_counter;
