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

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::{Array, BigInt, Bool, Date, Double, Nullable, Text, Timestamptz};
use serde_json::Value;

use crate::auth::caller::CallerRecord;
use crate::auth::{authorize, Bearer, Caller, Permission, Scope};
use crate::db::batch::Batcher;
use crate::domain::time::{parse_zone, DateFloor};
use crate::error::{AppError, AppResult};
use crate::services::idempotency::{self, Claim};

use super::{ConsentWindow, SubjectRef};

#[derive(QueryableByName)]
pub struct EntryContextRow {
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
    #[diesel(sql_type = Nullable<Text>)]
    birth_year_month: Option<String>,
    #[diesel(sql_type = Nullable<Date>)]
    first_signed: Option<NaiveDate>,
    #[diesel(sql_type = Nullable<Date>)]
    withdrawn_on: Option<NaiveDate>,
    #[diesel(sql_type = Nullable<Bool>)]
    locked: Option<bool>,
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
    locked: bool,
    /// the id the new record gets (drawn from its table's sequence)
    pub new_id: i64,
    /// the database's clock: the record's created_at and updated_at
    pub now: DateTime<Utc>,
}

/// One lookup alone (`all_sites`: the scope is every site, not the caller's own).
fn load_key(
    conn: &mut PgConnection,
    user_id: i64,
    session: uuid::Uuid,
    all_sites: bool,
    code: &str,
    sequence: &str,
) -> QueryResult<Option<EntryContextRow>> {
    let rows = EntryContextsQuery {
        users: vec![user_id],
        sessions: vec![session],
        codes: vec![code],
        all_sites,
        sequence,
    }
    .load::<NumberedContextRow>(conn)?;
    Ok(rows.into_iter().next().map(|numbered| numbered.row))
}

/// One request's entry-context lookup, for [`load_many`].
#[derive(Debug, Clone)]
pub struct ContextKey {
    user_id: i64,
    session: uuid::Uuid,
    code: String,
    sequence: &'static str,
}

/// Entry-context lookups of concurrent requests, answered by one call.
pub type ContextBatcher = Batcher<ContextKey, QueryResult<Option<EntryContextRow>>>;

/// Batches of at most `max_batch` lookups, at most `max_leaders` at a time.
pub fn context_batcher(max_batch: usize, max_leaders: usize) -> ContextBatcher {
    Batcher::new(load_many, batch_panicked, max_batch, max_leaders)
}

fn batch_panicked() -> QueryResult<Option<EntryContextRow>> {
    Err(diesel::result::Error::QueryBuilderError(
        "entry context batch panicked".into(),
    ))
}

#[derive(QueryableByName)]
struct NumberedContextRow {
    #[diesel(sql_type = BigInt)]
    n: i64,
    #[diesel(embed)]
    row: EntryContextRow,
}

/// The entry contexts of one or more requests: for each (user, session, subject code), the
/// caller when the user exists and the session is live (no row otherwise: 401) and the
/// subject's write context when it is within the scope (NULL columns otherwise: 404), the
/// scope being every site or the caller's own assignments, in SQL. `new_id` is drawn from
/// the sequence only for a found subject; `now` is the statement's clock, the new record's
/// created_at. Rows are numbered by the request's position. One statement, prepared once
/// per connection by diesel: written out rather than composed from the PL/pgSQL lookups
/// (`casebook_caller`, `casebook_write_context`, whose rules it repeats), since calling
/// those per element made a batch of four take 8 ms instead of 0.3 ms.
struct EntryContextsQuery<'a> {
    users: Vec<i64>,
    sessions: Vec<uuid::Uuid>,
    codes: Vec<&'a str>,
    all_sites: bool,
    sequence: &'a str,
}

impl QueryId for EntryContextsQuery<'_> {
    type QueryId = EntryContextsQuery<'static>;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl Query for EntryContextsQuery<'_> {
    type SqlType = diesel::sql_types::Untyped;
}

