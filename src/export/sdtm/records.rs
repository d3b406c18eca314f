//! The rows of the study definition's form records in an SDTM dataset, and the variables
//! those forms add (`crate::domain::study::sdtm` says which items become which rows).

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Jsonb, Nullable, Text};
use serde_json::Value;

use super::super::records::literal;
use super::super::subjects::{self, SubjectInfo};
use super::super::text::{full_date, local_dtc, truncate};
use super::super::xpt::{Var, VarType};
use super::super::{stream_rows, Stop};
use super::{day, Ctx};
use crate::domain::study::sdtm::{self as plan, Class, Plan, Source};
use crate::domain::study::{Definition, Item, ItemType};

/// The SDTM IG's label of a variable of a domain, where the domain gives it its own.
fn ig_var_label(domain: &str, var: &str) -> Option<&'static str> {
    let label = match (domain, var.strip_prefix(domain)?) {
        ("EX", "TRT") => "Name of Treatment",
        ("EX", "DOSFRM") => "Dose Form",
        ("EX", "DOSFRQ") => "Dosing Frequency per Interval",
        ("EX", "ROUTE") => "Route of Administration",
        ("EX", "LOC") => "Location of Dose Administration",
        ("EX", "LOT") => "Lot Number",
        ("EX", "ADJ") => "Reason for Dose Adjustment",
        ("EX", "STDTC") => "Start Date/Time of Treatment",
        ("EX", "ENDTC") => "End Date/Time of Treatment",
        ("EX", "STDY") => "Study Day of Start of Treatment",
        ("EX", "ENDY") => "Study Day of End of Treatment",
        ("VS", "TESTCD") => "Vital Signs Test Short Name",
        ("VS", "TEST") => "Vital Signs Test Name",
        ("VS", "LOC") => "Location of Vital Signs Measurement",
        ("VS", "DTC") => "Date/Time of Measurements",
        ("VS", "DY") => "Study Day of Vital Signs",
        ("AE", "TERM") => "Reported Term for the Adverse Event",
        ("AE", "DECOD") => "Dictionary-Derived Term",
        ("AE", "LLTCD") => "Lowest Level Term Code",
        ("AE", "PTCD") => "Preferred Term Code",
        ("AE", "STDTC") => "Start Date/Time of Adverse Event",
        ("AE", "ENDTC") => "End Date/Time of Adverse Event",
        ("AE", "STDY") => "Study Day of Start of Adverse Event",
        ("AE", "ENDY") => "Study Day of End of Adverse Event",
        ("AE", "TOXGR") => "Standard Toxicity Grade",
        ("AE", "SER") => "Serious Event",
        ("AE", "SDTH") => "Results in Death",
        ("AE", "SLIFE") => "Is Life Threatening",
        ("AE", "SHOSP") => "Requires or Prolongs Hospitalization",
        ("AE", "SDISAB") => "Persist or Signif Disability/Incapacity",
        ("AE", "SCONG") => "Congenital Anomaly or Birth Defect",
        ("AE", "SMIE") => "Other Medically Important Serious Event",
        ("AE", "REL") => "Causality",
        ("AE", "ACN") => "Action Taken with Study Treatment",
        ("AE", "OUT") => "Outcome of Adverse Event",
        _ => return None,
    };
    Some(label)
}

/// A variable's label by its name without the domain prefix.
fn generic_label(suffix: &str) -> &'static str {
    match suffix {
        "SEQ" => "Sequence Number",
        "TESTCD" => "Short Name of Test",
        "TEST" => "Name of Test",
        "OBJ" => "Object of the Observation",
        "CAT" => "Category",
        "ORRES" => "Result or Finding in Original Units",
        "ORRESU" => "Original Units",
        "STRESC" => "Character Result/Finding in Std Format",
        "STRESN" => "Numeric Result/Finding in Standard Units",
        "STRESU" => "Standard Units",
        "TERM" => "Reported Term",
        "DECOD" => "Standardized Term",
        "TRT" => "Name of Treatment",
        "DOSE" => "Dose",
        "DOSU" => "Dose Units",
        "DTC" => "Date/Time of Collection",
        "DY" => "Study Day of Collection",
        "STDTC" => "Start Date/Time",
        "ENDTC" => "End Date/Time",
        "STDY" => "Study Day of Start",
        "ENDY" => "Study Day of End",
        _ => "",
    }
}

