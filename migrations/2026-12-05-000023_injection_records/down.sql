-- Back to the injections table: the moved records under their old ids, those entered since
-- under new ones; queries, verifications and stored answers re-pointed. The audit trail
-- keeps what happened in between (its `migrate` rows and form_records rows stay).
CREATE TABLE injections (
    id                  bigserial PRIMARY KEY,
    site_id             bigint NOT NULL REFERENCES sites (id),
    subject_id          bigint NOT NULL REFERENCES subjects (id),
    study_day           integer NOT NULL CHECK (study_day >= 1),
    administered_at     timestamptz NOT NULL,
    dose_mg             numeric(8, 2) NOT NULL CHECK (dose_mg >= 0),
    weight_kg           numeric(5, 2) NOT NULL CHECK (weight_kg > 0),
    route               text NOT NULL CHECK (route = 'subcutaneous'),
    injection_site      text NOT NULL,
    lot_number          text NOT NULL,
    given               boolean NOT NULL,
    not_given_reason    text,
    expected_dose_mg    numeric(8, 2) NOT NULL,
    protocol_deviation  boolean NOT NULL DEFAULT false,
    deviation_reason    text,
    version             integer NOT NULL DEFAULT 1,
    created_at          timestamptz NOT NULL DEFAULT now(),
    created_by          bigint NOT NULL REFERENCES users (id),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    updated_by          bigint NOT NULL REFERENCES users (id),
    deleted_at          timestamptz,
    deleted_by          bigint REFERENCES users (id),
    deleted_reason      text,
    CHECK (given OR not_given_reason IS NOT NULL)
);
CREATE INDEX injections_subject ON injections (subject_id, id);
-- one injection a study day; a record marked entered in error frees its day
CREATE UNIQUE INDEX injections_one_a_day ON injections (subject_id, study_day) WHERE deleted_at IS NULL;
GRANT SELECT, INSERT, UPDATE ON injections TO casebook_app;
GRANT USAGE ON SEQUENCE injections_id_seq TO casebook_app;

CREATE TEMP TABLE back ON COMMIT DROP AS
    SELECT r.id AS new_id, m.old_id
    FROM form_records r LEFT JOIN legacy_record_ids m
         ON m.new_id = r.id AND m.entity = 'injections'
    WHERE r.form_id = 'injection';
SELECT setval('injections_id_seq',
              greatest(1, (SELECT max(old_id) FROM back)), (SELECT max(old_id) FROM back) IS NOT NULL);
UPDATE back SET old_id = nextval('injections_id_seq') WHERE old_id IS NULL;

INSERT INTO injections (id, site_id, subject_id, study_day, administered_at, dose_mg, weight_kg,
                        route, injection_site, lot_number, given, not_given_reason,
                        expected_dose_mg, protocol_deviation, deviation_reason, version,
                        created_at, created_by, updated_at, updated_by, deleted_at, deleted_by,
                        deleted_reason)
SELECT b.old_id, r.site_id, r.subject_id, (r."values" ->> 'study_day')::integer,
       (r."values" ->> 'administered_at')::timestamptz, (r."values" ->> 'dose_mg')::numeric,
       (r."values" ->> 'weight_kg')::numeric, coalesce(r."values" ->> 'route', 'subcutaneous'),
       r."values" ->> 'injection_site', r."values" ->> 'lot_number',
       (r."values" ->> 'given')::boolean, r."values" ->> 'not_given_reason',
       coalesce((r."values" ->> 'expected_dose_mg')::numeric, 0),
       coalesce((r."values" ->> 'protocol_deviation')::boolean, false),
       r."values" ->> 'deviation_reason', r.version, r.created_at, r.created_by, r.updated_at,
       r.updated_by, r.deleted_at, r.deleted_by, r.deleted_reason
FROM form_records r JOIN back b ON b.new_id = r.id;

UPDATE queries q SET record_type = 'injections', record_id = b.old_id
FROM back b WHERE q.record_type = 'form_records' AND q.record_id = b.new_id;
UPDATE verifications v SET record_type = 'injections', record_id = b.old_id
FROM back b WHERE v.record_type = 'form_records' AND v.record_id = b.new_id;
UPDATE idempotency_keys k SET body = jsonb_set(k.body, '{id}', to_jsonb(b.old_id))
FROM back b
WHERE jsonb_typeof(k.body) = 'object' AND k.body ? 'study_day' AND k.body ? 'dose_mg'
  AND k.body ? 'administered_at' AND jsonb_typeof(k.body -> 'id') = 'number'
  AND (k.body ->> 'id')::bigint = b.new_id;

DELETE FROM legacy_record_ids WHERE entity = 'injections';
DELETE FROM form_records r USING back b WHERE r.id = b.new_id;
