//! Derived endpoints per subject, computed from its live records (those entered in error left
//! out) by the definition's rules, whatever the study: its `dose` rules say which records are
//! doses (day, time, dose, given), its `fever_endpoints` rule which fever rule (form,
//! threshold, temperature and time items) the fever endpoints read, from how many hours
//! after the first dose, and until which study day's dose.
//!
//! An endpoint the study's rules do not define is left out of the answer (absent, not null):
//! null means the study has it and the records do not tell yet.

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;

use bigdecimal::{BigDecimal, ToPrimitive};
use chrono::{DateTime, Days, Duration, Utc};
use chrono_tz::Tz;
use serde::Serialize;
use serde_json::Value as Json;
use utoipa::ToSchema;

use super::study::model::{Definition, Rule, RuleKind};
use super::time::{end_of_local_day, local_date};

/// The endpoints of a subject. Each is there when the study's rules define it.
#[derive(Debug, Clone, Default, Serialize, ToSchema, PartialEq)]
pub struct Endpoints {
    /// `fever_free_at_<hours>h` (`fever_free_at_48h` for Kawasaki disease), by the study's
    /// `fever_endpoints` rule: no temperature above its fever rule's threshold from `hours`
    /// after the first dose up to the dose of study day `until_day` (else the end of that
    /// day, site time); `null` when nothing was measured then or no dose is recorded yet.
    /// Absent for a study without the rule.
    #[serde(flatten)]
    #[schema(value_type = BTreeMap<String, Option<bool>>)]
    pub fever_free: BTreeMap<String, Option<bool>>,
    /// Site-local days with at least one temperature above the threshold of the
    /// `fever_endpoints` rule's fever rule. Absent for a study without the rule.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fever_days: Option<i64>,
    /// Study days on which a dose of a study drug was given (the `dose` rules' records).
    /// Absent for a study without a dose rule.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub days_on_treatment: Option<i64>,
    /// Sum of the doses given, in mg, when the study's dose rules dose one treatment.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cumulative_dose_mg: Option<f64>,
    /// Treatment id -> sum of its doses given, in mg, when the dose rules dose more than one
    /// treatment (mg of two drugs do not add up).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub cumulative_dose_mg_by_treatment: BTreeMap<String, f64>,
}

/// A dose record as its dose rule reads it.
struct Dose<'a> {
    treatment: &'a str,
    day: Option<i64>,
    at: Option<DateTime<Utc>>,
    mg: BigDecimal,
    given: bool,
}

fn datetime(v: Option<&Json>) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(v?.as_str()?)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// A stored decimal: text at the item's digits (`"37.5"`), or a number.
fn decimal(v: Option<&Json>) -> Option<BigDecimal> {
    match v? {
        Json::String(s) => BigDecimal::from_str(s).ok(),
        Json::Number(n) => BigDecimal::from_str(&n.to_string()).ok(),
        _ => None,
    }
}

fn mg(d: &BigDecimal) -> f64 {
    d.round(2).to_f64().unwrap_or_default()
}