/// Numeric variables, by the end of their name (MedDRA codes: `AELLTCD`, `AEPTCD`); every
/// other variable is character.
pub(super) fn is_numeric(name: &str) -> bool {
    [
        "SEQ", "DY", "STRESN", "DOSE", "DOSTOT", "VISITNUM", "AGE", "LLTCD", "PTCD", "HLTCD",
        "HLGTCD", "SOCCD", "BDSYCD",
    ]
    .iter()
    .any(|s| name.ends_with(s))
}

/// The longest text an item's values take (XPT character variables have a fixed length).
pub(super) fn value_len(item: &Item, def: &Definition) -> usize {
    let codes = |id: &str| {
        def.codelist(id).map(|c| {
            c.codes
                .iter()
                .map(|c| c.sdtm.as_deref().unwrap_or(&c.code).len())
        })
    };
    match &item.kind {
        ItemType::Text { max_length } => *max_length as usize,
        // an integer within a range is as long as its bounds (a grade 1 to 5: one digit)
        ItemType::Integer => match item.range.as_ref().map(|r| (&r.min, &r.max)) {
            Some((Some(lo), Some(hi))) => lo.to_string().len().max(hi.to_string().len()),
            _ => 20,
        },
        ItemType::Decimal { .. } => 20,
        ItemType::Boolean => 1,
        ItemType::Date | ItemType::PartialDate => 10,
        ItemType::DateTime => 19,
        ItemType::Time => 8,
        ItemType::Choice { codelist } => codes(codelist).and_then(Iterator::max).unwrap_or(1),
        ItemType::Choices { codelist } => codes(codelist)
            .map(|l| l.map(|n| n + 1).sum::<usize>())
            .unwrap_or(1),
    }
}

pub(super) fn char_len(n: usize) -> u16 {
    u16::try_from(n.clamp(1, 200)).unwrap_or(200)
}

