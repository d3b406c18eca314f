-- Back to the temperatures table: the moved records under their old ids, those entered
-- since under new ones; queries, verifications and stored answers re-pointed. The audit
-- trail keeps what happened in between (its `migrate` rows and form_records rows stay).
CREATE TABLE temperatures (
    id           bigserial PRIMARY KEY,
    site_id      bigint NOT NULL REFERENCES sites (id),
    subject_id   bigint NOT NULL REFERENCES subjects (id),
    measured_at  timestamptz NOT NULL,
    celsius      numeric(3, 1) NOT NULL CHECK (celsius BETWEEN 30.0 AND 45.0),
    method       text NOT NULL,
    fever        boolean NOT NULL,
    version      integer NOT NULL DEFAULT 1,
    created_at   timestamptz NOT NULL DEFAULT now(),
    created_by   bigint NOT NULL REFERENCES users (id),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    updated_by   bigint NOT NULL REFERENCES users (id),
    deleted_at   timestamptz,
    deleted_by   bigint REFERENCES users (id),
    deleted_reason text
);
CREATE INDEX temperatures_subject ON temperatures (subject_id, id);
GRANT SELECT, INSERT, UPDATE ON temperatures TO casebook_app;
GRANT USAGE ON SEQUENCE temperatures_id_seq TO casebook_app;

CREATE TEMP TABLE back ON COMMIT DROP AS
    SELECT r.id AS new_id, m.old_id
    FROM form_records r LEFT JOIN legacy_record_ids m
         ON m.new_id = r.id AND m.entity = 'temperatures'
    WHERE r.form_id = 'temperature';
SELECT setval('temperatures_id_seq',
              greatest(1, (SELECT max(old_id) FROM back)), (SELECT max(old_id) FROM back) IS NOT NULL);
UPDATE back SET old_id = nextval('temperatures_id_seq') WHERE old_id IS NULL;

INSERT INTO temperatures (id, site_id, subject_id, measured_at, celsius, method, fever, version,
                          created_at, created_by, updated_at, updated_by, deleted_at, deleted_by,
                          deleted_reason)
SELECT b.old_id, r.site_id, r.subject_id, (r."values" ->> 'measured_at')::timestamptz,
       (r."values" ->> 'celsius')::numeric, r."values" ->> 'method',
       coalesce((r."values" ->> 'fever')::boolean, false), r.version, r.created_at,
       r.created_by, r.updated_at, r.updated_by, r.deleted_at, r.deleted_by, r.deleted_reason
FROM form_records r JOIN back b ON b.new_id = r.id;

UPDATE queries q SET record_type = 'temperatures', record_id = b.old_id
FROM back b WHERE q.record_type = 'form_records' AND q.record_id = b.new_id;
UPDATE verifications v SET record_type = 'temperatures', record_id = b.old_id
FROM back b WHERE v.record_type = 'form_records' AND v.record_id = b.new_id;
UPDATE idempotency_keys k SET body = jsonb_set(k.body, '{id}', to_jsonb(b.old_id))
FROM back b
WHERE jsonb_typeof(k.body) = 'object' AND k.body ? 'celsius' AND k.body ? 'measured_at'
  AND k.body ? 'method' AND jsonb_typeof(k.body -> 'id') = 'number'
  AND (k.body ->> 'id')::bigint = b.new_id;

DROP TABLE legacy_record_ids;
DELETE FROM form_records r USING back b WHERE r.id = b.new_id;

-- The temperature statements as migrations 000007 and 000011 left them.
CREATE FUNCTION casebook_create_temperatures(
    p_id bigint[], p_site bigint[], p_subject bigint[], p_measured_at timestamptz[],
    p_celsius numeric[], p_method text[], p_fever boolean[], p_user bigint[],
    p_now timestamptz[], p_actor_role text[], p_new_values jsonb[], p_request_id text[],
    p_client_addr text[], p_lock_timeout text)
