//! Subjects and their clinical records. Every query takes the caller's scope and puts it
//! in SQL: a subject outside it is a 404, exactly like one that does not exist.

pub mod adverse_events;
pub mod casebook;
pub mod consents;
pub mod forms;
pub mod injections;
pub mod legacy;
pub mod schedule;
pub mod subjects;
pub mod temperatures;

use std::str::FromStr;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use bigdecimal::{BigDecimal, ToPrimitive};
use diesel::prelude::*;
use serde::Deserialize;
use serde_json::Value;
use utoipa::ToSchema;

pub use crate::audit::audit_view;
use crate::auth::{Caller, Scope};
use crate::db;
pub use crate::db::subjects::{consent_window, find_subject, SubjectRef};
pub use crate::domain::consent::ConsentWindow;
use crate::error::AppResult;
pub use crate::services::deletion::Deletion;
use crate::services::idempotency::{self, Claim};
use crate::state::AppState;

pub fn routes(cfg: &mut web::ServiceConfig) {
    subjects::routes(cfg);
    consents::routes(cfg);
    injections::routes(cfg);
    temperatures::routes(cfg);
    adverse_events::routes(cfg);
    casebook::routes(cfg);
    forms::routes(cfg);
    schedule::routes(cfg);
}

/// Finds a subject to write to: within scope (404) and not locked (423).
pub fn find_subject_for_write(
    conn: &mut PgConnection,
    scope: &Scope,
    code: &str,
) -> AppResult<SubjectRef> {
    let subject = find_subject(conn, scope, code)?;
    crate::services::guard::ensure_unlocked(conn, subject.site_id, Some(subject.id))?;
    Ok(subject)
}

pub fn to_f64(d: &BigDecimal) -> f64 {
    d.to_f64().unwrap_or(f64::NAN)
}

/// A value already validated to `places` decimals, as stored.
pub fn decimal(v: f64, places: usize) -> BigDecimal {
    BigDecimal::from_str(&format!("{v:.places$}")).unwrap_or_default()
}

/// `{reason}`: the body of a DELETE (mark entered in error).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeleteRequest {
    pub reason: String,
}

/// The version a DELETE expects: If-Match is optional there, checked when sent.
pub fn optional_if_match(req: &HttpRequest) -> AppResult<Option<i32>> {
    if req
        .headers()
        .contains_key(actix_web::http::header::IF_MATCH)
    {
        super::if_match(req).map(Some)
    } else {
        Ok(None)
    }
}

/// Runs a POST's unit of work in one transaction, honouring `Idempotency-Key`: a retry
/// with the same key and body returns the first answer and writes nothing. `find` looks
/// up what the record belongs to within the caller's scope (404) before any replay, so
/// that a caller who can no longer see it is not shown the record; `work` gets its answer.
pub async fn idempotent_post<T, L, F>(
    state: &web::Data<AppState>,
    caller: &Caller,
    req: &HttpRequest,
    raw: &[u8],
    find: L,
    work: F,
) -> AppResult<HttpResponse>
where
    L: FnOnce(&mut PgConnection) -> AppResult<T> + Send + 'static,
    F: FnOnce(&mut PgConnection, T) -> AppResult<Value> + Send + 'static,
{
    let key = super::idempotency_key(req)?;
    let fingerprint = idempotency::fingerprint("POST", req.path(), raw);
    let user = caller.user_id;
    let (status, body) = db::transaction(&state.pool, move |conn| {
        let found = find(conn)?;
        if let Some(k) = &key {
            if let Claim::Replay { status, body } = idempotency::claim(conn, user, k, &fingerprint)?
            {
                return Ok((status, body));
            }
        }
        let body = work(conn, found)?;
        if let Some(k) = &key {
            idempotency::store(conn, user, k, 201, &body)?;
        }
        Ok((201u16, body))
    })
    .await?;
    Ok(created(status, body))
}

/// The answer to a create (or its replay): the status, the record, its version as ETag.
/// Most creates in one round trip (services::form_entry): the record when the one
/// statement wrote it; none for the step-by-step path, which checks and answers in its own
/// order (and which a request with an Idempotency-Key always takes).
pub async fn at_once(
    state: &AppState,
    req: &HttpRequest,
    bearer: &crate::auth::Bearer,
    new: &crate::services::form_entry::Create<'_>,
) -> AppResult<Option<crate::services::form_records::FormRecord>> {
    if req.headers().contains_key("idempotency-key") {
        return Ok(None);
    }
    crate::services::form_entry::enter_at_once(
        &state.pool,
        &state.form_entries,
        &state.study,
        bearer,
        new,
    )
    .await
}

pub fn created(status: u16, body: Value) -> HttpResponse {
    let mut resp = HttpResponse::build(StatusCode::from_u16(status).unwrap_or(StatusCode::CREATED));
    if let Some(v) = body.get("version").and_then(Value::as_i64) {
        resp.insert_header((actix_web::http::header::ETAG, format!("\"{v}\"")));
    }
    resp.json(body)
}
