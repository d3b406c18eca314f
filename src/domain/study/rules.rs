//! The named rules a definition binds to a form, run on every write of one of its records
//! (entered or corrected): `study_day` fills or checks the study day of the record's date,
//! `dose` computes the dose the treatment's rule expects and flags a deviation (the rule
//! itself is `domain::dosing`'s), `fever` flags a temperature above its threshold. What a rule computes is stored like a derivation: never
//! accepted from a client (`values::check` refuses it). What a rule needs from the subject's
//! other records (day 1, earlier doses, fevers) the caller reads and passes in `Context`.
//!
//! Day 1 unknown: a study day cannot be computed before the anchor (the first dose) is
//! entered, and a record whose study day or dose depends on it is refused (422 naming the
//! day item) rather than stored with an empty day: the day is required on the forms that
//! carry it, and a dose checked against no day would be a check that did not happen.

use std::collections::BTreeMap;
use std::str::FromStr;

use bigdecimal::BigDecimal;
use chrono::{DateTime, Days, NaiveDate, Utc};
use chrono_tz::Tz;
use serde_json::Value as Json;

use super::model::{Definition, Form, ItemType, Rule, RuleKind};
use super::records::Values;
use super::schedule::{anchor_form, site_date, window};
use super::values::{Checked, Flag, ItemValue};
use crate::domain::dosing::{self, Regimen};
use crate::domain::time::{end_of_local_day, local_date, study_day};
use crate::domain::FieldError;

/// A dose of a study drug the subject had, from another record.
#[derive(Debug, Clone, PartialEq)]
pub struct GivenDose {
    pub treatment: String,
    pub at: DateTime<Utc>,
    /// its study day, as stored
    pub day: Option<i64>,
}

/// What the rules read from the subject's other live records (the one written left out).
#[derive(Debug, Clone)]
pub struct Context {
    pub tz: Tz,
    /// day 1 by the schedule's anchor; none before the first dose
    pub day1: Option<NaiveDate>,
    /// doses of every treatment a dose rule is bound to
    pub doses: Vec<GivenDose>,
    /// when fever was recorded (records a fever rule flagged)
    pub fevers: Vec<DateTime<Utc>>,
}

impl Context {
    pub fn new(tz: Tz) -> Self {
        Self {
            tz,
            day1: None,
            doses: Vec::new(),
            fevers: Vec::new(),
        }
    }
}

/// The rules bound to `form`.
pub fn of_form<'a>(def: &'a Definition, form: &'a Form) -> impl Iterator<Item = &'a Rule> {
    def.rules
        .iter()
        .filter(move |r| r.form.as_deref() == Some(form.id.as_str()))
}

/// What a record of `form` entered at `visit` needs of the subject's other records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reads {
    /// nothing: no rule of its reads them and its visit, if any, has no window
    Nothing,
    /// day 1 only, for the window of its scheduled visit
    DayOne,
    /// day 1 and the facts its rules read (earlier doses, fevers)
    Records,
}

pub fn reads(def: &Definition, form: &Form, visit: Option<&str>) -> Reads {
    if of_form(def, form).any(|r| matches!(r.kind, RuleKind::StudyDay | RuleKind::Dose)) {
        Reads::Records
    } else if visit
        .and_then(|v| def.visit(v))
        .is_some_and(|v| v.day.is_some())
    {
        Reads::DayOne
    } else {
        Reads::Nothing
    }
}

/// A record entered for a scheduled visit and dated (`date`, site-local) outside its
/// window: stored, flagged on the dating item (a soft finding, with its query). Before day 1
/// the window is unknown and nothing is flagged.
pub fn window_flag(
    def: &Definition,
    form: &Form,
    visit: Option<&str>,
    date: Option<NaiveDate>,
    day1: Option<NaiveDate>,
) -> Option<Flag> {
    let v = def.visit(visit?)?;
    let w = window(day1?, v)?;
    let date = date?;
    (!w.contains(date)).then(|| {
        Flag::edit_check(
            form.dated_by.clone(),
            format!(
                "{WINDOW} {} (study day {}): {} to {}",
                v.id,
                v.day.unwrap_or_default(),
                w.opens,
                w.closes
            ),
        )
    })
}

const WINDOW: &str = "outside the window of visit";

