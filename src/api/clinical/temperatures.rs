//! The temperature CRF at its legacy path: several measurements a day; `fever` derives from
//! the definition's fever rule. The records are form records of the form `temperature`
//! (`legacy` serves them); this file is the legacy body and its mapping.

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
        resource("/subjects/{subject_code}/temperatures")
            .route(web::get().to(list))
            .route(web::post().to(create)),
    )
    .service(
        resource("/subjects/{subject_code}/temperatures/{id}")
            .route(web::get().to(get))
            .route(web::patch().to(update))
            .route(web::delete().to(delete)),
    );
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Temperature {
    pub id: i64,
    pub subject_code: String,
    pub measured_at: DateTime<Utc>,
    pub celsius: f64,
    /// rectal, axillary, oral, tympanic or temporal (as the study definition allows)
    pub method: String,
    /// above the definition's fever threshold
    pub fever: bool,
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
pub struct NewTemperature {
    pub measured_at: DateTime<Utc>,
    /// 30.0-45.0, one decimal
    pub celsius: f64,
    pub method: String,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemperatureChange {
    pub measured_at: Option<DateTime<Utc>>,
    pub celsius: Option<f64>,
    pub method: Option<String>,
    /// why the record is changed (required)
    pub reason: Option<String>,
}

fn measured_at(r: &FormRecord) -> Option<DateTime<Utc>> {
    text(r, "measured_at")
        .and_then(|s| DateTime::parse_from_rfc3339(&s).ok())
        .map(|t| t.with_timezone(&Utc))
}

pub enum Temperatures {}

impl LegacyForm for Temperatures {
    const FORM: &'static str = "temperature";
    type New = NewTemperature;
    type Change = TemperatureChange;
    type Answer = Temperature;

    fn to_values(n: &NewTemperature, _: Option<&SubjectRef>) -> Option<Map<String, Value>> {
        let mut v = Map::new();
        v.insert("measured_at".into(), at(n.measured_at));
        v.insert("celsius".into(), Value::from(n.celsius));
        v.insert("method".into(), Value::from(n.method.clone()));
        Some(v)
    }

    fn change(c: &TemperatureChange) -> (Map<String, Value>, Option<String>) {
        let mut v = Map::new();
        if let Some(t) = c.measured_at {
            v.insert("measured_at".into(), at(t));
        }
        if let Some(x) = c.celsius {
            v.insert("celsius".into(), Value::from(x));
        }
        if let Some(m) = &c.method {
            v.insert("method".into(), Value::from(m.clone()));
        }
        (v, c.reason.clone())
    }

    fn from_record(r: &FormRecord) -> AppResult<Temperature> {
        Ok(Temperature {
            id: r.id,
            subject_code: r.subject_code.clone(),
            measured_at: measured_at(r).ok_or_else(|| unreadable(r, "measured_at"))?,
            // one decimal: exact as f64's shortest text
            celsius: text(r, "celsius")
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| unreadable(r, "celsius"))?,
            method: text(r, "method").ok_or_else(|| unreadable(r, "method"))?,
            fever: r
                .values
                .get("fever")
                .and_then(Value::as_bool)
                .unwrap_or(false),
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
        (measured_at(a), a.id).cmp(&(measured_at(b), b.id))
    }
}

/// Temperatures of a subject (records marked entered in error included, flagged).
#[utoipa::path(get, path = "/api/v1/subjects/{subject_code}/temperatures", tag = "temperatures",
    params(("subject_code" = String, Path)),
    responses((status = 200, body = Vec<Temperature>), (status = 404, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn list(
    state: web::Data<AppState>,
    caller: Caller,
    code: web::Path<String>,
) -> AppResult<HttpResponse> {
    legacy::list::<Temperatures>(state, caller, code).await
}

/// Record a temperature.
#[utoipa::path(post, path = "/api/v1/subjects/{subject_code}/temperatures", tag = "temperatures",
    params(("subject_code" = String, Path), ("Idempotency-Key" = Option<String>, Header)),
    request_body = NewTemperature,
    responses((status = 201, body = Temperature), (status = 403, body = crate::error::Problem),
        (status = 404, body = crate::error::Problem), (status = 422, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn create(
    state: web::Data<AppState>,
    bearer: Bearer,
    req: HttpRequest,
    code: web::Path<String>,
    body: Json<NewTemperature>,
) -> AppResult<HttpResponse> {
    legacy::create::<Temperatures>(state, bearer, req, code, body).await
}

/// One temperature.
#[utoipa::path(get, path = "/api/v1/subjects/{subject_code}/temperatures/{id}", tag = "temperatures",
    params(("subject_code" = String, Path), ("id" = i64, Path)),
    responses((status = 200, body = Temperature), (status = 404, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn get(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, i64)>,
) -> AppResult<HttpResponse> {
    legacy::get::<Temperatures>(state, caller, path).await
}

/// Correct a temperature (If-Match with its version, and a reason).
#[utoipa::path(patch, path = "/api/v1/subjects/{subject_code}/temperatures/{id}", tag = "temperatures",
    params(("subject_code" = String, Path), ("id" = i64, Path), ("If-Match" = String, Header)),
    request_body = TemperatureChange,
    responses((status = 200, body = Temperature), (status = 404, body = crate::error::Problem),
        (status = 409, body = crate::error::Problem), (status = 412, body = crate::error::Problem),
        (status = 422, body = crate::error::Problem), (status = 428, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn update(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    path: web::Path<(String, i64)>,
    body: Json<TemperatureChange>,
) -> AppResult<HttpResponse> {
    legacy::update::<Temperatures>(state, caller, req, path, body).await
}

/// Mark a temperature entered in error (a reason is required; nothing is removed).
#[utoipa::path(delete, path = "/api/v1/subjects/{subject_code}/temperatures/{id}", tag = "temperatures",
    params(("subject_code" = String, Path), ("id" = i64, Path), ("If-Match" = Option<String>, Header)),
    request_body = DeleteRequest,
    responses((status = 200, body = Temperature), (status = 404, body = crate::error::Problem),
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
    legacy::delete::<Temperatures>(state, caller, req, path, body).await
}