/// The variables of the definition's forms in a dataset (after USUBJID).
pub(super) fn plan_vars(p: &Plan<'_>, def: &Definition) -> Vec<Var> {
    let d = p.domain.as_str();
    let sources = &p.sources;
    let max = |f: &dyn Fn(&Source<'_>) -> usize| sources.iter().map(f).max().unwrap_or(1);
    let tests = || sources.iter().flat_map(|s| s.tests.iter());
    let cat_len = max(&|s| s.category().map_or(0, str::len));
    let flag_vars: Vec<&str> = sources
        .iter()
        .flat_map(|s| s.flags.iter().map(|f| f.var.as_str()))
        .collect();
    let topic_len = max(&|s| {
        s.item_for(&format!("{d}{}", plan::topic(p.class)))
            .map_or(s.default_topic().len(), |i| value_len(i, def))
    });
    let res_len = tests().map(|t| value_len(t.item, def)).max().unwrap_or(1);
    let unit_len = tests()
        .filter_map(|t| t.item.unit.as_deref())
        .map(|u| plan::unit(u).len())
        .max()
        .unwrap_or(1);
    let test_len = tests().map(|t| t.label.len()).max().unwrap_or(1);
    let visit_len = def.visits.iter().map(|v| v.name.len()).max().unwrap_or(1);
    let dose_unit_len = |s: &Source<'_>| {
        s.item_for(&format!("{d}DOSE"))
            .and_then(|i| i.unit.as_deref())
            .map_or(0, |u| plan::unit(u).len())
    };

    let cat_len = cat_len.max(1);
    let dose_len = max(&|s| {
        s.constant(&format!("{d}DOSU"))
            .map_or(dose_unit_len(s), str::len)
    });
    let mut head: Vec<(&str, usize)> = match p.class {
        Class::Findings => {
            let mut h = vec![("SEQ", 0), ("TESTCD", 8), ("TEST", test_len)];
            if d == "FA" {
                h.push(("OBJ", topic_len));
            }
            h.extend([
                ("CAT", cat_len),
                ("ORRES", res_len),
                ("ORRESU", unit_len),
                ("STRESC", res_len),
                ("STRESN", 0),
                ("STRESU", unit_len),
            ]);
            h
        }
        Class::Events if d == "DS" => vec![
            ("SEQ", 0),
            ("TERM", topic_len),
            ("DECOD", topic_len),
            ("CAT", cat_len),
        ],
        Class::Events => vec![("SEQ", 0), ("TERM", topic_len), ("CAT", cat_len)],
        Class::Interventions => vec![
            ("SEQ", 0),
            ("TRT", topic_len),
            ("CAT", cat_len),
            ("DOSE", 0),
            ("DOSU", dose_len),
        ],
    };
    // a permissible variable no row can fill is left out
    if !p.has_category() {
        head.retain(|(s, _)| *s != "CAT");
    }
    let timing: Vec<&str> = match p.class {
        Class::Findings => vec!["DTC", "DY"],
        Class::Events if d == "DS" => vec!["STDTC", "STDY"],
        Class::Events | Class::Interventions => vec!["STDTC", "ENDTC", "STDY", "ENDY"],
    };
    let named = |suffix: &str, len: usize| {
        let name = format!("{d}{suffix}");
        let kind = if is_numeric(&name) {
            VarType::Num
        } else {
            VarType::Char(char_len(len))
        };
        let label = ig_var_label(d, &name).unwrap_or(generic_label(suffix));
        Var::owned(name, label.to_owned(), kind)
    };
    let mut vars: Vec<Var> = head.iter().map(|(s, l)| named(s, *l)).collect();
    let visits = [
        Var::num("VISITNUM", "Visit Number"),
        Var::char("VISIT", "Visit Name", char_len(visit_len)),
        Var::num("VISITDY", "Planned Study Day of Visit"),
    ];
    let timing_vars: Vec<Var> = visits
        .into_iter()
        .filter(|_| p.has_visits())
        .chain(timing.iter().map(|s| named(s, 19)))
        .collect();
    for var in p.mapped_vars() {
        if vars.iter().chain(&timing_vars).any(|v| v.name == var)
            || timing.iter().any(|s| format!("{d}{s}") == var)
        {
            continue;
        }
        let items = sources.iter().filter_map(|s| s.item_for(var));
        let given = sources.iter().filter_map(|s| s.constant(var));
        let len = items
            .clone()
            .map(|i| value_len(i, def))
            .chain(given.map(str::len))
            .chain(flag_vars.iter().filter(|f| **f == var).map(|_| 1))
            .max()
            .unwrap_or(1);
        let label = ig_var_label(d, var)
            .map(str::to_owned)
            .or_else(|| items.map(|i| truncate(&i.label, 40).to_owned()).next())
            .unwrap_or_default();
        let kind = if is_numeric(var) {
            VarType::Num
        } else {
            VarType::Char(char_len(len))
        };
        vars.push(Var::owned(var.to_owned(), label, kind));
    }
    vars.extend(timing_vars);
    vars
}

/// An owned value of a row of a form record.
#[derive(Debug, Clone)]
pub(super) enum Val {
    Text(String),
    Num(Option<f64>),
}

/// A row of a form record, waiting for its place among today's rows of the same subject.
pub(super) struct FormRow {
    pub(super) code: String,
    /// its date (--DTC or --STDTC) as text: ISO 8601 text sorts as the dates do
    pub(super) key: String,
    pub(super) cells: Vec<Val>,
    /// its supplemental qualifiers: QNAM, QLABEL, QVAL, QORIG
    pub(super) supp: Vec<[String; 4]>,
}

/// A stored value as SDTM text: codes as their submission values (the code itself when
/// the definition gives none), numbers as stored (decimals keep their digits), booleans
/// `Y`/`N`, several codes separated by `;`, datetimes site-local without offset.
fn text_value(item: &Item, v: Option<&Value>, s: &SubjectInfo, def: &Definition) -> Option<String> {
    let submission = |code: &str| {
        item.kind
            .codelist()
            .and_then(|id| def.codelist(id))
            .map_or(code, |c| c.submission(code))
            .to_owned()
    };
    match v? {
        Value::Null => None,
        Value::String(t) if item.kind == ItemType::DateTime => Some(
            DateTime::parse_from_rfc3339(t)
                .map(|t| local_dtc(t.with_timezone(&Utc), s.tz()))
                .unwrap_or_else(|_| t.clone()),
        ),
        Value::String(t) => Some(submission(t)),
        Value::Bool(b) => Some(if *b { "Y" } else { "N" }.to_owned()),
        Value::Number(n) => Some(n.to_string()),
        Value::Array(codes) => Some(
            codes
                .iter()
                .map(|c| c.as_str().map_or_else(|| c.to_string(), submission))
                .collect::<Vec<_>>()
                .join(";"),
        ),
        other => Some(other.to_string()),
    }
}

