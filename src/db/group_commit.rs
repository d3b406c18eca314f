//! Group commit of new temperatures: the entries that arrive while one is being written
//! are written together, each with its audit row, in one statement and so one commit
//! (a [`Batcher`]: the first request to arrive leads, the others wait for its answer).
//!
//! Each record still commits with its own audit row (one statement). When a batch fails,
//! each of its entries is written again alone, so that one bad entry cannot fail the
//! others and every request gets the answer its own write would have had.

use bigdecimal::BigDecimal;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use serde_json::Value;

use super::batch::Batcher;
use crate::error::{AppError, AppResult};

/// One new temperature and what its audit row says, as `casebook_create_temperatures`
/// takes them.
#[derive(Debug, Clone)]
pub struct NewTemperature {
    pub id: i64,
    pub site_id: i64,
    pub subject_id: i64,
    pub measured_at: DateTime<Utc>,
    pub celsius: BigDecimal,
    pub method: String,
    pub fever: bool,
    pub user_id: i64,
    /// the record's created_at and updated_at
    pub now: DateTime<Utc>,
    pub actor_role: String,
    /// the audit row's new values: the record as the client is answered
    pub new_values: Value,
    pub request_id: String,
    pub client_addr: Option<String>,
}

/// New temperatures and their audit rows, written in batches.
pub type GroupCommit = Batcher<NewTemperature, AppResult<()>>;

/// Batches of at most `max_batch` entries, at most `max_writers` batches at a time.
pub fn group_commit(max_batch: usize, max_writers: usize) -> GroupCommit {
    Batcher::new(write_together, panicked, max_batch, max_writers)
}

fn panicked() -> AppResult<()> {
    Err(AppError::Internal("group commit panicked".into()))
}

/// Writes one record and its audit row on `conn`, e.g. inside a caller's transaction.
pub fn write_one(conn: &mut PgConnection, record: &NewTemperature) -> AppResult<()> {
    write_batch(conn, std::slice::from_ref(record))
}

/// Writes `records` in one statement; when that fails, each alone. One answer per record,
/// in order. The statement is atomic, so a failed batch wrote nothing; the ids were drawn
/// before, so a retry can never write a record twice.
pub fn write_together(conn: &mut PgConnection, records: &[NewTemperature]) -> Vec<AppResult<()>> {
    match write_batch(conn, records) {
        Ok(()) => records.iter().map(|_| Ok(())).collect(),
        Err(e) if records.len() == 1 => vec![Err(e)],
        Err(_) => records.iter().map(|r| write_one(conn, r)).collect(),
    }
}

fn write_batch(conn: &mut PgConnection, records: &[NewTemperature]) -> AppResult<()> {
    fn column<T>(records: &[NewTemperature], f: impl Fn(&NewTemperature) -> T) -> Vec<T> {
        records.iter().map(f).collect()
    }
    let written: i32 = diesel::select(sql::casebook_create_temperatures(
        column(records, |r| r.id),
        column(records, |r| r.site_id),
        column(records, |r| r.subject_id),
        column(records, |r| r.measured_at),
        column(records, |r| r.celsius.clone()),
        column(records, |r| r.method.clone()),
        column(records, |r| r.fever),
        column(records, |r| r.user_id),
        column(records, |r| r.now),
        column(records, |r| r.actor_role.clone()),
        column(records, |r| r.new_values.clone()),
        column(records, |r| r.request_id.clone()),
        column(records, |r| r.client_addr.clone()),
    ))
    .get_result(conn)?;
    if usize::try_from(written).ok() != Some(records.len()) {
        return Err(AppError::Internal(format!(
            "group commit wrote {written} of {} temperatures",
            records.len()
        )));
    }
    Ok(())
}

mod sql {
    // The function mirrors the SQL function's parameter list.
    #![allow(clippy::too_many_arguments)]
    use diesel::sql_types::{Array, BigInt, Bool, Jsonb, Nullable, Numeric, Text, Timestamptz};

    diesel::define_sql_function! {
        /// migrations/*_group_commit: temperatures and their audit rows in one statement.
        fn casebook_create_temperatures(
            id: Array<BigInt>,
            site_id: Array<BigInt>,
            subject_id: Array<BigInt>,
            measured_at: Array<Timestamptz>,
            celsius: Array<Numeric>,
            method: Array<Text>,
            fever: Array<Bool>,
            user_id: Array<BigInt>,
            now: Array<Timestamptz>,
            actor_role: Array<Text>,
            new_values: Array<Jsonb>,
            request_id: Array<Text>,
            client_addr: Array<Nullable<Text>>,
        ) -> diesel::sql_types::Integer;
    }
}
