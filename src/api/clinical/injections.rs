//! The daily injection CRF at its legacy path: one injection a study day; the study day,
//! the dose the protocol's rule expects and a deviation (stored, flagged, queried with origin
//! `dose_check`) come from the definition's named rules (`study_day`, `dose`). The records
//! are form records of the form `injection` (`legacy` serves them); this file is the legacy
//! body and its mapping.

use std::cmp::Ordering;

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::api::{resource, Json};
use crate::auth::{Bearer, Caller};
use crate::db::subjects::SubjectRef;
use crate::error::AppResult;
use crate::services::form_records::FormRecord;
use crate::state::AppState;

use super::legacy::{self, datetime as at, text, unreadable, LegacyForm};
use super::DeleteRequest;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        resource("/subjects/{subject_code}/injections")
            .route(web::get().to(list))
            .route(web::post().to(create)),
    )
    .service(
        resource("/subjects/{subject_code}/injections/{id}")
            .route(web::get().to(get))
            .route(web::patch().to(update))
            .route(web::delete().to(delete)),
    );
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Injection {
    pub id: i64,
    pub subject_code: String,
    /// day 1 is the day of the first injection (site local date)
    pub study_day: i32,
    pub administered_at: DateTime<Utc>,
    pub dose_mg: f64,
    /// the weight used for the dose
    pub weight_kg: f64,
    /// subcutaneous (filled on this path when absent)
    pub route: Option<String>,
    pub injection_site: String,
    pub lot_number: String,
    pub given: bool,
    pub not_given_reason: Option<String>,
    /// what the protocol's dose rule expects on this day
    pub expected_dose_mg: f64,
    pub protocol_deviation: bool,
    pub deviation_reason: Option<String>,
    pub version: i32,
    pub created_at: DateTime<Utc>,
    pub created_by: i64,
    pub updated_at: DateTime<Utc>,
    pub updated_by: i64,
    pub deleted_at: Option<DateTime<Utc>>,
    pub deleted_reason: Option<String>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewInjection {
    pub study_day: i32,
    pub administered_at: DateTime<Utc>,
    pub dose_mg: f64,
    /// weight used for the dose; default: the subject's weight
    pub weight_kg: Option<f64>,
    /// only "subcutaneous"
    pub route: Option<String>,
    /// one of the protocol's injection sites
    pub injection_site: String,
    pub lot_number: String,
    pub given: bool,
    /// required when `given` is false
    pub not_given_reason: Option<String>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InjectionChange {
    pub study_day: Option<i32>,
    pub administered_at: Option<DateTime<Utc>>,
    pub dose_mg: Option<f64>,
    pub weight_kg: Option<f64>,
    pub route: Option<String>,
    pub injection_site: Option<String>,
    pub lot_number: Option<String>,
    pub given: Option<bool>,
    pub not_given_reason: Option<String>,
    /// why the record is changed (required)
    pub reason: Option<String>,
}

/// A decimal item's stored text as the legacy JSON number (two digits: exact as f64's
/// shortest text).
fn number(r: &FormRecord, item: &str) -> AppResult<f64> {
    text(r, item)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| unreadable(r, item))
}

fn flag(r: &FormRecord, item: &str) -> Option<bool> {
    r.values.get(item).and_then(Value::as_bool)
}

fn day(r: &FormRecord) -> Option<i64> {
    r.values.get("study_day").and_then(Value::as_i64)
}

/// An item the body names as the client sent it (the item ids are the legacy field names).
fn put<T: Into<Value> + Clone>(v: &mut Map<String, Value>, item: &str, x: Option<&T>) {
    if let Some(x) = x {
        v.insert(item.into(), x.clone().into());
    }
}

pub enum Injections {}

impl LegacyForm for Injections {
    const FORM: &'static str = "injection";
    type New = NewInjection;
    type Change = InjectionChange;
    type Answer = Injection;

    fn to_values(n: &NewInjection, subject: Option<&SubjectRef>) -> Option<Map<String, Value>> {
        let mut v = Map::new();
        v.insert("study_day".into(), Value::from(n.study_day));
        v.insert("administered_at".into(), at(n.administered_at));
        v.insert("dose_mg".into(), Value::from(n.dose_mg));
        // the dose is per kg of the weight it was computed for: the subject's unless given
        v.insert(
            "weight_kg".into(),
            Value::from(n.weight_kg.or(subject.map(|s| s.weight_kg))?),
        );
        v.insert(
            "route".into(),
            Value::from(n.route.clone().unwrap_or_else(|| "subcutaneous".into())),
        );
        v.insert(
            "injection_site".into(),
            Value::from(n.injection_site.clone()),
        );
        v.insert("lot_number".into(), Value::from(n.lot_number.clone()));
        v.insert("given".into(), Value::from(n.given));
        put(&mut v, "not_given_reason", n.not_given_reason.as_ref());
        Some(v)
    }

    fn change(c: &InjectionChange) -> (Map<String, Value>, Option<String>) {
        let mut v = Map::new();
        put(&mut v, "study_day", c.study_day.as_ref());
        if let Some(t) = c.administered_at {
            v.insert("administered_at".into(), at(t));
        }
        put(&mut v, "dose_mg", c.dose_mg.as_ref());
        put(&mut v, "weight_kg", c.weight_kg.as_ref());
        put(&mut v, "route", c.route.as_ref());
        put(&mut v, "injection_site", c.injection_site.as_ref());
        put(&mut v, "lot_number", c.lot_number.as_ref());
        put(&mut v, "given", c.given.as_ref());
        put(&mut v, "not_given_reason", c.not_given_reason.as_ref());
        (v, c.reason.clone())
    }

    fn from_record(r: &FormRecord) -> AppResult<Injection> {
        Ok(Injection {
            id: r.id,
            subject_code: r.subject_code.clone(),
            study_day: day(r)
                .and_then(|d| i32::try_from(d).ok())
                .ok_or_else(|| unreadable(r, "study_day"))?,
            administered_at: text(r, "administered_at")
                .and_then(|s| DateTime::parse_from_rfc3339(&s).ok())
                .map(|t| t.with_timezone(&Utc))
                .ok_or_else(|| unreadable(r, "administered_at"))?,
            dose_mg: number(r, "dose_mg")?,
            weight_kg: number(r, "weight_kg")?,
            route: text(r, "route"),
            injection_site: text(r, "injection_site")
                .ok_or_else(|| unreadable(r, "injection_site"))?,
            lot_number: text(r, "lot_number").ok_or_else(|| unreadable(r, "lot_number"))?,
            given: flag(r, "given").ok_or_else(|| unreadable(r, "given"))?,
            not_given_reason: text(r, "not_given_reason"),
            expected_dose_mg: number(r, "expected_dose_mg")?,
            protocol_deviation: flag(r, "protocol_deviation").unwrap_or(false),
            deviation_reason: text(r, "deviation_reason"),
            version: r.version,
            created_at: r.created_at,
            created_by: r.created_by,
            updated_at: r.updated_at,
            updated_by: r.updated_by,
            deleted_at: r.deleted_at,
            deleted_reason: r.deleted_reason.clone(),
        })
    }

    fn order(a: &FormRecord, b: &FormRecord) -> Ordering {
        (day(a), a.id).cmp(&(day(b), b.id))
    }
}

/// Injections of a subject (records marked entered in error included, flagged).
#[utoipa::path(get, path = "/api/v1/subjects/{subject_code}/injections", tag = "injections",
    params(("subject_code" = String, Path)),
    responses((status = 200, body = Vec<Injection>), (status = 404, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn list(
    state: web::Data<AppState>,
    caller: Caller,
    code: web::Path<String>,
) -> AppResult<HttpResponse> {
    legacy::list::<Injections>(state, caller, code).await
}

/// Record the day's injection.
#[utoipa::path(post, path = "/api/v1/subjects/{subject_code}/injections", tag = "injections",
    params(("subject_code" = String, Path), ("Idempotency-Key" = Option<String>, Header)),
    request_body = NewInjection,
    responses((status = 201, body = Injection), (status = 403, body = crate::error::Problem),
        (status = 404, body = crate::error::Problem),
        (status = 409, description = "that study day already has an injection", body = crate::error::Problem),
        (status = 422, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn create(
    state: web::Data<AppState>,
    bearer: Bearer,
    req: HttpRequest,
    code: web::Path<String>,
    body: Json<NewInjection>,
) -> AppResult<HttpResponse> {
    legacy::create::<Injections>(state, bearer, req, code, body).await
}

/// One injection.
#[utoipa::path(get, path = "/api/v1/subjects/{subject_code}/injections/{id}", tag = "injections",
    params(("subject_code" = String, Path), ("id" = i64, Path)),
    responses((status = 200, body = Injection), (status = 404, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn get(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, i64)>,
) -> AppResult<HttpResponse> {
    legacy::get::<Injections>(state, caller, path).await
}

/// Correct an injection (If-Match with its version, and a reason). The dose is checked
/// again against the protocol.
#[utoipa::path(patch, path = "/api/v1/subjects/{subject_code}/injections/{id}", tag = "injections",
    params(("subject_code" = String, Path), ("id" = i64, Path), ("If-Match" = String, Header)),
    request_body = InjectionChange,
    responses((status = 200, body = Injection), (status = 404, body = crate::error::Problem),
        (status = 409, body = crate::error::Problem), (status = 412, body = crate::error::Problem),
        (status = 422, body = crate::error::Problem), (status = 428, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn update(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    path: web::Path<(String, i64)>,
    body: Json<InjectionChange>,
) -> AppResult<HttpResponse> {
    legacy::update::<Injections>(state, caller, req, path, body).await
}

/// Mark an injection entered in error (a reason is required; nothing is removed).
#[utoipa::path(delete, path = "/api/v1/subjects/{subject_code}/injections/{id}", tag = "injections",
    params(("subject_code" = String, Path), ("id" = i64, Path), ("If-Match" = Option<String>, Header)),
    request_body = DeleteRequest,
    responses((status = 200, body = Injection), (status = 404, body = crate::error::Problem),
        (status = 409, body = crate::error::Problem), (status = 412, body = crate::error::Problem),
        (status = 422, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn delete(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    path: web::Path<(String, i64)>,
    body: Json<DeleteRequest>,
) -> AppResult<HttpResponse> {
    legacy::delete::<Injections>(state, caller, req, path, body).await
}
