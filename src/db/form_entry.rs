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
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
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

/// The statement's arguments, one array per column of the entries.
struct EnterQuery {
    user: Vec<i64>,
    session: Vec<uuid::Uuid>,
    token_version: Vec<i32>,
    code: Vec<String>,
    form: Vec<String>,
    visit: Vec<Option<String>>,
    repeat_key: Vec<Option<String>>,
    key_at: Vec<Option<DateTime<Utc>>>,
    values: Vec<Value>,
    now: Vec<DateTime<Utc>>,
    audit: Vec<Value>,
    request_id: Vec<String>,
    client_addr: Vec<Option<String>>,
    rec_lo: Vec<Option<NaiveDate>>,
    rec_hi: Vec<Option<NaiveDate>>,
    rec_at: Vec<Option<DateTime<Utc>>>,
    after_withdrawal: Vec<bool>,
    day_n: Vec<i32>,
    day_lo: Vec<NaiveDate>,
    day_hi: Vec<NaiveDate>,
    at_n: Vec<i32>,
    at: Vec<DateTime<Utc>>,
    roles: Vec<&'static str>,
    study: String,
    sha256: String,
    lock_timeout: Option<&'static str>,
}

impl QueryId for EnterQuery {
    type QueryId = EnterQuery;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl Query for EnterQuery {
    type SqlType = diesel::sql_types::Untyped;
}

/// A statement diesel prepares once per connection: as a `diesel::sql_query`, parsing,
/// analysing and planning it took about 6 % of PostgreSQL's CPU on this path (perf, 8
/// clients, at b1a1d87).
impl QueryFragment<Pg> for EnterQuery {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        use diesel::sql_types::{Array, Bool, Date, Jsonb, Nullable, Text, Timestamptz};
        out.push_sql("SELECT n, id, definition_version FROM casebook_enter_form_records(");
        out.push_bind_param::<Array<BigInt>, _>(&self.user)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<diesel::sql_types::Uuid>, _>(&self.session)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Integer>, _>(&self.token_version)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Text>, _>(&self.code)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Text>, _>(&self.form)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Nullable<Text>>, _>(&self.visit)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Nullable<Text>>, _>(&self.repeat_key)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Nullable<Timestamptz>>, _>(&self.key_at)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Jsonb>, _>(&self.values)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Timestamptz>, _>(&self.now)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Jsonb>, _>(&self.audit)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Text>, _>(&self.request_id)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Nullable<Text>>, _>(&self.client_addr)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Nullable<Date>>, _>(&self.rec_lo)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Nullable<Date>>, _>(&self.rec_hi)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Nullable<Timestamptz>>, _>(&self.rec_at)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Bool>, _>(&self.after_withdrawal)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Integer>, _>(&self.day_n)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Date>, _>(&self.day_lo)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Date>, _>(&self.day_hi)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Integer>, _>(&self.at_n)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Timestamptz>, _>(&self.at)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Text>, _>(&self.roles)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(&self.study)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(&self.sha256)?;
        out.push_sql(", ");
        out.push_bind_param::<Nullable<Text>, _>(&self.lock_timeout)?;
        out.push_sql(")");
        Ok(())
    }
}

impl RunQueryDsl<PgConnection> for EnterQuery {}

/// One statement for `entries` (so all written or none on an error): each entry's record,
/// in the entries' order, `None` where not written. The roles and the definition are the
/// first entry's (the caller checks they agree).
fn enter_batch(
    conn: &mut PgConnection,
    entries: &[NewEntry],
    lock_timeout: Option<&'static str>,
) -> QueryResult<Vec<Option<Written>>> {
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
    let rows: Vec<WrittenRow> = EnterQuery {
        user: column(entries, |e| e.user_id),
        session: column(entries, |e| e.session),
        token_version: column(entries, |e| e.token_version),
        code: column(entries, |e| e.subject_code.clone()),
        form: column(entries, |e| e.form.clone()),
        visit: column(entries, |e| e.visit.clone()),
        repeat_key: column(entries, |e| match &e.repeat_key {
            RepeatKey::Known(k) => Some(k.clone()),
            _ => None,
        }),
        key_at: column(entries, |e| match e.repeat_key {
            RepeatKey::DateOf(t) => Some(t),
            _ => None,
        }),
        values: column(entries, |e| e.values.clone()),
        now: column(entries, |e| e.now),
        audit: column(entries, |e| e.audit.clone()),
        request_id: column(entries, |e| e.request_id.clone()),
        client_addr: column(entries, |e| e.client_addr.clone()),
        rec_lo: column(entries, |e| rec_days(e).map(|d| d.first)),
        rec_hi: column(entries, |e| rec_days(e).map(|d| d.last)),
        rec_at: column(entries, |e| match e.record_date {
            Some(RecordDate::At(t)) => Some(t),
            _ => None,
        }),
        after_withdrawal: column(entries, |e| e.after_withdrawal),
        day_n,
        day_lo,
        day_hi,
        at_n,
        at,
        roles: first.roles.clone(),
        study: first.study.clone(),
        sha256: first.sha256.clone(),
        lock_timeout,
    }
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
