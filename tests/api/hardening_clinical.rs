//! Clinical data integrity under the hardening issue (16): signatures against concurrent
//! writes, consent withdrawal, site time zones, plausible dates, idempotent replays and
//! inactive sites.

use std::time::Duration;

use casebook::auth::Role;
use serde_json::{json, Value};

use crate::clinical::enrolled;
use crate::helpers::{TestApp, PASSWORD};

/// A temperature reading `minutes` after 2026-10-05 00:00 UTC (distinct readings keep the
/// casebook's order, and so its hash, well defined).
fn reading(minutes: i64) -> Value {
    let at = chrono::DateTime::parse_from_rfc3339("2026-10-05T00:00:00Z").unwrap()
        + chrono::Duration::minutes(minutes);
    json!({"measured_at": at.to_rfc3339(), "celsius": 37.0, "method": "oral"})
}

async fn sign(app: &TestApp, token: &str, code: &str) -> Value {
    let r = app
        .post(
            &format!("/api/v1/subjects/{code}/signatures"),
            token,
            &json!({"password": PASSWORD, "meaning": "approval"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    r.body
}

#[actix_web::test]
async fn a_signature_never_stays_valid_over_a_temperature_it_does_not_cover() {
    let app = TestApp::spawn().await;
    app.site("FR01", "Europe/Paris");
    let email = app.user(Role::Investigator, &["FR01"]);
    let inv = app.login(&email).await;
    let code = enrolled(&app, &inv, "FR01").await;
    let path = format!("/api/v1/subjects/{code}/temperatures");
    let mut minute = 0;
    for round in 0..12 {
        // a signature and, spread over the time it takes, readings of the same subject
        let signing = {
            let (app_url, client) = (app.url(""), app.client.clone());
            let (inv, code) = (inv.clone(), code.clone());
            actix_web::rt::spawn(async move {
                client
                    .post(format!("{app_url}/api/v1/subjects/{code}/signatures"))
                    .bearer_auth(inv)
                    .json(&json!({"password": PASSWORD, "meaning": "approval"}))
                    .send()
                    .await
                    .unwrap()
                    .json::<Value>()
                    .await
                    .unwrap()
            })
        };
        let mut writes = Vec::new();
        for k in 0..10u64 {
            minute += 1;
            let (url, client, inv, body) = (
                app.url(&path),
                app.client.clone(),
                inv.clone(),
                reading(minute),
            );
            writes.push(actix_web::rt::spawn(async move {
                actix_web::rt::time::sleep(Duration::from_millis(k * 3)).await;
                let r = client.post(url).bearer_auth(inv).json(&body).send().await;
                r.unwrap().status().as_u16()
            }));
        }
        // and adverse events, whose path is a transaction of its own (not the one-statement
        // entry of temperatures)
        for k in 0..2u64 {
            let mut event = crate::adverse_events::mild_event();
            event["term"] = json!(format!("Rash {round}-{k}"));
            let (url, client, inv) = (
                app.url(&format!("/api/v1/subjects/{code}/adverse-events")),
                app.client.clone(),
                inv.clone(),
            );
            writes.push(actix_web::rt::spawn(async move {
                actix_web::rt::time::sleep(Duration::from_millis(2 + k * 7)).await;
                let r = client.post(url).bearer_auth(inv).json(&event).send().await;
                r.unwrap().status().as_u16()
            }));
        }
        // and corrections of earlier readings, which take no foreign-key lock on the subject
        let earlier = app.get(&path, &inv).await.body;
        let unchanged = earlier
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["version"] == json!(1))
            .take(3)
            .map(|t| t["id"].as_i64().unwrap());
        let mut corrections = Vec::new();
        for (k, id) in (0..3u64).zip(unchanged) {
            let (url, client, inv) = (
                app.url(&format!("{path}/{id}")),
                app.client.clone(),
                inv.clone(),
            );
            corrections.push(actix_web::rt::spawn(async move {
                actix_web::rt::time::sleep(Duration::from_millis(1 + k * 5)).await;
                let r = client
                    .patch(url)
                    .bearer_auth(inv)
                    .header("If-Match", "\"1\"")
                    .json(&json!({"celsius": 38.5, "reason": "misread"}))
                    .send()
                    .await;
                r.unwrap().status().as_u16()
            }));
        }
        for w in writes {
            assert_eq!(w.await.unwrap(), 201);
        }
        for c in corrections {
            assert_eq!(c.await.unwrap(), 200);
        }
        let signed = signing.await.unwrap();
        let id = signed["id"].as_i64().expect("signed");
        let list = app
            .get(&format!("/api/v1/subjects/{code}/signatures"), &inv)
            .await;
        let this = list.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == json!(id))
            .unwrap()
            .clone();
        if this["invalidated_at"].is_null() {
            // still valid: it must cover exactly the casebook as it is now, which a
            // second signature over the unchanged data hashes again
            let again = sign(&app, &inv, &code).await;
            assert_eq!(
                this["casebook_sha256"], again["casebook_sha256"],
                "round {round}: signature {id} is valid but does not cover the data committed"
            );
        }
    }
}

/// The last audit row of `table` for `record`: (old values, new values).
fn last_audit(app: &TestApp, table: &str, record: i64) -> (Value, Value) {
    use diesel::prelude::*;
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Jsonb>)]
        old_values: Option<Value>,
        #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Jsonb>)]
        new_values: Option<Value>,
    }
    let row: Row = diesel::sql_query(format!(
        "SELECT old_values, new_values FROM audit_log WHERE entity_table = '{table}' \
         AND record_id = {record} ORDER BY id DESC LIMIT 1"
    ))
    .get_result(&mut app.conn())
    .unwrap();
    (
        row.old_values.unwrap_or(Value::Null),
        row.new_values.unwrap_or(Value::Null),
    )
}

