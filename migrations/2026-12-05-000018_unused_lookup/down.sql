-- As 2026-11-22-000005_lookup_functions created it.
-- What a new clinical record needs to know about its subject, within the caller's sites.
CREATE FUNCTION casebook_write_context(p_code text, p_all_sites boolean, p_site_ids bigint[])
RETURNS TABLE (id bigint, site_id bigint, subject_code text, weight_kg double precision,
               time_zone text, first_signed date, withdrawn_on date, locked boolean, signed boolean)
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN QUERY
    SELECT s.id, s.site_id, s.subject_code, s.weight_kg::float8, st.time_zone,
           (SELECT min(c.signed_on) FROM consents c
             WHERE c.subject_id = s.id AND c.deleted_at IS NULL),
           (SELECT min(c.withdrawn_on) FROM consents c
             WHERE c.subject_id = s.id AND c.deleted_at IS NULL),
           EXISTS (SELECT 1 FROM locks l WHERE l.unlocked_at IS NULL
                    AND (l.scope = 'study' OR (l.scope = 'site' AND l.site_id = s.site_id)
                         OR (l.scope = 'subject' AND l.subject_id = s.id))),
           EXISTS (SELECT 1 FROM signatures g
                    WHERE g.subject_id = s.id AND g.invalidated_at IS NULL)
    FROM subjects s JOIN sites st ON st.id = s.site_id
    WHERE s.subject_code = p_code AND s.deleted_at IS NULL
      AND (p_all_sites OR s.site_id = ANY(p_site_ids));
END
$$;

GRANT EXECUTE ON FUNCTION casebook_write_context(text, boolean, bigint[]) TO casebook_app;
