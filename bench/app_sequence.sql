-- pgbench custom script: the statements the server sends for one POST temperature (taken
-- from PostgreSQL's statement log, commit a9a0375), against the real tables of the scratch
-- database: the caller lookup (2 statements, no transaction), then BEGIN, subject, consents,
-- INSERT temperature RETURNING *, INSERT audit_log (its trigger queues the row for the
-- sealer), COMMIT. 8 round trips. It shows what the database alone costs for the
-- server's sequence, without HTTP, JSON, JWT or the pool.
-- Variables (bench/entry.sh passes them with -D): :uid (user id), :sid (a live
-- session id of that user), :subject (subject id), :code (subject code).
\set tenths random(360, 410)
SELECT "users"."email", "users"."name", "users"."role", "users"."active", "users"."token_version" FROM ("users" INNER JOIN "sessions" ON ("sessions"."user_id" = "users"."id")) WHERE ((("users"."id" = :uid) AND ("sessions"."id" = :sid)) AND ("sessions"."revoked_at" IS NULL)) LIMIT 1;
SELECT "user_sites"."site_id" FROM "user_sites" WHERE ("user_sites"."user_id" = :uid) ORDER BY "user_sites"."site_id";
BEGIN;
SELECT "subjects"."id", "subjects"."site_id", "subjects"."subject_code", "subjects"."weight_kg", "sites"."time_zone" FROM ("subjects" INNER JOIN "sites" ON ("subjects"."site_id" = "sites"."id")) WHERE ((("subjects"."subject_code" = :code) AND ("subjects"."deleted_at" IS NULL)) AND ("subjects"."site_id" = ANY('{1}'))) LIMIT 1;
SELECT "consents"."signed_on", "consents"."withdrawn_on" FROM "consents" WHERE (("consents"."subject_id" = :subject) AND ("consents"."deleted_at" IS NULL));
INSERT INTO "temperatures" ("site_id", "subject_id", "measured_at", "celsius", "method", "fever", "created_by", "updated_by") VALUES (1, :subject, '2026-10-05 08:00:00+00', :tenths / 10.0, 'rectal', :tenths > 380, :uid, :uid) RETURNING "temperatures"."id", "temperatures"."site_id", "temperatures"."subject_id", "temperatures"."measured_at", "temperatures"."celsius", "temperatures"."method", "temperatures"."fever", "temperatures"."version", "temperatures"."created_at", "temperatures"."created_by", "temperatures"."updated_at", "temperatures"."updated_by", "temperatures"."deleted_at", "temperatures"."deleted_by", "temperatures"."deleted_reason";
INSERT INTO "audit_log" ("actor_id", "actor_role", "action", "entity_table", "record_id", "site_id", "subject_id", "old_values", "new_values", "reason", "request_id", "client_addr") VALUES (:uid, 'investigator', 'create', 'temperatures', currval('temperatures_id_seq'), 1, :subject, NULL, ('{"id": ' || currval('temperatures_id_seq') || ', "fever": true, "method": "rectal", "celsius": 38.4, "version": 1, "created_at": "2026-11-22T10:00:00.123456Z", "created_by": 2, "deleted_at": null, "updated_at": "2026-11-22T10:00:00.123456Z", "updated_by": 2, "measured_at": "2026-10-05T08:00:00Z", "subject_code": "FR01-001", "deleted_reason": null}')::jsonb, NULL, '6f1c2a9e-3b4d-4c8e-9a7f-0d1e2f3a4b5c', '127.0.0.1') RETURNING "audit_log"."id";
COMMIT;
