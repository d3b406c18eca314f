//! Derived endpoints per subject, computed from the records not marked deleted.

use chrono::{DateTime, Duration, Utc};
use chrono_tz::Tz;
use serde::Serialize;
use utoipa::ToSchema;

use super::time::{end_of_local_day, local_date};

pub struct InjectionFact {
    pub study_day: i32,
    pub administered_at: DateTime<Utc>,
    pub dose_mg: f64,
    pub given: bool,
}

pub struct TemperatureFact {
    pub measured_at: DateTime<Utc>,
    pub celsius: f64,
}

#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct Endpoints {
    /// Protocol A's primary endpoint: no temperature above the threshold from 48 h after the
    /// first injection up to the day-3 injection. `null` when nothing was measured then.
    pub fever_free_at_48h: Option<bool>,
    /// Local days with at least one temperature above the threshold.
    pub fever_days: i64,
    /// Study days on which the injection was given.
    pub days_on_treatment: i64,
    pub cumulative_dose_mg: f64,
}

pub fn derive(
    injections: &[InjectionFact],
    temperatures: &[TemperatureFact],
    threshold: f64,
    tz: Tz,
) -> Endpoints {
    let given: Vec<&InjectionFact> = injections.iter().filter(|i| i.given).collect();
    let mut days: Vec<i32> = given.iter().map(|i| i.study_day).collect();
    days.sort_unstable();
    days.dedup();
    let cumulative = given.iter().map(|i| i.dose_mg).sum::<f64>();
    let mut fever_dates: Vec<_> = temperatures
        .iter()
        .filter(|t| t.celsius > threshold)
        .map(|t| local_date(t.measured_at, tz))
        .collect();
    fever_dates.sort_unstable();
    fever_dates.dedup();

    let first = injections
        .iter()
        .filter(|i| i.study_day == 1)
        .map(|i| i.administered_at)
        .min();
    let fever_free_at_48h = first.and_then(|t1| {
        let start = t1 + Duration::hours(48);
        let end = injections
            .iter()
            .find(|i| i.study_day == 3)
            .map(|i| i.administered_at)
            .or_else(|| {
                let day3 = local_date(t1, tz).checked_add_days(chrono::Days::new(2))?;
                end_of_local_day(day3, tz)
            })?;
        let window: Vec<&TemperatureFact> = temperatures
            .iter()
            .filter(|t| t.measured_at >= start && t.measured_at <= end)
            .collect();
        if window.is_empty() {
            None
        } else {
            Some(window.iter().all(|t| t.celsius <= threshold))
        }
    });
    Endpoints {
        fever_free_at_48h,
        fever_days: fever_dates.len() as i64,
        days_on_treatment: days.len() as i64,
        cumulative_dose_mg: (cumulative * 100.0).round() / 100.0,
    }
}
