-- Issue 8 export benchmark data: :rows temperature rows (default 1,000,000 via export.sh),
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
    INSERT INTO temperatures (site_id, subject_id, measured_at, celsius, method, fever,
                              created_by, updated_by)
    SELECT s.site_id, s.id,
           timestamptz '2026-10-01 00:00:00Z' + (g / (SELECT count(*) FROM bench_subjects))
               * interval '1 minute',
           (36.0 + (g % 50) / 10.0)::numeric(3, 1),
           (ARRAY['axillary', 'rectal', 'tympanic', 'oral'])[1 + g % 4],
           36.0 + (g % 50) / 10.0 >= 38.0,
           (SELECT min(id) FROM users WHERE role = 'investigator'),
           (SELECT min(id) FROM users WHERE role = 'investigator')
    FROM generate_series(0, :rows - 1) g
    JOIN bench_subjects s ON s.n = g % (SELECT count(*) FROM bench_subjects)
    RETURNING *
)
SELECT * FROM ins;
INSERT INTO audit_log (actor_id, actor_role, action, entity_table, record_id, site_id,
                       subject_id, new_values, request_id)
SELECT t.created_by, 'investigator', 'create', 'temperatures', t.id, t.site_id, t.subject_id,
       jsonb_build_object('id', t.id, 'subject_code', s.subject_code,
           'measured_at', to_char(t.measured_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
           'celsius', t.celsius, 'method', t.method, 'fever', t.fever, 'version', t.version,
           'created_at', t.created_at, 'created_by', t.created_by,
           'updated_at', t.updated_at, 'updated_by', t.updated_by),
       'bench:export_setup'
FROM bench_new t JOIN subjects s ON s.id = t.subject_id
ORDER BY t.id;
COMMIT;
ANALYZE temperatures;
ANALYZE audit_log;
SELECT count(*) AS temperatures FROM temperatures;
