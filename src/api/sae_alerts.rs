//! The SAE alert outbox, for the people who must know an alert went out (or did not).

use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth::{authorize, Caller, Permission};
use crate::db;
use crate::error::{AppError, AppResult};
use crate::schema::{form_records as r, sae_alerts as a};
use crate::state::AppState;

use super::clinical::adverse_events::AdverseEvents;
use super::clinical::legacy::LegacyForm;
use super::{resource, Page};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/sae-alerts").route(web::get().to(list)));
}

#[derive(Debug, Serialize, Queryable, Selectable)]
#[diesel(table_name = a)]
struct AlertRow {
    id: i64,
    payload: serde_json::Value,
    status: String,
    attempts: i32,
    next_attempt_at: DateTime<Utc>,
    delivered_at: Option<DateTime<Utc>>,
    last_error: Option<String>,
    created_at: DateTime<Utc>,
    form_record_id: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SaeAlert {
    pub id: i64,
    /// the adverse event that raised it: the form record's id, for a record of the adverse
    /// event form (its legacy path `/subjects/{code}/adverse-events/{id}`); null otherwise
    pub adverse_event_id: Option<i64>,
    /// what was (or will be) sent
    pub payload: serde_json::Value,
    /// pending, delivered or failed (gave up)
    pub status: String,
    pub attempts: i32,
    pub next_attempt_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    /// the form record that raised it (a form bound to the sae_alert rule)
    pub form_record_id: i64,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AlertFilter {
    /// pending, delivered or failed
    pub status: Option<String>,
    pub limit: Option<i64>,
    pub after: Option<i64>,
}

/// Serious adverse event alerts and their delivery state.
#[utoipa::path(get, path = "/api/v1/sae-alerts", tag = "adverse events", params(AlertFilter),
    responses((status = 200, body = Page<SaeAlert>), (status = 403, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn list(
    state: web::Data<AppState>,
    caller: Caller,
    f: web::Query<AlertFilter>,
) -> AppResult<HttpResponse> {
    let scope = authorize(&caller, Permission::ReadSafetyAlerts)?;
    let f = f.into_inner();
    let limit = f.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(AppError::invalid("limit", "must be between 1 and 500"));
    }
    let items = db::run(&state.pool, move |conn| {
        let mut q = a::table
            .inner_join(r::table)
            .filter(a::id.gt(f.after.unwrap_or(0)))
            .into_boxed();
        if let Some(ids) = scope.site_ids() {
            q = q.filter(a::site_id.eq_any(ids.to_vec()));
        }
        if let Some(s) = f.status {
            q = q.filter(a::status.eq(s));
        }
        let rows: Vec<(AlertRow, String)> = q
            .order(a::id)
            .limit(limit)
            .select((AlertRow::as_select(), r::form_id))
            .load(conn)?;
        Ok(rows
            .into_iter()
            .map(|(x, form)| SaeAlert {
                id: x.id,
                adverse_event_id: (form == AdverseEvents::FORM).then_some(x.form_record_id),
                payload: x.payload,
                status: x.status,
                attempts: x.attempts,
                next_attempt_at: x.next_attempt_at,
                delivered_at: x.delivered_at,
                last_error: x.last_error,
                created_at: x.created_at,
                form_record_id: x.form_record_id,
            })
            .collect::<Vec<_>>())
    })
    .await?;
    Ok(HttpResponse::Ok().json(Page::new(items, limit, |a| a.id)))
}
