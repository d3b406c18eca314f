//! Exports for sponsors: streamed CSV, CDISC ODM 1.3.2 XML, SDTM-style datasets (CSV, SAS
//! XPORT, Dataset-JSON) and their Define-XML 2.1.
//!
//! How an export runs:
//! - the handler checks policy and filters, takes a pooled connection (so that a busy pool
//!   is a 503 before anything is sent), and answers at once with a streaming body;
//! - a blocking thread runs the queries in one REPEATABLE READ transaction (one snapshot for
//!   the whole file), loads rows with `load_iter::<_, PgRowByRowLoadingMode>` (the default
//!   loading mode buffers the whole result: measured.md), in keyset batches, and writes
//!   encoded 64 KiB chunks into a bounded channel ([`sink`]): memory stays constant (SDTM
//!   holds one batch of subjects' form-record rows, to sort them among today's; Dataset-JSON
//!   keeps its rows in a temporary file beyond 1 MiB, since its row count comes first);
//! - a client that goes away (or stops reading for a minute) stops the work at the end of
//!   the current batch;
//! - the export is audited on the same connection before the last chunk leaves, with the
//!   row count, the byte count and SHA-256 of the file, the filters and the protocol;
//!   an interrupted export is audited too, as not completed.
//! - the command line (`casebook export`) runs the same writers into a file
//!   ([`sink::Sink::writer`], [`run_offline`]), audited as `system:cli` with no user id.
//!
//! SQL: filter values are typed (ids, dates, booleans) and formatted into the statement by
//! Rust; no text from a request is ever put into SQL (site codes are resolved to ids first,
//! subject codes are bound).

pub mod dataset_json;
pub mod define;
pub mod forms;
pub mod odm;
pub mod records;
pub mod sdtm;
pub mod sink;
pub mod subjects;
pub mod text;
pub mod xpt;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, NaiveDate, Utc};
use diesel::connection::SimpleConnection;
use diesel::expression::SqlLiteral;
use diesel::pg::PgRowByRowLoadingMode;
use diesel::prelude::*;
use diesel::query_dsl::methods::LoadQuery;
use serde_json::json;

use crate::audit::{self, Actor, AuditEvent, RequestMeta};
use crate::auth::{Role, Scope};
use crate::domain::protocol::Protocol;
use crate::domain::study::Definition;

use sink::Sink;

/// Rows per keyset batch: bounds the rows the database still sends after a client left.
pub const BATCH: i64 = 10_000;

/// The CSV forms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    Subjects,
    Consents,
    Injections,
    Temperatures,
    AdverseEvents,
    Queries,
}

impl Form {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "subjects" => Some(Self::Subjects),
            "consents" => Some(Self::Consents),
            "injections" => Some(Self::Injections),
            "temperatures" => Some(Self::Temperatures),
            "adverse_events" => Some(Self::AdverseEvents),
            "queries" => Some(Self::Queries),
            _ => None,
        }
    }

    pub fn table(self) -> &'static str {
        match self {
            Self::Subjects => "subjects",
            Self::Consents => "consents",
            Self::Injections => "injections",
            Self::Temperatures => "temperatures",
            Self::AdverseEvents => "adverse_events",
            Self::Queries => "queries",
        }
    }
}

/// An SDTM dataset: DM, DS, EX, VS and AE from today's tables, every domain the study
/// definition maps a form to, and their `SUPP--` datasets (`sdtm::domains`); the code is two
/// upper-case letters, or `SUPP` and two.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Domain(String);

impl Domain {
    /// Two ASCII letters, or `supp` and two, in either case; whether the study exports it is
    /// `sdtm::domains`.
    pub fn parse(s: &str) -> Option<Self> {
        let up = s.to_ascii_uppercase();
        let letters = up.strip_prefix("SUPP").unwrap_or(&up);
        (letters.len() == 2 && letters.bytes().all(|b| b.is_ascii_uppercase())).then_some(Self(up))
    }

    /// The parent domain of a `SUPP--` dataset.
    pub fn supp_of(&self) -> Option<&str> {
        self.0.strip_prefix("SUPP")
    }

    pub fn code(&self) -> &str {
        &self.0
    }
}

/// Dataset file formats for SDTM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    Csv,
    Xpt,
    /// CDISC Dataset-JSON v1.1
    Json,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Form(Form),
    /// a form of the study definition stored as form records (its id)
    Records(String),
    Odm,
    Sdtm(Domain, Table),
    /// Define-XML 2.1 of the SDTM datasets
    Define,
}

