-- casebook_enter_form_records (migration 000024) looks up the doses that a fever's day must
-- not precede one dose form at a time, each with the subject and the form in the index
-- condition. As 000024 wrote it (`form_id = ANY (p_dose_form)`), the plan PostgreSQL cached in
-- a connection while form_records was small kept only the subject in the index condition:
-- each entry then read every record of its subject, and entry fell from about 3,000 to 44
-- requests a second as one subject's temperatures grew to 100,000 (bench/entry.sh, session 9).
-- Its plan is now made once per connection, with index scans only (see the SET clauses).
-- Otherwise as 000024.
CREATE OR REPLACE FUNCTION casebook_enter_form_records(
    p_user bigint[], p_session uuid[], p_token_version integer[], p_code text[],
    p_form text[], p_visit text[], p_repeat_key text[], p_key_at timestamptz[],
    p_values jsonb[], p_now timestamptz[], p_audit jsonb[], p_request_id text[],
    p_client_addr text[], p_rec_lo date[], p_rec_hi date[], p_rec_at timestamptz[],
    p_after_withdrawal boolean[],
    p_day_n integer[], p_day_lo date[], p_day_hi date[], p_at_n integer[], p_at timestamptz[],
    p_changed text[], p_fever_at text[],
    p_dose_form text[], p_dose_at text[],
    p_roles text[], p_study text, p_sha256 text, p_lock_timeout text)
