//! A subject's schedule: each scheduled visit of the definition with its window as
//! site-local dates and where it stands. Day 1 is the site-local date of the anchor (the
//! first dose or enrolment); a visit on day `d` is targeted at `day1 + (d - 1)` and may be
//! done from `before` days earlier to `after` days later, both edges included.
//!
//! The statuses, as a data manager reads them (docs/study-definitions.md, "Schedule"):
//! - `done`: every form the visit expects has a live record for it;
//! - `partly_done`: some of them have, not all (whatever the date: it is to be completed);
//! - with none recorded: `not_yet_due` before the window opens (or while the subject has no
//!   anchor yet), `due` inside it, `overdue` once it has closed, and `missed` once it has
//!   closed and either the next visit's target day has come or a later visit has a record:
//!   the subject has moved on, so this visit will not happen any more. The last visit has no
//!   next one and stays `overdue` until it is entered.

use std::collections::BTreeSet;

use chrono::{DateTime, Days, NaiveDate, Utc};
use chrono_tz::Tz;
use serde::Serialize;
use utoipa::ToSchema;

use super::model::{Anchor, Definition, RuleKind, Visit};
use crate::domain::time::local_date;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum VisitStatus {
    NotYetDue,
    Due,
    PartlyDone,
    Done,
    Overdue,
    Missed,
}

/// A visit's window in site-local dates, edges included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub opens: NaiveDate,
    pub target: NaiveDate,
    pub closes: NaiveDate,
}

impl Window {
    pub fn contains(&self, date: NaiveDate) -> bool {
        self.opens <= date && date <= self.closes
    }
}

fn shift(date: NaiveDate, days: i64) -> Option<NaiveDate> {
    if days >= 0 {
        date.checked_add_days(Days::new(days.unsigned_abs()))
    } else {
        date.checked_sub_days(Days::new(days.unsigned_abs()))
    }
}

/// The window of a visit on `day` when day 1 is `day1`; none for an unscheduled visit.
pub fn window(day1: NaiveDate, visit: &Visit) -> Option<Window> {
    let day = i64::from(visit.day?);
    let target = shift(day1, day - 1)?;
    Some(Window {
        opens: shift(target, -i64::from(visit.window_before))?,
        target,
        closes: shift(target, i64::from(visit.window_after))?,
    })
}

/// What the subject has on file, as the schedule reads it.
#[derive(Debug, Clone, Default)]
pub struct Evidence {
    /// (visit, form) of each live record of a form entered per visit
    pub records: Vec<(String, String)>,
    /// (form, study day) of each live record of a form whose study day a `study_day` rule
    /// checks (a daily form such as the injection): counted for the visit on that day
    pub days: Vec<(String, i64)>,
    /// (form, site-local date) of each live record of a form that is not entered per visit
    /// (a log, a daily form) but that a visit lists: counted for the visits whose window
    /// holds its date
    pub dated: Vec<(String, NaiveDate)>,
}

impl Evidence {
    fn has(&self, visit: &Visit, window: Option<&Window>, form: &str) -> bool {
        self.records
            .iter()
            .any(|(v, f)| *v == visit.id && f == form)
            || visit.day.is_some_and(|day| {
                self.days
                    .iter()
                    .any(|(f, d)| f == form && *d == i64::from(day))
            })
            || window.is_some_and(|w| self.dated.iter().any(|(f, d)| f == form && w.contains(*d)))
    }
}

/// The site-local date of a stored date (`2026-10-05`) or datetime value; none for anything
/// else (a partial date says no day).
pub fn site_date(value: &str, tz: Tz) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(value, "%Y-%m-%d")
        .ok()
        .or_else(|| {
            DateTime::parse_from_rfc3339(value)
                .ok()
                .map(|d| local_date(d.with_timezone(&Utc), tz))
        })
}

/// The item holding the study day of `form`'s records, when a `study_day` rule checks it.
pub fn study_day_item<'a>(def: &'a Definition, form: &str) -> Option<&'a str> {
    def.rules
        .iter()
        .filter(|r| r.kind == RuleKind::StudyDay && r.form.as_deref() == Some(form))
        .find_map(|r| r.item("day"))
}

/// (form, study day) of records stored without a visit whose form has a study day.
pub fn record_days<'a>(
    def: &Definition,
    records: impl IntoIterator<Item = (&'a str, &'a serde_json::Value)>,
) -> Vec<(String, i64)> {
    records
        .into_iter()
        .filter_map(|(form, values)| {
            let day = values.get(study_day_item(def, form)?)?.as_i64()?;
            Some((form.to_owned(), day))
        })
        .collect()
}