impl Kind {
    pub fn format(&self) -> &'static str {
        match self {
            Self::Form(_) | Self::Records(_) => "csv",
            Self::Odm => "odm",
            Self::Sdtm(_, Table::Csv) => "sdtm-csv",
            Self::Sdtm(_, Table::Xpt) => "sdtm-xpt",
            Self::Sdtm(_, Table::Json) => "sdtm-json",
            Self::Define => "define-xml",
        }
    }

    /// What the audit row names as the entity: the form, `form_records` (the audit values
    /// name the form), `odm`, or the SDTM domain.
    pub fn entity(&self) -> &str {
        match self {
            Self::Form(f) => f.table(),
            Self::Records(_) => "form_records",
            Self::Odm => "odm",
            Self::Sdtm(d, _) => d.code(),
            Self::Define => "define",
        }
    }

    pub fn content_type(&self) -> &'static str {
        match self {
            Self::Form(_) | Self::Records(_) | Self::Sdtm(_, Table::Csv) => {
                "text/csv; charset=utf-8; header=present"
            }
            Self::Odm | Self::Define => "application/xml; charset=utf-8",
            Self::Sdtm(_, Table::Xpt) => "application/octet-stream",
            Self::Sdtm(_, Table::Json) => "application/json",
        }
    }

    pub fn file_name(&self, study: &str, at: DateTime<Utc>) -> String {
        let stamp = at.format("%Y%m%dT%H%M%SZ");
        let safe: String = study
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        match self {
            Self::Form(f) => format!("{safe}_{}_{stamp}.csv", f.table()),
            Self::Records(f) => format!("{safe}_{f}_{stamp}.csv"),
            Self::Odm => format!("{safe}_odm_{stamp}.xml"),
            Self::Sdtm(d, Table::Csv) => format!("{}.csv", d.code().to_ascii_lowercase()),
            Self::Sdtm(d, Table::Xpt) => format!("{}.xpt", d.code().to_ascii_lowercase()),
            Self::Sdtm(d, Table::Json) => format!("{}.json", d.code().to_ascii_lowercase()),
            // the name the XPT files' `def:leaf` references are relative to
            Self::Define => "define.xml".into(),
        }
    }
}

/// Filters as asked, with the site code already resolved to its id.
#[derive(Debug, Clone, Default)]
pub struct Filters {
    pub site: Option<String>,
    pub site_id: Option<i64>,
    /// first day, inclusive (UTC days for timestamps)
    pub from: Option<NaiveDate>,
    /// last day, inclusive
    pub to: Option<NaiveDate>,
    pub include_deleted: bool,
    /// ODM only: audit records
    pub audit: bool,
}

impl Filters {
    fn as_json(&self) -> serde_json::Value {
        json!({
            "site": self.site,
            "from": self.from,
            "to": self.to,
            "include_deleted": self.include_deleted,
            "audit": self.audit,
        })
    }
}

/// One export, as the export thread needs it.
pub struct Job {
    pub kind: Kind,
    pub filters: Filters,
    pub scope: Scope,
    pub protocol: Arc<Protocol>,
    /// the running study definition: the forms stored as form records
    pub study: Arc<Definition>,
    pub actor: Actor,
    pub role: Role,
    pub meta: RequestMeta,
    pub started: DateTime<Utc>,
    /// released once the file is complete, before its last chunk leaves
    pub slot: Option<Slot>,
}

/// Why writing stopped early.
#[derive(Debug)]
pub enum Stop {
    /// the client went away: audit what was sent, as not completed
    Disconnected,
    Db(diesel::result::Error),
    Io(io::Error),
}

impl From<diesel::result::Error> for Stop {
    fn from(e: diesel::result::Error) -> Self {
        Self::Db(e)
    }
}

impl From<io::Error> for Stop {
    fn from(e: io::Error) -> Self {
        if sink::is_disconnect(&e) {
            Self::Disconnected
        } else {
            Self::Io(e)
        }
    }
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Disconnected => write!(f, "client disconnected"),
            Self::Db(e) => write!(f, "database: {e}"),
            Self::Io(e) => write!(f, "encoding: {e}"),
        }
    }
}

/// The export's output: the sink and the count of records (rows, observations or ODM
/// item groups) written.
pub struct Out {
    pub sink: Sink,
    pub rows: u64,
    /// called with the rows so far at each check (the command line's progress line)
    pub progress: Option<Box<dyn Fn(u64)>>,
}

impl Out {
    /// Stops between batches when the response is gone.
    pub fn check(&self) -> Result<(), Stop> {
        if let Some(progress) = &self.progress {
            progress(self.rows);
        }
        if self.sink.is_closed() {
            Err(Stop::Disconnected)
        } else {
            Ok(())
        }
    }
}

