//! A new temperature and its audit row written by one statement (`casebook_create_temperatures`,
//! migration 000007), for a temperature that misses the one-statement entry
//! (db::temperature_entry): it is written alone (`write_one`), in a transaction that holds
//! its subject against a signature (services::guard). The statement takes arrays, from the
//! time it wrote batches; the server writes one record a call.
//!
//! Also what the one-statement entry shares with it: how long a batch waits for a row lock,
//! and which failures must not be retried.

use bigdecimal::BigDecimal;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use serde_json::Value;

use crate::error::AppResult;

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

/// How long a shared write waits for a row lock before its entries are written alone.
pub const BATCH_LOCK_TIMEOUT: &str = "50ms";

/// Writes one record and its audit row on `conn`, e.g. inside a caller's transaction.
pub fn write_one(conn: &mut PgConnection, record: &NewTemperature) -> AppResult<()> {
    Ok(write_records(conn, std::slice::from_ref(record))?)
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

fn write_records(conn: &mut PgConnection, records: &[NewTemperature]) -> QueryResult<()> {
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
        // no lock timeout: a record written alone waits for its subject like any write
        None::<&str>,
    ))
    .get_result(conn)?;
    if usize::try_from(written).ok() != Some(records.len()) {
        return Err(diesel::result::Error::QueryBuilderError(
            format!("wrote {written} of {} temperatures", records.len()).into(),
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
