//! Serious adverse event alerts: the outbox row written with the event (today's adverse
//! event form, or a record of a form bound to the `sae_alert` rule), and the worker that
//! delivers it to the sponsor's safety desk.
//!
//! Delivery: a JSON POST to the configured webhook, signed with HMAC-SHA256 over the body
//! (`X-Casebook-Signature: sha256=<hex>`), retried with exponential backoff and jitter until
//! a 2xx, each attempt recorded; success, failures and giving up are audited. The outbox's
//! SQL is in `db::sae_alerts`.

use std::time::{Duration, Instant};

use chrono::Utc;
use diesel::{Connection, PgConnection};
use hmac::{Hmac, Mac};
use rand::Rng;
use serde_json::{json, Map, Value};

use crate::audit::{self, AuditEvent, RequestMeta};
use crate::auth::Caller;
use crate::config::SaeSettings;
use crate::db::sae_alerts;
pub use crate::db::sae_alerts::Source;
use crate::db::subjects::SubjectRef;
use crate::domain::sae;
use crate::domain::study::{Definition, Form, RuleKind};
use crate::error::AppResult;

/// Queues an alert in the caller's transaction, audited (`sae_queued`), so that the trail
/// shows when the safety desk's alert was raised and by whom, before any delivery.
pub fn enqueue(
    conn: &mut PgConnection,
    caller: &Caller,
    source: Source,
    subject: &SubjectRef,
    payload: &Value,
) -> AppResult<i64> {
    let (key, rid) = match source {
        Source::AdverseEvent(id) => ("adverse_event_id", id),
        Source::FormRecord(id) => ("form_record_id", id),
    };
    let id = sae_alerts::insert(conn, source, subject.site_id, subject.id, payload)?;
    audit::record(
        conn,
        &AuditEvent::new(
            Some(&caller.actor),
            "sae_queued",
            "sae_alerts",
            &caller.meta,
        )
        .record(id)
        .site(Some(subject.site_id))
        .subject(Some(subject.id))
        .new_values(json!({ key: rid, "status": "pending" })),
    )?;
    Ok(id)
}

/// The `sae_alert` rules bound to `form` after a write of record `id` (`before`: the
/// values it had, none when new): a record entered serious, or corrected to serious, queues
/// the alert today's adverse event form queues, its event fields read from the items the
/// rule binds.
#[allow(clippy::too_many_arguments)]
pub fn raise_for_record(
    conn: &mut PgConnection,
    def: &Definition,
    caller: &Caller,
    subject: &SubjectRef,
    form: &Form,
    id: i64,
    before: Option<&Map<String, Value>>,
    after: &Map<String, Value>,
) -> AppResult<()> {
    let serious =
        |values: &Map<String, Value>, item: &str| values.get(item) == Some(&Value::Bool(true));
    for rule in def
        .rules
        .iter()
        .filter(|r| r.kind == RuleKind::SaeAlert && r.form.as_deref() == Some(&form.id))
    {
        let Some(item) = rule.item("serious") else {
            continue;
        };
        if !sae::raised(before.map(|b| serious(b, item)), serious(after, item)) {
            continue;
        }
        let event: Map<String, Value> = sae::EVENT_FIELDS
            .iter()
            .filter_map(|f| Some(((*f).to_owned(), after.get(rule.item(f)?)?.clone())))
            .collect();
        let awareness = event
            .get("awareness_date")
            .and_then(Value::as_str)
            .and_then(|s| chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").ok());
        let mut record = Map::new();
        record.insert("form".into(), json!(form.id));
        record.insert("form_record_id".into(), json!(id));
        let site = crate::db::subjects::site_code(conn, subject.site_id)?;
        let payload = sae::payload(&sae::Report {
            study_id: &def.study.id,
            protocol_hash: &def.sha256,
            site_code: &site,
            subject_code: &subject.code,
            record,
            event: &event,
            awareness,
            reported_by: caller.user_id,
            reported_at: Utc::now(),
        });
        enqueue(conn, caller, Source::FormRecord(id), subject, &payload)?;
    }
    Ok(())
}

pub fn signature(secret: &str, body: &[u8]) -> String {
    // HMAC accepts keys of any length
    let mut mac = match Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Seconds to wait before attempt `n + 1`: base * 2^n, capped, with ±50% jitter.
pub fn backoff_secs(settings: &SaeSettings, attempts: i32) -> f64 {
    let exp = 2f64.powi(attempts.clamp(0, 30));
    let base =
        (settings.backoff_base_ms as f64 / 1000.0 * exp).min(settings.backoff_max_secs as f64);
    base * rand::thread_rng().gen_range(0.5..1.5)
}

/// Delivers the alerts that are due. Returns how many were attempted.
pub fn deliver_due(conn: &mut PgConnection, settings: &SaeSettings) -> AppResult<usize> {
    let Some(url) = settings.webhook_url.as_deref().filter(|u| !u.is_empty()) else {
        return Ok(0); // no webhook configured: alerts wait, visible as pending
    };
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_millis(settings.timeout_ms))
        .build();
    let mut attempted = 0;
    for _ in 0..settings.batch {
        let done = conn.transaction(|conn| -> AppResult<bool> {
            let Some(sae_alerts::Due {
                id,
                payload,
                attempts,
                site_id,
                subject_id,
            }) = sae_alerts::claim_due(conn)?
            else {
                return Ok(false);
            };
            let body = serde_json::to_vec(&payload).unwrap_or_default();
            let started = Instant::now();
            let result = agent
                .post(url)
                .set("content-type", "application/json")
                .set(
                    "x-casebook-signature",
                    &signature(&settings.webhook_secret, &body),
                )
                .set("x-casebook-alert-id", &id.to_string())
                .send_bytes(&body);
            let ms = i32::try_from(started.elapsed().as_millis()).unwrap_or(i32::MAX);
            let (status, error) = match result {
                Ok(r) => (Some(i32::from(r.status())), None),
                Err(ureq::Error::Status(code, _)) => {
                    (Some(i32::from(code)), Some(format!("HTTP {code}")))
                }
                Err(e) => (None, Some(e.to_string())),
            };
            sae_alerts::record_attempt(conn, id, status, error.as_deref(), ms)?;
            let attempts = attempts + 1;
            let meta = RequestMeta {
                request_id: format!("sae-alert-{id}"),
                client_addr: None,
            };
            let base = AuditEvent::new(None, "", "sae_alerts", &meta)
                .by_system("sae-delivery")
                .record(id)
                .site(Some(site_id))
                .subject(Some(subject_id));
            if error.is_none() {
                sae_alerts::mark_delivered(conn, id, attempts)?;
                let mut e = base.new_values(json!({"attempts": attempts, "http_status": status}));
                e.action = "sae_delivered";
                audit::record(conn, &e)?;
            } else if attempts >= settings.max_attempts {
                sae_alerts::mark_failed(conn, id, attempts, error.as_deref())?;
                let mut e = base.new_values(json!({"attempts": attempts, "error": error}));
                e.action = "sae_gave_up";
                audit::record(conn, &e)?;
            } else {
                let wait = backoff_secs(settings, attempts - 1);
                let next = Utc::now() + chrono::Duration::milliseconds((wait * 1000.0) as i64);
                sae_alerts::retry_at(conn, id, attempts, next, error.as_deref())?;
                let mut e = base.new_values(
                    json!({"attempts": attempts, "error": error, "next_attempt_at": next}),
                );
                e.action = "sae_delivery_failed";
                audit::record(conn, &e)?;
            }
            Ok(true)
        })?;
        if !done {
            break;
        }
        attempted += 1;
    }
    Ok(attempted)
}
