//! SQL of form records. Every read names the subject, which the caller found within its
//! scope (`find_subject`): a record of a subject outside it is never reached (404).

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use serde_json::Value;

use crate::schema::{form_records as r, study_versions as sv, subjects as s};

/// The table form records live in, as the audit trail, queries and verifications name them.
pub const ENTITY: &str = "form_records";

/// A record as stored, with the number of the definition version it was entered under.
#[derive(Debug, Clone)]
pub struct Row {
    pub id: i64,
    pub site_id: i64,
    pub subject_id: i64,
    pub form_id: String,
    pub visit_id: Option<String>,
    pub values: Value,
    pub flags: Value,
    pub version: i32,
    pub created_at: DateTime<Utc>,
    pub created_by: i64,
    pub updated_at: DateTime<Utc>,
    pub updated_by: i64,
    pub change_reason: Option<String>,
    pub deleted_at: Option<DateTime<Utc>>,
    pub deleted_reason: Option<String>,
    pub definition_version: i32,
}

/// A record's own columns, as selected and as an INSERT returns them.
pub(crate) type Columns = (
    r::id,
    r::site_id,
    r::subject_id,
    r::form_id,
    r::visit_id,
    r::values,
    r::flags,
    r::version,
    r::created_at,
    r::created_by,
    r::updated_at,
    r::updated_by,
    r::change_reason,
    r::deleted_at,
    r::deleted_reason,
);

pub(crate) const COLUMNS: Columns = (
    r::id,
    r::site_id,
    r::subject_id,
    r::form_id,
    r::visit_id,
    r::values,
    r::flags,
    r::version,
    r::created_at,
    r::created_by,
    r::updated_at,
    r::updated_by,
    r::change_reason,
    r::deleted_at,
    r::deleted_reason,
);

/// The values of `COLUMNS`.
pub(crate) type Stored = (
    i64,
    i64,
    i64,
    String,
    Option<String>,
    Value,
    Value,
    i32,
    DateTime<Utc>,
    i64,
    DateTime<Utc>,
    i64,
    Option<String>,
    Option<DateTime<Utc>>,
    Option<String>,
);

impl Row {
    pub(crate) fn of((s, definition_version): (Stored, i32)) -> Self {
        Row {
            id: s.0,
            site_id: s.1,
            subject_id: s.2,
            form_id: s.3,
            visit_id: s.4,
            values: s.5,
            flags: s.6,
            version: s.7,
            created_at: s.8,
            created_by: s.9,
            updated_at: s.10,
            updated_by: s.11,
            change_reason: s.12,
            deleted_at: s.13,
            deleted_reason: s.14,
            definition_version,
        }
    }
}

/// A subject's records of a form (those entered in error included), oldest first.
pub fn list(conn: &mut PgConnection, subject_id: i64, form: &str) -> QueryResult<Vec<Row>> {
    r::table
        .inner_join(sv::table)
        .filter(r::subject_id.eq(subject_id))
        .filter(r::form_id.eq(form))
        .order(r::id)
        .select((COLUMNS, sv::version))
        .load(conn)
        .map(|rows| rows.into_iter().map(Row::of).collect())
}

/// A subject's records of every form, those entered in error left out, oldest first: what
/// the casebook shows and a signature covers.
pub fn live(conn: &mut PgConnection, subject_id: i64) -> QueryResult<Vec<Row>> {
    r::table
        .inner_join(sv::table)
        .filter(r::subject_id.eq(subject_id))
        .filter(r::deleted_at.is_null())
        .order(r::id)
        .select((COLUMNS, sv::version))
        .load(conn)
        .map(|rows| rows.into_iter().map(Row::of).collect())
}

/// The ids of the records of a form, as a subquery (the queries raised on them).
pub fn ids_of_form(
    form: String,
) -> diesel::dsl::Select<diesel::dsl::Filter<r::table, diesel::dsl::Eq<r::form_id, String>>, r::id>
{
    r::table.filter(r::form_id.eq(form)).select(r::id)
}

/// One record of a subject's form; `lock` holds it until the transaction ends.
pub fn find(
    conn: &mut PgConnection,
    subject_id: i64,
    form: &str,
    id: i64,
    lock: bool,
) -> QueryResult<Row> {
    if lock {
        r::table
            .filter(r::id.eq(id))
            .filter(r::subject_id.eq(subject_id))
            .filter(r::form_id.eq(form))
            .select(r::id)
            .for_update()
            .first::<i64>(conn)?;
    }
    r::table
        .inner_join(sv::table)
        .filter(r::id.eq(id))
        .filter(r::subject_id.eq(subject_id))
        .filter(r::form_id.eq(form))
        .select((COLUMNS, sv::version))
        .first(conn)
        .map(Row::of)
}

