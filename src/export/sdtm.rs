//! SDTM-style datasets DM, DS, EX, VS and AE, as CSV or SAS XPORT v5.
//!
//! Conventions:
//! - USUBJID is the study id (protocol file), `-`, and the subject code;
//! - rows are sorted by USUBJID, then the domain's date, then entry order; --SEQ numbers
//!   them within each subject;
//! - --DTC are site-local date/times as collected (ISO 8601, no offset); partial AE dates
//!   stay partial;
//! - --DY counts from the site-local date of the first dose given (RFSTDTC), with no day 0;
//!   empty when the date is partial or the subject has no dose;
//! - records marked deleted and subjects marked deleted are never in SDTM.

use std::collections::HashMap;

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, Bool, Date, Double, Nullable, SmallInt, Text, Timestamptz};

use super::subjects::{self, SubjectInfo};
use super::text::{csv_header, full_date, local_dtc, study_day, Csv};
use super::xpt::{Cell, Var, XptWriter};
use super::{stream_rows, Domain, Job, Out, Stop, Table};
use crate::domain::time::local_date;

/// Longest subject code kept in SUBJID/USUBJID: site code (10) + `-` + number.
const SUBJECT_CODE_LEN: u16 = 20;

/// The variables of a domain, in order. STUDYID and USUBJID are as long as the study id
/// needs.
pub fn vars(domain: Domain, study_id: &str) -> Vec<Var> {
    let study_len = u16::try_from(study_id.len().clamp(1, 200)).unwrap_or(200);
    let mut v = vec![
        Var::char("STUDYID", "Study Identifier", study_len),
        Var::char("DOMAIN", "Domain Abbreviation", 2),
        Var::char(
            "USUBJID",
            "Unique Subject Identifier",
            (study_len + 1 + SUBJECT_CODE_LEN).min(200),
        ),
    ];
    let rest: &[Var] = match domain {
        Domain::Dm => &[
            Var::char(
                "SUBJID",
                "Subject Identifier for the Study",
                SUBJECT_CODE_LEN,
            ),
            Var::char("RFSTDTC", "Subject Reference Start Date/Time", 19),
            Var::char("RFENDTC", "Subject Reference End Date/Time", 19),
            Var::char("RFICDTC", "Date/Time of Informed Consent", 10),
            Var::char("SITEID", "Study Site Identifier", 10),
            Var::char("BRTHDTC", "Date/Time of Birth", 7),
            Var::num("AGE", "Age"),
            Var::char("AGEU", "Age Units", 5),
            Var::char("SEX", "Sex", 1),
            Var::char("ARMCD", "Planned Arm Code", 8),
            Var::char("ARM", "Description of Planned Arm", 40),
            Var::char("ACTARMCD", "Actual Arm Code", 8),
            Var::char("ACTARM", "Description of Actual Arm", 40),
            Var::char("COUNTRY", "Country", 3),
        ],
        Domain::Ds => &[
            Var::num("DSSEQ", "Sequence Number"),
            Var::char("DSTERM", "Reported Term for the Disposition Event", 200),
            Var::char("DSDECOD", "Standardized Disposition Term", 40),
            Var::char("DSCAT", "Category for Disposition Event", 40),
            Var::char("DSSCAT", "Subcategory for Disposition Event", 40),
            Var::char("DSSTDTC", "Start Date/Time of Disposition Event", 19),
            Var::num("DSSTDY", "Study Day of Start of Disposition Event"),
        ],
        Domain::Ex => &[
            Var::num("EXSEQ", "Sequence Number"),
            Var::char("EXTRT", "Name of Treatment", 40),
            Var::num("EXDOSE", "Dose"),
            Var::char("EXDOSU", "Dose Units", 8),
            Var::char("EXDOSFRM", "Dose Form", 20),
            Var::char("EXDOSFRQ", "Dosing Frequency per Interval", 8),
            Var::char("EXROUTE", "Route of Administration", 20),
            Var::char("EXLOC", "Location of Dose Administration", 40),
            Var::char("EXLOT", "Lot Number", 50),
            Var::char("EXADJ", "Reason for Dose Adjustment", 200),
            Var::char("EXSTDTC", "Start Date/Time of Treatment", 19),
            Var::char("EXENDTC", "End Date/Time of Treatment", 19),
            Var::num("EXSTDY", "Study Day of Start of Treatment"),
            Var::num("EXENDY", "Study Day of End of Treatment"),
        ],
        Domain::Vs => &[
            Var::num("VSSEQ", "Sequence Number"),
            Var::char("VSTESTCD", "Vital Signs Test Short Name", 8),
            Var::char("VSTEST", "Vital Signs Test Name", 40),
            Var::char("VSORRES", "Result or Finding in Original Units", 20),
            Var::char("VSORRESU", "Original Units", 8),
            Var::char("VSSTRESC", "Character Result/Finding in Std Format", 20),
            Var::num("VSSTRESN", "Numeric Result/Finding in Standard Units"),
            Var::char("VSSTRESU", "Standard Units", 8),
            Var::char("VSLOC", "Location of Vital Signs Measurement", 40),
            Var::char("VSDTC", "Date/Time of Measurements", 19),
            Var::num("VSDY", "Study Day of Vital Signs"),
        ],
        Domain::Ae => &[
            Var::num("AESEQ", "Sequence Number"),
            Var::char("AETERM", "Reported Term for the Adverse Event", 200),
            Var::char("AEDECOD", "Dictionary-Derived Term", 200),
            Var::num("AEPTCD", "Preferred Term Code"),
            Var::char("AESTDTC", "Start Date/Time of Adverse Event", 10),
            Var::char("AEENDTC", "End Date/Time of Adverse Event", 10),
            Var::num("AESTDY", "Study Day of Start of Adverse Event"),
            Var::num("AEENDY", "Study Day of End of Adverse Event"),
            Var::char("AETOXGR", "Standard Toxicity Grade", 1),
            Var::char("AESER", "Serious Event", 1),
            Var::char("AESDTH", "Results in Death", 1),
            Var::char("AESLIFE", "Is Life Threatening", 1),
            Var::char("AESHOSP", "Requires or Prolongs Hospitalization", 1),
            Var::char("AESDISAB", "Persist or Signif Disability/Incapacity", 1),
            Var::char("AESCONG", "Congenital Anomaly or Birth Defect", 1),
            Var::char("AESMIE", "Other Medically Important Serious Event", 1),
            Var::char("AEREL", "Causality", 20),
            Var::char("AEACN", "Action Taken with Study Treatment", 30),
            Var::char("AEOUT", "Outcome of Adverse Event", 40),
        ],
    };
    v.extend_from_slice(rest);
    v
}

