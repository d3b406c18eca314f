-- Password attempts are reserved before the password is verified (src/auth/attempts.rs):
-- verified failures plus attempts being verified never exceed the lockout threshold, so
-- concurrent guesses cannot all be verified before the lock. A reservation left behind by
-- a crashed server no longer counts once no attempt was reserved for the lockout period.
ALTER TABLE users
    ADD COLUMN attempts_pending integer NOT NULL DEFAULT 0 CHECK (attempts_pending >= 0),
    ADD COLUMN attempt_reserved_at timestamptz;