/// Runs `SELECT <sql>` typed as `ST` and hands each row to `each`, one row at a time.
pub fn stream_rows<ST, R>(
    conn: &mut PgConnection,
    sql: &str,
    mut each: impl FnMut(R) -> Result<(), Stop>,
) -> Result<i64, Stop>
where
    ST: diesel::expression::TypedExpressionType + diesel::sql_types::SqlType + 'static,
    diesel::dsl::select<SqlLiteral<ST>>:
        LoadQuery<'static, PgConnection, R, PgRowByRowLoadingMode> + 'static,
{
    let query = diesel::select(diesel::dsl::sql::<ST>(sql));
    let mut n = 0;
    for row in query.load_iter::<R, PgRowByRowLoadingMode>(conn)? {
        each(row?)?;
        n += 1;
    }
    Ok(n)
}

/// `AND <column> = ANY(...)` for the caller's scope (nothing for all sites).
pub fn scope_sql(scope: &Scope, column: &str) -> String {
    match scope.site_ids() {
        None => String::new(),
        Some(ids) => format!(" AND {column} = ANY(ARRAY[{}]::int8[])", id_list(ids)),
    }
}

/// `1,2,3` (`NULL` when empty, so that `ANY(ARRAY[NULL]::int8[])` matches nothing).
pub fn id_list(ids: &[i64]) -> String {
    if ids.is_empty() {
        return "NULL".into();
    }
    let mut s = String::new();
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        let _ = write!(s, "{id}");
    }
    s
}

/// The years a `from`/`to` filter may name. chrono reads signed and five-digit years
/// (`-0001-01-01`, `+10000-01-01`) that [`filter_sql`] would write as literals PostgreSQL
/// refuses (or year 0, which it has not), and the export would fail after its 200 was sent:
/// the handler refuses them first.
pub const FILTER_YEARS: std::ops::RangeInclusive<i32> = 1..=9999;

/// Filters on a site column, a date or timestamp column, and the soft delete (for tables
/// that have one).
pub fn filter_sql(
    f: &Filters,
    scope: &Scope,
    site_col: &str,
    date: DateCol<'_>,
    deleted_col: Option<&str>,
) -> String {
    let mut s = scope_sql(scope, site_col);
    if let Some(id) = f.site_id {
        let _ = write!(s, " AND {site_col} = {id}");
    }
    let (col, is_ts) = match date {
        DateCol::Date(c) => (c, false),
        DateCol::Timestamp(c) => (c, true),
    };
    if let Some(from) = f.from {
        if is_ts {
            let _ = write!(s, " AND {col} >= '{from}'::timestamptz");
        } else {
            let _ = write!(s, " AND {col} >= '{from}'::date");
        }
    }
    if let Some(to) = f.to {
        if is_ts {
            // to the end of that (UTC) day
            let _ = write!(s, " AND {col} < ('{to}'::date + 1)::timestamptz");
        } else {
            let _ = write!(s, " AND {col} <= '{to}'::date");
        }
    }
    if let Some(col) = deleted_col.filter(|_| !f.include_deleted) {
        let _ = write!(s, " AND {col} IS NULL");
    }
    s
}

/// The column the `from`/`to` filter applies to.
pub enum DateCol<'a> {
    Date(&'a str),
    Timestamp(&'a str),
}

/// Exports hold a pooled connection for their whole duration (a slow client holds it
/// longer): at most a quarter of the pool (at least one) exports at once per application,
/// so that the clinical API keeps its connections.
pub struct Slot {
    app: usize,
}

static SLOTS: Mutex<Option<HashMap<usize, u32>>> = Mutex::new(None);

impl Slot {
    /// `app` identifies the application instance (tests run several in one process).
    pub fn take(app: usize, pool_max_size: u32) -> Option<Self> {
        let limit = (pool_max_size / 4).max(1);
        let mut guard = SLOTS.lock().unwrap_or_else(|e| e.into_inner());
        let busy = guard
            .get_or_insert_with(HashMap::new)
            .entry(app)
            .or_insert(0);
        if *busy >= limit {
            return None;
        }
        *busy += 1;
        Some(Self { app })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut guard = SLOTS.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(map) = guard.as_mut() {
            if let Some(busy) = map.get_mut(&self.app) {
                *busy = busy.saturating_sub(1);
                if *busy == 0 {
                    map.remove(&self.app);
                }
            }
        }
    }
}

/// How an export ended, for its audit row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    Completed,
    Disconnected,
    Failed,
}

/// Who the audit row names: the signed-in caller (HTTP) or the system (`system:<name>`,
/// no user id: the command line).
#[derive(Debug, Clone, Copy)]
enum By<'a> {
    Caller,
    System(&'a str),
}

