//! Electronic signature of a subject's casebook (21 CFR Part 11 §11.50, §11.70, §11.200):
//! the investigator re-enters the password and states a meaning; the signature keeps the
//! signer, printed name, time, meaning and the SHA-256 of the content signed.

use actix_web::{http::StatusCode, web, HttpResponse};
use diesel::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use crate::api::clinical::adverse_events::AdverseEvents;
use crate::api::clinical::casebook::{build, Casebook, Signature};
use crate::api::clinical::find_subject;
use crate::api::clinical::injections::Injections;
use crate::api::clinical::legacy::LegacyForm;
use crate::api::clinical::temperatures::Temperatures;
use crate::api::{resource, Json};
use crate::audit::{self, AuditEvent};
use crate::auth::attempts::{confirm_password, MAX_PASSWORD_BYTES};
use crate::auth::{authorize, Caller, Permission};
use crate::db;
use crate::domain::study::moved_form;
use crate::error::{AppError, AppResult};
use crate::schema::{queries as q, signatures as sg};
use crate::state::AppState;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        resource("/subjects/{subject_code}/signatures")
            .route(web::get().to(list))
            .route(web::post().to(sign)),
    )
    .service(
        resource("/subjects/{subject_code}/signatures/{signature_id}/check")
            .route(web::get().to(check)),
    );
}

/// The fixed list of meanings a signature may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Meaning {
    /// "I approve the data of this casebook."
    Approval,
    /// "I have reviewed the data of this casebook."
    Review,
    /// "I take responsibility for the data of this casebook."
    Responsibility,
}

