//! Everything about one subject, with the derived endpoints.

use actix_web::{web, HttpResponse};
use diesel::prelude::*;
use serde::Serialize;
use utoipa::ToSchema;

use crate::app::AppState;
use crate::auth::{authorize, Caller, Permission};
use crate::db;
use crate::domain::endpoints::{derive, Endpoints, InjectionFact, TemperatureFact};
use crate::error::AppResult;
use crate::schema::{adverse_events as ae, consents as c, injections as i, temperatures as t};

use super::adverse_events::{AdverseEvent, AdverseEventRow};
use super::consents::Consent;
use super::find_subject;
use super::injections::{Injection, InjectionRow};
use super::subjects::{load, Subject};
use super::temperatures::{Temperature, TemperatureRow};
use crate::api::resource;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/subjects/{subject_code}/casebook").route(web::get().to(casebook)));
}

#[derive(Serialize, ToSchema)]
pub struct Casebook {
    pub subject: Subject,
    pub consents: Vec<Consent>,
    /// records marked entered in error are left out here (the audit trail keeps them)
    pub injections: Vec<Injection>,
    pub temperatures: Vec<Temperature>,
    pub adverse_events: Vec<AdverseEvent>,
    /// computed from the records above
    pub endpoints: Endpoints,
}

/// A subject's casebook: records and derived endpoints.
#[utoipa::path(get, path = "/api/v1/subjects/{subject_code}/casebook", tag = "subjects",
    params(("subject_code" = String, Path)),
    responses((status = 200, body = Casebook), (status = 404, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn casebook(
    state: web::Data<AppState>,
    caller: Caller,
    code: web::Path<String>,
) -> AppResult<HttpResponse> {
    let scope = authorize(&caller, Permission::ReadClinical)?;
    let code = code.into_inner();
    let threshold = state.protocol.fever_threshold();
    let book = db::run(&state.pool, move |conn| {
        let s = find_subject(conn, &scope, &code)?;
        let subject = load(conn, s.id)?;
        let consents: Vec<Consent> = c::table
            .filter(c::subject_id.eq(s.id))
            .filter(c::deleted_at.is_null())
            .order(c::id)
            .select(Consent::as_select())
            .load(conn)?;
        let injections: Vec<Injection> = i::table
            .filter(i::subject_id.eq(s.id))
            .filter(i::deleted_at.is_null())
            .order(i::study_day)
            .select(InjectionRow::as_select())
            .load(conn)?
            .into_iter()
            .map(|r| Injection::from_row(r, &s.code))
            .collect();
        let temperatures: Vec<Temperature> = t::table
            .filter(t::subject_id.eq(s.id))
            .filter(t::deleted_at.is_null())
            .order(t::measured_at)
            .select(TemperatureRow::as_select())
            .load(conn)?
            .into_iter()
            .map(|r| Temperature::from_row(r, &s.code))
            .collect();
        let adverse_events: Vec<AdverseEvent> = ae::table
            .filter(ae::subject_id.eq(s.id))
            .filter(ae::deleted_at.is_null())
            .order(ae::id)
            .select(AdverseEventRow::as_select())
            .load(conn)?
            .into_iter()
            .map(|r| AdverseEvent::from_row(r, &s.code))
            .collect();
        let endpoints = derive(
            &injections
                .iter()
                .map(|x| InjectionFact {
                    study_day: x.study_day,
                    administered_at: x.administered_at,
                    dose_mg: x.dose_mg,
                    given: x.given,
                })
                .collect::<Vec<_>>(),
            &temperatures
                .iter()
                .map(|x| TemperatureFact {
                    measured_at: x.measured_at,
                    celsius: x.celsius,
                })
                .collect::<Vec<_>>(),
            threshold,
            s.tz,
        );
        Ok(Casebook {
            subject,
            consents,
            injections,
            temperatures,
            adverse_events,
            endpoints,
        })
    })
    .await?;
    Ok(HttpResponse::Ok().json(book))
}
