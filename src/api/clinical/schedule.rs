//! `GET /subjects/{code}/schedule`: the subject's visits with their windows as site-local
//! dates and a status each (the rules are `domain::study::schedule`'s).

use actix_web::{web, HttpResponse};
use chrono::{NaiveDate, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use crate::api::resource;
use crate::auth::{authorize, Caller, Permission};
use crate::db::{self, schedule as q};
use crate::domain::study::schedule::{
    self as rules, day_one, record_dates, record_days, Evidence, VisitStatus,
};
use crate::domain::time::local_date;
use crate::error::AppResult;
use crate::state::AppState;

use super::find_subject;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/subjects/{subject_code}/schedule").route(web::get().to(get)));
}

/// A subject's schedule.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Schedule {
    pub subject_code: String,
    /// `first_dose` or `enrolment`
    pub anchor: String,
    /// the site-local date of day 1; none before the anchor exists
    pub day1: Option<NaiveDate>,
    /// the site-local date the statuses are computed for
    pub today: NaiveDate,
    pub time_zone: String,
    pub visits: Vec<ScheduleVisit>,
}

/// A scheduled visit and where it stands.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ScheduleVisit {
    pub id: String,
    pub name: String,
    pub day: Option<i32>,
    /// first site-local date of the window (included); none without day 1
    pub window_opens: Option<NaiveDate>,
    pub target_date: Option<NaiveDate>,
    /// last site-local date of the window (included)
    pub window_closes: Option<NaiveDate>,
    /// the forms the visit expects
    pub forms: Vec<String>,
    /// those that have a live record for the visit
    pub recorded: Vec<String>,
    pub status: VisitStatus,
}

/// The subject's scheduled visits in study-day order: windows in the site's time zone and
/// each visit not yet due, due, partly done, done, overdue or missed
/// (docs/study-definitions.md, "Schedule").
#[utoipa::path(get, path = "/api/v1/subjects/{subject_code}/schedule", tag = "forms",
    params(("subject_code" = String, Path)),
    responses((status = 200, body = Schedule), (status = 404, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn get(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> AppResult<HttpResponse> {
    let scope = authorize(&caller, Permission::ReadClinical)?;
    let code = path.into_inner();
    let def = state.study.clone();
    let body = db::run(&state.pool, move |conn| {
        let subject = find_subject(conn, &scope, &code)?;
        let facts = q::anchor_facts(conn, &def, subject.id, None)?;
        let unplaced = q::unplaced_records(conn, subject.id)?;
        let unplaced = || unplaced.iter().map(|(f, v)| (f.as_str(), v));
        let evidence = Evidence {
            records: q::visit_records(conn, subject.id)?,
            days: record_days(&def, unplaced()),
            dated: record_dates(&def, unplaced(), subject.tz),
        };
        let day1 = day_one(&def, &facts, subject.tz);
        let today = local_date(Utc::now(), subject.tz);
        let visits = rules::schedule(&def, day1, &evidence, today)
            .into_iter()
            .map(|v| ScheduleVisit {
                id: v.visit.id.clone(),
                name: v.visit.name.clone(),
                day: v.visit.day,
                window_opens: v.window.map(|w| w.opens),
                target_date: v.window.map(|w| w.target),
                window_closes: v.window.map(|w| w.closes),
                forms: v.visit.forms.clone(),
                recorded: v.recorded.iter().map(|f| (*f).to_owned()).collect(),
                status: v.status,
            })
            .collect();
        Ok(Schedule {
            subject_code: subject.code,
            anchor: match def.schedule.anchor {
                crate::domain::study::Anchor::FirstDose => "first_dose",
                crate::domain::study::Anchor::Enrolment => "enrolment",
            }
            .to_owned(),
            day1,
            today,
            time_zone: subject.tz.name().to_owned(),
            visits,
        })
    })
    .await?;
    Ok(HttpResponse::Ok().json(body))
}
