//! Informed consent: recorded before anything else, withdrawn with a date and scope.
//! Re-consent on a newer form version is a new record.

use actix_web::{http::StatusCode, web, HttpRequest, HttpResponse};
use chrono::{DateTime, NaiveDate, Utc};
use diesel::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::api::{if_match, resource, with_etag, Json};
use crate::audit::{self, diff, AuditEvent};
use crate::auth::{authorize, Caller, Permission};
use crate::db;
use crate::domain::consent::{self, ConsentForm};
use crate::domain::study::{records, Definition};
use crate::domain::time::local_date;
use crate::domain::values::Reason;
use crate::domain::FieldError;
use crate::error::{AppError, AppResult};
use crate::schema::{consents as c, subjects as s};
use crate::state::AppState;

use super::{audit_view, find_subject, idempotent_post, SubjectRef};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        resource("/subjects/{subject_code}/consents")
            .route(web::get().to(list))
            .route(web::post().to(create)),
    )
    .service(resource("/subjects/{subject_code}/consents/{id}").route(web::patch().to(update)))
    .service(
        resource("/subjects/{subject_code}/consents/{id}/withdraw").route(web::post().to(withdraw)),
    );
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Signer {
    Participant,
    LegalRepresentative,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WithdrawalScope {
    /// no further data at all
    All,
    /// stops treatment, follow-up continues
    Treatment,
    /// stops follow-up visits
    FollowUp,
}

impl WithdrawalScope {
    fn as_str(self) -> &'static str {
        match self {
            Self::All => "all",
            Self::Treatment => "treatment",
            Self::FollowUp => "follow_up",
        }
    }
}

