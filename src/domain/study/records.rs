//! Rules of a form record around its checked values: how values are stored (numbers exactly,
//! decimals at the item's digits), how a correction merges with what was entered, which
//! items a change touched, which visit a record belongs to, and the date that places it in
//! the consent window.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, SecondsFormat, Timelike, Utc};
use chrono_tz::Tz;
use serde_json::{Map, Value as Json};

use super::model::{Definition, Form, Repeat, RuleKind};
use super::values::{Flag, ItemValue};
use crate::domain::partial_date::{self, PartialDate};
use crate::domain::time::{local_date, DateFloor};
use crate::domain::FieldError;

pub type Values = Map<String, Json>;

/// A value as stored and returned. Decimals are text at the item's digits (`"37.50"`): a
/// JSON number would pass through binary floating point in most clients, and lose the
/// trailing zero in all of them.
pub fn to_json(v: &ItemValue) -> Json {
    match v {
        ItemValue::Text(s) | ItemValue::PartialDate(s) | ItemValue::Choice(s) => {
            Json::from(s.clone())
        }
        ItemValue::Integer(i) => Json::from(*i),
        ItemValue::Decimal(d) => Json::from(d.to_string()),
        ItemValue::Boolean(b) => Json::from(*b),
        ItemValue::Date(d) => Json::from(d.format("%Y-%m-%d").to_string()),
        // the fraction of a second as entered, in as many digits as it needs (the legacy
        // forms' answer: `08:00:00Z`, `08:00:00.500Z`, `08:00:00.123456Z`)
        ItemValue::DateTime(t) => Json::from(t.to_rfc3339_opts(SecondsFormat::AutoSi, true)),
        ItemValue::Time(t) if t.second() == 0 => Json::from(t.format("%H:%M").to_string()),
        ItemValue::Time(t) => Json::from(t.format("%H:%M:%S").to_string()),
        ItemValue::Choices(c) => Json::from(c.clone()),
    }
}

pub fn stored(values: &BTreeMap<String, ItemValue>) -> Values {
    values
        .iter()
        .map(|(k, v)| (k.clone(), to_json(v)))
        .collect()
}

pub fn flags_json(flags: &[Flag]) -> Json {
    Json::Array(
        flags
            .iter()
            .map(|f| serde_json::json!({"item": f.item, "message": f.message}))
            .collect(),
    )
}

