DROP FUNCTION casebook_create_temperature(bigint, bigint, bigint, timestamptz, numeric, text,
                                          boolean, bigint, timestamptz, text, jsonb, text, text);
DROP FUNCTION casebook_entry_context(bigint, uuid, boolean, text, regclass);
DROP FUNCTION casebook_caller(bigint, uuid);
CREATE FUNCTION casebook_caller(p_user bigint, p_session uuid)
RETURNS TABLE (email text, name text, role text, active boolean, token_version integer, site_ids bigint[])
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN QUERY
    SELECT u.email, u.name, u.role, u.active, u.token_version,
           ARRAY(SELECT us.site_id FROM user_sites us WHERE us.user_id = u.id ORDER BY us.site_id)
    FROM users u JOIN sessions s ON s.user_id = u.id
    WHERE u.id = p_user AND s.id = p_session AND s.revoked_at IS NULL;
END
$$;
GRANT EXECUTE ON FUNCTION casebook_caller(bigint, uuid) TO casebook_app;
