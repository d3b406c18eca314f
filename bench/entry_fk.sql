-- pgbench custom script: bench/entry.sql with the temperature row going to
-- bench_temperatures_fk (foreign keys like the real table) for subject 1 and user 2, as in
-- the POST temperature benchmark (one subject, one investigator): the FK cost under contention.
-- (its id default shares bench_temperatures_id_seq). Run: see ../docs/benchmarks-history.md
-- ("Data entry", observation 4).
\set subject 1
\set tenths random(360, 410)
BEGIN;
INSERT INTO bench_temperatures_fk (site_id, subject_id, measured_at, celsius, method, fever, created_by, updated_by)
    VALUES (1, :subject, now(), :tenths / 10.0, 'rectal', :tenths > 380, 2, 2);
INSERT INTO bench_audit_log (actor_id, actor_role, action, entity_table, record_id, site_id, subject_id, new_values, request_id, client_addr)
    VALUES (2, 'investigator', 'create', 'temperatures', currval('bench_temperatures_id_seq'), 1, :subject,
            ('{"id": ' || currval('bench_temperatures_id_seq') || ', "fever": true, "method": "rectal", "celsius": 38.4, "version": 1, "created_at": "2026-11-22T10:00:00.123456Z", "created_by": 2, "deleted_at": null, "updated_at": "2026-11-22T10:00:00.123456Z", "updated_by": 2, "measured_at": "2026-10-05T08:00:00Z", "subject_code": "FR01-001", "deleted_reason": null}')::jsonb,
            '6f1c2a9e-3b4d-4c8e-9a7f-0d1e2f3a4b5c', '127.0.0.1');
COMMIT;