/// A stored record at a visit when day 1 becomes `day1`: its flags with the window flag
/// re-checked, and the new window flag if there is one; none when nothing changes.
pub fn rewindowed(
    def: &Definition,
    form: &Form,
    visit: Option<&str>,
    values: &Json,
    flags: &Json,
    day1: Option<NaiveDate>,
    tz: Tz,
) -> Option<(Json, Option<Flag>)> {
    let date = values
        .get(&form.dated_by)
        .and_then(Json::as_str)
        .and_then(|s| site_date(s, tz));
    let new = window_flag(def, form, visit, date, day1);
    let old = flags.as_array().cloned().unwrap_or_default();
    let mut out: Vec<Json> = old
        .iter()
        .filter(|f| {
            !(f["item"] == form.dated_by.as_str()
                && f["message"].as_str().is_some_and(|m| m.starts_with(WINDOW)))
        })
        .cloned()
        .collect();
    if let Some(f) = &new {
        out.push(serde_json::json!({"item": f.item, "message": f.message}));
    }
    (out != old).then_some((Json::Array(out), new))
}

/// The records whose stored study day would no longer be the study day of their date if
/// day 1 became `day1` (none: no day 1 any more), as `form id (study day n)`: what a
/// change of the record anchoring day 1 must not leave behind. `records` are (id, form,
/// values) of the subject's other live records.
pub fn stranded(
    def: &Definition,
    records: &[(i64, String, Json)],
    day1: Option<NaiveDate>,
    tz: Tz,
) -> Vec<String> {
    let mut out = Vec::new();
    for (id, f, values) in records {
        for r in def
            .rules
            .iter()
            .filter(|r| r.kind == RuleKind::StudyDay && r.form.as_deref() == Some(f.as_str()))
        {
            let (Some(day), Some(at)) = (r.item("day"), r.item("at")) else {
                continue;
            };
            let Some(stored) = values.get(day).and_then(Json::as_i64) else {
                continue;
            };
            let date = values
                .get(at)
                .and_then(Json::as_str)
                .and_then(|s| site_date(s, tz));
            let fits = matches!((day1, date), (Some(d1), Some(d)) if study_day(d1, d) == stored);
            if !fits {
                out.push(format!("{f} {id} (study day {stored})"));
            }
        }
    }
    out
}

fn treatment<'a>(def: &'a Definition, r: &Rule) -> Option<&'a super::model::Treatment> {
    let id = r.treatment.as_deref()?;
    def.treatments.iter().find(|t| t.id == id)
}

fn field(item: &str) -> String {
    format!("values.{item}")
}

/// Day 1 for a record of `form` whose anchor item (when `form` holds the anchor) has the
/// site-local date `own`: the earlier of the others' day 1 and its own.
pub fn day_one(
    def: &Definition,
    form: &Form,
    own: Option<NaiveDate>,
    ctx: &Context,
) -> Option<NaiveDate> {
    match anchor_form(def) {
        Some((f, _)) if f == form.id => match (ctx.day1, own) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        },
        _ => ctx.day1,
    }
}

/// The site-local date of the anchor item in values as sent or stored.
pub fn anchor_date(def: &Definition, form: &Form, values: &Values, tz: Tz) -> Option<NaiveDate> {
    match anchor_form(def) {
        Some((f, item)) if f == form.id => site_date(values.get(item)?.as_str()?, tz),
        _ => None,
    }
}

fn unknown_day1(def: &Definition) -> String {
    let anchor = def
        .schedule
        .anchor_item
        .as_ref()
        .map(|r| format!("{}.{}", r.form, r.item))
        .unwrap_or_else(|| "the first dose".into());
    format!(
        "cannot be computed yet: day 1 is the date of the first {anchor}; enter that record first"
    )
}

