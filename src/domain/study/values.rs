//! The values of one record of a form, checked against the definition: what the one form
//! engine will run on every write. Types (numbers exactly as entered, at the item's decimals),
//! codes, required items and conditions, hard and soft ranges, derivations and edit checks.
//! Errors name the item as `values.<item>`, every one of them is reported; soft findings are
//! returned as flags (the engine stores them and opens a query).

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::{Arc, LazyLock};

use bigdecimal::{BigDecimal, RoundingMode};
use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use serde_json::Value as Json;

use super::model::*;
use crate::domain::partial_date::{self, PartialDate};
use crate::domain::values::bounded_text;
use crate::domain::FieldError;

/// A checked value of an item.
#[derive(Debug, Clone, PartialEq)]
pub enum ItemValue {
    Text(String),
    Integer(i64),
    /// at exactly the item's decimals: `37.5` entered for a two-decimal item is `37.50`
    Decimal(BigDecimal),
    Boolean(bool),
    Date(NaiveDate),
    PartialDate(String),
    DateTime(DateTime<Utc>),
    Time(NaiveTime),
    Choice(String),
    Choices(Vec<String>),
}

/// A soft finding: stored, flagged, and a query opened on the item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flag {
    pub item: String,
    pub message: String,
    /// the query's origin: `edit_check` (a range, a check, a visit window), `dose_check` (a
    /// dose rule's deviation, as today's injection form queries it)
    pub origin: &'static str,
}

