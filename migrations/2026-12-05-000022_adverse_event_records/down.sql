-- Back to the adverse_events table: the moved records under their old ids, those entered
-- since under new ones; queries, verifications, stored answers and SAE alerts re-pointed.
-- The audit trail keeps what happened in between (its `migrate` rows and form_records rows
-- stay).
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
GRANT SELECT, INSERT, UPDATE ON adverse_events TO casebook_app;
GRANT USAGE ON SEQUENCE adverse_events_id_seq TO casebook_app;

CREATE TEMP TABLE back_aes ON COMMIT DROP AS
    SELECT r.id AS new_id, m.old_id
    FROM form_records r LEFT JOIN legacy_record_ids m
         ON m.new_id = r.id AND m.entity = 'adverse_events'
    WHERE r.form_id = 'adverse_event';
SELECT setval('adverse_events_id_seq',
              greatest(1, (SELECT max(old_id) FROM back_aes)),
              (SELECT max(old_id) FROM back_aes) IS NOT NULL);
UPDATE back_aes SET old_id = nextval('adverse_events_id_seq') WHERE old_id IS NULL;

INSERT INTO adverse_events (id, site_id, subject_id, term, meddra_code, meddra_term,
                            onset_date, end_date, grade, serious, seriousness_criteria,
                            relationship, action_taken, outcome, awareness_date, version,
                            created_at, created_by, updated_at, updated_by, deleted_at,
                            deleted_by, deleted_reason)
SELECT b.old_id, r.site_id, r.subject_id, r."values" ->> 'term', r."values" ->> 'meddra_code',
       r."values" ->> 'meddra_term', r."values" ->> 'onset_date', r."values" ->> 'end_date',
       (r."values" ->> 'grade')::smallint, coalesce((r."values" ->> 'serious')::boolean, false),
       ARRAY(SELECT jsonb_array_elements_text(coalesce(r."values" -> 'seriousness_criteria',
                                                       '[]'::jsonb))),
       r."values" ->> 'relationship', r."values" ->> 'action_taken', r."values" ->> 'outcome',
       (r."values" ->> 'awareness_date')::date, r.version, r.created_at, r.created_by,
       r.updated_at, r.updated_by, r.deleted_at, r.deleted_by, r.deleted_reason
FROM form_records r JOIN back_aes b ON b.new_id = r.id;

UPDATE queries q SET record_type = 'adverse_events', record_id = b.old_id
FROM back_aes b WHERE q.record_type = 'form_records' AND q.record_id = b.new_id;
UPDATE verifications v SET record_type = 'adverse_events', record_id = b.old_id
FROM back_aes b WHERE v.record_type = 'form_records' AND v.record_id = b.new_id;
UPDATE idempotency_keys k SET body = jsonb_set(k.body, '{id}', to_jsonb(b.old_id))
FROM back_aes b
WHERE jsonb_typeof(k.body) = 'object' AND k.body ? 'term' AND k.body ? 'onset_date'
  AND k.body ? 'awareness_date' AND jsonb_typeof(k.body -> 'id') = 'number'
  AND (k.body ->> 'id')::bigint = b.new_id;

ALTER TABLE sae_alerts ALTER COLUMN form_record_id DROP NOT NULL;
ALTER TABLE sae_alerts ADD COLUMN adverse_event_id bigint REFERENCES adverse_events (id);
UPDATE sae_alerts a SET adverse_event_id = b.old_id, form_record_id = NULL
FROM back_aes b WHERE a.form_record_id = b.new_id;
ALTER TABLE sae_alerts ADD CONSTRAINT sae_alerts_one_record
    CHECK (num_nonnulls(adverse_event_id, form_record_id) = 1);

DELETE FROM legacy_record_ids WHERE entity = 'adverse_events';
DELETE FROM form_records r USING back_aes b WHERE r.id = b.new_id;
