-- The application connects as (or SET ROLE to) casebook_app: it owns nothing and gets only
-- the privileges granted below. Roles are cluster-wide, hence the guard.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'casebook_app') THEN
        CREATE ROLE casebook_app NOLOGIN;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL; -- another database of this cluster created it at the same moment
END
$$;

GRANT SELECT ON __diesel_schema_migrations TO casebook_app;
-- the login role that runs the server switches to casebook_app with SET ROLE
GRANT casebook_app TO CURRENT_USER;

CREATE TABLE sites (
    id          bigserial PRIMARY KEY,
    code        text NOT NULL UNIQUE CHECK (code ~ '^[A-Z0-9]{2,10}$'),
    name        text NOT NULL,
    country     text NOT NULL CHECK (country ~ '^[A-Z]{2}$'),
    time_zone   text NOT NULL,
    active      boolean NOT NULL DEFAULT true,
    -- last subject number handed out; the row lock on this column keeps codes gap-free
    subject_seq integer NOT NULL DEFAULT 0,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE users (
    id                  bigserial PRIMARY KEY,
    email               text NOT NULL,
    name                text NOT NULL,
    role                text NOT NULL CHECK (role IN ('admin', 'investigator', 'monitor', 'sponsor')),
    active              boolean NOT NULL DEFAULT true,
    password_hash       text NOT NULL,
    failed_logins       integer NOT NULL DEFAULT 0,
    first_failed_at     timestamptz,
    locked_until        timestamptz,
    token_version       integer NOT NULL DEFAULT 1,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX users_email_ci ON users (lower(email));

CREATE TABLE user_sites (
    user_id bigint NOT NULL REFERENCES users (id),
    site_id bigint NOT NULL REFERENCES sites (id),
    PRIMARY KEY (user_id, site_id)
);

-- One row per login: the refresh-token family. Revoking it ends the session at once,
-- for the refresh tokens and for access tokens carrying its id.
CREATE TABLE sessions (
    id          uuid PRIMARY KEY,
    user_id     bigint NOT NULL REFERENCES users (id),
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz,
    revoked_why text
);
CREATE INDEX sessions_user ON sessions (user_id);

CREATE TABLE refresh_tokens (
    id          bigserial PRIMARY KEY,
    session_id  uuid NOT NULL REFERENCES sessions (id),
    token_hash  bytea NOT NULL UNIQUE,
    issued_at   timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    spent_at    timestamptz
);

CREATE TABLE idempotency_keys (
    user_id       bigint NOT NULL REFERENCES users (id),
    key           text NOT NULL,
    request_hash  bytea NOT NULL,
    status        smallint,
    body          jsonb,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, key)
);

-- The audit trail. Rows are written in the same transaction as the change they describe
-- and never changed afterwards.
CREATE TABLE audit_log (
    id            bigserial PRIMARY KEY,
    occurred_at   timestamptz NOT NULL DEFAULT now(),
    actor_id      bigint,
    actor_role    text,
    action        text NOT NULL,
    entity_table  text NOT NULL,
    record_id     bigint,
    site_id       bigint,
    subject_id    bigint,
    old_values    jsonb,
    new_values    jsonb,
    reason        text,
    request_id    text,
    client_addr   text
);
CREATE INDEX audit_log_subject ON audit_log (subject_id, id) WHERE subject_id IS NOT NULL;
CREATE INDEX audit_log_site ON audit_log (site_id, id) WHERE site_id IS NOT NULL;
CREATE INDEX audit_log_record ON audit_log (entity_table, record_id, id);
CREATE INDEX audit_log_actor ON audit_log (actor_id, id);
CREATE INDEX audit_log_action ON audit_log (action, id);
CREATE INDEX audit_log_time ON audit_log (occurred_at);

-- The hash chain, in seal order. A single sealer (advisory lock) appends rows here shortly
-- after the audit rows commit, so writers never wait on one global lock.
CREATE TABLE audit_chain (
    seq        bigint PRIMARY KEY,
    audit_id   bigint NOT NULL UNIQUE REFERENCES audit_log (id),
    prev_hash  bytea NOT NULL,
    hash       bytea NOT NULL,
    sealed_at  timestamptz NOT NULL DEFAULT now()
);

-- Audit rows not yet sealed. Filled by a trigger, emptied by the sealer.
CREATE TABLE audit_unsealed (
    audit_id bigint PRIMARY KEY REFERENCES audit_log (id)
);

CREATE FUNCTION audit_enqueue() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
SET search_path = public AS $$
BEGIN
    INSERT INTO audit_unsealed (audit_id) VALUES (NEW.id);
    RETURN NEW;
END
$$;
CREATE TRIGGER audit_log_enqueue AFTER INSERT ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_enqueue();

CREATE FUNCTION audit_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER audit_chain_append_only BEFORE UPDATE OR DELETE ON audit_chain
    FOR EACH ROW EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER audit_chain_no_truncate BEFORE TRUNCATE ON audit_chain
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();

GRANT SELECT, INSERT ON audit_log, audit_chain TO casebook_app;
GRANT SELECT, DELETE ON audit_unsealed TO casebook_app;
GRANT USAGE ON SEQUENCE audit_log_id_seq TO casebook_app;
GRANT SELECT, INSERT, UPDATE ON sites, users, sessions, refresh_tokens TO casebook_app;
-- idempotency keys expire after 24 h and are removed
GRANT SELECT, INSERT, UPDATE, DELETE ON idempotency_keys TO casebook_app;
GRANT SELECT, INSERT, DELETE ON user_sites TO casebook_app;
GRANT USAGE ON SEQUENCE sites_id_seq, users_id_seq, refresh_tokens_id_seq TO casebook_app;
