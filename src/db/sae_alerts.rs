//! SQL of the safety desk's outbox: alerts queued with a serious event, claimed one at a
//! time by the delivery worker (`FOR UPDATE SKIP LOCKED`, so that several instances never
//! deliver one twice), and each attempt recorded.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use serde_json::Value;

use crate::schema::{sae_alert_attempts as att, sae_alerts as a};

/// The record an alert is about.
#[derive(Debug, Clone, Copy)]
pub enum Source {
    /// a row of today's adverse events
    AdverseEvent(i64),
    /// a form record of a form bound to the `sae_alert` rule
    FormRecord(i64),
}

/// Queues an alert; the caller audits it in the same transaction.
pub fn insert(
    conn: &mut PgConnection,
    source: Source,
    site_id: i64,
    subject_id: i64,
    payload: &Value,
) -> QueryResult<i64> {
    let (ae_id, record_id) = match source {
        Source::AdverseEvent(id) => (Some(id), None),
        Source::FormRecord(id) => (None, Some(id)),
    };
    diesel::insert_into(a::table)
        .values((
            a::adverse_event_id.eq(ae_id),
            a::form_record_id.eq(record_id),
            a::site_id.eq(site_id),
            a::subject_id.eq(subject_id),
            a::payload.eq(payload),
        ))
        .returning(a::id)
        .get_result(conn)
}

/// An alert due for delivery, locked for the caller's transaction.
#[derive(Debug)]
pub struct Due {
    pub id: i64,
    pub payload: Value,
    pub attempts: i32,
    pub site_id: i64,
    pub subject_id: i64,
}

/// The oldest pending alert whose next attempt is due, skipping those another instance
/// holds.
pub fn claim_due(conn: &mut PgConnection) -> QueryResult<Option<Due>> {
    let row: Option<(i64, Value, i32, i64, i64)> = a::table
        .filter(a::status.eq("pending"))
        .filter(a::next_attempt_at.le(Utc::now()))
        .order(a::id)
        .select((a::id, a::payload, a::attempts, a::site_id, a::subject_id))
        .for_update()
        .skip_locked()
        .first(conn)
        .optional()?;
    Ok(row.map(|(id, payload, attempts, site_id, subject_id)| Due {
        id,
        payload,
        attempts,
        site_id,
        subject_id,
    }))
}

pub fn record_attempt(
    conn: &mut PgConnection,
    alert: i64,
    http_status: Option<i32>,
    error: Option<&str>,
    duration_ms: i32,
) -> QueryResult<()> {
    diesel::insert_into(att::table)
        .values((
            att::alert_id.eq(alert),
            att::http_status.eq(http_status),
            att::error.eq(error),
            att::duration_ms.eq(duration_ms),
        ))
        .execute(conn)
        .map(drop)
}

pub fn mark_delivered(conn: &mut PgConnection, alert: i64, attempts: i32) -> QueryResult<()> {
    diesel::update(a::table.find(alert))
        .set((
            a::status.eq("delivered"),
            a::attempts.eq(attempts),
            a::delivered_at.eq(diesel::dsl::now),
            a::last_error.eq(None::<String>),
        ))
        .execute(conn)
        .map(drop)
}

pub fn mark_failed(
    conn: &mut PgConnection,
    alert: i64,
    attempts: i32,
    error: Option<&str>,
) -> QueryResult<()> {
    diesel::update(a::table.find(alert))
        .set((
            a::status.eq("failed"),
            a::attempts.eq(attempts),
            a::last_error.eq(error),
        ))
        .execute(conn)
        .map(drop)
}

pub fn retry_at(
    conn: &mut PgConnection,
    alert: i64,
    attempts: i32,
    next: DateTime<Utc>,
    error: Option<&str>,
) -> QueryResult<()> {
    diesel::update(a::table.find(alert))
        .set((
            a::attempts.eq(attempts),
            a::next_attempt_at.eq(next),
            a::last_error.eq(error),
        ))
        .execute(conn)
        .map(drop)
}
