//! Subjects: enrolment with the protocol's eligibility checklist, and corrections.

use std::collections::BTreeMap;

use actix_web::{http::StatusCode, web, HttpRequest, HttpResponse};
use bigdecimal::BigDecimal;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::{IntoParams, ToSchema};

use crate::api::{if_match, resource, with_etag, Json, Page};
use crate::audit::{self, diff, AuditEvent};
use crate::auth::{authorize, Caller, Permission, Scope};
use crate::db;
use crate::domain::protocol::{CriterionKind, Protocol};
use crate::domain::time::DateFloor;
use crate::domain::values::{subject_code, BirthYearMonth, Reason, Sex, WeightKg};
use crate::domain::FieldError;
use crate::error::{AppError, AppResult};
use crate::schema::{consents as c, sites, subjects as s};
use crate::state::AppState;

use super::{audit_view, decimal, find_subject, idempotent_post, to_f64};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        resource("/subjects")
            .route(web::get().to(list))
            .route(web::post().to(create)),
    )
    .service(
        resource("/subjects/{subject_code}")
            .route(web::get().to(get))
            .route(web::patch().to(update)),
    );
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = s)]
pub struct SubjectRow {
    pub id: i64,
    pub site_id: i64,
    pub subject_code: String,
    pub status: String,
    pub sex: String,
    pub birth_year_month: String,
    pub weight_kg: BigDecimal,
    pub eligibility: Value,
    pub version: i32,
    pub created_at: DateTime<Utc>,
    pub created_by: i64,
    pub updated_at: DateTime<Utc>,
    pub updated_by: i64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Subject {
    pub id: i64,
    pub subject_code: String,
    pub site_code: String,
    /// screening, enrolled, completed or withdrawn
    pub status: String,
    pub sex: Sex,
    pub birth_year_month: String,
    pub weight_kg: f64,
    /// criterion id -> answer at enrolment
    pub eligibility: BTreeMap<String, bool>,
    pub version: i32,
    pub created_at: DateTime<Utc>,
    pub created_by: i64,
    pub updated_at: DateTime<Utc>,
    pub updated_by: i64,
}

impl Subject {
    pub fn from_row(r: SubjectRow, site_code: String) -> Self {
        Self {
            id: r.id,
            subject_code: r.subject_code,
            site_code,
            status: r.status,
            sex: if r.sex == "male" {
                Sex::Male
            } else {
                Sex::Female
            },
            birth_year_month: r.birth_year_month,
            weight_kg: to_f64(&r.weight_kg),
            eligibility: serde_json::from_value(r.eligibility).unwrap_or_default(),
            version: r.version,
            created_at: r.created_at,
            created_by: r.created_by,
            updated_at: r.updated_at,
            updated_by: r.updated_by,
        }
    }
}

pub fn load(conn: &mut PgConnection, id: i64) -> AppResult<Subject> {
    let (row, code): (SubjectRow, String) = s::table
        .inner_join(sites::table)
        .filter(s::id.eq(id))
        .select((SubjectRow::as_select(), sites::code))
        .first(conn)?;
    Ok(Subject::from_row(row, code))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSubject {
    pub site_code: String,
    pub sex: Sex,
    /// YYYY-MM
    pub birth_year_month: String,
    pub weight_kg: f64,
    /// every criterion of the protocol, by id: true when met
    pub eligibility: BTreeMap<String, bool>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubjectChange {
    pub sex: Option<Sex>,
    pub birth_year_month: Option<String>,
    pub weight_kg: Option<f64>,
    /// completed or withdrawn (enrolled to undo)
    pub status: Option<String>,
    /// why the record is changed (required)
    pub reason: Option<String>,
}

/// Checks the checklist: every criterion answered, none unknown, inclusions met,
/// exclusions not met.
pub fn check_eligibility(protocol: &Protocol, answers: &BTreeMap<String, bool>) -> AppResult<()> {
    let mut errors = Vec::new();
    for id in answers.keys() {
        if protocol.criterion(id).is_none() {
            errors.push(FieldError::new(
                format!("eligibility.{id}"),
                "not a criterion of this protocol",
            ));
        }
    }
    for c in &protocol.file.eligibility {
        match (answers.get(&c.id), c.kind) {
            (None, _) => errors.push(FieldError::new(
                format!("eligibility.{}", c.id),
                "must be answered",
            )),
            (Some(false), CriterionKind::Inclusion) => errors.push(FieldError::new(
                format!("eligibility.{}", c.id),
                format!("inclusion criterion not met: {}", c.text),
            )),
            (Some(true), CriterionKind::Exclusion) => errors.push(FieldError::new(
                format!("eligibility.{}", c.id),
                format!("exclusion criterion met: {}", c.text),
            )),
            _ => {}
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(AppError::Validation(errors))
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SubjectFilter {
    /// site code
    pub site: Option<String>,
    pub status: Option<String>,
    pub limit: Option<i64>,
    pub after: Option<i64>,
}

/// Subjects of the caller's sites.
#[utoipa::path(get, path = "/api/v1/subjects", tag = "subjects", params(SubjectFilter),
    responses((status = 200, body = Page<Subject>), (status = 403, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn list(
    state: web::Data<AppState>,
    caller: Caller,
    filter: web::Query<SubjectFilter>,
) -> AppResult<HttpResponse> {
    let scope = authorize(&caller, Permission::ReadClinical)?;
    let f = filter.into_inner();
    let limit = f.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(AppError::invalid("limit", "must be between 1 and 500"));
    }
    let items = db::run(&state.pool, move |conn| {
        let mut q = s::table
            .inner_join(sites::table)
            .filter(s::deleted_at.is_null())
            .filter(s::id.gt(f.after.unwrap_or(0)))
            .into_boxed();
        if let Some(ids) = scope.site_ids() {
            q = q.filter(s::site_id.eq_any(ids.to_vec()));
        }
        if let Some(site) = f.site {
            q = q.filter(sites::code.eq(site));
        }
        if let Some(status) = f.status {
            q = q.filter(s::status.eq(status));
        }
        let rows: Vec<(SubjectRow, String)> = q
            .order(s::id)
            .limit(limit)
            .select((SubjectRow::as_select(), sites::code))
            .load(conn)?;
        Ok(rows
            .into_iter()
            .map(|(r, c)| Subject::from_row(r, c))
            .collect::<Vec<_>>())
    })
    .await?;
    Ok(HttpResponse::Ok().json(Page::new(items, limit, |s| s.id)))
}

/// Enrol a subject. The server assigns the code: site code and the next number, without
/// gaps even under concurrent enrolment.
#[utoipa::path(post, path = "/api/v1/subjects", tag = "subjects", request_body = NewSubject,
    params(("Idempotency-Key" = Option<String>, Header, description = "retry-safe key")),
    responses((status = 201, body = Subject), (status = 403, body = crate::error::Problem),
        (status = 404, description = "site not in your scope", body = crate::error::Problem),
        (status = 422, description = "invalid or not eligible", body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn create(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    body: Json<NewSubject>,
) -> AppResult<HttpResponse> {
    let scope = authorize(&caller, Permission::EnterClinical)?;
    let b = body.value;
    let (weight, birth) = check_new(&state.protocol, &b)?;
    let c = caller.clone();
    let site_code = b.site_code.clone();
    let find = move |conn: &mut PgConnection| -> AppResult<(i64, bool)> {
        let mut q = sites::table.filter(sites::code.eq(&site_code)).into_boxed();
        if let Some(ids) = scope.site_ids() {
            q = q.filter(sites::id.eq_any(ids.to_vec()));
        }
        q.select((sites::id, sites::active))
            .first(conn)
            .optional()?
            .ok_or(AppError::NotFound)
    };
    idempotent_post(
        &state,
        &caller,
        &req,
        &body.raw,
        find,
        move |conn, (site_id, active)| enrol(conn, &c, site_id, active, &b, &weight, &birth),
    )
    .await
}

/// One subject.
#[utoipa::path(get, path = "/api/v1/subjects/{subject_code}", tag = "subjects",
    params(("subject_code" = String, Path)),
    responses((status = 200, body = Subject), (status = 404, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn get(
    state: web::Data<AppState>,
    caller: Caller,
    code: web::Path<String>,
) -> AppResult<HttpResponse> {
    let scope = authorize(&caller, Permission::ReadClinical)?;
    let code = code.into_inner();
    let subject = db::run(&state.pool, move |conn| {
        let s = find_subject(conn, &scope, &code)?;
        load(conn, s.id)
    })
    .await?;
    Ok(with_etag(StatusCode::OK, subject.version, &subject))
}

fn locked_subject(conn: &mut PgConnection, scope: &Scope, code: &str) -> AppResult<SubjectRow> {
    let subject = find_subject(conn, scope, code)?;
    crate::services::guard::ensure_unlocked(conn, subject.site_id, Some(subject.id))?;
    // NO KEY UPDATE: serialises corrections of the subject and waits for a signature, but
    // not for the other writes' holds (FOR KEY SHARE), with which FOR UPDATE would deadlock
    Ok(s::table
        .find(subject.id)
        .select(SubjectRow::as_select())
        .for_no_key_update()
        .first(conn)?)
}

/// Correct a subject (If-Match with its version, and a reason).
#[utoipa::path(patch, path = "/api/v1/subjects/{subject_code}", tag = "subjects",
    params(("subject_code" = String, Path), ("If-Match" = String, Header, description = "the version read")),
    request_body = SubjectChange,
    responses((status = 200, body = Subject), (status = 404, body = crate::error::Problem),
        (status = 412, body = crate::error::Problem), (status = 422, body = crate::error::Problem),
        (status = 428, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn update(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    code: web::Path<String>,
    body: Json<SubjectChange>,
) -> AppResult<HttpResponse> {
    let scope = authorize(&caller, Permission::EnterClinical)?;
    // checked once the record is found: scope (404) comes before preconditions (428)
    let expected = if_match(&req);
    let b = body.value;
    let today = Utc::now().date_naive();
    let mut errors = Vec::new();
    let reason = Reason::parse("reason", b.reason.as_deref())
        .map_err(|e| errors.push(e))
        .ok();
    let weight = b
        .weight_kg
        .map(|w| WeightKg::parse("weight_kg", w))
        .transpose()
        .map_err(|e| errors.push(e))
        .ok()
        .flatten();
    let birth = b
        .birth_year_month
        .as_deref()
        .map(|v| BirthYearMonth::parse("birth_year_month", v, today))
        .transpose()
        .map_err(|e| errors.push(e))
        .ok()
        .flatten();
    if let Some(st) = &b.status {
        if !["enrolled", "completed", "withdrawn"].contains(&st.as_str()) {
            errors.push(FieldError::new(
                "status",
                "must be enrolled, completed or withdrawn",
            ));
        }
    }
    let Some(reason) = reason.filter(|_| errors.is_empty()) else {
        return Err(AppError::Validation(errors));
    };
    let code = code.into_inner();
    let def = state.study.clone();
    let subject = db::transaction(&state.pool, move |conn| {
        let old = locked_subject(conn, &scope, &code)?;
        let expected = expected?;
        if old.version != expected {
            return Err(AppError::PreconditionFailed);
        }
        if b.status.as_deref().is_some_and(|st| st != "withdrawn")
            && super::consents::withdrawn_from_all(conn, old.id)?
        {
            return Err(AppError::invalid(
                "status",
                "the subject's consent is withdrawn from everything: correct that withdrawal \
                 first",
            ));
        }
        if let Some(birth) = &birth {
            let floor = DateFloor::of_birth(birth.as_str());
            let subject = find_subject(conn, &scope, &code)?;
            let consented: Option<chrono::NaiveDate> = c::table
                .filter(c::subject_id.eq(old.id))
                .filter(c::deleted_at.is_null())
                .select(diesel::dsl::min(c::signed_on))
                .first(conn)?;
            let data = super::consents::earliest_data(conn, &def, &subject)?;
            if let Some(first) = consented.into_iter().chain(data).min() {
                floor.check("birth_year_month", first).map_err(|_| {
                    AppError::invalid(
                        "birth_year_month",
                        format!("is after the subject's clinical data, which begin on {first}"),
                    )
                })?;
            }
        }
        let before = load(conn, old.id)?;
        diesel::update(s::table.find(old.id))
            .set((
                s::sex.eq(b.sex.map(Sex::as_str).unwrap_or(&old.sex)),
                s::birth_year_month.eq(birth
                    .as_ref()
                    .map(BirthYearMonth::as_str)
                    .unwrap_or(&old.birth_year_month)),
                s::weight_kg.eq(weight
                    .map(|w| decimal(w.value(), 2))
                    .unwrap_or(old.weight_kg.clone())),
                s::status.eq(b.status.as_deref().unwrap_or(&old.status)),
                s::version.eq(s::version + 1),
                s::updated_at.eq(diesel::dsl::now),
                s::updated_by.eq(caller.user_id),
            ))
            .execute(conn)?;
        let after = load(conn, old.id)?;
        let (o, n) = diff(
            &audit_view(serde_json::to_value(&before).map_err(AppError::internal)?),
            &audit_view(serde_json::to_value(&after).map_err(AppError::internal)?),
        );
        audit::record(
            conn,
            &AuditEvent::new(Some(&caller.actor), "update", "subjects", &caller.meta)
                .record(old.id)
                .site(Some(old.site_id))
                .subject(Some(old.id))
                .old(o)
                .new_values(n)
                .reason(Some(reason.as_str())),
        )?;
        crate::services::guard::after_change(
            conn,
            &caller,
            "subjects",
            Some(old.id),
            old.site_id,
            old.id,
        )?;
        Ok(after)
    })
    .await?;
    Ok(with_etag(StatusCode::OK, subject.version, &subject))
}

/// The checks of a new subject that need no database: weight, birth month, eligibility.
pub fn check_new(protocol: &Protocol, b: &NewSubject) -> AppResult<(WeightKg, BirthYearMonth)> {
    let today = Utc::now().date_naive();
    let mut errors = Vec::new();
    let weight = WeightKg::parse("weight_kg", b.weight_kg)
        .map_err(|e| errors.push(e))
        .ok();
    let birth = BirthYearMonth::parse("birth_year_month", &b.birth_year_month, today)
        .map_err(|e| errors.push(e))
        .ok();
    if let Err(AppError::Validation(mut e)) = check_eligibility(protocol, &b.eligibility) {
        errors.append(&mut e);
    }
    match (weight, birth, errors.is_empty()) {
        (Some(weight), Some(birth), true) => Ok((weight, birth)),
        _ => Err(AppError::Validation(errors)),
    }
}

/// Enrols a subject at a site the caller may enter data for, in the caller's transaction:
/// the next code of the site, the row, its audit row. Shared by the API and
/// `casebook seed-demo`.
pub fn enrol(
    conn: &mut PgConnection,
    c: &Caller,
    site_id: i64,
    active: bool,
    b: &NewSubject,
    weight: &WeightKg,
    birth: &BirthYearMonth,
) -> AppResult<Value> {
    if !active {
        return Err(AppError::invalid("site_code", "the site is not active"));
    }
    crate::services::guard::ensure_unlocked(conn, site_id, None)?;
    // The row lock on the site serialises enrolments there: numbers without gaps.
    let seq: i32 = diesel::update(sites::table.find(site_id))
        .set(sites::subject_seq.eq(sites::subject_seq + 1))
        .returning(sites::subject_seq)
        .get_result(conn)?;
    let code = subject_code(&b.site_code, seq);
    let id: i64 = diesel::insert_into(s::table)
        .values((
            s::site_id.eq(site_id),
            s::subject_code.eq(&code),
            s::status.eq("enrolled"),
            s::sex.eq(b.sex.as_str()),
            s::birth_year_month.eq(birth.as_str()),
            s::weight_kg.eq(decimal(weight.value(), 2)),
            s::eligibility.eq(json!(b.eligibility)),
            s::created_by.eq(c.user_id),
            s::updated_by.eq(c.user_id),
        ))
        .returning(s::id)
        .get_result(conn)?;
    let subject = load(conn, id)?;
    let body = serde_json::to_value(&subject).map_err(AppError::internal)?;
    audit::record(
        conn,
        &AuditEvent::new(Some(&c.actor), "create", "subjects", &c.meta)
            .record(id)
            .site(Some(site_id))
            .subject(Some(id))
            .new_values(body.clone()),
    )?;
    Ok(body)
}