pub fn dataset_label(domain: Domain) -> &'static str {
    match domain {
        Domain::Dm => "Demographics",
        Domain::Ds => "Disposition",
        Domain::Ex => "Exposure",
        Domain::Vs => "Vital Signs",
        Domain::Ae => "Adverse Events",
    }
}

/// The dataset label with the protocol, as far as 40 characters allow.
fn label_with_protocol(domain: Domain, job: &Job) -> String {
    let hash = job.protocol.file_hash.get(..8).unwrap_or_default();
    let full = format!(
        "{} {} {}",
        dataset_label(domain),
        job.protocol.file.study.id,
        hash
    );
    if full.len() <= 40 {
        full
    } else {
        dataset_label(domain).to_owned()
    }
}

/// CSV or XPT, one row at a time.
enum Writer {
    Csv,
    Xpt(XptWriter),
}

impl Writer {
    fn row(&mut self, out: &mut Out, cells: &[Cell<'_>]) -> Result<(), Stop> {
        match self {
            Self::Csv => {
                let mut c = Csv::new(&mut out.sink);
                for cell in cells {
                    match cell {
                        Cell::Text(s) => c.text(s)?,
                        Cell::Num(n) => c.num(*n)?,
                    };
                }
                c.end()?;
            }
            Self::Xpt(w) => w.row(&mut out.sink, cells)?,
        }
        out.rows += 1;
        Ok(())
    }
}

pub fn write(
    conn: &mut PgConnection,
    job: &Job,
    domain: Domain,
    table: Table,
    out: &mut Out,
) -> Result<(), Stop> {
    let study = job.protocol.file.study.id.as_str();
    let vars = vars(domain, study);
    let mut w = match table {
        Table::Csv => {
            let names: Vec<&str> = vars.iter().map(|v| v.name).collect();
            csv_header(&mut out.sink, &names)?;
            Writer::Csv
        }
        Table::Xpt => Writer::Xpt(XptWriter::begin(
            &mut out.sink,
            domain.code(),
            &label_with_protocol(domain, job),
            vars,
            job.started,
        )?),
    };
    subjects::for_each_batch(conn, job, out, |conn, batch, out| {
        let by_code: HashMap<&str, &SubjectInfo> =
            batch.iter().map(|s| (s.code.as_str(), s)).collect();
        let ctx = Ctx {
            study,
            by_code: &by_code,
        };
        match domain {
            Domain::Dm => dm(&ctx, batch, &mut w, out),
            Domain::Ds => ds(conn, &ctx, batch, &mut w, out),
            Domain::Ex => ex(conn, &ctx, batch, &mut w, out),
            Domain::Vs => vs(conn, &ctx, batch, &mut w, out),
            Domain::Ae => ae(conn, &ctx, batch, &mut w, out),
        }
    })?;
    if let Writer::Xpt(x) = w {
        x.end(&mut out.sink)?;
    }
    Ok(())
}

struct Ctx<'a> {
    study: &'a str,
    by_code: &'a HashMap<&'a str, &'a SubjectInfo>,
}

