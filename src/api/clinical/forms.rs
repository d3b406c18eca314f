//! Records of the forms the study definition describes (issue 17), through one code path:
//! `/subjects/{code}/forms/{form}[/{id}]`. The values are checked against the running
//! definition (`domain::study::values`), stored exactly as entered, with their soft findings
//! flagged and queried; every change is audited with the old and new values of the items it
//! touched. Today's three forms keep their own paths until the engine takes them over: on
//! these routes they answer 409 naming their path.

use std::sync::Arc;

use actix_web::{http::StatusCode, web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use utoipa::ToSchema;

use crate::api::{if_match, resource, with_etag, Json};
use crate::audit::{self, AuditEvent};
use crate::auth::{authorize, Caller, Permission, Scope};
use crate::db::{self, form_records as fr, study_versions};
use crate::domain::study::records::{self, Placement, Values};
use crate::domain::study::values::{self as checks, Checked};
use crate::domain::study::{Definition, Form, LEGACY_FORMS};
use crate::domain::time::local_date;
use crate::domain::values::Reason;
use crate::error::{conflict_on_unique, AppError, AppResult};
use crate::state::AppState;

use super::{
    consent_window, find_subject, idempotent_post, optional_if_match, DeleteRequest, Deletion,
    SubjectRef,
};

const ENTITY: &str = "form_records";

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        resource("/subjects/{subject_code}/forms/{form}")
            .route(web::get().to(list))
            .route(web::post().to(create)),
    )
    .service(
        resource("/subjects/{subject_code}/forms/{form}/{id}")
            .route(web::get().to(get))
            .route(web::patch().to(update))
            .route(web::delete().to(delete)),
    );
}

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
    pub(super) fn of(r: fr::Row, code: &str) -> Self {
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

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewFormRecord {
    /// the visit (forms entered per visit only)
    pub visit: Option<String>,
    /// item id -> value, as GET /study/definition describes the items
    #[schema(value_type = Object)]
    pub values: Map<String, Value>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FormRecordChange {
    /// the items to change; `null` clears an optional item
    #[schema(value_type = Object)]
    pub values: Map<String, Value>,
    /// why the record is changed (required)
    pub reason: Option<String>,
}

/// The form of the running definition that these routes serve: 404 when the study has no
/// such form, 409 for today's three forms, which keep their own paths for now.
fn engine_form(def: &Arc<Definition>, id: &str) -> AppResult<()> {
    if let Some((_, path)) = LEGACY_FORMS.iter().find(|(f, _)| *f == id) {
        return Err(AppError::Conflict(format!(
            "The form `{id}` is entered at /api/v1/subjects/{{subject_code}}/{path} until the form engine serves it."
        )));
    }
    def.form(id).map(|_| ()).ok_or(AppError::NotFound)
}

fn form<'a>(def: &'a Definition, id: &str) -> AppResult<&'a Form> {
    def.form(id).ok_or(AppError::NotFound)
}

/// The checks that need the database: the record's date against the subject's date floor
/// and consent window, and the version records are entered under.
fn check_in_context(
    conn: &mut PgConnection,
    def: &Definition,
    form: &Form,
    subject: &SubjectRef,
    checked: &Checked,
) -> AppResult<i64> {
    if let Some(date) = records::record_date(form, &checked.values, subject.tz) {
        let window = consent_window(conn, subject.id)?;
        let now = Utc::now();
        records::check_date(
            &format!("values.{}", form.dated_by),
            date,
            subject.floor,
            window.first_signed,
            window.withdrawn_on,
            now,
            local_date(now, subject.tz),
        )
        .map_err(|e| AppError::Validation(vec![e]))?;
    }
    Ok(study_versions::running_id(
        conn,
        &def.study.id,
        &def.sha256,
    )?)
}

/// Each soft finding opens a query on its item (once while one is open).
fn open_queries(
    conn: &mut PgConnection,
    caller: &Caller,
    subject: &SubjectRef,
    id: i64,
    checked: &Checked,
) -> AppResult<()> {
    for f in &checked.flags {
        crate::api::monitoring::queries::open_automatic(
            conn,
            None,
            &caller.meta,
            subject.site_id,
            subject.id,
            ENTITY,
            id,
            &f.item,
            "edit_check",
            &f.message,
        )?;
    }
    Ok(())
}

fn to_json(v: &impl Serialize) -> AppResult<Value> {
    serde_json::to_value(v).map_err(AppError::internal)
}

fn values_of(v: &Value) -> Values {
    v.as_object().cloned().unwrap_or_default()
}

