//! CSV per form: one header row, then one row per record in id (entry) order.
//!
//! Every form carries `id, subject_code, site_code`, its own fields, then the bookkeeping
//! columns [`BOOKKEEPING`]. Numbers are exact decimals as stored, booleans `true`/`false`,
//! dates `YYYY-MM-DD`, timestamps ISO 8601 in UTC with `Z`. User columns are user ids.

use chrono::{DateTime, NaiveDate, Utc};
use diesel::prelude::*;
use diesel::sql_types::{
    Array, BigInt, Bool, Date, Integer, Nullable, SmallInt, Text, Timestamptz,
};
use std::io;

use super::sink::Sink;
use super::text::{csv_header, Csv};
use super::{filter_sql, stream_rows, DateCol, Form, Job, Out, Stop, BATCH};

/// Columns every form ends with.
pub const BOOKKEEPING: [&str; 8] = [
    "version",
    "created_at",
    "created_by",
    "updated_at",
    "updated_by",
    "deleted_at",
    "deleted_by",
    "deleted_reason",
];

pub const SUBJECTS: &[&str] = &[
    "id",
    "subject_code",
    "site_code",
    "status",
    "sex",
    "birth_year_month",
    "weight_kg",
    "eligibility",
];
pub const CONSENTS: &[&str] = &[
    "id",
    "subject_code",
    "site_code",
    "form_version",
    "signed_on",
    "signer",
    "representative_relationship",
    "assent",
    "obtained_by",
    "withdrawn_on",
    "withdrawal_scope",
    "withdrawal_reason",
];
pub const INJECTIONS: &[&str] = &[
    "id",
    "subject_code",
    "site_code",
    "study_day",
    "administered_at",
    "dose_mg",
    "weight_kg",
    "route",
    "injection_site",
    "lot_number",
    "given",
    "not_given_reason",
    "expected_dose_mg",
    "protocol_deviation",
    "deviation_reason",
];
pub const TEMPERATURES: &[&str] = &[
    "id",
    "subject_code",
    "site_code",
    "measured_at",
    "celsius",
    "method",
    "fever",
];
pub const ADVERSE_EVENTS: &[&str] = &[
    "id",
    "subject_code",
    "site_code",
    "term",
    "meddra_code",
    "meddra_term",
    "onset_date",
    "end_date",
    "grade",
    "serious",
    "seriousness_criteria",
    "relationship",
    "action_taken",
    "outcome",
    "awareness_date",
];

/// Data queries: one row per query thread. `opened_text` is the first message,
/// `last_message_kind` and `last_message_at` the latest; no soft delete.
pub const QUERIES: &[&str] = &[
    "id",
    "subject_code",
    "site_code",
    "record_type",
    "record_id",
    "form",
    "field",
    "status",
    "origin",
    "opened_text",
    "messages",
    "last_message_kind",
    "last_message_at",
    "created_at",
    "created_by",
    "updated_at",
];

/// The form's own columns (before [`BOOKKEEPING`]).
pub fn columns(form: Form) -> &'static [&'static str] {
    match form {
        Form::Subjects => SUBJECTS,
        Form::Consents => CONSENTS,
        Form::Injections => INJECTIONS,
        Form::Temperatures => TEMPERATURES,
        Form::AdverseEvents => ADVERSE_EVENTS,
        Form::Queries => QUERIES,
    }
}

/// The header row: the form's columns, then [`BOOKKEEPING`] (queries have none).
pub fn header(form: Form) -> Vec<&'static str> {
    let mut h = columns(form).to_vec();
    if form != Form::Queries {
        h.extend(BOOKKEEPING);
    }
    h
}

/// The column `from`/`to` filter on.
pub fn date_column(form: Form) -> &'static str {
    match form {
        Form::Subjects => "created_at",
        Form::Consents => "signed_on",
        Form::Injections => "administered_at",
        Form::Temperatures => "measured_at",
        Form::AdverseEvents => "awareness_date",
        Form::Queries => "created_at",
    }
}

