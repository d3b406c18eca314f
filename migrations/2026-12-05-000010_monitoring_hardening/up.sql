-- At most one active lock per target and one current verification per record: the checks
-- in the handlers read before they insert, so concurrent identical requests all passed them
-- (10 parallel identical locks left 5 active). The index makes the database refuse the
-- rest; the handlers answer 409.

-- Duplicates left by that race: the oldest stays, the others are closed (and audited), which
-- changes nothing that any check reads.
WITH dup AS (
    SELECT id, min(id) OVER (PARTITION BY scope, site_id, subject_id) AS kept
    FROM locks WHERE unlocked_at IS NULL
), closed AS (
    UPDATE locks l SET unlocked_at = now(),
        unlock_reason = 'duplicate of lock ' || dup.kept || ', closed by a migration'
    FROM dup WHERE l.id = dup.id AND dup.id <> dup.kept
    RETURNING l.id, l.site_id, l.subject_id, l.unlock_reason
)
INSERT INTO audit_log (actor_role, action, entity_table, record_id, site_id, subject_id,
                       old_values, new_values, reason, request_id)
SELECT 'system:migration', 'unlock', 'locks', id, site_id, subject_id,
       '{"active": true}', '{"active": false}', unlock_reason,
       'migration:2026-12-05-000010_monitoring_hardening'
FROM closed;

WITH dup AS (
    SELECT id, min(id) OVER (PARTITION BY record_type, record_id) AS kept
    FROM verifications WHERE cleared_at IS NULL
), cleared AS (
    UPDATE verifications v SET cleared_at = now()
    FROM dup WHERE v.id = dup.id AND dup.id <> dup.kept
    RETURNING v.id, v.site_id, v.subject_id, v.record_type, v.record_id, dup.kept
)
INSERT INTO audit_log (actor_role, action, entity_table, record_id, site_id, subject_id,
                       new_values, reason, request_id)
SELECT 'system:migration', 'sdv_cleared', 'verifications', id, site_id, subject_id,
       jsonb_build_object('record_type', record_type, 'record_id', record_id),
       'duplicate of verification ' || kept,
       'migration:2026-12-05-000010_monitoring_hardening'
FROM cleared;

CREATE UNIQUE INDEX locks_one_active_study ON locks ((true))
    WHERE unlocked_at IS NULL AND scope = 'study';
CREATE UNIQUE INDEX locks_one_active_site ON locks (site_id)
    WHERE unlocked_at IS NULL AND scope = 'site';
CREATE UNIQUE INDEX locks_one_active_subject ON locks (subject_id)
    WHERE unlocked_at IS NULL AND scope = 'subject';
CREATE UNIQUE INDEX verifications_one_current ON verifications (record_type, record_id)
    WHERE cleared_at IS NULL;
