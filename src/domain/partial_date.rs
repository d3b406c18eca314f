//! Partial ISO 8601 dates (`2026`, `2026-11`, `2026-11-04`): a site often knows only the
//! month in which an adverse event began. Comparisons are made at the precision known.

use std::cmp::Ordering;

use chrono::{Datelike, NaiveDate};

use crate::domain::FieldError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartialDate {
    pub year: i32,
    pub month: Option<u32>,
    pub day: Option<u32>,
}

impl PartialDate {
    pub fn parse(s: &str) -> Option<Self> {
        let parts: Vec<&str> = s.split('-').collect();
        let num = |p: &str, len: usize| -> Option<u32> {
            (p.len() == len && p.bytes().all(|b| b.is_ascii_digit()))
                .then(|| p.parse().ok())
                .flatten()
        };
        let year = i32::try_from(num(parts.first()?, 4)?).ok()?;
        let month = parts
            .get(1)
            .map(|p| num(p, 2))
            .map_or(Some(None), |m| m.map(Some))?;
        let day = parts
            .get(2)
            .map(|p| num(p, 2))
            .map_or(Some(None), |d| d.map(Some))?;
        if parts.len() > 3 || year < 1900 {
            return None;
        }
        if let Some(m) = month {
            if !(1..=12).contains(&m) {
                return None;
            }
        }
        if let (Some(m), Some(d)) = (month, day) {
            NaiveDate::from_ymd_opt(year, m, d)?;
        }
        Some(Self { year, month, day })
    }

    /// A full date, known to the day.
    pub fn of(d: NaiveDate) -> Self {
        Self {
            year: d.year(),
            month: Some(d.month()),
            day: Some(d.day()),
        }
    }

    /// The first and last day it can mean: it is before a date (`cmp_date`) when its last
    /// day is, after one when its first day is.
    pub fn days(&self) -> Option<(NaiveDate, NaiveDate)> {
        let first =
            NaiveDate::from_ymd_opt(self.year, self.month.unwrap_or(1), self.day.unwrap_or(1))?;
        let last = match (self.month, self.day) {
            (Some(_), Some(_)) => first,
            (Some(m), None) => {
                let (y, m) = if m == 12 {
                    (self.year + 1, 1)
                } else {
                    (self.year, m + 1)
                };
                NaiveDate::from_ymd_opt(y, m, 1)?.pred_opt()?
            }
            (None, _) => NaiveDate::from_ymd_opt(self.year, 12, 31)?,
        };
        Some((first, last))
    }

    /// Compares with a full date, at this date's precision.
    pub fn cmp_date(&self, d: NaiveDate) -> Ordering {
        let other = Self {
            year: d.year(),
            month: self.month.map(|_| d.month()),
            day: self.day.map(|_| d.day()),
        };
        self.cmp_partial(&other)
    }

    /// Compares two partial dates at the precision both know.
    pub fn cmp_partial(&self, other: &Self) -> Ordering {
        self.year
            .cmp(&other.year)
            .then_with(|| match (self.month, other.month) {
                (Some(a), Some(b)) => a.cmp(&b),
                _ => Ordering::Equal,
            })
            .then_with(|| match (self.month, other.month, self.day, other.day) {
                (Some(_), Some(_), Some(a), Some(b)) => a.cmp(&b),
                _ => Ordering::Equal,
            })
    }
}

/// The order of two dates of a record, either known perhaps only in part (an adverse event
/// ends, or the site learns of it, not before it began): `field` is refused only when it is
/// before `earlier` (the item `earlier_item`) at the precision both know, so `2026-11` is
/// not before `2026-11-05`.
pub fn not_before(
    field: &str,
    date: &PartialDate,
    earlier_item: &str,
    earlier: &PartialDate,
) -> Result<(), FieldError> {
    if date.cmp_partial(earlier).is_lt() {
        return Err(FieldError::new(
            field,
            format!("must not be before {earlier_item}"),
        ));
    }
    Ok(())
}

