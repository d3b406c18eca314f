-- pgbench custom script (issue 5): bench/entry.sql's two inserts, but into the real
-- temperatures and audit_log tables (their foreign-key checks and audit queue trigger
-- included). Needs a site, subject and user: -D site=1 -D subject=1 -D uid=2
\set tenths random(360, 410)
BEGIN;
INSERT INTO temperatures (site_id, subject_id, measured_at, celsius, method, fever, version, created_at, created_by, updated_at, updated_by)
    VALUES (:site, :subject, now(), :tenths / 10.0, 'rectal', :tenths > 380, 1, now(), :uid, now(), :uid);
INSERT INTO audit_log (actor_id, actor_role, action, entity_table, record_id, site_id, subject_id, new_values, request_id, client_addr)
    VALUES (:uid, 'investigator', 'create', 'temperatures', currval('temperatures_id_seq'), :site, :subject,
            ('{"id": ' || currval('temperatures_id_seq') || ', "fever": true, "method": "rectal", "celsius": 38.4, "version": 1, "created_at": "2026-11-22T10:00:00.123456Z", "created_by": 2, "deleted_at": null, "updated_at": "2026-11-22T10:00:00.123456Z", "updated_by": 2, "measured_at": "2026-10-05T08:00:00Z", "subject_code": "FR01-001", "deleted_reason": null}')::jsonb,
            '6f1c2a9e-3b4d-4c8e-9a7f-0d1e2f3a4b5c', '127.0.0.1');
COMMIT;
