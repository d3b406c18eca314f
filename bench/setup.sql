-- Scratch tables for the pgbench baseline of issue 5, shaped like temperatures and audit_log
-- (same columns, defaults and indexes; no foreign keys and no audit trigger, as in the
-- "two-insert transaction" of shared/docs/measured.md). Re-runnable.
DROP TABLE IF EXISTS bench_temperatures, bench_audit_log;

CREATE TABLE bench_temperatures (
    id           bigserial PRIMARY KEY,
    site_id      bigint NOT NULL,
    subject_id   bigint NOT NULL,
    measured_at  timestamptz NOT NULL,
    celsius      numeric(3, 1) NOT NULL CHECK (celsius BETWEEN 30.0 AND 45.0),
    method       text NOT NULL,
    fever        boolean NOT NULL,
    version      integer NOT NULL DEFAULT 1,
    created_at   timestamptz NOT NULL DEFAULT now(),
    created_by   bigint NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    updated_by   bigint NOT NULL,
    deleted_at   timestamptz,
    deleted_by   bigint,
    deleted_reason text
);
CREATE INDEX bench_temperatures_subject ON bench_temperatures (subject_id, id);

CREATE TABLE bench_audit_log (
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
CREATE INDEX bench_audit_log_subject ON bench_audit_log (subject_id, id) WHERE subject_id IS NOT NULL;
CREATE INDEX bench_audit_log_site ON bench_audit_log (site_id, id) WHERE site_id IS NOT NULL;
CREATE INDEX bench_audit_log_record ON bench_audit_log (entity_table, record_id, id);
CREATE INDEX bench_audit_log_actor ON bench_audit_log (actor_id, id);
CREATE INDEX bench_audit_log_action ON bench_audit_log (action, id);
CREATE INDEX bench_audit_log_time ON bench_audit_log (occurred_at);

-- Variant with the foreign keys of the real temperatures table (sites, subjects, users x2):
-- bench/entry_fk.sql (LIKE copies the id default: both tables share one sequence). Every insert takes FOR KEY SHARE locks on the parent rows; when all
-- clients write for the same subject and user, those locks become MultiXacts.
DROP TABLE IF EXISTS bench_temperatures_fk;
CREATE TABLE bench_temperatures_fk (LIKE bench_temperatures INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING INDEXES,
    FOREIGN KEY (site_id) REFERENCES sites (id),
    FOREIGN KEY (subject_id) REFERENCES subjects (id),
    FOREIGN KEY (created_by) REFERENCES users (id),
    FOREIGN KEY (updated_by) REFERENCES users (id));