const BOOK_SQL: &str = "x.version, x.created_at, x.created_by, x.updated_at, x.updated_by, \
                        x.deleted_at, x.deleted_by, x.deleted_reason";

type BookSt = (
    Integer,
    Timestamptz,
    BigInt,
    Timestamptz,
    BigInt,
    Nullable<Timestamptz>,
    Nullable<BigInt>,
    Nullable<Text>,
);

/// Bookkeeping columns, as loaded (a nested tuple in each row).
#[derive(Debug, Queryable)]
pub struct Book {
    pub version: i32,
    pub created_at: DateTime<Utc>,
    pub created_by: i64,
    pub updated_at: DateTime<Utc>,
    pub updated_by: i64,
    pub deleted_at: Option<DateTime<Utc>>,
    pub deleted_by: Option<i64>,
    pub deleted_reason: Option<String>,
}

impl Book {
    fn csv(&self, c: &mut Csv<'_, Sink>) -> io::Result<()> {
        c.int(i64::from(self.version))?
            .ts(self.created_at)?
            .int(self.created_by)?
            .ts(self.updated_at)?
            .int(self.updated_by)?
            .opt_ts(self.deleted_at)?
            .opt_int(self.deleted_by)?
            .opt(self.deleted_reason.as_deref())?
            .end()
    }
}

#[derive(Debug, Queryable)]
struct SubjectRow {
    id: i64,
    code: String,
    site: String,
    status: String,
    sex: String,
    birth_year_month: String,
    weight_kg: String,
    eligibility: String,
    book: Book,
}

#[derive(Debug, Queryable)]
struct ConsentRow {
    id: i64,
    code: String,
    site: String,
    form_version: String,
    signed_on: NaiveDate,
    signer: String,
    representative_relationship: Option<String>,
    assent: Option<bool>,
    obtained_by: i64,
    withdrawn_on: Option<NaiveDate>,
    withdrawal_scope: Option<String>,
    withdrawal_reason: Option<String>,
    book: Book,
}

#[derive(Debug, Queryable)]
struct InjectionRow {
    id: i64,
    code: String,
    site: String,
    study_day: i32,
    administered_at: DateTime<Utc>,
    dose_mg: String,
    weight_kg: Option<String>,
    route: Option<String>,
    injection_site: String,
    lot_number: String,
    given: bool,
    not_given_reason: Option<String>,
    expected_dose_mg: Option<String>,
    protocol_deviation: bool,
    deviation_reason: Option<String>,
    book: Book,
}

#[derive(Debug, Queryable)]
struct TemperatureRow {
    id: i64,
    code: String,
    site: String,
    measured_at: DateTime<Utc>,
    celsius: String,
    method: String,
    fever: bool,
    book: Book,
}

#[derive(Debug, Queryable)]
struct QueryRow {
    id: i64,
    code: String,
    site: String,
    record_type: String,
    record_id: i64,
    form: Option<String>,
    field: Option<String>,
    status: String,
    origin: String,
    opened_text: Option<String>,
    messages: Option<i64>,
    last_kind: Option<String>,
    last_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    created_by: Option<i64>,
    updated_at: DateTime<Utc>,
}

#[derive(Debug, Queryable)]
struct AdverseEventRow {
    id: i64,
    code: String,
    site: String,
    term: String,
    meddra_code: Option<String>,
    meddra_term: Option<String>,
    onset_date: String,
    end_date: Option<String>,
    grade: i16,
    serious: bool,
    seriousness_criteria: Vec<String>,
    relationship: String,
    action_taken: String,
    outcome: String,
    awareness_date: NaiveDate,
    book: Book,
}

