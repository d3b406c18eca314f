CREATE FUNCTION audit_enqueue() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
SET search_path = public AS $$
BEGIN
    INSERT INTO audit_unsealed (audit_id) VALUES (NEW.id);
    RETURN NEW;
END
$$;
DROP TRIGGER audit_log_enqueue ON audit_log;
CREATE TRIGGER audit_log_enqueue AFTER INSERT ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_enqueue();
DROP FUNCTION audit_enqueue_added();
DROP FUNCTION casebook_create_temperatures(bigint[], bigint[], bigint[], timestamptz[],
    numeric[], text[], boolean[], bigint[], timestamptz[], text[], jsonb[], text[], text[], text);

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
GRANT EXECUTE ON FUNCTION casebook_create_temperature(bigint, bigint, bigint, timestamptz,
    numeric, text, boolean, bigint, timestamptz, text, jsonb, text, text) TO casebook_app;

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
GRANT EXECUTE ON FUNCTION casebook_entry_context(bigint, uuid, boolean, text, regclass)
    TO casebook_app;
