-- pgbench custom script (step 7): the checked write of one new record of an engine form as
-- the server sends it (casebook_enter_form_records, migration 000021): Kawasaki's disease
-- activity at the unscheduled visit, one entry a call (no batching). Needs the
-- investigator's id, a live session of theirs, their token version, a consented subject's
-- code and the running definition's study and hash:
-- -D uid=2 -D sid=<sessions.id> -D ver=1 -D code=FR01-001 -D study=KAWASAKI -D sha=<sha256>
-- -D vals=<the values as jsonb> -D audit=<the audit row's new values> (JSON in the script
-- itself is read as pgbench variables)
SELECT n, id, definition_version FROM casebook_enter_form_records(
    ARRAY[(:uid)::bigint], ARRAY[(:sid)::uuid], ARRAY[(:ver)::integer], ARRAY[(:code)::text],
    ARRAY['disease_activity'], ARRAY['UNS'], ARRAY[NULL::text], ARRAY[NULL::timestamptz],
    ARRAY[(:vals)::jsonb],
    ARRAY[now()],
    ARRAY[(:audit)::jsonb],
    ARRAY['r'], ARRAY[NULL::text], ARRAY['2026-10-05'::date], ARRAY['2026-10-05'::date],
    ARRAY[NULL::timestamptz], ARRAY[false], ARRAY[1], ARRAY['2026-10-05'::date],
    ARRAY['2026-10-05'::date], ARRAY[]::integer[], ARRAY[]::timestamptz[],
    ARRAY['investigator'], (:study)::text, (:sha)::text, NULL);
