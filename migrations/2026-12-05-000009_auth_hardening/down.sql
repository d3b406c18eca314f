ALTER TABLE users DROP COLUMN attempt_reserved_at, DROP COLUMN attempts_pending;
