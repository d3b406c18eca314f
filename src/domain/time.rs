//! Calendar notions use the site's local date in its IANA time zone: an injection at 23:30
//! in Paris belongs to that Paris day, not the next UTC day.

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;

use super::partial_date::PartialDate;
use crate::domain::FieldError;

pub fn parse_zone(name: &str) -> Option<Tz> {
    name.parse::<Tz>().ok()
}

pub fn local_date(at: DateTime<Utc>, tz: Tz) -> NaiveDate {
    at.with_timezone(&tz).date_naive()
}

/// Day 1 is the local date of the first injection.
pub fn study_day(day1: NaiveDate, date: NaiveDate) -> i64 {
    (date - day1).num_days() + 1
}

/// The first instant of the local day after `date`, in UTC.
pub fn end_of_local_day(date: NaiveDate, tz: Tz) -> Option<DateTime<Utc>> {
    let next = date.succ_opt()?.and_hms_opt(0, 0, 0)?;
    tz.from_local_datetime(&next)
        .earliest()
        .map(|d| d.with_timezone(&Utc))
}

/// The earliest date a subject's clinical record can carry: the first day of the subject's
/// birth month (no full birth dates are kept), and never before 1900. Consents, injections,
/// temperatures and adverse events (at the precision of a partial date) are held to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateFloor(NaiveDate);

impl DateFloor {
    pub fn year_1900() -> NaiveDate {
        NaiveDate::from_ymd_opt(1900, 1, 1).unwrap_or(NaiveDate::MIN)
    }

    /// The floor of a subject born in `birth_year_month` (`YYYY-MM`, as stored).
    pub fn of_birth(birth_year_month: &str) -> Self {
        let birth = NaiveDate::parse_from_str(&format!("{birth_year_month}-01"), "%Y-%m-%d")
            .unwrap_or_else(|_| Self::year_1900());
        Self(birth.max(Self::year_1900()))
    }

    pub fn date(self) -> NaiveDate {
        self.0
    }

    fn refusal(self, field: &str) -> FieldError {
        if self.0 == Self::year_1900() {
            FieldError::new(field, "must not be before 1900")
        } else {
            FieldError::new(
                field,
                format!("must not be before the subject's birth month ({})", self.0),
            )
        }
    }

    pub fn check(self, field: &str, date: NaiveDate) -> Result<(), FieldError> {
        if date < self.0 {
            return Err(self.refusal(field));
        }
        Ok(())
    }

    /// A partial date is refused only when every day it can mean is before the floor.
    pub fn check_partial(self, field: &str, date: &PartialDate) -> Result<(), FieldError> {
        if date.cmp_date(self.0).is_lt() {
            return Err(self.refusal(field));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .map(|d| d.with_timezone(&Utc))
            .unwrap_or_default()
    }

    #[test]
    fn the_floor_is_the_birth_month_and_never_before_1900() {
        let floor = DateFloor::of_birth("2023-04");
        let day = |y, m, d| NaiveDate::from_ymd_opt(y, m, d).unwrap_or_default();
        assert!(floor.check("d", day(2023, 4, 1)).is_ok());
        assert!(floor.check("d", day(2023, 3, 31)).is_err());
        let partial = |s| {
            PartialDate::parse(s).unwrap_or(PartialDate {
                year: 0,
                month: None,
                day: None,
            })
        };
        assert!(floor.check_partial("d", &partial("2023-04")).is_ok());
        assert!(floor.check_partial("d", &partial("2023")).is_ok());
        assert!(floor.check_partial("d", &partial("2023-03")).is_err());
        let old = DateFloor::of_birth("1850-01");
        assert_eq!(old.date(), DateFloor::year_1900());
        assert!(old.check("d", day(1, 1, 1)).is_err());
    }

    #[test]
    fn paris_late_evening_is_that_paris_day() {
        let paris = parse_zone("Europe/Paris").unwrap_or(Tz::UTC);
        // 23:30 in Paris in winter is 22:30 UTC
        let d = local_date(utc("2026-11-20T22:30:00Z"), paris);
        assert_eq!(d.to_string(), "2026-11-20");
        let d = local_date(utc("2026-11-20T23:30:00Z"), paris);
        assert_eq!(d.to_string(), "2026-11-21");
    }

    #[test]
    fn study_days_across_daylight_saving_change() {
        let paris = parse_zone("Europe/Paris").unwrap_or(Tz::UTC);
        // clocks went back on 2026-10-25 at 03:00 local
        let d1 = local_date(utc("2026-10-24T21:30:00Z"), paris); // 23:30 CEST
        let d2 = local_date(utc("2026-10-25T22:30:00Z"), paris); // 23:30 CET
        assert_eq!(study_day(d1, d2), 2);
    }
}
