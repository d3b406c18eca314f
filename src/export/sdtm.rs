//! SDTM-style datasets: DM and DS from the subjects and their consents, and every domain the
//! study definition maps a form to (EX, VS and AE included: one way to build a dataset), as
//! CSV, SAS XPORT v5 or Dataset-JSON v1.1 (`dataset_json`).
//!
//! Conventions:
//! - USUBJID is the study id (protocol file), `-`, and the subject code;
//! - rows are sorted by USUBJID, then the domain's date, then entry order; --SEQ numbers
//!   them within each subject;
//! - --DTC are site-local date/times as collected (ISO 8601, no offset); partial dates stay
//!   partial;
//! - --DY counts from the site-local date of the first exposure (RFSTDTC: the records of the
//!   forms mapped to EX that SDTM carries), with no day 0; empty when the date is partial or
//!   the subject has no exposure;
//! - records marked deleted and subjects marked deleted are never in SDTM.
//!
//! Form records (`crate::domain::study::sdtm` says which items become which rows and which
//! records are left out): a findings form gives one row per item value (--TESTCD, --TEST,
//! --CAT, --ORRES as stored, so decimals keep their digits, --ORRESU, --STRESC, --STRESN for
//! numbers, --STRESU; no conversion: standard units are the units collected), an events or
//! interventions form one row per record (the form's `sdtm.values`, coded values as their
//! code lists' submission values, Y/N flags from the codes a `choices` item holds); VISITNUM
//! (the visit's place in the definition), VISIT and VISITDY (its planned day) when the
//! record has a visit. Variables no row can fill (--CAT without a category, the visit ones
//! without a form entered per visit) are left out. Form rows join the consents' in DS,
//! whose variables then gain the forms' ones.

use std::collections::HashMap;

use chrono::{Datelike, NaiveDate};
use diesel::prelude::*;
use diesel::sql_types::{Date, Nullable, Text};

use super::dataset_json::JsonRows;
use super::subjects::{self, SubjectInfo};
use super::text::{csv_header, study_day, Csv};
use super::xpt::XptWriter;
use super::xpt::{Cell, Var, VarType};
use super::{stream_rows, Domain, Job, Out, Stop, Table};
use crate::domain::study::sdtm as plan;
use crate::domain::study::Definition;

mod records;

use records::{char_len, form_rows, plan_vars, value_len, FormRow, Val};

/// Longest subject code kept in SUBJID/USUBJID: site code (10) + `-` + number.
const SUBJECT_CODE_LEN: u16 = 20;

/// The datasets of the subjects and their consents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Legacy {
    Dm,
    Ds,
}

const LEGACY: [(&str, Legacy); 2] = [("DM", Legacy::Dm), ("DS", Legacy::Ds)];

fn legacy(code: &str) -> Option<Legacy> {
    LEGACY.iter().find(|(c, _)| *c == code).map(|(_, l)| *l)
}

/// The datasets the study exports: DM and DS, then each domain its definition maps a form
/// to, then their `SUPP--` datasets.
pub fn domains(def: &Definition) -> Vec<Domain> {
    let mut codes: Vec<String> = LEGACY.iter().map(|(c, _)| (*c).to_owned()).collect();
    let plans = plan::plans(def);
    for p in &plans {
        if !codes.contains(&p.domain) {
            codes.push(p.domain.clone());
        }
    }
    codes.extend(
        plans
            .iter()
            .filter(|p| p.has_supp())
            .map(|p| format!("SUPP{}", p.domain)),
    );
    codes.iter().filter_map(|c| Domain::parse(c)).collect()
}

/// Whether the study exports `domain`.
pub fn exports(def: &Definition, domain: &Domain) -> bool {
    domains(def).contains(domain)
}

/// The variables of a dataset, in order. STUDYID and USUBJID are as long as the study id
/// needs.
pub fn vars(domain: &Domain, study_id: &str, def: &Definition) -> Vec<Var> {
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
    if let Some(parent) = domain.supp_of() {
        v[1] = Var::char("RDOMAIN", "Related Domain Abbreviation", 2);
        let qval = plan::plan(def, parent)
            .iter()
            .flat_map(|p| p.sources.iter().flat_map(|s| s.supp.iter()))
            .map(|t| value_len(t.item, def))
            .max()
            .unwrap_or(1);
        v.extend([
            Var::char("IDVAR", "Identifying Variable", 8),
            Var::char("IDVARVAL", "Identifying Variable Value", 20),
            Var::char("QNAM", "Qualifier Variable Name", 8),
            Var::char("QLABEL", "Qualifier Variable Label", 40),
            Var::char("QVAL", "Data Value", char_len(qval)),
            Var::char("QORIG", "Origin", 8),
            Var::char("QEVAL", "Evaluator", 1),
        ]);
        return v;
    }
    let plan = plan::plan(def, domain.code());
    let rest = match (legacy(domain.code()), &plan) {
        (Some(l), None) => legacy_vars(l),
        (None, Some(p)) => plan_vars(p, def),
        (Some(l), Some(p)) => merge(legacy_vars(l), plan_vars(p, def)),
        (None, None) => Vec::new(),
    };
    v.extend(rest);
    v
}

