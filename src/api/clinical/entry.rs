//! The short path of a new clinical record, for the forms entered many times a day.
//!
//! A general request confirms its caller in one round trip (the `Caller` extractor) and then
//! reads the subject's write context in another, in a transaction, on a second pool
//! checkout. Here one statement returns both, with the id the new record will get and the
//! database's clock, so the record and its audit row can be written by a second statement
//! (measured in docs/benchmarks-history.md, "Data entry"). Concurrent requests share both
//! statements: their lookups are made by one call and their records written by one
//! (`db::batch`). The checks are the same, in the same order: 401, 403, 422, 404, 423, then the
//! record's own rules.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use diesel::prelude::*;
use serde_json::Value;

use crate::auth::{authorize, Bearer, Caller, Permission, Scope};
use crate::db::entry_context::{load_key, ContextBatcher, ContextKey};
use crate::domain::time::{parse_zone, DateFloor};
use crate::error::{AppError, AppResult};
use crate::services::idempotency::{self, Claim};

use super::{ConsentWindow, SubjectRef};

/// The confirmed caller, and the subject when it is within the caller's scope.
pub struct EntryContext {
    pub caller: Caller,
    target: Option<Target>,
}

/// What a new record of a found subject needs.
pub struct Target {
    pub subject: SubjectRef,
    pub window: ConsentWindow,
    locked: bool,
    /// the id the new record gets (drawn from its table's sequence)
    pub new_id: i64,
    /// the database's clock: the record's created_at and updated_at
    pub now: DateTime<Utc>,
}

/// Confirms the caller (401), checks `permission` (403) and finds subject `code` within the
/// resulting scope, in one round trip; `sequence` is the new record's id sequence.
pub fn context(
    conn: &mut PgConnection,
    contexts: &ContextBatcher,
    bearer: Bearer,
    permission: Permission,
    code: &str,
    sequence: &'static str,
) -> AppResult<EntryContext> {
    // First asked within the caller's own sites, which is the scope of every role allowed
    // to enter data today, together with the concurrent requests' lookups; a role with an
    // all-sites scope costs a second call.
    let key = ContextKey {
        user_id: bearer.user_id,
        session: bearer.claims.sid,
        code: code.to_owned(),
        sequence,
    };
    let mut row = contexts.run(conn, key)?;
    let record = row.as_ref().map(|r| r.caller.clone());
    let own_sites = bearer.clone();
    let caller = Caller::confirm(bearer, record)?;
    let scope = authorize(&caller, permission)?;
    if scope == Scope::AllSites && row.as_ref().is_some_and(|r| r.id.is_none()) {
        row = load_key(
            conn,
            own_sites.user_id,
            own_sites.claims.sid,
            true,
            code,
            sequence,
        )?;
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
                floor: DateFloor::of_birth(r.birth_year_month.as_deref()?),
            },
            window: ConsentWindow {
                first_signed: r.first_signed,
                withdrawn_on: r.withdrawn_on,
            },
            locked: r.locked.unwrap_or(false),
            new_id: r.new_id?,
            now: r.now,
        })
    });
    Ok(EntryContext { caller, target })
}

impl Target {
    /// The target of a write that does not come through the short path (`casebook
    /// seed-demo`): the subject, found by the caller, read here step by step.
    pub fn of(
        conn: &mut PgConnection,
        subject: SubjectRef,
        sequence: &'static str,
    ) -> AppResult<Self> {
        let window = super::consent_window(conn, subject.id)?;
        let (new_id, now): (i64, DateTime<Utc>) = diesel::select((
            diesel::dsl::sql::<diesel::sql_types::BigInt>(&format!("nextval('{sequence}')")),
            diesel::dsl::now.into_sql::<diesel::sql_types::Timestamptz>(),
        ))
        .get_result(conn)?;
        Ok(Self {
            subject,
            window,
            // `ensure_unlocked` runs again as the record is written
            locked: false,
            new_id,
            now,
        })
    }
}

impl EntryContext {
    /// 404 when the subject is outside the caller's scope.
    pub fn found(&self) -> AppResult<()> {
        self.target.as_ref().map(|_| ()).ok_or(AppError::NotFound)
    }

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
