//! Subjects in batches, in subject-code order, with what the SDTM and ODM exports derive
//! from them (reference dates, completion). A batch is small and bounded; the records of a
//! batch stream from their own queries.

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;
use diesel::dsl::sql;
use diesel::pg::PgRowByRowLoadingMode;
use diesel::prelude::*;
use diesel::sql_types::{Date, Nullable, Text, Timestamptz};
use serde_json::Value;

use super::records::literal;
use super::text::local_dtc;
use crate::domain::study::sdtm as plan;
use crate::domain::time::parse_zone;
use crate::schema::{sites, subjects as s};

use super::{Job, Out, Stop};

/// Subjects per batch.
pub const SUBJECT_BATCH: i64 = 200;

#[derive(Debug, Clone)]
pub struct SubjectInfo {
    pub id: i64,
    pub code: String,
    pub site_id: i64,
    pub site_code: String,
    pub country: String,
    pub time_zone: String,
    pub status: String,
    pub sex: String,
    pub birth_year_month: String,
    pub weight_kg: String,
    pub eligibility: Value,
    pub version: i32,
    pub created_at: DateTime<Utc>,
    pub created_by: i64,
    pub updated_at: DateTime<Utc>,
    pub updated_by: i64,
    /// first informed consent signed
    pub first_consent: Option<NaiveDate>,
    /// first and last dose given (not marked deleted)
    pub first_dose: Option<DateTime<Utc>>,
    pub last_dose: Option<DateTime<Utc>>,
    /// first start and last end (or start) of the live records of the study definition's
    /// forms mapped to EX, as stored (ISO 8601 text: a date, or a datetime in UTC)
    pub exposure_first: Option<String>,
    pub exposure_last: Option<String>,
    /// when the status last became `completed` (audit trail)
    pub completed_at: Option<DateTime<Utc>>,
}

impl SubjectInfo {
    pub fn tz(&self) -> Tz {
        parse_zone(&self.time_zone).unwrap_or(Tz::UTC)
    }

    /// A stored date or UTC datetime as SDTM --DTC text (site-local, no offset).
    fn local(&self, stored: &str) -> String {
        DateTime::parse_from_rfc3339(stored)
            .map(|t| local_dtc(t.with_timezone(&Utc), self.tz()))
            .unwrap_or_else(|_| stored.to_owned())
    }