impl QueryFragment<Pg> for EntryContextsQuery<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        // Binds are numbered in the order they are pushed, i.e. as they appear here.
        out.push_sql(
            "SELECT r.n, u.email, u.name, u.role, u.active, u.token_version, \
               ARRAY(SELECT us.site_id FROM user_sites us WHERE us.user_id = u.id \
                     ORDER BY us.site_id) AS site_ids, \
               ARRAY(SELECT st.code FROM user_sites us JOIN sites st ON st.id = us.site_id \
                     WHERE us.user_id = u.id ORDER BY st.code) AS site_codes, \
               w.id, w.site_id, w.subject_code, w.weight_kg, w.time_zone, w.birth_year_month, \
               w.first_signed, \
               w.withdrawn_on, w.locked, \
               CASE WHEN w.id IS NULL THEN NULL ELSE nextval(",
        );
        out.push_bind_param::<Text, _>(&self.sequence)?;
        out.push_sql("::regclass) END AS new_id, now() AS now FROM unnest(");
        out.push_bind_param::<Array<BigInt>, _>(&self.users)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<diesel::sql_types::Uuid>, _>(&self.sessions)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Text>, _>(&self.codes)?;
        out.push_sql(
            ") WITH ORDINALITY AS r(usr, sess, code, n) \
             JOIN users u ON u.id = r.usr \
             JOIN sessions s ON s.id = r.sess AND s.user_id = u.id AND s.revoked_at IS NULL \
             LEFT JOIN LATERAL ( \
               SELECT sj.id, sj.site_id, sj.subject_code, sj.weight_kg::float8 AS weight_kg, \
                 st.time_zone, sj.birth_year_month, \
                 (SELECT min(c.signed_on) FROM consents c \
                   WHERE c.subject_id = sj.id AND c.deleted_at IS NULL) AS first_signed, \
                 (SELECT min(c.withdrawn_on) FROM consents c \
                   WHERE c.subject_id = sj.id AND c.deleted_at IS NULL) AS withdrawn_on, \
                 EXISTS (SELECT 1 FROM locks l WHERE l.unlocked_at IS NULL \
                   AND (l.scope = 'study' OR (l.scope = 'site' AND l.site_id = sj.site_id) \
                        OR (l.scope = 'subject' AND l.subject_id = sj.id))) AS locked \
               FROM subjects sj JOIN sites st ON st.id = sj.site_id \
               WHERE sj.subject_code = r.code AND sj.deleted_at IS NULL AND (",
        );
        out.push_bind_param::<Bool, _>(&self.all_sites)?;
        out.push_sql(
            " OR sj.site_id IN (SELECT us.site_id FROM user_sites us WHERE us.user_id = u.id)) \
             ) w ON true",
        );
        Ok(())
    }
}

impl RunQueryDsl<PgConnection> for EntryContextsQuery<'_> {}

/// The lookups of `keys` in one call (one answer per key, in order); when that call fails,
/// or the keys name different sequences, each lookup alone.
fn load_many(
    conn: &mut PgConnection,
    keys: &[ContextKey],
) -> Vec<QueryResult<Option<EntryContextRow>>> {
    let one_by_one = |conn: &mut PgConnection| -> Vec<QueryResult<Option<EntryContextRow>>> {
        keys.iter()
            .map(|k| load_key(conn, k.user_id, k.session, false, &k.code, k.sequence))
            .collect()
    };
    let Some(first) = keys.first() else {
        return Vec::new();
    };
    if keys.len() == 1 || keys.iter().any(|k| k.sequence != first.sequence) {
        return one_by_one(conn);
    }
    let query = EntryContextsQuery {
        users: keys.iter().map(|k| k.user_id).collect(),
        sessions: keys.iter().map(|k| k.session).collect(),
        codes: keys.iter().map(|k| k.code.as_str()).collect(),
        all_sites: false,
        sequence: first.sequence,
    };
    let rows: Vec<NumberedContextRow> = match query.load(conn) {
        Ok(rows) => rows,
        Err(_) => return one_by_one(conn),
    };
    let mut answers: Vec<Option<EntryContextRow>> = keys.iter().map(|_| None).collect();
    for numbered in rows {
        let at = usize::try_from(numbered.n - 1).ok();
        if let Some(slot) = at.and_then(|i| answers.get_mut(i)) {
            *slot = Some(numbered.row);
        }
    }
    answers.into_iter().map(Ok).collect()
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