/// The site, subject, version and form of a live record (not entered in error), for the
/// monitoring routes that name a record by id alone; the caller checks the site against its
/// scope (404 outside).
pub fn owner(conn: &mut PgConnection, id: i64) -> QueryResult<Option<(i64, i64, i32, String)>> {
    r::table
        .filter(r::id.eq(id))
        .filter(r::deleted_at.is_null())
        .select((r::site_id, r::subject_id, r::version, r::form_id))
        .first(conn)
        .optional()
}

/// The form of each of these records (any state), as (record id, form id).
pub fn forms_of(conn: &mut PgConnection, ids: &[i64]) -> QueryResult<Vec<(i64, String)>> {
    r::table
        .filter(r::id.eq_any(ids))
        .select((r::id, r::form_id))
        .load(conn)
}

pub struct NewRecord<'a> {
    pub site_id: i64,
    pub subject_id: i64,
    pub form_id: &'a str,
    pub visit_id: Option<&'a str>,
    pub repeat_key: Option<&'a str>,
    pub study_version_id: i64,
    /// that version's number, answered with the record
    pub definition_version: i32,
    pub values: &'a Value,
    pub flags: &'a Value,
    pub user_id: i64,
}

/// Inserts a record; returns it as stored (a second record of a form entered once per visit
/// is a unique violation, for the caller to name).
pub fn insert(conn: &mut PgConnection, n: &NewRecord<'_>) -> QueryResult<Row> {
    diesel::insert_into(r::table)
        .values((
            r::site_id.eq(n.site_id),
            r::subject_id.eq(n.subject_id),
            r::form_id.eq(n.form_id),
            r::visit_id.eq(n.visit_id),
            r::repeat_key.eq(n.repeat_key),
            r::study_version_id.eq(n.study_version_id),
            r::values.eq(n.values),
            r::flags.eq(n.flags),
            r::created_by.eq(n.user_id),
            r::updated_by.eq(n.user_id),
        ))
        .returning(COLUMNS)
        .get_result::<Stored>(conn)
        .map(|stored| Row::of((stored, n.definition_version)))
}

pub struct Correction<'a> {
    pub study_version_id: i64,
    /// a record entered per day moves with its day
    pub repeat_key: Option<&'a str>,
    pub values: &'a Value,
    pub flags: &'a Value,
    pub reason: &'a str,
    pub user_id: i64,
}

/// A correction: new values and flags under the running version, the reason, version + 1
/// (a second live record of a form entered once per visit or day is a unique violation).
pub fn correct(conn: &mut PgConnection, id: i64, c: &Correction<'_>) -> QueryResult<()> {
    diesel::update(r::table.find(id))
        .set((
            r::values.eq(c.values),
            r::flags.eq(c.flags),
            r::repeat_key.eq(c.repeat_key),
            r::study_version_id.eq(c.study_version_id),
            r::change_reason.eq(c.reason),
            r::version.eq(r::version + 1),
            r::updated_at.eq(diesel::dsl::now),
            r::updated_by.eq(c.user_id),
        ))
        .execute(conn)
        .map(|_| ())
}

/// New flags of a record the server re-checked (its visit window after day 1 moved), with
/// the reason, version + 1.
pub fn set_flags(
    conn: &mut PgConnection,
    id: i64,
    flags: &Value,
    reason: &str,
    user_id: i64,
) -> QueryResult<()> {
    diesel::update(r::table.find(id))
        .set((
            r::flags.eq(flags),
            r::change_reason.eq(reason),
            r::version.eq(r::version + 1),
            r::updated_at.eq(diesel::dsl::now),
            r::updated_by.eq(user_id),
        ))
        .execute(conn)
        .map(|_| ())
}

/// Marks a record entered in error: nothing is removed.
pub fn mark_deleted(
    conn: &mut PgConnection,
    id: i64,
    reason: &str,
    user_id: i64,
) -> QueryResult<()> {
    diesel::update(r::table.find(id))
        .set((
            r::deleted_at.eq(diesel::dsl::now),
            r::deleted_by.eq(user_id),
            r::deleted_reason.eq(reason),
            r::change_reason.eq(reason),
            r::version.eq(r::version + 1),
            r::updated_at.eq(diesel::dsl::now),
            r::updated_by.eq(user_id),
        ))
        .execute(conn)
        .map(|_| ())
}

/// Holds the subject's row until the transaction ends. `exclusive` (FOR NO KEY UPDATE):
/// writes whose rules read the subject's other records (earlier doses, fevers) or that move
/// day 1, so that two of them cannot each decide on what the other has not committed yet.
/// Shared (FOR SHARE): writes that read day 1 alone (a visit's window); they wait for an
/// exclusive holder, not for each other. Other writes hold the row FOR KEY SHARE
/// (`guard::ensure_unlocked`), which neither waits for.
pub fn hold_subject(conn: &mut PgConnection, subject_id: i64, exclusive: bool) -> QueryResult<()> {
    let row = s::table.find(subject_id).select(s::id);
    if exclusive {
        row.for_no_key_update().first::<i64>(conn)?;
    } else {
        row.for_share().first::<i64>(conn)?;
    }
    Ok(())
}