impl Meaning {
    pub fn text(self) -> &'static str {
        match self {
            Self::Approval => "I approve the data of this casebook.",
            Self::Review => "I have reviewed the data of this casebook.",
            Self::Responsibility => "I take responsibility for the data of this casebook.",
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignRequest {
    /// the signer's password, entered again
    pub password: String,
    pub meaning: Meaning,
}

#[derive(Serialize, ToSchema)]
pub struct SignatureList {
    pub items: Vec<Signature>,
}

/// Signatures of a subject's casebook, valid and invalidated.
#[utoipa::path(get, path = "/api/v1/subjects/{subject_code}/signatures", tag = "monitoring",
    params(("subject_code" = String, Path)),
    responses((status = 200, body = SignatureList), (status = 404, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn list(
    state: web::Data<AppState>,
    caller: Caller,
    code: web::Path<String>,
) -> AppResult<HttpResponse> {
    let scope = authorize(&caller, Permission::ReadClinical)?;
    let code = code.into_inner();
    let mut items: Vec<Signature> = db::run(&state.pool, move |conn| {
        let s = find_subject(conn, &scope, &code)?;
        Ok(sg::table
            .filter(sg::subject_id.eq(s.id))
            .order(sg::id)
            .select(Signature::as_select())
            .load(conn)?)
    })
    .await?;
    for sig in &mut items {
        sig.show_to(caller.role);
    }
    Ok(HttpResponse::Ok().json(SignatureList { items }))
}

/// Sign the casebook (investigator of the subject's site). Refused while queries are open.
#[utoipa::path(post, path = "/api/v1/subjects/{subject_code}/signatures", tag = "monitoring",
    params(("subject_code" = String, Path)), request_body = SignRequest,
    responses((status = 201, body = Signature), (status = 401, body = crate::error::Problem),
        (status = 403, body = crate::error::Problem), (status = 404, body = crate::error::Problem),
        (status = 422, description = "wrong password (`password`) or open queries (`subject_code`)", body = crate::error::Problem),
        (status = 429, description = "account locked after repeated wrong passwords (login, signing and password change count together); see Retry-After", body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn sign(
    state: web::Data<AppState>,
    caller: Caller,
    code: web::Path<String>,
    body: Json<SignRequest>,
) -> AppResult<HttpResponse> {
    let scope = authorize(&caller, Permission::Sign)?;
    let SignRequest { password, meaning } = body.value;
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(AppError::invalid("password", "is too long"));
    }
    let code = code.into_inner();
    confirm_password(
        &state,
        &caller,
        password,
        "password",
        ("sign_failed", "signatures"),
        json!({"subject_code": code}),
    )
    .await?;
    let def = state.study.clone();
    let signature = db::transaction(&state.pool, move |conn| {
        let s = find_subject(conn, &scope, &code)?;
        crate::services::guard::hold_for_signing(conn, s.id)?;
        let open: i64 = q::table
            .filter(q::subject_id.eq(s.id))
            .filter(q::status.ne("closed"))
            .count()
            .get_result(conn)?;
        if open > 0 {
            return Err(AppError::invalid(
                "subject_code",
                format!("{open} queries are still open on this casebook; close them before signing"),
            ));
        }
        let hash = sha256(&build(conn, &s, &def)?)?;
        let row: Signature = diesel::insert_into(sg::table)
            .values((
                sg::site_id.eq(s.site_id),
                sg::subject_id.eq(s.id),
                sg::signer_id.eq(caller.user_id),
                sg::printed_name.eq(&caller.name),
                sg::meaning.eq(meaning.text()),
                sg::casebook_sha256.eq(&hash),
            ))
            .returning(Signature::as_returning())
            .get_result(conn)?;
        audit::record(
            conn,
            &AuditEvent::new(Some(&caller.actor), "sign", "signatures", &caller.meta)
                .record(row.id)
                .site(Some(s.site_id))
                .subject(Some(s.id))
                .new_values(json!({"printed_name": row.printed_name, "meaning": row.meaning, "casebook_sha256": hash})),
        )?;
        Ok(row)
    })
    .await?;
    Ok(HttpResponse::build(StatusCode::CREATED).json(signature))
}

/// The hash a signature keeps: SHA-256 of the casebook's signed content.
fn sha256(book: &Casebook) -> AppResult<String> {
    let content = serde_json::to_vec(&book.signed_content()).map_err(AppError::internal)?;
    Ok(hex::encode(Sha256::digest(&content)))
}

/// A signature's hash recomputed from the casebook as it is now.
#[derive(Serialize, ToSchema)]
pub struct SignatureCheck {
    pub signature_id: i64,
    /// as stored when signing
    pub casebook_sha256: String,
    /// of the casebook now, each record under the id it had when the casebook was signed
    pub recomputed_sha256: String,
    /// the content signed is the content now
    pub matches: bool,
    /// records moved from a legacy table into form records after the signature, hashed under
    /// their old ids (docs/engine-migration.md, flag 3)
    pub ids_mapped_back: usize,
}

/// Recompute a signature's hash. A casebook signed before its injections, temperatures or
/// adverse events moved into form records serialised them under their old ids: those are
/// mapped back through `legacy_record_ids`, so that a signature over data that did not
/// change still matches (the move changed ids, not data).
#[utoipa::path(get, path = "/api/v1/subjects/{subject_code}/signatures/{signature_id}/check", tag = "monitoring",
    params(("subject_code" = String, Path), ("signature_id" = i64, Path)),
    responses((status = 200, body = SignatureCheck), (status = 404, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn check(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, i64)>,
) -> AppResult<HttpResponse> {
    let scope = authorize(&caller, Permission::ReadClinical)?;
    let (code, signature_id) = path.into_inner();
    let def = state.study.clone();
    let checked = db::run(&state.pool, move |conn| {
        let s = find_subject(conn, &scope, &code)?;
        let signature: Signature = sg::table
            .filter(sg::subject_id.eq(s.id))
            .filter(sg::id.eq(signature_id))
            .select(Signature::as_select())
            .first(conn)
            .optional()?
            .ok_or(AppError::NotFound)?;
        let moved = db::signatures::moved_after(conn, s.id, signature.signed_at)?;
        let mut book = build(conn, &s, &def)?;
        let old_id = |form: &str, id: &mut i64| {
            let entity = moved_form(form).map(|m| m.entity);
            if let Some((_, _, old)) = moved
                .iter()
                .find(|(e, new, _)| Some(e.as_str()) == entity && new == id)
            {
                *id = *old;
            }
        };
        book.injections
            .iter_mut()
            .for_each(|x| old_id(Injections::FORM, &mut x.id));
        book.temperatures
            .iter_mut()
            .for_each(|x| old_id(Temperatures::FORM, &mut x.id));
        book.adverse_events
            .iter_mut()
            .for_each(|x| old_id(AdverseEvents::FORM, &mut x.id));
        let recomputed_sha256 = sha256(&book)?;
        Ok(SignatureCheck {
            signature_id,
            matches: recomputed_sha256 == signature.casebook_sha256,
            casebook_sha256: signature.casebook_sha256,
            recomputed_sha256,
            ids_mapped_back: moved.len(),
        })
    })
    .await?;
    Ok(HttpResponse::Ok().json(checked))
}
