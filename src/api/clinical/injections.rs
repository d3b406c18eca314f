//! The daily injection CRF. One injection a study day; the dose is checked against the
//! protocol's rule and a deviating dose is stored, flagged and explained.

use actix_web::{http::StatusCode, web, HttpRequest, HttpResponse};
use bigdecimal::BigDecimal;
use chrono::{DateTime, Days, Utc};
use diesel::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::api::{if_match, resource, with_etag, Json};
use crate::audit::{self, diff, AuditEvent};
use crate::auth::{authorize, Caller, Permission, Scope};
use crate::db;
use crate::domain::dosing::{check_dose, escalation_day, DoseCheck, Regimen};
use crate::domain::protocol::Protocol;
use crate::domain::time::{end_of_local_day, local_date, study_day};
use crate::domain::values::{bounded_text, long_text, not_in_future, DoseMg, Reason, WeightKg};
use crate::domain::FieldError;
use crate::error::{AppError, AppResult};
use crate::schema::injections as i;
use crate::state::AppState;

use super::{
    audit_view, consent_window, decimal, find_subject, idempotent_post, optional_if_match, to_f64,
    DeleteRequest, Deletion, SubjectRef,
};

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

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = i)]
pub struct InjectionRow {
    pub id: i64,
    pub site_id: i64,
    pub subject_id: i64,
    pub study_day: i32,
    pub administered_at: DateTime<Utc>,
    pub dose_mg: BigDecimal,
    pub weight_kg: BigDecimal,
    pub route: String,
    pub injection_site: String,
    pub lot_number: String,
    pub given: bool,
    pub not_given_reason: Option<String>,
    pub expected_dose_mg: BigDecimal,
    pub protocol_deviation: bool,
    pub deviation_reason: Option<String>,
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
pub struct Injection {
    pub id: i64,
    pub subject_code: String,
    /// day 1 is the day of the first injection (site local date)
    pub study_day: i32,
    pub administered_at: DateTime<Utc>,
    pub dose_mg: f64,
    /// the weight used for the dose
    pub weight_kg: f64,
    pub route: String,
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

impl Injection {
    pub fn from_row(r: InjectionRow, subject_code: &str) -> Self {
        Self {
            id: r.id,
            subject_code: subject_code.to_owned(),
            study_day: r.study_day,
            administered_at: r.administered_at,
            dose_mg: to_f64(&r.dose_mg),
            weight_kg: to_f64(&r.weight_kg),
            route: r.route,
            injection_site: r.injection_site,
            lot_number: r.lot_number,
            given: r.given,
            not_given_reason: r.not_given_reason,
            expected_dose_mg: to_f64(&r.expected_dose_mg),
            protocol_deviation: r.protocol_deviation,
            deviation_reason: r.deviation_reason,
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

/// An injection whose every field has been parsed.
struct Entry {
    study_day: i32,
    administered_at: DateTime<Utc>,
    dose: DoseMg,
    weight: WeightKg,
    injection_site: String,
    lot_number: String,
    given: bool,
    not_given_reason: Option<String>,
}

fn parse(protocol: &Protocol, b: &NewInjection, subject_weight: f64) -> AppResult<Entry> {
    let mut errors: Vec<FieldError> = Vec::new();
    if b.study_day < 1 {
        errors.push(FieldError::new("study_day", "must be 1 or more"));
    }
    if let Err(e) = not_in_future("administered_at", b.administered_at, Utc::now()) {
        errors.push(e);
    }
    let dose = DoseMg::parse("dose_mg", b.dose_mg)
        .map_err(|e| errors.push(e))
        .ok();
    let weight = WeightKg::parse("weight_kg", b.weight_kg.unwrap_or(subject_weight))
        .map_err(|e| errors.push(e))
        .ok();
    if b.route.as_deref().is_some_and(|r| r != "subcutaneous") {
        errors.push(FieldError::new("route", "must be subcutaneous"));
    }
    if !protocol.file.injection_sites.contains(&b.injection_site) {
        errors.push(FieldError::new(
            "injection_site",
            format!(
                "must be one of: {}",
                protocol.file.injection_sites.join(", ")
            ),
        ));
    }
    let lot = bounded_text("lot_number", &b.lot_number, 50)
        .map_err(|e| errors.push(e))
        .ok();
    let not_given_reason = match (b.given, b.not_given_reason.as_deref()) {
        (false, None) => {
            errors.push(FieldError::new(
                "not_given_reason",
                "required when the injection was not given",
            ));
            None
        }
        (_, Some(r)) => long_text("not_given_reason", r, 500)
            .map_err(|e| errors.push(e))
            .ok(),
        (true, None) => None,
    };
    match (dose, weight, lot, errors.is_empty()) {
        (Some(dose), Some(weight), Some(lot_number), true) => Ok(Entry {
            study_day: b.study_day,
            administered_at: b.administered_at,
            dose,
            weight,
            injection_site: b.injection_site.clone(),
            lot_number,
            given: b.given,
            not_given_reason,
        }),
        _ => Err(AppError::Validation(errors)),
    }
}

/// The hard checks that need the database, and the dose check. `this` is the record being
/// corrected, left out of the comparisons.
fn check(
    conn: &mut PgConnection,
    protocol: &Protocol,
    subject: &SubjectRef,
    e: &Entry,
    this: Option<i64>,
) -> AppResult<DoseCheck> {
    let date = local_date(e.administered_at, subject.tz);
    subject
        .floor
        .check("administered_at", date)
        .map_err(|e| AppError::Validation(vec![e]))?;
    consent_window(conn, subject.id)?.check("administered_at", date)?;
    let others: Vec<(i32, DateTime<Utc>)> = i::table
        .filter(i::subject_id.eq(subject.id))
        .filter(i::deleted_at.is_null())
        .filter(i::id.ne(this.unwrap_or(-1)))
        .select((i::study_day, i::administered_at))
        .load(conn)?;
    if others.iter().any(|(d, _)| *d == e.study_day) {
        return Err(AppError::Conflict(format!(
            "Study day {} already has an injection.",
            e.study_day
        )));
    }
    let day1 = match others.iter().find(|(d, _)| *d == 1) {
        Some((_, at)) => local_date(*at, subject.tz),
        None if e.study_day == 1 => date,
        None => {
            return Err(AppError::invalid(
                "study_day",
                "record the day-1 injection first",
            ));
        }
    };
    let actual_day = study_day(day1, date);
    if actual_day != i64::from(e.study_day) {
        return Err(AppError::invalid(
            "study_day",
            format!("administered on {date} (site time), which is study day {actual_day}"),
        ));
    }
    let regimen = Regimen::of_protocol(protocol);
    let febrile = match escalation_day(&regimen) {
        Some(n) if e.study_day >= n => {
            let day_n = day1
                .checked_add_days(Days::new(u64::try_from(n - 1).unwrap_or(0)))
                .unwrap_or(day1);
            let start = day_n
                .pred_opt()
                .and_then(|d| end_of_local_day(d, subject.tz))
                .unwrap_or(e.administered_at);
            let cutoff = if e.study_day == n {
                e.administered_at
            } else {
                others
                    .iter()
                    .find(|(d, _)| *d == n)
                    .map(|(_, at)| *at)
                    .or_else(|| end_of_local_day(day_n, subject.tz))
                    .unwrap_or(e.administered_at)
            };
            crate::db::form_records::fever_between(
                conn,
                subject.id,
                (start, cutoff),
                &decimal(protocol.fever_threshold(), 1),
            )?
        }
        _ => false,
    };
    Ok(check_dose(
        &regimen,
        e.study_day,
        e.weight.value(),
        e.dose.value(),
        e.given,
        febrile,
    ))
}

fn find(
    conn: &mut PgConnection,
    scope: &Scope,
    code: &str,
    id: i64,
    lock: bool,
) -> AppResult<(SubjectRef, InjectionRow)> {
    let subject = find_subject(conn, scope, code)?;
    if lock {
        // a locked record is read, but not changed
        crate::services::guard::ensure_unlocked(conn, subject.site_id, Some(subject.id))?;
    }
    let q = i::table
        .filter(i::id.eq(id))
        .filter(i::subject_id.eq(subject.id))
        .select(InjectionRow::as_select());
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
    let scope = authorize(&caller, Permission::ReadClinical)?;
    let code = code.into_inner();
    let items = db::run(&state.pool, move |conn| {
        let subject = find_subject(conn, &scope, &code)?;
        let rows: Vec<InjectionRow> = i::table
            .filter(i::subject_id.eq(subject.id))
            .order((i::study_day, i::id))
            .select(InjectionRow::as_select())
            .load(conn)?;
        Ok(rows
            .into_iter()
            .map(|r| Injection::from_row(r, &subject.code))
            .collect::<Vec<_>>())
    })
    .await?;
    Ok(HttpResponse::Ok().json(items))
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
    caller: Caller,
    req: HttpRequest,
    code: web::Path<String>,
    body: Json<NewInjection>,
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
    let scope = authorize(&caller, Permission::ReadClinical)?;
    let (code, id) = path.into_inner();
    let inj = db::run(&state.pool, move |conn| {
        let (subject, row) = find(conn, &scope, &code, id, false)?;
        Ok(Injection::from_row(row, &subject.code))
    })
    .await?;
    Ok(with_etag(StatusCode::OK, inj.version, &inj))
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
    let scope = authorize(&caller, Permission::EnterClinical)?;
    // checked once the record is found: scope (404) comes before preconditions (428)
    let expected = if_match(&req);
    let b = body.value;
    let reason =
        Reason::parse("reason", b.reason.as_deref()).map_err(|e| AppError::Validation(vec![e]))?;
    let (code, id) = path.into_inner();
    let protocol = state.protocol.clone();
    let inj = db::transaction(&state.pool, move |conn| {
        let (subject, old) = find(conn, &scope, &code, id, true)?;
        let expected = expected?;
        if old.deleted_at.is_some() {
            return Err(AppError::Conflict(
                "This injection is marked entered in error.".into(),
            ));
        }
        if old.version != expected {
            return Err(AppError::PreconditionFailed);
        }
        let merged = NewInjection {
            study_day: b.study_day.unwrap_or(old.study_day),
            administered_at: b.administered_at.unwrap_or(old.administered_at),
            dose_mg: b.dose_mg.unwrap_or(to_f64(&old.dose_mg)),
            weight_kg: Some(b.weight_kg.unwrap_or(to_f64(&old.weight_kg))),
            route: b.route.clone(),
            injection_site: b
                .injection_site
                .clone()
                .unwrap_or(old.injection_site.clone()),
            lot_number: b.lot_number.clone().unwrap_or(old.lot_number.clone()),
            given: b.given.unwrap_or(old.given),
            not_given_reason: b.not_given_reason.clone().or(old.not_given_reason.clone()),
        };
        let e = parse(&protocol, &merged, subject.weight_kg)?;
        let dose = check(conn, &protocol, &subject, &e, Some(id))?;
        let new: InjectionRow = diesel::update(i::table.find(id))
            .set((
                i::study_day.eq(e.study_day),
                i::administered_at.eq(e.administered_at),
                i::dose_mg.eq(decimal(e.dose.value(), 2)),
                i::weight_kg.eq(decimal(e.weight.value(), 2)),
                i::injection_site.eq(&e.injection_site),
                i::lot_number.eq(&e.lot_number),
                i::given.eq(e.given),
                i::not_given_reason.eq(if e.given {
                    None
                } else {
                    e.not_given_reason.clone()
                }),
                i::expected_dose_mg.eq(decimal(dose.expected_mg, 2)),
                i::protocol_deviation.eq(dose.deviation.is_some()),
                i::deviation_reason.eq(&dose.deviation),
                i::version.eq(i::version + 1),
                i::updated_at.eq(diesel::dsl::now),
                i::updated_by.eq(caller.user_id),
            ))
            .returning(InjectionRow::as_returning())
            .get_result(conn)?;
        let (o, n) = diff(
            &audit_view(to_json(&Injection::from_row(old, &subject.code))?),
            &audit_view(to_json(&Injection::from_row(new.clone(), &subject.code))?),
        );
        audit::record(
            conn,
            &AuditEvent::new(Some(&caller.actor), "update", "injections", &caller.meta)
                .record(id)
                .site(Some(subject.site_id))
                .subject(Some(subject.id))
                .old(o)
                .new_values(n)
                .reason(Some(reason.as_str())),
        )?;
        if let Some(why) = &dose.deviation {
            crate::services::queries::open_automatic(
                conn,
                None,
                &caller.meta,
                subject.site_id,
                subject.id,
                "injections",
                id,
                "dose_mg",
                "dose_check",
                why,
            )?;
        }
        crate::services::guard::after_change(
            conn,
            &caller,
            "injections",
            Some(id),
            subject.site_id,
            subject.id,
        )?;
        Ok(Injection::from_row(new, &subject.code))
    })
    .await?;
    Ok(with_etag(StatusCode::OK, inj.version, &inj))
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
    let scope = authorize(&caller, Permission::EnterClinical)?;
    let expected = optional_if_match(&req)?;
    let reason = Reason::parse("reason", Some(&body.value.reason))
        .map_err(|e| AppError::Validation(vec![e]))?;
    let (code, id) = path.into_inner();
    let inj = db::transaction(&state.pool, move |conn| {
        let (subject, old) = find(conn, &scope, &code, id, true)?;
        let deletion = Deletion {
            caller: &caller,
            subject: &subject,
            entity: "injections",
            noun: "injection",
            changed: "injections",
            id,
            expected,
            reason: &reason,
        };
        let before = Injection::from_row(old.clone(), &subject.code);
        deletion.run(
            conn,
            old.deleted_at.is_some(),
            old.version,
            &before,
            |conn| {
                let new: InjectionRow = diesel::update(i::table.find(id))
                    .set((
                        i::deleted_at.eq(diesel::dsl::now),
                        i::deleted_by.eq(caller.user_id),
                        i::deleted_reason.eq(reason.as_str()),
                        i::version.eq(i::version + 1),
                        i::updated_at.eq(diesel::dsl::now),
                        i::updated_by.eq(caller.user_id),
                    ))
                    .returning(InjectionRow::as_returning())
                    .get_result(conn)?;
                Ok(Injection::from_row(new, &subject.code))
            },
        )
    })
    .await?;
    Ok(with_etag(StatusCode::OK, inj.version, &inj))
}

/// Records an injection for `subject` (found within the caller's scope) in the caller's
/// transaction: the checks, the dose check (a deviation is flagged and queried), the audit
/// row. Shared by the API and `casebook seed-demo`.
pub fn enter(
    conn: &mut PgConnection,
    protocol: &Protocol,
    c: &Caller,
    subject: &SubjectRef,
    b: &NewInjection,
) -> AppResult<Value> {
    crate::services::guard::ensure_unlocked(conn, subject.site_id, Some(subject.id))?;
    let e = parse(protocol, b, subject.weight_kg)?;
    let dose = check(conn, protocol, subject, &e, None)?;
    let row: InjectionRow = diesel::insert_into(i::table)
        .values((
            i::site_id.eq(subject.site_id),
            i::subject_id.eq(subject.id),
            i::study_day.eq(e.study_day),
            i::administered_at.eq(e.administered_at),
            i::dose_mg.eq(decimal(e.dose.value(), 2)),
            i::weight_kg.eq(decimal(e.weight.value(), 2)),
            i::route.eq("subcutaneous"),
            i::injection_site.eq(&e.injection_site),
            i::lot_number.eq(&e.lot_number),
            i::given.eq(e.given),
            i::not_given_reason.eq(&e.not_given_reason),
            i::expected_dose_mg.eq(decimal(dose.expected_mg, 2)),
            i::protocol_deviation.eq(dose.deviation.is_some()),
            i::deviation_reason.eq(&dose.deviation),
            i::created_by.eq(c.user_id),
            i::updated_by.eq(c.user_id),
        ))
        .returning(InjectionRow::as_returning())
        .get_result(conn)?;
    let body = to_json(&Injection::from_row(row.clone(), &subject.code))?;
    audit::record(
        conn,
        &AuditEvent::new(Some(&c.actor), "create", "injections", &c.meta)
            .record(row.id)
            .site(Some(subject.site_id))
            .subject(Some(subject.id))
            .new_values(body.clone()),
    )?;
    if let Some(why) = &dose.deviation {
        // a soft edit check: the dose is stored as given, and a query asks about it
        crate::services::queries::open_automatic(
            conn,
            None,
            &c.meta,
            subject.site_id,
            subject.id,
            "injections",
            row.id,
            "dose_mg",
            "dose_check",
            why,
        )?;
    }
    crate::services::guard::after_change(conn, c, "injections", None, subject.site_id, subject.id)?;
    Ok(body)
}
