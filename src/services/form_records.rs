//! Entering a record of a form the study definition describes: one function for
//! `POST /subjects/{code}/forms/{form}` and for `casebook seed-demo`, so demo data is
//! checked, flagged, queried and audited exactly as a client's.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use serde::Serialize;
use serde_json::{json, Map, Value};
use utoipa::ToSchema;

use crate::audit::audit_view;
use crate::audit::{self, AuditEvent};
use crate::auth::Caller;
use crate::db::subjects::{consent_window, SubjectRef};
use crate::db::{form_records as fr, study_versions};
use crate::domain::study::records::{self, Placement, Values};
use crate::domain::study::values::Checked;
use crate::domain::study::{Definition, Form};
use crate::domain::values::Reason;
use crate::error::{conflict_on_unique, AppError, AppResult};
use crate::services::deletion::Deletion;
use crate::services::form_rules::{
    check_with_rules, keeps_days, open_queries, recheck_later_doses, Write,
};

pub use crate::db::form_records::ENTITY;

/// A record of a form.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FormRecord {
    pub id: i64,
    pub subject_code: String,
    pub form: String,
    /// the visit, for a form entered per visit
    pub visit: Option<String>,
    /// the published version of the definition it was last checked against
    pub definition_version: i32,
    /// item id -> value; decimals as text at the item's digits ("37.50")
    #[schema(value_type = Object)]
    pub values: Value,
    /// soft findings: `[{"item", "message"}]`, each with an open query
    #[schema(value_type = Vec<Object>)]
    pub flags: Value,
    pub version: i32,
    pub created_at: DateTime<Utc>,
    pub created_by: i64,
    pub updated_at: DateTime<Utc>,
    pub updated_by: i64,
    /// why it was last changed
    pub change_reason: Option<String>,
    pub deleted_at: Option<DateTime<Utc>>,
    pub deleted_reason: Option<String>,
}

impl FormRecord {
    pub fn of(r: fr::Row, code: &str) -> Self {
        Self {
            id: r.id,
            subject_code: code.to_owned(),
            form: r.form_id,
            visit: r.visit_id,
            definition_version: r.definition_version,
            values: r.values,
            flags: r.flags,
            version: r.version,
            created_at: r.created_at,
            created_by: r.created_by,
            updated_at: r.updated_at,
            updated_by: r.updated_by,
            change_reason: r.change_reason,
            deleted_at: r.deleted_at,
            deleted_reason: r.deleted_reason,
        }
    }
}

/// The record's dates against the subject's date floor and consent window (before the named
/// rules, which read the dates: a date refused is named rather than a study day).
pub fn check_dates(
    conn: &mut PgConnection,
    form: &Form,
    subject: &SubjectRef,
    checked: &Checked,
) -> AppResult<()> {
    let window = consent_window(conn, subject.id)?;
    records::check_dates(
        form,
        &checked.values,
        &records::Dating {
            tz: subject.tz,
            floor: subject.floor,
            first_signed: window.first_signed,
            withdrawn_on: window.withdrawn_on,
            now: Utc::now(),
        },
    )
    .map_err(AppError::Validation)
}

/// What a record of `form_id` is called in messages, and what a signature's invalidation
/// says changed: a moved legacy form keeps its old words ("This temperature is ...",
/// "temperatures changed after signing"); every other form says "record", `form_records`.
fn names(form_id: &str) -> (&'static str, &'static str) {
    match crate::domain::study::moved_form(form_id) {
        Some(m) => (m.noun, m.entity),
        None => ("record", ENTITY),
    }
}

/// A second live record where the form allows one (per visit, per day) is a unique
/// violation: 409 naming the visit or day.
fn once<'a>(
    form: &'a Form,
    key: &'a Option<(String, String)>,
) -> impl FnOnce(diesel::result::Error) -> AppError + 'a {
    move |e| {
        conflict_on_unique(format!(
            "The form {} is already entered for {}: correct that record instead.",
            form.id,
            key.as_ref().map(|k| k.1.as_str()).unwrap_or_default()
        ))(e)
    }
}