async fn subject(app: &TestApp, token: &str, code: &str) -> Value {
    let r = app.get(&format!("/api/v1/subjects/{code}"), token).await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.body
}

#[actix_web::test]
async fn a_withdrawal_before_live_data_is_refused_and_a_withdrawal_can_be_corrected() {
    let app = TestApp::spawn().await;
    app.site("FR01", "Europe/Paris");
    let inv = app.token(Role::Investigator, &["FR01"]).await;
    let code = enrolled(&app, &inv, "FR01").await;
    let base = format!("/api/v1/subjects/{code}");
    // 00:30 in Paris (UTC+2): a Paris date of 2026-10-06, a UTC date of 2026-10-05
    let r = app
        .post(
            &format!("{base}/temperatures"),
            &inv,
            &json!({"measured_at": "2026-10-05T22:30:00Z", "celsius": 38.0, "method": "oral"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let temp = r.body["id"].as_i64().unwrap();
    let consent = app.get(&format!("{base}/consents"), &inv).await.body[0].clone();
    let id = consent["id"].as_i64().unwrap();
    let audits = "SELECT count(*) AS n FROM audit_log";
    let before = app.count(audits);

    let withdraw = format!("{base}/consents/{id}/withdraw");
    let r = app
        .post(
            &withdraw,
            &inv,
            &json!({"withdrawn_on": "2026-10-05", "scope": "all", "reason": "parents withdrew"}),
        )
        .await;
    r.assert_problem(422, Some("withdrawn_on"));
    assert!(
        r.text.contains(&format!("temperature {temp}")),
        "names the data: {}",
        r.text
    );
    assert_eq!(app.count(audits), before, "nothing written");
    assert_eq!(
        subject(&app, &inv, &code).await["status"],
        json!("enrolled")
    );

    let r = app
        .post(
            &withdraw,
            &inv,
            &json!({"withdrawn_on": "2026-10-06", "scope": "treatment", "reason": "parents withdrew"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);

    // the withdrawal is corrected like any field: If-Match, a reason, the same rules
    let path = format!("{base}/consents/{id}");
    let r = app
        .patch(
            &path,
            &inv,
            2,
            &json!({"withdrawn_on": "2026-10-05", "reason": "date misread"}),
        )
        .await;
    r.assert_problem(422, Some("withdrawn_on"));
    let r = app
        .patch(
            &path,
            &inv,
            2,
            &json!({"withdrawn_on": "2026-10-07", "withdrawal_scope": "all", "reason": "date misread"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["withdrawn_on"], json!("2026-10-07"));
    assert_eq!(r.body["withdrawal_scope"], json!("all"));
    let (old, new) = last_audit(&app, "consents", id);
    assert_eq!(old["withdrawn_on"], json!("2026-10-06"), "{old}");
    assert_eq!(new["withdrawal_scope"], json!("all"), "{new}");

    // the subject's status follows a withdrawal of everything, audited with its old value
    let s = subject(&app, &inv, &code).await;
    assert_eq!(s["status"], json!("withdrawn"));
    let sid = s["id"].as_i64().unwrap();
    let (old, new) = last_audit(&app, "subjects", sid);
    assert_eq!(old, json!({"status": "enrolled"}));
    assert_eq!(new, json!({"status": "withdrawn"}));
    // and cannot be set back while the consent says so
    let version = s["version"].as_i64().unwrap();
    let r = app
        .patch(
            &base,
            &inv,
            version,
            &json!({"status": "enrolled", "reason": "back in"}),
        )
        .await;
    r.assert_problem(422, Some("status"));

    // a withdrawal of treatment only leaves the subject enrolled again
    let r = app
        .patch(
            &path,
            &inv,
            3,
            &json!({"withdrawal_scope": "treatment", "reason": "scope misread"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        subject(&app, &inv, &code).await["status"],
        json!("enrolled")
    );
    let (old, new) = last_audit(&app, "subjects", sid);
    assert_eq!(old, json!({"status": "withdrawn"}));
    assert_eq!(new, json!({"status": "enrolled"}));

    // the withdrawal of a consent that is not withdrawn is not a correction
    let r = app
        .post(
            &format!("{base}/consents"),
            &inv,
            &json!({"form_version": "2.0", "signed_on": "2026-10-02", "signer": "participant"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let other = r.body["id"].as_i64().unwrap();
    app.patch(
        &format!("{base}/consents/{other}"),
        &inv,
        1,
        &json!({"withdrawn_on": "2026-10-07", "reason": "x"}),
    )
    .await
    .assert_problem(422, Some("withdrawn_on"));
}

#[actix_web::test]
async fn a_consent_correction_meets_the_rules_of_its_creation() {
    let app = TestApp::spawn().await;
    app.site("FR01", "Europe/Paris");
    let inv = app.token(Role::Investigator, &["FR01"]).await;
    let code = enrolled(&app, &inv, "FR01").await;
    let path = format!("/api/v1/subjects/{code}/consents/1");
    let long = "m".repeat(250_000);
    for bad in [long.as_str(), "", "   "] {
        let body = json!({"representative_relationship": bad, "reason": "typo"});
        app.patch(&path, &inv, 1, &body)
            .await
            .assert_problem(422, Some("representative_relationship"));
        app.post(
            &format!("/api/v1/subjects/{code}/consents"),
            &inv,
            &json!({"form_version": "2.0", "signed_on": "2026-10-01",
                    "signer": "legal_representative", "representative_relationship": bad}),
        )
        .await
        .assert_problem(422, Some("representative_relationship"));
    }
    let consents = app
        .get(&format!("/api/v1/subjects/{code}/consents"), &inv)
        .await;
    assert_eq!(consents.body.as_array().unwrap().len(), 1);
    assert_eq!(consents.body[0]["version"], json!(1), "nothing written");
    assert_eq!(
        consents.body[0]["representative_relationship"],
        json!("mother")
    );
    // stored as checked, as on creation
    let r = app
        .patch(
            &path,
            &inv,
            1,
            &json!({"representative_relationship": "  father ", "reason": "typo"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["representative_relationship"], json!("father"));
}

#[actix_web::test]
async fn an_inactive_site_takes_no_data() {
    let app = TestApp::spawn().await;
    app.site("FR01", "Europe/Paris");
    let inv = app.token(Role::Investigator, &["FR01"]).await;
    let admin = app.token(Role::Admin, &[]).await;
    let code = enrolled(&app, &inv, "FR01").await;
    let base = format!("/api/v1/subjects/{code}");
    let r = app
        .post(&format!("{base}/temperatures"), &inv, &reading(60))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let r = app
        .request(
            reqwest::Method::PATCH,
            "/api/v1/sites/FR01",
            Some(&admin),
            Some(&json!({"active": false})),
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let audits = app.count("SELECT count(*) AS n FROM audit_log");
    let records = "SELECT (SELECT count(*) FROM form_records \
                   WHERE form_id IN ('temperature', 'injection', 'adverse_event')) \
                   + (SELECT count(*) FROM consents) AS n";
    let before = app.count(records);

    // every form, new and corrected, with and without an Idempotency-Key
    for (path, body) in [
        (format!("{base}/temperatures"), reading(61)),
        (
            format!("{base}/injections"),
            crate::clinical::injection(1, "2026-10-05T06:00:00Z", 40.0),
        ),
        (
            format!("{base}/adverse-events"),
            crate::adverse_events::mild_event(),
        ),
        (
            format!("{base}/consents"),
            json!({"form_version": "2.0", "signed_on": "2026-10-02", "signer": "participant"}),
        ),
    ] {
        let r = app.post(&path, &inv, &body).await;
        r.assert_problem(423, None);
        assert!(r.text.contains("inactive"), "{}", r.text);
        app.request(
            reqwest::Method::POST,
            &path,
            Some(&inv),
            Some(&body),
            &[("Idempotency-Key", "k-1")],
        )
        .await
        .assert_problem(423, None);
    }
    app.patch(
        &format!("{base}/temperatures/1"),
        &inv,
        1,
        &json!({"celsius": 38.0, "reason": "misread"}),
    )
    .await
    .assert_problem(423, None);
    app.patch(
        &base,
        &inv,
        1,
        &json!({"weight_kg": 21.0, "reason": "weighed again"}),
    )
    .await
    .assert_problem(423, None);
    assert_eq!(app.count(records), before, "nothing written");
    assert_eq!(app.count("SELECT count(*) AS n FROM audit_log"), audits);
}

#[actix_web::test]
async fn a_site_with_subjects_keeps_its_time_zone() {
    let app = TestApp::spawn().await;
    app.site("FR01", "Europe/Paris");
    app.site("FR02", "Europe/Paris");
    let inv = app.token(Role::Investigator, &["FR01"]).await;
    let admin = app.token(Role::Admin, &[]).await;
    enrolled(&app, &inv, "FR01").await;
    let patch = |site: &'static str, body: Value| {
        let (app, admin) = (&app, admin.clone());
        async move {
            app.request(
                reqwest::Method::PATCH,
                &format!("/api/v1/sites/{site}"),
                Some(&admin),
                Some(&body),
                &[],
            )
            .await
        }
    };
    let audits = app.count("SELECT count(*) AS n FROM audit_log");
    let r = patch("FR01", json!({"time_zone": "Asia/Tokyo"})).await;
    r.assert_problem(422, Some("time_zone"));
    assert!(r.text.contains("(1 so far)"), "{}", r.text);
    assert_eq!(app.count("SELECT count(*) AS n FROM audit_log"), audits);
    assert_eq!(
        app.count("SELECT count(*) AS n FROM sites WHERE time_zone = 'Europe/Paris'"),
        2
    );
    // the same zone, other fields, and a site without subjects: as before
    let r = patch(
        "FR01",
        json!({"time_zone": "Europe/Paris", "name": "Paris"}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = patch("FR02", json!({"time_zone": "Asia/Tokyo"})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["time_zone"], json!("Asia/Tokyo"));
}

#[actix_web::test]
async fn a_replay_is_only_for_a_caller_who_can_still_see_the_record() {
    let app = TestApp::spawn().await;
    app.site("FR01", "Europe/Paris");
    app.site("FR02", "Europe/Paris");
    let email = app.user(Role::Investigator, &["FR01"]);
    let inv = app.login(&email).await;
    let admin = app.token(Role::Admin, &[]).await;
    let code = enrolled(&app, &inv, "FR01").await;
    let forms = [
        (format!("/api/v1/subjects/{code}/temperatures"), reading(90)),
        (
            format!("/api/v1/subjects/{code}/consents"),
            json!({"form_version": "2.0", "signed_on": "2026-10-02", "signer": "participant"}),
        ),
        (
            "/api/v1/subjects".to_owned(),
            crate::clinical::new_subject("FR01"),
        ),
    ];
    let keys = ["retry-1", "retry-2", "retry-3"];
    for ((path, body), key) in forms.iter().zip(keys) {
        let r = app
            .request(
                reqwest::Method::POST,
                path,
                Some(&inv),
                Some(body),
                &[("Idempotency-Key", key)],
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
    }
    // moved to another site: FR01's records are out of sight, retries included
    let id = app.count(&format!(
        "SELECT id AS n FROM users WHERE email = '{email}'"
    ));
    let r = app
        .request(
            reqwest::Method::PATCH,
            &format!("/api/v1/users/{id}"),
            Some(&admin),
            Some(&json!({"site_codes": ["FR02"]})),
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let inv = app.login(&email).await;
    for ((path, body), key) in forms.iter().zip(keys) {
        let r = app
            .request(
                reqwest::Method::POST,
                path,
                Some(&inv),
                Some(body),
                &[("Idempotency-Key", key)],
            )
            .await;
        r.assert_problem(404, None);
        assert!(!r.text.contains(&code), "{}", r.text);
    }
}

#[actix_web::test]
async fn an_idempotency_key_that_is_not_visible_ascii_is_refused() {
    let app = TestApp::spawn().await;
    app.site("FR01", "Europe/Paris");
    let inv = app.token(Role::Investigator, &["FR01"]).await;
    let code = enrolled(&app, &inv, "FR01").await;
    let records =
        "SELECT (SELECT count(*) FROM form_records WHERE form_id = 'temperature') + (SELECT count(*) FROM consents) AS n";
    let before = app.count(records);
    for key in [&b"cl\xc3\xa9"[..], b"a b", b""] {
        for (path, body) in [
            (format!("/api/v1/subjects/{code}/temperatures"), reading(30)),
            (
                format!("/api/v1/subjects/{code}/consents"),
                json!({"form_version": "2.0", "signed_on": "2026-10-02", "signer": "participant"}),
            ),
        ] {
            let resp = app
                .client
                .post(app.url(&path))
                .bearer_auth(&inv)
                .header(
                    "Idempotency-Key",
                    reqwest::header::HeaderValue::from_bytes(key).unwrap(),
                )
                .json(&body)
                .send()
                .await
                .unwrap();
            let r = crate::helpers::Resp::read(resp).await;
            r.assert_problem(422, Some("Idempotency-Key"));
        }
    }
    assert_eq!(app.count(records), before, "nothing written");
}

#[actix_web::test]
async fn no_clinical_date_before_the_subjects_birth_month_nor_1900() {
    use diesel::connection::SimpleConnection;
    let app = TestApp::spawn().await;
    app.site("FR01", "Europe/Paris");
    let inv = app.token(Role::Investigator, &["FR01"]).await;
    // born 2023-04, consented 2026-10-01
    let code = enrolled(&app, &inv, "FR01").await;
    let base = format!("/api/v1/subjects/{code}");
    let consent = |signed_on: &str| json!({"form_version": "2.0", "signed_on": signed_on, "signer": "participant"});
    for day in ["0001-01-01", "1899-12-31", "2023-03-31"] {
        app.post(&format!("{base}/consents"), &inv, &consent(day))
            .await
            .assert_problem(422, Some("signed_on"));
        app.patch(
            &format!("{base}/consents/1"),
            &inv,
            1,
            &json!({"signed_on": day, "reason": "misread"}),
        )
        .await
        .assert_problem(422, Some("signed_on"));
    }
    let r = app
        .post(&format!("{base}/consents"), &inv, &consent("2023-04-01"))
        .await;
    assert_eq!(r.status, 201, "the birth month itself: {}", r.text);

    // a consent of year 1 left from before the rule: the data still have their floor
    app.conn()
        .batch_execute(
            "INSERT INTO consents (site_id, subject_id, form_version, signed_on, signer, \
               obtained_by, created_by, updated_by) \
             SELECT site_id, id, '2.0', '0001-01-01', 'participant', 1, 1, 1 FROM subjects",
        )
        .unwrap();
    let records = "SELECT count(*) AS n FROM form_records \
                   WHERE form_id IN ('temperature', 'injection', 'adverse_event')";
    for (form, field, body) in [
        (
            "temperatures",
            "measured_at",
            json!({"measured_at": "0001-06-01T12:00:00Z", "celsius": 37.0, "method": "oral"}),
        ),
        (
            "temperatures",
            "measured_at",
            json!({"measured_at": "2023-03-31T12:00:00Z", "celsius": 37.0, "method": "oral"}),
        ),
        (
            "injections",
            "administered_at",
            crate::clinical::injection(1, "0001-06-01T12:00:00Z", 40.0),
        ),
        ("adverse-events", "onset_date", {
            let mut e = crate::adverse_events::mild_event();
            e["onset_date"] = json!("2023-03");
            e
        }),
    ] {
        app.post(&format!("{base}/{form}"), &inv, &body)
            .await
            .assert_problem(422, Some(field));
    }
    assert_eq!(app.count(records), 0, "nothing written");

    // nor may the birth month move after the data
    let s = app.get(&base, &inv).await.body;
    app.patch(
        &base,
        &inv,
        s["version"].as_i64().unwrap(),
        &json!({"birth_year_month": "2026-11", "reason": "misread"}),
    )
    .await
    .assert_problem(422, Some("birth_year_month"));
}

#[actix_web::test]
async fn concurrent_corrections_of_a_subject_wait_for_each_other_without_deadlock() {
    // every write holds its subject (FOR KEY SHARE): a correction of the subject's own row
    // must then take a lock that those holds do not block, or two would deadlock
    let app = TestApp::spawn().await;
    app.site("FR01", "Europe/Paris");
    let inv = app.token(Role::Investigator, &["FR01"]).await;
    let code = enrolled(&app, &inv, "FR01").await;
    let tasks: Vec<_> = (0..6)
        .map(|i| {
            let (url, client, inv) = (
                app.url(&format!("/api/v1/subjects/{code}")),
                app.client.clone(),
                inv.clone(),
            );
            actix_web::rt::spawn(async move {
                let r = client
                    .patch(url)
                    .bearer_auth(inv)
                    .header("If-Match", "\"1\"")
                    .json(&json!({"weight_kg": 20.0 + f64::from(i), "reason": "weighed again"}))
                    .send()
                    .await
                    .unwrap();
                r.status().as_u16()
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    statuses.sort_unstable();
    assert_eq!(statuses, vec![200, 412, 412, 412, 412, 412]);
}
