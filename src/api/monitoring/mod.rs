//! Monitoring: data queries, source data verification, e-signatures, locks.

pub mod locks;
pub mod queries;
pub mod signatures;
pub mod verify;

use actix_web::web;
use diesel::prelude::*;

use crate::db;
use crate::domain::study::moved_entity;
use crate::error::{AppError, AppResult};
use crate::schema::{consents, subjects};
use crate::services::form_records;

pub fn routes(cfg: &mut web::ServiceConfig) {
    queries::routes(cfg);
    verify::routes(cfg);
    signatures::routes(cfg);
    locks::routes(cfg);
}

/// The record kinds queries and verifications point at: the table, and the name of its
/// records in today's verify route `/subjects/{code}/{form}/{id}/verify`. A legacy form
/// whose records are form records now keeps its old name as an alias (`injections`,
/// `temperatures`, `adverse_events`):
/// accepted for the records of that form only, stored as `form_records`, answered as the
/// alias. Subjects are not
/// verified; the records of the study definition's forms are verified at
/// `/subjects/{code}/forms/{form}/{id}/verify` and take their items from the definition.
pub const RECORD_TYPES: &[(&str, Option<&str>)] = &[
    ("subjects", None),
    ("consents", Some("consents")),
    ("injections", Some("injections")),
    ("temperatures", Some("temperatures")),
    ("adverse_events", Some("adverse-events")),
    (form_records::ENTITY, None),
];

/// Fields a query may point at, per record type of today's tables (a form record's items,
/// a moved legacy form's included, are those of its form in the running definition).
pub fn known_field(record_type: &str, field: &str) -> bool {
    let fields: &[&str] = match record_type {
        "subjects" => &[
            "sex",
            "birth_year_month",
            "weight_kg",
            "eligibility",
            "status",
        ],
        "consents" => &[
            "form_version",
            "signed_on",
            "signer",
            "representative_relationship",
            "assent",
            "withdrawn_on",
        ],
        _ => &[],
    };
    fields.contains(&field)
}

/// Who a live record belongs to, and its version; `form` is the definition's form of a
/// form record.
pub struct Owner {
    pub site_id: i64,
    pub subject_id: i64,
    pub version: i32,
    pub form: Option<String>,
}

/// What a record type is stored as: a moved legacy form's alias is a form record.
pub fn stored_type(record_type: &str) -> &str {
    if moved_entity(record_type).is_some() {
        form_records::ENTITY
    } else {
        record_type
    }
}

/// How a stored record type is answered: a form record of a moved legacy form by its alias.
pub fn answered_type(record_type: &str, form: Option<&str>) -> String {
    match form.and_then(crate::domain::study::moved_form) {
        Some(m) if record_type == form_records::ENTITY => m.entity.to_owned(),
        _ => record_type.to_owned(),
    }
}

/// The owner of a live record (not entered in error), or 404 (also for a form record of
/// another form given by a moved form's alias).
pub fn record_owner(conn: &mut PgConnection, record_type: &str, id: i64) -> AppResult<Owner> {
    let moved = moved_entity(record_type);
    if record_type == form_records::ENTITY || moved.is_some() {
        let (site_id, subject_id, version, form) =
            db::form_records::owner(conn, id)?.ok_or(AppError::NotFound)?;
        if moved.is_some_and(|m| m.form != form) {
            return Err(AppError::NotFound);
        }
        return Ok(Owner {
            site_id,
            subject_id,
            version,
            form: Some(form),
        });
    }
    let found: Option<(i64, i64, i32)> = match record_type {
        "subjects" => subjects::table
            .filter(subjects::id.eq(id))
            .filter(subjects::deleted_at.is_null())
            .select((subjects::site_id, subjects::id, subjects::version))
            .first(conn)
            .optional()?,
        "consents" => consents::table
            .filter(consents::id.eq(id))
            .filter(consents::deleted_at.is_null())
            .select((consents::site_id, consents::subject_id, consents::version))
            .first(conn)
            .optional()?,
        _ => None,
    };
    let (site_id, subject_id, version) = found.ok_or(AppError::NotFound)?;
    Ok(Owner {
        site_id,
        subject_id,
        version,
        form: None,
    })
}
