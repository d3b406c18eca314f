-- Group commit of new temperatures (issue 5): the server gathers the temperatures that
-- arrive while a write is in flight and writes them, each with its audit row, in one
-- statement, so that one commit (one WAL flush) serves many requests.

-- Many temperatures and their audit rows in one statement (so in one transaction). The
-- arrays are parallel: element i of each describes the i-th record. Records and audit rows
-- are written in array order. Returns how many records were written. `p_lock_timeout`
-- (e.g. '50ms'), when given, bounds the wait for a row lock (the foreign keys' parent
-- rows) for this statement only: a batch must not hold every other request behind one
-- subject's locked row; its entries are then written alone, each waiting for its own.
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

-- It writes a single temperature too (an array of one), so the one-record function goes.
DROP FUNCTION casebook_create_temperature(bigint, bigint, bigint, timestamptz, numeric, text,
                                          boolean, bigint, timestamptz, text, jsonb, text, text);

GRANT EXECUTE ON FUNCTION
    casebook_create_temperatures(bigint[], bigint[], bigint[], timestamptz[], numeric[], text[],
                                 boolean[], bigint[], timestamptz[], text[], jsonb[], text[],
                                 text[], text)
    TO casebook_app;

-- The sealer's queue is filled once per statement instead of once per row: a statement
-- that writes a batch of audit rows pays one trigger call, and a single-row statement
-- pays no more than before. Same rows queued either way.
CREATE FUNCTION audit_enqueue_added() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
SET search_path = public AS $$
BEGIN
    INSERT INTO audit_unsealed (audit_id) SELECT id FROM added;
    RETURN NULL;
END
$$;
DROP TRIGGER audit_log_enqueue ON audit_log;
CREATE TRIGGER audit_log_enqueue AFTER INSERT ON audit_log
    REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION audit_enqueue_added();
DROP FUNCTION audit_enqueue();

-- The entry context is now one statement the server prepares (src/api/clinical/entry.rs),
-- for one request or several at once.
DROP FUNCTION casebook_entry_context(bigint, uuid, boolean, text, regclass);
