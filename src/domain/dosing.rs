//! The dose rule: what dose the protocol expects on a study day, and whether a given dose
//! deviates from it. A deviating dose is still recorded: it is what happened. The dose rules
//! of a study definition run it (`Regimen::of_treatment`).

use bigdecimal::ToPrimitive;
use chrono::NaiveDate;

use super::protocol::{DoseRule, Escalation};
use super::study::{Dose, Treatment};

/// A treatment's dose rule, whichever file it comes from.
#[derive(Debug, Clone, PartialEq)]
pub struct Regimen {
    pub dose: DoseRule,
    /// doses past this study day are deviations
    pub max_days: Option<i32>,
    /// a dose further than this from the expected one is a deviation
    pub tolerance_percent: f64,
}

fn f64_of(d: &bigdecimal::BigDecimal) -> f64 {
    d.to_f64().unwrap_or_default()
}

impl Regimen {
    pub fn of_treatment(t: &Treatment) -> Self {
        let dose = match &t.dose {
            Dose::Fixed { mg } => DoseRule::Fixed { mg: f64_of(mg) },
            Dose::PerKg {
                mg_per_kg,
                escalation,
            } => DoseRule::PerKg {
                mg_per_kg: f64_of(mg_per_kg),
                escalation: escalation.as_ref().map(|e| Escalation {
                    from_day: i32::try_from(e.from_day).unwrap_or(i32::MAX),
                    mg_per_kg: f64_of(&e.mg_per_kg),
                }),
            },
        };
        Self {
            dose,
            max_days: t.max_days.map(|d| i32::try_from(d).unwrap_or(i32::MAX)),
            tolerance_percent: f64_of(&t.tolerance_percent),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct DoseCheck {
    pub expected_mg: f64,
    /// Why this injection is a protocol deviation, if it is.
    pub deviation: Option<String>,
}

/// Round to 0.01 mg, the precision stored.
fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// `febrile_before_dose_on_escalation_day`: a temperature above the threshold was measured
/// on the escalation day (site local date) before that day's dose.
pub fn expected_dose_mg(
    regimen: &Regimen,
    study_day: i32,
    weight_kg: f64,
    febrile_before_dose_on_escalation_day: bool,
) -> f64 {
    match &regimen.dose {
        DoseRule::Fixed { mg } => round2(*mg),
        DoseRule::PerKg {
            mg_per_kg,
            escalation,
        } => {
            let per_kg = match escalation {
                Some(e) if study_day >= e.from_day && febrile_before_dose_on_escalation_day => {
                    e.mg_per_kg
                }
                _ => *mg_per_kg,
            };
            round2(per_kg * weight_kg)
        }
    }
}

pub fn check_dose(
    regimen: &Regimen,
    study_day: i32,
    weight_kg: f64,
    dose_mg: f64,
    given: bool,
    febrile_before_dose_on_escalation_day: bool,
) -> DoseCheck {
    let expected_mg = expected_dose_mg(
        regimen,
        study_day,
        weight_kg,
        febrile_before_dose_on_escalation_day,
    );
    let tolerance = regimen.tolerance_percent / 100.0;
    let deviation = match regimen.max_days {
        Some(max_days) if given && study_day > max_days => Some(format!(
            "study day {study_day} is past the protocol's {max_days} treatment days"
        )),
        _ if given && (dose_mg - expected_mg).abs() > tolerance * expected_mg + 1e-9 => {
            Some(format!(
                "dose {dose_mg} mg differs from the expected {expected_mg} mg by more than {}%",
                regimen.tolerance_percent
            ))
        }
        _ => None,
    };
    DoseCheck {
        expected_mg,
        deviation,
    }
}

/// The escalation day of a dose rule, if it has one.
pub fn escalation_day(regimen: &Regimen) -> Option<i32> {
    match &regimen.dose {
        DoseRule::PerKg {
            escalation: Some(e),
            ..
        } => Some(e.from_day),
        _ => None,
    }
}

/// A dose of a treatment given every `interval_days` (more than 1: canakinumab every 56
/// days) that comes sooner after the previous dose than that (site-local dates).
pub fn too_soon(interval_days: u32, date: NaiveDate, others: &[NaiveDate]) -> Option<String> {
    if interval_days <= 1 {
        return None;
    }
    let previous = others.iter().filter(|d| **d <= date).max()?;
    let gap = (date - *previous).num_days();
    (gap < i64::from(interval_days)).then(|| {
        format!(
            "given {gap} days after the previous dose on {previous}: the protocol's interval is {interval_days} days"
        )
    })
}

/// A dose given on `date` of one treatment while the subject had doses of others: a switch
/// from one of `allowed_from` to this treatment is foreseen; any other mix of study drugs
/// (a dose of a treatment the subject switched away from, after the day of the switch; a
/// switch the protocol does not list) is a deviation. `others` are (treatment, date) of the subject's other study drugs;
/// `switched_to` the treatments that list this one in their `switch_from`.
pub fn switch_deviation(
    date: NaiveDate,
    allowed_from: &[String],
    switched_to: &[String],
    others: &[(String, NaiveDate)],
) -> Option<String> {
    if let Some((t, d)) = others
        .iter()
        .filter(|(t, d)| switched_to.contains(t) && *d < date)
        .min_by_key(|(_, d)| *d)
    {
        return Some(format!(
            "the subject switched to {t} on {d}: this drug is no longer given"
        ));
    }
    others
        .iter()
        .filter(|(t, d)| *d <= date && !allowed_from.contains(t) && !switched_to.contains(t))
        .max_by_key(|(_, d)| *d)
        .map(|(t, d)| {
            format!(
                "the subject had {t} on {d}: the protocol foresees no switch from {t} to this drug"
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rule of the first treatment of a shipped study definition.
    fn protocol(name: &str) -> Option<Regimen> {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("config/studies")
            .join(name);
        let text = std::fs::read_to_string(p).ok()?;
        let def = crate::domain::study::parse(name, &text).ok()?;
        def.treatments.first().map(Regimen::of_treatment)
    }

    #[test]
    fn kawasaki_escalates_on_day_3_fever() {
        let Some(p) = protocol("kawasaki.toml") else {
            panic!("kawasaki.toml loads")
        };
        assert_eq!(expected_dose_mg(&p, 1, 20.0, false), 40.0);
        assert_eq!(expected_dose_mg(&p, 3, 20.0, false), 40.0);
        assert_eq!(expected_dose_mg(&p, 3, 20.0, true), 80.0);
        assert_eq!(expected_dose_mg(&p, 5, 20.0, true), 80.0);
        assert!(check_dose(&p, 3, 20.0, 80.0, true, true)
            .deviation
            .is_none());
        assert!(check_dose(&p, 3, 20.0, 40.0, true, true)
            .deviation
            .is_some());
        assert!(check_dose(&p, 2, 20.0, 43.0, true, false)
            .deviation
            .is_none());
        assert!(check_dose(&p, 2, 20.0, 45.0, true, false)
            .deviation
            .is_some());
        assert!(check_dose(&p, 16, 20.0, 40.0, true, false)
            .deviation
            .is_some());
    }

    #[test]
    fn thera_is_fixed_for_five_days() {
        let Some(p) = protocol("thera.toml") else {
            panic!("thera.toml loads")
        };
        assert!(check_dose(&p, 5, 80.0, 100.0, true, false)
            .deviation
            .is_none());
        assert!(check_dose(&p, 6, 80.0, 100.0, true, false)
            .deviation
            .is_some());
    }

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap_or_default()
    }

    #[test]
    fn canakinumab_every_56_days() {
        let others = [d("2026-01-01"), d("2026-02-26")];
        assert_eq!(too_soon(56, d("2026-04-23"), &others), None);
        assert!(too_soon(56, d("2026-04-22"), &others)
            .is_some_and(|m| m.contains("55 days after the previous dose on 2026-02-26")));
        assert_eq!(too_soon(1, d("2026-02-26"), &others), None);
        // the first dose, and one entered late for an earlier date, compare with what precedes
        assert_eq!(too_soon(56, d("2025-12-01"), &others), None);
    }

    #[test]
    fn a_switch_goes_only_the_way_the_protocol_foresees() {
        let anakinra = vec!["anakinra".to_owned()];
        let canakinumab = vec!["canakinumab".to_owned()];
        let none: Vec<String> = Vec::new();
        let had = |t: &str, s: &str| (t.to_owned(), d(s));
        // canakinumab after anakinra: foreseen
        assert_eq!(
            switch_deviation(
                d("2026-03-01"),
                &anakinra,
                &none,
                &[had("anakinra", "2026-02-01")]
            ),
            None
        );
        // anakinra after the switch to canakinumab: a deviation
        assert!(switch_deviation(
            d("2026-04-01"),
            &none,
            &canakinumab,
            &[had("canakinumab", "2026-03-01")]
        )
        .is_some_and(|m| m.contains("switched to canakinumab on 2026-03-01")));
        // anakinra on the day of the switch, or before it: fine
        assert_eq!(
            switch_deviation(
                d("2026-03-01"),
                &none,
                &canakinumab,
                &[had("canakinumab", "2026-03-01")]
            ),
            None
        );
        assert_eq!(
            switch_deviation(
                d("2026-02-01"),
                &none,
                &canakinumab,
                &[had("canakinumab", "2026-03-01")]
            ),
            None
        );
        // a switch nobody foresaw
        assert!(
            switch_deviation(d("2026-03-01"), &none, &none, &[had("other", "2026-02-01")])
                .is_some_and(|m| m.contains("no switch from other"))
        );
    }
}
