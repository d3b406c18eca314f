//! New temperatures checked and written in one statement, in batches with the others that
//! arrive meanwhile (an [`AsyncBatcher`]: the requests wait on their actix workers).
//!
//! The request sends what only it knows (the parsed reading, its audit values, the token's
//! user, session and version) and `casebook_enter_temperatures` (migration 000008) adds
//! what only the database knows: it writes the reading and its audit row where the session
//! is live, the role may enter data at its own sites, the subject is at one of them, not
//! locked, not signed, and consented on the reading's local date. An entry it does not
//! write costs its request the step-by-step path, whose domain rules give the answer: the
//! statement's checks are a conjunction of those rules (so nothing they refuse is written)
//! and may be stricter, never looser.

use bigdecimal::BigDecimal;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Nullable};
use serde_json::Value;

use super::async_batch::AsyncBatcher;
use super::group_commit::{given_up, BATCH_LOCK_TIMEOUT};
use crate::error::{AppError, AppResult};

/// One reading as the request knows it.
#[derive(Debug, Clone)]
pub struct CheckedTemperature {
    pub user_id: i64,
    pub session: uuid::Uuid,
    /// the token's version of the user (an older one is refused)
    pub token_version: i32,
    pub subject_code: String,
    pub measured_at: DateTime<Utc>,
    pub celsius: BigDecimal,
    pub method: String,
    pub fever: bool,
    /// the record's created_at and updated_at
    pub now: DateTime<Utc>,
    /// the audit row's new values but the id, which the statement adds
    pub new_values: Value,
    pub request_id: String,
    pub client_addr: Option<String>,
    /// the roles allowed to enter data at their own sites (the policy's answer)
    pub roles: Vec<&'static str>,
}

/// What a batch answers one of its entries.
#[derive(Debug)]
pub enum Entered {
    Written(i64),
    /// a check failed, or could not be made here: the step-by-step path answers
    NotWritten,
    /// the batch failed for a reason that may not be this entry's own: run it alone
    Alone,
    /// cancelled, timed out or the connection lost: no retry
    Failed(AppError),
}

pub type TemperatureEntries = AsyncBatcher<CheckedTemperature, Entered>;

/// Batches of at most `max_batch` entries, at most `max_writers` batches at a time, each
/// waiting at most `gather` to fill (src/db/async_batch.rs).
pub fn temperature_entries(
    max_batch: usize,
    max_writers: usize,
    gather: std::time::Duration,
) -> TemperatureEntries {
    AsyncBatcher::new(
        enter_together,
        Entered::Failed,
        max_batch,
        max_writers,
        gather,
    )
}

/// Checks and writes `entry` alone on `conn`, waiting for its own locks: `Some(id)` when
/// written with its audit row, `None` when not written (for the step-by-step path to
/// explain: it checks the same things and says which failed).
pub fn enter_alone(conn: &mut PgConnection, entry: &CheckedTemperature) -> AppResult<Option<i64>> {
    match enter_batch(conn, std::slice::from_ref(entry), None) {
        Ok(mut ids) => Ok(ids.pop().flatten()),
        Err(e) if given_up(&e) => Err(e.into()),
        Err(_) => Ok(None),
    }
}

fn enter_together(conn: &mut PgConnection, entries: &[CheckedTemperature]) -> Vec<Entered> {
    let Some(first) = entries.first() else {
        return Vec::new();
    };
    if entries.iter().any(|e| e.roles != first.roles) {
        return entries.iter().map(|_| Entered::Alone).collect();
    }
    match enter_batch(conn, entries, Some(BATCH_LOCK_TIMEOUT)) {
        Ok(ids) => ids
            .into_iter()
            .map(|id| id.map_or(Entered::NotWritten, Entered::Written))
            .collect(),
        Err(e) if given_up(&e) => {
            let message = e.to_string();
            entries
                .iter()
                .map(|_| Entered::Failed(AppError::Unavailable(message.clone())))
                .collect()
        }
        Err(_) => entries.iter().map(|_| Entered::Alone).collect(),
    }
}

#[derive(QueryableByName)]
struct WrittenRow {
    #[diesel(sql_type = BigInt)]
    n: i64,
    #[diesel(sql_type = Nullable<BigInt>)]
    id: Option<i64>,
}

/// One statement for `entries` (so all written or none): the new id of each written entry,
/// in the entries' order. The roles are the first entry's (the caller checks they agree).
fn enter_batch(
    conn: &mut PgConnection,
    entries: &[CheckedTemperature],
    lock_timeout: Option<&str>,
) -> QueryResult<Vec<Option<i64>>> {
    use diesel::sql_types::{Array, Bool, Integer, Jsonb, Numeric, Text, Timestamptz};
    fn column<T>(entries: &[CheckedTemperature], f: impl Fn(&CheckedTemperature) -> T) -> Vec<T> {
        entries.iter().map(f).collect()
    }
    let roles = entries.first().map(|e| e.roles.clone()).unwrap_or_default();
    let rows: Vec<WrittenRow> = diesel::sql_query(
        "SELECT n, id FROM casebook_enter_temperatures($1, $2, $3, $4, $5, $6, $7, $8, $9, \
         $10, $11, $12, $13, $14)",
    )
    .bind::<Array<BigInt>, _>(column(entries, |e| e.user_id))
    .bind::<Array<diesel::sql_types::Uuid>, _>(column(entries, |e| e.session))
    .bind::<Array<Integer>, _>(column(entries, |e| e.token_version))
    .bind::<Array<Text>, _>(column(entries, |e| e.subject_code.clone()))
    .bind::<Array<Timestamptz>, _>(column(entries, |e| e.measured_at))
    .bind::<Array<Numeric>, _>(column(entries, |e| e.celsius.clone()))
    .bind::<Array<Text>, _>(column(entries, |e| e.method.clone()))
    .bind::<Array<Bool>, _>(column(entries, |e| e.fever))
    .bind::<Array<Timestamptz>, _>(column(entries, |e| e.now))
    .bind::<Array<Jsonb>, _>(column(entries, |e| e.new_values.clone()))
    .bind::<Array<Text>, _>(column(entries, |e| e.request_id.clone()))
    .bind::<Array<Nullable<Text>>, _>(column(entries, |e| e.client_addr.clone()))
    .bind::<Array<Text>, _>(roles)
    .bind::<Nullable<Text>, _>(lock_timeout)
    .load(conn)?;
    let mut ids: Vec<Option<i64>> = entries.iter().map(|_| None).collect();
    for row in rows {
        let at = usize::try_from(row.n - 1).ok();
        if let Some(slot) = at.and_then(|i| ids.get_mut(i)) {
            *slot = row.id;
        }
    }
    Ok(ids)
}