fn doses<'a>(def: &'a Definition, records: &[(&str, &'a Json)]) -> Vec<Dose<'a>> {
    let mut out = Vec::new();
    for r in def.rules.iter().filter(|r| r.kind == RuleKind::Dose) {
        let (Some(form), Some(treatment)) = (r.form.as_deref(), r.treatment.as_deref()) else {
            continue;
        };
        let item = |role: &str, v: &'a Json| r.item(role).and_then(|i| v.get(i));
        for (_, v) in records.iter().filter(|(f, _)| *f == form) {
            out.push(Dose {
                treatment,
                day: item("day", v).and_then(Json::as_i64),
                at: datetime(item("at", v)),
                mg: decimal(item("dose", v)).unwrap_or_default(),
                given: item("given", v).and_then(Json::as_bool).unwrap_or(true),
            });
        }
    }
    out
}

/// The endpoints of a subject whose live records are `(form id, stored values)`; `tz` is the
/// site's time zone.
pub fn derive(def: &Definition, records: &[(&str, &Json)], tz: Tz) -> Endpoints {
    let doses = doses(def, records);
    let mut out = Endpoints::default();
    let treatments: BTreeSet<&str> = def
        .rules
        .iter()
        .filter(|r| r.kind == RuleKind::Dose)
        .filter_map(|r| r.treatment.as_deref())
        .collect();
    if !treatments.is_empty() {
        let given = || doses.iter().filter(|d| d.given);
        let days: BTreeSet<i64> = given().filter_map(|d| d.day).collect();
        out.days_on_treatment = Some(days.len() as i64);
        let sum = |t: Option<&str>| -> BigDecimal {
            given()
                .filter(|d| t.is_none_or(|t| d.treatment == t))
                .map(|d| &d.mg)
                .sum()
        };
        if treatments.len() == 1 {
            out.cumulative_dose_mg = Some(mg(&sum(None)));
        } else {
            out.cumulative_dose_mg_by_treatment = treatments
                .iter()
                .map(|t| ((*t).to_owned(), mg(&sum(Some(t)))))
                .collect();
        }
    }
    for r in def
        .rules
        .iter()
        .filter(|r| r.kind == RuleKind::FeverEndpoints)
    {
        let fever = r
            .fever_rule
            .as_deref()
            .and_then(|id| def.rules.iter().find(|f| f.id == id));
        let (Some(fever), Some(hours), Some(until_day)) = (fever, r.hours, r.until_day) else {
            continue;
        };
        let temperatures = temperatures(fever, records);
        let Some(threshold) = fever.threshold.as_ref() else {
            continue;
        };
        let fever_dates: BTreeSet<_> = temperatures
            .iter()
            .filter(|(_, t)| t > threshold)
            .map(|(at, _)| local_date(*at, tz))
            .collect();
        out.fever_days = Some(fever_dates.len() as i64);
        out.fever_free.insert(
            format!("fever_free_at_{hours}h"),
            fever_free(&doses, &temperatures, threshold, hours, until_day, tz),
        );
    }
    out
}

/// (time, temperature) of the records of a fever rule's form.
fn temperatures(fever: &Rule, records: &[(&str, &Json)]) -> Vec<(DateTime<Utc>, BigDecimal)> {
    let (Some(form), Some(at), Some(temperature)) = (
        fever.form.as_deref(),
        fever.item("at"),
        fever.item("temperature"),
    ) else {
        return Vec::new();
    };
    records
        .iter()
        .filter(|(f, _)| *f == form)
        .filter_map(|(_, v)| Some((datetime(v.get(at))?, decimal(v.get(temperature))?)))
        .collect()
}

/// No fever from `hours` after the first dose to the dose of study day `until_day`, or the
/// end of that day (counted from the first dose's site-local date) while it is not recorded.
fn fever_free(
    doses: &[Dose],
    temperatures: &[(DateTime<Utc>, BigDecimal)],
    threshold: &BigDecimal,
    hours: u32,
    until_day: u32,
    tz: Tz,
) -> Option<bool> {
    let first = doses.iter().filter_map(|d| d.at).min()?;
    let start = first + Duration::hours(i64::from(hours));
    let end = doses
        .iter()
        .filter(|d| d.day == Some(i64::from(until_day)))
        .filter_map(|d| d.at)
        .min()
        .or_else(|| {
            let day = local_date(first, tz)
                .checked_add_days(Days::new(u64::from(until_day.saturating_sub(1))))?;
            end_of_local_day(day, tz)
        })?;
    let mut window = temperatures
        .iter()
        .filter(|(at, _)| *at >= start && *at <= end)
        .peekable();
    window.peek()?;
    Some(window.all(|(_, t)| t <= threshold))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::domain::study::parse;

    const KAWASAKI: &str = include_str!("../../config/studies/kawasaki.toml");
    const MKD: &str = include_str!("../../config/studies/mkd.toml");
    const NLRP12: &str = include_str!("../../config/studies/nlrp12.toml");

    fn study(name: &str, text: &str) -> Definition {
        parse(name, text).unwrap_or_else(|e| panic!("{e:?}"))
    }

    fn kawasaki() -> Definition {
        study("kawasaki.toml", KAWASAKI)
    }

    fn injection(day: i64, at: &str, dose: &str, given: bool) -> Json {
        json!({"study_day": day, "administered_at": at, "dose_mg": dose, "given": given})
    }

    fn temperature(at: &str, celsius: &str) -> Json {
        json!({"measured_at": at, "celsius": celsius, "method": "rectal"})
    }

    fn derive_of(def: &Definition, records: &[(&str, Json)]) -> Endpoints {
        let records: Vec<(&str, &Json)> = records.iter().map(|(f, v)| (*f, v)).collect();
        derive(def, &records, chrono_tz::Europe::Paris)
    }

    fn three_days() -> Vec<(&'static str, Json)> {
        vec![
            (
                "injection",
                injection(1, "2026-10-05T06:00:00Z", "40.00", true),
            ),
            (
                "injection",
                injection(2, "2026-10-06T06:00:00Z", "40.00", true),
            ),
            (
                "injection",
                injection(3, "2026-10-07T06:00:00Z", "80.00", true),
            ),
        ]
    }

    #[test]
    fn kawasaki_counts_given_doses_and_fever_days_by_site_date() {
        let mut records = three_days();
        records.push((
            "injection",
            injection(4, "2026-10-08T06:00:00Z", "80.00", false),
        ));
        // 23:30 UTC is the next day in Paris: two fevers, one Paris day
        records.push(("temperature", temperature("2026-10-05T22:30:00Z", "38.5")));
        records.push(("temperature", temperature("2026-10-06T05:00:00Z", "39.0")));
        // at the threshold is no fever
        records.push(("temperature", temperature("2026-10-07T04:00:00Z", "38.0")));
        let e = derive_of(&kawasaki(), &records);
        assert_eq!(e.days_on_treatment, Some(3));
        assert_eq!(e.cumulative_dose_mg, Some(160.0));
        assert!(e.cumulative_dose_mg_by_treatment.is_empty());
        assert_eq!(e.fever_days, Some(1));
        // 38.0 at 46 h: before the window opens
        assert_eq!(e.fever_free.get("fever_free_at_48h"), Some(&None));
    }

    #[test]
    fn kawasaki_window_runs_from_48_h_to_the_day_3_injection() {
        let def = kawasaki();
        let with = |extra: &[(&'static str, Json)]| {
            let mut r = three_days();
            r.extend_from_slice(extra);
            derive_of(&def, &r).fever_free["fever_free_at_48h"]
        };
        // from 48 h (06:00 on day 3) up to the day-3 injection, itself at 06:00: one instant
        assert_eq!(
            with(&[("temperature", temperature("2026-10-07T06:00:00Z", "37.2"))]),
            Some(true)
        );
        assert_eq!(
            with(&[("temperature", temperature("2026-10-07T06:00:00Z", "38.1"))]),
            Some(false)
        );
        // after the day-3 injection: outside
        assert_eq!(
            with(&[("temperature", temperature("2026-10-07T06:01:00Z", "39.0"))]),
            None
        );
        // no day-3 injection yet: the window closes at the end of day 3, Paris time
        let mut two = three_days();
        two.pop();
        two.push(("temperature", temperature("2026-10-07T21:59:00Z", "38.4")));
        assert_eq!(
            derive_of(&def, &two).fever_free["fever_free_at_48h"],
            Some(false)
        );
        two.pop();
        two.push(("temperature", temperature("2026-10-07T22:01:00Z", "38.4")));
        assert_eq!(derive_of(&def, &two).fever_free["fever_free_at_48h"], None);
        // before any dose there is no window
        let e = derive_of(
            &def,
            &[("temperature", temperature("2026-10-07T06:00:00Z", "37.0"))],
        );
        assert_eq!(e.fever_free["fever_free_at_48h"], None);
        assert_eq!(e.days_on_treatment, Some(0));
        assert_eq!(e.cumulative_dose_mg, Some(0.0));
    }

    #[test]
    fn another_study_reads_its_own_rule_hours_threshold_and_day() {
        let text = KAWASAKI
            .replace("threshold = 38.0", "threshold = 37.5")
            .replace("hours = 48\nuntil_day = 3", "hours = 30\nuntil_day = 4");
        let def = study("other.toml", &text);
        let mut records = three_days();
        // 37.8 at 62 h: a fever by 37.5, in the window from 30 h to the end of day 4 (no day-4
        // dose); Kawasaki's window closed with the day-3 dose, and 37.8 is no fever by 38.0
        records.push(("temperature", temperature("2026-10-07T20:00:00Z", "37.8")));
        let e = derive_of(&def, &records);
        assert_eq!(e.fever_free.len(), 1);
        assert_eq!(e.fever_free["fever_free_at_30h"], Some(false));
        assert_eq!(e.fever_days, Some(1));
        let k = derive_of(&kawasaki(), &records);
        assert_eq!(k.fever_free["fever_free_at_48h"], None);
        assert_eq!(k.fever_days, Some(0));
    }

    #[test]
    fn a_study_without_the_rules_has_no_such_endpoints() {
        let records = [("adverse_event", json!({"term": "Acne"}))];
        let e = derive_of(&study("nlrp12.toml", NLRP12), &records);
        assert_eq!(e, Endpoints::default());
        assert_eq!(serde_json::to_value(&e).ok(), Some(json!({})));
    }

    #[test]
    fn doses_of_two_treatments_are_summed_each_on_its_own() {
        let def = study("mkd.toml", MKD);
        let dose = |day: i64, at: &str, mg: &str| json!({"study_day": day, "administered_at": at, "dose_mg": mg, "weight_kg": "20.00"});
        let records = [
            (
                "anakinra_injection",
                dose(1, "2026-10-05T08:00:00Z", "40.00"),
            ),
            (
                "anakinra_injection",
                dose(2, "2026-10-06T08:00:00Z", "40.00"),
            ),
            (
                "canakinumab_injection",
                dose(2, "2026-10-06T09:00:00Z", "80.00"),
            ),
        ];
        let e = derive_of(&def, &records);
        assert_eq!(e.days_on_treatment, Some(2));
        assert_eq!(e.cumulative_dose_mg, None);
        assert_eq!(
            e.cumulative_dose_mg_by_treatment,
            BTreeMap::from([("anakinra".into(), 80.0), ("canakinumab".into(), 80.0)])
        );
        assert!(e.fever_free.is_empty());
        assert_eq!(e.fever_days, None);
        assert_eq!(
            serde_json::to_value(&e).ok(),
            Some(json!({"days_on_treatment": 2,
                        "cumulative_dose_mg_by_treatment": {"anakinra": 80.0, "canakinumab": 80.0}}))
        );
    }

    #[test]
    fn kawasaki_serializes_as_before() {
        let e = derive_of(&kawasaki(), &three_days());
        assert_eq!(
            serde_json::to_value(&e).ok(),
            Some(
                json!({"fever_free_at_48h": null, "fever_days": 0, "days_on_treatment": 3,
                        "cumulative_dose_mg": 160.0})
            )
        );
    }
}