fn number(item: &Item, v: Option<&Value>) -> Option<f64> {
    match (&item.kind, v?) {
        (ItemType::Integer | ItemType::Decimal { .. }, Value::String(t)) => t.parse().ok(),
        (ItemType::Integer | ItemType::Decimal { .. }, Value::Number(n)) => n.as_f64(),
        _ => None,
    }
}

#[derive(Queryable)]
struct RecordRow {
    code: String,
    form: String,
    visit: Option<String>,
    values: Value,
}

/// The rows of the batch's form records of the plan's forms, sorted by subject and date
/// (then entry order, then item order).
pub(super) fn form_rows(
    conn: &mut PgConnection,
    ctx: &Ctx<'_>,
    p: &Plan<'_>,
    batch: &[SubjectInfo],
    vars: &[Var],
) -> Result<Vec<FormRow>, Stop> {
    let forms: Vec<String> = p.sources.iter().map(|s| literal(&s.form.id)).collect();
    let sql = format!(
        "s.subject_code, x.form_id, x.visit_id, x.values \
         FROM form_records x JOIN study_versions sv ON sv.id = x.study_version_id \
         JOIN subjects s ON s.id = x.subject_id \
         WHERE x.deleted_at IS NULL AND sv.study_id = {study} \
           AND x.form_id = ANY(ARRAY[{forms}]::text[]) \
           AND x.subject_id = ANY(ARRAY[{ids}]::int8[]) \
         ORDER BY s.subject_code, x.id",
        study = literal(&ctx.def.study.id),
        forms = forms.join(","),
        ids = subjects::ids(batch),
    );
    let at = |name: &str| vars.iter().position(|v| v.name == name);
    let d = ctx.code;
    let mut rows = Vec::new();
    stream_rows::<(Text, Text, Nullable<Text>, Jsonb), RecordRow>(conn, &sql, |r| {
        let Some(src) = p.sources.iter().find(|s| s.form.id == r.form) else {
            return Ok(());
        };
        if let Some(when) = src.when() {
            if r.values.get(when) != Some(&Value::Bool(true)) {
                return Ok(());
            }
        }
        let s = ctx.subject(&r.code)?;
        let value = |item: &Item| text_value(item, r.values.get(&item.id), s, ctx.def);
        let mut cells: Vec<Val> = vars
            .iter()
            .map(|v| match v.kind {
                VarType::Num => Val::Num(None),
                VarType::Char(_) => Val::Text(String::new()),
            })
            .collect();
        let set = |cells: &mut Vec<Val>, name: &str, v: Val| {
            if let Some(i) = at(name) {
                cells[i] = v;
            }
        };
        set(&mut cells, "STUDYID", Val::Text(ctx.study.to_owned()));
        set(&mut cells, "DOMAIN", Val::Text(d.to_owned()));
        set(&mut cells, "USUBJID", Val::Text(ctx.usubjid(&r.code)));
        if let Some((n, visit)) = r
            .visit
            .as_deref()
            .and_then(|id| ctx.def.visits.iter().enumerate().find(|(_, v)| v.id == id))
        {
            set(&mut cells, "VISITNUM", Val::Num(Some((n + 1) as f64)));
            set(&mut cells, "VISIT", Val::Text(visit.name.clone()));
            set(&mut cells, "VISITDY", Val::Num(visit.day.map(f64::from)));
        }
        if let Some(cat) = src.category() {
            set(&mut cells, &format!("{d}CAT"), Val::Text(cat.to_owned()));
        }
        if d == "FA" {
            set(&mut cells, "FAOBJ", Val::Text(src.default_topic()));
        }
        let dtc_var = format!("{d}{}", plan::dtc(p.class));
        let dtc = src
            .item_for(&dtc_var)
            .or_else(|| src.form.item(&src.form.dated_by))
            .and_then(value)
            .unwrap_or_default();
        set(&mut cells, &dtc_var, Val::Text(dtc.clone()));
        for (var, text) in src.constants() {
            set(&mut cells, var, Val::Text(text.clone()));
        }
        for f in &src.flags {
            let held = r.values.get(&f.item.id).and_then(Value::as_array);
            let yes = held.is_some_and(|codes| codes.iter().any(|c| c == f.code.as_str()));
            set(
                &mut cells,
                &f.var,
                Val::Text(if yes { "Y" } else { "N" }.into()),
            );
        }
        for (var, item) in &src.mapped {
            let v = if is_numeric(var) {
                // a text of digits (a MedDRA code) in a numeric variable is its number
                let stored = r.values.get(&item.id);
                let digits = stored.and_then(Value::as_str).and_then(|t| t.parse().ok());
                Val::Num(number(item, stored).or(digits))
            } else {
                Val::Text(value(item).unwrap_or_default())
            };
            set(&mut cells, var, v);
        }
        // study days from the dates the row carries
        let dy = |t: &str| full_date(truncate(t, 10)).and_then(|date| day(s, date));
        let dy_of = |cells: &Vec<Val>, from: &str| match at(from).map(|i| &cells[i]) {
            Some(Val::Text(t)) => dy(t),
            _ => None,
        };
        for (from, to) in [("DTC", "DY"), ("STDTC", "STDY"), ("ENDTC", "ENDY")] {
            let (from, to) = (format!("{d}{from}"), format!("{d}{to}"));
            if src.item_for(&to).is_none() {
                let n = dy_of(&cells, &from);
                set(&mut cells, &to, Val::Num(n));
            }
        }
        match p.class {
            Class::Findings => {
                for t in &src.tests {
                    let Some(res) = value(t.item) else { continue };
                    let mut row = cells.clone();
                    let unit = t.item.unit.as_deref().map(plan::unit).unwrap_or_default();
                    set(&mut row, &format!("{d}TESTCD"), Val::Text(t.testcd.clone()));
                    set(&mut row, &format!("{d}TEST"), Val::Text(t.label.clone()));
                    set(&mut row, &format!("{d}ORRES"), Val::Text(res.clone()));
                    set(&mut row, &format!("{d}ORRESU"), Val::Text(unit.to_owned()));
                    set(&mut row, &format!("{d}STRESC"), Val::Text(res));
                    let n = number(t.item, r.values.get(&t.item.id));
                    set(&mut row, &format!("{d}STRESN"), Val::Num(n));
                    set(&mut row, &format!("{d}STRESU"), Val::Text(unit.to_owned()));
                    rows.push(FormRow {
                        code: r.code.clone(),
                        key: dtc.clone(),
                        cells: row,
                        supp: Vec::new(),
                    });
                }
            }
            Class::Events | Class::Interventions => {
                let topic = format!("{d}{}", plan::topic(p.class));
                if src.item_for(&topic).is_none() {
                    set(&mut cells, &topic, Val::Text(src.default_topic()));
                }
                if d == "DS" && src.item_for("DSDECOD").is_none() {
                    set(&mut cells, "DSDECOD", Val::Text(src.default_topic()));
                }
                let dose = format!("{d}DOSE");
                if let Some(u) = src.item_for(&dose).and_then(|i| i.unit.as_deref()) {
                    if src.item_for(&format!("{d}DOSU")).is_none() {
                        set(
                            &mut cells,
                            &format!("{d}DOSU"),
                            Val::Text(plan::unit(u).into()),
                        );
                    }
                }
                let supp = src
                    .supp
                    .iter()
                    .filter_map(|t| {
                        let qval = value(t.item)?;
                        let origin = if t.item.derived() { "DERIVED" } else { "CRF" };
                        Some([t.testcd.clone(), t.label.clone(), qval, origin.to_owned()])
                    })
                    .collect();
                rows.push(FormRow {
                    code: r.code.clone(),
                    key: dtc,
                    cells,
                    supp,
                });
            }
        }
        Ok(())
    })?;
    // stable: entry order, then item order, within a subject and date
    rows.sort_by(|a, b| (&a.code, &a.key).cmp(&(&b.code, &b.key)));
    Ok(rows)
}