/// Enters a record of `form_id` for `subject` (found within the caller's scope), in the
/// caller's transaction: placement, the definition's checks (422 naming `values.<item>`),
/// the dates against consent, the insert, its audit row, a query per soft finding, and the
/// verification and signatures the change invalidates. Returns the record as answered.
pub fn enter(
    conn: &mut PgConnection,
    def: &Definition,
    caller: &Caller,
    subject: &SubjectRef,
    form_id: &str,
    visit: Option<&str>,
    input: &Map<String, Value>,
) -> AppResult<Value> {
    crate::services::guard::ensure_unlocked(conn, subject.site_id, Some(subject.id))?;
    let form = def.form(form_id).ok_or(AppError::NotFound)?;
    let Placement { visit } =
        records::placement(def, form, visit).map_err(|e| AppError::Validation(vec![e]))?;
    let checked = check_with_rules(
        conn,
        def,
        caller,
        form,
        subject,
        &Write {
            visit: visit.as_deref(),
            this: None,
            change: None,
        },
        input.clone(),
    )?;
    let (version_id, version_number) = study_versions::running(conn, &def.study.id, &def.sha256)?;
    let values = Value::Object(records::stored(&checked.values));
    let flags = records::flags_json(&checked.flags);
    let key = records::repeat_key(def, form, visit.as_deref(), &checked.values, subject.tz);
    let row = fr::insert(
        conn,
        &fr::NewRecord {
            site_id: subject.site_id,
            subject_id: subject.id,
            form_id: &form.id,
            visit_id: visit.as_deref(),
            repeat_key: key.as_ref().map(|k| k.0.as_str()),
            study_version_id: version_id,
            definition_version: version_number,
            values: &values,
            flags: &flags,
            user_id: caller.user_id,
        },
    )
    .map_err(once(form, &key))?;
    let id = row.id;
    let record = FormRecord::of(row, &subject.code);
    let body = serde_json::to_value(&record).map_err(AppError::internal)?;
    audit::record(
        conn,
        &AuditEvent::new(Some(&caller.actor), "create", ENTITY, &caller.meta)
            .record(id)
            .site(Some(subject.site_id))
            .subject(Some(subject.id))
            .new_values(audit_view(body.clone())),
    )?;
    open_queries(conn, caller, subject, id, &checked)?;
    if let Some(v) = values.as_object() {
        crate::services::sae::raise_for_record(conn, def, caller, subject, form, id, None, v)?;
    }
    crate::services::guard::after_change_of(
        conn,
        caller,
        (ENTITY, names(&form.id).1),
        None,
        subject.site_id,
        subject.id,
    )?;
    recheck_later_doses(conn, def, caller, subject, form, id, None, Some(&values))?;
    Ok(body)
}

/// A record of `subject` (found within the caller's scope) to change: the subject's lock
/// (423) first, then the record, held until the transaction ends (404 when it is not this
/// subject's record of this form).
fn find_for_change(
    conn: &mut PgConnection,
    subject: &SubjectRef,
    form_id: &str,
    id: i64,
) -> AppResult<fr::Row> {
    crate::services::guard::ensure_unlocked(conn, subject.site_id, Some(subject.id))?;
    Ok(fr::find(conn, subject.id, form_id, id, true)?)
}