fn audit_export(
    conn: &mut PgConnection,
    job: &Job,
    by: By<'_>,
    out: &Out,
    ending: Ending,
) -> QueryResult<i64> {
    let (bytes, sha256) = out.sink.summary();
    let mut values = json!({
        "format": job.kind.format(),
        "filters": job.filters.as_json(),
        "rows": out.rows,
        "bytes": bytes,
        "sha256": sha256,
        "completed": ending == Ending::Completed,
        "ending": match ending {
            Ending::Completed => "completed",
            Ending::Disconnected => "client disconnected",
            Ending::Failed => "failed",
        },
        "protocol": {
            "id": job.protocol.file.study.id,
            "file_hash": job.protocol.file_hash,
        },
        "study": {"id": job.study.study.id, "sha256": job.study.sha256},
        "started_at": job.started,
    });
    if let Kind::Records(form) = &job.kind {
        values["form"] = json!(form);
    }
    let event = match by {
        By::Caller => AuditEvent::new(Some(&job.actor), "export", job.kind.entity(), &job.meta),
        By::System(name) => {
            AuditEvent::new(None, "export", job.kind.entity(), &job.meta).by_system(name)
        }
    };
    audit::record(conn, &event.new_values(values))
}

fn write_body(conn: &mut PgConnection, job: &Job, out: &mut Out) -> Result<(), Stop> {
    match &job.kind {
        Kind::Form(form) => forms::write(conn, job, *form, out),
        Kind::Records(form) => records::write(conn, job, form, out),
        Kind::Odm => odm::write(conn, job, out),
        Kind::Sdtm(domain, table) => sdtm::write(conn, job, domain, *table, out),
        Kind::Define => define::write(job, out),
    }
}

/// Runs an export on the current (blocking) thread, to the end or until the client leaves.
pub fn run(conn: &mut PgConnection, job: Job, sink: Sink) {
    let out = Out {
        sink,
        rows: 0,
        progress: None,
    };
    // the outcome is logged and audited; the client sees it in the transfer itself
    let _ = execute(conn, job, By::Caller, out);
}

/// What an offline export wrote.
#[derive(Debug, Clone)]
pub struct Written {
    pub rows: u64,
    pub bytes: u64,
    pub sha256: String,
}

/// Runs an export for the command line into `sink` (see [`Sink::writer`]), audited as
/// `system:<system>` with no user id: `job.actor` is not used. `progress` gets the rows so
/// far between batches. On an error the export is audited as failed and the caller
/// discards what was written.
pub fn run_offline(
    conn: &mut PgConnection,
    job: Job,
    system: &str,
    sink: Sink,
    progress: Option<Box<dyn Fn(u64)>>,
) -> Result<Written, String> {
    let out = Out {
        sink,
        rows: 0,
        progress,
    };
    execute(conn, job, By::System(system), out)
}

fn execute(
    conn: &mut PgConnection,
    mut job: Job,
    by: By<'_>,
    mut out: Out,
) -> Result<Written, String> {
    let result = conn
        .build_transaction()
        .repeatable_read()
        .run(|conn| -> Result<Ending, Stop> {
            // A batch statement stays open while its rows stream to the client; the stall
            // limit of the sink bounds that, not the API's statement timeout.
            conn.batch_execute("SET LOCAL statement_timeout = 0")?;
            let ending = match write_body(conn, &job, &mut out) {
                Ok(()) => Ending::Completed,
                Err(Stop::Disconnected) => Ending::Disconnected,
                Err(e) => return Err(e),
            };
            audit_export(conn, &job, by, &out, ending)?;
            Ok(ending)
        });
    // the next export may start as soon as this one is committed
    drop(job.slot.take());
    let (bytes, sha256) = out.sink.summary();
    let written = Written {
        rows: out.rows,
        bytes,
        sha256,
    };
    match result {
        Ok(Ending::Completed) => {
            if let Err(e) = out.sink.release() {
                tracing::info!(
                    export = job.kind.entity(),
                    error = %e,
                    "client left before the last chunk"
                );
                return Err(format!("the last chunk was not written: {e}"));
            }
            Ok(written)
        }
        Ok(_) => {
            tracing::info!(
                export = job.kind.entity(),
                rows = out.rows,
                "export stopped: client disconnected"
            );
            Err("stopped: the output went away".into())
        }
        Err(e) => {
            tracing::error!(export = job.kind.entity(), error = %e, "export failed");
            // the transaction rolled back: record the attempt on its own
            if let Err(e) = audit_export(conn, &job, by, &out, Ending::Failed) {
                tracing::error!(error = %e, "could not audit a failed export");
            }
            out.sink.fail("export failed");
            Err(e.to_string())
        }
    }
}
