-- pgbench custom script (issue 5): the checked write of one new temperature as the server
-- sends it (casebook_enter_temperatures, migration 000008). Needs the investigator's id,
-- a live session of theirs, their token version and a consented subject's code:
-- -D uid=2 -D sid=<sessions.id> -D ver=1 -D code=FR01-001
SELECT n, id FROM casebook_enter_temperatures(ARRAY[(:uid)::bigint], ARRAY[(:sid)::uuid], ARRAY[(:ver)::integer], ARRAY[(:code)::text], ARRAY['2026-10-05T08:00:00Z']::timestamptz[], ARRAY[37.0]::numeric[], ARRAY['rectal'], ARRAY[false], ARRAY[now()], ARRAY['{"celsius":37.0}'::jsonb], ARRAY['r'], ARRAY[NULL::text], ARRAY['investigator'], NULL);
