//! The short path of a new clinical record, for the forms entered many times a day.
//!
//! A general request confirms its caller in one round trip (the `Caller` extractor) and then
//! reads the subject's write context in another, in a transaction, on a second pool
//! checkout. Here one PL/pgSQL call (`casebook_entry_context`) returns both, with the id the
//! new record will get and the database's clock, so the record and its audit row can be
//! written by a second call in one statement (measured in BENCHMARKS.md, "Data entry").
//! The checks are the same, in the same order: 401, 403, 422, 404, 423, then the record's
//! own rules.

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::{BigInt, Bool, Date, Double, Nullable, Text, Timestamptz};
use serde_json::Value;

use crate::auth::caller::CallerRecord;
use crate::auth::{authorize, Bearer, Caller, Permission, Scope};
use crate::domain::time::parse_zone;
use crate::error::{AppError, AppResult};
use crate::services::idempotency::{self, Claim};

use super::{ConsentWindow, SubjectRef};

#[derive(QueryableByName)]
struct EntryContextRow {
    #[diesel(embed)]
    caller: CallerRecord,
    #[diesel(sql_type = Nullable<BigInt>)]
    id: Option<i64>,
    #[diesel(sql_type = Nullable<BigInt>)]
    site_id: Option<i64>,
    #[diesel(sql_type = Nullable<Text>)]
    subject_code: Option<String>,
    #[diesel(sql_type = Nullable<Double>)]
    weight_kg: Option<f64>,
    #[diesel(sql_type = Nullable<Text>)]
    time_zone: Option<String>,
    #[diesel(sql_type = Nullable<Date>)]
    first_signed: Option<NaiveDate>,
    #[diesel(sql_type = Nullable<Date>)]
    withdrawn_on: Option<NaiveDate>,
    #[diesel(sql_type = Nullable<Bool>)]
    locked: Option<bool>,
    #[diesel(sql_type = Nullable<Bool>)]
    signed: Option<bool>,
    #[diesel(sql_type = Nullable<BigInt>)]
    new_id: Option<i64>,
    #[diesel(sql_type = Timestamptz)]
    now: DateTime<Utc>,
}

/// The confirmed caller, and the subject when it is within the caller's scope.
pub struct EntryContext {
    pub caller: Caller,
    target: Option<Target>,
}

/// What a new record of a found subject needs.
pub struct Target {
    pub subject: SubjectRef,
    pub window: ConsentWindow,
    /// a valid signature the new record invalidates
    pub signed: bool,
    locked: bool,
    /// the id the new record gets (drawn from its table's sequence)
    pub new_id: i64,
    /// the database's clock: the record's created_at and updated_at
    pub now: DateTime<Utc>,
}

/// `SELECT * FROM casebook_entry_context(...)` as a statement diesel prepares once per
/// connection (`diesel::sql_query` is never cached: parsed and planned on every call).
struct EntryContextQuery<'a> {
    user_id: i64,
    session: uuid::Uuid,
    all_sites: bool,
    code: &'a str,
    sequence: &'a str,
}

impl QueryId for EntryContextQuery<'_> {
    type QueryId = EntryContextQuery<'static>;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl Query for EntryContextQuery<'_> {
    type SqlType = diesel::sql_types::Untyped;
}

impl QueryFragment<Pg> for EntryContextQuery<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql("SELECT * FROM casebook_entry_context(");
        out.push_bind_param::<BigInt, _>(&self.user_id)?;
        out.push_sql(", ");
        out.push_bind_param::<diesel::sql_types::Uuid, _>(&self.session)?;
        out.push_sql(", ");
        out.push_bind_param::<Bool, _>(&self.all_sites)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(&self.code)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(&self.sequence)?;
        out.push_sql("::regclass)");
        Ok(())
    }
}

impl RunQueryDsl<PgConnection> for EntryContextQuery<'_> {}

fn load(
    conn: &mut PgConnection,
    bearer: &Bearer,
    all_sites: bool,
    code: &str,
    sequence: &str,
) -> QueryResult<Option<EntryContextRow>> {
    EntryContextQuery {
        user_id: bearer.user_id,
        session: bearer.claims.sid,
        all_sites,
        code,
        sequence,
    }
    .get_result(conn)
    .optional()
}

/// Confirms the caller (401), checks `permission` (403) and finds subject `code` within the
/// resulting scope, in one round trip; `sequence` is the new record's id sequence.
pub fn context(
    conn: &mut PgConnection,
    bearer: Bearer,
    permission: Permission,
    code: &str,
    sequence: &str,
) -> AppResult<EntryContext> {
    // First asked within the caller's own sites, which is the scope of every role allowed
    // to enter data today; a role with an all-sites scope costs a second call.
    let mut row = load(conn, &bearer, false, code, sequence)?;
    let record = row.as_ref().map(|r| r.caller.clone());
    let own_sites = bearer.clone();
    let caller = Caller::confirm(bearer, record)?;
    let scope = authorize(&caller, permission)?;
    if scope == Scope::AllSites && row.as_ref().is_some_and(|r| r.id.is_none()) {
        row = load(conn, &own_sites, true, code, sequence)?;
    }
    let target = row.and_then(|r| {
        Some(Target {
            subject: SubjectRef {
                id: r.id?,
                site_id: r.site_id?,
                code: r.subject_code?,
                weight_kg: r.weight_kg?,
                tz: r
                    .time_zone
                    .as_deref()
                    .and_then(parse_zone)
                    .unwrap_or(Tz::UTC),
            },
            window: ConsentWindow {
                first_signed: r.first_signed,
                withdrawn_on: r.withdrawn_on,
            },
            signed: r.signed.unwrap_or(false),
            locked: r.locked.unwrap_or(false),
            new_id: r.new_id?,
            now: r.now,
        })
    });
    Ok(EntryContext { caller, target })
}

impl EntryContext {
    /// The subject: 404 when outside the caller's scope, 423 (naming the lock) when locked.
    pub fn target(self, conn: &mut PgConnection) -> AppResult<(Caller, Target)> {
        let target = self.target.ok_or(AppError::NotFound)?;
        if target.locked {
            crate::services::guard::ensure_unlocked(
                conn,
                target.subject.site_id,
                Some(target.subject.id),
            )?;
        }
        Ok((self.caller, target))
    }
}

/// Runs a create on `conn` after [`context`]: with an Idempotency-Key, the claim, `work` and
/// the stored answer commit together, and a repeated request gets the first answer; without
/// one, `work` runs as it is (its writes must be one statement or its own transaction).
/// Returns the status and body to answer with.
pub fn idempotent_create<F>(
    conn: &mut PgConnection,
    user_id: i64,
    key: Option<String>,
    fingerprint: Vec<u8>,
    work: F,
) -> AppResult<(u16, Value)>
where
    F: FnOnce(&mut PgConnection) -> AppResult<Value>,
{
    let Some(key) = key else {
        return Ok((201, work(conn)?));
    };
    conn.transaction(|conn| {
        if let Claim::Replay { status, body } =
            idempotency::claim(conn, user_id, &key, &fingerprint)?
        {
            return Ok((status, body));
        }
        let body = work(conn)?;
        idempotency::store(conn, user_id, &key, 201, &body)?;
        Ok((201, body))
    })
}
