//! Source data verification: a monitor marks one version of a record verified; a later
//! change of the record clears it (see services::guard::after_change). Today's tables and
//! the records of the study definition's forms share [`mark`]; only finding the record
//! differs.

use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;

use crate::api::clinical::{find_subject, SubjectRef};
use crate::api::resource;
use crate::audit::{self, AuditEvent};
use crate::auth::{authorize, Caller, Permission};
use crate::db::{self, form_records as fr};
use crate::error::{conflict_on_unique, AppError, AppResult};
use crate::schema::verifications as v;
use crate::services::form_records::ENTITY;
use crate::state::AppState;

use super::{answered_type, record_owner, stored_type, RECORD_TYPES};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        resource("/subjects/{subject_code}/{form}/{id}/verify").route(web::post().to(verify)),
    )
    .service(
        resource("/subjects/{subject_code}/forms/{form}/{id}/verify")
            .route(web::post().to(verify_form)),
    );
}

#[derive(Debug, Clone, Serialize, Queryable, Selectable, ToSchema)]
#[diesel(table_name = v)]
pub struct Verification {
    pub id: i64,
    pub record_type: String,
    pub record_id: i64,
    /// the version of the record that was verified
    pub record_version: i32,
    pub verified_by: i64,
    pub verified_at: DateTime<Utc>,
    /// set when the record changed afterwards
    pub cleared_at: Option<DateTime<Utc>>,
}

/// Mark a record source-data-verified (monitor of the site).
#[utoipa::path(post, path = "/api/v1/subjects/{subject_code}/{form}/{id}/verify", tag = "monitoring",
    params(("subject_code" = String, Path), ("form" = String, Path, description = "consents, injections, temperatures or adverse-events"), ("id" = i64, Path)),
    responses((status = 200, body = Verification), (status = 403, body = crate::error::Problem),
        (status = 404, body = crate::error::Problem), (status = 409, description = "already verified", body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn verify(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, String, i64)>,
) -> AppResult<HttpResponse> {
    let scope = authorize(&caller, Permission::VerifySource)?;
    let (code, form, id) = path.into_inner();
    let record_type = RECORD_TYPES
        .iter()
        .find(|(_, path)| *path == Some(form.as_str()))
        .map(|(t, _)| *t)
        .ok_or(AppError::NotFound)?;
    let done = db::transaction(&state.pool, move |conn| {
        let subject = find_subject(conn, &scope, &code)?;
        let owner = record_owner(conn, record_type, id)?;
        if owner.subject_id != subject.id {
            return Err(AppError::NotFound);
        }
        let mut done = mark(
            conn,
            &caller,
            &subject,
            stored_type(record_type),
            id,
            owner.version,
        )?;
        done.record_type = answered_type(&done.record_type, owner.form.as_deref());
        Ok(done)
    })
    .await?;
    Ok(HttpResponse::Ok().json(done))
}

/// Mark a record of a form of the study definition source-data-verified (monitor of the
/// site); a correction or its deletion clears the verification.
#[utoipa::path(post, path = "/api/v1/subjects/{subject_code}/forms/{form}/{id}/verify", tag = "monitoring",
    params(("subject_code" = String, Path), ("form" = String, Path, description = "a form id of GET /study/definition"), ("id" = i64, Path)),
    responses((status = 200, body = Verification), (status = 403, body = crate::error::Problem),
        (status = 404, description = "no such record of the form, entered in error, or not in your sites", body = crate::error::Problem),
        (status = 409, description = "already verified", body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn verify_form(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, String, i64)>,
) -> AppResult<HttpResponse> {
    let scope = authorize(&caller, Permission::VerifySource)?;
    let (code, form, id) = path.into_inner();
    let done = db::transaction(&state.pool, move |conn| {
        let subject = find_subject(conn, &scope, &code)?;
        // held until the verification commits, so that a correction in flight cannot slip
        // between reading the version and recording it as verified
        let record = fr::find(conn, subject.id, &form, id, true)?;
        if record.deleted_at.is_some() {
            return Err(AppError::NotFound);
        }
        mark(conn, &caller, &subject, ENTITY, id, record.version)
    })
    .await?;
    Ok(HttpResponse::Ok().json(done))
}

/// Records the verification of `version` of a record of the subject, once while it holds
/// (409 for a second), with its audit row.
fn mark(
    conn: &mut PgConnection,
    caller: &Caller,
    subject: &SubjectRef,
    record_type: &str,
    id: i64,
    version: i32,
) -> AppResult<Verification> {
    let current: i64 = v::table
        .filter(v::record_type.eq(record_type))
        .filter(v::record_id.eq(id))
        .filter(v::cleared_at.is_null())
        .count()
        .get_result(conn)?;
    let already = "This version of the record is already verified.".to_owned();
    if current > 0 {
        return Err(AppError::Conflict(already));
    }
    let row: Verification = diesel::insert_into(v::table)
        .values((
            v::site_id.eq(subject.site_id),
            v::subject_id.eq(subject.id),
            v::record_type.eq(record_type),
            v::record_id.eq(id),
            v::record_version.eq(version),
            v::verified_by.eq(caller.user_id),
        ))
        .returning(Verification::as_returning())
        .get_result(conn)
        .map_err(conflict_on_unique(already))?;
    audit::record(
        conn,
        &AuditEvent::new(Some(&caller.actor), "verify", record_type, &caller.meta)
            .record(id)
            .site(Some(subject.site_id))
            .subject(Some(subject.id))
            .new_values(json!({"verified_version": version, "verification": row.id})),
    )?;
    Ok(row)
}
