//! Partial ISO 8601 dates (`2026`, `2026-11`, `2026-11-04`): a site often knows only the
//! month in which an adverse event began. Comparisons are made at the precision known.

use std::cmp::Ordering;

use chrono::{Datelike, NaiveDate};

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

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap_or_default()
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
}