/// `extra`'s variables that `base` lacks, each placed before the next of its successors
/// in `extra` that `base` has (timing variables stay last), or at the end.
fn merge(mut base: Vec<Var>, extra: Vec<Var>) -> Vec<Var> {
    for (i, var) in extra.iter().enumerate().rev() {
        if let Some(have) = base.iter_mut().find(|b| b.name == var.name) {
            if let (VarType::Char(a), VarType::Char(b)) = (have.kind, var.kind) {
                have.kind = VarType::Char(a.max(b));
            }
            continue;
        }
        let at = extra[i + 1..]
            .iter()
            .find_map(|next| base.iter().position(|b| b.name == next.name))
            .unwrap_or(base.len());
        base.insert(at, var.clone());
    }
    base
}

fn legacy_vars(l: Legacy) -> Vec<Var> {
    let rest: &[Var] = match l {
        Legacy::Dm => &[
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
        Legacy::Ds => &[
            Var::num("DSSEQ", "Sequence Number"),
            Var::char("DSTERM", "Reported Term for the Disposition Event", 200),
            Var::char("DSDECOD", "Standardized Disposition Term", 40),
            Var::char("DSCAT", "Category for Disposition Event", 40),
            Var::char("DSSCAT", "Subcategory for Disposition Event", 40),
            Var::char("DSSTDTC", "Start Date/Time of Disposition Event", 19),
            Var::num("DSSTDY", "Study Day of Start of Disposition Event"),
        ],
    };
    rest.to_vec()
}

/// The SDTM IG's name of a dataset.
pub fn dataset_label(code: &str) -> String {
    match code.strip_prefix("SUPP") {
        Some(parent) => format!("Supplemental Qualifiers for {parent}"),
        None => ig_label(code).to_owned(),
    }
}

fn ig_label(code: &str) -> &'static str {
    match code {
        "DM" => "Demographics",
        "DS" => "Disposition",
        "EX" => "Exposure",
        "EC" => "Exposure as Collected",
        "CM" => "Concomitant/Prior Medications",
        "PR" => "Procedures",
        "SU" => "Substance Use",
        "VS" => "Vital Signs",
        "AE" => "Adverse Events",
        "CE" => "Clinical Events",
        "MH" => "Medical History",
        "DV" => "Protocol Deviations",
        "HO" => "Healthcare Encounters",
        "LB" => "Laboratory Test Results",
        "QS" => "Questionnaires",
        "CV" => "Cardiovascular System Findings",
        "FA" => "Findings About Events or Interventions",
        "EG" => "ECG Test Results",
        "PE" => "Physical Examination",
        "MO" => "Morphology",
        "RS" => "Disease Response and Clin Classification",
        "IS" => "Immunogenicity Specimen Assessments",
        _ => "Findings",
    }
}

/// The dataset label with the protocol, as far as 40 characters allow.
fn label_with_protocol(code: &str, job: &Job) -> String {
    let hash = job.protocol.file_hash.get(..8).unwrap_or_default();
    let full = format!("{} {} {}", dataset_label(code), job.study.study.id, hash);
    if full.len() <= 40 {
        full
    } else {
        dataset_label(code)
    }
}

/// CSV, XPT or Dataset-JSON, one row at a time.
enum Writer {
    Csv,
    Xpt(XptWriter),
    Json(JsonRows),
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
            Self::Json(rows) => rows.row(cells)?,
        }
        out.rows += 1;
        Ok(())
    }
}

