-- The temperature form moves onto the form engine (issue 17, docs/engine-migration.md step 3):
-- every row of `temperatures` becomes a `form_records` row of the form `temperature`, with
-- its values keyed by the item ids of the study definition (decimals as text, the
-- measurement time as the engine stores a datetime). Old ids map to new ones in
-- `legacy_record_ids`, through which queries, verifications and stored idempotent answers
-- are re-pointed; the audit trail is append-only and keeps its rows under the old ids.

-- Which record of a legacy table became which form record (read by the audit exports).
CREATE TABLE legacy_record_ids (
    entity  text   NOT NULL CHECK (entity IN ('injections', 'temperatures', 'adverse_events')),
    old_id  bigint NOT NULL,
    new_id  bigint NOT NULL UNIQUE REFERENCES form_records (id),
    PRIMARY KEY (entity, old_id)
);
GRANT SELECT ON legacy_record_ids TO casebook_app;

-- The version the records are moved under: the newest publication. The application
-- publishes one when it starts; a database that never ran a release with study versions
-- has none, and one that ran several studies cannot be guessed.
DO $$
DECLARE
    chosen  text := nullif(current_setting('casebook.migrate_study', true), '');
    studies text;
    v       bigint;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM temperatures) THEN
        RETURN;
    END IF;
    SELECT string_agg(DISTINCT study_id, ', ') INTO studies FROM study_versions;
    IF studies IS NULL THEN
        RAISE EXCEPTION 'temperatures hold data but no study version is published: start the previous Casebook release once (casebook serve), then migrate';
    END IF;
    IF chosen IS NULL AND studies LIKE '%,%' THEN
        RAISE EXCEPTION 'study versions of several studies exist (%): say which one the temperatures belong to with PGOPTIONS=''-c casebook.migrate_study=<study id>''', studies;
    END IF;
    SELECT id INTO v FROM study_versions
    WHERE chosen IS NULL OR study_id = chosen ORDER BY id DESC LIMIT 1;
    IF v IS NULL THEN
        RAISE EXCEPTION 'no study version of study % is published', chosen;
    END IF;
    IF EXISTS (SELECT 1 FROM temperatures
               WHERE (deleted_at IS NULL) <> (deleted_by IS NULL)
                  OR (deleted_at IS NULL) <> (deleted_reason IS NULL)) THEN
        RAISE EXCEPTION 'a temperature has part of a deletion (deleted_at, deleted_by, deleted_reason): repair it first';
    END IF;
    PERFORM set_config('casebook.temperature_version', v::text, true);
END
$$;

-- New ids drawn first in old-id order, so that each old id pairs with its new one for
-- certain.
CREATE TEMP TABLE moved ON COMMIT DROP AS
    SELECT id AS old_id, nextval('form_records_id_seq') AS new_id
    FROM (SELECT id FROM temperatures ORDER BY id) t;

INSERT INTO form_records (id, site_id, subject_id, form_id, visit_id, repeat_key,
                          study_version_id, "values", flags, version, created_at, created_by,
                          updated_at, updated_by, change_reason, deleted_at, deleted_by,
                          deleted_reason)
SELECT m.new_id, t.site_id, t.subject_id, 'temperature', NULL, NULL,
       current_setting('casebook.temperature_version', true)::bigint,
       jsonb_build_object(
           -- as the engine writes a datetime: seconds, then as many digits of the fraction
           -- as it needs (3 or 6)
           'measured_at',
           CASE WHEN date_trunc('second', t.measured_at) = t.measured_at
                THEN to_char(t.measured_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
                WHEN date_trunc('milliseconds', t.measured_at) = t.measured_at
                THEN to_char(t.measured_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
                ELSE to_char(t.measured_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
           END,
           'celsius', t.celsius::text,
           'method', t.method,
           'fever', t.fever),
       '[]', t.version, t.created_at, t.created_by, t.updated_at, t.updated_by,
       -- the legacy table kept no reason: the newest correction's, else the deletion's
       coalesce((SELECT a.reason FROM audit_log a
                 WHERE a.entity_table = 'temperatures' AND a.record_id = t.id
                   AND a.action = 'update'
                 ORDER BY a.id DESC LIMIT 1),
                t.deleted_reason),
       t.deleted_at, t.deleted_by, t.deleted_reason
FROM temperatures t JOIN moved m ON m.old_id = t.id;

INSERT INTO legacy_record_ids (entity, old_id, new_id)
SELECT 'temperatures', old_id, new_id FROM moved;

-- The trail says where each record came from (the sealer chains these rows like any other).
INSERT INTO audit_log (actor_role, action, entity_table, record_id, site_id, subject_id,
                       old_values, new_values, request_id)
SELECT 'system:migration', 'migrate', 'form_records', m.new_id, t.site_id, t.subject_id,
       jsonb_build_object('entity', 'temperatures', 'id', m.old_id),
       jsonb_build_object('form', 'temperature'),
       'migration:2026-12-05-000020_temperature_records'
FROM moved m JOIN temperatures t ON t.id = m.old_id
ORDER BY m.new_id;

UPDATE queries q SET record_type = 'form_records', record_id = m.new_id
FROM moved m WHERE q.record_type = 'temperatures' AND q.record_id = m.old_id;
UPDATE verifications v SET record_type = 'form_records', record_id = m.new_id
FROM moved m WHERE v.record_type = 'temperatures' AND v.record_id = m.old_id;

-- A stored answer replays the record with its id: a temperature's (recognised by its
-- fields; the key does not store its path) now has the new one.
UPDATE idempotency_keys k SET body = jsonb_set(k.body, '{id}', to_jsonb(m.new_id))
FROM moved m
WHERE jsonb_typeof(k.body) = 'object' AND k.body ? 'celsius' AND k.body ? 'measured_at'
  AND k.body ? 'method' AND jsonb_typeof(k.body -> 'id') = 'number'
  AND (k.body ->> 'id')::bigint = m.old_id;

DROP FUNCTION casebook_enter_temperatures(bigint[], uuid[], integer[], text[], timestamptz[],
                                          numeric[], text[], boolean[], timestamptz[], jsonb[],
                                          text[], text[], text[], text);
DROP FUNCTION casebook_create_temperatures(bigint[], bigint[], bigint[], timestamptz[],
                                           numeric[], text[], boolean[], bigint[],
                                           timestamptz[], text[], jsonb[], text[], text[],
                                           text);
DROP TABLE temperatures;