impl Ctx<'_> {
    fn usubjid(&self, code: &str) -> String {
        format!("{}-{code}", self.study)
    }
    fn subject(&self, code: &str) -> Result<&SubjectInfo, Stop> {
        self.by_code.get(code).copied().ok_or_else(|| {
            Stop::Io(std::io::Error::other(
                "record of a subject outside the batch",
            ))
        })
    }
}

/// Numbers rows within a subject (rows arrive grouped by subject).
#[derive(Default)]
struct Seq {
    code: String,
    n: i64,
}

impl Seq {
    fn next(&mut self, code: &str) -> f64 {
        if self.code != code {
            self.code = code.to_owned();
            self.n = 0;
        }
        self.n += 1;
        self.n as f64
    }
}

fn day(s: &SubjectInfo, date: NaiveDate) -> Option<f64> {
    s.day1().map(|d1| study_day(d1, date) as f64)
}

fn ts_day(s: &SubjectInfo, t: DateTime<Utc>) -> Option<f64> {
    day(s, local_date(t, s.tz()))
}

/// Whole years from a birth year-month to a date (the birth day taken as the 1st).
fn age_years(birth_year_month: &str, at: NaiveDate) -> Option<f64> {
    let (y, m) = birth_year_month.split_once('-')?;
    let (y, m): (i32, i32) = (y.parse().ok()?, m.parse().ok()?);
    let months = (at.year() - y) * 12 + (at.month() as i32 - m);
    (months >= 0).then_some(f64::from(months / 12))
}

fn dm(ctx: &Ctx<'_>, batch: &[SubjectInfo], w: &mut Writer, out: &mut Out) -> Result<(), Stop> {
    for s in batch {
        let tz = s.tz();
        let rfst = s.first_dose.map(|t| local_dtc(t, tz)).unwrap_or_default();
        let rfen = s.last_dose.map(|t| local_dtc(t, tz)).unwrap_or_default();
        let rfic = s
            .first_consent
            .map(|d| d.format("%Y-%m-%d").to_string())
            .unwrap_or_default();
        let age_at = s.first_consent.or_else(|| s.day1());
        let age = age_at.and_then(|d| age_years(&s.birth_year_month, d));
        let sex = if s.sex == "male" { "M" } else { "F" };
        let (actarmcd, actarm) = if s.first_dose.is_some() {
            ("ANAKINRA", "Anakinra")
        } else {
            ("NOTTRT", "Not Treated")
        };
        w.row(
            out,
            &[
                Cell::Text(ctx.study),
                Cell::Text("DM"),
                Cell::Text(&ctx.usubjid(&s.code)),
                Cell::Text(&s.code),
                Cell::Text(&rfst),
                Cell::Text(&rfen),
                Cell::Text(&rfic),
                Cell::Text(&s.site_code),
                Cell::Text(&s.birth_year_month),
                Cell::Num(age),
                Cell::Text(if age.is_some() { "YEARS" } else { "" }),
                Cell::Text(sex),
                Cell::Text("ANAKINRA"),
                Cell::Text("Anakinra"),
                Cell::Text(actarmcd),
                Cell::Text(actarm),
                // TODO(issue 8): SDTM wants ISO 3166-1 alpha-3; sites store alpha-2.
                Cell::Text(&s.country),
            ],
        )?;
    }
    Ok(())
}

