-- pgbench custom script: the checked write of one new record of an engine form as the
-- server sends it (casebook_enter_form_records, migration 000024): Kawasaki's temperature,
-- one entry a call (no batching), so that the statement's own cost can be set beside
-- bench/entry.sql's two inserts. Needs the investigator's id, a live session of theirs, their
-- token version, a consented subject's code and the running definition's study and hash:
-- -D uid=2 -D sid=<sessions.id> -D ver=1 -D code=FR01-001 -D study=KAWASAKI -D sha=<sha256>
-- -D vals=<the values as jsonb> -D audit=<the audit row's new values> (JSON in the script
-- itself is read as pgbench variables)
SELECT n, id, definition_version FROM casebook_enter_form_records(
    ARRAY[(:uid)::bigint], ARRAY[(:sid)::uuid], ARRAY[(:ver)::integer], ARRAY[(:code)::text],
    ARRAY['temperature'], ARRAY[NULL::text], ARRAY[NULL::text], ARRAY[NULL::timestamptz],
    ARRAY[(:vals)::jsonb],
    ARRAY[now()],
    ARRAY[(:audit)::jsonb],
    ARRAY['r'], ARRAY[NULL::text], ARRAY[NULL::date], ARRAY[NULL::date],
    ARRAY['2026-10-05T08:00:00Z'::timestamptz], ARRAY[false], ARRAY[]::integer[],
    ARRAY[]::date[], ARRAY[]::date[], ARRAY[1], ARRAY['2026-10-05T08:00:00Z'::timestamptz],
    ARRAY['temperatures'], ARRAY['2026-10-05T08:00:00Z'], ARRAY['injection'],
    ARRAY['administered_at'], ARRAY['investigator'], (:study)::text, (:sha)::text, NULL);