    /// RFSTDTC: the first exposure, from the injections given or the definition's other EX
    /// forms.
    pub fn rfstdtc(&self) -> Option<String> {
        let dose = self.first_dose.map(|t| local_dtc(t, self.tz()));
        let form = self.exposure_first.as_deref().map(|v| self.local(v));
        match (dose, form) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// RFENDTC: the last exposure, as [`Self::rfstdtc`].
    pub fn rfendtc(&self) -> Option<String> {
        let dose = self.last_dose.map(|t| local_dtc(t, self.tz()));
        let form = self.exposure_last.as_deref().map(|v| self.local(v));
        match (dose, form) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }

    /// The SDTM reference start: the site-local date of the first exposure.
    pub fn day1(&self) -> Option<NaiveDate> {
        self.rfstdtc()
            .and_then(|d| NaiveDate::parse_from_str(d.get(..10)?, "%Y-%m-%d").ok())
    }
}

/// `(SELECT min|max(...))` over the stored start (or end) of the subject's live records of
/// the definition's EX forms; NULL when it has none.
fn exposure_sql(job: &Job, last: bool) -> String {
    let Some(plan) = plan::plan(&job.study, "EX") else {
        return "NULL::text".into();
    };
    let parts: Vec<String> = plan
        .sources
        .iter()
        .map(|src| {
            let start = src
                .item_for("EXSTDTC")
                .map_or(src.form.dated_by.as_str(), |i| i.id.as_str());
            let value = match src.item_for("EXENDTC").filter(|_| last) {
                Some(end) => format!(
                    "coalesce(x.values->>{}, x.values->>{})",
                    literal(&end.id),
                    literal(start)
                ),
                None => format!("x.values->>{}", literal(start)),
            };
            // the records SDTM leaves out (an injection not given) are no exposure
            let when = src.when().map_or(String::new(), |w| {
                format!(" AND (x.values->{}) = 'true'::jsonb", literal(w))
            });
            format!(
                "SELECT {value} AS v FROM form_records x \
                 JOIN study_versions sv ON sv.id = x.study_version_id \
                 WHERE x.subject_id = subjects.id AND x.deleted_at IS NULL \
                   AND sv.study_id = {study} AND x.form_id = {form}{when}",
                study = literal(&job.study.study.id),
                form = literal(&src.form.id),
            )
        })
        .collect();
    format!(
        "(SELECT {}(t.v) FROM ({}) t)",
        if last { "max" } else { "min" },
        parts.join(" UNION ALL ")
    )
}

fn load_batch(conn: &mut PgConnection, job: &Job, after: &str) -> QueryResult<Vec<SubjectInfo>> {
    let mut q = s::table
        .inner_join(sites::table)
        .select((
            (
                s::id,
                s::subject_code,
                s::site_id,
                sites::code,
                sites::country,
                sites::time_zone,
                s::status,
                s::sex,
                s::birth_year_month,
                sql::<Text>("subjects.weight_kg::text"),
                s::eligibility,
                s::version,
                s::created_at,
                s::created_by,
                s::updated_at,
                s::updated_by,
            ),
            (
                sql::<Nullable<Date>>(
                    "(SELECT min(c.signed_on) FROM consents c \
                      WHERE c.subject_id = subjects.id AND c.deleted_at IS NULL)",
                ),
                sql::<Nullable<Timestamptz>>(
                    "(SELECT min((i.\"values\" ->> 'administered_at')::timestamptz) \
                      FROM form_records i \
                      WHERE i.subject_id = subjects.id AND i.form_id = 'injection' \
                        AND i.deleted_at IS NULL AND (i.\"values\" ->> 'given')::boolean)",
                ),
                sql::<Nullable<Timestamptz>>(
                    "(SELECT max((i.\"values\" ->> 'administered_at')::timestamptz) \
                      FROM form_records i \
                      WHERE i.subject_id = subjects.id AND i.form_id = 'injection' \
                        AND i.deleted_at IS NULL AND (i.\"values\" ->> 'given')::boolean)",
                ),
                sql::<Nullable<Timestamptz>>(
                    "(SELECT max(a.occurred_at) FROM audit_log a \
                      WHERE a.entity_table = 'subjects' AND a.record_id = subjects.id \
                        AND a.new_values ->> 'status' = 'completed')",
                ),
                sql::<Nullable<Text>>(&exposure_sql(job, false)),
                sql::<Nullable<Text>>(&exposure_sql(job, true)),
            ),
        ))
        .filter(s::deleted_at.is_null())
        .filter(s::subject_code.gt(after.to_owned()))
        .into_boxed();
    if let Some(ids) = job.scope.site_ids() {
        q = q.filter(s::site_id.eq_any(ids.to_vec()));
    }
    if let Some(id) = job.filters.site_id {
        q = q.filter(s::site_id.eq(id));
    }
    let rows = q
        .order(s::subject_code)
        .limit(SUBJECT_BATCH)
        .load_iter::<(SubjectHead, SubjectDerived), PgRowByRowLoadingMode>(conn)?;
    rows.map(|r| r.map(|(h, d)| h.with(d))).collect()
}

#[derive(Debug, Queryable)]
struct SubjectHead {
    id: i64,
    code: String,
    site_id: i64,
    site_code: String,
    country: String,
    time_zone: String,
    status: String,
    sex: String,
    birth_year_month: String,
    weight_kg: String,
    eligibility: Value,
    version: i32,
    created_at: DateTime<Utc>,
    created_by: i64,
    updated_at: DateTime<Utc>,
    updated_by: i64,
}

#[derive(Debug, Queryable)]
struct SubjectDerived {
    first_consent: Option<NaiveDate>,
    first_dose: Option<DateTime<Utc>>,
    last_dose: Option<DateTime<Utc>>,
    completed_at: Option<DateTime<Utc>>,
    exposure_first: Option<String>,
    exposure_last: Option<String>,
}

impl SubjectHead {
    fn with(self, d: SubjectDerived) -> SubjectInfo {
        SubjectInfo {
            id: self.id,
            code: self.code,
            site_id: self.site_id,
            site_code: self.site_code,
            country: self.country,
            time_zone: self.time_zone,
            status: self.status,
            sex: self.sex,
            birth_year_month: self.birth_year_month,
            weight_kg: self.weight_kg,
            eligibility: self.eligibility,
            version: self.version,
            created_at: self.created_at,
            created_by: self.created_by,
            updated_at: self.updated_at,
            updated_by: self.updated_by,
            first_consent: d.first_consent,
            first_dose: d.first_dose,
            last_dose: d.last_dose,
            completed_at: d.completed_at,
            exposure_first: d.exposure_first,
            exposure_last: d.exposure_last,
        }
    }
}

/// Calls `f` with each batch of subjects in the export's scope and site filter, in
/// subject-code order (marked-deleted subjects are never exported).
pub fn for_each_batch(
    conn: &mut PgConnection,
    job: &Job,
    out: &mut Out,
    mut f: impl FnMut(&mut PgConnection, &[SubjectInfo], &mut Out) -> Result<(), Stop>,
) -> Result<(), Stop> {
    let mut after = String::new();
    loop {
        out.check()?;
        let batch = load_batch(conn, job, &after)?;
        if batch.is_empty() {
            return Ok(());
        }
        f(conn, &batch, out)?;
        if (batch.len() as i64) < SUBJECT_BATCH {
            return Ok(());
        }
        after = batch.last().map(|s| s.code.clone()).unwrap_or_default();
    }
}

/// `ARRAY[ids]` of a batch, for `= ANY(...)`.
pub fn ids(batch: &[SubjectInfo]) -> String {
    super::id_list(&batch.iter().map(|s| s.id).collect::<Vec<_>>())
}
