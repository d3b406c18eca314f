//! The legacy paths of today's forms whose records are form records now
//! (`/subjects/{code}/temperatures[/{id}]`, `/subjects/{code}/injections[/{id}]`,
//! docs/engine-migration.md steps 3 and 5): the same bodies,
//! status codes and answers as before, served by the form engine (`services::form_records`).
//! A form plugs in with its body types (`deny_unknown_fields`, so unknown fields stay 422)
//! and two mappings: `to_values` (legacy body -> item values) and `from_record` (form record
//! -> legacy answer). Nothing else here knows a form.

use std::cmp::Ordering;

use actix_web::{http::StatusCode, web, HttpRequest, HttpResponse};
use chrono::{DateTime, DurationRound, SecondsFormat, TimeDelta, Utc};
use serde::{de::DeserializeOwned, Serialize};
use serde_json::{Map, Value};

use crate::api::{if_match, with_etag, Json};
use crate::auth::{authorize, Bearer, Caller, Permission};
use crate::db::subjects::SubjectRef;
use crate::db::{self, form_records as fr};
use crate::domain::values::Reason;
use crate::domain::FieldError;
use crate::error::{AppError, AppResult};
use crate::services::form_entry;
use crate::services::form_records::{self, FormRecord};
use crate::state::AppState;

use super::{at_once, created, find_subject, idempotent_post, optional_if_match, DeleteRequest};

/// A legacy form served by the engine.
pub trait LegacyForm: 'static {
    /// the form of the study definition
    const FORM: &'static str;
    type New: DeserializeOwned + Send + 'static;
    type Change: DeserializeOwned + Send + 'static;
    type Answer: Serialize + Send + 'static;

    /// The item values of a new record for `subject` (the engine checks and derives the
    /// rest); none when they need the subject and it is not known yet (the one-statement
    /// entry is tried before the subject is read).
    fn to_values(new: &Self::New, subject: Option<&SubjectRef>) -> Option<Map<String, Value>>;
    /// The items a correction changes (absent fields are left as they are), and its reason.
    fn change(change: &Self::Change) -> (Map<String, Value>, Option<String>);
    /// The legacy answer of a record.
    fn from_record(record: &FormRecord) -> AppResult<Self::Answer>;
    /// The legacy list order.
    fn order(a: &FormRecord, b: &FormRecord) -> Ordering;
}