RETURNS integer LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    IF p_lock_timeout IS NOT NULL THEN
        -- local: ends with the statement's own transaction
        PERFORM set_config('lock_timeout', p_lock_timeout, true);
    END IF;
    INSERT INTO temperatures (id, site_id, subject_id, measured_at, celsius, method, fever,
                              version, created_at, created_by, updated_at, updated_by)
    SELECT r.id, r.site, r.subject, r.measured_at, r.celsius, r.method, r.fever,
           1, r.now, r.usr, r.now, r.usr
    FROM unnest(p_id, p_site, p_subject, p_measured_at, p_celsius, p_method, p_fever,
                p_user, p_now)
         WITH ORDINALITY AS r(id, site, subject, measured_at, celsius, method, fever, usr, now, n)
    ORDER BY r.n;
    INSERT INTO audit_log (actor_id, actor_role, action, entity_table, record_id, site_id,
                           subject_id, new_values, request_id, client_addr)
    SELECT r.usr, r.role, 'create', 'temperatures', r.id, r.site, r.subject, r.new_values,
           r.request_id, r.client_addr
    FROM unnest(p_user, p_actor_role, p_id, p_site, p_subject, p_new_values, p_request_id,
                p_client_addr)
         WITH ORDINALITY AS r(usr, role, id, site, subject, new_values, request_id,
                              client_addr, n)
    ORDER BY r.n;
    RETURN cardinality(p_id);
END
$$;

GRANT EXECUTE ON FUNCTION
    casebook_create_temperatures(bigint[], bigint[], bigint[], timestamptz[], numeric[], text[],
                                 boolean[], bigint[], timestamptz[], text[], jsonb[], text[],
                                 text[], text)
    TO casebook_app;

CREATE FUNCTION casebook_enter_temperatures(
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
    -- Hold the subjects against a signature until this transaction ends (issue 16: signing
    -- takes the row FOR UPDATE first; src/services/guard.rs), in id order so that two
    -- batches never deadlock. The query below is a new statement with a new snapshot: it
    -- sees a signature committed while this one waited, and leaves that entry unwritten.
    PERFORM 1 FROM subjects sj
    WHERE sj.subject_code = ANY (p_code) AND sj.deleted_at IS NULL
    ORDER BY sj.id
    FOR KEY SHARE;
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
                   -- 9. the date floor (src/domain/time.rs DateFloor)
                   greatest(date '1900-01-01', (sj.birth_year_month || '-01')::date) AS floor,
                   (SELECT min(c.signed_on) FROM consents c
                     WHERE c.subject_id = sj.id AND c.deleted_at IS NULL) AS first_signed,
                   (SELECT min(c.withdrawn_on) FROM consents c
                     WHERE c.subject_id = sj.id AND c.deleted_at IS NULL) AS withdrawn_on
            FROM subjects sj JOIN sites st ON st.id = sj.site_id
            WHERE sj.subject_code = r.code AND sj.deleted_at IS NULL
              -- 20. an inactive site takes no data (423 on the step-by-step path)
              AND st.active
              AND sj.site_id IN (SELECT us.site_id FROM user_sites us WHERE us.user_id = u.id)
              AND NOT EXISTS (SELECT 1 FROM locks l WHERE l.unlocked_at IS NULL
                    AND (l.scope = 'study' OR (l.scope = 'site' AND l.site_id = sj.site_id)
                         OR (l.scope = 'subject' AND l.subject_id = sj.id)))
              AND NOT EXISTS (SELECT 1 FROM signatures g
                    WHERE g.subject_id = sj.id AND g.invalidated_at IS NULL)
        ) w ON w.first_signed IS NOT NULL AND w.local_date >= w.first_signed
               AND w.local_date >= w.floor
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

GRANT EXECUTE ON FUNCTION
    casebook_enter_temperatures(bigint[], uuid[], integer[], text[], timestamptz[], numeric[],
                                text[], boolean[], timestamptz[], jsonb[], text[], text[],
                                text[], text)
    TO casebook_app;
