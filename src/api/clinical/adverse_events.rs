//! Adverse event reports at their legacy path. The records are form records of the form
//! `adverse_event` (`legacy` serves them); the definition checks them (dates, grade,
//! seriousness, MedDRA code) and its `sae_alert` rule queues the safety desk's alert for a
//! serious one. Never deleted: only marked entered in error, with a reason. This file is the
//! legacy body and its mapping.

use std::cmp::Ordering;

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::api::{resource, Json};
use crate::auth::{Bearer, Caller};
use crate::db::subjects::SubjectRef;
use crate::error::AppResult;
use crate::services::form_records::FormRecord;
use crate::state::AppState;

use super::legacy::{self, text, unreadable, LegacyForm};
use super::DeleteRequest;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        resource("/subjects/{subject_code}/adverse-events")
            .route(web::get().to(list))
            .route(web::post().to(create)),
    )
    .service(
        resource("/subjects/{subject_code}/adverse-events/{id}")
            .route(web::get().to(get))
            .route(web::patch().to(update))
            .route(web::delete().to(delete)),
    );
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Seriousness {
    Death,
    LifeThreatening,
    Hospitalisation,
    Disability,
    CongenitalAnomaly,
    OtherMedicallyImportant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Relationship {
    NotRelated,
    Unlikely,
    Possible,
    Probable,
    Definite,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ActionTaken {
    None,
    DoseReduced,
    Interrupted,
    Withdrawn,
    NotApplicable,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Recovered,
    Recovering,
    NotRecovered,
    RecoveredWithSequelae,
    Fatal,
    Unknown,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AdverseEvent {
    pub id: i64,
    pub subject_code: String,
    /// verbatim, as reported
    pub term: String,
    pub meddra_code: Option<String>,
    pub meddra_term: Option<String>,
    /// partial ISO 8601: YYYY, YYYY-MM or YYYY-MM-DD
    pub onset_date: String,
    pub end_date: Option<String>,
    /// CTCAE grade 1-5
    pub grade: i16,
    pub serious: bool,
    pub seriousness_criteria: Vec<String>,
    pub relationship: String,
    pub action_taken: String,
    pub outcome: String,
    /// when the site learnt of the event
    pub awareness_date: NaiveDate,
    pub version: i32,
    pub created_at: DateTime<Utc>,
    pub created_by: i64,
    pub updated_at: DateTime<Utc>,
    pub updated_by: i64,
    pub deleted_at: Option<DateTime<Utc>>,
    pub deleted_reason: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewAdverseEvent {
    pub term: String,
    /// 8 digits
    pub meddra_code: Option<String>,
    pub meddra_term: Option<String>,
    pub onset_date: String,
    pub end_date: Option<String>,
    pub grade: i16,
    pub serious: bool,
    #[serde(default)]
    pub seriousness_criteria: Vec<Seriousness>,
    pub relationship: Relationship,
    pub action_taken: ActionTaken,
    pub outcome: Outcome,
    pub awareness_date: NaiveDate,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdverseEventChange {
    pub term: Option<String>,
    pub meddra_code: Option<String>,
    pub meddra_term: Option<String>,
    pub onset_date: Option<String>,
    pub end_date: Option<String>,
    pub grade: Option<i16>,
    pub serious: Option<bool>,
    pub seriousness_criteria: Option<Vec<Seriousness>>,
    pub relationship: Option<Relationship>,
    pub action_taken: Option<ActionTaken>,
    pub outcome: Option<Outcome>,
    pub awareness_date: Option<NaiveDate>,
    /// why the record is changed (required)
    pub reason: Option<String>,
}

fn name<T: Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// The criteria as the item's value: an empty list is no value (the engine stores none, and
/// a correction to `[]` clears them).
fn criteria(c: &[Seriousness]) -> Value {
    if c.is_empty() {
        Value::Null
    } else {
        Value::Array(c.iter().map(name).collect())
    }
}

fn date(d: NaiveDate) -> Value {
    Value::from(d.format("%Y-%m-%d").to_string())
}

fn required(r: &FormRecord, item: &str) -> AppResult<String> {
    text(r, item).ok_or_else(|| unreadable(r, item))
}

pub enum AdverseEvents {}

impl LegacyForm for AdverseEvents {
    const FORM: &'static str = "adverse_event";
    type New = NewAdverseEvent;
    type Change = AdverseEventChange;
    type Answer = AdverseEvent;

    fn to_values(n: &NewAdverseEvent, _: Option<&SubjectRef>) -> Option<Map<String, Value>> {
        let mut v = Map::new();
        v.insert("term".into(), Value::from(n.term.clone()));
        if let Some(c) = &n.meddra_code {
            v.insert("meddra_code".into(), Value::from(c.clone()));
        }
        if let Some(t) = &n.meddra_term {
            v.insert("meddra_term".into(), Value::from(t.clone()));
        }
        v.insert("onset_date".into(), Value::from(n.onset_date.clone()));
        if let Some(e) = &n.end_date {
            v.insert("end_date".into(), Value::from(e.clone()));
        }
        v.insert("grade".into(), Value::from(n.grade));
        v.insert("serious".into(), Value::from(n.serious));
        if !n.seriousness_criteria.is_empty() {
            v.insert(
                "seriousness_criteria".into(),
                criteria(&n.seriousness_criteria),
            );
        }
        v.insert("relationship".into(), name(&n.relationship));
        v.insert("action_taken".into(), name(&n.action_taken));
        v.insert("outcome".into(), name(&n.outcome));
        v.insert("awareness_date".into(), date(n.awareness_date));
        Some(v)
    }

    fn change(c: &AdverseEventChange) -> (Map<String, Value>, Option<String>) {
        let mut v = Map::new();
        // absent fields are left as they are (a legacy body cannot clear one with null)
        let texts = [
            ("term", &c.term),
            ("meddra_code", &c.meddra_code),
            ("meddra_term", &c.meddra_term),
            ("onset_date", &c.onset_date),
            ("end_date", &c.end_date),
        ];
        for (item, value) in texts {
            if let Some(x) = value {
                v.insert(item.into(), Value::from(x.clone()));
            }
        }
        if let Some(g) = c.grade {
            v.insert("grade".into(), Value::from(g));
        }
        if let Some(b) = c.serious {
            v.insert("serious".into(), Value::from(b));
        }
        if let Some(x) = &c.seriousness_criteria {
            v.insert("seriousness_criteria".into(), criteria(x));
        }
        if let Some(x) = &c.relationship {
            v.insert("relationship".into(), name(x));
        }
        if let Some(x) = &c.action_taken {
            v.insert("action_taken".into(), name(x));
        }
        if let Some(x) = &c.outcome {
            v.insert("outcome".into(), name(x));
        }
        if let Some(d) = c.awareness_date {
            v.insert("awareness_date".into(), date(d));
        }
        (v, c.reason.clone())
    }

    fn from_record(r: &FormRecord) -> AppResult<AdverseEvent> {
        Ok(AdverseEvent {
            id: r.id,
            subject_code: r.subject_code.clone(),
            term: required(r, "term")?,
            meddra_code: text(r, "meddra_code"),
            meddra_term: text(r, "meddra_term"),
            onset_date: required(r, "onset_date")?,
            end_date: text(r, "end_date"),
            grade: r
                .values
                .get("grade")
                .and_then(Value::as_i64)
                .and_then(|g| i16::try_from(g).ok())
                .ok_or_else(|| unreadable(r, "grade"))?,
            serious: r
                .values
                .get("serious")
                .and_then(Value::as_bool)
                .ok_or_else(|| unreadable(r, "serious"))?,
            // absent when not serious: answered as the empty list it always was
            seriousness_criteria: r
                .values
                .get("seriousness_criteria")
                .and_then(Value::as_array)
                .map(|c| {
                    c.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
            relationship: required(r, "relationship")?,
            action_taken: required(r, "action_taken")?,
            outcome: required(r, "outcome")?,
            awareness_date: text(r, "awareness_date")
                .and_then(|s| NaiveDate::parse_from_str(&s, "%Y-%m-%d").ok())
                .ok_or_else(|| unreadable(r, "awareness_date"))?,
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
        a.id.cmp(&b.id)
    }
}

/// Adverse events of a subject (records marked entered in error included, flagged).
#[utoipa::path(get, path = "/api/v1/subjects/{subject_code}/adverse-events", tag = "adverse events",
    params(("subject_code" = String, Path)),
    responses((status = 200, body = Vec<AdverseEvent>), (status = 404, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn list(
    state: web::Data<AppState>,
    caller: Caller,
    code: web::Path<String>,
) -> AppResult<HttpResponse> {
    legacy::list::<AdverseEvents>(state, caller, code).await
}

/// Report an adverse event. A serious one queues an alert to the sponsor's safety desk.
#[utoipa::path(post, path = "/api/v1/subjects/{subject_code}/adverse-events", tag = "adverse events",
    params(("subject_code" = String, Path), ("Idempotency-Key" = Option<String>, Header)),
    request_body = NewAdverseEvent,
    responses((status = 201, body = AdverseEvent), (status = 403, body = crate::error::Problem),
        (status = 404, body = crate::error::Problem), (status = 422, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn create(
    state: web::Data<AppState>,
    bearer: Bearer,
    req: HttpRequest,
    code: web::Path<String>,
    body: Json<NewAdverseEvent>,
) -> AppResult<HttpResponse> {
    legacy::create::<AdverseEvents>(state, bearer, req, code, body).await
}

/// One adverse event.
#[utoipa::path(get, path = "/api/v1/subjects/{subject_code}/adverse-events/{id}", tag = "adverse events",
    params(("subject_code" = String, Path), ("id" = i64, Path)),
    responses((status = 200, body = AdverseEvent), (status = 404, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn get(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, i64)>,
) -> AppResult<HttpResponse> {
    legacy::get::<AdverseEvents>(state, caller, path).await
}

/// Correct an adverse event (If-Match with its version, and a reason). Becoming serious
/// queues an alert.
#[utoipa::path(patch, path = "/api/v1/subjects/{subject_code}/adverse-events/{id}", tag = "adverse events",
    params(("subject_code" = String, Path), ("id" = i64, Path), ("If-Match" = String, Header)),
    request_body = AdverseEventChange,
    responses((status = 200, body = AdverseEvent), (status = 404, body = crate::error::Problem),
        (status = 409, body = crate::error::Problem), (status = 412, body = crate::error::Problem),
        (status = 422, body = crate::error::Problem), (status = 428, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn update(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    path: web::Path<(String, i64)>,
    body: Json<AdverseEventChange>,
) -> AppResult<HttpResponse> {
    legacy::update::<AdverseEvents>(state, caller, req, path, body).await
}

/// Mark an adverse event entered in error (a reason is required; nothing is removed).
#[utoipa::path(delete, path = "/api/v1/subjects/{subject_code}/adverse-events/{id}", tag = "adverse events",
    params(("subject_code" = String, Path), ("id" = i64, Path), ("If-Match" = Option<String>, Header)),
    request_body = DeleteRequest,
    responses((status = 200, body = AdverseEvent), (status = 404, body = crate::error::Problem),
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
    legacy::delete::<AdverseEvents>(state, caller, req, path, body).await
}
