//! Reading and verifying the audit trail.

use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::audit::{self, ChainReport};
use crate::auth::{authorize, Caller, Permission};
use crate::db;
use crate::error::{AppError, AppResult};
use crate::schema::{audit_log, sites, subjects};
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
    pub table: Option<String>,
    pub record_id: Option<i64>,
    pub user_id: Option<i64>,
    pub action: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub limit: Option<i64>,
    pub after: Option<i64>,
}

#[derive(Debug, Serialize, Queryable, Selectable, ToSchema)]
#[diesel(table_name = audit_log)]
pub struct AuditEntry {
    pub id: i64,
    pub occurred_at: DateTime<Utc>,
    pub actor_id: Option<i64>,
    pub actor_role: Option<String>,
    pub action: String,
    pub entity_table: String,
    pub record_id: Option<i64>,
    pub site_id: Option<i64>,
    pub subject_id: Option<i64>,
    pub old_values: Option<serde_json::Value>,
    pub new_values: Option<serde_json::Value>,
    pub reason: Option<String>,
    pub request_id: Option<String>,
    pub client_addr: Option<String>,
}

/// The audit trail, oldest first. Admins see everything; monitors the rows of their sites.
#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", params(AuditFilter),
    responses((status = 200, body = Page<AuditEntry>), (status = 403, body = crate::error::Problem), (status = 422, body = crate::error::Problem)),
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
    let items = db::run(&state.pool, move |conn| {
        let mut q = audit_log::table
            .filter(audit_log::id.gt(f.after.unwrap_or(0)))
            .into_boxed();
        if let Some(ids) = scope.site_ids() {
            q = q.filter(audit_log::site_id.eq_any(ids.to_vec()));
        }
        if let Some(code) = &f.subject {
            let id: Option<i64> = subjects::table
                .filter(subjects::subject_code.eq(code))
                .select(subjects::id)
                .first(conn)
                .optional()?;
            q = q.filter(audit_log::subject_id.eq(id.unwrap_or(-1)));
        }
        if let Some(code) = &f.site {
            let id: Option<i64> = sites::table
                .filter(sites::code.eq(code))
                .select(sites::id)
                .first(conn)
                .optional()?;
            q = q.filter(audit_log::site_id.eq(id.unwrap_or(-1)));
        }
        if let Some(t) = f.table {
            q = q.filter(audit_log::entity_table.eq(t));
        }
        if let Some(r) = f.record_id {
            q = q.filter(audit_log::record_id.eq(r));
        }
        if let Some(u) = f.user_id {
            q = q.filter(audit_log::actor_id.eq(u));
        }
        if let Some(a) = f.action {
            q = q.filter(audit_log::action.eq(a));
        }
        if let Some(from) = f.from {
            q = q.filter(audit_log::occurred_at.ge(from));
        }
        if let Some(to) = f.to {
            q = q.filter(audit_log::occurred_at.lt(to));
        }
        Ok(q.order(audit_log::id)
            .limit(limit)
            .select(AuditEntry::as_select())
            .load(conn)?)
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
