//! Safety views across sites: adverse events by criteria, and late serious reports.

use actix_web::{web, HttpResponse};
use chrono::{DateTime, NaiveDate, Utc};
use diesel::prelude::*;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth::{authorize, Caller, Permission};
use crate::db;
use crate::domain::sae;
use crate::error::{AppError, AppResult};
use crate::schema::{adverse_events as ae, sae_alerts as a, sites, subjects as s};
use crate::state::AppState;

use super::clinical::adverse_events::{AdverseEvent, AdverseEventRow};
use super::{resource, Page};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/adverse-events").route(web::get().to(list)))
        .service(resource("/safety/overdue").route(web::get().to(overdue)));
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AeFilter {
    pub serious: Option<bool>,
    /// CTCAE grade 1-5
    pub grade: Option<i16>,
    /// site code
    pub site: Option<String>,
    /// not_related, unlikely, possible, probable or definite
    pub relationship: Option<String>,
    /// include records marked entered in error
    pub include_deleted: Option<bool>,
    pub limit: Option<i64>,
    pub after: Option<i64>,
}

/// Adverse events across the caller's sites.
#[utoipa::path(get, path = "/api/v1/adverse-events", tag = "adverse events", params(AeFilter),
    responses((status = 200, body = Page<AdverseEvent>), (status = 403, body = crate::error::Problem), (status = 422, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn list(
    state: web::Data<AppState>,
    caller: Caller,
    f: web::Query<AeFilter>,
) -> AppResult<HttpResponse> {
    let scope = authorize(&caller, Permission::ReadClinical)?;
    let f = f.into_inner();
    let limit = f.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(AppError::invalid("limit", "must be between 1 and 500"));
    }
    let items = db::run(&state.pool, move |conn| {
        let mut q = ae::table
            .inner_join(s::table)
            .inner_join(sites::table.on(sites::id.eq(ae::site_id)))
            .filter(ae::id.gt(f.after.unwrap_or(0)))
            .into_boxed();
        if let Some(ids) = scope.site_ids() {
            q = q.filter(ae::site_id.eq_any(ids.to_vec()));
        }
        if !f.include_deleted.unwrap_or(false) {
            q = q.filter(ae::deleted_at.is_null());
        }
        if let Some(v) = f.serious {
            q = q.filter(ae::serious.eq(v));
        }
        if let Some(g) = f.grade {
            q = q.filter(ae::grade.eq(g));
        }
        if let Some(code) = f.site {
            q = q.filter(sites::code.eq(code));
        }
        if let Some(r) = f.relationship {
            q = q.filter(ae::relationship.eq(r));
        }
        let rows: Vec<(AdverseEventRow, String)> = q
            .order(ae::id)
            .limit(limit)
            .select((AdverseEventRow::as_select(), s::subject_code))
            .load(conn)?;
        Ok(rows
            .into_iter()
            .map(|(r, code): (AdverseEventRow, String)| AdverseEvent::from_row(r, &code))
            .collect::<Vec<_>>())
    })
    .await?;
    Ok(HttpResponse::Ok().json(Page::new(items, limit, |e| e.id)))
}

/// ae id, subject code, site code, term, awareness, entered, alert status, delivered
type OverdueRow = (
    i64,
    String,
    String,
    String,
    NaiveDate,
    DateTime<Utc>,
    String,
    Option<DateTime<Utc>>,
);

#[derive(Debug, Serialize, ToSchema)]
pub struct OverdueSae {
    /// a row of today's adverse event form (absent for a record of the study's forms)
    #[serde(skip_serializing_if = "Option::is_none")]
    pub adverse_event_id: Option<i64>,
    /// the form of the study bound to the `sae_alert` rule (absent for today's form)
    #[serde(skip_serializing_if = "Option::is_none")]
    pub form: Option<String>,
    /// its record, at `/subjects/{subject_code}/forms/{form}/{form_record_id}`
    #[serde(skip_serializing_if = "Option::is_none")]
    pub form_record_id: Option<i64>,
    pub subject_code: String,
    pub site_code: String,
    /// null when the form does not record a term
    pub term: Option<String>,
    pub awareness_date: NaiveDate,
    pub entered_at: DateTime<Utc>,
    /// entered more than 24 h after the site became aware
    pub entered_late: bool,
    /// pending, delivered or failed
    pub alert_status: String,
    pub delivered_at: Option<DateTime<Utc>>,
    /// not delivered within 24 h of awareness
    pub delivery_late: bool,
}

impl OverdueSae {
    /// The report when it is late, none otherwise.
    #[allow(clippy::too_many_arguments)]
    fn late(
        record: (Option<i64>, Option<String>, Option<i64>),
        subject_code: String,
        site_code: String,
        term: Option<String>,
        awareness_date: NaiveDate,
        entered_at: DateTime<Utc>,
        alert_status: String,
        delivered_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Option<Self> {
        let (entered_late, delivery_late) =
            sae::lateness(awareness_date, entered_at, delivered_at, now);
        let (adverse_event_id, form, form_record_id) = record;
        (entered_late || delivery_late).then_some(Self {
            adverse_event_id,
            form,
            form_record_id,
            subject_code,
            site_code,
            term,
            awareness_date,
            entered_at,
            entered_late,
            alert_status,
            delivered_at,
            delivery_late,
        })
    }
}

/// Serious adverse events reported late: entered more than 24 h after awareness, or whose
/// alert was not delivered within 24 h of awareness. Awareness is taken as the start of the
/// awareness date, UTC (the most demanding reading). Today's adverse events first, then the
/// serious records of the study's forms bound to the `sae_alert` rule (a record whose form
/// does not record an awareness date cannot be judged late and is not listed).
#[utoipa::path(get, path = "/api/v1/safety/overdue", tag = "adverse events",
    responses((status = 200, body = Vec<OverdueSae>), (status = 403, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn overdue(state: web::Data<AppState>, caller: Caller) -> AppResult<HttpResponse> {
    let scope = authorize(&caller, Permission::ReadSafetyOverdue)?;
    let study = state.study.clone();
    let items = db::run(&state.pool, move |conn| {
        let mut q = ae::table
            .inner_join(a::table)
            .inner_join(s::table)
            .inner_join(sites::table.on(sites::id.eq(ae::site_id)))
            .filter(ae::serious.eq(true))
            .filter(ae::deleted_at.is_null())
            .into_boxed();
        if let Some(ids) = scope.site_ids() {
            q = q.filter(ae::site_id.eq_any(ids.to_vec()));
        }
        let rows: Vec<OverdueRow> = q
            .order(ae::id)
            .select((
                ae::id,
                s::subject_code,
                sites::code,
                ae::term,
                ae::awareness_date,
                ae::created_at,
                a::status,
                a::delivered_at,
            ))
            .load(conn)?;
        let now = Utc::now();
        let mut out: Vec<OverdueSae> = rows
            .into_iter()
            .filter_map(
                |(id, subject, site, term, aware, entered, status, delivered)| {
                    OverdueSae::late(
                        (Some(id), None, None),
                        subject,
                        site,
                        Some(term),
                        aware,
                        entered,
                        status,
                        delivered,
                        now,
                    )
                },
            )
            .collect();
        for b in sae::bindings(&study) {
            let records = db::safety::serious_records(conn, &study.study.id, &b, scope.site_ids())?;
            out.extend(records.into_iter().filter_map(|r| {
                let aware =
                    NaiveDate::parse_from_str(r.awareness_date.as_deref()?, "%Y-%m-%d").ok()?;
                OverdueSae::late(
                    (None, Some(r.form_id), Some(r.id)),
                    r.subject_code,
                    r.site_code,
                    r.term,
                    aware,
                    r.entered_at,
                    r.alert_status,
                    r.delivered_at,
                    now,
                )
            }));
        }
        Ok(out)
    })
    .await?;
    Ok(HttpResponse::Ok().json(items))
}
