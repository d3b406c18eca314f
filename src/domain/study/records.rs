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
use crate::domain::partial_date::PartialDate;
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

/// The consent window and plausibility of a record's date: not before the subject's date
/// floor (birth month, 1900), not before the first consent nor after a withdrawal, not in
/// the future. `field` names the dating item.
pub fn check_date(
    field: &str,
    date: RecordDate,
    floor: DateFloor,
    first_signed: Option<NaiveDate>,
    withdrawn_on: Option<NaiveDate>,
    now: DateTime<Utc>,
    today: NaiveDate,
) -> Result<(), FieldError> {
    let cmp = |x: NaiveDate| match date {
        RecordDate::Day(d) | RecordDate::At(_, d) => d.cmp(&x),
        RecordDate::Partial(p) => p.cmp_date(x),
    };
    match date {
        RecordDate::Day(d) | RecordDate::At(_, d) => floor.check(field, d)?,
        RecordDate::Partial(p) => floor.check_partial(field, &p)?,
    }
    let future = match date {
        RecordDate::At(t, _) => crate::domain::values::not_in_future(field, t, now).is_err(),
        _ => cmp(today).is_gt(),
    };
    if future {
        return Err(FieldError::new(field, "must not be in the future"));
    }
    match first_signed {
        None => Err(FieldError::new(
            field,
            "no informed consent is recorded for this subject: record the consent first",
        )),
        Some(s) if cmp(s).is_lt() => Err(FieldError::new(
            field,
            format!("is before the informed consent signed on {s}"),
        )),
        _ => match withdrawn_on {
            Some(w) if cmp(w).is_gt() => Err(FieldError::new(
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
    fn the_record_date_lies_in_the_consent_window() {
        let d = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap_or_default();
        let floor = DateFloor::of_birth("2020-01");
        let now = Utc::now();
        let today = now.date_naive();
        let check = |date, signed, withdrawn| {
            check_date("values.x", date, floor, signed, withdrawn, now, today)
                .err()
                .map(|e| e.message)
        };
        assert_eq!(
            check(
                RecordDate::Day(d("2026-10-05")),
                Some(d("2026-10-01")),
                None
            ),
            None
        );
        assert!(check(
            RecordDate::Day(d("2026-09-30")),
            Some(d("2026-10-01")),
            None
        )
        .is_some_and(|m| m.contains("before the informed consent")));
        assert!(check(RecordDate::Day(d("2026-10-05")), None, None)
            .is_some_and(|m| m.contains("no informed consent")));
        assert!(check(
            RecordDate::Day(d("2026-10-05")),
            Some(d("2026-10-01")),
            Some(d("2026-10-04"))
        )
        .is_some_and(|m| m.contains("withdrawal")));
        assert!(check(
            RecordDate::Day(d("2019-12-31")),
            Some(d("2019-01-01")),
            None
        )
        .is_some_and(|m| m.contains("birth")));
        let partial = PartialDate::parse("2026-10").expect("partial");
        assert_eq!(
            check(RecordDate::Partial(partial), Some(d("2026-10-20")), None),
            None
        );
        let tomorrow = today.succ_opt().unwrap_or(today);
        assert!(
            check(RecordDate::Day(tomorrow), Some(d("2026-10-01")), None)
                .is_some_and(|m| m.contains("future"))
        );
    }
}
