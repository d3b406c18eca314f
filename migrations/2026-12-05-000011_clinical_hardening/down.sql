-- The one-statement temperature entry as migration 000008 made it.
CREATE OR REPLACE FUNCTION casebook_enter_temperatures(
    p_user bigint[], p_session uuid[], p_token_version integer[], p_code text[],
    p_measured_at timestamptz[], p_celsius numeric[], p_method text[], p_fever boolean[],
    p_now timestamptz[], p_new_values jsonb[], p_request_id text[], p_client_addr text[],
    p_roles text[], p_lock_timeout text)
RETURNS TABLE (n bigint, id bigint) LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    IF p_lock_timeout IS NOT NULL THEN
        -- local: ends with the statement's own transaction
        PERFORM set_config('lock_timeout', p_lock_timeout, true);
    END IF;
    RETURN QUERY
    WITH entry AS MATERIALIZED (
        SELECT r.n, r.usr, u.role, w.subject_id, w.site_id, r.measured_at, r.celsius,
               r.method, r.fever, r.now, r.new_values, r.request_id, r.client_addr,
               nextval('temperatures_id_seq'::regclass) AS new_id
        FROM unnest(p_user, p_session, p_token_version, p_code, p_measured_at, p_celsius,
                    p_method, p_fever, p_now, p_new_values, p_request_id, p_client_addr)
             WITH ORDINALITY AS r(usr, sess, ver, code, measured_at, celsius, method, fever,
                                  now, new_values, request_id, client_addr, n)
        JOIN users u ON u.id = r.usr AND u.active AND u.token_version = r.ver
                    AND u.role = ANY (p_roles)
        JOIN sessions s ON s.id = r.sess AND s.user_id = u.id AND s.revoked_at IS NULL
        JOIN LATERAL (
            SELECT sj.id AS subject_id, sj.site_id,
                   (r.measured_at AT TIME ZONE st.time_zone)::date AS local_date,
                   (SELECT min(c.signed_on) FROM consents c
                     WHERE c.subject_id = sj.id AND c.deleted_at IS NULL) AS first_signed,
                   (SELECT min(c.withdrawn_on) FROM consents c
                     WHERE c.subject_id = sj.id AND c.deleted_at IS NULL) AS withdrawn_on
            FROM subjects sj JOIN sites st ON st.id = sj.site_id
            WHERE sj.subject_code = r.code AND sj.deleted_at IS NULL
              AND sj.site_id IN (SELECT us.site_id FROM user_sites us WHERE us.user_id = u.id)
              AND NOT EXISTS (SELECT 1 FROM locks l WHERE l.unlocked_at IS NULL
                    AND (l.scope = 'study' OR (l.scope = 'site' AND l.site_id = sj.site_id)
                         OR (l.scope = 'subject' AND l.subject_id = sj.id)))
              AND NOT EXISTS (SELECT 1 FROM signatures g
                    WHERE g.subject_id = sj.id AND g.invalidated_at IS NULL)
        ) w ON w.first_signed IS NOT NULL AND w.local_date >= w.first_signed
               AND (w.withdrawn_on IS NULL OR w.local_date <= w.withdrawn_on)
    ),
    written AS (
        INSERT INTO temperatures (id, site_id, subject_id, measured_at, celsius, method, fever,
                                  version, created_at, created_by, updated_at, updated_by)
        SELECT e.new_id, e.site_id, e.subject_id, e.measured_at, e.celsius, e.method, e.fever,
               1, e.now, e.usr, e.now, e.usr
        FROM entry e ORDER BY e.n
        RETURNING temperatures.id
    ),
    audited AS (
        INSERT INTO audit_log (actor_id, actor_role, action, entity_table, record_id, site_id,
                               subject_id, new_values, request_id, client_addr)
        SELECT e.usr, e.role, 'create', 'temperatures', e.new_id, e.site_id, e.subject_id,
               e.new_values || jsonb_build_object('id', e.new_id), e.request_id,
               e.client_addr
        FROM entry e ORDER BY e.n
        RETURNING audit_log.id
    )
    -- (both inserts run to completion whether or not the answer reads them)
    SELECT e.n, e.new_id FROM entry e;
END
$$;

