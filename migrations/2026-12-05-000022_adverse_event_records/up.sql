-- The adverse event form moves onto the form engine (issue 17, docs/engine-migration.md
-- step 4): every row of `adverse_events` becomes a `form_records` row of the form
-- `adverse_event`, its values keyed by the item ids of the study definition (dates as
-- `YYYY-MM-DD`, partial dates as entered, the seriousness criteria only when there are any).
-- Old ids map to new ones in `legacy_record_ids` (migration 000020), through which queries,
-- verifications, stored idempotent answers and SAE alerts are re-pointed; the audit trail is
-- append-only and keeps its rows under the old ids.

DO $$
DECLARE
    chosen  text := nullif(current_setting('casebook.migrate_study', true), '');
    studies text;
    v       bigint;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM adverse_events) THEN
        RETURN;
    END IF;
    SELECT string_agg(DISTINCT study_id, ', ') INTO studies FROM study_versions;
    IF studies IS NULL THEN
        RAISE EXCEPTION 'adverse_events hold data but no study version is published: start the previous Casebook release once (casebook serve), then migrate';
    END IF;
    IF chosen IS NULL AND studies LIKE '%,%' THEN
        RAISE EXCEPTION 'study versions of several studies exist (%): say which one the adverse events belong to with PGOPTIONS=''-c casebook.migrate_study=<study id>''', studies;
    END IF;
    SELECT id INTO v FROM study_versions
    WHERE chosen IS NULL OR study_id = chosen ORDER BY id DESC LIMIT 1;
    IF v IS NULL THEN
        RAISE EXCEPTION 'no study version of study % is published', chosen;
    END IF;
    IF EXISTS (SELECT 1 FROM adverse_events
               WHERE (deleted_at IS NULL) <> (deleted_by IS NULL)
                  OR (deleted_at IS NULL) <> (deleted_reason IS NULL)) THEN
        RAISE EXCEPTION 'an adverse event has part of a deletion (deleted_at, deleted_by, deleted_reason): repair it first';
    END IF;
    PERFORM set_config('casebook.adverse_event_version', v::text, true);
END
$$;

-- New ids drawn first in old-id order, so that each old id pairs with its new one for
-- certain.
CREATE TEMP TABLE moved_aes ON COMMIT DROP AS
    SELECT id AS old_id, nextval('form_records_id_seq') AS new_id
    FROM (SELECT id FROM adverse_events ORDER BY id) e;

INSERT INTO form_records (id, site_id, subject_id, form_id, visit_id, repeat_key,
                          study_version_id, "values", flags, version, created_at, created_by,
                          updated_at, updated_by, change_reason, deleted_at, deleted_by,
                          deleted_reason)
SELECT m.new_id, e.site_id, e.subject_id, 'adverse_event', NULL, NULL,
       current_setting('casebook.adverse_event_version', true)::bigint,
       -- absent items are absent keys (the engine stores no nulls)
       jsonb_strip_nulls(jsonb_build_object(
           'term', e.term,
           'meddra_code', e.meddra_code,
           'meddra_term', e.meddra_term,
           'onset_date', e.onset_date,
           'end_date', e.end_date,
           'grade', e.grade,
           'serious', e.serious,
           -- an empty list of codes is no value (engine-migration c.19)
           'seriousness_criteria', CASE WHEN cardinality(e.seriousness_criteria) > 0
                                        THEN to_jsonb(e.seriousness_criteria) END,
           'relationship', e.relationship,
           'action_taken', e.action_taken,
           'outcome', e.outcome,
           'awareness_date', to_char(e.awareness_date, 'YYYY-MM-DD'))),
       '[]', e.version, e.created_at, e.created_by, e.updated_at, e.updated_by,
       -- the legacy table kept no reason: the newest correction's, else the deletion's
       coalesce((SELECT a.reason FROM audit_log a
                 WHERE a.entity_table = 'adverse_events' AND a.record_id = e.id
                   AND a.action = 'update'
                 ORDER BY a.id DESC LIMIT 1),
                e.deleted_reason),
       e.deleted_at, e.deleted_by, e.deleted_reason
FROM adverse_events e JOIN moved_aes m ON m.old_id = e.id;

INSERT INTO legacy_record_ids (entity, old_id, new_id)
SELECT 'adverse_events', old_id, new_id FROM moved_aes;

-- The trail says where each record came from (the sealer chains these rows like any other).
INSERT INTO audit_log (actor_role, action, entity_table, record_id, site_id, subject_id,
                       old_values, new_values, request_id)
SELECT 'system:migration', 'migrate', 'form_records', m.new_id, e.site_id, e.subject_id,
       jsonb_build_object('entity', 'adverse_events', 'id', m.old_id),
       jsonb_build_object('form', 'adverse_event'),
       'migration:2026-12-05-000022_adverse_event_records'
FROM moved_aes m JOIN adverse_events e ON e.id = m.old_id
ORDER BY m.new_id;

UPDATE queries q SET record_type = 'form_records', record_id = m.new_id
FROM moved_aes m WHERE q.record_type = 'adverse_events' AND q.record_id = m.old_id;
UPDATE verifications v SET record_type = 'form_records', record_id = m.new_id
FROM moved_aes m WHERE v.record_type = 'adverse_events' AND v.record_id = m.old_id;

-- A stored answer replays the record with its id: an adverse event's (recognised by its
-- fields; the key does not store its path) now has the new one.
UPDATE idempotency_keys k SET body = jsonb_set(k.body, '{id}', to_jsonb(m.new_id))
FROM moved_aes m
WHERE jsonb_typeof(k.body) = 'object' AND k.body ? 'term' AND k.body ? 'onset_date'
  AND k.body ? 'awareness_date' AND jsonb_typeof(k.body -> 'id') = 'number'
  AND (k.body ->> 'id')::bigint = m.old_id;

-- An alert points at the form record. The old id is not kept beside it: the payload keeps
-- the `adverse_event_id` the safety desk received, and legacy_record_ids maps it; a column
-- pointing at a dropped table would be a second, dangling way to name the record.
ALTER TABLE sae_alerts DROP CONSTRAINT sae_alerts_one_record;
ALTER TABLE sae_alerts DROP CONSTRAINT sae_alerts_adverse_event_id_fkey;
UPDATE sae_alerts a SET form_record_id = m.new_id
FROM moved_aes m WHERE a.adverse_event_id = m.old_id;
ALTER TABLE sae_alerts DROP COLUMN adverse_event_id;
ALTER TABLE sae_alerts ALTER COLUMN form_record_id SET NOT NULL;

DROP TABLE adverse_events;