/// Corrects record `id` in the caller's transaction: the items of `change` replace theirs
/// (`null` clears one) and the whole record is checked again against the running
/// definition. `expected` is the If-Match version, checked once the record is found, so
/// that scope (404) comes before preconditions (428). A correction that changes nothing
/// writes nothing.
#[allow(clippy::too_many_arguments)]
pub fn correct(
    conn: &mut PgConnection,
    def: &Definition,
    caller: &Caller,
    subject: &SubjectRef,
    form_id: &str,
    id: i64,
    expected: AppResult<i32>,
    change: &Values,
    reason: &Reason,
) -> AppResult<FormRecord> {
    let old = find_for_change(conn, subject, form_id, id)?;
    let expected = expected?;
    if old.deleted_at.is_some() {
        return Err(AppError::Conflict(format!(
            "This {} is marked entered in error.",
            names(form_id).0
        )));
    }
    if old.version != expected {
        return Err(AppError::PreconditionFailed);
    }
    let form = def.form(form_id).ok_or(AppError::NotFound)?;
    let before = old.values.as_object().cloned().unwrap_or_default();
    let input = records::merge(form, &before, change);
    let checked = check_with_rules(
        conn,
        def,
        caller,
        form,
        subject,
        &Write {
            visit: old.visit_id.as_deref(),
            this: Some(id),
            change: Some(change),
        },
        input,
    )?;
    let after = records::stored(&checked.values);
    let flags = records::flags_json(&checked.flags);
    if after == before && flags == old.flags {
        return Ok(FormRecord::of(old, &subject.code));
    }
    let (version_id, _) = study_versions::running(conn, &def.study.id, &def.sha256)?;
    let key = records::repeat_key(
        def,
        form,
        old.visit_id.as_deref(),
        &checked.values,
        subject.tz,
    );
    fr::correct(
        conn,
        id,
        &fr::Correction {
            study_version_id: version_id,
            repeat_key: key.as_ref().map(|k| k.0.as_str()),
            values: &Value::Object(after.clone()),
            flags: &flags,
            reason: reason.as_str(),
            user_id: caller.user_id,
        },
    )
    .map_err(once(form, &key))?;
    let (o, n) = records::changes(&before, &after);
    let (mut old_audit, mut new_audit) = (json!({"values": o}), json!({"values": n}));
    if flags != old.flags {
        old_audit["flags"] = old.flags.clone();
        new_audit["flags"] = flags.clone();
    }
    audit::record(
        conn,
        &AuditEvent::new(Some(&caller.actor), "update", ENTITY, &caller.meta)
            .record(id)
            .site(Some(subject.site_id))
            .subject(Some(subject.id))
            .old(old_audit)
            .new_values(new_audit)
            .reason(Some(reason.as_str())),
    )?;
    open_queries(conn, caller, subject, id, &checked)?;
    crate::services::sae::raise_for_record(
        conn,
        def,
        caller,
        subject,
        form,
        id,
        Some(&before),
        &after,
    )?;
    crate::services::guard::after_change_of(
        conn,
        caller,
        (ENTITY, names(form_id).1),
        Some(id),
        subject.site_id,
        subject.id,
    )?;
    recheck_later_doses(
        conn,
        def,
        caller,
        subject,
        form,
        id,
        Some(&old.values),
        Some(&Value::Object(after)),
    )?;
    Ok(FormRecord::of(
        fr::find(conn, subject.id, form_id, id, false)?,
        &subject.code,
    ))
}

/// Marks record `id` entered in error in the caller's transaction (nothing is removed):
/// the steps every form shares (`Deletion`), with `expected` the If-Match version if sent.
#[allow(clippy::too_many_arguments)]
pub fn mark_entered_in_error(
    conn: &mut PgConnection,
    def: &Definition,
    caller: &Caller,
    subject: &SubjectRef,
    form_id: &str,
    id: i64,
    expected: Option<i32>,
    reason: &Reason,
) -> AppResult<FormRecord> {
    let old = find_for_change(conn, subject, form_id, id)?;
    if old.deleted_at.is_none() {
        let form = def.form(form_id).ok_or(AppError::NotFound)?;
        keeps_days(conn, def, caller, form, subject, Some(id), None)?;
    }
    let deletion = Deletion {
        caller,
        subject,
        entity: ENTITY,
        noun: names(form_id).0,
        changed: names(form_id).1,
        id,
        expected,
        reason,
    };
    let deleted = old.deleted_at.is_some();
    let version = old.version;
    let before = FormRecord::of(old, &subject.code);
    let values = before.values.clone();
    let record = deletion.run(conn, deleted, version, &before, |conn| {
        fr::mark_deleted(conn, id, reason.as_str(), caller.user_id)?;
        Ok(FormRecord::of(
            fr::find(conn, subject.id, form_id, id, false)?,
            &subject.code,
        ))
    })?;
    if let Some(form) = def.form(form_id) {
        recheck_later_doses(conn, def, caller, subject, form, id, Some(&values), None)?;
    }
    Ok(record)
}
