//! Serious adverse event alerts: when a write raises one, and what the sponsor's safety desk
//! receives, for every form bound to the `sae_alert` rule (the adverse event form among them).

use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde_json::{json, Map, Value};

use super::study::{Definition, RuleKind};

/// The event's fields an alert carries, each `null` when the form does not record it. They
/// are also the roles an `sae_alert` rule binds to items (besides `serious`).
pub const EVENT_FIELDS: [&str; 8] = [
    "term",
    "meddra_code",
    "grade",
    "seriousness_criteria",
    "relationship",
    "outcome",
    "onset_date",
    "awareness_date",
];

/// A record entered serious, or corrected from not serious to serious, raises an alert
/// (`before`: none for a new record). A correction of an event already serious does not
/// raise a second one.
pub fn raised(before: Option<bool>, after: bool) -> bool {
    after && before != Some(true)
}

/// What the alert is about and who reported it.
pub struct Report<'a> {
    pub study_id: &'a str,
    /// the SHA-256 of the study definition
    pub protocol_hash: &'a str,
    pub site_code: &'a str,
    pub subject_code: &'a str,
    /// the record: `{"form": "ae", "form_record_id": 12}` (and `"adverse_event_id": 12` for
    /// the adverse event form, the key the safety desk has always read)
    pub record: Map<String, Value>,
    /// the event, by [`EVENT_FIELDS`]
    pub event: &'a Map<String, Value>,
    pub awareness: Option<NaiveDate>,
    pub reported_by: i64,
    pub reported_at: DateTime<Utc>,
}

/// The alert's body: the report is due by the end of the day after the site learnt of the
/// event (unknown when the form does not record that date).
pub fn payload(r: &Report<'_>) -> Value {
    let due = r
        .awareness
        .map(|a| format!("{}T00:00:00 site time", a.succ_opt().unwrap_or(a)));
    let mut out = json!({
        "kind": "serious_adverse_event",
        "study_id": r.study_id,
        "protocol_hash": r.protocol_hash,
        "site_code": r.site_code,
        "subject_code": r.subject_code,
        "report_due_by": due,
        "reported_by_user_id": r.reported_by,
        "reported_at": r.reported_at,
    });
    if let Some(o) = out.as_object_mut() {
        for f in EVENT_FIELDS {
            o.insert(f.into(), r.event.get(f).cloned().unwrap_or(Value::Null));
        }
        o.extend(r.record.clone());
    }
    out
}

/// The items of a form that an `sae_alert` rule reads in the safety views.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    pub form: String,
    pub serious: String,
    pub term: Option<String>,
    pub awareness_date: Option<String>,
}

/// The forms of the definition bound to the `sae_alert` rule (a rule without a `serious`
/// item raises nothing, so it lists nothing either).
pub fn bindings(def: &Definition) -> Vec<Binding> {
    def.rules
        .iter()
        .filter(|r| r.kind == RuleKind::SaeAlert)
        .filter_map(|r| {
            Some(Binding {
                form: r.form.clone()?,
                serious: r.item("serious")?.to_owned(),
                term: r.item("term").map(str::to_owned),
                awareness_date: r.item("awareness_date").map(str::to_owned),
            })
        })
        .collect()
}

/// How a serious report is late, judged against 24 h after the start of the awareness date,
/// UTC (the most demanding reading): (entered after it, alert not delivered by it).
pub fn lateness(
    awareness: NaiveDate,
    entered_at: DateTime<Utc>,
    delivered_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> (bool, bool) {
    let deadline = awareness.and_time(chrono::NaiveTime::MIN).and_utc() + Duration::hours(24);
    let entered_late = entered_at > deadline;
    let delivery_late = delivered_at.map_or(now > deadline, |d| d > deadline);
    (entered_late, delivery_late)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_safety_views_read_the_items_the_sae_alert_rule_binds() {
        let text = include_str!("../../config/studies/kawasaki.toml");
        let def = crate::domain::study::parse("kawasaki", text).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(
            bindings(&def),
            vec![Binding {
                form: "adverse_event".into(),
                serious: "serious".into(),
                term: Some("term".into()),
                awareness_date: Some("awareness_date".into()),
            }]
        );
    }

    #[test]
    fn a_report_is_late_after_a_day_from_the_start_of_awareness() {
        let day = NaiveDate::from_ymd_opt(2026, 11, 4).unwrap_or_default();
        let at = |s: &str| s.parse::<DateTime<Utc>>().unwrap_or_default();
        let now = at("2026-11-10T00:00:00Z");
        assert_eq!(
            lateness(
                day,
                at("2026-11-05T00:00:00Z"),
                Some(at("2026-11-05T00:00:00Z")),
                now
            ),
            (false, false)
        );
        assert_eq!(
            lateness(day, at("2026-11-05T00:00:01Z"), None, now),
            (true, true)
        );
        assert_eq!(
            lateness(
                day,
                at("2026-11-04T09:00:00Z"),
                None,
                at("2026-11-04T23:00:00Z")
            ),
            (false, false)
        );
        assert_eq!(
            lateness(
                day,
                at("2026-11-04T09:00:00Z"),
                Some(at("2026-11-05T08:00:00Z")),
                now
            ),
            (false, true)
        );
    }

    #[test]
    fn an_event_raises_an_alert_when_it_becomes_serious_once() {
        assert!(raised(None, true));
        assert!(!raised(None, false));
        assert!(raised(Some(false), true));
        assert!(!raised(Some(true), true));
        assert!(!raised(Some(true), false));
    }

    #[test]
    fn the_payload_carries_every_event_field_and_the_due_date() {
        let event: Map<String, Value> = json!({"term": "Sepsis", "grade": 4, "other": 1})
            .as_object()
            .cloned()
            .unwrap_or_default();
        let mut record = Map::new();
        record.insert("form_record_id".into(), json!(12));
        let at: DateTime<Utc> = "2026-11-05T10:00:00Z".parse().unwrap_or_default();
        let p = payload(&Report {
            study_id: "S",
            protocol_hash: "h",
            site_code: "FRA",
            subject_code: "FRA-001",
            record,
            event: &event,
            awareness: NaiveDate::from_ymd_opt(2026, 11, 4),
            reported_by: 3,
            reported_at: at,
        });
        assert_eq!(p["term"], "Sepsis");
        assert_eq!(p["grade"], 4);
        assert_eq!(p["meddra_code"], Value::Null);
        assert!(p.get("other").is_none());
        assert_eq!(p["form_record_id"], 12);
        assert_eq!(p["report_due_by"], "2026-11-05T00:00:00 site time");
        assert_eq!(p["kind"], "serious_adverse_event");
    }
}
