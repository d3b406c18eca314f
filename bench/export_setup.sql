-- Issue 8 export benchmark data: :rows temperature records (default 1,000,000 via export.sh),
-- spread over the subjects already enrolled, each with its `create` audit row shaped like
-- the API's (new_values = the record as the API returns it), in two INSERT ... SELECT
-- statements. Run on a scratch database after `casebook seed-demo` and a few subjects:
--   psql "$DATABASE_URL" -v rows=1000000 -f bench/export_setup.sql
-- The audit rows land in audit_unsealed (trigger); the server's sealer chains them after.
\set ON_ERROR_STOP 1
BEGIN;
CREATE TEMP TABLE bench_subjects ON COMMIT DROP AS
    SELECT row_number() OVER (ORDER BY id) - 1 AS n, id, site_id, subject_code
    FROM subjects WHERE deleted_at IS NULL;
CREATE TEMP TABLE bench_new ON COMMIT DROP AS
WITH ins AS (
    -- temperatures are records of the form `temperature` (migration 000020)
    INSERT INTO form_records (site_id, subject_id, form_id, study_version_id, "values",
                              created_by, updated_by)
    SELECT s.site_id, s.id, 'temperature', (SELECT max(id) FROM study_versions),
           jsonb_build_object(
               'measured_at', to_char((timestamptz '2026-10-01 00:00:00Z'
                   + (g / (SELECT count(*) FROM bench_subjects)) * interval '1 minute')
                   AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
               'celsius', to_char(36.0 + (g % 50) / 10.0, 'FM990.0'),
               'method', (ARRAY['axillary', 'rectal', 'tympanic', 'oral'])[1 + g % 4],
               'fever', 36.0 + (g % 50) / 10.0 >= 38.0),
           (SELECT min(id) FROM users WHERE role = 'investigator'),
           (SELECT min(id) FROM users WHERE role = 'investigator')
    FROM generate_series(0, :rows - 1) g
    JOIN bench_subjects s ON s.n = g % (SELECT count(*) FROM bench_subjects)
    RETURNING *
)
SELECT * FROM ins;
INSERT INTO audit_log (actor_id, actor_role, action, entity_table, record_id, site_id,
                       subject_id, new_values, request_id)
SELECT t.created_by, 'investigator', 'create', 'form_records', t.id, t.site_id, t.subject_id,
       jsonb_build_object('id', t.id, 'subject_code', s.subject_code, 'form', t.form_id,
           'values', t."values", 'version', t.version,
           'created_at', t.created_at, 'created_by', t.created_by,
           'updated_at', t.updated_at, 'updated_by', t.updated_by),
       'bench:export_setup'
FROM bench_new t JOIN subjects s ON s.id = t.subject_id
ORDER BY t.id;
COMMIT;
ANALYZE form_records;
ANALYZE audit_log;
SELECT count(*) AS temperatures FROM form_records WHERE form_id = 'temperature';