#[derive(Queryable)]
struct DsRow {
    code: String,
    date: NaiveDate,
    term: String,
    decod: String,
    cat: String,
    scat: Option<String>,
}

fn ds(
    conn: &mut PgConnection,
    ctx: &Ctx<'_>,
    batch: &[SubjectInfo],
    w: &mut Writer,
    out: &mut Out,
) -> Result<(), Stop> {
    let ids = subjects::ids(batch);
    let sql = format!(
        "s.subject_code, e.dt, e.term, e.decod, e.cat, e.scat FROM ( \
           SELECT c.subject_id, 1 AS rank, c.signed_on AS dt, \
                  'INFORMED CONSENT OBTAINED (FORM ' || c.form_version || ')' AS term, \
                  'INFORMED CONSENT OBTAINED' AS decod, 'PROTOCOL MILESTONE' AS cat, \
                  NULL::text AS scat, c.id \
             FROM consents c WHERE c.deleted_at IS NULL AND c.subject_id = ANY(ARRAY[{ids}]::int8[]) \
           UNION ALL \
           SELECT c.subject_id, 2, c.withdrawn_on, \
                  coalesce(nullif(c.withdrawal_reason, ''), 'WITHDRAWAL OF CONSENT'), \
                  CASE WHEN c.signer = 'participant' THEN 'WITHDRAWAL BY SUBJECT' \
                       ELSE 'WITHDRAWAL BY PARENT/GUARDIAN' END, \
                  'DISPOSITION EVENT', 'CONSENT WITHDRAWN: ' || upper(coalesce(c.withdrawal_scope, 'all')), c.id \
             FROM consents c WHERE c.deleted_at IS NULL AND c.withdrawn_on IS NOT NULL \
              AND c.subject_id = ANY(ARRAY[{ids}]::int8[]) \
           UNION ALL \
           SELECT s2.id, 3, (max(a.occurred_at) AT TIME ZONE st2.time_zone)::date, \
                  'COMPLETED', 'COMPLETED', 'DISPOSITION EVENT', NULL, s2.id \
             FROM subjects s2 JOIN sites st2 ON st2.id = s2.site_id \
             JOIN audit_log a ON a.entity_table = 'subjects' AND a.record_id = s2.id \
                              AND a.new_values ->> 'status' = 'completed' \
            WHERE s2.status = 'completed' AND s2.id = ANY(ARRAY[{ids}]::int8[]) \
            GROUP BY s2.id, st2.time_zone \
         ) e JOIN subjects s ON s.id = e.subject_id \
         ORDER BY s.subject_code, e.dt, e.rank, e.id"
    );
    let mut seq = Seq::default();
    stream_rows::<(Text, Date, Text, Text, Text, Nullable<Text>), DsRow>(conn, &sql, |r| {
        let s = ctx.subject(&r.code)?;
        let date = r.date.format("%Y-%m-%d").to_string();
        w.row(
            out,
            &[
                Cell::Text(ctx.study),
                Cell::Text("DS"),
                Cell::Text(&ctx.usubjid(&r.code)),
                Cell::Num(Some(seq.next(&r.code))),
                Cell::Text(&r.term),
                Cell::Text(&r.decod),
                Cell::Text(&r.cat),
                Cell::Text(r.scat.as_deref().unwrap_or_default()),
                Cell::Text(&date),
                Cell::Num(day(s, r.date)),
            ],
        )
    })?;
    Ok(())
}

#[derive(Queryable)]
struct ExRow {
    code: String,
    administered_at: DateTime<Utc>,
    dose_mg: f64,
    injection_site: String,
    lot_number: String,
    protocol_deviation: bool,
    deviation_reason: Option<String>,
}