/// A subject's records of a form (those entered in error included, flagged).
#[utoipa::path(get, path = "/api/v1/subjects/{subject_code}/forms/{form}", tag = "forms",
    params(("subject_code" = String, Path), ("form" = String, Path)),
    responses((status = 200, body = Vec<FormRecord>), (status = 404, body = crate::error::Problem),
        (status = 409, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn list(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, String)>,
) -> AppResult<HttpResponse> {
    let scope = authorize(&caller, Permission::ReadClinical)?;
    let (code, form_id) = path.into_inner();
    engine_form(&state.study, &form_id)?;
    let items = db::run(&state.pool, move |conn| {
        let subject = find_subject(conn, &scope, &code)?;
        Ok(fr::list(conn, subject.id, &form_id)?
            .into_iter()
            .map(|r| FormRecord::of(r, &subject.code))
            .collect::<Vec<_>>())
    })
    .await?;
    Ok(HttpResponse::Ok().json(items))
}

/// Enter a record: its values are checked against the form (422 naming `values.<item>` for
/// a hard check); soft findings are stored as flags, each with an open query.
#[utoipa::path(post, path = "/api/v1/subjects/{subject_code}/forms/{form}", tag = "forms",
    params(("subject_code" = String, Path), ("form" = String, Path), ("Idempotency-Key" = Option<String>, Header)),
    request_body = NewFormRecord,
    responses((status = 201, body = FormRecord), (status = 403, body = crate::error::Problem),
        (status = 404, body = crate::error::Problem), (status = 409, body = crate::error::Problem),
        (status = 422, body = crate::error::Problem), (status = 423, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn create(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    body: Json<NewFormRecord>,
) -> AppResult<HttpResponse> {
    let scope = authorize(&caller, Permission::EnterClinical)?;
    let (code, form_id) = path.into_inner();
    engine_form(&state.study, &form_id)?;
    let def = state.study.clone();
    let b = body.value.clone();
    let c = caller.clone();
    idempotent_post(
        &state,
        &caller,
        &req,
        &body.raw,
        move |conn| find_subject(conn, &scope, &code),
        move |conn, subject| {
            crate::services::guard::ensure_unlocked(conn, subject.site_id, Some(subject.id))?;
            let form = form(&def, &form_id)?;
            let Placement { visit, repeat_key } =
                records::placement(&def, form, b.visit.as_deref())
                    .map_err(|e| AppError::Validation(vec![e]))?;
            let checked = checks::check(&def, form, &b.values).map_err(AppError::Validation)?;
            let version_id = check_in_context(conn, &def, form, &subject, &checked)?;
            let values = Value::Object(records::stored(&checked.values));
            let flags = records::flags_json(&checked.flags);
            let id = fr::insert(
                conn,
                &fr::NewRecord {
                    site_id: subject.site_id,
                    subject_id: subject.id,
                    form_id: &form.id,
                    visit_id: visit.as_deref(),
                    repeat_key: repeat_key.as_deref(),
                    study_version_id: version_id,
                    values: &values,
                    flags: &flags,
                    user_id: c.user_id,
                },
            )
            .map_err(conflict_on_unique(format!(
                "The form {} is already entered for visit {}: correct that record instead.",
                form.id,
                visit.as_deref().unwrap_or_default()
            )))?;
            let record = FormRecord::of(
                fr::find(conn, subject.id, &form.id, id, false)?,
                &subject.code,
            );
            let body = to_json(&record)?;
            audit::record(
                conn,
                &AuditEvent::new(Some(&c.actor), "create", ENTITY, &c.meta)
                    .record(id)
                    .site(Some(subject.site_id))
                    .subject(Some(subject.id))
                    .new_values(super::audit_view(body.clone())),
            )?;
            open_queries(conn, &c, &subject, id, &checked)?;
            crate::services::guard::after_change(
                conn,
                &c,
                ENTITY,
                None,
                subject.site_id,
                subject.id,
            )?;
            Ok(body)
        },
    )
    .await
}

fn find(
    conn: &mut PgConnection,
    scope: &Scope,
    code: &str,
    form: &str,
    id: i64,
    lock: bool,
) -> AppResult<(SubjectRef, fr::Row)> {
    let subject = find_subject(conn, scope, code)?;
    if lock {
        // a locked record is read, but not changed
        crate::services::guard::ensure_unlocked(conn, subject.site_id, Some(subject.id))?;
    }
    let row = fr::find(conn, subject.id, form, id, lock)?;
    Ok((subject, row))
}

/// One record.
#[utoipa::path(get, path = "/api/v1/subjects/{subject_code}/forms/{form}/{id}", tag = "forms",
    params(("subject_code" = String, Path), ("form" = String, Path), ("id" = i64, Path)),
    responses((status = 200, body = FormRecord), (status = 404, body = crate::error::Problem),
        (status = 409, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn get(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, String, i64)>,
) -> AppResult<HttpResponse> {
    let scope = authorize(&caller, Permission::ReadClinical)?;
    let (code, form_id, id) = path.into_inner();
    engine_form(&state.study, &form_id)?;
    let record = db::run(&state.pool, move |conn| {
        let (subject, row) = find(conn, &scope, &code, &form_id, id, false)?;
        Ok(FormRecord::of(row, &subject.code))
    })
    .await?;
    Ok(with_etag(StatusCode::OK, record.version, &record))
}

/// Correct a record (If-Match with its version, and a reason): the items sent replace
/// theirs, `null` clears one, and the whole record is checked again. A correction that
/// changes nothing writes nothing.
#[utoipa::path(patch, path = "/api/v1/subjects/{subject_code}/forms/{form}/{id}", tag = "forms",
    params(("subject_code" = String, Path), ("form" = String, Path), ("id" = i64, Path), ("If-Match" = String, Header)),
    request_body = FormRecordChange,
    responses((status = 200, body = FormRecord), (status = 404, body = crate::error::Problem),
        (status = 409, body = crate::error::Problem), (status = 412, body = crate::error::Problem),
        (status = 422, body = crate::error::Problem), (status = 423, body = crate::error::Problem),
        (status = 428, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn update(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    path: web::Path<(String, String, i64)>,
    body: Json<FormRecordChange>,
) -> AppResult<HttpResponse> {
    let scope = authorize(&caller, Permission::EnterClinical)?;
    // checked once the record is found: scope (404) comes before preconditions (428)
    let expected = if_match(&req);
    let (code, form_id, id) = path.into_inner();
    engine_form(&state.study, &form_id)?;
    let b = body.value;
    let reason =
        Reason::parse("reason", b.reason.as_deref()).map_err(|e| AppError::Validation(vec![e]))?;
    let def = state.study.clone();
    let record = db::transaction(&state.pool, move |conn| {
        let (subject, old) = find(conn, &scope, &code, &form_id, id, true)?;
        let expected = expected?;
        if old.deleted_at.is_some() {
            return Err(AppError::Conflict(
                "This record is marked entered in error.".into(),
            ));
        }
        if old.version != expected {
            return Err(AppError::PreconditionFailed);
        }
        let form = form(&def, &form_id)?;
        let before = values_of(&old.values);
        let input = records::merge(form, &before, &b.values);
        let checked = checks::check(&def, form, &input).map_err(AppError::Validation)?;
        let after = records::stored(&checked.values);
        let flags = records::flags_json(&checked.flags);
        if after == before && flags == old.flags {
            return Ok(FormRecord::of(old, &subject.code));
        }
        let version_id = check_in_context(conn, &def, form, &subject, &checked)?;
        fr::correct(
            conn,
            id,
            version_id,
            &Value::Object(after.clone()),
            &flags,
            reason.as_str(),
            caller.user_id,
        )?;
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
        open_queries(conn, &caller, &subject, id, &checked)?;
        crate::services::guard::after_change(
            conn,
            &caller,
            ENTITY,
            Some(id),
            subject.site_id,
            subject.id,
        )?;
        Ok(FormRecord::of(
            fr::find(conn, subject.id, &form_id, id, false)?,
            &subject.code,
        ))
    })
    .await?;
    Ok(with_etag(StatusCode::OK, record.version, &record))
}

/// Mark a record entered in error (a reason is required; nothing is removed).
#[utoipa::path(delete, path = "/api/v1/subjects/{subject_code}/forms/{form}/{id}", tag = "forms",
    params(("subject_code" = String, Path), ("form" = String, Path), ("id" = i64, Path), ("If-Match" = Option<String>, Header)),
    request_body = DeleteRequest,
    responses((status = 200, body = FormRecord), (status = 404, body = crate::error::Problem),
        (status = 409, body = crate::error::Problem), (status = 412, body = crate::error::Problem),
        (status = 422, body = crate::error::Problem), (status = 423, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn delete(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    path: web::Path<(String, String, i64)>,
    body: Json<DeleteRequest>,
) -> AppResult<HttpResponse> {
    let scope = authorize(&caller, Permission::EnterClinical)?;
    let expected = optional_if_match(&req)?;
    let reason = Reason::parse("reason", Some(&body.value.reason))
        .map_err(|e| AppError::Validation(vec![e]))?;
    let (code, form_id, id) = path.into_inner();
    engine_form(&state.study, &form_id)?;
    let record = db::transaction(&state.pool, move |conn| {
        let (subject, old) = find(conn, &scope, &code, &form_id, id, true)?;
        let deletion = Deletion {
            caller: &caller,
            subject: &subject,
            entity: ENTITY,
            noun: "record",
            id,
            expected,
            reason: &reason,
        };
        let before = FormRecord::of(old.clone(), &subject.code);
        deletion.run(
            conn,
            old.deleted_at.is_some(),
            old.version,
            &before,
            |conn| {
                fr::mark_deleted(conn, id, reason.as_str(), caller.user_id)?;
                Ok(FormRecord::of(
                    fr::find(conn, subject.id, &form_id, id, false)?,
                    &subject.code,
                ))
            },
        )
    })
    .await?;
    Ok(with_etag(StatusCode::OK, record.version, &record))
}