#[derive(Debug, Clone, Queryable, Selectable, Serialize, ToSchema)]
#[diesel(table_name = c)]
pub struct Consent {
    pub id: i64,
    pub form_version: String,
    pub signed_on: NaiveDate,
    /// participant or legal_representative
    pub signer: String,
    pub representative_relationship: Option<String>,
    pub assent: Option<bool>,
    pub obtained_by: i64,
    pub withdrawn_on: Option<NaiveDate>,
    pub withdrawal_scope: Option<String>,
    pub withdrawal_reason: Option<String>,
    pub version: i32,
    pub created_at: DateTime<Utc>,
    pub created_by: i64,
    pub updated_at: DateTime<Utc>,
    pub updated_by: i64,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewConsent {
    /// a consent form version in force (see GET /study)
    pub form_version: String,
    pub signed_on: NaiveDate,
    pub signer: Signer,
    /// required when a legal representative signed, e.g. "mother"
    pub representative_relationship: Option<String>,
    /// the child's assent, where age allows
    pub assent: Option<bool>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Withdrawal {
    pub withdrawn_on: NaiveDate,
    pub scope: WithdrawalScope,
    pub reason: String,
}

/// Consents of a subject.
#[utoipa::path(get, path = "/api/v1/subjects/{subject_code}/consents", tag = "consents",
    params(("subject_code" = String, Path)),
    responses((status = 200, body = Vec<Consent>), (status = 404, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn list(
    state: web::Data<AppState>,
    caller: Caller,
    code: web::Path<String>,
) -> AppResult<HttpResponse> {
    let scope = authorize(&caller, Permission::ReadClinical)?;
    let code = code.into_inner();
    let items = db::run(&state.pool, move |conn| {
        let subject = find_subject(conn, &scope, &code)?;
        Ok(c::table
            .filter(c::subject_id.eq(subject.id))
            .filter(c::deleted_at.is_null())
            .order(c::id)
            .select(Consent::as_select())
            .load(conn)?)
    })
    .await?;
    Ok(HttpResponse::Ok().json(items))
}

/// Record an informed consent.
#[utoipa::path(post, path = "/api/v1/subjects/{subject_code}/consents", tag = "consents",
    params(("subject_code" = String, Path), ("Idempotency-Key" = Option<String>, Header)),
    request_body = NewConsent,
    responses((status = 201, body = Consent), (status = 403, body = crate::error::Problem),
        (status = 404, body = crate::error::Problem), (status = 422, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn create(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    code: web::Path<String>,
    body: Json<NewConsent>,
) -> AppResult<HttpResponse> {
    let scope = authorize(&caller, Permission::EnterClinical)?;
    let b = body.value;
    let versions = state.protocol.file.consent_versions.clone();
    let code = code.into_inner();
    let cl = caller.clone();
    idempotent_post(
        &state,
        &caller,
        &req,
        &body.raw,
        move |conn| find_subject(conn, &scope, &code),
        move |conn, subject| enter(conn, &versions, &cl, &subject, &b),
    )
    .await
}

/// Withdraw a consent: no clinical data may be dated after `withdrawn_on`.
#[utoipa::path(post, path = "/api/v1/subjects/{subject_code}/consents/{id}/withdraw", tag = "consents",
    params(("subject_code" = String, Path), ("id" = i64, Path)), request_body = Withdrawal,
    responses((status = 200, body = Consent), (status = 404, body = crate::error::Problem),
        (status = 409, description = "already withdrawn", body = crate::error::Problem),
        (status = 422, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn withdraw(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, i64)>,
    body: Json<Withdrawal>,
) -> AppResult<HttpResponse> {
    let scope = authorize(&caller, Permission::EnterClinical)?;
    let b = body.value;
    let reason =
        Reason::parse("reason", Some(&b.reason)).map_err(|e| AppError::Validation(vec![e]))?;
    let (code, id) = path.into_inner();
    let def = state.study.clone();
    let consent = db::transaction(&state.pool, move |conn| {
        let subject = super::find_subject_for_write(conn, &scope, &code)?;
        let old: Consent = c::table
            .filter(c::id.eq(id))
            .filter(c::subject_id.eq(subject.id))
            .filter(c::deleted_at.is_null())
            .select(Consent::as_select())
            .for_update()
            .first(conn)?;
        if old.withdrawn_on.is_some() {
            return Err(AppError::Conflict(
                "This consent is already withdrawn; correct the withdrawal with PATCH.".into(),
            ));
        }
        let errors = withdrawal_errors(conn, &def, &subject, old.signed_on, b.withdrawn_on)?;
        if !errors.is_empty() {
            return Err(AppError::Validation(errors));
        }
        let new: Consent = diesel::update(c::table.find(id))
            .set((
                c::withdrawn_on.eq(b.withdrawn_on),
                c::withdrawal_scope.eq(b.scope.as_str()),
                c::withdrawal_reason.eq(reason.as_str()),
                c::version.eq(c::version + 1),
                c::updated_at.eq(diesel::dsl::now),
                c::updated_by.eq(caller.user_id),
            ))
            .returning(Consent::as_returning())
            .get_result(conn)?;
        if b.scope == WithdrawalScope::All {
            set_status(conn, &caller, &subject, "withdrawn", &reason)?;
        }
        audit::record(
            conn,
            &AuditEvent::new(Some(&caller.actor), "update", "consents", &caller.meta)
                .record(id)
                .site(Some(subject.site_id))
                .subject(Some(subject.id))
                .old(serde_json::json!({"withdrawn_on": null, "withdrawal_scope": null}))
                .new_values(serde_json::json!({"withdrawn_on": b.withdrawn_on, "withdrawal_scope": b.scope}))
                .reason(Some(reason.as_str())),
        )?;
        crate::services::guard::after_change(conn, &caller, "consents", Some(id), subject.site_id, subject.id)?;
        Ok(new)
    })
    .await?;
    Ok(with_etag(StatusCode::OK, consent.version, &consent))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsentChange {
    pub form_version: Option<String>,
    pub signed_on: Option<NaiveDate>,
    pub signer: Option<Signer>,
    pub representative_relationship: Option<String>,
    pub assent: Option<bool>,
    /// corrects the date of a withdrawal (only of a consent already withdrawn)
    pub withdrawn_on: Option<NaiveDate>,
    /// corrects the scope of a withdrawal (only of a consent already withdrawn)
    pub withdrawal_scope: Option<WithdrawalScope>,
    /// why the record is changed (required)
    pub reason: Option<String>,
}

/// What a withdrawal date must respect, when recorded and when corrected: not before the
/// consent, not in the future, and no live clinical data dated after it (they could no
/// longer be corrected: the consent window ends there).
fn withdrawal_errors(
    conn: &mut PgConnection,
    def: &Definition,
    subject: &super::SubjectRef,
    signed_on: NaiveDate,
    withdrawn_on: NaiveDate,
) -> AppResult<Vec<FieldError>> {
    let mut errors = Vec::new();
    if withdrawn_on < signed_on {
        errors.push(FieldError::new(
            "withdrawn_on",
            "is before the consent was signed",
        ));
    }
    if withdrawn_on > local_date(Utc::now(), subject.tz) {
        errors.push(FieldError::new("withdrawn_on", "must not be in the future"));
    }
    let after = data_after(conn, def, subject, withdrawn_on)?;
    if !after.is_empty() {
        errors.push(FieldError::new(
            "withdrawn_on",
            format!(
                "clinical data are dated after it: {}; correct them or mark them entered in \
                 error first",
                after.join(", ")
            ),
        ));
    }
    Ok(errors)
}

/// The live records of the study's forms (injections and temperatures included) dated
/// (site local) after `date`, as named in an answer: "injection 3 on 2026-10-06", at most ten, then how
/// many more. Forms that take records after a withdrawal (adverse events) do not count.
fn data_after(
    conn: &mut PgConnection,
    def: &Definition,
    subject: &super::SubjectRef,
    date: NaiveDate,
) -> AppResult<Vec<String>> {
    const SHOWN: usize = 10;
    let forms: Vec<&str> = def.forms.iter().map(|f| f.id.as_str()).collect();
    let records = crate::db::schedule::live_records(conn, subject.id, &forms, None)?;
    let mut all: Vec<String> = records::dated_after(def, &records, date, subject.tz);
    if all.len() > SHOWN {
        let more = all.len() - SHOWN;
        all.truncate(SHOWN);
        all.push(format!("and {more} more"));
    }
    Ok(all)
}

/// Whether a live consent of the subject is withdrawn from everything: the subject's
/// status is then "withdrawn" and nothing else.
pub fn withdrawn_from_all(conn: &mut PgConnection, subject_id: i64) -> AppResult<bool> {
    Ok(diesel::select(diesel::dsl::exists(
        c::table
            .filter(c::subject_id.eq(subject_id))
            .filter(c::deleted_at.is_null())
            .filter(c::withdrawal_scope.eq(WithdrawalScope::All.as_str())),
    ))
    .get_result(conn)?)
}

/// Sets the subject's status as a withdrawal (or its correction) implies, audited with the
/// old value; nothing when it already is.
fn set_status(
    conn: &mut PgConnection,
    caller: &Caller,
    subject: &super::SubjectRef,
    status: &str,
    reason: &Reason,
) -> AppResult<()> {
    let old: String = s::table
        .find(subject.id)
        .select(s::status)
        .for_no_key_update()
        .first(conn)?;
    if old == status {
        return Ok(());
    }
    diesel::update(s::table.find(subject.id))
        .set((
            s::status.eq(status),
            s::version.eq(s::version + 1),
            s::updated_by.eq(caller.user_id),
            s::updated_at.eq(diesel::dsl::now),
        ))
        .execute(conn)?;
    audit::record(
        conn,
        &AuditEvent::new(Some(&caller.actor), "update", "subjects", &caller.meta)
            .record(subject.id)
            .site(Some(subject.site_id))
            .subject(Some(subject.id))
            .old(serde_json::json!({ "status": old }))
            .new_values(serde_json::json!({ "status": status }))
            .reason(Some(reason.as_str())),
    )?;
    Ok(())
}

/// The earliest site-local date of the subject's clinical data (the records of the study's
/// forms included), if any.
pub(super) fn earliest_data(
    conn: &mut PgConnection,
    def: &Definition,
    subject: &super::SubjectRef,
) -> AppResult<Option<NaiveDate>> {
    // every stored form's records by their dates (adverse events' partial onsets from the
    // first day they can mean)
    let mut dates: Vec<NaiveDate> = Vec::new();
    let forms: Vec<&str> = def.forms.iter().map(|f| f.id.as_str()).collect();
    let records = crate::db::schedule::live_records(conn, subject.id, &forms, None)?;
    dates.extend(records::earliest(def, &records, subject.tz));
    Ok(dates.into_iter().min())
}

/// Correct a consent record (If-Match with its version, and a reason), its withdrawal
/// included (`withdrawn_on`, `withdrawal_scope`), under the rules of its creation. Clinical
/// data may not end up outside the consent: before the first, or after a withdrawal.
#[utoipa::path(patch, path = "/api/v1/subjects/{subject_code}/consents/{id}", tag = "consents",
    params(("subject_code" = String, Path), ("id" = i64, Path), ("If-Match" = String, Header)),
    request_body = ConsentChange,
    responses((status = 200, body = Consent), (status = 404, body = crate::error::Problem),
        (status = 412, body = crate::error::Problem), (status = 422, body = crate::error::Problem),
        (status = 428, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn update(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    path: web::Path<(String, i64)>,
    body: Json<ConsentChange>,
) -> AppResult<HttpResponse> {
    let scope = authorize(&caller, Permission::EnterClinical)?;
    // checked once the record is found: scope (404) comes before preconditions (428)
    let expected = if_match(&req);
    let b = body.value;
    let reason =
        Reason::parse("reason", b.reason.as_deref()).map_err(|e| AppError::Validation(vec![e]))?;
    let versions = state.protocol.file.consent_versions.clone();
    let (code, id) = path.into_inner();
    let def = state.study.clone();
    let consent = db::transaction(&state.pool, move |conn| {
        let subject = super::find_subject_for_write(conn, &scope, &code)?;
        let old: Consent = c::table
            .filter(c::id.eq(id))
            .filter(c::subject_id.eq(subject.id))
            .filter(c::deleted_at.is_null())
            .select(Consent::as_select())
            .for_update()
            .first(conn)?;
        if old.version != expected? {
            return Err(AppError::PreconditionFailed);
        }
        let form_version = b.form_version.clone().unwrap_or(old.form_version.clone());
        let signed_on = b.signed_on.unwrap_or(old.signed_on);
        let signer = match b.signer {
            Some(Signer::Participant) => "participant".to_owned(),
            Some(Signer::LegalRepresentative) => "legal_representative".to_owned(),
            None => old.signer.clone(),
        };
        let relationship = b
            .representative_relationship
            .clone()
            .or(old.representative_relationship.clone());
        let withdrawn_on = b.withdrawn_on.or(old.withdrawn_on);
        let withdrawal_scope = b
            .withdrawal_scope
            .map(|w| w.as_str().to_owned())
            .or(old.withdrawal_scope.clone());
        let form = ConsentForm {
            form_version: &form_version,
            signed_on,
            legal_representative: signer == "legal_representative",
            representative_relationship: relationship.as_deref(),
            floor: subject.floor,
        };
        let (relationship, mut errors) =
            match consent::check(&form, &versions, local_date(Utc::now(), subject.tz)) {
                Ok(r) => (r, Vec::new()),
                Err(e) => (None, e),
            };
        match (old.withdrawn_on, b.withdrawn_on) {
            (None, _) if b.withdrawn_on.is_some() || b.withdrawal_scope.is_some() => {
                errors.push(FieldError::new(
                    "withdrawn_on",
                    "this consent is not withdrawn: withdraw it with POST .../withdraw",
                ));
            }
            (Some(_), Some(w)) => {
                errors.append(&mut withdrawal_errors(conn, &def, &subject, signed_on, w)?);
            }
            _ => {}
        }
        if withdrawn_on.is_some_and(|w| w < signed_on) {
            errors.push(FieldError::new(
                "signed_on",
                "must not be after the withdrawal",
            ));
        }
        if let Some(first) = earliest_data(conn, &def, &subject)? {
            let others: Option<NaiveDate> = c::table
                .filter(c::subject_id.eq(subject.id))
                .filter(c::deleted_at.is_null())
                .filter(c::id.ne(id))
                .select(diesel::dsl::min(c::signed_on))
                .first(conn)?;
            let first_consent = others.map_or(signed_on, |o| o.min(signed_on));
            if first < first_consent {
                errors.push(FieldError::new(
                    "signed_on",
                    format!("clinical data from {first} would then precede the informed consent"),
                ));
            }
        }
        if !errors.is_empty() {
            return Err(AppError::Validation(errors));
        }
        let new: Consent = diesel::update(c::table.find(id))
            .set((
                c::form_version.eq(&form_version),
                c::signed_on.eq(signed_on),
                c::signer.eq(&signer),
                c::representative_relationship.eq(&relationship),
                c::assent.eq(b.assent.or(old.assent)),
                c::withdrawn_on.eq(withdrawn_on),
                c::withdrawal_scope.eq(&withdrawal_scope),
                c::version.eq(c::version + 1),
                c::updated_at.eq(diesel::dsl::now),
                c::updated_by.eq(caller.user_id),
            ))
            .returning(Consent::as_returning())
            .get_result(conn)?;
        let to_json = |v: &Consent| serde_json::to_value(v).map_err(AppError::internal);
        let (o, n) = diff(&audit_view(to_json(&old)?), &audit_view(to_json(&new)?));
        audit::record(
            conn,
            &AuditEvent::new(Some(&caller.actor), "update", "consents", &caller.meta)
                .record(id)
                .site(Some(subject.site_id))
                .subject(Some(subject.id))
                .old(o)
                .new_values(n)
                .reason(Some(reason.as_str())),
        )?;
        let all = WithdrawalScope::All.as_str();
        let was_all = old.withdrawal_scope.as_deref() == Some(all);
        if withdrawal_scope.as_deref() == Some(all) && !was_all {
            set_status(conn, &caller, &subject, "withdrawn", &reason)?;
        } else if was_all && !withdrawn_from_all(conn, subject.id)? {
            // the status followed the withdrawal: it follows its correction back
            set_status(conn, &caller, &subject, "enrolled", &reason)?;
        }
        crate::services::guard::after_change(
            conn,
            &caller,
            "consents",
            Some(id),
            subject.site_id,
            subject.id,
        )?;
        Ok(new)
    })
    .await?;
    Ok(with_etag(StatusCode::OK, consent.version, &consent))
}

/// Records a consent for `subject` (found within the caller's scope) in the caller's
/// transaction, audited. Shared by the API and `casebook seed-demo`.
pub fn enter(
    conn: &mut PgConnection,
    versions: &[String],
    cl: &Caller,
    subject: &SubjectRef,
    b: &NewConsent,
) -> AppResult<Value> {
    crate::services::guard::ensure_unlocked(conn, subject.site_id, Some(subject.id))?;
    let form = ConsentForm {
        form_version: &b.form_version,
        signed_on: b.signed_on,
        legal_representative: b.signer == Signer::LegalRepresentative,
        representative_relationship: b.representative_relationship.as_deref(),
        floor: subject.floor,
    };
    let relationship = consent::check(&form, versions, local_date(Utc::now(), subject.tz))
        .map_err(AppError::Validation)?;
    let signer = match b.signer {
        Signer::Participant => "participant",
        Signer::LegalRepresentative => "legal_representative",
    };
    let consent: Consent = diesel::insert_into(c::table)
        .values((
            c::site_id.eq(subject.site_id),
            c::subject_id.eq(subject.id),
            c::form_version.eq(&b.form_version),
            c::signed_on.eq(b.signed_on),
            c::signer.eq(signer),
            c::representative_relationship.eq(relationship),
            c::assent.eq(b.assent),
            c::obtained_by.eq(cl.user_id),
            c::created_by.eq(cl.user_id),
            c::updated_by.eq(cl.user_id),
        ))
        .returning(Consent::as_returning())
        .get_result(conn)?;
    let body = serde_json::to_value(&consent).map_err(AppError::internal)?;
    audit::record(
        conn,
        &AuditEvent::new(Some(&cl.actor), "create", "consents", &cl.meta)
            .record(consent.id)
            .site(Some(subject.site_id))
            .subject(Some(subject.id))
            .new_values(body.clone()),
    )?;
    crate::services::guard::after_change(conn, cl, "consents", None, subject.site_id, subject.id)?;
    Ok(body)
}
