DROP TABLE audit_unsealed, audit_chain, audit_log, idempotency_keys, refresh_tokens, sessions, user_sites, users, sites;
DROP FUNCTION audit_enqueue();
DROP FUNCTION audit_refuse_change();
