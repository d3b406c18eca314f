//! Reading and verifying the audit trail.

use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::audit::{self, ChainReport};
use crate::auth::{authorize, Caller, Permission};
use crate::db;
use crate::db::audit::AuditEntry;
use crate::db::audit::AuditQuery;
use crate::error::{AppError, AppResult};
use crate::state::AppState;

use super::{resource, Page};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/audit").route(web::get().to(list)))
        .service(resource("/audit/verify").route(web::get().to(verify)));
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditFilter {
    /// subject code, e.g. FR01-001
    pub subject: Option<String>,
    /// site code
    pub site: Option<String>,
    /// the table a row was written under, as stored: rows written before a legacy form's
    /// records moved into `form_records` keep their old table (`injections`,
    /// `temperatures`, `adverse_events`) and ids; use `form` for a record's whole history
    pub table: Option<String>,
    /// the stored record id; with `form`, the id of a record of that form, whose rows
    /// written under its old table and id before the move are included
    pub record_id: Option<i64>,
    /// a form of the study definition: the rows of its records, including those written
    /// under a legacy table before the records moved (mapped through `legacy_record_ids`)
    pub form: Option<String>,
    pub user_id: Option<i64>,
    pub action: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub limit: Option<i64>,
    pub after: Option<i64>,
}

/// The audit trail, oldest first. Admins see everything; monitors the rows of their sites.
#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", params(AuditFilter),
    responses((status = 200, body = Page<AuditEntry>), (status = 403, body = crate::error::Problem),
        (status = 422, description = "`limit` out of range, or `form` not a form of the study", body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn list(
    state: web::Data<AppState>,
    caller: Caller,
    filter: web::Query<AuditFilter>,
) -> AppResult<HttpResponse> {
    let scope = authorize(&caller, Permission::ReadAudit)?;
    let f = filter.into_inner();
    let limit = f.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(AppError::invalid("limit", "must be between 1 and 1000"));
    }
    if let Some(form) = &f.form {
        if state.study.form(form).is_none() {
            return Err(AppError::invalid(
                "form",
                format!("{form} is not a form of the study"),
            ));
        }
    }
    let q = AuditQuery {
        subject: f.subject,
        site: f.site,
        table: f.table,
        record_id: f.record_id,
        form: f.form,
        user_id: f.user_id,
        action: f.action,
        from: f.from,
        to: f.to,
        after: f.after.unwrap_or(0),
        limit,
    };
    let items = db::run(&state.pool, move |conn| {
        Ok(db::audit::list(conn, &q, scope.site_ids())?)
    })
    .await?;
    Ok(HttpResponse::Ok().json(Page::new(items, limit, |e| e.id)))
}

/// Recompute the hash chain. `pending` rows are committed but not sealed yet.
#[utoipa::path(get, path = "/api/v1/audit/verify", tag = "audit",
    responses((status = 200, body = ChainReport), (status = 403, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn verify(state: web::Data<AppState>, caller: Caller) -> AppResult<HttpResponse> {
    authorize(&caller, Permission::VerifyAudit)?;
    let pool = state.pool.clone();
    let report = db::run(&state.pool, move |conn| {
        // A second connection if one is idle, never waiting for it: see `verify_parallel`.
        Ok(match pool.try_get() {
            Some(mut helper) => audit::verify_parallel(conn, &mut [&mut helper])?,
            None => audit::verify(conn)?,
        })
    })
    .await?;
    Ok(HttpResponse::Ok().json(report))
}
