//! Queries the write paths open themselves (edit checks, dose rules), audited in the
//! caller's transaction.

use diesel::PgConnection;
use serde_json::json;

use crate::audit::{self, Actor, AuditEvent, RequestMeta};
use crate::db;
use crate::error::AppResult;

/// Opens a query from an edit check, unless one from the same check on the same item is
/// already open or answered on that record. Runs in the caller's transaction.
#[allow(clippy::too_many_arguments)]
pub fn open_automatic(
    conn: &mut PgConnection,
    actor: Option<&Actor>,
    meta: &RequestMeta,
    site_id: i64,
    subject_id: i64,
    record_type: &str,
    record_id: i64,
    field: &str,
    origin: &str,
    text: &str,
) -> AppResult<Option<i64>> {
    if db::queries::is_pending(conn, record_type, record_id, origin, field)? {
        return Ok(None);
    }
    let id = db::queries::insert(
        conn,
        site_id,
        subject_id,
        record_type,
        record_id,
        Some(field),
        origin,
        None,
        text,
    )?;
    audit::record(
        conn,
        &AuditEvent::new(actor, "query_open", "queries", meta)
            .by_system(origin)
            .record(id)
            .site(Some(site_id))
            .subject(Some(subject_id))
            .new_values(json!({"record_type": record_type, "record_id": record_id, "field": field, "origin": origin, "text": text})),
    )?;
    Ok(Some(id))
}