fn ex(
    conn: &mut PgConnection,
    ctx: &Ctx<'_>,
    batch: &[SubjectInfo],
    w: &mut Writer,
    out: &mut Out,
) -> Result<(), Stop> {
    let sql = format!(
        "s.subject_code, x.administered_at, x.dose_mg::float8, x.injection_site, x.lot_number, \
         x.protocol_deviation, x.deviation_reason \
         FROM injections x JOIN subjects s ON s.id = x.subject_id \
         WHERE x.deleted_at IS NULL AND x.given AND x.subject_id = ANY(ARRAY[{}]::int8[]) \
         ORDER BY s.subject_code, x.administered_at, x.id",
        subjects::ids(batch)
    );
    let mut seq = Seq::default();
    stream_rows::<(Text, Timestamptz, Double, Text, Text, Bool, Nullable<Text>), ExRow>(
        conn,
        &sql,
        |r| {
            let s = ctx.subject(&r.code)?;
            let dtc = local_dtc(r.administered_at, s.tz());
            let dy = ts_day(s, r.administered_at);
            let loc = r.injection_site.replace('_', " ").to_ascii_uppercase();
            let adj = if r.protocol_deviation {
                r.deviation_reason
                    .as_deref()
                    .unwrap_or("PROTOCOL DEVIATION")
            } else {
                ""
            };
            w.row(
                out,
                &[
                    Cell::Text(ctx.study),
                    Cell::Text("EX"),
                    Cell::Text(&ctx.usubjid(&r.code)),
                    Cell::Num(Some(seq.next(&r.code))),
                    Cell::Text("ANAKINRA"),
                    Cell::Num(Some(r.dose_mg)),
                    Cell::Text("mg"),
                    Cell::Text("INJECTION"),
                    Cell::Text("QD"),
                    Cell::Text("SUBCUTANEOUS"),
                    Cell::Text(&loc),
                    Cell::Text(&r.lot_number),
                    Cell::Text(adj),
                    Cell::Text(&dtc),
                    Cell::Text(&dtc),
                    Cell::Num(dy),
                    Cell::Num(dy),
                ],
            )
        },
    )?;
    Ok(())
}

/// VSLOC from the protocol's temperature method.
pub fn vs_location(method: &str) -> String {
    match method {
        "rectal" => "RECTUM".into(),
        "axillary" => "AXILLA".into(),
        "oral" => "ORAL CAVITY".into(),
        "tympanic" => "TYMPANIC MEMBRANE".into(),
        "temporal" => "TEMPORAL ARTERY".into(),
        other => other.replace('_', " ").to_ascii_uppercase(),
    }
}

#[derive(Queryable)]
struct VsRow {
    code: String,
    measured_at: DateTime<Utc>,
    celsius: String,
    method: String,
}

fn vs(
    conn: &mut PgConnection,
    ctx: &Ctx<'_>,
    batch: &[SubjectInfo],
    w: &mut Writer,
    out: &mut Out,
) -> Result<(), Stop> {
    let sql = format!(
        "s.subject_code, x.measured_at, x.celsius::text, x.method \
         FROM temperatures x JOIN subjects s ON s.id = x.subject_id \
         WHERE x.deleted_at IS NULL AND x.subject_id = ANY(ARRAY[{}]::int8[]) \
         ORDER BY s.subject_code, x.measured_at, x.id",
        subjects::ids(batch)
    );
    let mut seq = Seq::default();
    stream_rows::<(Text, Timestamptz, Text, Text), VsRow>(conn, &sql, |r| {
        let s = ctx.subject(&r.code)?;
        let dtc = local_dtc(r.measured_at, s.tz());
        let value = r.celsius.parse::<f64>().ok();
        let loc = vs_location(&r.method);
        w.row(
            out,
            &[
                Cell::Text(ctx.study),
                Cell::Text("VS"),
                Cell::Text(&ctx.usubjid(&r.code)),
                Cell::Num(Some(seq.next(&r.code))),
                Cell::Text("TEMP"),
                Cell::Text("Temperature"),
                Cell::Text(&r.celsius),
                Cell::Text("C"),
                Cell::Text(&r.celsius),
                Cell::Num(value),
                Cell::Text("C"),
                Cell::Text(&loc),
                Cell::Text(&dtc),
                Cell::Num(ts_day(s, r.measured_at)),
            ],
        )
    })?;
    Ok(())
}

#[derive(Queryable)]
struct AeRow {
    code: String,
    term: String,
    meddra_code: Option<String>,
    meddra_term: Option<String>,
    onset_date: String,
    end_date: Option<String>,
    grade: i16,
    serious: bool,
    criteria: Vec<String>,
    relationship: String,
    action_taken: String,
    outcome: String,
}

pub fn ae_rel(v: &str) -> &str {
    match v {
        "not_related" => "NOT RELATED",
        "unlikely" => "UNLIKELY RELATED",
        "possible" => "POSSIBLY RELATED",
        "probable" => "PROBABLY RELATED",
        "definite" => "RELATED",
        other => other,
    }
}

