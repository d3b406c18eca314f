//! Calendar notions use the site's local date in its IANA time zone: an injection at 23:30
//! in Paris belongs to that Paris day, not the next UTC day.

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;

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

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .map(|d| d.with_timezone(&Utc))
            .unwrap_or_default()
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
