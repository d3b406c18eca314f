-- Data queries: a thread of messages on a record (and optionally one field of it).
CREATE TABLE queries (
    id           bigserial PRIMARY KEY,
    site_id      bigint NOT NULL REFERENCES sites (id),
    subject_id   bigint NOT NULL REFERENCES subjects (id),
    record_type  text NOT NULL CHECK (record_type IN ('subjects', 'consents', 'injections', 'temperatures', 'adverse_events')),
    record_id    bigint NOT NULL,
    field        text,
    status       text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'answered', 'closed')),
    -- 'manual' for a monitor's query, else the name of the edit check that raised it
    origin       text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    created_by   bigint REFERENCES users (id),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX queries_site_status ON queries (site_id, status, id);
CREATE INDEX queries_subject ON queries (subject_id, id);
CREATE INDEX queries_record ON queries (record_type, record_id);

CREATE TABLE query_messages (
    id          bigserial PRIMARY KEY,
    query_id    bigint NOT NULL REFERENCES queries (id),
    kind        text NOT NULL CHECK (kind IN ('open', 'answer', 'close', 'reopen')),
    text        text NOT NULL,
    author_id   bigint REFERENCES users (id),
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX query_messages_query ON query_messages (query_id, id);

-- Source data verification of one version of a record: a later change (a new version)
-- leaves the record unverified.
CREATE TABLE verifications (
    id              bigserial PRIMARY KEY,
    site_id         bigint NOT NULL REFERENCES sites (id),
    subject_id      bigint NOT NULL REFERENCES subjects (id),
    record_type     text NOT NULL,
    record_id       bigint NOT NULL,
    record_version  integer NOT NULL,
    verified_by     bigint NOT NULL REFERENCES users (id),
    verified_at     timestamptz NOT NULL DEFAULT now(),
    cleared_at      timestamptz
);
CREATE INDEX verifications_record ON verifications (record_type, record_id);
CREATE INDEX verifications_subject ON verifications (subject_id);

-- Electronic signatures of a subject's casebook (21 CFR Part 11 §11.50, §11.70).
CREATE TABLE signatures (
    id                  bigserial PRIMARY KEY,
    site_id             bigint NOT NULL REFERENCES sites (id),
    subject_id          bigint NOT NULL REFERENCES subjects (id),
    signer_id           bigint NOT NULL REFERENCES users (id),
    printed_name        text NOT NULL,
    meaning             text NOT NULL,
    signed_at           timestamptz NOT NULL DEFAULT now(),
    casebook_sha256     text NOT NULL,
    invalidated_at      timestamptz,
    invalidated_reason  text
);
CREATE INDEX signatures_subject ON signatures (subject_id, id);

-- Locks: the whole study, a site or a subject. Active while unlocked_at is null.
CREATE TABLE locks (
    id             bigserial PRIMARY KEY,
    scope          text NOT NULL CHECK (scope IN ('study', 'site', 'subject')),
    site_id        bigint REFERENCES sites (id),
    subject_id     bigint REFERENCES subjects (id),
    reason         text NOT NULL,
    locked_by      bigint NOT NULL REFERENCES users (id),
    locked_at      timestamptz NOT NULL DEFAULT now(),
    unlocked_by    bigint REFERENCES users (id),
    unlocked_at    timestamptz,
    unlock_reason  text,
    CHECK ((scope = 'study' AND site_id IS NULL AND subject_id IS NULL)
        OR (scope = 'site' AND site_id IS NOT NULL AND subject_id IS NULL)
        OR (scope = 'subject' AND subject_id IS NOT NULL))
);
CREATE INDEX locks_active ON locks (scope) WHERE unlocked_at IS NULL;

GRANT SELECT, INSERT, UPDATE ON queries, verifications, signatures, locks TO casebook_app;
GRANT SELECT, INSERT ON query_messages TO casebook_app;
GRANT USAGE ON SEQUENCE queries_id_seq, query_messages_id_seq, verifications_id_seq, signatures_id_seq, locks_id_seq TO casebook_app;