impl Flag {
    pub fn edit_check(item: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            item: item.into(),
            message: message.into(),
            origin: "edit_check",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Checked {
    /// entered and derived values; items without a value are absent
    pub values: BTreeMap<String, ItemValue>,
    pub flags: Vec<Flag>,
}

fn field(item: &str) -> String {
    format!("values.{item}")
}

/// Checks `input` (the `values` object of a request) against `form`.
pub fn check(
    def: &Definition,
    form: &Form,
    input: &serde_json::Map<String, Json>,
) -> Result<Checked, Vec<FieldError>> {
    let mut errors = Vec::new();
    let mut values = BTreeMap::new();
    for (key, v) in input {
        match form.item(key) {
            None => errors.push(FieldError::new(
                field(key),
                format!("not an item of the form {}", form.id),
            )),
            Some(i) if i.derived() && !v.is_null() => errors.push(FieldError::new(
                field(key),
                "is computed by the server: do not send it",
            )),
            Some(_) if v.is_null() => {}
            Some(i) => match parse(def, i, v) {
                // no code ticked is no value: a required list needs one, a hidden one may
                // be sent empty (today's adverse event form answers `[]`)
                Ok(ItemValue::Choices(c)) if c.is_empty() => {}
                Ok(x) => {
                    values.insert(i.id.clone(), x);
                }
                Err(m) => errors.push(FieldError::new(field(key), m)),
            },
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    derive(def, form, &mut values, &mut errors);
    let mut flags = Vec::new();
    for i in &form.items {
        let shown = match &i.show_if {
            None => true,
            Some(e) => matches!(eval(def, &values, e), Ok(cel::Value::Bool(true))),
        };
        let has = values.contains_key(&i.id);
        if !shown && has && !i.derived() {
            errors.push(FieldError::new(
                field(&i.id),
                format!(
                    "must be empty: shown only when {}",
                    i.show_if
                        .as_ref()
                        .map(|e| e.source.as_str())
                        .unwrap_or_default()
                ),
            ));
        }
        if shown && !has && i.required {
            errors.push(FieldError::new(field(&i.id), "required"));
        }
        if let Some(ItemValue::Integer(_) | ItemValue::Decimal(_)) = values.get(&i.id) {
            let n = number(&values[&i.id]);
            for r in [&i.range, &i.soft_range].into_iter().flatten() {
                if let Some(m) = outside(r, &n, i.unit.as_deref()) {
                    match r.check {
                        Severity::Hard => errors.push(FieldError::new(field(&i.id), m)),
                        Severity::Soft => flags.push(Flag::edit_check(i.id.clone(), m)),
                    }
                }
            }
        }
    }
    for i in &form.items {
        let pair = i.not_before.as_ref().and_then(|o| {
            Some((
                o,
                as_partial(values.get(&i.id)?)?,
                as_partial(values.get(o)?)?,
            ))
        });
        if let Some((other, date, earlier)) = pair {
            if let Err(e) = partial_date::not_before(&field(&i.id), &date, other, &earlier) {
                errors.push(e);
            }
        }
    }
    for c in &form.checks {
        let holds = match eval(def, &values, &c.expr) {
            Ok(cel::Value::Bool(b)) => b,
            // a check that cannot run for want of a value holds: required says what is missing
            _ if c
                .expr
                .reads
                .iter()
                .any(|r| form.item(r).is_some() && !values.contains_key(r)) =>
            {
                true
            }
            _ => false,
        };
        if !holds {
            for item in &c.items {
                match c.check {
                    Severity::Hard => errors.push(FieldError::new(field(item), c.message.clone())),
                    Severity::Soft => flags.push(Flag::edit_check(item.clone(), c.message.clone())),
                }
            }
        }
    }
    if errors.is_empty() {
        Ok(Checked { values, flags })
    } else {
        Err(errors)
    }
}

/// A date or partial date value, at the precision it is known.
pub fn as_partial(v: &ItemValue) -> Option<PartialDate> {
    match v {
        ItemValue::Date(d) => Some(PartialDate::of(*d)),
        ItemValue::PartialDate(s) => PartialDate::parse(s),
        _ => None,
    }
}

fn number(v: &ItemValue) -> BigDecimal {
    match v {
        ItemValue::Integer(i) => BigDecimal::from(*i),
        ItemValue::Decimal(d) => d.clone(),
        _ => BigDecimal::from(0),
    }
}

fn outside(r: &Range, n: &BigDecimal, unit: Option<&str>) -> Option<String> {
    let low = r.min.as_ref().is_some_and(|m| n < m);
    let high = r.max.as_ref().is_some_and(|m| n > m);
    if !(low || high) {
        return None;
    }
    if let Some(m) = &r.message {
        return Some(m.clone());
    }
    let u = unit.map(|u| format!(" {u}")).unwrap_or_default();
    Some(match (&r.min, &r.max) {
        (Some(a), Some(b)) => format!("must be between {a} and {b}{u}"),
        (Some(a), None) => format!("must be at least {a}{u}"),
        (None, Some(b)) => format!("must be at most {b}{u}"),
        (None, None) => "out of range".into(),
    })
}

fn codes<'a>(def: &'a Definition, list: &str) -> Vec<&'a str> {
    def.codelist(list)
        .map(|l| l.codes.iter().map(|c| c.code.as_str()).collect())
        .unwrap_or_default()
}

/// One value from JSON, by the item's type. Decimals are read from the number's text, never
/// through arithmetic: what was entered is what is kept.
fn parse(def: &Definition, i: &Item, v: &Json) -> Result<ItemValue, String> {
    let text = || {
        v.as_str()
            .ok_or_else(|| format!("must be a {}", i.kind.name()))
    };
    match &i.kind {
        ItemType::Text { max_length } => {
            let s = v.as_str().ok_or("must be a text")?;
            bounded_text("", s, *max_length as usize)
                .map(ItemValue::Text)
                .map_err(|e| e.message)
        }
        ItemType::Integer => v
            .as_i64()
            .map(ItemValue::Integer)
            .ok_or_else(|| "must be a whole number".into()),
        ItemType::Decimal { decimals } => {
            let written = match v {
                Json::Number(n) => n.to_string(),
                Json::String(s) => s.trim().to_owned(),
                _ => return Err("must be a number".into()),
            };
            let d = BigDecimal::from_str(&written).map_err(|_| "must be a number".to_owned())?;
            let d = d.normalized();
            if d.fractional_digit_count() > i64::from(*decimals) {
                return Err(format!(
                    "must have at most {decimals} digits after the point"
                ));
            }
            Ok(ItemValue::Decimal(d.with_scale(i64::from(*decimals))))
        }
        ItemType::Boolean => v
            .as_bool()
            .map(ItemValue::Boolean)
            .ok_or_else(|| "must be true or false".into()),
        ItemType::Date => NaiveDate::parse_from_str(text()?, "%Y-%m-%d")
            .map(ItemValue::Date)
            .map_err(|_| "must be a date, YYYY-MM-DD".into()),
        ItemType::PartialDate => {
            let s = text()?;
            PartialDate::parse(s)
                .map(|_| ItemValue::PartialDate(s.to_owned()))
                .ok_or_else(|| "must be YYYY, YYYY-MM or YYYY-MM-DD".into())
        }
        ItemType::DateTime => {
            let t = DateTime::parse_from_rfc3339(text()?)
                .map_err(|_| "must be a date and time with its offset (RFC 3339)".to_owned())?;
            // PostgreSQL's timestamptz, which exports and reads cast to, keeps microseconds:
            // a finer value would change on its way, so it is refused rather than rounded
            if t.timestamp_subsec_nanos() % 1_000 != 0 {
                return Err("must have at most 6 digits after the second (microseconds)".into());
            }
            Ok(ItemValue::DateTime(t.with_timezone(&Utc)))
        }
        ItemType::Time => {
            let s = text()?;
            NaiveTime::parse_from_str(s, "%H:%M")
                .or_else(|_| NaiveTime::parse_from_str(s, "%H:%M:%S"))
                .map(ItemValue::Time)
                .map_err(|_| "must be a time, HH:MM".into())
        }
        ItemType::Choice { codelist } => {
            let s = text()?;
            let known = codes(def, codelist);
            if known.contains(&s) {
                Ok(ItemValue::Choice(s.to_owned()))
            } else {
                Err(format!("must be one of: {}", known.join(", ")))
            }
        }
        ItemType::Choices { codelist } => {
            let list = v.as_array().ok_or("must be a list of codes")?;
            let known = codes(def, codelist);
            let mut out: Vec<String> = Vec::new();
            for x in list {
                let s = x
                    .as_str()
                    .filter(|s| known.contains(s))
                    .ok_or_else(|| format!("each must be one of: {}", known.join(", ")))?;
                if out.iter().any(|o| o == s) {
                    return Err(format!("lists `{s}` twice"));
                }
                out.push(s.to_owned());
            }
            Ok(ItemValue::Choices(out))
        }
    }
}

fn to_cel(v: &ItemValue) -> cel::Value {
    let midnight = |d: &NaiveDate| -> cel::Value {
        let t = d.and_time(NaiveTime::MIN).and_utc().fixed_offset();
        cel::Value::Timestamp(t)
    };
    match v {
        ItemValue::Text(s) | ItemValue::PartialDate(s) | ItemValue::Choice(s) => {
            cel::Value::String(s.clone().into())
        }
        ItemValue::Time(t) => cel::Value::String(t.format("%H:%M:%S").to_string().into()),
        ItemValue::Integer(i) => cel::Value::Int(*i),
        // checks and derivations compute in binary floating point; stored values stay exact
        ItemValue::Decimal(d) => cel::Value::Float(d.to_string().parse().unwrap_or(f64::NAN)),
        ItemValue::Boolean(b) => cel::Value::Bool(*b),
        ItemValue::Date(d) => midnight(d),
        ItemValue::DateTime(t) => cel::Value::Timestamp(t.fixed_offset()),
        ItemValue::Choices(c) => cel::Value::List(
            c.iter()
                .map(|s| cel::Value::String(s.clone().into()))
                .collect::<Vec<_>>()
                .into(),
        ),
    }
}

/// CEL's standard functions, built once: building them is most of the work of a fresh
/// context (`cel::Context::default` builds them on every call).
static STDLIB: LazyLock<Arc<cel::Env>> = LazyLock::new(|| Arc::new(cel::Env::stdlib()));

/// Runs an expression compiled at load over a record's values: the context holds only the
/// names it reads (an item without a value is `null`), not every item of the study.
fn eval(
    def: &Definition,
    values: &BTreeMap<String, ItemValue>,
    e: &Expr,
) -> Result<cel::Value, String> {
    let mut ctx = cel::Context::with_env(STDLIB.clone());
    for name in &e.reads {
        let v = if let Some(v) = values.get(name) {
            to_cel(v)
        } else if let Some(c) = def.constants.iter().find(|c| &c.id == name) {
            match &c.value {
                ConstantValue::Number(n) => {
                    cel::Value::Float(n.to_string().parse().unwrap_or(f64::NAN))
                }
                ConstantValue::Integer(i) => cel::Value::Int(*i),
                ConstantValue::Bool(b) => cel::Value::Bool(*b),
                ConstantValue::Text(t) => cel::Value::String(t.clone().into()),
            }
        } else {
            cel::Value::Null
        };
        ctx.add_variable_from_value(name.clone(), v);
    }
    e.program.execute(&ctx).map_err(|e| e.to_string())
}

/// Derived items, each after the derived items it reads (the definition has no cycles).
fn derive(
    def: &Definition,
    form: &Form,
    values: &mut BTreeMap<String, ItemValue>,
    errors: &mut Vec<FieldError>,
) {
    let mut pending: Vec<&Item> = form.items.iter().filter(|i| i.derive.is_some()).collect();
    while !pending.is_empty() {
        let ready = pending.iter().position(|i| {
            i.derive.as_ref().is_some_and(|e| {
                e.reads
                    .iter()
                    .all(|r| !pending.iter().any(|p| p.id == *r && p.id != i.id))
            })
        });
        let Some(at) = ready else { break };
        let i = pending.remove(at);
        let Some(e) = &i.derive else { continue };
        let missing = e
            .reads
            .iter()
            .any(|r| form.item(r).is_some_and(|x| x.derive.is_none()) && !values.contains_key(r));
        match eval(def, values, e) {
            Ok(cel::Value::Null) => {}
            Ok(v) => match from_cel(def, i, v) {
                Some(x) => {
                    values.insert(i.id.clone(), x);
                }
                None => errors.push(FieldError::new(
                    field(&i.id),
                    "its derivation gave a value of the wrong type",
                )),
            },
            // a derivation from a missing value has none
            Err(_) if missing => {}
            Err(m) => errors.push(FieldError::new(
                field(&i.id),
                format!("cannot be computed: {m}"),
            )),
        }
    }
}

fn from_cel(def: &Definition, i: &Item, v: cel::Value) -> Option<ItemValue> {
    match (&i.kind, v) {
        (ItemType::Integer, cel::Value::Int(n)) => Some(ItemValue::Integer(n)),
        (ItemType::Decimal { decimals }, cel::Value::Int(n)) => Some(ItemValue::Decimal(
            BigDecimal::from(n).with_scale(i64::from(*decimals)),
        )),
        (ItemType::Decimal { decimals }, cel::Value::Float(f)) if f.is_finite() => {
            BigDecimal::from_str(&f.to_string()).ok().map(|d| {
                ItemValue::Decimal(d.with_scale_round(i64::from(*decimals), RoundingMode::HalfUp))
            })
        }
        (ItemType::Boolean, cel::Value::Bool(b)) => Some(ItemValue::Boolean(b)),
        (ItemType::Text { .. }, cel::Value::String(s)) => Some(ItemValue::Text(s.to_string())),
        (ItemType::Choice { codelist }, cel::Value::String(s))
            if codes(def, codelist).contains(&s.as_str()) =>
        {
            Some(ItemValue::Choice(s.to_string()))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn study(name: &str) -> Definition {
        let text = match name {
            "kawasaki" => include_str!("../../../config/studies/kawasaki.toml"),
            _ => include_str!("../../../config/studies/thera.toml"),
        };
        super::super::parse(name, text).unwrap_or_else(|e| panic!("{e:?}"))
    }

    type Outcome = Result<Checked, Vec<(String, String)>>;

    fn run(def: &Definition, form: &str, v: serde_json::Value) -> Outcome {
        let form = def.form(form).unwrap_or_else(|| panic!("{form}"));
        let map = v.as_object().cloned().unwrap_or_default();
        check(def, form, &map).map_err(|e| e.into_iter().map(|f| (f.field, f.message)).collect())
    }

    fn fields(r: &Outcome) -> Vec<&str> {
        match r {
            Ok(_) => Vec::new(),
            Err(e) => e.iter().map(|(f, _)| f.as_str()).collect(),
        }
    }

    fn dec(s: &str) -> ItemValue {
        ItemValue::Decimal(BigDecimal::from_str(s).unwrap_or_default())
    }

    fn ok(r: Outcome) -> Checked {
        r.unwrap_or_else(|e| panic!("{e:?}"))
    }

    #[test]
    fn a_datetime_keeps_its_fraction_to_the_microsecond_and_refuses_finer() {
        let k = study("kawasaki");
        let at = |s: &str| {
            run(
                &k,
                "temperature",
                json!({"measured_at": s, "celsius": 37.0, "method": "oral"}),
            )
        };
        let c = ok(at("2026-11-05T08:00:00.123456+01:00"));
        let want: DateTime<Utc> = "2026-11-05T07:00:00.123456Z".parse().unwrap_or_default();
        assert_eq!(c.values["measured_at"], ItemValue::DateTime(want));
        assert_eq!(
            at("2026-11-05T08:00:00.1234567Z"),
            Err(vec![(
                "values.measured_at".into(),
                "must have at most 6 digits after the second (microseconds)".into()
            )])
        );
        // trailing zeros beyond the microsecond lose nothing
        assert!(at("2026-11-05T08:00:00.123456000Z").is_ok());
    }

    #[test]
    fn an_end_and_an_awareness_must_not_precede_the_onset_at_the_precision_known() {
        let k = study("kawasaki");
        let ae = |onset: &str, end: &str, aware: &str| {
            run(
                &k,
                "adverse_event",
                json!({"term": "Rash", "onset_date": onset, "end_date": end, "grade": 1,
                       "serious": false, "relationship": "possible", "action_taken": "none",
                       "outcome": "recovered", "awareness_date": aware}),
            )
        };
        assert!(ae("2026-11", "2026-11-01", "2026-11-01").is_ok());
        assert!(ae("2026-11-05", "2026-11", "2026-11-05").is_ok());
        assert_eq!(
            ae("2026-11-05", "2026-10", "2026-11-04"),
            Err(vec![
                (
                    "values.end_date".into(),
                    "must not be before onset_date".into()
                ),
                (
                    "values.awareness_date".into(),
                    "must not be before onset_date".into()
                )
            ])
        );
    }

    #[test]
    fn an_empty_list_of_codes_is_no_value() {
        let k = study("kawasaki");
        let ae = |serious: bool| {
            run(
                &k,
                "adverse_event",
                json!({"term": "Rash", "onset_date": "2026-11", "grade": 1, "serious": serious,
                       "seriousness_criteria": [], "relationship": "possible",
                       "action_taken": "none", "outcome": "recovering",
                       "awareness_date": "2026-11-05"}),
            )
        };
        let c = ok(ae(false));
        assert!(!c.values.contains_key("seriousness_criteria"));
        assert_eq!(
            ae(true),
            Err(vec![(
                "values.seriousness_criteria".into(),
                "required".into()
            )])
        );
    }

    #[test]
    fn a_temperature_is_typed_coded_and_range_checked() {
        let k = study("kawasaki");
        let c = ok(run(
            &k,
            "temperature",
            json!({"measured_at": "2026-11-05T08:00:00+01:00", "celsius": 38.5, "method": "rectal"}),
        ));
        assert_eq!(c.values["celsius"], dec("38.5"));
        let at: DateTime<Utc> = "2026-11-05T07:00:00Z".parse().unwrap_or_default();
        assert_eq!(c.values["measured_at"], ItemValue::DateTime(at));
        assert!(c.flags.is_empty());
        let r = run(
            &k,
            "temperature",
            json!({"measured_at": "2026-11-05T08:00:00Z", "celsius": 36.5, "method": "anal"}),
        );
        assert_eq!(
            r,
            Err(vec![(
                "values.method".into(),
                "must be one of: rectal, axillary, oral, tympanic, temporal".into()
            )])
        );
        let r = run(
            &k,
            "temperature",
            json!({"measured_at": "2026-11-05T08:00:00Z", "celsius": 29.9, "method": "oral"}),
        );
        assert_eq!(
            r,
            Err(vec![(
                "values.celsius".into(),
                "must be between 30.0 and 45.0 °C".into()
            )])
        );
        let r = run(
            &k,
            "temperature",
            json!({"measured_at": "2026-11-05T08:00:00Z", "celsius": 38.65, "method": "oral", "fever": true, "colour": "red"}),
        );
        assert_eq!(
            fields(&r),
            ["values.celsius", "values.colour", "values.fever"]
        );
        let r = run(&k, "temperature", json!({"celsius": 38.5}));
        assert_eq!(fields(&r), ["values.measured_at", "values.method"]);
    }

    #[test]
    fn decimals_are_kept_exactly_at_the_items_scale() {
        let k = study("kawasaki");
        let c = ok(run(
            &k,
            "echocardiography",
            json!({"performed_on": "2026-11-05", "lmca_z": 1.5, "lad_z": "2.10", "rca_z": 3.33, "dilatation": true, "aneurysm": false}),
        ));
        assert_eq!(c.values["lmca_z"], dec("1.50"));
        match &c.values["lad_z"] {
            ItemValue::Decimal(d) => assert_eq!(d.to_string(), "2.10"),
            other => panic!("{other:?}"),
        }
        // derived: the largest, and its class
        assert_eq!(c.values["max_z"], dec("3.33"));
        assert_eq!(
            c.values["lesion_class"],
            ItemValue::Choice("small_aneurysm".into())
        );
        // soft: stored, flagged
        let flagged: Vec<&str> = c.flags.iter().map(|f| f.item.as_str()).collect();
        assert_eq!(flagged, ["lad_z", "rca_z"]);
        let r = run(&k, "echocardiography", json!({"lad_z": 2.123}));
        assert!(r.err().unwrap_or_default().contains(&(
            "values.lad_z".to_owned(),
            "must have at most 2 digits after the point".to_owned()
        )));
    }

    #[test]
    fn a_hidden_item_must_be_empty_and_a_shown_required_one_filled() {
        let k = study("kawasaki");
        let base = json!({"performed_on": "2026-11-05", "lmca_z": 1.0, "lad_z": 1.0, "rca_z": 1.0, "dilatation": false});
        let mut v = base.clone();
        v["aneurysm"] = json!(false);
        v["aneurysm_size_mm"] = json!(4.5);
        assert_eq!(
            run(&k, "echocardiography", v),
            Err(vec![(
                "values.aneurysm_size_mm".into(),
                "must be empty: shown only when aneurysm".into()
            )])
        );
        let mut v = base;
        v["aneurysm"] = json!(true);
        assert_eq!(
            fields(&run(&k, "echocardiography", v.clone())),
            ["values.aneurysm_size_mm"]
        );
        v["aneurysm_size_mm"] = json!(4.5);
        assert!(run(&k, "echocardiography", v).is_ok());
    }

    #[test]
    fn edit_checks_name_their_items() {
        let k = study("kawasaki");
        let ae = json!({"term": "Pneumonia", "onset_date": "2026-11", "grade": 5, "serious": true,
                        "seriousness_criteria": ["hospitalisation"], "relationship": "possible",
                        "action_taken": "withdrawn", "outcome": "recovered", "awareness_date": "2026-11-20",
                        "meddra_code": "1234"});
        assert_eq!(
            fields(&run(&k, "adverse_event", ae)),
            [
                "values.meddra_code",
                "values.grade",
                "values.outcome",
                "values.seriousness_criteria",
                "values.end_date"
            ]
        );
        let fine = json!({"term": "Pneumonia", "onset_date": "2026-11", "grade": 3, "serious": false,
                          "relationship": "possible", "action_taken": "none", "outcome": "recovering",
                          "awareness_date": "2026-11-20"});
        assert!(run(&k, "adverse_event", fine).is_ok());
        let r = run(
            &k,
            "adverse_event",
            json!({"seriousness_criteria": ["death", "death"]}),
        );
        assert!(r.err().unwrap_or_default().contains(&(
            "values.seriousness_criteria".to_owned(),
            "lists `death` twice".to_owned()
        )));
    }

    #[test]
    fn derivations_are_computed_not_accepted() {
        let k = study("kawasaki");
        let v = json!({"assessed_on": "2026-11-05", "crp_mg_l": 350, "wbc": 18.2, "conjunctivitis": true,
                       "oral_changes": false, "rash": true, "extremity_changes": false, "lymphadenopathy": true});
        let c = ok(run(&k, "disease_activity", v.clone()));
        assert_eq!(c.values["clinical_signs"], ItemValue::Integer(3));
        assert_eq!(
            c.flags,
            vec![Flag::edit_check(
                "crp_mg_l",
                "unusually high: check the unit (mg/L)"
            )]
        );
        let mut sent = v;
        sent["clinical_signs"] = json!(3);
        assert_eq!(
            fields(&run(&k, "disease_activity", sent)),
            ["values.clinical_signs"]
        );
        let t = study("thera");
        let c = ok(run(
            &t,
            "eligibility_labs",
            json!({"sampled_on": "2026-11-01", "creatinine_clearance": 64.5, "neutrophils": 1.2, "pregnancy_test": "negative"}),
        ));
        assert_eq!(c.values["eligible_by_labs"], ItemValue::Boolean(false));
        assert_eq!(c.flags.len(), 1);
    }
}