/// Keyset batches over `x.id`: `select(after)` is the statement after `SELECT`.
pub(super) fn batched<ST, R>(
    conn: &mut PgConnection,
    out: &mut Out,
    select: impl Fn(i64) -> String,
    id: impl Fn(&R) -> i64,
    write: impl Fn(&R, &mut Csv<'_, Sink>) -> io::Result<()>,
) -> Result<(), Stop>
where
    ST: diesel::expression::TypedExpressionType + diesel::sql_types::SqlType + 'static,
    diesel::dsl::select<diesel::expression::SqlLiteral<ST>>: diesel::query_dsl::methods::LoadQuery<
            'static,
            PgConnection,
            R,
            diesel::pg::PgRowByRowLoadingMode,
        > + 'static,
{
    let mut after = 0;
    loop {
        out.check()?;
        let mut last = after;
        let n = stream_rows::<ST, R>(conn, &select(after), |r| {
            last = id(&r);
            write(&r, &mut Csv::new(&mut out.sink))?;
            out.rows += 1;
            Ok(())
        })?;
        if n < BATCH {
            return Ok(());
        }
        after = last;
    }
}

fn statement(job: &Job, form: Form, fields: &str, joins: &str, after: i64) -> String {
    // the moved legacy forms are form records (legacy columns from values): the form, and
    // the type of the date filtered on
    let records_of = match form {
        Form::Injections => Some(("injection", "timestamptz")),
        Form::Temperatures => Some(("temperature", "timestamptz")),
        Form::AdverseEvents => Some(("adverse_event", "date")),
        _ => None,
    };
    let (table, only, date) = match records_of {
        Some((id, cast)) => (
            "form_records",
            format!(" AND x.form_id = '{id}'"),
            format!("(x.\"values\" ->> '{}')::{cast}", date_column(form)),
        ),
        None => (
            form.table(),
            String::new(),
            format!("x.{}", date_column(form)),
        ),
    };
    let date = match form {
        Form::Consents | Form::AdverseEvents => DateCol::Date(&date),
        _ => DateCol::Timestamp(&date),
    };
    let (deleted, book) = match form {
        Form::Queries => (None, ""),
        _ => (Some("x.deleted_at"), BOOK_SQL),
    };
    let sep = if book.is_empty() { "" } else { ", " };
    let filters = filter_sql(&job.filters, &job.scope, "x.site_id", date, deleted);
    format!(
        "{fields}{sep}{book} FROM {table} x {joins} \
         WHERE x.id > {after}{only}{filters} ORDER BY x.id LIMIT {BATCH}"
    )
}

/// A query's record type as the API answers it: a form record of a moved legacy form by
/// the form's old table (`temperatures`).
fn answered_type_sql(record_type: &str, form: &str) -> String {
    let whens: String = crate::domain::study::MOVED_FORMS
        .iter()
        .map(|m| format!(" WHEN {form} = '{}' THEN '{}'", m.form, m.entity))
        .collect();
    format!("CASE{whens} ELSE {record_type} END")
}

const JOIN_SUBJECT: &str =
    "JOIN subjects s ON s.id = x.subject_id JOIN sites st ON st.id = x.site_id";

pub fn write(conn: &mut PgConnection, job: &Job, form: Form, out: &mut Out) -> Result<(), Stop> {
    csv_header(&mut out.sink, &header(form))?;
    match form {
        Form::Subjects => {
            batched::<(BigInt, Text, Text, Text, Text, Text, Text, Text, BookSt), SubjectRow>(
                conn,
                out,
                |after| {
                    statement(
                        job,
                        form,
                        "x.id, x.subject_code, st.code, x.status, x.sex, x.birth_year_month, \
                     x.weight_kg::text, x.eligibility::text",
                        "JOIN sites st ON st.id = x.site_id",
                        after,
                    )
                },
                |r| r.id,
                |r, c| {
                    c.int(r.id)?
                        .text(&r.code)?
                        .text(&r.site)?
                        .text(&r.status)?
                        .text(&r.sex)?
                        .text(&r.birth_year_month)?
                        .text(&r.weight_kg)?
                        .text(&r.eligibility)?;
                    r.book.csv(c)
                },
            )
        }
        Form::Consents => batched::<
            (
                BigInt,
                Text,
                Text,
                Text,
                Date,
                Text,
                Nullable<Text>,
                Nullable<Bool>,
                BigInt,
                Nullable<Date>,
                Nullable<Text>,
                Nullable<Text>,
                BookSt,
            ),
            ConsentRow,
        >(
            conn,
            out,
            |after| {
                statement(
                    job,
                    form,
                    "x.id, s.subject_code, st.code, x.form_version, x.signed_on, x.signer, \
                     x.representative_relationship, x.assent, x.obtained_by, x.withdrawn_on, \
                     x.withdrawal_scope, x.withdrawal_reason",
                    JOIN_SUBJECT,
                    after,
                )
            },
            |r| r.id,
            |r, c| {
                c.int(r.id)?
                    .text(&r.code)?
                    .text(&r.site)?
                    .text(&r.form_version)?
                    .date(r.signed_on)?
                    .text(&r.signer)?
                    .opt(r.representative_relationship.as_deref())?
                    .opt_bool(r.assent)?
                    .int(r.obtained_by)?
                    .opt_date(r.withdrawn_on)?
                    .opt(r.withdrawal_scope.as_deref())?
                    .opt(r.withdrawal_reason.as_deref())?;
                r.book.csv(c)
            },
        ),
        Form::Injections => batched::<
            (
                BigInt,
                Text,
                Text,
                Integer,
                Timestamptz,
                Text,
                Nullable<Text>,
                Nullable<Text>,
                Text,
                Text,
                Bool,
                Nullable<Text>,
                Nullable<Text>,
                Bool,
                Nullable<Text>,
                BookSt,
            ),
            InjectionRow,
        >(
            conn,
            out,
            |after| {
                statement(
                    job,
                    form,
                    "x.id, s.subject_code, st.code, (x.\"values\" ->> 'study_day')::integer, \
                     (x.\"values\" ->> 'administered_at')::timestamptz, \
                     x.\"values\" ->> 'dose_mg', x.\"values\" ->> 'weight_kg', \
                     x.\"values\" ->> 'route', x.\"values\" ->> 'injection_site', \
                     x.\"values\" ->> 'lot_number', (x.\"values\" ->> 'given')::boolean, \
                     x.\"values\" ->> 'not_given_reason', x.\"values\" ->> 'expected_dose_mg', \
                     coalesce((x.\"values\" ->> 'protocol_deviation')::boolean, false), \
                     x.\"values\" ->> 'deviation_reason'",
                    JOIN_SUBJECT,
                    after,
                )
            },
            |r| r.id,
            |r, c| {
                c.int(r.id)?
                    .text(&r.code)?
                    .text(&r.site)?
                    .int(i64::from(r.study_day))?
                    .ts(r.administered_at)?
                    .text(&r.dose_mg)?
                    .opt(r.weight_kg.as_deref())?
                    .opt(r.route.as_deref())?
                    .text(&r.injection_site)?
                    .text(&r.lot_number)?
                    .bool(r.given)?
                    .opt(r.not_given_reason.as_deref())?
                    .opt(r.expected_dose_mg.as_deref())?
                    .bool(r.protocol_deviation)?
                    .opt(r.deviation_reason.as_deref())?;
                r.book.csv(c)
            },
        ),
        Form::Temperatures => {
            batched::<(BigInt, Text, Text, Timestamptz, Text, Text, Bool, BookSt), TemperatureRow>(
                conn,
                out,
                |after| {
                    statement(
                        job,
                        form,
                        "x.id, s.subject_code, st.code, \
                         (x.\"values\" ->> 'measured_at')::timestamptz, \
                         x.\"values\" ->> 'celsius', x.\"values\" ->> 'method', \
                         coalesce((x.\"values\" ->> 'fever')::boolean, false)",
                        JOIN_SUBJECT,
                        after,
                    )
                },
                |r| r.id,
                |r, c| {
                    c.int(r.id)?
                        .text(&r.code)?
                        .text(&r.site)?
                        .ts(r.measured_at)?
                        .text(&r.celsius)?
                        .text(&r.method)?
                        .bool(r.fever)?;
                    r.book.csv(c)
                },
            )
        }
        Form::AdverseEvents => batched::<
            (
                BigInt,
                Text,
                Text,
                Text,
                Nullable<Text>,
                Nullable<Text>,
                Text,
                Nullable<Text>,
                SmallInt,
                Bool,
                Array<Text>,
                Text,
                Text,
                Text,
                Date,
                BookSt,
            ),
            AdverseEventRow,
        >(
            conn,
            out,
            |after| {
                statement(
                    job,
                    form,
                    "x.id, s.subject_code, st.code, x.\"values\" ->> 'term', \
                     x.\"values\" ->> 'meddra_code', x.\"values\" ->> 'meddra_term', \
                     x.\"values\" ->> 'onset_date', x.\"values\" ->> 'end_date', \
                     (x.\"values\" ->> 'grade')::int2, \
                     coalesce((x.\"values\" ->> 'serious')::boolean, false), \
                     ARRAY(SELECT jsonb_array_elements_text(\
                         coalesce(x.\"values\" -> 'seriousness_criteria', '[]'::jsonb))), \
                     x.\"values\" ->> 'relationship', x.\"values\" ->> 'action_taken', \
                     x.\"values\" ->> 'outcome', (x.\"values\" ->> 'awareness_date')::date",
                    JOIN_SUBJECT,
                    after,
                )
            },
            |r| r.id,
            |r, c| {
                c.int(r.id)?
                    .text(&r.code)?
                    .text(&r.site)?
                    .text(&r.term)?
                    .opt(r.meddra_code.as_deref())?
                    .opt(r.meddra_term.as_deref())?
                    .text(&r.onset_date)?
                    .opt(r.end_date.as_deref())?
                    .int(i64::from(r.grade))?
                    .bool(r.serious)?
                    .text(&r.seriousness_criteria.join(";"))?
                    .text(&r.relationship)?
                    .text(&r.action_taken)?
                    .text(&r.outcome)?
                    .date(r.awareness_date)?;
                r.book.csv(c)
            },
        ),
        Form::Queries => batched::<
            (
                BigInt,
                Text,
                Text,
                Text,
                BigInt,
                Nullable<Text>,
                Nullable<Text>,
                Text,
                Text,
                Nullable<Text>,
                Nullable<BigInt>,
                Nullable<Text>,
                Nullable<Timestamptz>,
                Timestamptz,
                Nullable<BigInt>,
                Timestamptz,
            ),
            QueryRow,
        >(
            conn,
            out,
            |after| {
                statement(
                    job,
                    form,
                    &format!(
                        "x.id, s.subject_code, st.code, {}, x.record_id, fr.form_id, \
                         x.field, x.status, x.origin, first.text, last.n, last.kind, last.at, \
                         x.created_at, x.created_by, x.updated_at",
                        answered_type_sql("x.record_type", "fr.form_id")
                    ),
                    "JOIN subjects s ON s.id = x.subject_id JOIN sites st ON st.id = x.site_id \
                     LEFT JOIN form_records fr \
                       ON x.record_type = 'form_records' AND fr.id = x.record_id \
                     LEFT JOIN LATERAL (SELECT m.text FROM query_messages m \
                       WHERE m.query_id = x.id ORDER BY m.id LIMIT 1) first ON true \
                     LEFT JOIN LATERAL (SELECT m.kind, m.created_at AS at, \
                       (SELECT count(*) FROM query_messages c WHERE c.query_id = x.id) AS n \
                       FROM query_messages m WHERE m.query_id = x.id \
                       ORDER BY m.id DESC LIMIT 1) last ON true",
                    after,
                )
            },
            |r| r.id,
            |r, c| {
                c.int(r.id)?
                    .text(&r.code)?
                    .text(&r.site)?
                    .text(&r.record_type)?
                    .int(r.record_id)?
                    .opt(r.form.as_deref())?
                    .opt(r.field.as_deref())?
                    .text(&r.status)?
                    .text(&r.origin)?
                    .opt(r.opened_text.as_deref())?
                    .int(r.messages.unwrap_or(0))?
                    .opt(r.last_kind.as_deref())?
                    .opt_ts(r.last_at)?
                    .ts(r.created_at)?
                    .opt_int(r.created_by)?
                    .ts(r.updated_at)?
                    .end()
            },
        ),
    }
}