/// Before the values are checked: the study day of a record whose day item is not sent is
/// filled from its date. A correction that changes the date and not the day recomputes the
/// day (`change` is the correction's items).
pub fn fill(
    def: &Definition,
    form: &Form,
    input: &mut Values,
    change: Option<&Values>,
    ctx: &Context,
) -> Result<(), Vec<FieldError>> {
    let own = anchor_date(def, form, input, ctx.tz);
    let mut errors = Vec::new();
    for r in of_form(def, form).filter(|r| r.kind == RuleKind::StudyDay) {
        let (Some(day), Some(at)) = (r.item("day"), r.item("at")) else {
            continue;
        };
        if change.is_some_and(|c| c.contains_key(at) && !c.contains_key(day)) {
            input.remove(day);
        }
        if input.get(day).is_some_and(|v| !v.is_null()) {
            continue;
        }
        // a date that does not parse is named by the check that follows
        let Some(date) = input
            .get(at)
            .and_then(Json::as_str)
            .and_then(|s| site_date(s, ctx.tz))
        else {
            continue;
        };
        match day_one(def, form, own, ctx) {
            Some(d1) => {
                input.insert(day.to_owned(), Json::from(study_day(d1, date)));
            }
            None => errors.push(FieldError::new(field(day), unknown_day1(def))),
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

fn date_of(v: Option<&ItemValue>, tz: Tz) -> Option<NaiveDate> {
    match v? {
        ItemValue::Date(d) => Some(*d),
        ItemValue::DateTime(t) => Some(local_date(*t, tz)),
        _ => None,
    }
}

fn decimal(v: Option<&ItemValue>) -> Option<BigDecimal> {
    match v? {
        ItemValue::Decimal(d) => Some(d.clone()),
        ItemValue::Integer(i) => Some(BigDecimal::from(*i)),
        _ => None,
    }
}

fn f64_of(d: &BigDecimal) -> f64 {
    bigdecimal::ToPrimitive::to_f64(d).unwrap_or_default()
}

/// After the values are checked: each rule checks what it reads and writes what it
/// computes into `checked` (a dose deviation is also a soft finding on the dose item), and
/// a record dated outside its visit's window is flagged.
pub fn run(
    def: &Definition,
    form: &Form,
    visit: Option<&str>,
    checked: &mut Checked,
    ctx: &Context,
) -> Result<(), Vec<FieldError>> {
    let own = match anchor_form(def) {
        Some((f, item)) if f == form.id => date_of(checked.values.get(item), ctx.tz),
        _ => None,
    };
    let day1 = day_one(def, form, own, ctx);
    let mut errors = Vec::new();
    for r in of_form(def, form) {
        let out = match r.kind {
            RuleKind::StudyDay => study_day_rule(def, r, &checked.values, day1, ctx.tz),
            RuleKind::Dose => dose_rule(def, form, r, checked, day1, ctx),
            RuleKind::Fever => {
                fever_rule(form, r, &mut checked.values);
                Ok(())
            }
            RuleKind::FeverEndpoints | RuleKind::SaeAlert => Ok(()),
        };
        if let Err(e) = out {
            errors.push(e);
        }
    }
    let date = date_of(checked.values.get(&form.dated_by), ctx.tz);
    if let Some(f) = window_flag(def, form, visit, date, day1) {
        checked.flags.push(f);
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

fn study_day_rule(
    def: &Definition,
    r: &Rule,
    values: &BTreeMap<String, ItemValue>,
    day1: Option<NaiveDate>,
    tz: Tz,
) -> Result<(), FieldError> {
    let (Some(day), Some(at)) = (r.item("day"), r.item("at")) else {
        return Ok(());
    };
    let (Some(ItemValue::Integer(entered)), Some(date)) =
        (values.get(day), date_of(values.get(at), tz))
    else {
        return Ok(());
    };
    let Some(d1) = day1 else {
        return Err(FieldError::new(field(day), unknown_day1(def)));
    };
    let actual = study_day(d1, date);
    if *entered != actual {
        return Err(FieldError::new(
            field(day),
            format!("{at} is on {date} (site time), which is study day {actual} (day 1: {d1})"),
        ));
    }
    Ok(())
}

/// Fever on the escalation day before that day's dose: from the start of day `n` (site
/// time) to this dose when it is day `n`'s, else to day `n`'s dose or the end of day `n`.
fn febrile_on_escalation_day(
    n: i32,
    day: i64,
    at: DateTime<Utc>,
    d1: NaiveDate,
    treatment: &str,
    ctx: &Context,
) -> bool {
    let Some(day_n) = u64::try_from(n - 1)
        .ok()
        .and_then(|k| d1.checked_add_days(Days::new(k)))
    else {
        return false;
    };
    let Some(start) = day_n.pred_opt().and_then(|d| end_of_local_day(d, ctx.tz)) else {
        return false;
    };
    let cutoff = if day == i64::from(n) {
        Some(at)
    } else {
        ctx.doses
            .iter()
            .find(|g| g.treatment == treatment && g.day == Some(i64::from(n)))
            .map(|g| g.at)
            .or_else(|| end_of_local_day(day_n, ctx.tz))
    };
    cutoff.is_some_and(|cut| ctx.fevers.iter().any(|t| *t >= start && *t < cut))
}

fn dose_rule(
    def: &Definition,
    form: &Form,
    r: &Rule,
    checked: &mut Checked,
    day1: Option<NaiveDate>,
    ctx: &Context,
) -> Result<(), FieldError> {
    let Some(t) = treatment(def, r) else {
        return Ok(());
    };
    let regimen = Regimen::of_treatment(t);
    let v = &checked.values;
    let (Some(day_item), Some(at_item), Some(dose_item)) =
        (r.item("day"), r.item("at"), r.item("dose"))
    else {
        return Ok(());
    };
    // required items that are missing were refused by the values' check
    let (Some(ItemValue::Integer(day)), Some(ItemValue::DateTime(at)), Some(dose)) =
        (v.get(day_item), v.get(at_item), decimal(v.get(dose_item)))
    else {
        return Ok(());
    };
    let (day, at) = (*day, *at);
    let weight = r.item("weight").and_then(|w| decimal(v.get(w)));
    let per_kg = matches!(
        regimen.dose,
        crate::domain::protocol::DoseRule::PerKg { .. }
    );
    if per_kg && weight.is_none() {
        let w = r.item("weight").unwrap_or("weight");
        return Err(FieldError::new(
            field(w),
            format!("required: the dose of {} is per kg", t.id),
        ));
    }
    let given = !matches!(
        r.item("given").and_then(|g| v.get(g)),
        Some(ItemValue::Boolean(false))
    );
    let febrile = match (dosing::escalation_day(&regimen), day1) {
        (Some(n), Some(d1)) if day >= i64::from(n) => {
            febrile_on_escalation_day(n, day, at, d1, &t.id, ctx)
        }
        (Some(n), None) if day >= i64::from(n) => {
            return Err(FieldError::new(field(day_item), unknown_day1(def)))
        }
        _ => false,
    };
    let day32 = i32::try_from(day).unwrap_or(i32::MAX);
    let check = dosing::check_dose(
        &regimen,
        day32,
        weight.as_ref().map(f64_of).unwrap_or_default(),
        f64_of(&dose),
        given,
        febrile,
    );
    let date = local_date(at, ctx.tz);
    let deviation = check.deviation.or_else(|| {
        if !given {
            return None;
        }
        let same: Vec<NaiveDate> = ctx
            .doses
            .iter()
            .filter(|g| g.treatment == t.id)
            .map(|g| local_date(g.at, ctx.tz))
            .collect();
        let others: Vec<(String, NaiveDate)> = ctx
            .doses
            .iter()
            .filter(|g| g.treatment != t.id)
            .map(|g| (g.treatment.clone(), local_date(g.at, ctx.tz)))
            .collect();
        let switched_to: Vec<String> = def
            .treatments
            .iter()
            .filter(|o| o.switch_from.contains(&t.id))
            .map(|o| o.id.clone())
            .collect();
        dosing::too_soon(t.interval_days, date, &same)
            .or_else(|| dosing::switch_deviation(date, &t.switch_from, &switched_to, &others))
    });
    let values = &mut checked.values;
    if let Some(e) = r.item("expected") {
        let decimals = match form.item(e).map(|i| &i.kind) {
            Some(ItemType::Decimal { decimals }) => i64::from(*decimals),
            _ => 2,
        };
        if let Ok(x) = BigDecimal::from_str(&format!("{:.2}", check.expected_mg)) {
            values.insert(e.to_owned(), ItemValue::Decimal(x.with_scale(decimals)));
        }
    }
    if let Some(d) = r.item("deviation") {
        values.insert(d.to_owned(), ItemValue::Boolean(deviation.is_some()));
    }
    if let Some(why) = r.item("deviation_reason") {
        match &deviation {
            Some(m) => values.insert(why.to_owned(), ItemValue::Text(m.clone())),
            None => values.remove(why),
        };
    }
    if let Some(m) = deviation {
        checked.flags.push(Flag {
            item: dose_item.to_owned(),
            message: format!("protocol deviation: {m}"),
            origin: "dose_check",
        });
    }
    Ok(())
}

fn fever_rule(form: &Form, r: &Rule, values: &mut BTreeMap<String, ItemValue>) {
    let (Some(temp), Some(flag), Some(threshold)) =
        (r.item("temperature"), r.item("flag"), r.threshold.as_ref())
    else {
        return;
    };
    if form.item(flag).is_none() {
        return;
    }
    match decimal(values.get(temp)) {
        Some(t) => values.insert(flag.to_owned(), ItemValue::Boolean(&t > threshold)),
        None => values.remove(flag),
    };
}

/// The doses and fevers a stored record holds, for the rules of other records: its
/// (treatment, time, day) when a dose rule is bound to its form, and its time when a fever
/// rule flagged it.
pub fn facts_of(def: &Definition, form: &str, values: &Json, into: &mut Context) {
    for r in def.rules.iter().filter(|r| r.form.as_deref() == Some(form)) {
        let at = r
            .item("at")
            .and_then(|a| values.get(a)?.as_str())
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
            .map(|t| t.with_timezone(&Utc));
        let Some(at) = at else { continue };
        match r.kind {
            RuleKind::Dose => {
                let given = r
                    .item("given")
                    .and_then(|g| values.get(g)?.as_bool())
                    .unwrap_or(true);
                if let (Some(t), true) = (&r.treatment, given) {
                    into.doses.push(GivenDose {
                        treatment: t.clone(),
                        at,
                        day: r.item("day").and_then(|d| values.get(d)?.as_i64()),
                    });
                }
            }
            RuleKind::Fever
                if r.item("flag").and_then(|f| values.get(f)?.as_bool()) == Some(true) =>
            {
                into.fevers.push(at);
            }
            _ => {}
        }
    }
}

/// The earliest site-local date among the dates a dose or fever rule reads in `values` (of a
/// record of `form`): the records of doses on or after it are the ones whose rules read it.
pub fn fact_date(def: &Definition, form: &str, values: &[&Json], tz: Tz) -> Option<NaiveDate> {
    def.rules
        .iter()
        .filter(|r| r.form.as_deref() == Some(form))
        .filter(|r| matches!(r.kind, RuleKind::Dose | RuleKind::Fever))
        .filter_map(|r| r.item("at"))
        .flat_map(|at| values.iter().filter_map(move |v| v.get(at)?.as_str()))
        .filter_map(|s| site_date(s, tz))
        .min()
}

/// Whether a record of `form` holds a dose whose date is on or after `since`.
pub fn dose_since(def: &Definition, form: &str, values: &Json, since: NaiveDate, tz: Tz) -> bool {
    def.rules
        .iter()
        .filter(|r| r.kind == RuleKind::Dose && r.form.as_deref() == Some(form))
        .filter_map(|r| values.get(r.item("at")?)?.as_str())
        .filter_map(|s| site_date(s, tz))
        .any(|d| d >= since)
}

/// Each stored form holding doses and the item that dates its doses (the dose rules' `at`):
/// what a new fever is checked against (a dose on or after it is checked again).
pub fn dose_dates(def: &Definition) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = def
        .rules
        .iter()
        .filter(|r| r.kind == RuleKind::Dose)
        .filter_map(|r| Some((r.form.as_deref()?, r.item("at")?)))
        .filter(|(f, _)| def.form(f).is_some())
        .map(|(f, at)| (f.to_owned(), at.to_owned()))
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// The forms whose records hold doses (dose rules) or fevers (fever rules).
pub fn fact_forms(def: &Definition) -> Vec<&str> {
    let mut out: Vec<&str> = def
        .rules
        .iter()
        .filter(|r| matches!(r.kind, RuleKind::Dose | RuleKind::Fever))
        .filter_map(|r| r.form.as_deref())
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn study() -> Definition {
        super::super::parse("rules", include_str!("../../../tests/studies/rules.toml"))
            .unwrap_or_else(|e| panic!("{e:?}"))
    }

    #[test]
    fn a_record_reads_day_one_only_at_a_visit_with_a_window_and_records_only_for_its_rules() {
        let def = study();
        let form = |id: &str| def.form(id).unwrap_or_else(|| panic!("no form {id}"));
        assert_eq!(reads(&def, form("pain"), Some("D8")), Reads::DayOne);
        assert_eq!(reads(&def, form("pain"), Some("UNS")), Reads::Nothing);
        assert_eq!(reads(&def, form("dosing"), None), Reads::Records);
        assert_eq!(reads(&def, form("diary"), None), Reads::Nothing);
    }

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap_or_default()
    }

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default()
    }

    fn ctx(day1: Option<&str>) -> Context {
        let mut c = Context::new(chrono_tz::Europe::Paris);
        c.day1 = day1.map(d);
        c
    }

    fn values(v: Json) -> Values {
        v.as_object().cloned().unwrap_or_default()
    }

    /// fill, check and run, as the engine does
    fn write(
        def: &Definition,
        form: &str,
        visit: Option<&str>,
        v: Json,
        c: &Context,
    ) -> Result<Checked, Vec<FieldError>> {
        let form = def.form(form).unwrap_or_else(|| panic!("{form}"));
        let mut input = values(v);
        fill(def, form, &mut input, None, c)?;
        let mut checked = super::super::values::check(def, form, &input)?;
        run(def, form, visit, &mut checked, c)?;
        Ok(checked)
    }

    fn dose(at: &str, mg: &str) -> Json {
        json!({"given_at": at, "weight_kg": "20.00", "dose_mg": mg, "given": true})
    }

    fn messages(r: Result<Checked, Vec<FieldError>>) -> Vec<String> {
        r.err()
            .unwrap_or_default()
            .into_iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect()
    }

    #[test]
    fn the_first_dose_is_day_one_and_later_days_follow_the_site_calendar() {
        let def = study();
        let first = write(
            &def,
            "dosing",
            None,
            dose("2026-10-05T08:00:00Z", "40.00"),
            &ctx(None),
        )
        .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(first.values.get("study_day"), Some(&ItemValue::Integer(1)));
        // 23:30 UTC is 01:30 the next day in Paris
        let late = write(
            &def,
            "dosing",
            None,
            dose("2026-10-05T23:30:00Z", "40.00"),
            &ctx(Some("2026-10-05")),
        )
        .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(late.values.get("study_day"), Some(&ItemValue::Integer(2)));
        let mut wrong = dose("2026-10-06T08:00:00Z", "40.00");
        wrong["study_day"] = json!(3);
        assert_eq!(
            messages(write(&def, "dosing", None, wrong, &ctx(Some("2026-10-05")))),
            ["values.study_day: given_at is on 2026-10-06 (site time), which is study day 2 (day 1: 2026-10-05)"]
        );
        // another form's study day before any dose
        let m = messages(write(
            &def,
            "vitals",
            None,
            json!({"measured_at": "2026-10-05T08:00:00Z", "celsius": "37.0"}),
            &ctx(None),
        ));
        assert!(
            m.iter()
                .any(|m| m.starts_with("values.study_day: cannot be computed yet")),
            "{m:?}"
        );
    }

    #[test]
    fn a_correction_of_the_date_alone_recomputes_the_day() {
        let def = study();
        let form = def.form("dosing").unwrap_or_else(|| panic!("dosing"));
        let c = ctx(Some("2026-10-05"));
        let mut input = values(json!({"study_day": 2, "given_at": "2026-10-08T08:00:00Z"}));
        let change = values(json!({"given_at": "2026-10-08T08:00:00Z"}));
        fill(&def, form, &mut input, Some(&change), &c).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(input["study_day"], json!(4));
        // a day named by the correction is checked, not replaced
        let mut input = values(json!({"study_day": 2, "given_at": "2026-10-08T08:00:00Z"}));
        let change = values(json!({"given_at": "2026-10-08T08:00:00Z", "study_day": 2}));
        fill(&def, form, &mut input, Some(&change), &c).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(input["study_day"], json!(2));
    }

    #[test]
    fn the_dose_is_per_kg_and_escalates_only_on_fever_before_the_day_3_dose() {
        let def = study();
        let mut c = ctx(Some("2026-10-05"));
        let expected = |r: &Checked| r.values.get("expected_dose_mg").cloned();
        let x = |s: &str| {
            Some(ItemValue::Decimal(
                BigDecimal::from_str(s).unwrap_or_default(),
            ))
        };
        let day3 = write(
            &def,
            "dosing",
            None,
            dose("2026-10-07T08:00:00Z", "40.00"),
            &c,
        )
        .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(expected(&day3), x("40.00"));
        assert_eq!(
            day3.values.get("protocol_deviation"),
            Some(&ItemValue::Boolean(false))
        );
        // fever on day 3 after the dose does not count; before it does
        c.fevers = vec![t("2026-10-07T09:00:00Z")];
        let after = write(
            &def,
            "dosing",
            None,
            dose("2026-10-07T08:00:00Z", "40.00"),
            &c,
        )
        .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(expected(&after), x("40.00"));
        c.fevers = vec![t("2026-10-06T22:30:00Z")];
        let before = write(
            &def,
            "dosing",
            None,
            dose("2026-10-07T08:00:00Z", "40.00"),
            &c,
        )
        .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(expected(&before), x("80.00"));
        assert_eq!(
            before.values.get("protocol_deviation"),
            Some(&ItemValue::Boolean(true))
        );
        assert_eq!(
            before.flags.first().map(|f| (f.item.as_str(), f.origin)),
            Some(("dose_mg", "dose_check"))
        );
        // day 4: the fever before day 3's dose still counts
        c.doses = vec![GivenDose {
            treatment: "drug".into(),
            at: t("2026-10-07T08:00:00Z"),
            day: Some(3),
        }];
        let day4 = write(
            &def,
            "dosing",
            None,
            dose("2026-10-08T08:00:00Z", "80.00"),
            &c,
        )
        .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(expected(&day4), x("80.00"));
        assert!(!day4.values.contains_key("deviation_reason"));
        // past the treatment days
        let day6 = write(
            &def,
            "dosing",
            None,
            dose("2026-10-10T08:00:00Z", "80.00"),
            &c,
        )
        .unwrap_or_else(|e| panic!("{e:?}"));
        assert!(matches!(day6.values.get("deviation_reason"),
            Some(ItemValue::Text(m)) if m.contains("past the protocol's 5 treatment days")));
        // a dose not given is no deviation
        let mut skipped = dose("2026-10-10T08:00:00Z", "0.00");
        skipped["given"] = json!(false);
        let s = write(&def, "dosing", None, skipped, &c).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(
            s.values.get("protocol_deviation"),
            Some(&ItemValue::Boolean(false))
        );
    }

    #[test]
    fn fever_is_above_the_threshold() {
        let def = study();
        let c = ctx(Some("2026-10-05"));
        let at = |celsius: &str| json!({"measured_at": "2026-10-05T08:00:00Z", "celsius": celsius});
        for (celsius, fever) in [("38.0", false), ("38.1", true), ("36.5", false)] {
            let r =
                write(&def, "vitals", None, at(celsius), &c).unwrap_or_else(|e| panic!("{e:?}"));
            assert_eq!(
                r.values.get("fever"),
                Some(&ItemValue::Boolean(fever)),
                "{celsius}"
            );
        }
    }

    #[test]
    fn a_record_outside_its_visits_window_is_flagged_on_its_date() {
        let def = study();
        let pain = |on: &str| json!({"assessed_on": on, "pain_mm": 10});
        let flags = |visit: &str, on: &str, day1: Option<&str>| {
            write(&def, "pain", Some(visit), pain(on), &ctx(day1))
                .unwrap_or_else(|e| panic!("{e:?}"))
                .flags
        };
        assert!(flags("D8", "2026-10-11", Some("2026-10-05")).is_empty());
        assert!(flags("D8", "2026-10-14", Some("2026-10-05")).is_empty());
        let late = flags("D8", "2026-10-15", Some("2026-10-05"));
        assert_eq!(late.first().map(|f| f.item.as_str()), Some("assessed_on"));
        assert_eq!(flags("D8", "2026-10-10", Some("2026-10-05")).len(), 1);
        assert!(
            flags("D8", "2026-10-30", None).is_empty(),
            "no day 1, no window"
        );
        assert!(flags("UNS", "2026-10-30", Some("2026-10-05")).is_empty());
    }

    #[test]
    fn a_new_day_one_rechecks_the_window_flags_of_visit_records() {
        let def = study();
        let tz = chrono_tz::Europe::Paris;
        let form = def.form("pain").unwrap_or_else(|| panic!("pain"));
        let values = json!({"assessed_on": "2026-10-04", "pain_mm": 3});
        let other = json!({"item": "pain_mm", "message": "kept"});
        // no day 1, then day 1 on 2026-10-05: D1's window is that day alone
        let (flags, new) = rewindowed(
            &def,
            form,
            Some("D1"),
            &values,
            &json!([other]),
            Some(d("2026-10-05")),
            tz,
        )
        .unwrap_or_else(|| panic!("a change"));
        assert_eq!(flags[0], other);
        assert_eq!(flags[1]["item"], "assessed_on");
        assert!(new.is_some());
        // the same day 1 again changes nothing; day 1 on the record's date clears the flag
        assert_eq!(
            rewindowed(
                &def,
                form,
                Some("D1"),
                &values,
                &flags,
                Some(d("2026-10-05")),
                tz
            ),
            None
        );
        let (cleared, none) = rewindowed(
            &def,
            form,
            Some("D1"),
            &values,
            &flags,
            Some(d("2026-10-04")),
            tz,
        )
        .unwrap_or_else(|| panic!("a change"));
        assert_eq!(cleared, json!([other]));
        assert!(none.is_none());
    }

    #[test]
    fn records_whose_study_day_a_new_day_one_would_change_are_named() {
        let def = study();
        let tz = chrono_tz::Europe::Paris;
        let records = vec![
            (
                7,
                "dosing".to_owned(),
                json!({"study_day": 2, "given_at": "2026-10-06T08:00:00Z"}),
            ),
            (
                8,
                "vitals".to_owned(),
                json!({"measured_at": "2026-10-06T08:00:00Z", "celsius": "37.0"}),
            ),
            (
                9,
                "diary".to_owned(),
                json!({"kept_on": "2026-10-06", "pain_mm": 1}),
            ),
        ];
        assert!(stranded(&def, &records, Some(d("2026-10-05")), tz).is_empty());
        assert_eq!(
            stranded(&def, &records, Some(d("2026-10-04")), tz),
            ["dosing 7 (study day 2)"]
        );
        assert_eq!(
            stranded(&def, &records, None, tz),
            ["dosing 7 (study day 2)"]
        );
    }

    #[test]
    fn stored_records_give_their_doses_and_fevers() {
        let def = study();
        let mut c = ctx(None);
        facts_of(
            &def,
            "dosing",
            &json!({"study_day": 3, "given_at": "2026-10-07T08:00:00Z", "given": true}),
            &mut c,
        );
        facts_of(
            &def,
            "dosing",
            &json!({"study_day": 4, "given_at": "2026-10-08T08:00:00Z", "given": false}),
            &mut c,
        );
        facts_of(
            &def,
            "vitals",
            &json!({"measured_at": "2026-10-07T07:00:00Z", "fever": true}),
            &mut c,
        );
        facts_of(
            &def,
            "vitals",
            &json!({"measured_at": "2026-10-07T06:00:00Z", "fever": false}),
            &mut c,
        );
        assert_eq!(
            c.doses,
            [GivenDose {
                treatment: "drug".into(),
                at: t("2026-10-07T08:00:00Z"),
                day: Some(3)
            }]
        );
        assert_eq!(c.fevers, [t("2026-10-07T07:00:00Z")]);
        assert_eq!(fact_forms(&def), ["dosing", "vitals"]);
        let tz = chrono_tz::Europe::Paris;
        let a = json!({"given_at": "2026-10-07T23:00:00Z"});
        let b = json!({"given_at": "2026-10-09T08:00:00Z"});
        assert_eq!(
            fact_date(&def, "dosing", &[&b, &a], tz),
            Some(d("2026-10-08"))
        );
        assert_eq!(fact_date(&def, "pain", &[&a], tz), None);
        assert!(dose_since(&def, "dosing", &a, d("2026-10-08"), tz));
        assert!(!dose_since(&def, "dosing", &a, d("2026-10-09"), tz));
        assert!(!dose_since(&def, "vitals", &a, d("2026-10-01"), tz));
    }
}
