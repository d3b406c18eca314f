//! Values parsed at the edge: once one of these exists, it is valid.

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::text::{free_text, Lines};
use crate::domain::FieldError;

type Parsed<T> = Result<T, FieldError>;

/// True when `v` has at most `places` decimals (within float noise).
fn has_decimals(v: f64, places: i32) -> bool {
    let scaled = v * 10f64.powi(places);
    (scaled - scaled.round()).abs() < 1e-6
}

/// Body weight in kg used for dosing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WeightKg(f64);

impl WeightKg {
    pub fn parse(field: &str, v: f64) -> Parsed<Self> {
        if !v.is_finite() || !(0.5..=300.0).contains(&v) {
            return Err(FieldError::new(field, "must be between 0.5 and 300 kg"));
        }
        if !has_decimals(v, 2) {
            return Err(FieldError::new(field, "must have at most two decimals"));
        }
        Ok(Self(v))
    }
    pub fn value(self) -> f64 {
        self.0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Sex {
    Female,
    Male,
}

impl Sex {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Female => "female",
            Self::Male => "male",
        }
    }
}

/// Year and month of birth, `YYYY-MM`: no full birth dates are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BirthYearMonth(String);

impl BirthYearMonth {
    pub fn parse(field: &str, s: &str, today: NaiveDate) -> Parsed<Self> {
        let bad = || FieldError::new(field, "must be YYYY-MM, not in the future");
        let (y, m) = s.split_once('-').ok_or_else(bad)?;
        if y.len() != 4 || m.len() != 2 {
            return Err(bad());
        }
        let y: i32 = y.parse().map_err(|_| bad())?;
        let m: u32 = m.parse().map_err(|_| bad())?;
        if !(1..=12).contains(&m) || y < 1900 {
            return Err(bad());
        }
        if (y, m) > (today.year(), today.month()) {
            return Err(bad());
        }
        Ok(Self(s.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The reason for a change to clinical data, required after its first save.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reason(String);

pub const MAX_REASON_CHARS: usize = 1000;

impl Reason {
    pub fn parse(field: &str, s: Option<&str>) -> Parsed<Self> {
        let s = s.map(str::trim).unwrap_or_default();
        if s.is_empty() {
            return Err(FieldError::new(
                field,
                "a reason for the change is required",
            ));
        }
        free_text(field, s, MAX_REASON_CHARS, Lines::Many).map(Self)
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One line of free text (a name, a term, a lot number) with a bound: the trimmed value,
/// which is what to store ([`free_text`]).
pub fn bounded_text(field: &str, s: &str, max: usize) -> Parsed<String> {
    free_text(field, s, max, Lines::One)
}

/// Free text that may run over several lines (a query message, why a dose was not given),
/// with a bound: the trimmed value, which is what to store ([`free_text`]).
pub fn long_text(field: &str, s: &str, max: usize) -> Parsed<String> {
    free_text(field, s, max, Lines::Many)
}

/// Refuses times in the future beyond 5 minutes of clock skew.
pub fn not_in_future(field: &str, at: DateTime<Utc>, now: DateTime<Utc>) -> Parsed<()> {
    if at > now + chrono::Duration::minutes(5) {
        return Err(FieldError::new(field, "must not be in the future"));
    }
    Ok(())
}

/// A subject code: site code, a dash, three digits (or more past 999).
pub fn subject_code(site_code: &str, seq: i32) -> String {
    format!("{site_code}-{seq:03}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn birth_year_month() {
        let today = NaiveDate::from_ymd_opt(2026, 11, 22).unwrap_or_default();
        assert!(BirthYearMonth::parse("b", "2022-03", today).is_ok());
        assert!(BirthYearMonth::parse("b", "2026-12", today).is_err());
        assert!(BirthYearMonth::parse("b", "2022-13", today).is_err());
        assert!(BirthYearMonth::parse("b", "2022-3", today).is_err());
    }

    #[test]
    fn codes_are_zero_padded() {
        assert_eq!(subject_code("FR01", 7), "FR01-007");
        assert_eq!(subject_code("FR01", 1234), "FR01-1234");
    }
}