pub fn write(
    conn: &mut PgConnection,
    job: &Job,
    domain: &Domain,
    table: Table,
    out: &mut Out,
) -> Result<(), Stop> {
    // STUDYID is the running definition's study: with `study` on MKD, MKD's id
    let study = job.study.study.id.as_str();
    let vars = vars(domain, study, &job.study);
    // a SUPP-- dataset replays its parent's rows to number them as the parent does
    let supp = domain.supp_of();
    let code = supp.unwrap_or(domain.code());
    let plan = plan::plan(&job.study, code);
    let legacy = legacy(code);
    // where each of today's variables sits once the definition's forms add theirs
    let places: Option<Vec<usize>> = match (legacy, &plan) {
        (Some(l), Some(_)) if supp.is_none() => Some(
            ["STUDYID", "DOMAIN", "USUBJID"]
                .into_iter()
                .chain(legacy_vars(l).iter().map(|v| v.name.as_ref()))
                .map(|name| vars.iter().position(|m| m.name == name).unwrap_or(0))
                .collect(),
        ),
        _ => None,
    };
    let w = match table {
        Table::Csv => {
            let names: Vec<&str> = vars.iter().map(|v| v.name.as_ref()).collect();
            csv_header(&mut out.sink, &names)?;
            Writer::Csv
        }
        Table::Xpt => Writer::Xpt(XptWriter::begin(
            &mut out.sink,
            domain.code(),
            &label_with_protocol(domain.code(), job),
            vars.clone(),
            job.started,
        )?),
        Table::Json => Writer::Json(JsonRows::default()),
    };
    let mut rows = Rows {
        w,
        vars: &vars,
        places,
        pending: Vec::new().into_iter().peekable(),
        seq: Seq::default(),
        supp: supp.map(|parent| (study, parent)),
    };
    subjects::for_each_batch(conn, job, out, |conn, batch, out| {
        let by_code: HashMap<&str, &SubjectInfo> =
            batch.iter().map(|s| (s.code.as_str(), s)).collect();
        let ctx = Ctx {
            study,
            code,
            def: &job.study,
            by_code: &by_code,
        };
        if let Some(p) = &plan {
            rows.pending = form_rows(conn, &ctx, p, batch, &vars)?
                .into_iter()
                .peekable();
        }
        match legacy {
            Some(Legacy::Dm) => dm(&ctx, batch, &mut rows, out)?,
            Some(Legacy::Ds) => ds(conn, &ctx, batch, &mut rows, out)?,
            None => {}
        }
        rows.flush(out, None)
    })?;
    match rows.w {
        Writer::Xpt(x) => x.end(&mut out.sink)?,
        Writer::Json(j) => j.finish(&mut out.sink, job, domain.code(), &vars)?,
        Writer::Csv => {}
    }
    Ok(())
}

struct Ctx<'a> {
    study: &'a str,
    /// the domain code
    code: &'a str,
    def: &'a Definition,
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

/// Writes the rows of a batch in order: today's rows as their queries stream them, the
/// form records' rows (loaded per batch, sorted) slotted in by subject and date. --SEQ
/// (the fourth variable of every dataset but DM) is numbered here.
struct Rows<'a> {
    w: Writer,
    vars: &'a [Var],
    /// today's variables' places among `vars`, when the definition adds variables
    places: Option<Vec<usize>>,
    pending: std::iter::Peekable<std::vec::IntoIter<FormRow>>,
    seq: Seq,
    /// writing the `SUPP--` dataset of this parent (with the study id): the parent's rows
    /// are numbered, not written
    supp: Option<(&'a str, &'a str)>,
}