/// A legacy datetime field as the engine's item value. The legacy tables kept microseconds
/// (PostgreSQL rounds finer digits), and so do their paths: the engine refuses more digits.
pub fn datetime(t: DateTime<Utc>) -> Value {
    let t = t.duration_round(TimeDelta::microseconds(1)).unwrap_or(t);
    Value::from(t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
}

/// A form record's stored value of `item` as text (absent or null: none).
pub fn text(r: &FormRecord, item: &str) -> Option<String> {
    r.values
        .get(item)
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// A stored value the engine checked is missing or unreadable: the data, not the client,
/// is wrong.
pub fn unreadable(r: &FormRecord, item: &str) -> AppError {
    AppError::internal(format!(
        "form record {} of {} holds no readable {item}",
        r.id, r.form
    ))
}

/// The engine names an item `values.<item>`; the legacy body names the field itself (the
/// item ids are the legacy field names).
fn legacy_fields(e: AppError) -> AppError {
    match e {
        AppError::Validation(errors) => AppError::Validation(
            errors
                .into_iter()
                .map(|e| match e.field.strip_prefix("values.") {
                    Some(f) => FieldError::new(f, e.message),
                    None => e,
                })
                .collect(),
        ),
        other => other,
    }
}

fn answer<F: LegacyForm>(r: &FormRecord) -> AppResult<(i32, F::Answer)> {
    Ok((r.version, F::from_record(r)?))
}

pub async fn list<F: LegacyForm>(
    state: web::Data<AppState>,
    caller: Caller,
    code: web::Path<String>,
) -> AppResult<HttpResponse> {
    let scope = authorize(&caller, Permission::ReadClinical)?;
    let code = code.into_inner();
    let items = db::run(&state.pool, move |conn| {
        let subject = find_subject(conn, &scope, &code)?;
        let mut records: Vec<FormRecord> = fr::list(conn, subject.id, F::FORM)?
            .into_iter()
            .map(|r| FormRecord::of(r, &subject.code))
            .collect();
        records.sort_by(F::order);
        records
            .iter()
            .map(F::from_record)
            .collect::<AppResult<Vec<_>>>()
    })
    .await?;
    Ok(HttpResponse::Ok().json(items))
}

pub async fn create<F: LegacyForm>(
    state: web::Data<AppState>,
    bearer: Bearer,
    req: HttpRequest,
    code: web::Path<String>,
    body: Json<F::New>,
) -> AppResult<HttpResponse> {
    let code = code.into_inner();
    // (values that need the subject wait for the step-by-step path, which reads it)
    if let Some(values) = F::to_values(&body.value, None) {
        let new = form_entry::Create {
            code: &code,
            form_id: F::FORM,
            visit: None,
            values: &values,
        };
        if let Some(record) = at_once(&state, &req, &bearer, &new).await? {
            let body =
                serde_json::to_value(F::from_record(&record)?).map_err(AppError::internal)?;
            return Ok(created(201, body));
        }
    }
    let caller = db::run(&state.pool, move |conn| Caller::load(conn, bearer)).await?;
    let scope = authorize(&caller, Permission::EnterClinical)?;
    let new = body.value;
    let def = state.study.clone();
    let c = caller.clone();
    idempotent_post(
        &state,
        &caller,
        &req,
        &body.raw,
        move |conn| find_subject(conn, &scope, &code),
        move |conn, subject| {
            let values = F::to_values(&new, Some(&subject))
                .ok_or_else(|| AppError::internal("the values of a record need its subject"))?;
            let entered = form_records::enter(conn, &def, &c, &subject, F::FORM, None, &values)
                .map_err(legacy_fields)?;
            let id = entered
                .get("id")
                .and_then(Value::as_i64)
                .ok_or_else(|| AppError::internal("the engine answered a record without id"))?;
            let record = FormRecord::of(
                fr::find(conn, subject.id, F::FORM, id, false)?,
                &subject.code,
            );
            serde_json::to_value(F::from_record(&record)?).map_err(AppError::internal)
        },
    )
    .await
}

pub async fn get<F: LegacyForm>(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, i64)>,
) -> AppResult<HttpResponse> {
    let scope = authorize(&caller, Permission::ReadClinical)?;
    let (code, id) = path.into_inner();
    let (version, body) = db::run(&state.pool, move |conn| {
        let subject = find_subject(conn, &scope, &code)?;
        answer::<F>(&FormRecord::of(
            fr::find(conn, subject.id, F::FORM, id, false)?,
            &subject.code,
        ))
    })
    .await?;
    Ok(with_etag(StatusCode::OK, version, &body))
}

pub async fn update<F: LegacyForm>(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    path: web::Path<(String, i64)>,
    body: Json<F::Change>,
) -> AppResult<HttpResponse> {
    let scope = authorize(&caller, Permission::EnterClinical)?;
    // checked once the record is found: scope (404) comes before preconditions (428)
    let expected = if_match(&req);
    let (change, reason) = F::change(&body.value);
    let reason =
        Reason::parse("reason", reason.as_deref()).map_err(|e| AppError::Validation(vec![e]))?;
    let (code, id) = path.into_inner();
    let def = state.study.clone();
    let (version, body) = db::transaction(&state.pool, move |conn| {
        let subject = find_subject(conn, &scope, &code)?;
        let record = form_records::correct(
            conn,
            &def,
            &caller,
            &subject,
            F::FORM,
            id,
            expected,
            &change,
            &reason,
        )
        .map_err(legacy_fields)?;
        answer::<F>(&record)
    })
    .await?;
    Ok(with_etag(StatusCode::OK, version, &body))
}

pub async fn delete<F: LegacyForm>(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    path: web::Path<(String, i64)>,
    body: Json<DeleteRequest>,
) -> AppResult<HttpResponse> {
    let scope = authorize(&caller, Permission::EnterClinical)?;
    let expected = optional_if_match(&req)?;
    let reason = Reason::parse("reason", Some(&body.value.reason))
        .map_err(|e| AppError::Validation(vec![e]))?;
    let (code, id) = path.into_inner();
    let def = state.study.clone();
    let (version, body) = db::transaction(&state.pool, move |conn| {
        let subject = find_subject(conn, &scope, &code)?;
        let record = form_records::mark_entered_in_error(
            conn,
            &def,
            &caller,
            &subject,
            F::FORM,
            id,
            expected,
            &reason,
        )?;
        answer::<F>(&record)
    })
    .await?;
    Ok(with_etag(StatusCode::OK, version, &body))
}
