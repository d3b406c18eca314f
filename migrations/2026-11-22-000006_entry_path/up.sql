-- The fast path of data entry (issue 5): one round trip to learn everything a new clinical
-- record needs, one to write it with its audit row. Both are PL/pgSQL, so their plans are
-- prepared once per connection.

-- The caller lookup also returns the codes of the caller's sites, so that GET /me needs no
-- second query.
DROP FUNCTION casebook_caller(bigint, uuid);
CREATE FUNCTION casebook_caller(p_user bigint, p_session uuid)
RETURNS TABLE (email text, name text, role text, active boolean, token_version integer,
               site_ids bigint[], site_codes text[])
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN QUERY
    SELECT u.email, u.name, u.role, u.active, u.token_version,
           ARRAY(SELECT us.site_id FROM user_sites us WHERE us.user_id = u.id ORDER BY us.site_id),
           ARRAY(SELECT st.code FROM user_sites us JOIN sites st ON st.id = us.site_id
                 WHERE us.user_id = u.id ORDER BY st.code)
    FROM users u JOIN sessions s ON s.user_id = u.id
    WHERE u.id = p_user AND s.id = p_session AND s.revoked_at IS NULL;
END
$$;
GRANT EXECUTE ON FUNCTION casebook_caller(bigint, uuid) TO casebook_app;

-- The caller (user, live session) and the subject's write context in one call. No row: the
-- token's session is gone or the user unknown (401). Subject columns NULL: no such subject
-- within the scope (404); the scope is all sites or the caller's own assignments, in SQL.
-- `new_id` is the id the new record will have, drawn from `p_sequence` only when the
-- subject was found; `now` is the statement time, stored as created_at / updated_at.
CREATE FUNCTION casebook_entry_context(p_user bigint, p_session uuid, p_all_sites boolean,
                                       p_code text, p_sequence regclass)
RETURNS TABLE (email text, name text, role text, active boolean, token_version integer,
               site_ids bigint[], site_codes text[],
               id bigint, site_id bigint, subject_code text, weight_kg double precision,
               time_zone text, first_signed date, withdrawn_on date, locked boolean,
               signed boolean, new_id bigint, now timestamptz)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    RETURN QUERY
    SELECT c.email, c.name, c.role, c.active, c.token_version, c.site_ids, c.site_codes,
           w.id, w.site_id, w.subject_code, w.weight_kg, w.time_zone, w.first_signed,
           w.withdrawn_on, w.locked, w.signed,
           CASE WHEN w.id IS NULL THEN NULL ELSE nextval(p_sequence) END,
           now()
    FROM casebook_caller(p_user, p_session) c
    LEFT JOIN LATERAL casebook_write_context(p_code, p_all_sites, c.site_ids) w ON true;
END
$$;

-- A temperature and its audit row, in one statement (so in one transaction). Returns the
-- audit row's id.
CREATE FUNCTION casebook_create_temperature(
    p_id bigint, p_site bigint, p_subject bigint, p_measured_at timestamptz,
    p_celsius numeric, p_method text, p_fever boolean, p_user bigint, p_now timestamptz,
    p_actor_role text, p_new_values jsonb, p_request_id text, p_client_addr text)
RETURNS bigint LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_audit bigint;
BEGIN
    INSERT INTO temperatures (id, site_id, subject_id, measured_at, celsius, method, fever,
                              version, created_at, created_by, updated_at, updated_by)
    VALUES (p_id, p_site, p_subject, p_measured_at, p_celsius, p_method, p_fever,
            1, p_now, p_user, p_now, p_user);
    INSERT INTO audit_log (actor_id, actor_role, action, entity_table, record_id, site_id,
                           subject_id, new_values, request_id, client_addr)
    VALUES (p_user, p_actor_role, 'create', 'temperatures', p_id, p_site,
            p_subject, p_new_values, p_request_id, p_client_addr)
    RETURNING id INTO v_audit;
    RETURN v_audit;
END
$$;

GRANT EXECUTE ON FUNCTION
    casebook_entry_context(bigint, uuid, boolean, text, regclass),
    casebook_create_temperature(bigint, bigint, bigint, timestamptz, numeric, text, boolean,
                                bigint, timestamptz, text, jsonb, text, text)
    TO casebook_app;
