//! Group commit of new temperatures: the entries that arrive while one is being written
//! are written together, each with its audit row, in one statement and so one commit
//! (a [`Batcher`]: the first request to arrive leads, the others wait for its answer).
//!
//! Each record still commits with its own audit row (one statement). When a batch fails,
//! each of its entries is written again alone by its own request, on its own connection, so
//! that one bad entry cannot fail the others and every request gets the answer its own
//! write would have had; unless the batch was cancelled or lost its connection, which
//! every entry then reports.
//!
//! The server no longer batches here: a temperature that misses the one-statement entry
//! (db::temperature_entry) is written alone (`write_one`), in a transaction that holds its
//! subject against a signature (services::guard); the batched writer stays for the tests
//! that measure and check it.

use bigdecimal::BigDecimal;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use serde_json::Value;

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

/// What a shared write answers one of its entries.
#[derive(Debug)]
pub enum Shared {
    Written,
    /// the batch failed for a reason that is not this entry's alone (a constraint of one
    /// entry, a parent row locked for longer than [`BATCH_LOCK_TIMEOUT`]): write it alone
    Alone,
    /// the statement was cancelled, timed out or lost its connection: no retry
    Failed(AppError),
}

/// How long a shared write waits for a row lock before its entries are written alone.
pub const BATCH_LOCK_TIMEOUT: &str = "50ms";

/// Writes one record and its audit row on `conn`, e.g. inside a caller's transaction.
pub fn write_one(conn: &mut PgConnection, record: &NewTemperature) -> AppResult<()> {
    Ok(write_batch(conn, std::slice::from_ref(record), None)?)
}

/// Writes `records` in one statement, waiting at most [`BATCH_LOCK_TIMEOUT`] for a lock
/// (also for a batch of one: a leader waiting on a lock would hold up the batches behind
/// it). The statement is atomic, so a failed batch wrote nothing; the ids were drawn
/// before, so a retry can never write a record twice.
pub fn write_together(conn: &mut PgConnection, records: &[NewTemperature]) -> Vec<Shared> {
    match write_batch(conn, records, Some(BATCH_LOCK_TIMEOUT)) {
        Ok(()) => records.iter().map(|_| Shared::Written).collect(),
        Err(e) if given_up(&e) => {
            let message = e.to_string();
            records
                .iter()
                .map(|_| Shared::Failed(AppError::Unavailable(message.clone())))
                .collect()
        }
        Err(_) => records.iter().map(|_| Shared::Alone).collect(),
    }
}

/// A statement cancelled (shutdown, statement timeout) or a connection lost: writing the
/// entries again could commit what the server has given up on.
pub(crate) fn given_up(e: &diesel::result::Error) -> bool {
    use diesel::result::{DatabaseErrorKind as K, Error as E};
    match e {
        E::DatabaseError(K::ClosedConnection | K::UnableToSendCommand, _) => true,
        E::DatabaseError(_, info) => {
            let m = info.message();
            m.contains("due to user request")
                || m.contains("due to statement timeout")
                || crate::error::is_connection_loss(m)
        }
        _ => true,
    }
}

fn write_batch(
    conn: &mut PgConnection,
    records: &[NewTemperature],
    lock_timeout: Option<&str>,
) -> QueryResult<()> {
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
        lock_timeout,
    ))
    .get_result(conn)?;
    if usize::try_from(written).ok() != Some(records.len()) {
        return Err(diesel::result::Error::QueryBuilderError(
            format!(
                "group commit wrote {written} of {} temperatures",
                records.len()
            )
            .into(),
        ));
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
            lock_timeout: Nullable<Text>,
        ) -> diesel::sql_types::Integer;
    }
}