/// (form, site-local date by its `dated_by` item) of records stored without a visit (those
/// with a study day count by their day: `record_days`).
pub fn record_dates<'a>(
    def: &Definition,
    records: impl IntoIterator<Item = (&'a str, &'a serde_json::Value)>,
    tz: Tz,
) -> Vec<(String, NaiveDate)> {
    records
        .into_iter()
        .filter(|(form, _)| study_day_item(def, form).is_none())
        .filter_map(|(form, values)| {
            let dated_by = &def.form(form)?.dated_by;
            let date = site_date(values.get(dated_by)?.as_str()?, tz)?;
            Some((form.to_owned(), date))
        })
        .collect()
}

/// The first live value of the anchor item: a date (`2026-10-05`) or a datetime, taken as
/// its site-local date. Values that are neither are not an anchor.
pub fn anchor_from_values<'a>(
    values: impl IntoIterator<Item = &'a str>,
    tz: Tz,
) -> Option<NaiveDate> {
    values.into_iter().filter_map(|v| site_date(v, tz)).min()
}

/// What day 1 is made of, as stored.
#[derive(Debug, Clone, Default)]
pub struct AnchorFacts {
    pub enrolled_at: Option<DateTime<Utc>>,
    /// values of the anchor item in the live records of its form
    pub item_values: Vec<String>,
}

/// The form and item whose records hold day 1 (the first dose's date).
pub fn anchor_form(def: &Definition) -> Option<(&str, &str)> {
    match (def.schedule.anchor, &def.schedule.anchor_item) {
        (Anchor::FirstDose, Some(r)) => Some((r.form.as_str(), r.item.as_str())),
        _ => None,
    }
}

/// Day 1 of a subject: the site-local date of enrolment, or of the first dose (the earliest
/// value of the anchor item); none before the first dose.
pub fn day_one(def: &Definition, facts: &AnchorFacts, tz: Tz) -> Option<NaiveDate> {
    match def.schedule.anchor {
        Anchor::Enrolment => facts.enrolled_at.map(|at| local_date(at, tz)),
        Anchor::FirstDose => anchor_from_values(facts.item_values.iter().map(String::as_str), tz),
    }
}

#[derive(Debug, Clone)]
pub struct ScheduledVisit<'a> {
    pub visit: &'a Visit,
    pub window: Option<Window>,
    /// the forms the visit expects that have a record for it
    pub recorded: Vec<&'a str>,
    pub status: VisitStatus,
}

/// The scheduled visits of the definition in study-day order, with their windows (when the
/// subject has day 1) and statuses on `today` (the site-local date).
pub fn schedule<'a>(
    def: &'a Definition,
    day1: Option<NaiveDate>,
    evidence: &Evidence,
    today: NaiveDate,
) -> Vec<ScheduledVisit<'a>> {
    let mut visits: Vec<&Visit> = def.visits.iter().filter(|v| v.day.is_some()).collect();
    visits.sort_by_key(|v| v.day);
    let windows: Vec<Option<Window>> = visits
        .iter()
        .map(|v| day1.and_then(|d| window(d, v)))
        .collect();
    let recorded: Vec<Vec<&str>> = visits
        .iter()
        .zip(&windows)
        .map(|(v, w)| {
            v.forms
                .iter()
                .map(String::as_str)
                .filter(|f| evidence.has(v, w.as_ref(), f))
                .collect()
        })
        .collect();
    let with_records: BTreeSet<usize> = recorded
        .iter()
        .enumerate()
        .filter(|(_, r)| !r.is_empty())
        .map(|(i, _)| i)
        .collect();
    visits
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let window = windows[i];
            let next_target = windows.get(i + 1).copied().flatten().map(|w| w.target);
            let later_recorded = with_records.range(i + 1..).next().is_some();
            let status = status(
                v.forms.len(),
                recorded[i].len(),
                window.as_ref(),
                next_target,
                later_recorded,
                today,
            );
            ScheduledVisit {
                visit: v,
                window,
                recorded: recorded[i].clone(),
                status,
            }
        })
        .collect()
}

