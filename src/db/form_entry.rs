//! New records of engine forms checked and written in one statement, in batches with the
//! others that arrive meanwhile (an [`AsyncBatcher`]: the requests wait on their actix
//! workers, autocommit, one WAL flush for the batch).
//!
//! The request sends what only it knows (the token's user, session and version, the values
//! the definition checked, the dates they hold) and `casebook_enter_form_records`
//! (migration 000021) adds what only the database knows. An entry it does not write costs
//! its request the step-by-step path (`services::form_records::enter`), whose rules give the
//! answer: the statement's conditions are a conjunction of those rules, never looser.

use chrono::{DateTime, NaiveDate, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Integer};
use serde_json::Value;

use super::async_batch::AsyncBatcher;
use crate::error::{AppError, AppResult};

/// How long a shared statement waits for a row lock before its entries are written alone
/// (a signature being taken, a correction holding the subject).
const BATCH_LOCK_TIMEOUT: &str = "50ms";

/// A date or partial date item's value: the days it can mean, first and last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Days {
    pub first: NaiveDate,
    pub last: NaiveDate,
}

/// The record's date (its form's `dated_by`), as the consent window reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordDate {
    Days(Days),
    /// a datetime: the site-local date is the statement's to compute
    At(DateTime<Utc>),
}

/// The repeat key of a record (what makes it the only live one of its form), or the
/// instant whose site-local date makes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepeatKey {
    None,
    Known(String),
    DateOf(DateTime<Utc>),
}

/// One new record as the request knows it.
#[derive(Debug, Clone)]
pub struct NewEntry {
    pub user_id: i64,
    pub session: uuid::Uuid,
    /// the token's version of the user (an older one is refused)
    pub token_version: i32,
    pub subject_code: String,
    pub form: String,
    pub visit: Option<String>,
    pub repeat_key: RepeatKey,
    /// the values as stored
    pub values: Value,
    /// the record's created_at and updated_at
    pub now: DateTime<Utc>,
    /// the audit row's new values but the id and version number, which the statement adds
    pub audit: Value,
    pub request_id: String,
    pub client_addr: Option<String>,
    pub record_date: Option<RecordDate>,
    /// the form takes records dated after a consent withdrawal
    pub after_withdrawal: bool,
    /// every date and partial date item's days
    pub days: Vec<Days>,
    /// every datetime item's value
    pub instants: Vec<DateTime<Utc>>,
    /// the roles allowed to enter data at their own sites (the policy's answer)
    pub roles: Vec<&'static str>,
    /// the running definition: its study and hash name the version records are entered under
    pub study: String,
    pub sha256: String,
}

/// A record the statement wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    pub id: i64,
    pub definition_version: i32,
}

/// What a batch answers one of its entries.
#[derive(Debug)]
pub enum Entered {
    Written(Written),
    /// a check failed, or could not be made here: the step-by-step path answers
    NotWritten,
    /// the batch failed for a reason that may not be this entry's own: run it alone
    Alone,
    /// cancelled, timed out or the connection lost: no retry
    Failed(AppError),
}

pub type FormEntries = AsyncBatcher<NewEntry, Entered>;

/// Batches of at most `max_batch` entries, at most `max_writers` batches at a time, each
/// waiting at most `gather` to fill (src/db/async_batch.rs).
pub fn form_entries(
    max_batch: usize,
    max_writers: usize,
    gather: std::time::Duration,
) -> FormEntries {
    AsyncBatcher::new(
        enter_together,
        Entered::Failed,
        max_batch,
        max_writers,
        gather,
    )
}

/// Checks and writes `entry` alone on `conn`, waiting for its own locks: `None` when not
/// written (for the step-by-step path to explain).
pub fn enter_alone(conn: &mut PgConnection, entry: &NewEntry) -> AppResult<Option<Written>> {
    match enter_batch(conn, std::slice::from_ref(entry), None) {
        Ok(mut written) => Ok(written.pop().flatten()),
        Err(e) if given_up(&e) => Err(e.into()),
        Err(_) => Ok(None),
    }
}

fn enter_together(conn: &mut PgConnection, entries: &[NewEntry]) -> Vec<Entered> {
    let Some(first) = entries.first() else {
        return Vec::new();
    };
    // (one definition runs per server, and the policy is the code's: these agree unless a
    // test builds entries by hand)
    if entries
        .iter()
        .any(|e| e.roles != first.roles || e.study != first.study || e.sha256 != first.sha256)
    {
        return entries.iter().map(|_| Entered::Alone).collect();
    }
    match enter_batch(conn, entries, Some(BATCH_LOCK_TIMEOUT)) {
        Ok(written) => written
            .into_iter()
            .map(|w| w.map_or(Entered::NotWritten, Entered::Written))
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

/// A statement cancelled (shutdown, statement timeout) or a connection lost: writing the
/// entries again could commit what the server has given up on.
fn given_up(e: &diesel::result::Error) -> bool {
    use diesel::result::{DatabaseErrorKind as K, Error as E};
    match e {
        E::DatabaseError(K::ClosedConnection | K::UnableToSendCommand, _) => true,
        E::DatabaseError(_, info) => {
            let m = info.message();
            m.contains("due to user request")
                || m.contains("due to statement timeout")
                || crate::error::is_connection_loss(m)
        }
        _ => false,
    }
}

#[derive(QueryableByName)]
struct WrittenRow {
    #[diesel(sql_type = BigInt)]
    n: i64,
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Integer)]
    definition_version: i32,
}

