//! CSV of a form the study definition describes and form records store: one row per record
//! in id (entry) order; the record's place (subject, site, visit), its version and the
//! definition version it was last checked against, then every item of the form in
//! definition order, then its flags and bookkeeping.
//!
//! Values are written as stored: decimals as exact text at the item's digits (`"0.50"`),
//! integers, booleans `true`/`false`, dates and partial dates as entered, datetimes ISO 8601
//! UTC with `Z`, several codes separated by `;`; an item without a value is empty.

use std::io;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Integer, Jsonb, Nullable, Text, Timestamptz};
use serde_json::Value;

use super::forms::batched;
use super::sink::Sink;
use super::text::{csv_header, Csv};
use super::{filter_sql, DateCol, Filters, Job, Out, Stop, BATCH};
use crate::domain::study::Form;

/// Columns before the form's items.
pub const PLACE: [&str; 6] = [
    "subject_code",
    "site_code",
    "visit",
    "id",
    "version",
    "definition_version",
];

/// Columns after the form's items.
pub const BOOKKEEPING: [&str; 9] = [
    "flags",
    "created_at",
    "created_by",
    "updated_at",
    "updated_by",
    "change_reason",
    "deleted_at",
    "deleted_by",
    "deleted_reason",
];

/// The header row of a form.
pub fn header(form: &Form) -> Vec<&str> {
    PLACE
        .into_iter()
        .chain(form.items.iter().map(|i| i.id.as_str()))
        .chain(BOOKKEEPING)
        .collect()
}

type PlaceSt = (Text, Text, Nullable<Text>, BigInt, Integer, Integer, Jsonb);
type BookSt = (
    Text,
    Timestamptz,
    BigInt,
    Timestamptz,
    BigInt,
    Nullable<Text>,
    Nullable<Timestamptz>,
    Nullable<BigInt>,
    Nullable<Text>,
);

#[derive(Debug, Queryable)]
struct Place {
    subject: String,
    site: String,
    visit: Option<String>,
    id: i64,
    version: i32,
    definition_version: i32,
    values: Value,
}

#[derive(Debug, Queryable)]
struct Book {
    flags: String,
    created_at: DateTime<Utc>,
    created_by: i64,
    updated_at: DateTime<Utc>,
    updated_by: i64,
    change_reason: Option<String>,
    deleted_at: Option<DateTime<Utc>>,
    deleted_by: Option<i64>,
    deleted_reason: Option<String>,
}

#[derive(Debug, Queryable)]
struct Row {
    place: Place,
    book: Book,
}

/// A literal for ids the definition checked (identifiers): quotes doubled all the same.
pub fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The filters: scope, site, soft delete, and `from`/`to` on the form's dating item. That
/// item is a date, a partial date or a datetime (UTC, `Z`) stored as ISO 8601 text, so
/// its first ten characters compare as days do; a partial date (`2026-10`) sorts before
/// the days it contains.
pub fn filters(job: &Job, form: &Form) -> String {
    let base = Filters {
        from: None,
        to: None,
        ..job.filters.clone()
    };
    let mut s = filter_sql(
        &base,
        &job.scope,
        "x.site_id",
        DateCol::Date("x.created_at"),
        Some("x.deleted_at"),
    );
    let dated = format!("substr(x.values->>{}, 1, 10)", literal(&form.dated_by));
    if let Some(from) = job.filters.from {
        s.push_str(&format!(" AND {dated} >= '{}'", from.format("%Y-%m-%d")));
    }
    if let Some(to) = job.filters.to {
        s.push_str(&format!(" AND {dated} <= '{}'", to.format("%Y-%m-%d")));
    }
    s
}

fn statement(job: &Job, form: &Form, after: i64) -> String {
    format!(
        "s.subject_code, st.code, x.visit_id, x.id, x.version, sv.version, x.values, \
         x.flags::text, x.created_at, x.created_by, x.updated_at, x.updated_by, \
         x.change_reason, x.deleted_at, x.deleted_by, x.deleted_reason \
         FROM form_records x JOIN study_versions sv ON sv.id = x.study_version_id \
         JOIN subjects s ON s.id = x.subject_id JOIN sites st ON st.id = x.site_id \
         WHERE x.id > {after} AND x.form_id = {form_id} AND sv.study_id = {study}{filters} \
         ORDER BY x.id LIMIT {BATCH}",
        form_id = literal(&form.id),
        study = literal(&job.study.study.id),
        filters = filters(job, form),
    )
}

/// One stored value as its cell.
fn cell(c: &mut Csv<'_, Sink>, v: Option<&Value>) -> io::Result<()> {
    match v {
        None | Some(Value::Null) => c.text(""),
        Some(Value::String(s)) => c.text(s),
        Some(Value::Bool(b)) => c.bool(*b),
        Some(Value::Number(n)) => c.text(&n.to_string()),
        Some(Value::Array(codes)) => {
            let joined: Vec<String> = codes
                .iter()
                .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_owned))
                .collect();
            c.text(&joined.join(";"))
        }
        Some(other) => c.text(&other.to_string()),
    }
    .map(|_| ())
}

pub fn write(conn: &mut PgConnection, job: &Job, form_id: &str, out: &mut Out) -> Result<(), Stop> {
    // the handler found the form in this same definition
    let Some(form) = job.study.record_form(form_id) else {
        return Err(Stop::Io(io::Error::other(format!(
            "the study has no form {form_id}"
        ))));
    };
    csv_header(&mut out.sink, &header(form))?;
    batched::<(PlaceSt, BookSt), Row>(
        conn,
        out,
        |after| statement(job, form, after),
        |r| r.place.id,
        |r, c| {
            let p = &r.place;
            c.text(&p.subject)?
                .text(&p.site)?
                .opt(p.visit.as_deref())?
                .int(p.id)?
                .int(i64::from(p.version))?
                .int(i64::from(p.definition_version))?;
            for item in &form.items {
                cell(c, p.values.get(&item.id))?;
            }
            let b = &r.book;
            c.text(&b.flags)?
                .ts(b.created_at)?
                .int(b.created_by)?
                .ts(b.updated_at)?
                .int(b.updated_by)?
                .opt(b.change_reason.as_deref())?
                .opt_ts(b.deleted_at)?
                .opt_int(b.deleted_by)?
                .opt(b.deleted_reason.as_deref())?
                .end()
        },
    )
}
