-- Adverse events. Dates the site knows only partly ("2026", "2026-11") are kept as partial
-- ISO 8601 text, as SDTM --DTC and ODM partial dates carry them.
CREATE TABLE adverse_events (
    id                    bigserial PRIMARY KEY,
    site_id               bigint NOT NULL REFERENCES sites (id),
    subject_id            bigint NOT NULL REFERENCES subjects (id),
    term                  text NOT NULL,
    meddra_code           text CHECK (meddra_code ~ '^[0-9]{8}$'),
    meddra_term           text,
    onset_date            text NOT NULL CHECK (onset_date ~ '^[0-9]{4}(-[0-9]{2}(-[0-9]{2})?)?$'),
    end_date              text CHECK (end_date ~ '^[0-9]{4}(-[0-9]{2}(-[0-9]{2})?)?$'),
    grade                 smallint NOT NULL CHECK (grade BETWEEN 1 AND 5),
    serious               boolean NOT NULL,
    seriousness_criteria  text[] NOT NULL DEFAULT '{}',
    relationship          text NOT NULL CHECK (relationship IN ('not_related', 'unlikely', 'possible', 'probable', 'definite')),
    action_taken          text NOT NULL CHECK (action_taken IN ('none', 'dose_reduced', 'interrupted', 'withdrawn', 'not_applicable')),
    outcome               text NOT NULL CHECK (outcome IN ('recovered', 'recovering', 'not_recovered', 'recovered_with_sequelae', 'fatal', 'unknown')),
    awareness_date        date NOT NULL,
    version               integer NOT NULL DEFAULT 1,
    created_at            timestamptz NOT NULL DEFAULT now(),
    created_by            bigint NOT NULL REFERENCES users (id),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    updated_by            bigint NOT NULL REFERENCES users (id),
    deleted_at            timestamptz,
    deleted_by            bigint REFERENCES users (id),
    deleted_reason        text,
    CHECK (serious = (cardinality(seriousness_criteria) > 0))
);
CREATE INDEX adverse_events_subject ON adverse_events (subject_id, id);

-- Serious adverse events waiting to reach the sponsor's safety desk: written in the same
-- transaction as the event, delivered by a worker (FOR UPDATE SKIP LOCKED, so that several
-- instances never deliver one alert twice).
CREATE TABLE sae_alerts (
    id                bigserial PRIMARY KEY,
    adverse_event_id  bigint NOT NULL REFERENCES adverse_events (id),
    site_id           bigint NOT NULL REFERENCES sites (id),
    subject_id        bigint NOT NULL REFERENCES subjects (id),
    payload           jsonb NOT NULL,
    status            text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts          integer NOT NULL DEFAULT 0,
    next_attempt_at   timestamptz NOT NULL DEFAULT now(),
    delivered_at      timestamptz,
    last_error        text,
    created_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sae_alerts_due ON sae_alerts (next_attempt_at) WHERE status = 'pending';

CREATE TABLE sae_alert_attempts (
    id            bigserial PRIMARY KEY,
    alert_id      bigint NOT NULL REFERENCES sae_alerts (id),
    attempted_at  timestamptz NOT NULL DEFAULT now(),
    http_status   integer,
    error         text,
    duration_ms   integer NOT NULL
);
CREATE INDEX sae_alert_attempts_alert ON sae_alert_attempts (alert_id, id);

GRANT SELECT, INSERT, UPDATE ON adverse_events, sae_alerts TO casebook_app;
GRANT SELECT, INSERT ON sae_alert_attempts TO casebook_app;
GRANT USAGE ON SEQUENCE adverse_events_id_seq, sae_alerts_id_seq, sae_alert_attempts_id_seq TO casebook_app;