/// The status of one visit (see the module's comment).
pub fn status(
    expected: usize,
    recorded: usize,
    window: Option<&Window>,
    next_target: Option<NaiveDate>,
    later_recorded: bool,
    today: NaiveDate,
) -> VisitStatus {
    if recorded > 0 {
        return if recorded >= expected {
            VisitStatus::Done
        } else {
            VisitStatus::PartlyDone
        };
    }
    let Some(w) = window else {
        return VisitStatus::NotYetDue;
    };
    if today < w.opens {
        VisitStatus::NotYetDue
    } else if today <= w.closes {
        VisitStatus::Due
    } else if later_recorded || next_target.is_some_and(|t| today >= t) {
        VisitStatus::Missed
    } else {
        VisitStatus::Overdue
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::time::parse_zone;
    use serde_json::json;

    fn date(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap_or_default()
    }

    fn visit(id: &str, day: i32, before: u32, after: u32, forms: &[&str]) -> Visit {
        Visit {
            id: id.into(),
            name: id.into(),
            day: Some(day),
            window_before: before,
            window_after: after,
            unscheduled: false,
            forms: forms.iter().map(|f| (*f).to_owned()).collect(),
        }
    }

    fn definition(visits: Vec<Visit>) -> Definition {
        let src = include_str!("../../../config/studies/kawasaki.toml");
        let mut def =
            crate::domain::study::parse("kawasaki.toml", src).unwrap_or_else(|e| panic!("{e:?}"));
        def.visits = visits;
        def
    }

    #[test]
    fn the_window_counts_from_day_one_with_both_edges_included() {
        let v = visit("D15", 15, 12, 3, &[]);
        let w = window(date("2026-10-05"), &v).unwrap_or_else(|| panic!("scheduled"));
        assert_eq!(w.target, date("2026-10-19"));
        assert_eq!(w.opens, date("2026-10-07"));
        assert_eq!(w.closes, date("2026-10-22"));
        assert!(w.contains(date("2026-10-07")) && w.contains(date("2026-10-22")));
        assert!(!w.contains(date("2026-10-06")) && !w.contains(date("2026-10-23")));
        let unscheduled = Visit {
            day: None,
            unscheduled: true,
            ..v
        };
        assert_eq!(window(date("2026-10-05"), &unscheduled), None);
    }

    #[test]
    fn statuses_at_the_window_edges() {
        let w = window(date("2026-10-05"), &visit("D15", 15, 12, 3, &[]));
        let at = |today: &str, next: Option<&str>, later: bool| {
            status(2, 0, w.as_ref(), next.map(date), later, date(today))
        };
        assert_eq!(at("2026-10-06", None, false), VisitStatus::NotYetDue);
        assert_eq!(at("2026-10-07", None, false), VisitStatus::Due);
        assert_eq!(at("2026-10-22", None, false), VisitStatus::Due);
        assert_eq!(at("2026-10-23", None, false), VisitStatus::Overdue);
        // the next visit's target day: the subject has moved on
        assert_eq!(
            at("2026-11-15", Some("2026-11-16"), false),
            VisitStatus::Overdue
        );
        assert_eq!(
            at("2026-11-16", Some("2026-11-16"), false),
            VisitStatus::Missed
        );
        // a later visit entered already
        assert_eq!(
            at("2026-10-23", Some("2026-11-16"), true),
            VisitStatus::Missed
        );
        // the last visit stays overdue
        assert_eq!(at("2027-10-23", None, false), VisitStatus::Overdue);
    }

    #[test]
    fn records_make_a_visit_done_or_partly_done_whatever_the_date() {
        let w = window(date("2026-10-05"), &visit("D15", 15, 12, 3, &[]));
        let today = date("2026-12-01");
        assert_eq!(
            status(2, 2, w.as_ref(), None, true, today),
            VisitStatus::Done
        );
        assert_eq!(
            status(2, 1, w.as_ref(), None, true, today),
            VisitStatus::PartlyDone
        );
        assert_eq!(
            status(2, 1, None, None, false, today),
            VisitStatus::PartlyDone
        );
        // no anchor, nothing recorded: not yet due, whatever the date
        assert_eq!(
            status(2, 0, None, None, true, today),
            VisitStatus::NotYetDue
        );
    }

    #[test]
    fn the_schedule_maps_records_injections_and_temperatures_to_visits() {
        let def = definition(vec![
            visit("D3", 3, 0, 0, &["injection", "disease_activity"]),
            visit("D1", 1, 2, 0, &["injection", "temperature"]),
            visit("D15", 15, 12, 3, &["echocardiography"]),
            visit("D43", 43, 7, 7, &["echocardiography"]),
        ]);
        let evidence = Evidence {
            records: vec![("D3".into(), "disease_activity".into())],
            days: vec![("injection".into(), 1)],
            dated: vec![("temperature".into(), date("2026-10-04"))],
        };
        let s = schedule(
            &def,
            Some(date("2026-10-05")),
            &evidence,
            date("2026-10-06"),
        );
        let ids: Vec<&str> = s.iter().map(|v| v.visit.id.as_str()).collect();
        assert_eq!(ids, ["D1", "D3", "D15", "D43"]);
        assert_eq!(s[0].status, VisitStatus::Done);
        assert_eq!(s[0].recorded, ["injection", "temperature"]);
        assert_eq!(s[1].status, VisitStatus::PartlyDone);
        assert_eq!(s[1].recorded, ["disease_activity"]);
        assert_eq!(s[2].status, VisitStatus::NotYetDue);
        // a temperature outside D1's window does not count for it
        let evidence = Evidence {
            dated: vec![("temperature".into(), date("2026-10-06"))],
            ..evidence
        };
        let s = schedule(
            &def,
            Some(date("2026-10-05")),
            &evidence,
            date("2026-10-06"),
        );
        assert_eq!(s[0].status, VisitStatus::PartlyDone);
        // a log listed by a visit counts when dated inside the visit's window
        let def = definition(vec![visit("V1", 1, 0, 2, &["adverse_event"])]);
        let log = |on: &str| Evidence {
            dated: record_dates(
                &def,
                [("adverse_event", &json!({"onset_date": on}))],
                Tz::UTC,
            ),
            ..Evidence::default()
        };
        let status_with = |e: &Evidence| {
            schedule(&def, Some(date("2026-10-05")), e, date("2026-10-06"))[0].status
        };
        assert_eq!(status_with(&log("2026-10-07")), VisitStatus::Done);
        assert_eq!(status_with(&log("2026-10-08")), VisitStatus::Due);
        assert_eq!(status_with(&log("2026-10")), VisitStatus::Due);
        let def = definition(vec![
            visit("D3", 3, 0, 0, &["injection", "disease_activity"]),
            visit("D1", 1, 2, 0, &["injection", "temperature"]),
            visit("D15", 15, 12, 3, &["echocardiography"]),
            visit("D43", 43, 7, 7, &["echocardiography"]),
        ]);
        // no day 1: no windows, and not yet due unless something is recorded
        let s = schedule(&def, None, &Evidence::default(), date("2026-10-06"));
        assert!(s
            .iter()
            .all(|v| v.window.is_none() && v.status == VisitStatus::NotYetDue));
        // D15 with nothing once D43's target day has come: missed; D43 then due
        let s = schedule(
            &def,
            Some(date("2026-10-05")),
            &Evidence::default(),
            date("2026-11-16"),
        );
        assert_eq!(s[2].status, VisitStatus::Missed);
        assert_eq!(s[3].status, VisitStatus::Due);
    }

    #[test]
    fn the_anchor_is_the_earliest_site_local_date_across_a_dst_change() {
        let paris = parse_zone("Europe/Paris").unwrap_or(Tz::UTC);
        // 23:30 CEST on 24 October and 23:30 CET on 25 October (clocks went back that night)
        let day1 = anchor_from_values(["2026-10-25T22:30:00Z", "2026-10-24T21:30:00Z"], paris);
        assert_eq!(day1, Some(date("2026-10-24")));
        let w = window(date("2026-10-24"), &visit("D3", 3, 0, 0, &[]));
        assert_eq!(w.map(|w| w.target), Some(date("2026-10-26")));
        assert_eq!(
            anchor_from_values(["2026-10-05", "junk"], paris),
            Some(date("2026-10-05"))
        );
        assert_eq!(anchor_from_values(["junk"], paris), None);
    }

    #[test]
    fn day_one_follows_the_anchor_in_the_site_time_zone() {
        let paris = parse_zone("Europe/Paris").unwrap_or(Tz::UTC);
        let utc = |s: &str| {
            DateTime::parse_from_rfc3339(s)
                .map(|d| d.with_timezone(&Utc))
                .unwrap_or_default()
        };
        let mut def = definition(vec![]);
        def.schedule.anchor = Anchor::FirstDose;
        def.schedule.anchor_item = Some(crate::domain::study::ItemRef {
            form: "injection".into(),
            item: "administered_at".into(),
        });
        let facts = AnchorFacts {
            enrolled_at: Some(utc("2026-10-01T22:30:00Z")),
            item_values: vec!["2026-10-24T22:30:00Z".into(), "2026-10-24T21:30:00Z".into()],
        };
        assert_eq!(anchor_form(&def), Some(("injection", "administered_at")));
        // the earliest injection, 23:30 CEST on the 24th; the other is 00:30 CEST on the 25th
        assert_eq!(day_one(&def, &facts, paris), Some(date("2026-10-24")));
        assert_eq!(day_one(&def, &AnchorFacts::default(), paris), None);
        def.schedule.anchor = Anchor::Enrolment;
        assert_eq!(day_one(&def, &facts, paris), Some(date("2026-10-02")));
        def.schedule.anchor = Anchor::FirstDose;
        def.schedule.anchor_item = Some(crate::domain::study::ItemRef {
            form: "treatment".into(),
            item: "started_on".into(),
        });
        let facts = AnchorFacts {
            item_values: vec!["2026-10-10".into()],
            ..facts
        };
        assert_eq!(anchor_form(&def), Some(("treatment", "started_on")));
        assert_eq!(day_one(&def, &facts, paris), Some(date("2026-10-10")));
    }
}
