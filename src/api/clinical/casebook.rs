//! Everything about one subject, with the derived endpoints.

use actix_web::{web, HttpResponse};
use diesel::prelude::*;
use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::policy::shown_name;
use crate::auth::{authorize, Caller, Permission, Role};
use crate::db;
use crate::domain::endpoints::{self, Endpoints};
use crate::domain::study::Definition;
use crate::error::AppResult;
use crate::schema::{consents as c, queries as q, signatures as sg, verifications as v};
use crate::services::form_records::ENTITY;
use crate::state::AppState;
use diesel::pg::PgConnection;

use super::adverse_events::{AdverseEvent, AdverseEvents};
use super::consents::Consent;
use super::injections::{Injection, Injections};
use super::legacy::LegacyForm;
use super::subjects::{load, Subject};
use super::temperatures::{Temperature, Temperatures};
use super::{find_subject, SubjectRef};
use crate::api::resource;
use crate::services::form_records::FormRecord;

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
    /// the records of the study definition's other forms, oldest first (those entered in
    /// error left out)
    pub form_records: Vec<FormRecord>,
    /// computed from the records above by the study definition's rules (`dose`,
    /// `fever_endpoints`); an endpoint the study does not define is absent
    pub endpoints: Endpoints,
    pub monitoring: Monitoring,
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
    let def = state.study.clone();
    let mut book = db::run(&state.pool, move |conn| {
        let s = find_subject(conn, &scope, &code)?;
        build(conn, &s, &def)
    })
    .await?;
    for sig in &mut book.monitoring.signatures {
        sig.show_to(caller.role);
    }
    Ok(HttpResponse::Ok().json(book))
}

/// What an e-signature covers: the data of the casebook, without derived values and
/// monitoring state. Its SHA-256 is over `serde_json::to_vec` of this structure (fields in
/// declaration order, maps sorted by key).
#[derive(Serialize)]
pub struct SignedContent<'a> {
    pub subject: &'a Subject,
    pub consents: &'a [Consent],
    pub injections: &'a [Injection],
    pub temperatures: &'a [Temperature],
    pub adverse_events: &'a [AdverseEvent],
    /// left out when there are none, so that the content of a casebook without form records
    /// (every signature made before they existed) hashes as it did
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pub form_records: &'a [FormRecord],
}

impl Casebook {
    pub fn signed_content(&self) -> SignedContent<'_> {
        SignedContent {
            subject: &self.subject,
            consents: &self.consents,
            injections: &self.injections,
            temperatures: &self.temperatures,
            adverse_events: &self.adverse_events,
            form_records: &self.form_records,
        }
    }
}

/// Builds the casebook of a subject already found within the caller's scope; `def` is the
/// running study definition, whose forms the verification status lists and whose rules
/// derive the endpoints.
pub fn build(conn: &mut PgConnection, s: &SubjectRef, def: &Definition) -> AppResult<Casebook> {
    {
        let subject = load(conn, s.id)?;
        let consents: Vec<Consent> = c::table
            .filter(c::subject_id.eq(s.id))
            .filter(c::deleted_at.is_null())
            .order(c::id)
            .select(Consent::as_select())
            .load(conn)?;
        // one read of the live form records: the moved legacy forms in their legacy arrays
        // and order, the other forms as form records
        let (moved, form_records): (Vec<FormRecord>, Vec<FormRecord>) =
            crate::db::form_records::live(conn, s.id)?
                .into_iter()
                .map(|r| FormRecord::of(r, &s.code))
                .partition(|r| crate::domain::study::moved_form(&r.form).is_some());
        let of = |form: &str| -> Vec<FormRecord> {
            moved.iter().filter(|r| r.form == form).cloned().collect()
        };
        let (mut injection_records, mut temperature_records, ae_records) = (
            of(Injections::FORM),
            of(Temperatures::FORM),
            of(AdverseEvents::FORM),
        );
        injection_records.sort_by(Injections::order);
        let injections: Vec<Injection> = injection_records
            .iter()
            .map(Injections::from_record)
            .collect::<AppResult<_>>()?;
        temperature_records.sort_by(Temperatures::order);
        let temperatures: Vec<Temperature> = temperature_records
            .iter()
            .map(Temperatures::from_record)
            .collect::<AppResult<_>>()?;
        // by id, as entered (AdverseEvents::order)
        let adverse_events: Vec<AdverseEvent> = ae_records
            .iter()
            .map(AdverseEvents::from_record)
            .collect::<AppResult<_>>()?;
        let records: Vec<(&str, &serde_json::Value)> = moved
            .iter()
            .chain(&form_records)
            .map(|r| (r.form.as_str(), &r.values))
            .collect();
        let endpoints = endpoints::derive(def, &records, s.tz);
        let monitoring = monitoring(
            conn,
            s.id,
            def,
            &form_records,
            [&injection_records, &temperature_records, &ae_records],
        )?;
        Ok(Casebook {
            subject,
            consents,
            injections,
            temperatures,
            adverse_events,
            form_records,
            endpoints,
            monitoring,
        })
    }
}