/// What a correction is checked as: the values entered before (derived ones are computed
/// again), with the items the change names replaced; `null` clears an item.
pub fn merge(form: &Form, before: &Values, change: &Values) -> Values {
    let mut out: Values = before
        .iter()
        .filter(|(k, _)| form.item(k).is_none_or(|i| !i.derived()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (k, v) in change {
        if v.is_null() && form.item(k).is_some_and(|i| !i.derived()) {
            out.remove(k);
        } else {
            out.insert(k.clone(), v.clone());
        }
    }
    out
}

/// The items whose value differs, old and new (`null` for no value), for the audit trail.
pub fn changes(before: &Values, after: &Values) -> (Values, Values) {
    let mut old = Values::new();
    let mut new = Values::new();
    for k in before.keys().chain(after.keys()) {
        let o = before.get(k).cloned().unwrap_or(Json::Null);
        let n = after.get(k).cloned().unwrap_or(Json::Null);
        if o != n && !old.contains_key(k) {
            old.insert(k.clone(), o);
            new.insert(k.clone(), n);
        }
    }
    (old, new)
}

/// Where a record goes: its visit, for a form entered per visit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub visit: Option<String>,
}

/// What makes a record the only live one of its form for the subject (a unique key), and
/// how a refusal names it: the scheduled visit of a form entered per visit; for a form
/// entered per day, the study day its `study_day` rule gives, else the site-local date of
/// its `dated_by` item. None where records repeat (logs, unscheduled visits).
pub fn repeat_key(
    def: &Definition,
    form: &Form,
    visit: Option<&str>,
    values: &BTreeMap<String, ItemValue>,
    tz: Tz,
) -> Option<(String, String)> {
    match form.repeat {
        Repeat::PerVisit => def
            .visit(visit?)
            .filter(|v| !v.unscheduled)
            .map(|v| (v.id.clone(), format!("visit {}", v.id))),
        Repeat::PerDay => {
            let day = def
                .rules
                .iter()
                .filter(|r| r.kind == RuleKind::StudyDay && r.form.as_deref() == Some(&form.id))
                .find_map(|r| match values.get(r.item("day")?) {
                    Some(ItemValue::Integer(d)) => Some(*d),
                    _ => None,
                });
            match day {
                Some(d) => Some((format!("day:{d}"), format!("study day {d}"))),
                None => match record_date(form, values, tz)? {
                    RecordDate::Day(d) | RecordDate::At(_, d) => {
                        Some((format!("date:{d}"), format!("{d} (site time)")))
                    }
                    RecordDate::Partial(_) => None,
                },
            }
        }
        Repeat::Any => None,
    }
}

pub fn placement(
    def: &Definition,
    form: &Form,
    visit: Option<&str>,
) -> Result<Placement, FieldError> {
    match (form.repeat, visit) {
        (Repeat::PerVisit, None) => Err(FieldError::new(
            "visit",
            format!("required: the form {} is entered per visit", form.id),
        )),
        (Repeat::PerVisit, Some(id)) => {
            let listing: Vec<&str> = def
                .visits
                .iter()
                .filter(|v| v.forms.contains(&form.id))
                .map(|v| v.id.as_str())
                .collect();
            match def.visit(id) {
                Some(v) if v.forms.contains(&form.id) => Ok(Placement {
                    visit: Some(v.id.clone()),
                }),
                _ => Err(FieldError::new(
                    "visit",
                    format!(
                        "must be a visit of the form {}: {}",
                        form.id,
                        listing.join(", ")
                    ),
                )),
            }
        }
        (_, Some(_)) => Err(FieldError::new(
            "visit",
            format!(
                "must be absent: the form {} is not entered per visit",
                form.id
            ),
        )),
        (_, None) => Ok(Placement { visit: None }),
    }
}

/// The date of a record (its form's `dated_by` item), as the site's calendar has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordDate {
    Day(NaiveDate),
    /// a date known only in part: refused only when every day it can mean is outside
    Partial(PartialDate),
    /// a date and time: also not in the future beyond the clock skew
    At(DateTime<Utc>, NaiveDate),
}

pub fn record_date(
    form: &Form,
    values: &BTreeMap<String, ItemValue>,
    tz: Tz,
) -> Option<RecordDate> {
    match values.get(&form.dated_by)? {
        ItemValue::Date(d) => Some(RecordDate::Day(*d)),
        ItemValue::DateTime(t) => Some(RecordDate::At(*t, local_date(*t, tz))),
        ItemValue::PartialDate(s) => PartialDate::parse(s).map(RecordDate::Partial),
        _ => None,
    }
}

/// What a record's dates are held to, from the subject: its date floor (birth month, 1900),
/// its consent window and the site's clock.
#[derive(Debug, Clone, Copy)]
pub struct Dating {
    pub tz: Tz,
    pub floor: DateFloor,
    pub first_signed: Option<NaiveDate>,
    pub withdrawn_on: Option<NaiveDate>,
    pub now: DateTime<Utc>,
}