/// A date of an event that happened: refused only when every day it can mean is after
/// `today`, the site-local date.
pub fn not_in_future(field: &str, date: &PartialDate, today: NaiveDate) -> Result<(), FieldError> {
    if date.cmp_date(today).is_gt() {
        return Err(FieldError::new(field, "must not be in the future"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap_or_default()
    }

    #[test]
    fn a_partial_date_means_its_first_to_its_last_day_as_cmp_date_reads_it() {
        let p = |s: &str| PartialDate::parse(s).and_then(|p| p.days());
        assert_eq!(p("2026"), Some((d("2026-01-01"), d("2026-12-31"))));
        assert_eq!(p("2024-02"), Some((d("2024-02-01"), d("2024-02-29"))));
        assert_eq!(p("2026-12"), Some((d("2026-12-01"), d("2026-12-31"))));
        assert_eq!(p("2026-11-04"), Some((d("2026-11-04"), d("2026-11-04"))));
        for s in ["2026", "2026-02", "2026-02-10"] {
            let part = PartialDate::parse(s).unwrap_or_else(|| PartialDate::of(d("1900-01-01")));
            let (first, last) = part.days().unwrap_or_default();
            for probe in [
                "2025-12-31",
                "2026-01-01",
                "2026-02-10",
                "2026-02-28",
                "2026-03-01",
                "2027-01-01",
            ] {
                let x = d(probe);
                assert_eq!(part.cmp_date(x).is_lt(), last < x, "{s} < {probe}");
                assert_eq!(part.cmp_date(x).is_gt(), first > x, "{s} > {probe}");
            }
        }
    }

    #[test]
    fn parses_the_three_precisions_only() {
        assert!(PartialDate::parse("2026").is_some());
        assert!(PartialDate::parse("2026-11").is_some());
        assert!(PartialDate::parse("2026-11-04").is_some());
        for bad in [
            "26",
            "2026-1",
            "2026-13",
            "2026-02-30",
            "2026-11-04-01",
            "",
            "2026-xx",
        ] {
            assert!(PartialDate::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn compares_at_the_known_precision() {
        let month = PartialDate::parse("2026-10").unwrap_or(PartialDate {
            year: 0,
            month: None,
            day: None,
        });
        assert_eq!(month.cmp_date(d("2026-10-15")), Ordering::Equal);
        assert_eq!(month.cmp_date(d("2026-11-01")), Ordering::Less);
        let year = PartialDate::parse("2026").unwrap_or(month);
        assert_eq!(year.cmp_date(d("2026-12-31")), Ordering::Equal);
        let day = PartialDate::parse("2026-10-14").unwrap_or(month);
        assert_eq!(day.cmp_date(d("2026-10-15")), Ordering::Less);
        assert_eq!(day.cmp_partial(&month), Ordering::Equal);
    }

    #[test]
    fn order_and_future_are_judged_at_the_precision_known() {
        let p = |s: &str| PartialDate::parse(s).unwrap_or(PartialDate::of(d("1900-01-01")));
        let onset = p("2026-11-05");
        assert!(not_before("end", &p("2026-11"), "onset", &onset).is_ok());
        assert!(not_before("end", &p("2026-11-05"), "onset", &onset).is_ok());
        let e = not_before("end", &p("2026-10"), "onset", &onset).err();
        assert_eq!(
            e.map(|e| (e.field, e.message)),
            Some(("end".to_owned(), "must not be before onset".to_owned()))
        );
        assert!(not_before("aware", &PartialDate::of(d("2026-11-04")), "onset", &onset).is_err());
        assert!(not_before(
            "aware",
            &PartialDate::of(d("2026-11-04")),
            "onset",
            &p("2026")
        )
        .is_ok());
        let today = d("2026-12-05");
        assert!(not_in_future("x", &p("2026-12"), today).is_ok());
        assert!(not_in_future("x", &p("2026-12-05"), today).is_ok());
        assert!(not_in_future("x", &p("2026-12-06"), today).is_err());
        assert!(not_in_future("x", &p("2027"), today).is_err());
    }
}