/// Queries, verification and signatures of the casebook.
#[derive(Serialize, ToSchema)]
pub struct Monitoring {
    /// queries not yet closed (open or answered)
    pub open_queries: i64,
    /// per form: records, and records whose current version is verified; today's tables
    /// (consents, injections, temperatures, adverse-events), then every other form of the
    /// study definition by its id, in definition order
    pub verified: Vec<FormVerification>,
    pub signatures: Vec<Signature>,
}

#[derive(Serialize, ToSchema)]
pub struct FormVerification {
    pub form: String,
    pub records: i64,
    pub verified: i64,
}

#[derive(Debug, Clone, Serialize, Queryable, Selectable, ToSchema)]
#[diesel(table_name = sg)]
pub struct Signature {
    pub id: i64,
    pub signer_id: i64,
    /// the signer's name as printed at signing; sponsors see the pseudonym `User <signer_id>`
    /// instead, as in the ODM export
    pub printed_name: String,
    pub meaning: String,
    pub signed_at: chrono::DateTime<chrono::Utc>,
    /// SHA-256 of the casebook content as signed
    pub casebook_sha256: String,
    /// set when the data changed after signing: the signature is kept, no longer valid
    pub invalidated_at: Option<chrono::DateTime<chrono::Utc>>,
    pub invalidated_reason: Option<String>,
}

impl Signature {
    /// The printed name as `viewer` may see it ([`shown_name`]); the record keeps it.
    pub fn show_to(&mut self, viewer: Role) {
        self.printed_name = shown_name(viewer, self.signer_id, &self.printed_name);
    }
}

fn monitoring(
    conn: &mut PgConnection,
    subject_id: i64,
    def: &Definition,
    form_records: &[FormRecord],
    [injections, temperatures, adverse_events]: [&[FormRecord]; 3],
) -> AppResult<Monitoring> {
    let open_queries: i64 = q::table
        .filter(q::subject_id.eq(subject_id))
        .filter(q::status.ne("closed"))
        .count()
        .get_result(conn)?;
    let verified_ids: Vec<(String, i64)> = v::table
        .filter(v::subject_id.eq(subject_id))
        .filter(v::cleared_at.is_null())
        .select((v::record_type, v::record_id))
        .load(conn)?;
    let count_verified = |t: &str| verified_ids.iter().filter(|(rt, _)| rt == t).count() as i64;
    let live = |n: i64, form: &str, t: &str| FormVerification {
        form: form.into(),
        records: n,
        verified: count_verified(t),
    };
    let consents_n: i64 = c::table
        .filter(c::subject_id.eq(subject_id))
        .filter(c::deleted_at.is_null())
        .count()
        .get_result(conn)?;
    let signatures: Vec<Signature> = sg::table
        .filter(sg::subject_id.eq(subject_id))
        .order(sg::id)
        .select(Signature::as_select())
        .load(conn)?;
    // a moved legacy form's records, verified as form records
    let moved = |form: &str, records: &[FormRecord]| FormVerification {
        form: form.into(),
        records: records.len() as i64,
        verified: verified_ids
            .iter()
            .filter(|(rt, id)| rt == ENTITY && records.iter().any(|r| r.id == *id))
            .count() as i64,
    };
    let mut verified = vec![
        live(consents_n, "consents", "consents"),
        moved("injections", injections),
        moved("temperatures", temperatures),
        moved("adverse-events", adverse_events),
    ];
    let engine_forms = def
        .forms
        .iter()
        .filter(|f| crate::domain::study::moved_form(&f.id).is_none());
    for form in engine_forms {
        let records: Vec<i64> = form_records
            .iter()
            .filter(|r| r.form == form.id)
            .map(|r| r.id)
            .collect();
        verified.push(FormVerification {
            form: form.id.clone(),
            records: records.len() as i64,
            verified: verified_ids
                .iter()
                .filter(|(rt, id)| rt == ENTITY && records.contains(id))
                .count() as i64,
        });
    }
    Ok(Monitoring {
        open_queries,
        verified,
        signatures,
    })
}
