//! Safety views across sites: adverse events by criteria, and late serious reports.

use actix_web::{web, HttpResponse};
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth::{authorize, Caller, Permission};
use crate::db::{self, safety::EventFilter};
use crate::domain::sae;
use crate::error::{AppError, AppResult};
use crate::services::form_records::FormRecord;
use crate::state::AppState;

use super::clinical::adverse_events::{AdverseEvent, AdverseEvents};
use super::clinical::legacy::LegacyForm;
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
    let filter = EventFilter {
        serious: f.serious,
        grade: f.grade,
        site: f.site,
        relationship: f.relationship,
        include_deleted: f.include_deleted.unwrap_or(false),
        after: f.after.unwrap_or(0),
        limit,
    };
    let study = state.study.study.id.clone();
    let items = db::run(&state.pool, move |conn| {
        db::safety::events(conn, &study, AdverseEvents::FORM, &filter, scope.site_ids())?
            .into_iter()
            .map(|(r, code)| AdverseEvents::from_record(&FormRecord::of(r, &code)))
            .collect::<AppResult<Vec<_>>>()
    })
    .await?;
    Ok(HttpResponse::Ok().json(Page::new(items, limit, |e| e.id)))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OverdueSae {
    /// the same record, for the adverse event form (its legacy path
    /// `/subjects/{subject_code}/adverse-events/{id}` serves it); absent for other forms
    #[serde(skip_serializing_if = "Option::is_none")]
    pub adverse_event_id: Option<i64>,
    /// the form of the study bound to the `sae_alert` rule
    pub form: String,
    /// its record, at `/subjects/{subject_code}/forms/{form}/{form_record_id}`
    pub form_record_id: i64,
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
        (form, form_record_id): (String, i64),
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
        (entered_late || delivery_late).then_some(Self {
            adverse_event_id: (form == AdverseEvents::FORM).then_some(form_record_id),
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
/// awareness date, UTC (the most demanding reading). The serious records of the study's forms
/// bound to the `sae_alert` rule (the adverse event form's among them; a record whose form
/// does not record an awareness date cannot be judged late and is not listed).
#[utoipa::path(get, path = "/api/v1/safety/overdue", tag = "adverse events",
    responses((status = 200, body = Vec<OverdueSae>), (status = 403, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn overdue(state: web::Data<AppState>, caller: Caller) -> AppResult<HttpResponse> {
    let scope = authorize(&caller, Permission::ReadSafetyOverdue)?;
    let study = state.study.clone();
    let items = db::run(&state.pool, move |conn| {
        let now = Utc::now();
        let mut out: Vec<OverdueSae> = Vec::new();
        for b in sae::bindings(&study) {
            let records = db::safety::serious_records(conn, &study.study.id, &b, scope.site_ids())?;
            out.extend(records.into_iter().filter_map(|r| {
                let aware =
                    NaiveDate::parse_from_str(r.awareness_date.as_deref()?, "%Y-%m-%d").ok()?;
                OverdueSae::late(
                    (r.form_id, r.id),
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