RETURNS TABLE (n bigint, id bigint, definition_version integer)
LANGUAGE plpgsql VOLATILE
-- One plan per connection, made at its first call and kept: planning this statement afresh
-- at every call (PostgreSQL's choice for it) was 46 % of the batch leader's CPU (perf,
-- session 9). A batch is at most database.batch_max_size entries, so the plan that suits it
-- whatever the tables' sizes is index lookups in nested loops; a plan made while `sessions`
-- or `form_records` was small would otherwise scan or hash them, and keep doing so as they
-- grow (seen: a hash join over the subject's records at every entry).
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
SET enable_hashjoin = off
SET enable_mergejoin = off
AS $$
BEGIN
    IF p_lock_timeout IS NOT NULL THEN
        -- local: ends with the statement's own transaction
        PERFORM set_config('lock_timeout', p_lock_timeout, true);
    END IF;
    -- Hold the subjects against a signature until this transaction ends, as every write
    -- does (src/services/guard.rs), in id order so that two batches never deadlock. The
    -- query below is a new statement with a new snapshot: it sees a signature committed
    -- while this one waited, and invalidates it.
    PERFORM 1 FROM subjects sj
    WHERE sj.subject_code = ANY (p_code) AND sj.deleted_at IS NULL
    ORDER BY sj.id
    FOR KEY SHARE;
    RETURN QUERY
    WITH running AS MATERIALIZED (
        -- the version records are entered under (src/db/study_versions.rs `running`)
        SELECT v.id, v.version FROM study_versions v
        WHERE v.study_id = p_study AND v.sha256 = p_sha256
        ORDER BY v.version DESC LIMIT 1
    ),
    entry AS MATERIALIZED (
        SELECT r.n, r.usr, u.role, w.subject_id, w.site_id, r.form, r.visit,
               coalesce(r.repeat_key,
                        'date:' || to_char(r.key_at AT TIME ZONE w.time_zone, 'YYYY-MM-DD')) AS repeat_key,
               rv.id AS version_id, rv.version AS version_number, r.vals, r.now, r.audit,
               r.request_id, r.client_addr, r.changed,
               nextval('form_records_id_seq'::regclass) AS new_id
        FROM unnest(p_user, p_session, p_token_version, p_code, p_form, p_visit, p_repeat_key,
                    p_key_at, p_values, p_now, p_audit, p_request_id, p_client_addr, p_rec_lo,
                    p_rec_hi, p_rec_at, p_after_withdrawal, p_changed, p_fever_at)
             WITH ORDINALITY AS r(usr, sess, ver, code, form, visit, repeat_key, key_at, vals,
                                  now, audit, request_id, client_addr, rec_lo, rec_hi, rec_at,
                                  after_withdrawal, changed, fever_at, n)
        CROSS JOIN running rv
        -- the caller as casebook_caller and the Caller extractor confirm it
        JOIN users u ON u.id = r.usr AND u.active AND u.token_version = r.ver
                    AND u.role = ANY (p_roles)
        JOIN sessions s ON s.id = r.sess AND s.user_id = u.id AND s.revoked_at IS NULL
        JOIN LATERAL (
            SELECT sj.id AS subject_id, sj.site_id, st.time_zone,
                   (r.now AT TIME ZONE st.time_zone)::date AS today,
                   -- src/domain/time.rs DateFloor
                   greatest(date '1900-01-01', (sj.birth_year_month || '-01')::date) AS floor,
                   (SELECT min(c.signed_on) FROM consents c
                     WHERE c.subject_id = sj.id AND c.deleted_at IS NULL) AS first_signed,
                   (SELECT min(c.withdrawn_on) FROM consents c
                     WHERE c.subject_id = sj.id AND c.deleted_at IS NULL) AS withdrawn_on
            FROM subjects sj JOIN sites st ON st.id = sj.site_id
            WHERE sj.subject_code = r.code AND sj.deleted_at IS NULL
              AND st.active
              AND sj.site_id IN (SELECT us.site_id FROM user_sites us WHERE us.user_id = u.id)
              AND NOT EXISTS (SELECT 1 FROM locks l WHERE l.unlocked_at IS NULL
                    AND (l.scope = 'study' OR (l.scope = 'site' AND l.site_id = sj.site_id)
                         OR (l.scope = 'subject' AND l.subject_id = sj.id)))
        ) w ON true
        -- dates and partial dates (lo..hi: the days one can mean): refused only when every
        -- day is before the floor, or after the site's today
        WHERE NOT EXISTS (SELECT 1 FROM unnest(p_day_n, p_day_lo, p_day_hi) AS d(n, lo, hi)
                          WHERE d.n = r.n AND (d.hi < w.floor OR d.lo > w.today))
          -- datetimes: their site-local date (not in the future: checked by the request)
          AND NOT EXISTS (SELECT 1 FROM unnest(p_at_n, p_at) AS a(n, at)
                          WHERE a.n = r.n AND (a.at AT TIME ZONE w.time_zone)::date < w.floor)
          -- the record's date in the consent window (src/domain/study/records.rs)
          AND ((r.rec_lo IS NULL AND r.rec_at IS NULL)
               OR (w.first_signed IS NOT NULL
                   AND coalesce(r.rec_hi, (r.rec_at AT TIME ZONE w.time_zone)::date)
                       >= w.first_signed
                   AND (r.after_withdrawal OR w.withdrawn_on IS NULL
                        OR coalesce(r.rec_lo, (r.rec_at AT TIME ZONE w.time_zone)::date)
                           <= w.withdrawn_on)))
          -- a fever read by the dose rules: no live dose on or after its site-local day,
          -- which the step-by-step path would check again
          -- (services::form_rules::recheck_later_doses; days as domain::study::schedule::
          -- site_date: a date as it is, a datetime at the site)
          AND (r.fever_at IS NULL
               OR NOT EXISTS (
                   -- one index lookup per dose form, subject and form both in the condition
                   -- of form_records_subject (the LIMIT keeps the lookup a subquery of its
                   -- own: flattened into a join, a cached plan may hash the subject's records)
                   SELECT 1
                   FROM unnest(p_dose_form, p_dose_at) AS f(form_id, at_item)
                   CROSS JOIN LATERAL (
                       SELECT 1 FROM form_records d
                       WHERE d.subject_id = w.subject_id AND d.form_id = f.form_id
                         AND d.deleted_at IS NULL
                         AND (CASE WHEN length(d."values" ->> f.at_item) = 10
                                   THEN (d."values" ->> f.at_item)::date
                                   ELSE ((d."values" ->> f.at_item)::timestamptz
                                         AT TIME ZONE w.time_zone)::date END)
                             >= (CASE WHEN length(r.fever_at) = 10 THEN r.fever_at::date
                                      ELSE (r.fever_at::timestamptz AT TIME ZONE w.time_zone)::date
                                 END)
                       LIMIT 1
                   ) later))
    ),
    written AS (
        -- a second live record with the key (here or committed meanwhile) is not written
        INSERT INTO form_records (id, site_id, subject_id, form_id, visit_id, repeat_key,
                                  study_version_id, "values", flags, version, created_at,
                                  created_by, updated_at, updated_by)
        SELECT e.new_id, e.site_id, e.subject_id, e.form, e.visit, e.repeat_key, e.version_id,
               e.vals, '[]'::jsonb, 1, e.now, e.usr, e.now, e.usr
        FROM entry e ORDER BY e.n
        ON CONFLICT (subject_id, form_id, repeat_key)
            WHERE deleted_at IS NULL AND repeat_key IS NOT NULL DO NOTHING
        RETURNING form_records.id
    ),
    done AS MATERIALIZED (
        SELECT e.* FROM entry e JOIN written w ON w.id = e.new_id
    ),
    audited AS (
        INSERT INTO audit_log (actor_id, actor_role, action, entity_table, record_id, site_id,
                               subject_id, new_values, request_id, client_addr)
        SELECT d.usr, d.role, 'create', 'form_records', d.new_id, d.site_id, d.subject_id,
               d.audit || jsonb_build_object('id', d.new_id,
                                             'definition_version', d.version_number),
               d.request_id, d.client_addr
        FROM done d ORDER BY d.n
        RETURNING audit_log.id
    ),
    -- a signature no longer covers its casebook (services::guard::invalidate_signatures),
    -- audited as the first entry of its subject
    invalidated AS (
        UPDATE signatures g
        SET invalidated_at = now(),
            invalidated_reason = (SELECT d.changed FROM done d WHERE d.subject_id = g.subject_id
                                  ORDER BY d.n LIMIT 1) || ' changed after signing'
        WHERE g.invalidated_at IS NULL AND g.subject_id IN (SELECT d.subject_id FROM done d)
        RETURNING g.id, g.subject_id, g.invalidated_reason
    ),
    invalidation_audited AS (
        INSERT INTO audit_log (actor_id, actor_role, action, entity_table, record_id, site_id,
                               subject_id, new_values, request_id, client_addr)
        SELECT d.usr, d.role, 'signature_invalidated', 'signatures', g.id, d.site_id,
               g.subject_id, jsonb_build_object('reason', g.invalidated_reason),
               d.request_id, d.client_addr
        FROM invalidated g
        JOIN LATERAL (SELECT * FROM done d WHERE d.subject_id = g.subject_id
                      ORDER BY d.n LIMIT 1) d ON true
        ORDER BY g.id
        RETURNING audit_log.id
    )
    -- (the inserts and the update run to completion whether or not the answer reads them)
    SELECT d.n, d.new_id, d.version_number FROM done d;
END
$$;
