//! What every write to clinical data goes through: locks first (423), then, after the
//! change, source data verification and signatures that no longer hold are cleared.
//!
//! A signature must cover every record committed before it, or be invalidated by it
//! (21 CFR 11.70). So a write to a subject holds the subject's row (FOR KEY SHARE, the lock
//! its foreign keys take anyway, so writes do not wait for each other) from before it looks
//! for a signature until it commits, and signing takes the row FOR UPDATE before it reads
//! the casebook: whichever comes second sees what the first committed.

use diesel::prelude::*;
use serde_json::json;

use crate::audit::{self, AuditEvent, RequestMeta};
use crate::auth::Caller;
use crate::error::{AppError, AppResult};
use crate::schema::{signatures as sg, subjects as s, verifications as v};

/// Refuses the write with 423 when the study, the site or the subject is locked, or the
/// site inactive (a site that may not enrol may not enter data either). Holds the subject
/// against a signature until the caller's transaction ends (call it inside one, before
/// anything that decides whether a signature is invalidated).
pub fn ensure_unlocked(
    conn: &mut PgConnection,
    site_id: i64,
    subject_id: Option<i64>,
) -> AppResult<()> {
    let g = crate::db::guard::hold_for_write(conn, site_id, subject_id)?;
    if !g.active {
        return Err(AppError::Locked(
            "The site is inactive; an administrator must reactivate it to change data.".into(),
        ));
    }
    match (g.lock_id, g.lock_scope, g.lock_reason) {
        (Some(id), Some(scope), Some(reason)) => Err(AppError::Locked(format!(
            "The {scope} is locked (lock {id}: {reason}); unlock it to change data."
        ))),
        _ => Ok(()),
    }
}

/// Signing: waits for the writes to the subject in flight and keeps new ones out until the
/// signature commits, so the casebook read afterwards is the one signed.
pub fn hold_for_signing(conn: &mut PgConnection, subject_id: i64) -> AppResult<()> {
    s::table
        .find(subject_id)
        .select(s::id)
        .for_update()
        .first::<i64>(conn)
        .optional()?;
    Ok(())
}

/// After a record of a subject changed: its verification (if any) no longer holds, and any
/// valid signature of the casebook is invalidated. Both are audited.
pub fn after_change(
    conn: &mut PgConnection,
    caller: &Caller,
    record_type: &str,
    record_id: Option<i64>,
    site_id: i64,
    subject_id: i64,
) -> AppResult<()> {
    after_change_of(
        conn,
        caller,
        (record_type, record_type),
        record_id,
        site_id,
        subject_id,
    )
}

/// [`after_change`] for a record stored as `kind.0` whose change a signature's invalidation
/// names `kind.1` (a moved legacy form keeps its old name there: "temperatures changed
/// after signing").
pub fn after_change_of(
    conn: &mut PgConnection,
    caller: &Caller,
    kind: (&str, &str),
    record_id: Option<i64>,
    site_id: i64,
    subject_id: i64,
) -> AppResult<()> {
    let (record_type, shown) = kind;
    if let Some(id) = record_id {
        let cleared: Vec<i64> = diesel::update(
            v::table
                .filter(v::record_type.eq(record_type))
                .filter(v::record_id.eq(id))
                .filter(v::cleared_at.is_null()),
        )
        .set(v::cleared_at.eq(diesel::dsl::now))
        .returning(v::id)
        .get_results(conn)?;
        for vid in cleared {
            audit::record(
                conn,
                &AuditEvent::new(
                    Some(&caller.actor),
                    "sdv_cleared",
                    "verifications",
                    &caller.meta,
                )
                .record(vid)
                .site(Some(site_id))
                .subject(Some(subject_id))
                .new_values(json!({"record_type": record_type, "record_id": id})),
            )?;
        }
    }
    invalidate_signatures(
        conn,
        Some(&caller.actor),
        &caller.meta,
        site_id,
        subject_id,
        shown,
    )
}

pub fn invalidate_signatures(
    conn: &mut PgConnection,
    actor: Option<&audit::Actor>,
    meta: &RequestMeta,
    site_id: i64,
    subject_id: i64,
    record_type: &str,
) -> AppResult<()> {
    let why = format!("{record_type} changed after signing");
    let invalidated: Vec<i64> = diesel::update(
        sg::table
            .filter(sg::subject_id.eq(subject_id))
            .filter(sg::invalidated_at.is_null()),
    )
    .set((
        sg::invalidated_at.eq(diesel::dsl::now),
        sg::invalidated_reason.eq(&why),
    ))
    .returning(sg::id)
    .get_results(conn)?;
    for id in invalidated {
        audit::record(
            conn,
            &AuditEvent::new(actor, "signature_invalidated", "signatures", meta)
                .record(id)
                .site(Some(site_id))
                .subject(Some(subject_id))
                .new_values(json!({"reason": why})),
        )?;
    }
    Ok(())
}
