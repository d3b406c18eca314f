//! Adverse event reports. A serious one queues an alert for the sponsor's safety desk in
//! the same transaction. Never deleted: only marked entered in error, with a reason.

use actix_web::{http::StatusCode, web, HttpRequest, HttpResponse};
use chrono::{DateTime, NaiveDate, Utc};
use diesel::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::ToSchema;

use crate::api::{if_match, resource, with_etag, Json};
use crate::audit::{self, diff, AuditEvent};
use crate::auth::{authorize, Caller, Permission, Scope};
use crate::db;
use crate::domain;
use crate::domain::partial_date::{self, PartialDate};
use crate::domain::protocol::Protocol;
use crate::domain::time::local_date;
use crate::domain::values::{bounded_text, Reason};
use crate::domain::FieldError;
use crate::error::{AppError, AppResult};
use crate::schema::adverse_events as ae;
use crate::services::sae;
use crate::state::AppState;

use super::{
    audit_view, consent_window, find_subject, idempotent_post, optional_if_match, DeleteRequest,
    Deletion, SubjectRef,
};

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

fn name<T: Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = ae)]
pub struct AdverseEventRow {
    pub id: i64,
    pub site_id: i64,
    pub subject_id: i64,
    pub term: String,
    pub meddra_code: Option<String>,
    pub meddra_term: Option<String>,
    pub onset_date: String,
    pub end_date: Option<String>,
    pub grade: i16,
    pub serious: bool,
    pub seriousness_criteria: Vec<String>,
    pub relationship: String,
    pub action_taken: String,
    pub outcome: String,
    pub awareness_date: NaiveDate,
    pub version: i32,
    pub created_at: DateTime<Utc>,
    pub created_by: i64,
    pub updated_at: DateTime<Utc>,
    pub updated_by: i64,
    pub deleted_at: Option<DateTime<Utc>>,
    pub deleted_by: Option<i64>,
    pub deleted_reason: Option<String>,
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

impl AdverseEvent {
    pub fn from_row(r: AdverseEventRow, code: &str) -> Self {
        Self {
            id: r.id,
            subject_code: code.to_owned(),
            term: r.term,
            meddra_code: r.meddra_code,
            meddra_term: r.meddra_term,
            onset_date: r.onset_date,
            end_date: r.end_date,
            grade: r.grade,
            serious: r.serious,
            seriousness_criteria: r.seriousness_criteria,
            relationship: r.relationship,
            action_taken: r.action_taken,
            outcome: r.outcome,
            awareness_date: r.awareness_date,
            version: r.version,
            created_at: r.created_at,
            created_by: r.created_by,
            updated_at: r.updated_at,
            updated_by: r.updated_by,
            deleted_at: r.deleted_at,
            deleted_reason: r.deleted_reason,
        }
    }
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

/// What [`validate`] accepted: the onset, and the free text as checked (what is stored).
struct Checked {
    onset: PartialDate,
    term: String,
    meddra_term: Option<String>,
}

/// The field-level and consistency checks that need no database.
fn validate(b: &NewAdverseEvent, today: NaiveDate) -> AppResult<Checked> {
    let mut errors: Vec<FieldError> = Vec::new();
    let term = bounded_text("term", &b.term, 200)
        .map_err(|e| errors.push(e))
        .ok();
    if let Some(code) = &b.meddra_code {
        if code.len() != 8 || !code.bytes().all(|c| c.is_ascii_digit()) {
            errors.push(FieldError::new("meddra_code", "must be 8 digits"));
        }
    }
    let meddra_term = match &b.meddra_term {
        None => None,
        Some(t) => match bounded_text("meddra_term", t, 200) {
            Ok(t) => Some(t),
            Err(e) => {
                errors.push(e);
                None
            }
        },
    };
    let onset = PartialDate::parse(&b.onset_date);
    if onset.is_none() {
        errors.push(FieldError::new(
            "onset_date",
            "must be YYYY, YYYY-MM or YYYY-MM-DD",
        ));
    }
    let end = match b.end_date.as_deref() {
        None => None,
        Some(s) => {
            let p = PartialDate::parse(s);
            if p.is_none() {
                errors.push(FieldError::new(
                    "end_date",
                    "must be YYYY, YYYY-MM or YYYY-MM-DD",
                ));
            }
            p
        }
    };
    // the order and future of the dates, as the engine checks every form's (`not_before`)
    let awareness = PartialDate::of(b.awareness_date);
    let mut order = vec![
        partial_date::not_in_future("awareness_date", &awareness, today),
        end.map_or(Ok(()), |e| {
            partial_date::not_in_future("end_date", &e, today)
        }),
    ];
    if let Some(o) = onset {
        order.push(partial_date::not_in_future("onset_date", &o, today));
        if let Some(e) = end {
            order.push(partial_date::not_before("end_date", &e, "onset_date", &o));
        }
        order.push(partial_date::not_before(
            "awareness_date",
            &awareness,
            "onset_date",
            &o,
        ));
    }
    errors.extend(order.into_iter().filter_map(Result::err));
    if !(1..=5).contains(&b.grade) {
        errors.push(FieldError::new("grade", "CTCAE grade 1 to 5"));
    }
    let mut criteria = b.seriousness_criteria.clone();
    criteria.sort_by_key(name);
    criteria.dedup();
    if criteria.len() != b.seriousness_criteria.len() {
        errors.push(FieldError::new(
            "seriousness_criteria",
            "lists a criterion twice",
        ));
    }
    if b.serious && criteria.is_empty() {
        errors.push(FieldError::new(
            "seriousness_criteria",
            "a serious event needs at least one criterion",
        ));
    }
    if !b.serious && !criteria.is_empty() {
        errors.push(FieldError::new(
            "seriousness_criteria",
            "must be empty when the event is not serious",
        ));
    }
    // grade 5 iff outcome fatal iff criterion death
    let death = criteria.contains(&Seriousness::Death);
    let fatal = b.outcome == Outcome::Fatal;
    let grade5 = b.grade == 5;
    if death != fatal || fatal != grade5 {
        for (field, holds) in [
            ("grade", grade5),
            ("outcome", fatal),
            ("seriousness_criteria", death),
        ] {
            if !holds {
                errors.push(FieldError::new(
                    field,
                    "grade 5, outcome fatal and the criterion death go together",
                ));
            }
        }
    }
    if matches!(
        b.outcome,
        Outcome::Recovered | Outcome::RecoveredWithSequelae
    ) && b.end_date.is_none()
    {
        errors.push(FieldError::new(
            "end_date",
            "required when the subject recovered",
        ));
    }
    match (onset, term, errors.is_empty()) {
        (Some(onset), Some(term), true) => Ok(Checked {
            onset,
            term,
            meddra_term,
        }),
        _ => Err(AppError::Validation(errors)),
    }
}

/// The event's dates against the subject: not before its date floor (birth month, 1900),
/// the onset not before the first consent.
fn check_consent(
    conn: &mut PgConnection,
    subject: &SubjectRef,
    onset: PartialDate,
    awareness: NaiveDate,
) -> AppResult<()> {
    let floor = [
        subject.floor.check_partial("onset_date", &onset),
        subject.floor.check("awareness_date", awareness),
    ];
    let errors: Vec<FieldError> = floor.into_iter().filter_map(Result::err).collect();
    if !errors.is_empty() {
        return Err(AppError::Validation(errors));
    }
    let window = consent_window(conn, subject.id)?;
    match window.first_signed {
        None => Err(AppError::invalid(
            "onset_date",
            "no informed consent is recorded for this subject: record the consent first",
        )),
        Some(signed) if onset.cmp_date(signed).is_lt() => Err(AppError::invalid(
            "onset_date",
            format!("is before the informed consent signed on {signed}"),
        )),
        _ => Ok(()),
    }
}

fn alert_payload(
    protocol: &Protocol,
    site_code: &str,
    subject: &SubjectRef,
    ev: &AdverseEvent,
    caller: &Caller,
) -> Value {
    let event = json!({
        "term": ev.term,
        "meddra_code": ev.meddra_code,
        "grade": ev.grade,
        "seriousness_criteria": ev.seriousness_criteria,
        "relationship": ev.relationship,
        "outcome": ev.outcome,
        "onset_date": ev.onset_date,
        "awareness_date": ev.awareness_date,
    });
    let mut record = serde_json::Map::new();
    record.insert("adverse_event_id".into(), json!(ev.id));
    domain::sae::payload(&domain::sae::Report {
        study_id: &protocol.file.study.id,
        protocol_hash: &protocol.file_hash,
        site_code,
        subject_code: &subject.code,
        record,
        event: event.as_object().unwrap_or(&serde_json::Map::new()),
        awareness: Some(ev.awareness_date),
        reported_by: caller.user_id,
        reported_at: Utc::now(),
    })
}

fn find(
    conn: &mut PgConnection,
    scope: &Scope,
    code: &str,
    id: i64,
    lock: bool,
) -> AppResult<(SubjectRef, AdverseEventRow)> {
    let subject = find_subject(conn, scope, code)?;
    if lock {
        // a locked record is read, but not changed
        crate::services::guard::ensure_unlocked(conn, subject.site_id, Some(subject.id))?;
    }
    let q = ae::table
        .filter(ae::id.eq(id))
        .filter(ae::subject_id.eq(subject.id))
        .select(AdverseEventRow::as_select());
    let row = if lock {
        q.for_update().first(conn)?
    } else {
        q.first(conn)?
    };
    Ok((subject, row))
}

fn to_json(v: &impl Serialize) -> AppResult<Value> {
    serde_json::to_value(v).map_err(AppError::internal)
}

fn criteria_names(c: &[Seriousness]) -> Vec<String> {
    c.iter().map(name).collect()
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
    let scope = authorize(&caller, Permission::ReadClinical)?;
    let code = code.into_inner();
    let items = db::run(&state.pool, move |conn| {
        let subject = find_subject(conn, &scope, &code)?;
        let rows: Vec<AdverseEventRow> = ae::table
            .filter(ae::subject_id.eq(subject.id))
            .order(ae::id)
            .select(AdverseEventRow::as_select())
            .load(conn)?;
        Ok(rows
            .into_iter()
            .map(|r| AdverseEvent::from_row(r, &subject.code))
            .collect::<Vec<_>>())
    })
    .await?;
    Ok(HttpResponse::Ok().json(items))
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
    caller: Caller,
    req: HttpRequest,
    code: web::Path<String>,
    body: Json<NewAdverseEvent>,
) -> AppResult<HttpResponse> {
    let scope = authorize(&caller, Permission::EnterClinical)?;
    let b = body.value.clone();
    let code = code.into_inner();
    let protocol = state.protocol.clone();
    let c = caller.clone();
    idempotent_post(
        &state,
        &caller,
        &req,
        &body.raw,
        move |conn| find_subject(conn, &scope, &code),
        move |conn, subject| enter(conn, &protocol, &c, &subject, &b),
    )
    .await
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
    let scope = authorize(&caller, Permission::ReadClinical)?;
    let (code, id) = path.into_inner();
    let ev = db::run(&state.pool, move |conn| {
        let (subject, row) = find(conn, &scope, &code, id, false)?;
        Ok(AdverseEvent::from_row(row, &subject.code))
    })
    .await?;
    Ok(with_etag(StatusCode::OK, ev.version, &ev))
}

fn parse_enum<T: for<'de> Deserialize<'de>>(s: &str) -> Option<T> {
    serde_json::from_value(Value::String(s.to_owned())).ok()
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
    let scope = authorize(&caller, Permission::EnterClinical)?;
    // checked once the record is found: scope (404) comes before preconditions (428)
    let expected = if_match(&req);
    let b = body.value;
    let reason =
        Reason::parse("reason", b.reason.as_deref()).map_err(|e| AppError::Validation(vec![e]))?;
    let (code, id) = path.into_inner();
    let protocol = state.protocol.clone();
    let ev = db::transaction(&state.pool, move |conn| {
        let (subject, old) = find(conn, &scope, &code, id, true)?;
        let expected = expected?;
        if old.deleted_at.is_some() {
            return Err(AppError::Conflict(
                "This adverse event is marked entered in error.".into(),
            ));
        }
        if old.version != expected {
            return Err(AppError::PreconditionFailed);
        }
        let old_criteria: Vec<Seriousness> = old
            .seriousness_criteria
            .iter()
            .filter_map(|c| parse_enum(c))
            .collect();
        let merged = NewAdverseEvent {
            term: b.term.clone().unwrap_or(old.term.clone()),
            meddra_code: b.meddra_code.clone().or(old.meddra_code.clone()),
            meddra_term: b.meddra_term.clone().or(old.meddra_term.clone()),
            onset_date: b.onset_date.clone().unwrap_or(old.onset_date.clone()),
            end_date: b.end_date.clone().or(old.end_date.clone()),
            grade: b.grade.unwrap_or(old.grade),
            serious: b.serious.unwrap_or(old.serious),
            seriousness_criteria: b.seriousness_criteria.clone().unwrap_or(old_criteria),
            relationship: b
                .relationship
                .or_else(|| parse_enum(&old.relationship))
                .unwrap_or(Relationship::Possible),
            action_taken: b
                .action_taken
                .or_else(|| parse_enum(&old.action_taken))
                .unwrap_or(ActionTaken::None),
            outcome: b
                .outcome
                .or_else(|| parse_enum(&old.outcome))
                .unwrap_or(Outcome::Unknown),
            awareness_date: b.awareness_date.unwrap_or(old.awareness_date),
        };
        let checked = validate(&merged, local_date(Utc::now(), subject.tz))?;
        check_consent(conn, &subject, checked.onset, merged.awareness_date)?;
        let new: AdverseEventRow = diesel::update(ae::table.find(id))
            .set((
                ae::term.eq(&checked.term),
                ae::meddra_code.eq(&merged.meddra_code),
                ae::meddra_term.eq(&checked.meddra_term),
                ae::onset_date.eq(&merged.onset_date),
                ae::end_date.eq(&merged.end_date),
                ae::grade.eq(merged.grade),
                ae::serious.eq(merged.serious),
                ae::seriousness_criteria.eq(criteria_names(&merged.seriousness_criteria)),
                ae::relationship.eq(name(&merged.relationship)),
                ae::action_taken.eq(name(&merged.action_taken)),
                ae::outcome.eq(name(&merged.outcome)),
                ae::awareness_date.eq(merged.awareness_date),
                ae::version.eq(ae::version + 1),
                ae::updated_at.eq(diesel::dsl::now),
                ae::updated_by.eq(caller.user_id),
            ))
            .returning(AdverseEventRow::as_returning())
            .get_result(conn)?;
        let old_serious = old.serious;
        let before = AdverseEvent::from_row(old, &subject.code);
        let after = AdverseEvent::from_row(new, &subject.code);
        let (o, n) = diff(
            &audit_view(to_json(&before)?),
            &audit_view(to_json(&after)?),
        );
        audit::record(
            conn,
            &AuditEvent::new(
                Some(&caller.actor),
                "update",
                "adverse_events",
                &caller.meta,
            )
            .record(id)
            .site(Some(subject.site_id))
            .subject(Some(subject.id))
            .old(o)
            .new_values(n)
            .reason(Some(reason.as_str())),
        )?;
        if domain::sae::raised(Some(old_serious), after.serious) {
            let site = crate::db::subjects::site_code(conn, subject.site_id)?;
            let payload = alert_payload(&protocol, &site, &subject, &after, &caller);
            sae::enqueue(
                conn,
                &caller,
                sae::Source::AdverseEvent(after.id),
                &subject,
                &payload,
            )?;
        }
        crate::services::guard::after_change(
            conn,
            &caller,
            "adverse_events",
            Some(id),
            subject.site_id,
            subject.id,
        )?;
        Ok(after)
    })
    .await?;
    Ok(with_etag(StatusCode::OK, ev.version, &ev))
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
    let scope = authorize(&caller, Permission::EnterClinical)?;
    let expected = optional_if_match(&req)?;
    let reason = Reason::parse("reason", Some(&body.value.reason))
        .map_err(|e| AppError::Validation(vec![e]))?;
    let (code, id) = path.into_inner();
    let ev = db::transaction(&state.pool, move |conn| {
        let (subject, old) = find(conn, &scope, &code, id, true)?;
        let deletion = Deletion {
            caller: &caller,
            subject: &subject,
            entity: "adverse_events",
            noun: "adverse event",
            changed: "adverse_events",
            id,
            expected,
            reason: &reason,
        };
        let before = AdverseEvent::from_row(old.clone(), &subject.code);
        deletion.run(
            conn,
            old.deleted_at.is_some(),
            old.version,
            &before,
            |conn| {
                let new: AdverseEventRow = diesel::update(ae::table.find(id))
                    .set((
                        ae::deleted_at.eq(diesel::dsl::now),
                        ae::deleted_by.eq(caller.user_id),
                        ae::deleted_reason.eq(reason.as_str()),
                        ae::version.eq(ae::version + 1),
                        ae::updated_at.eq(diesel::dsl::now),
                        ae::updated_by.eq(caller.user_id),
                    ))
                    .returning(AdverseEventRow::as_returning())
                    .get_result(conn)?;
                Ok(AdverseEvent::from_row(new, &subject.code))
            },
        )
    })
    .await?;
    Ok(with_etag(StatusCode::OK, ev.version, &ev))
}

/// Records an adverse event for `subject` (found within the caller's scope) in the caller's
/// transaction, audited, a serious one queued for its alert. Shared by the API and
/// `casebook seed-demo`.
pub fn enter(
    conn: &mut PgConnection,
    protocol: &Protocol,
    c: &Caller,
    subject: &SubjectRef,
    b: &NewAdverseEvent,
) -> AppResult<Value> {
    crate::services::guard::ensure_unlocked(conn, subject.site_id, Some(subject.id))?;
    let checked = validate(b, local_date(Utc::now(), subject.tz))?;
    check_consent(conn, subject, checked.onset, b.awareness_date)?;
    let row: AdverseEventRow = diesel::insert_into(ae::table)
        .values((
            ae::site_id.eq(subject.site_id),
            ae::subject_id.eq(subject.id),
            ae::term.eq(&checked.term),
            ae::meddra_code.eq(&b.meddra_code),
            ae::meddra_term.eq(&checked.meddra_term),
            ae::onset_date.eq(&b.onset_date),
            ae::end_date.eq(&b.end_date),
            ae::grade.eq(b.grade),
            ae::serious.eq(b.serious),
            ae::seriousness_criteria.eq(criteria_names(&b.seriousness_criteria)),
            ae::relationship.eq(name(&b.relationship)),
            ae::action_taken.eq(name(&b.action_taken)),
            ae::outcome.eq(name(&b.outcome)),
            ae::awareness_date.eq(b.awareness_date),
            ae::created_by.eq(c.user_id),
            ae::updated_by.eq(c.user_id),
        ))
        .returning(AdverseEventRow::as_returning())
        .get_result(conn)?;
    let event = AdverseEvent::from_row(row, &subject.code);
    let body = to_json(&event)?;
    audit::record(
        conn,
        &AuditEvent::new(Some(&c.actor), "create", "adverse_events", &c.meta)
            .record(event.id)
            .site(Some(subject.site_id))
            .subject(Some(subject.id))
            .new_values(body.clone()),
    )?;
    if domain::sae::raised(None, event.serious) {
        let site = crate::db::subjects::site_code(conn, subject.site_id)?;
        let payload = alert_payload(protocol, &site, subject, &event, c);
        sae::enqueue(
            conn,
            c,
            sae::Source::AdverseEvent(event.id),
            subject,
            &payload,
        )?;
    }
    crate::services::guard::after_change(
        conn,
        c,
        "adverse_events",
        None,
        subject.site_id,
        subject.id,
    )?;
    Ok(body)
}
