-- The injection form moves onto the form engine (issue 17, docs/engine-migration.md step 5):
-- every row of `injections` becomes a `form_records` row of the form `injection`, its values
-- keyed by the item ids of the study definition (decimals as text at two digits, the time as
-- the engine stores a datetime), its per-day key as the engine writes it (`day:<study day>`)
-- and a deviating dose flagged on `dose_mg` as the dose rule flags it. Old ids map to new
-- ones in `legacy_record_ids`, through which queries, verifications and stored idempotent
-- answers are re-pointed; the audit trail is append-only and keeps its rows under the old ids.

-- The version the records are moved under: the newest publication (as migration 000020).
DO $$
DECLARE
    chosen  text := nullif(current_setting('casebook.migrate_study', true), '');
    studies text;
    v       bigint;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM injections) THEN
        RETURN;
    END IF;
    SELECT string_agg(DISTINCT study_id, ', ') INTO studies FROM study_versions;
    IF studies IS NULL THEN
        RAISE EXCEPTION 'injections hold data but no study version is published: start the previous Casebook release once (casebook serve), then migrate';
    END IF;
    IF chosen IS NULL AND studies LIKE '%,%' THEN
        RAISE EXCEPTION 'study versions of several studies exist (%): say which one the injections belong to with PGOPTIONS=''-c casebook.migrate_study=<study id>''', studies;
    END IF;
    SELECT id INTO v FROM study_versions
    WHERE chosen IS NULL OR study_id = chosen ORDER BY id DESC LIMIT 1;
    IF v IS NULL THEN
        RAISE EXCEPTION 'no study version of study % is published', chosen;
    END IF;
    IF EXISTS (SELECT 1 FROM injections
               WHERE (deleted_at IS NULL) <> (deleted_by IS NULL)
                  OR (deleted_at IS NULL) <> (deleted_reason IS NULL)) THEN
        RAISE EXCEPTION 'an injection has part of a deletion (deleted_at, deleted_by, deleted_reason): repair it first';
    END IF;
    PERFORM set_config('casebook.injection_version', v::text, true);
END
$$;

-- New ids drawn first in old-id order, so that each old id pairs with its new one for
-- certain.
CREATE TEMP TABLE moved ON COMMIT DROP AS
    SELECT id AS old_id, nextval('form_records_id_seq') AS new_id
    FROM (SELECT id FROM injections ORDER BY id) t;

INSERT INTO form_records (id, site_id, subject_id, form_id, visit_id, repeat_key,
                          study_version_id, "values", flags, version, created_at, created_by,
                          updated_at, updated_by, change_reason, deleted_at, deleted_by,
                          deleted_reason)
SELECT m.new_id, t.site_id, t.subject_id, 'injection', NULL, 'day:' || t.study_day,
       current_setting('casebook.injection_version', true)::bigint,
       -- absent, not null, when a column is empty (as the engine stores an item left out)
       jsonb_strip_nulls(jsonb_build_object(
           'study_day', t.study_day,
           -- as the engine writes a datetime: seconds, then as many digits of the fraction
           -- as it needs (3 or 6)
           'administered_at',
           CASE WHEN date_trunc('second', t.administered_at) = t.administered_at
                THEN to_char(t.administered_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
                WHEN date_trunc('milliseconds', t.administered_at) = t.administered_at
                THEN to_char(t.administered_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
                ELSE to_char(t.administered_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
           END,
           -- numeric(8, 2) and numeric(5, 2): their text has the item's two digits
           'dose_mg', t.dose_mg::text,
           'weight_kg', t.weight_kg::text,
           'route', t.route,
           'injection_site', t.injection_site,
           'lot_number', t.lot_number,
           'given', t.given,
           'not_given_reason', t.not_given_reason,
           'expected_dose_mg', t.expected_dose_mg::text,
           'protocol_deviation', t.protocol_deviation,
           'deviation_reason', t.deviation_reason)),
       -- the dose rule's flag (its query keeps its origin, dose_check)
       CASE WHEN t.protocol_deviation
            THEN jsonb_build_array(jsonb_build_object(
                     'item', 'dose_mg',
                     'message', 'protocol deviation: ' || coalesce(t.deviation_reason, '')))
            ELSE '[]'::jsonb
       END,
       t.version, t.created_at, t.created_by, t.updated_at, t.updated_by,
       -- the legacy table kept no reason: the newest correction's, else the deletion's
       coalesce((SELECT a.reason FROM audit_log a
                 WHERE a.entity_table = 'injections' AND a.record_id = t.id
                   AND a.action = 'update'
                 ORDER BY a.id DESC LIMIT 1),
                t.deleted_reason),
       t.deleted_at, t.deleted_by, t.deleted_reason
FROM injections t JOIN moved m ON m.old_id = t.id;

INSERT INTO legacy_record_ids (entity, old_id, new_id)
SELECT 'injections', old_id, new_id FROM moved;

-- The trail says where each record came from (the sealer chains these rows like any other).
INSERT INTO audit_log (actor_role, action, entity_table, record_id, site_id, subject_id,
                       old_values, new_values, request_id)
SELECT 'system:migration', 'migrate', 'form_records', m.new_id, t.site_id, t.subject_id,
       jsonb_build_object('entity', 'injections', 'id', m.old_id),
       jsonb_build_object('form', 'injection'),
       'migration:2026-12-05-000023_injection_records'
FROM moved m JOIN injections t ON t.id = m.old_id
ORDER BY m.new_id;

UPDATE queries q SET record_type = 'form_records', record_id = m.new_id
FROM moved m WHERE q.record_type = 'injections' AND q.record_id = m.old_id;
UPDATE verifications v SET record_type = 'form_records', record_id = m.new_id
FROM moved m WHERE v.record_type = 'injections' AND v.record_id = m.old_id;

-- A stored answer replays the record with its id: an injection's (recognised by its
-- fields; the key does not store its path) now has the new one.
UPDATE idempotency_keys k SET body = jsonb_set(k.body, '{id}', to_jsonb(m.new_id))
FROM moved m
WHERE jsonb_typeof(k.body) = 'object' AND k.body ? 'study_day' AND k.body ? 'dose_mg'
  AND k.body ? 'administered_at' AND jsonb_typeof(k.body -> 'id') = 'number'
  AND (k.body ->> 'id')::bigint = m.old_id;

DROP TABLE injections;