/// One statement for `entries` (so all written or none on an error): each entry's record,
/// in the entries' order, `None` where not written. The roles and the definition are the
/// first entry's (the caller checks they agree).
fn enter_batch(
    conn: &mut PgConnection,
    entries: &[NewEntry],
    lock_timeout: Option<&str>,
) -> QueryResult<Vec<Option<Written>>> {
    use diesel::sql_types::{Array, Bool, Date, Jsonb, Nullable, Text, Timestamptz};
    fn column<T>(entries: &[NewEntry], f: impl Fn(&NewEntry) -> T) -> Vec<T> {
        entries.iter().map(f).collect()
    }
    let Some(first) = entries.first() else {
        return Ok(Vec::new());
    };
    let (mut day_n, mut day_lo, mut day_hi, mut at_n, mut at) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (i, e) in entries.iter().enumerate() {
        let n = i32::try_from(i + 1).unwrap_or(i32::MAX);
        for d in &e.days {
            day_n.push(n);
            day_lo.push(d.first);
            day_hi.push(d.last);
        }
        for t in &e.instants {
            at_n.push(n);
            at.push(*t);
        }
    }
    let rec_days = |e: &NewEntry| match e.record_date {
        Some(RecordDate::Days(d)) => Some(d),
        _ => None,
    };
    let rows: Vec<WrittenRow> = diesel::sql_query(
        "SELECT n, id, definition_version FROM casebook_enter_form_records($1, $2, $3, $4, \
         $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, \
         $23, $24, $25, $26)",
    )
    .bind::<Array<BigInt>, _>(column(entries, |e| e.user_id))
    .bind::<Array<diesel::sql_types::Uuid>, _>(column(entries, |e| e.session))
    .bind::<Array<Integer>, _>(column(entries, |e| e.token_version))
    .bind::<Array<Text>, _>(column(entries, |e| e.subject_code.clone()))
    .bind::<Array<Text>, _>(column(entries, |e| e.form.clone()))
    .bind::<Array<Nullable<Text>>, _>(column(entries, |e| e.visit.clone()))
    .bind::<Array<Nullable<Text>>, _>(column(entries, |e| match &e.repeat_key {
        RepeatKey::Known(k) => Some(k.clone()),
        _ => None,
    }))
    .bind::<Array<Nullable<Timestamptz>>, _>(column(entries, |e| match e.repeat_key {
        RepeatKey::DateOf(t) => Some(t),
        _ => None,
    }))
    .bind::<Array<Jsonb>, _>(column(entries, |e| e.values.clone()))
    .bind::<Array<Timestamptz>, _>(column(entries, |e| e.now))
    .bind::<Array<Jsonb>, _>(column(entries, |e| e.audit.clone()))
    .bind::<Array<Text>, _>(column(entries, |e| e.request_id.clone()))
    .bind::<Array<Nullable<Text>>, _>(column(entries, |e| e.client_addr.clone()))
    .bind::<Array<Nullable<Date>>, _>(column(entries, |e| rec_days(e).map(|d| d.first)))
    .bind::<Array<Nullable<Date>>, _>(column(entries, |e| rec_days(e).map(|d| d.last)))
    .bind::<Array<Nullable<Timestamptz>>, _>(column(entries, |e| match e.record_date {
        Some(RecordDate::At(t)) => Some(t),
        _ => None,
    }))
    .bind::<Array<Bool>, _>(column(entries, |e| e.after_withdrawal))
    .bind::<Array<Integer>, _>(day_n)
    .bind::<Array<Date>, _>(day_lo)
    .bind::<Array<Date>, _>(day_hi)
    .bind::<Array<Integer>, _>(at_n)
    .bind::<Array<Timestamptz>, _>(at)
    .bind::<Array<Text>, _>(first.roles.clone())
    .bind::<Text, _>(&first.study)
    .bind::<Text, _>(&first.sha256)
    .bind::<Nullable<Text>, _>(lock_timeout)
    .load(conn)?;
    let mut written: Vec<Option<Written>> = entries.iter().map(|_| None).collect();
    for row in rows {
        let at = usize::try_from(row.n - 1).ok();
        if let Some(slot) = at.and_then(|i| written.get_mut(i)) {
            *slot = Some(Written {
                id: row.id,
                definition_version: row.definition_version,
            });
        }
    }
    Ok(written)
}