/// Every date of a record is plausible: each date, partial date and datetime item not
/// before the subject's date floor and not in the future (the site-local today; a datetime
/// beyond the clock skew). The record's date (`dated_by`) lies in the consent window: not
/// before the first consent, nor after a withdrawal unless the form takes records after
/// one (`after_withdrawal`). Every error is reported, as `values.<item>`.
pub fn check_dates(
    form: &Form,
    values: &BTreeMap<String, ItemValue>,
    d: &Dating,
) -> Result<(), Vec<FieldError>> {
    let today = local_date(d.now, d.tz);
    let mut errors = Vec::new();
    for item in &form.items {
        let field = format!("values.{}", item.id);
        let checked = match values.get(&item.id) {
            Some(ItemValue::Date(day)) => d
                .floor
                .check(&field, *day)
                .and_then(|()| partial_date::not_in_future(&field, &PartialDate::of(*day), today)),
            Some(v @ ItemValue::PartialDate(_)) => match super::values::as_partial(v) {
                Some(p) => d
                    .floor
                    .check_partial(&field, &p)
                    .and_then(|()| partial_date::not_in_future(&field, &p, today)),
                None => Ok(()),
            },
            Some(ItemValue::DateTime(t)) => d
                .floor
                .check(&field, local_date(*t, d.tz))
                .and_then(|()| crate::domain::values::not_in_future(&field, *t, d.now)),
            _ => Ok(()),
        };
        if let Err(e) = checked {
            errors.push(e);
        }
    }
    if errors.is_empty() {
        if let Some(date) = record_date(form, values, d.tz) {
            let withdrawn_on = d.withdrawn_on.filter(|_| !form.after_withdrawal);
            if let Err(e) = consent_window(
                &format!("values.{}", form.dated_by),
                date,
                d.first_signed,
                withdrawn_on,
            ) {
                errors.push(e);
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// Whether a record dated `date` is after `withdrawn_on` (every day a partial date can
/// mean is): data the consent no longer covers.
pub fn after_withdrawal(date: RecordDate, withdrawn_on: NaiveDate) -> bool {
    match date {
        RecordDate::Day(d) | RecordDate::At(_, d) => d > withdrawn_on,
        RecordDate::Partial(p) => p.cmp_date(withdrawn_on).is_gt(),
    }
}

/// The date of a stored record (its `dated_by` value as stored: a date, a datetime, a
/// partial date).
pub fn stored_date(form: &Form, values: &Json, tz: Tz) -> Option<RecordDate> {
    let s = values.get(&form.dated_by)?.as_str()?;
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Some(RecordDate::Day(d));
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        let t = t.with_timezone(&Utc);
        return Some(RecordDate::At(t, local_date(t, tz)));
    }
    PartialDate::parse(s).map(RecordDate::Partial)
}

/// The live records (id, form, stored values) a withdrawal on `withdrawn_on` would leave
/// outside the consent, named as an answer names them (`vitals 12 on 2026-10-06`); records
/// of forms that take reports after a withdrawal (`after_withdrawal`) stay.
pub fn dated_after(
    def: &Definition,
    records: &[(i64, String, Json)],
    withdrawn_on: NaiveDate,
    tz: Tz,
) -> Vec<String> {
    records
        .iter()
        .filter_map(|(id, form, values)| {
            let form = def.form(form).filter(|f| !f.after_withdrawal)?;
            let date = stored_date(form, values, tz)?;
            after_withdrawal(date, withdrawn_on).then(|| {
                let on = match date {
                    RecordDate::Day(d) | RecordDate::At(_, d) => d.to_string(),
                    RecordDate::Partial(_) => values[&form.dated_by]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                };
                format!("{} {id} on {on}", form.id)
            })
        })
        .collect()
}

/// The earliest date of the live records (id, form, stored values) by their `dated_by`,
/// a partial date counting from the first day it can mean: what a first consent must not
/// come after.
pub fn earliest(def: &Definition, records: &[(i64, String, Json)], tz: Tz) -> Option<NaiveDate> {
    records
        .iter()
        .filter_map(
            |(_, form, values)| match stored_date(def.form(form)?, values, tz)? {
                RecordDate::Day(d) | RecordDate::At(_, d) => Some(d),
                RecordDate::Partial(p) => {
                    NaiveDate::from_ymd_opt(p.year, p.month.unwrap_or(1), p.day.unwrap_or(1))
                }
            },
        )
        .min()
}

fn consent_window(
    field: &str,
    date: RecordDate,
    first_signed: Option<NaiveDate>,
    withdrawn_on: Option<NaiveDate>,
) -> Result<(), FieldError> {
    let before = |x: NaiveDate| match date {
        RecordDate::Day(d) | RecordDate::At(_, d) => d < x,
        RecordDate::Partial(p) => p.cmp_date(x).is_lt(),
    };
    match first_signed {
        None => Err(FieldError::new(
            field,
            "no informed consent is recorded for this subject: record the consent first",
        )),
        Some(s) if before(s) => Err(FieldError::new(
            field,
            format!("is before the informed consent signed on {s}"),
        )),
        _ => match withdrawn_on {
            Some(w) if after_withdrawal(date, w) => Err(FieldError::new(
                field,
                format!("is after the consent withdrawal on {w}"),
            )),
            _ => Ok(()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn study() -> Definition {
        super::super::parse(
            "kawasaki",
            include_str!("../../../config/studies/kawasaki.toml"),
        )
        .unwrap_or_else(|e| panic!("{e:?}"))
    }

    fn map(v: Json) -> Values {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn decimals_are_stored_as_entered_at_the_items_digits() {
        let def = study();
        let form = def.form("echocardiography").expect("echo");
        let input = map(
            json!({"performed_on": "2026-10-05", "lmca_z": 1.5, "lad_z": "2.25",
                               "rca_z": -1, "dilatation": false, "aneurysm": false}),
        );
        let checked =
            super::super::values::check(&def, form, &input).unwrap_or_else(|e| panic!("{e:?}"));
        let s = stored(&checked.values);
        assert_eq!(s["lmca_z"], json!("1.50"));
        assert_eq!(s["lad_z"], json!("2.25"));
        assert_eq!(s["rca_z"], json!("-1.00"));
        assert_eq!(s["max_z"], json!("2.25"));
        assert_eq!(s["performed_on"], json!("2026-10-05"));
        // what is stored checks again to the same values
        let again = super::super::values::check(&def, form, &merge(form, &s, &Values::new()))
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(stored(&again.values), s);
    }

    #[test]
    fn a_datetime_is_stored_with_its_fraction_of_a_second() {
        let at = |s: &str| {
            let t: DateTime<Utc> = s.parse().unwrap_or_default();
            to_json(&ItemValue::DateTime(t))
        };
        assert_eq!(at("2026-10-05T08:00:00Z"), json!("2026-10-05T08:00:00Z"));
        assert_eq!(
            at("2026-10-05T08:00:00.5Z"),
            json!("2026-10-05T08:00:00.500Z")
        );
        assert_eq!(
            at("2026-10-05T08:00:00.123456Z"),
            json!("2026-10-05T08:00:00.123456Z")
        );
        assert_eq!(
            at("2026-10-05T06:00:00.000001+00:00"),
            json!("2026-10-05T06:00:00.000001Z")
        );
    }

    #[test]
    fn a_correction_replaces_named_items_clears_nulls_and_drops_derived_ones() {
        let def = study();
        let form = def.form("echocardiography").expect("echo");
        let before = map(
            json!({"lmca_z": "1.50", "max_z": "1.50", "aneurysm_size_mm": "3.0", "dilatation": false}),
        );
        let merged = merge(
            form,
            &before,
            &map(json!({"lmca_z": "2.00", "aneurysm_size_mm": null})),
        );
        assert_eq!(merged, map(json!({"lmca_z": "2.00", "dilatation": false})));
        // a client-sent derived value stays in, for the check to refuse it
        let sent = merge(form, &before, &map(json!({"max_z": "9.00"})));
        assert_eq!(sent["max_z"], json!("9.00"));
    }

    #[test]
    fn changes_name_each_item_with_its_old_and_new_value() {
        let (o, n) = changes(
            &map(json!({"a": 1, "b": "x", "c": true})),
            &map(json!({"a": 2, "c": true, "d": "new"})),
        );
        assert_eq!(json!(o), json!({"a": 1, "b": "x", "d": null}));
        assert_eq!(json!(n), json!({"a": 2, "b": null, "d": "new"}));
    }

    #[test]
    fn a_per_visit_form_needs_a_visit_that_lists_it() {
        let def = study();
        let echo = def.form("echocardiography").expect("echo");
        let err = |r: Result<Placement, FieldError>| r.err().map(|e| e.message);
        assert!(err(placement(&def, echo, None)).is_some_and(|m| m.starts_with("required")));
        assert!(
            err(placement(&def, echo, Some("NOPE"))).is_some_and(|m| m.contains("must be a visit"))
        );
        let uns = placement(&def, echo, Some("UNS")).unwrap_or_else(|e| panic!("{e:?}"));
        let none = BTreeMap::new();
        let tz = chrono_tz::Europe::Paris;
        assert_eq!(
            repeat_key(&def, echo, uns.visit.as_deref(), &none, tz),
            None
        );
        assert_eq!(
            repeat_key(&def, echo, Some("V1"), &none, tz).map(|k| k.0),
            Some("V1".to_owned())
        );
        let ae = def.form("adverse_event").expect("ae");
        assert!(
            err(placement(&def, ae, Some("UNS"))).is_some_and(|m| m.starts_with("must be absent"))
        );
    }

    #[test]
    fn every_date_is_plausible_and_the_record_date_lies_in_the_consent_window() {
        let def = study();
        let d = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap_or_default();
        let now: DateTime<Utc> = "2026-12-05T12:00:00Z".parse().unwrap_or_default();
        let dating = |signed: Option<&str>, withdrawn: Option<&str>| Dating {
            tz: chrono_tz::Europe::Paris,
            floor: DateFloor::of_birth("2020-01"),
            first_signed: signed.map(d),
            withdrawn_on: withdrawn.map(d),
            now,
        };
        let errors = |form: &str, values: &[(&str, ItemValue)], dt: Dating| {
            let form = def.form(form).expect("form");
            let values = values
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect();
            check_dates(form, &values, &dt)
                .err()
                .unwrap_or_default()
                .into_iter()
                .map(|e| format!("{}: {}", e.field, e.message))
                .collect::<Vec<_>>()
        };
        let echo = |on: &str| [("performed_on", ItemValue::Date(d(on)))];
        let open = dating(Some("2026-10-01"), None);
        assert!(errors("echocardiography", &echo("2026-10-05"), open).is_empty());
        assert_eq!(
            errors("echocardiography", &echo("2026-09-30"), open),
            ["values.performed_on: is before the informed consent signed on 2026-10-01"]
        );
        assert_eq!(
            errors("echocardiography", &echo("2026-10-05"), dating(None, None)),
            ["values.performed_on: no informed consent is recorded for this subject: record the consent first"]
        );
        let withdrawn = dating(Some("2026-10-01"), Some("2026-10-04"));
        assert_eq!(
            errors("echocardiography", &echo("2026-10-05"), withdrawn),
            ["values.performed_on: is after the consent withdrawal on 2026-10-04"]
        );
        assert_eq!(
            errors("echocardiography", &echo("2019-12-31"), open),
            ["values.performed_on: must not be before the subject's birth month (2020-01-01)"]
        );
        assert_eq!(
            errors("echocardiography", &echo("2026-12-06"), open),
            ["values.performed_on: must not be in the future"]
        );

        // every date of an adverse event, at its precision; the form takes reports after a
        // withdrawal
        let ae = |onset: &str, end: &str, aware: &str| {
            [
                ("onset_date", ItemValue::PartialDate(onset.into())),
                ("end_date", ItemValue::PartialDate(end.into())),
                ("awareness_date", ItemValue::Date(d(aware))),
            ]
        };
        assert!(errors(
            "adverse_event",
            &ae("2026-10", "2026-12", "2026-12-05"),
            withdrawn
        )
        .is_empty());
        assert_eq!(
            errors("adverse_event", &ae("2026-09", "2027", "2026-12-06"), open),
            [
                "values.end_date: must not be in the future",
                "values.awareness_date: must not be in the future"
            ]
        );
        assert_eq!(
            errors("adverse_event", &ae("2019", "2019-12", "2026-12-05"), open),
            [
                "values.onset_date: must not be before the subject's birth month (2020-01-01)",
                "values.end_date: must not be before the subject's birth month (2020-01-01)"
            ]
        );
        assert!(after_withdrawal(
            RecordDate::Partial(PartialDate::parse("2026-11").expect("p")),
            d("2026-10-31")
        ));
        assert!(!after_withdrawal(
            RecordDate::Partial(PartialDate::parse("2026-10").expect("p")),
            d("2026-10-04")
        ));
    }

    #[test]
    fn a_withdrawal_names_the_records_after_it_except_safety_reports() {
        let def = study();
        let d = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap_or_default();
        let tz = chrono_tz::Europe::Paris;
        let records = vec![
            (
                1,
                "echocardiography".to_owned(),
                json!({"performed_on": "2026-10-05"}),
            ),
            (
                2,
                "echocardiography".to_owned(),
                json!({"performed_on": "2026-10-06"}),
            ),
            (
                3,
                "adverse_event".to_owned(),
                json!({"onset_date": "2026-11"}),
            ),
            (
                4,
                "disease_activity".to_owned(),
                json!({"assessed_on": "2026-10-04"}),
            ),
        ];
        assert_eq!(
            dated_after(&def, &records, d("2026-10-05"), tz),
            ["echocardiography 2 on 2026-10-06"]
        );
        assert_eq!(earliest(&def, &records, tz), Some(d("2026-10-04")));
        let partial = vec![(3, "adverse_event".to_owned(), json!({"onset_date": "2026"}))];
        assert_eq!(earliest(&def, &partial, tz), Some(d("2026-01-01")));
    }
}
