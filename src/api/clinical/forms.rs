//! Records of the forms the study definition describes (issue 17), through one code path:
//! `/subjects/{code}/forms/{form}[/{id}]`. The values are checked against the running
//! definition (`domain::study::values`), stored exactly as entered, with their soft findings
//! flagged and queried; every change is audited with the old and new values of the items it
//! touched. Today's forms still in tables of their own keep their own paths until the engine
//! takes them over: on these routes they answer 409 naming their path.

use std::sync::Arc;

use actix_web::{http::StatusCode, web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::api::{if_match, resource, with_etag, Json};
use crate::auth::{authorize, Bearer, Caller, Permission};
use crate::db::{self, form_records as fr};
use crate::domain::study::Definition;
use crate::domain::values::Reason;
use crate::error::{AppError, AppResult};
use crate::state::AppState;

use super::{at_once, created, find_subject, idempotent_post, optional_if_match, DeleteRequest};

pub use crate::services::form_records::FormRecord;
use crate::services::{form_entry, form_records};

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
/// such form.
fn engine_form(def: &Arc<Definition>, id: &str) -> AppResult<()> {
    def.form(id).map(|_| ()).ok_or(AppError::NotFound)
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
    bearer: Bearer,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    body: Json<NewFormRecord>,
) -> AppResult<HttpResponse> {
    let (code, form_id) = path.into_inner();
    if engine_form(&state.study, &form_id).is_ok() {
        let new = form_entry::Create {
            code: &code,
            form_id: &form_id,
            visit: body.value.visit.as_deref(),
            values: &body.value.values,
        };
        if let Some(record) = at_once(&state, &req, &bearer, &new).await? {
            let body = serde_json::to_value(&record).map_err(AppError::internal)?;
            return Ok(created(201, body));
        }
    }
    let caller = db::run(&state.pool, move |conn| Caller::load(conn, bearer)).await?;
    let scope = authorize(&caller, Permission::EnterClinical)?;
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
            form_records::enter(
                conn,
                &def,
                &c,
                &subject,
                &form_id,
                b.visit.as_deref(),
                &b.values,
            )
        },
    )
    .await
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
        let subject = find_subject(conn, &scope, &code)?;
        Ok(FormRecord::of(
            fr::find(conn, subject.id, &form_id, id, false)?,
            &subject.code,
        ))
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
        let subject = find_subject(conn, &scope, &code)?;
        form_records::correct(
            conn, &def, &caller, &subject, &form_id, id, expected, &b.values, &reason,
        )
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
    let def = state.study.clone();
    let record = db::transaction(&state.pool, move |conn| {
        let subject = find_subject(conn, &scope, &code)?;
        form_records::mark_entered_in_error(
            conn, &def, &caller, &subject, &form_id, id, expected, &reason,
        )
    })
    .await?;
    Ok(with_etag(StatusCode::OK, record.version, &record))
}
