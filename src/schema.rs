//! Diesel table definitions, kept in step with `migrations/` by hand.

diesel::table! {
    sites (id) {
        id -> Int8,
        code -> Text,
        name -> Text,
        country -> Text,
        time_zone -> Text,
        active -> Bool,
        subject_seq -> Int4,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    users (id) {
        id -> Int8,
        email -> Text,
        name -> Text,
        role -> Text,
        active -> Bool,
        password_hash -> Text,
        failed_logins -> Int4,
        first_failed_at -> Nullable<Timestamptz>,
        locked_until -> Nullable<Timestamptz>,
        token_version -> Int4,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        attempts_pending -> Int4,
        attempt_reserved_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    user_sites (user_id, site_id) {
        user_id -> Int8,
        site_id -> Int8,
    }
}

diesel::table! {
    sessions (id) {
        id -> Uuid,
        user_id -> Int8,
        created_at -> Timestamptz,
        revoked_at -> Nullable<Timestamptz>,
        revoked_why -> Nullable<Text>,
    }
}

diesel::table! {
    refresh_tokens (id) {
        id -> Int8,
        session_id -> Uuid,
        token_hash -> Bytea,
        issued_at -> Timestamptz,
        expires_at -> Timestamptz,
        spent_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    idempotency_keys (user_id, key) {
        user_id -> Int8,
        key -> Text,
        request_hash -> Bytea,
        status -> Nullable<Int2>,
        body -> Nullable<Jsonb>,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    audit_log (id) {
        id -> Int8,
        occurred_at -> Timestamptz,
        actor_id -> Nullable<Int8>,
        actor_role -> Nullable<Text>,
        action -> Text,
        entity_table -> Text,
        record_id -> Nullable<Int8>,
        site_id -> Nullable<Int8>,
        subject_id -> Nullable<Int8>,
        old_values -> Nullable<Jsonb>,
        new_values -> Nullable<Jsonb>,
        reason -> Nullable<Text>,
        request_id -> Nullable<Text>,
        client_addr -> Nullable<Text>,
    }
}

diesel::table! {
    audit_chain (seq) {
        seq -> Int8,
        audit_id -> Int8,
        prev_hash -> Bytea,
        hash -> Bytea,
        sealed_at -> Timestamptz,
    }
}

diesel::table! {
    audit_unsealed (audit_id) {
        audit_id -> Int8,
    }
}

diesel::table! {
    subjects (id) {
        id -> Int8,
        site_id -> Int8,
        subject_code -> Text,
        status -> Text,
        sex -> Text,
        birth_year_month -> Text,
        weight_kg -> Numeric,
        eligibility -> Jsonb,
        version -> Int4,
        created_at -> Timestamptz,
        created_by -> Int8,
        updated_at -> Timestamptz,
        updated_by -> Int8,
        deleted_at -> Nullable<Timestamptz>,
        deleted_by -> Nullable<Int8>,
        deleted_reason -> Nullable<Text>,
    }
}

diesel::table! {
    consents (id) {
        id -> Int8,
        site_id -> Int8,
        subject_id -> Int8,
        form_version -> Text,
        signed_on -> Date,
        signer -> Text,
        representative_relationship -> Nullable<Text>,
        assent -> Nullable<Bool>,
        obtained_by -> Int8,
        withdrawn_on -> Nullable<Date>,
        withdrawal_scope -> Nullable<Text>,
        withdrawal_reason -> Nullable<Text>,
        version -> Int4,
        created_at -> Timestamptz,
        created_by -> Int8,
        updated_at -> Timestamptz,
        updated_by -> Int8,
        deleted_at -> Nullable<Timestamptz>,
        deleted_by -> Nullable<Int8>,
        deleted_reason -> Nullable<Text>,
    }
}

diesel::table! {
    sae_alerts (id) {
        id -> Int8,
        site_id -> Int8,
        subject_id -> Int8,
        payload -> Jsonb,
        status -> Text,
        attempts -> Int4,
        next_attempt_at -> Timestamptz,
        delivered_at -> Nullable<Timestamptz>,
        last_error -> Nullable<Text>,
        created_at -> Timestamptz,
        form_record_id -> Int8,
    }
}

diesel::table! {
    sae_alert_attempts (id) {
        id -> Int8,
        alert_id -> Int8,
        attempted_at -> Timestamptz,
        http_status -> Nullable<Int4>,
        error -> Nullable<Text>,
        duration_ms -> Int4,
    }
}

diesel::table! {
    queries (id) {
        id -> Int8,
        site_id -> Int8,
        subject_id -> Int8,
        record_type -> Text,
        record_id -> Int8,
        field -> Nullable<Text>,
        status -> Text,
        origin -> Text,
        created_at -> Timestamptz,
        created_by -> Nullable<Int8>,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    query_messages (id) {
        id -> Int8,
        query_id -> Int8,
        kind -> Text,
        text -> Text,
        author_id -> Nullable<Int8>,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    verifications (id) {
        id -> Int8,
        site_id -> Int8,
        subject_id -> Int8,
        record_type -> Text,
        record_id -> Int8,
        record_version -> Int4,
        verified_by -> Int8,
        verified_at -> Timestamptz,
        cleared_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    signatures (id) {
        id -> Int8,
        site_id -> Int8,
        subject_id -> Int8,
        signer_id -> Int8,
        printed_name -> Text,
        meaning -> Text,
        signed_at -> Timestamptz,
        casebook_sha256 -> Text,
        invalidated_at -> Nullable<Timestamptz>,
        invalidated_reason -> Nullable<Text>,
    }
}

diesel::table! {
    locks (id) {
        id -> Int8,
        scope -> Text,
        site_id -> Nullable<Int8>,
        subject_id -> Nullable<Int8>,
        reason -> Text,
        locked_by -> Int8,
        locked_at -> Timestamptz,
        unlocked_by -> Nullable<Int8>,
        unlocked_at -> Nullable<Timestamptz>,
        unlock_reason -> Nullable<Text>,
    }
}

diesel::table! {
    study_versions (id) {
        id -> Int8,
        study_id -> Text,
        version -> Int4,
        declared_version -> Text,
        sha256 -> Text,
        definition -> Jsonb,
        published_at -> Timestamptz,
        published_by -> Text,
    }
}

diesel::table! {
    form_records (id) {
        id -> Int8,
        site_id -> Int8,
        subject_id -> Int8,
        form_id -> Text,
        visit_id -> Nullable<Text>,
        repeat_key -> Nullable<Text>,
        study_version_id -> Int8,
        values -> Jsonb,
        flags -> Jsonb,
        version -> Int4,
        created_at -> Timestamptz,
        created_by -> Int8,
        updated_at -> Timestamptz,
        updated_by -> Int8,
        change_reason -> Nullable<Text>,
        deleted_at -> Nullable<Timestamptz>,
        deleted_by -> Nullable<Int8>,
        deleted_reason -> Nullable<Text>,
    }
}

diesel::table! {
    legacy_record_ids (entity, old_id) {
        entity -> Text,
        old_id -> Int8,
        new_id -> Int8,
    }
}

diesel::joinable!(user_sites -> users (user_id));
diesel::joinable!(user_sites -> sites (site_id));
diesel::joinable!(sessions -> users (user_id));
diesel::joinable!(refresh_tokens -> sessions (session_id));
diesel::joinable!(audit_chain -> audit_log (audit_id));
diesel::joinable!(audit_unsealed -> audit_log (audit_id));
diesel::joinable!(subjects -> sites (site_id));
diesel::joinable!(consents -> subjects (subject_id));
diesel::joinable!(sae_alerts -> form_records (form_record_id));
diesel::joinable!(sae_alert_attempts -> sae_alerts (alert_id));
diesel::joinable!(queries -> subjects (subject_id));
diesel::joinable!(query_messages -> queries (query_id));
diesel::joinable!(signatures -> subjects (subject_id));
diesel::joinable!(form_records -> subjects (subject_id));
diesel::joinable!(form_records -> study_versions (study_version_id));
diesel::joinable!(legacy_record_ids -> form_records (new_id));

diesel::allow_tables_to_appear_in_same_query!(
    sites,
    users,
    user_sites,
    sessions,
    refresh_tokens,
    idempotency_keys,
    audit_log,
    audit_chain,
    audit_unsealed,
    subjects,
    consents,
    sae_alerts,
    sae_alert_attempts,
    queries,
    query_messages,
    verifications,
    signatures,
    locks,
    study_versions,
    form_records,
    legacy_record_ids,
);
