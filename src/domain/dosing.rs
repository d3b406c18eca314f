//! The dose rule: what dose the protocol expects on a study day, and whether a given dose
//! deviates from it. A deviating dose is still recorded: it is what happened.

use super::protocol::{DoseRule, Protocol};

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
    protocol: &Protocol,
    study_day: i32,
    weight_kg: f64,
    febrile_before_dose_on_escalation_day: bool,
) -> f64 {
    match &protocol.file.dose {
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
    protocol: &Protocol,
    study_day: i32,
    weight_kg: f64,
    dose_mg: f64,
    given: bool,
    febrile_before_dose_on_escalation_day: bool,
) -> DoseCheck {
    let expected_mg = expected_dose_mg(
        protocol,
        study_day,
        weight_kg,
        febrile_before_dose_on_escalation_day,
    );
    let max_days = protocol.file.limits.max_treatment_days;
    let tolerance = protocol.file.limits.dose_tolerance_percent / 100.0;
    let deviation = if given && study_day > max_days {
        Some(format!(
            "study day {study_day} is past the protocol's {max_days} treatment days"
        ))
    } else if given && (dose_mg - expected_mg).abs() > tolerance * expected_mg + 1e-9 {
        Some(format!(
            "dose {dose_mg} mg differs from the expected {expected_mg} mg by more than {}%",
            protocol.file.limits.dose_tolerance_percent
        ))
    } else {
        None
    };
    DoseCheck {
        expected_mg,
        deviation,
    }
}

/// The escalation day of the protocol, if its dose rule has one.
pub fn escalation_day(protocol: &Protocol) -> Option<i32> {
    match &protocol.file.dose {
        DoseRule::PerKg {
            escalation: Some(e),
            ..
        } => Some(e.from_day),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn protocol(name: &str) -> Option<Protocol> {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("config/protocols")
            .join(name);
        Protocol::load(&p).ok()
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
}