impl Rows<'_> {
    /// Writes the pending rows that come before `(code, key)` (all of them for `None`).
    fn flush(&mut self, out: &mut Out, before: Option<(&str, &str)>) -> Result<(), Stop> {
        while let Some(r) = self.pending.peek() {
            if let Some(b) = before {
                if (r.code.as_str(), r.key.as_str()) >= b {
                    break;
                }
            }
            let Some(r) = self.pending.next() else { break };
            let seq = self.seq.next(&r.code);
            if let Some((study, parent)) = self.supp {
                let usubjid = format!("{study}-{}", r.code);
                let (idvar, idvarval) = (format!("{parent}SEQ"), seq.to_string());
                for [qnam, qlabel, qval, qorig] in &r.supp {
                    self.w.row(
                        out,
                        &[
                            Cell::Text(study),
                            Cell::Text(parent),
                            Cell::Text(&usubjid),
                            Cell::Text(&idvar),
                            Cell::Text(&idvarval),
                            Cell::Text(qnam),
                            Cell::Text(qlabel),
                            Cell::Text(qval),
                            Cell::Text(qorig),
                            Cell::Text(""),
                        ],
                    )?;
                }
                continue;
            }
            let mut cells: Vec<Cell<'_>> = r
                .cells
                .iter()
                .map(|v| match v {
                    Val::Text(s) => Cell::Text(s),
                    Val::Num(n) => Cell::Num(*n),
                })
                .collect();
            if let Some(c) = cells.get_mut(3) {
                *c = Cell::Num(Some(seq));
            }
            self.w.row(out, &cells)?;
        }
        Ok(())
    }

    /// A row of today's tables, dated `key`; its --SEQ cell is set here.
    fn legacy(
        &mut self,
        out: &mut Out,
        code: &str,
        key: &str,
        cells: &mut [Cell<'_>],
    ) -> Result<(), Stop> {
        self.flush(out, Some((code, key)))?;
        let seq = self.seq.next(code);
        if self.supp.is_some() {
            return Ok(());
        }
        if let Some(c) = cells.get_mut(3) {
            *c = Cell::Num(Some(seq));
        }
        self.plain(out, cells)
    }

    /// A row of today's tables as it is (DM: no --SEQ, no forms).
    fn plain(&mut self, out: &mut Out, cells: &[Cell<'_>]) -> Result<(), Stop> {
        match &self.places {
            None => self.w.row(out, cells),
            Some(places) => {
                let mut all: Vec<Cell<'_>> = self.vars.iter().map(empty).collect();
                for (c, at) in cells.iter().zip(places) {
                    all[*at] = *c;
                }
                self.w.row(out, &all)
            }
        }
    }
}

fn empty(v: &Var) -> Cell<'static> {
    match v.kind {
        VarType::Num => Cell::Num(None),
        VarType::Char(_) => Cell::Text(""),
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

/// Whole years from a birth year-month to a date (the birth day taken as the 1st).
fn age_years(birth_year_month: &str, at: NaiveDate) -> Option<f64> {
    let (y, m) = birth_year_month.split_once('-')?;
    let (y, m): (i32, i32) = (y.parse().ok()?, m.parse().ok()?);
    let months = (at.year() - y) * 12 + (at.month() as i32 - m);
    (months >= 0).then_some(f64::from(months / 12))
}

fn dm(
    ctx: &Ctx<'_>,
    batch: &[SubjectInfo],
    rows: &mut Rows<'_>,
    out: &mut Out,
) -> Result<(), Stop> {
    for s in batch {
        let rfst = s.rfstdtc().unwrap_or_default();
        let rfen = s.rfendtc().unwrap_or_default();
        let rfic = s
            .first_consent
            .map(|d| d.format("%Y-%m-%d").to_string())
            .unwrap_or_default();
        let age_at = s.first_consent.or_else(|| s.day1());
        let age = age_at.and_then(|d| age_years(&s.birth_year_month, d));
        let sex = if s.sex == "male" { "M" } else { "F" };
        let (actarmcd, actarm) = if !rfst.is_empty() {
            ("ANAKINRA", "Anakinra")
        } else {
            ("NOTTRT", "Not Treated")
        };
        rows.plain(
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
    rows: &mut Rows<'_>,
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
    stream_rows::<(Text, Date, Text, Text, Text, Nullable<Text>), DsRow>(conn, &sql, |r| {
        let s = ctx.subject(&r.code)?;
        let date = r.date.format("%Y-%m-%d").to_string();
        rows.legacy(
            out,
            &r.code,
            &date,
            &mut [
                Cell::Text(ctx.study),
                Cell::Text("DS"),
                Cell::Text(&ctx.usubjid(&r.code)),
                Cell::Num(None),
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

#[cfg(test)]
mod tests {
    use super::*;

    const STUDIES: [(&str, &str); 5] = [
        (
            "kawasaki",
            include_str!("../../config/studies/kawasaki.toml"),
        ),
        ("thera", include_str!("../../config/studies/thera.toml")),
        ("mkd", include_str!("../../config/studies/mkd.toml")),
        ("nlrp12", include_str!("../../config/studies/nlrp12.toml")),
        (
            "ssc",
            include_str!("../../config/studies/ssc-calcinosis.toml"),
        ),
    ];

    fn study(i: usize) -> Definition {
        let (name, text) = STUDIES[i];
        crate::domain::study::parse(name, text).unwrap_or_else(|e| panic!("{name}: {e:?}"))
    }

    #[test]
    fn names_and_labels_of_every_study_fit_xport_v5() {
        for i in 0..STUDIES.len() {
            let def = study(i);
            for d in domains(&def) {
                let vars = vars(&d, "KD-ANAKINRA", &def);
                for (n, v) in vars.iter().enumerate() {
                    assert!(v.name.len() <= 8, "{}", v.name);
                    assert!(v.label.len() <= 40, "{}", v.label);
                    assert!(!v.label.is_empty(), "{}", v.name);
                    assert_eq!(v.name, v.name.to_ascii_uppercase());
                    assert!(
                        vars[..n].iter().all(|w| w.name != v.name),
                        "{} twice in {}",
                        v.name,
                        d.code()
                    );
                }
                if d.code() != "DM" && d.supp_of().is_none() {
                    assert!(
                        vars[3].name.ends_with("SEQ"),
                        "{}: --SEQ is fourth",
                        d.code()
                    );
                }
            }
        }
    }

    #[test]
    fn each_study_exports_the_domains_its_forms_name() {
        let codes = |i| -> Vec<String> {
            domains(&study(i))
                .iter()
                .map(|d| d.code().to_owned())
                .collect()
        };
        assert_eq!(codes(0), ["DM", "DS", "EX", "VS", "AE", "CV", "FA"]);
        assert_eq!(codes(1), ["DM", "DS", "EX", "VS", "AE", "QS", "LB"]);
        assert_eq!(
            codes(2),
            ["DM", "DS", "EX", "CE", "LB", "AE", "SUPPEX", "SUPPDS", "SUPPCE"]
        );
    }

    fn names(code: &str, i: usize) -> Vec<String> {
        let d = Domain::parse(code).unwrap_or_else(|| panic!("{code}"));
        vars(&d, "KD-ANAKINRA", &study(i))
            .iter()
            .map(|v| v.name.to_string())
            .collect()
    }

    #[test]
    fn kawasakis_ex_vs_and_ae_have_the_variables_of_their_annotations() {
        let head = ["STUDYID", "DOMAIN", "USUBJID"];
        let with = |rest: &[&str]| -> Vec<String> {
            head.iter().chain(rest).map(|s| (*s).to_owned()).collect()
        };
        assert_eq!(
            names("EX", 0),
            with(&[
                "EXSEQ", "EXTRT", "EXDOSE", "EXDOSU", "EXDOSFRM", "EXDOSFRQ", "EXROUTE", "EXLOC",
                "EXLOT", "EXADJ", "EXSTDTC", "EXENDTC", "EXSTDY", "EXENDY"
            ])
        );
        assert_eq!(
            names("VS", 0),
            with(&[
                "VSSEQ", "VSTESTCD", "VSTEST", "VSORRES", "VSORRESU", "VSSTRESC", "VSSTRESN",
                "VSSTRESU", "VSLOC", "VSDTC", "VSDY"
            ])
        );
        assert_eq!(
            names("AE", 0),
            with(&[
                "AESEQ", "AETERM", "AELLTCD", "AEDECOD", "AETOXGR", "AESER", "AESDTH", "AESLIFE",
                "AESHOSP", "AESDISAB", "AESCONG", "AESMIE", "AEREL", "AEACN", "AEOUT", "AESTDTC",
                "AEENDTC", "AESTDY", "AEENDY"
            ])
        );
        let ae = vars(
            &Domain::parse("AE").unwrap_or_else(|| panic!("AE")),
            "KD-ANAKINRA",
            &study(0),
        );
        let var = |n: &str| {
            ae.iter()
                .find(|v| v.name == n)
                .unwrap_or_else(|| panic!("{n}"))
        };
        assert_eq!(
            var("AELLTCD").kind,
            VarType::Num,
            "a MedDRA code is a number"
        );
        assert_eq!(var("AETOXGR").kind, VarType::Char(1), "a grade 1 to 5");
        assert_eq!(var("AESDTH").label, "Results in Death");
        assert_eq!(var("AEOUT").kind, VarType::Char(32));
    }

    #[test]
    fn variables_no_row_can_fill_are_left_out() {
        // MKD's EX: categories, no form entered per visit
        let ex = names("EX", 2);
        assert!(ex.contains(&"EXCAT".to_owned()), "{ex:?}");
        assert!(!ex.contains(&"VISITNUM".to_owned()), "{ex:?}");
        // its labs are entered per visit
        assert!(names("LB", 2).contains(&"VISITNUM".to_owned()));
        assert!(!names("VS", 0).contains(&"VSCAT".to_owned()));
    }

    #[test]
    fn age_in_whole_years() {
        let d = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap_or_default();
        assert_eq!(age_years("2023-04", d("2026-10-01")), Some(3.0));
        assert_eq!(age_years("2023-11", d("2026-10-01")), Some(2.0));
        assert_eq!(age_years("2027-01", d("2026-10-01")), None);
    }
}
