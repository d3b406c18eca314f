//! The temperature CRF: several measurements a day; `fever` derives from the protocol's
//! threshold.

use actix_web::{http::StatusCode, web, HttpRequest, HttpResponse};
use bigdecimal::BigDecimal;
use chrono::{DateTime, SubsecRound, Utc};
use diesel::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::api::{if_match, resource, with_etag, Json};
use crate::audit::{self, diff, AuditEvent};
use crate::auth::{authorize, roles_with_own_sites, Bearer, Caller, Permission, Scope};
use crate::db;
use crate::db::group_commit::{self, NewTemperature as NewTemperatureRecord};
use crate::db::temperature_entry::{self, CheckedTemperature, Entered};
use crate::domain::protocol::Protocol;
use crate::domain::time::local_date;
use crate::domain::values::{not_in_future, Celsius, Reason};
use crate::domain::FieldError;
use crate::error::{AppError, AppResult};
use crate::schema::temperatures as t;
use crate::services::idempotency;
use crate::state::AppState;

use super::{
    audit_view, consent_window, created, decimal, entry, find_subject, optional_if_match, to_f64,
    DeleteRequest, Deletion, SubjectRef,
};

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

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = t)]
pub struct TemperatureRow {
    pub id: i64,
    pub site_id: i64,
    pub subject_id: i64,
    pub measured_at: DateTime<Utc>,
    pub celsius: BigDecimal,
    pub method: String,
    pub fever: bool,
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
pub struct Temperature {
    pub id: i64,
    pub subject_code: String,
    pub measured_at: DateTime<Utc>,
    pub celsius: f64,
    /// rectal, axillary, oral, tympanic or temporal (as the protocol allows)
    pub method: String,
    /// above the protocol's fever threshold
    pub fever: bool,
    pub version: i32,
    pub created_at: DateTime<Utc>,
    pub created_by: i64,
    pub updated_at: DateTime<Utc>,
    pub updated_by: i64,
    pub deleted_at: Option<DateTime<Utc>>,
    pub deleted_reason: Option<String>,
}

impl Temperature {
    pub fn from_row(r: TemperatureRow, subject_code: &str) -> Self {
        Self {
            id: r.id,
            subject_code: subject_code.to_owned(),
            measured_at: r.measured_at,
            celsius: to_f64(&r.celsius),
            method: r.method,
            fever: r.fever,
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

struct Entry {
    measured_at: DateTime<Utc>,
    celsius: Celsius,
    method: String,
}

fn parse(protocol: &Protocol, b: &NewTemperature) -> AppResult<Entry> {
    let mut errors: Vec<FieldError> = Vec::new();
    if let Err(e) = not_in_future("measured_at", b.measured_at, Utc::now()) {
        errors.push(e);
    }
    let celsius = Celsius::parse("celsius", b.celsius)
        .map_err(|e| errors.push(e))
        .ok();
    if !protocol.file.temperature_methods.contains(&b.method) {
        errors.push(FieldError::new(
            "method",
            format!(
                "must be one of: {}",
                protocol.file.temperature_methods.join(", ")
            ),
        ));
    }
    match (celsius, errors.is_empty()) {
        (Some(celsius), true) => Ok(Entry {
            measured_at: b.measured_at,
            celsius,
            method: b.method.clone(),
        }),
        _ => Err(AppError::Validation(errors)),
    }
}

fn check(conn: &mut PgConnection, subject: &SubjectRef, e: &Entry) -> AppResult<()> {
    let date = local_date(e.measured_at, subject.tz);
    subject
        .floor
        .check("measured_at", date)
        .map_err(|e| AppError::Validation(vec![e]))?;
    Ok(consent_window(conn, subject.id)?.check("measured_at", date)?)
}

fn find(
    conn: &mut PgConnection,
    scope: &Scope,
    code: &str,
    id: i64,
    lock: bool,
) -> AppResult<(SubjectRef, TemperatureRow)> {
    let subject = find_subject(conn, scope, code)?;
    if lock {
        // a locked record is read, but not changed
        crate::services::guard::ensure_unlocked(conn, subject.site_id, Some(subject.id))?;
    }
    let q = t::table
        .filter(t::id.eq(id))
        .filter(t::subject_id.eq(subject.id))
        .select(TemperatureRow::as_select());
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
    let scope = authorize(&caller, Permission::ReadClinical)?;
    let code = code.into_inner();
    let items = db::run(&state.pool, move |conn| {
        let subject = find_subject(conn, &scope, &code)?;
        let rows: Vec<TemperatureRow> = t::table
            .filter(t::subject_id.eq(subject.id))
            .order((t::measured_at, t::id))
            .select(TemperatureRow::as_select())
            .load(conn)?;
        Ok(rows
            .into_iter()
            .map(|r| Temperature::from_row(r, &subject.code))
            .collect::<Vec<_>>())
    })
    .await?;
    Ok(HttpResponse::Ok().json(items))
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
    let code = code.into_inner();
    let key = crate::api::idempotency_key(&req)?;
    let fingerprint = idempotency::fingerprint("POST", req.path(), &body.raw);
    let new = body.value;
    if key.is_none() {
        if let Some(body) = enter_at_once(&state, &bearer, &code, &new).await? {
            return Ok(created(201, body));
        }
    }
    let st = state.clone();
    // The step-by-step path: one pool checkout; one round trip for the checks (entry.rs),
    // then the entry is written in a transaction that holds the subject against a signature
    // (services::guard), with the key's answer when there is one.
    let (status, body) = db::run(&state.pool, move |conn| {
        let ctx = entry::context(
            conn,
            &st.temperature_contexts,
            bearer,
            Permission::EnterClinical,
            &code,
            SEQUENCE,
        )?;
        let user = ctx.caller.user_id;
        if key.is_none() {
            let entry = prepare(conn, &st.protocol, ctx, &new)?;
            conn.transaction(|conn| entry.write(conn))?;
            return Ok((201, entry.record.new_values));
        }
        // a replay only to a caller who can still see the subject
        ctx.found()?;
        entry::idempotent_create(conn, user, key, fingerprint, move |conn| {
            let entry = prepare(conn, &st.protocol, ctx, &new)?;
            entry.write(conn)?;
            Ok(entry.record.new_values)
        })
    })
    .await?;
    Ok(created(status, body))
}

/// The common case in one round trip: a reading that parses is sent with the token's
/// identity to a statement that checks what the database knows and writes it (db::
/// temperature_entry), batched with the others; the request waits on its worker, with no
/// blocking thread or connection of its own. `None`: not written, for the step-by-step path
/// to check again and answer (a refusal, a signed casebook, a bad field).
async fn enter_at_once(
    st: &AppState,
    bearer: &Bearer,
    code: &str,
    new: &NewTemperature,
) -> AppResult<Option<Value>> {
    let Ok(e) = parse(&st.protocol, new) else {
        return Ok(None);
    };
    // PostgreSQL keeps microseconds: the answer must say what is stored
    let now = Utc::now().trunc_subsecs(6);
    let fever = e.celsius.value() > st.protocol.fever_threshold();
    let celsius = decimal(e.celsius.value(), 1);
    let mut body = to_json(&Temperature {
        id: 0,
        subject_code: code.to_owned(),
        measured_at: e.measured_at,
        celsius: to_f64(&celsius),
        method: e.method.clone(),
        fever,
        version: 1,
        created_at: now,
        created_by: bearer.user_id,
        updated_at: now,
        updated_by: bearer.user_id,
        deleted_at: None,
        deleted_reason: None,
    })?;
    let checked = CheckedTemperature {
        user_id: bearer.user_id,
        session: bearer.claims.sid,
        token_version: bearer.claims.ver,
        subject_code: code.to_owned(),
        measured_at: e.measured_at,
        celsius,
        method: e.method,
        fever,
        now,
        new_values: body.clone(),
        request_id: bearer.meta.request_id.clone(),
        client_addr: bearer.meta.client_addr.clone(),
        roles: roles_with_own_sites(Permission::EnterClinical),
    };
    let written = match st.temperature_entries.run(&st.pool, checked.clone()).await {
        Entered::Written(id) => Some(id),
        Entered::NotWritten => None,
        Entered::Failed(e) => return Err(e),
        // alone, on a connection of its own, waiting for its own locks
        Entered::Alone => {
            db::run(&st.pool, move |conn| {
                temperature_entry::enter_alone(conn, &checked)
            })
            .await?
        }
    };
    let Some(id) = written else {
        return Ok(None);
    };
    body["id"] = Value::from(id);
    Ok(Some(body))
}

/// A new temperature that passed every check, ready to be written.
struct Prepared {
    record: NewTemperatureRecord,
    caller: Caller,
}

/// Parses and checks a new temperature against the protocol, the subject's lock and its
/// consent window.
fn prepare(
    conn: &mut PgConnection,
    protocol: &Protocol,
    ctx: entry::EntryContext,
    new: &NewTemperature,
) -> AppResult<Prepared> {
    let e = parse(protocol, new)?;
    let (caller, target) = ctx.target(conn)?;
    prepare_for(protocol, caller, target, e)
}

fn prepare_for(
    protocol: &Protocol,
    caller: Caller,
    target: entry::Target,
    e: Entry,
) -> AppResult<Prepared> {
    let subject = &target.subject;
    let date = local_date(e.measured_at, subject.tz);
    subject
        .floor
        .check("measured_at", date)
        .map_err(|e| AppError::Validation(vec![e]))?;
    target.window.check("measured_at", date)?;
    let fever = e.celsius.value() > protocol.fever_threshold();
    let row = TemperatureRow {
        id: target.new_id,
        site_id: subject.site_id,
        subject_id: subject.id,
        measured_at: e.measured_at,
        celsius: decimal(e.celsius.value(), 1),
        method: e.method,
        fever,
        version: 1,
        created_at: target.now,
        created_by: caller.user_id,
        updated_at: target.now,
        updated_by: caller.user_id,
        deleted_at: None,
        deleted_by: None,
        deleted_reason: None,
    };
    let body = to_json(&Temperature::from_row(row.clone(), &subject.code))?;
    let record = NewTemperatureRecord {
        id: row.id,
        site_id: row.site_id,
        subject_id: row.subject_id,
        measured_at: row.measured_at,
        celsius: row.celsius,
        method: row.method,
        fever: row.fever,
        user_id: caller.user_id,
        now: row.created_at,
        actor_role: caller.actor.role.clone(),
        new_values: body,
        request_id: caller.meta.request_id.clone(),
        client_addr: caller.meta.client_addr.clone(),
    };
    Ok(Prepared { record, caller })
}

impl Prepared {
    /// Writes the record and its audit row on `conn`, ending the subject's signature if
    /// there is one (the caller runs this in a transaction). The entry context was read
    /// before: the subject is held, and its locks and signature looked at, again here.
    fn write(&self, conn: &mut PgConnection) -> AppResult<()> {
        let (site, subject) = (self.record.site_id, self.record.subject_id);
        crate::services::guard::ensure_unlocked(conn, site, Some(subject))?;
        group_commit::write_one(conn, &self.record)?;
        crate::services::guard::after_change(
            conn,
            &self.caller,
            "temperatures",
            None,
            site,
            subject,
        )
    }
}

/// The id sequence of new temperatures.
const SEQUENCE: &str = "temperatures_id_seq";

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
    let scope = authorize(&caller, Permission::ReadClinical)?;
    let (code, id) = path.into_inner();
    let temp = db::run(&state.pool, move |conn| {
        let (subject, row) = find(conn, &scope, &code, id, false)?;
        Ok(Temperature::from_row(row, &subject.code))
    })
    .await?;
    Ok(with_etag(StatusCode::OK, temp.version, &temp))
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
    let scope = authorize(&caller, Permission::EnterClinical)?;
    // checked once the record is found: scope (404) comes before preconditions (428)
    let expected = if_match(&req);
    let b = body.value;
    let reason =
        Reason::parse("reason", b.reason.as_deref()).map_err(|e| AppError::Validation(vec![e]))?;
    let (code, id) = path.into_inner();
    let protocol = state.protocol.clone();
    let temp = db::transaction(&state.pool, move |conn| {
        let (subject, old) = find(conn, &scope, &code, id, true)?;
        let expected = expected?;
        if old.deleted_at.is_some() {
            return Err(AppError::Conflict(
                "This temperature is marked entered in error.".into(),
            ));
        }
        if old.version != expected {
            return Err(AppError::PreconditionFailed);
        }
        let merged = NewTemperature {
            measured_at: b.measured_at.unwrap_or(old.measured_at),
            celsius: b.celsius.unwrap_or(to_f64(&old.celsius)),
            method: b.method.clone().unwrap_or(old.method.clone()),
        };
        let e = parse(&protocol, &merged)?;
        check(conn, &subject, &e)?;
        let new: TemperatureRow = diesel::update(t::table.find(id))
            .set((
                t::measured_at.eq(e.measured_at),
                t::celsius.eq(decimal(e.celsius.value(), 1)),
                t::method.eq(&e.method),
                t::fever.eq(e.celsius.value() > protocol.fever_threshold()),
                t::version.eq(t::version + 1),
                t::updated_at.eq(diesel::dsl::now),
                t::updated_by.eq(caller.user_id),
            ))
            .returning(TemperatureRow::as_returning())
            .get_result(conn)?;
        let (o, n) = diff(
            &audit_view(to_json(&Temperature::from_row(old, &subject.code))?),
            &audit_view(to_json(&Temperature::from_row(new.clone(), &subject.code))?),
        );
        audit::record(
            conn,
            &AuditEvent::new(Some(&caller.actor), "update", "temperatures", &caller.meta)
                .record(id)
                .site(Some(subject.site_id))
                .subject(Some(subject.id))
                .old(o)
                .new_values(n)
                .reason(Some(reason.as_str())),
        )?;
        crate::services::guard::after_change(
            conn,
            &caller,
            "temperatures",
            Some(id),
            subject.site_id,
            subject.id,
        )?;
        Ok(Temperature::from_row(new, &subject.code))
    })
    .await?;
    Ok(with_etag(StatusCode::OK, temp.version, &temp))
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
    let scope = authorize(&caller, Permission::EnterClinical)?;
    let expected = optional_if_match(&req)?;
    let reason = Reason::parse("reason", Some(&body.value.reason))
        .map_err(|e| AppError::Validation(vec![e]))?;
    let (code, id) = path.into_inner();
    let temp = db::transaction(&state.pool, move |conn| {
        let (subject, old) = find(conn, &scope, &code, id, true)?;
        let deletion = Deletion {
            caller: &caller,
            subject: &subject,
            entity: "temperatures",
            noun: "temperature",
            id,
            expected,
            reason: &reason,
        };
        let before = Temperature::from_row(old.clone(), &subject.code);
        deletion.run(
            conn,
            old.deleted_at.is_some(),
            old.version,
            &before,
            |conn| {
                let new: TemperatureRow = diesel::update(t::table.find(id))
                    .set((
                        t::deleted_at.eq(diesel::dsl::now),
                        t::deleted_by.eq(caller.user_id),
                        t::deleted_reason.eq(reason.as_str()),
                        t::version.eq(t::version + 1),
                        t::updated_at.eq(diesel::dsl::now),
                        t::updated_by.eq(caller.user_id),
                    ))
                    .returning(TemperatureRow::as_returning())
                    .get_result(conn)?;
                Ok(Temperature::from_row(new, &subject.code))
            },
        )
    })
    .await?;
    Ok(with_etag(StatusCode::OK, temp.version, &temp))
}

/// Records a temperature for `subject` (found within the caller's scope) in the caller's
/// transaction, with the checks and the write of the step-by-step path. Shared by the API
/// and `casebook seed-demo`.
pub fn enter(
    conn: &mut PgConnection,
    protocol: &Protocol,
    caller: &Caller,
    subject: SubjectRef,
    new: &NewTemperature,
) -> AppResult<Value> {
    let e = parse(protocol, new)?;
    let target = entry::Target::of(conn, subject, SEQUENCE)?;
    let entry = prepare_for(protocol, caller.clone(), target, e)?;
    entry.write(conn)?;
    Ok(entry.record.new_values)
}