pub fn ae_acn(v: &str) -> &str {
    match v {
        "none" => "DOSE NOT CHANGED",
        "dose_reduced" => "DOSE REDUCED",
        "interrupted" => "DRUG INTERRUPTED",
        "withdrawn" => "DRUG WITHDRAWN",
        "not_applicable" => "NOT APPLICABLE",
        other => other,
    }
}

pub fn ae_out(v: &str) -> &str {
    match v {
        "recovered" => "RECOVERED/RESOLVED",
        "recovering" => "RECOVERING/RESOLVING",
        "not_recovered" => "NOT RECOVERED/NOT RESOLVED",
        "recovered_with_sequelae" => "RECOVERED/RESOLVED WITH SEQUELAE",
        "fatal" => "FATAL",
        "unknown" => "UNKNOWN",
        other => other,
    }
}

/// Seriousness criteria, in the order of the AES* flags.
const CRITERIA: [&str; 6] = [
    "death",
    "life_threatening",
    "hospitalisation",
    "disability",
    "congenital_anomaly",
    "other_medically_important",
];

fn ae(
    conn: &mut PgConnection,
    ctx: &Ctx<'_>,
    batch: &[SubjectInfo],
    w: &mut Writer,
    out: &mut Out,
) -> Result<(), Stop> {
    let sql = format!(
        "s.subject_code, x.term, x.meddra_code, x.meddra_term, x.onset_date, x.end_date, \
         x.grade, x.serious, x.seriousness_criteria, x.relationship, x.action_taken, x.outcome \
         FROM adverse_events x JOIN subjects s ON s.id = x.subject_id \
         WHERE x.deleted_at IS NULL AND x.subject_id = ANY(ARRAY[{}]::int8[]) \
         ORDER BY s.subject_code, x.onset_date, x.id",
        subjects::ids(batch)
    );
    let mut seq = Seq::default();
    stream_rows::<
        (
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
        ),
        AeRow,
    >(conn, &sql, |r| {
        let s = ctx.subject(&r.code)?;
        let grade = r.grade.to_string();
        let yn = |b: bool| if b { "Y" } else { "N" };
        let flags: Vec<&str> = CRITERIA
            .iter()
            .map(|c| yn(r.criteria.iter().any(|x| x == c)))
            .collect();
        let end = r.end_date.as_deref().unwrap_or_default();
        w.row(
            out,
            &[
                Cell::Text(ctx.study),
                Cell::Text("AE"),
                Cell::Text(&ctx.usubjid(&r.code)),
                Cell::Num(Some(seq.next(&r.code))),
                Cell::Text(&r.term),
                Cell::Text(r.meddra_term.as_deref().unwrap_or_default()),
                Cell::Num(r.meddra_code.as_deref().and_then(|c| c.parse::<f64>().ok())),
                Cell::Text(&r.onset_date),
                Cell::Text(end),
                Cell::Num(full_date(&r.onset_date).and_then(|d| day(s, d))),
                Cell::Num(full_date(end).and_then(|d| day(s, d))),
                Cell::Text(&grade),
                Cell::Text(yn(r.serious)),
                Cell::Text(flags[0]),
                Cell::Text(flags[1]),
                Cell::Text(flags[2]),
                Cell::Text(flags[3]),
                Cell::Text(flags[4]),
                Cell::Text(flags[5]),
                Cell::Text(ae_rel(&r.relationship)),
                Cell::Text(ae_acn(&r.action_taken)),
                Cell::Text(ae_out(&r.outcome)),
            ],
        )
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_labels_fit_xport_v5() {
        for d in [Domain::Dm, Domain::Ds, Domain::Ex, Domain::Vs, Domain::Ae] {
            for v in vars(d, "KD-ANAKINRA") {
                assert!(v.name.len() <= 8, "{}", v.name);
                assert!(v.label.len() <= 40, "{}", v.label);
                assert_eq!(v.name, v.name.to_ascii_uppercase());
            }
        }
    }

    #[test]
    fn age_in_whole_years() {
        let d = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap_or_default();
        assert_eq!(age_years("2023-04", d("2026-10-01")), Some(3.0));
        assert_eq!(age_years("2023-11", d("2026-10-01")), Some(2.0));
        assert_eq!(age_years("2027-01", d("2026-10-01")), None);
    }
}
