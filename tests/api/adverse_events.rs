//! Adverse events and serious-adverse-event alerts that reach the sponsor in time.

use std::sync::{Arc, Mutex};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use casebook::auth::Role;
use reqwest::Method;
use serde_json::{json, Value};

use crate::clinical::enrolled;
use crate::helpers::TestApp;

pub fn mild_event() -> Value {
    json!({"term": "Injection-site pain, \"sharp\", thigh", "onset_date": "2026-10-06", "grade": 1,
           "serious": false, "relationship": "probable", "action_taken": "none",
           "outcome": "recovering", "awareness_date": "2026-10-06"})
}

fn pneumonia() -> Value {
    json!({"term": "Bacterial pneumonia", "meddra_code": "10060946", "meddra_term": "Pneumonia bacterial",
           "onset_date": "2026-10", "grade": 3, "serious": true, "seriousness_criteria": ["hospitalisation"],
           "relationship": "possible", "action_taken": "interrupted", "outcome": "recovering",
           "awareness_date": "2026-10-08"})
}

/// A safety desk that records what it receives and fails the first `fail_first` calls.
#[derive(Clone, Default)]
struct Desk {
    received: Arc<Mutex<Vec<(Value, String)>>>,
    calls: Arc<Mutex<usize>>,
    fail_first: usize,
    always_fail: bool,
}

async fn receive(desk: web::Data<Desk>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    let n = {
        let mut c = desk.calls.lock().unwrap();
        *c += 1;
        *c
    };
    if desk.always_fail || n <= desk.fail_first {
        return HttpResponse::ServiceUnavailable().finish();
    }
    let sig = req
        .headers()
        .get("x-casebook-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    desk.received
        .lock()
        .unwrap()
        .push((serde_json::from_slice(&body).unwrap_or(Value::Null), sig));
    HttpResponse::Ok().finish()
}

fn start_desk(desk: Desk) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let data = web::Data::new(desk);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .route("/sae", web::post().to(receive))
    })
    .workers(1)
    .listen(listener)
    .unwrap()
    .run();
    actix_web::rt::spawn(server);
    format!("http://127.0.0.1:{port}/sae")
}

const SECRET: &str = "a webhook secret for tests";

async fn with_desk(desk: &Desk, max_attempts: &str) -> (TestApp, String) {
    let url = start_desk(desk.clone());
    let app = TestApp::spawn_with(&[
        ("CASEBOOK_SAE_WEBHOOK_URL", &url),
        ("CASEBOOK_SAE_WEBHOOK_SECRET", SECRET),
        ("CASEBOOK__SAE__MAX_ATTEMPTS", max_attempts),
    ])
    .await;
    app.site("FR01", "Europe/Paris");
    let inv = app.token(Role::Investigator, &["FR01"]).await;
    (app, inv)
}

async fn wait_for(app: &TestApp, sql: &str, n: i64) {
    for _ in 0..200 {
        if app.count(sql) >= n {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for {sql} >= {n}, got {}", app.count(sql));
}

#[actix_web::test]
async fn consistency_checks_reject_and_write_nothing() {
    let app = TestApp::spawn().await;
    app.site("FR01", "Europe/Paris");
    let inv = app.token(Role::Investigator, &["FR01"]).await;
    let code = enrolled(&app, &inv, "FR01").await;
    let path = format!("/api/v1/subjects/{code}/adverse-events");
    let with = |changes: Value| {
        let mut b = pneumonia();
        for (k, v) in changes.as_object().unwrap() {
            if v.is_null() {
                b.as_object_mut().unwrap().remove(k);
            } else {
                b[k] = v.clone();
            }
        }
        b
    };
    let before = app.count("SELECT count(*) AS n FROM audit_log");
    let cases = [
        (with(json!({"grade": 5})), "outcome"),
        (with(json!({"grade": 5})), "seriousness_criteria"),
        (
            with(json!({"outcome": "fatal", "end_date": "2026-10-20"})),
            "grade",
        ),
        (with(json!({"end_date": "2026-09-30"})), "end_date"),
        (with(json!({"outcome": "recovered"})), "end_date"),
        (
            with(json!({"seriousness_criteria": []})),
            "seriousness_criteria",
        ),
        (with(json!({"serious": false})), "seriousness_criteria"),
        (
            with(json!({"seriousness_criteria": ["hospitalisation", "hospitalisation"]})),
            "seriousness_criteria",
        ),
        (
            with(json!({"seriousness_criteria": ["bad_luck"]})),
            "seriousness_criteria[0]",
        ),
        (with(json!({"meddra_code": "1234"})), "meddra_code"),
        (with(json!({"onset_date": "2026-9"})), "onset_date"),
        (with(json!({"onset_date": "2026-09"})), "onset_date"),
        // (with the awareness left in 2026 the engine names only awareness_date, before
        // the future onset: value checks come before the dates' checks against the calendar)
        (
            with(json!({"onset_date": "2027", "awareness_date": "2027-01-02"})),
            "onset_date",
        ),
        (
            with(json!({"awareness_date": "2026-09-01", "onset_date": "2026-10-01"})),
            "awareness_date",
        ),
        (with(json!({"grade": 6})), "grade"),
        (with(json!({"relationship": "maybe"})), "relationship"),
        (with(json!({"outcome": null})), "outcome"),
        (with(json!({"term": " "})), "term"),
    ];
    for (body, field) in cases {
        app.post(&path, &inv, &body)
            .await
            .assert_problem(422, Some(field));
    }
    assert_eq!(
        app.count("SELECT count(*) AS n FROM form_records WHERE form_id = 'adverse_event'"),
        0
    );
    assert_eq!(app.count("SELECT count(*) AS n FROM sae_alerts"), 0);
    assert_eq!(app.count("SELECT count(*) AS n FROM audit_log"), before);

    // onset known only to the month of consent is not before it
    let r = app.post(&path, &inv, &pneumonia()).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["onset_date"], json!("2026-10"));
    let fatal = with(
        json!({"grade": 5, "outcome": "fatal", "seriousness_criteria": ["death", "hospitalisation"], "end_date": "2026-10-20"}),
    );
    assert_eq!(app.post(&path, &inv, &fatal).await.status, 201);
}

#[actix_web::test]
async fn a_serious_event_reaches_the_safety_desk_signed_after_retries() {
    let desk = Desk {
        fail_first: 2,
        ..Desk::default()
    };
    let (app, inv) = with_desk(&desk, "10").await;
    let code = enrolled(&app, &inv, "FR01").await;
    let r = app
        .post(
            &format!("/api/v1/subjects/{code}/adverse-events"),
            &inv,
            &pneumonia(),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let id = r.body["id"].as_i64().unwrap();
    assert_eq!(
        app.count("SELECT count(*) AS n FROM sae_alerts"),
        1,
        "queued with the event"
    );
    wait_for(
        &app,
        "SELECT count(*) AS n FROM sae_alerts WHERE status = 'delivered'",
        1,
    )
    .await;

    let received = desk.received.lock().unwrap().clone();
    assert_eq!(received.len(), 1);
    let (payload, sig) = &received[0];
    assert_eq!(payload["subject_code"], json!(code));
    assert_eq!(payload["adverse_event_id"], json!(id));
    assert_eq!(payload["seriousness_criteria"], json!(["hospitalisation"]));
    assert_eq!(payload["study_id"], json!("KD-ANAKINRA"));
    let body = serde_json::to_vec(payload).unwrap();
    assert_eq!(
        sig,
        &casebook::services::sae::signature(SECRET, &body),
        "HMAC over the body"
    );
    assert_eq!(app.count("SELECT count(*) AS n FROM sae_alert_attempts"), 3);
    assert_eq!(app.count("SELECT count(*) AS n FROM audit_log WHERE action = 'sae_delivery_failed' AND actor_role = 'system:sae-delivery'"), 2);
    assert_eq!(
        app.count("SELECT count(*) AS n FROM audit_log WHERE action = 'sae_delivered'"),
        1
    );
}

#[actix_web::test]
async fn delivery_gives_up_after_the_configured_attempts_and_says_so() {
    let desk = Desk {
        always_fail: true,
        ..Desk::default()
    };
    let (app, inv) = with_desk(&desk, "3").await;
    let code = enrolled(&app, &inv, "FR01").await;
    app.post(
        &format!("/api/v1/subjects/{code}/adverse-events"),
        &inv,
        &pneumonia(),
    )
    .await;
    wait_for(
        &app,
        "SELECT count(*) AS n FROM sae_alerts WHERE status = 'failed'",
        1,
    )
    .await;
    assert_eq!(app.count("SELECT count(*) AS n FROM sae_alert_attempts"), 3);
    assert_eq!(
        app.count("SELECT count(*) AS n FROM audit_log WHERE action = 'sae_gave_up'"),
        1
    );
    let admin = app.token(Role::Admin, &[]).await;
    let r = app.get("/api/v1/sae-alerts?status=failed", &admin).await;
    assert_eq!(r.body["items"][0]["attempts"], json!(3));
    assert_eq!(r.body["items"][0]["last_error"], json!("HTTP 503"));
}

#[actix_web::test]
async fn without_a_webhook_alerts_wait_visibly() {
    let app = TestApp::spawn().await;
    app.site("FR01", "Europe/Paris");
    let inv = app.token(Role::Investigator, &["FR01"]).await;
    let code = enrolled(&app, &inv, "FR01").await;
    let r = app
        .post(
            &format!("/api/v1/subjects/{code}/adverse-events"),
            &inv,
            &mild_event(),
        )
        .await;
    let id = r.body["id"].as_i64().unwrap();
    assert_eq!(
        app.count("SELECT count(*) AS n FROM sae_alerts"),
        0,
        "not serious: no alert"
    );
    // becoming serious queues one
    let r = app
        .patch(&format!("/api/v1/subjects/{code}/adverse-events/{id}"), &inv, 1, &json!({"serious": true, "seriousness_criteria": ["other_medically_important"], "reason": "reassessed by the investigator"}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let sponsor = app.token(Role::Sponsor, &[]).await;
    let alerts = app.get("/api/v1/sae-alerts?status=pending", &sponsor).await;
    assert_eq!(alerts.body["items"].as_array().unwrap().len(), 1);
    assert_eq!(alerts.body["items"][0]["attempts"], json!(0));
    assert_eq!(alerts.body["items"][0]["adverse_event_id"], json!(id));
    assert_eq!(alerts.body["items"][0]["form_record_id"], json!(id));
    // the alert's queueing is on the trail, as for a form of the engine
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) AS n FROM audit_log WHERE action = 'sae_queued' \
             AND (new_values->>'form_record_id')::bigint = {id}"
        )),
        1
    );
    let monitor = app.token(Role::Monitor, &["FR01"]).await;
    assert_eq!(app.get("/api/v1/sae-alerts", &monitor).await.status, 403);
}

#[actix_web::test]
async fn two_instances_deliver_each_alert_once() {
    let desk = Desk::default();
    let (app, inv) = with_desk(&desk, "10").await;
    let _second = app.second_instance();
    let code = enrolled(&app, &inv, "FR01").await;
    for _ in 0..6 {
        let r = app
            .post(
                &format!("/api/v1/subjects/{code}/adverse-events"),
                &inv,
                &pneumonia(),
            )
            .await;
        assert_eq!(r.status, 201);
    }
    wait_for(
        &app,
        "SELECT count(*) AS n FROM sae_alerts WHERE status = 'delivered'",
        6,
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let received = desk.received.lock().unwrap();
    let mut ids: Vec<i64> = received
        .iter()
        .map(|(p, _)| p["adverse_event_id"].as_i64().unwrap())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(received.len(), 6, "each alert once");
    assert_eq!(ids.len(), 6);
}

#[actix_web::test]
async fn adverse_events_are_corrected_with_reasons_and_never_deleted() {
    let app = TestApp::spawn().await;
    app.site("FR01", "Europe/Paris");
    let inv = app.token(Role::Investigator, &["FR01"]).await;
    let code = enrolled(&app, &inv, "FR01").await;
    let r = app
        .post(
            &format!("/api/v1/subjects/{code}/adverse-events"),
            &inv,
            &mild_event(),
        )
        .await;
    let id = r.body["id"].as_i64().unwrap();
    let path = format!("/api/v1/subjects/{code}/adverse-events/{id}");
    app.patch(&path, &inv, 1, &json!({"outcome": "recovered"}))
        .await
        .assert_problem(422, Some("reason"));
    app.patch(
        &path,
        &inv,
        1,
        &json!({"outcome": "recovered", "reason": "resolved"}),
    )
    .await
    .assert_problem(422, Some("end_date"));
    let r = app
        .patch(
            &path,
            &inv,
            1,
            &json!({"outcome": "recovered", "end_date": "2026-10-09", "reason": "resolved"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    app.patch(&path, &inv, 1, &json!({"grade": 2, "reason": "late"}))
        .await
        .assert_problem(412, None);
    let del = app
        .request(
            Method::DELETE,
            &path,
            Some(&inv),
            Some(&json!({"reason": "duplicate of another report"})),
            &[],
        )
        .await;
    assert_eq!(del.status, 200);
    assert_eq!(
        app.count(
            "SELECT count(*) AS n FROM form_records \
             WHERE form_id = 'adverse_event' AND deleted_at IS NOT NULL"
        ),
        1
    );
    let book = app
        .get(&format!("/api/v1/subjects/{code}/casebook"), &inv)
        .await;
    assert_eq!(book.body["adverse_events"], json!([]));
    assert_eq!(
        app.count(&format!("SELECT count(*) AS n FROM audit_log WHERE entity_table = 'form_records' AND record_id = {id}")),
        3
    );
}

#[actix_web::test]
async fn alerts_survive_a_server_restart() {
    // created while no webhook is configured, delivered by the next server on that database
    let first = TestApp::spawn().await;
    first.site("FR01", "Europe/Paris");
    let inv = first.token(Role::Investigator, &["FR01"]).await;
    let code = enrolled(&first, &inv, "FR01").await;
    first
        .post(
            &format!("/api/v1/subjects/{code}/adverse-events"),
            &inv,
            &pneumonia(),
        )
        .await;
    first.server.handle.stop(true).await;
    let desk = Desk::default();
    let url = start_desk(desk.clone());
    let TestApp { db, server, .. } = first;
    drop(server);
    let second = TestApp::spawn_on(
        db,
        &[
            ("CASEBOOK_SAE_WEBHOOK_URL", &url),
            ("CASEBOOK_SAE_WEBHOOK_SECRET", SECRET),
        ],
    )
    .await;
    wait_for(
        &second,
        "SELECT count(*) AS n FROM sae_alerts WHERE status = 'delivered'",
        1,
    )
    .await;
    assert_eq!(desk.received.lock().unwrap().len(), 1);
}

#[actix_web::test]
async fn safety_views_filter_across_sites_and_flag_late_reports() {
    let app = TestApp::spawn().await;
    app.site("FR01", "Europe/Paris");
    app.site("FR02", "Europe/Paris");
    let inv1 = app.token(Role::Investigator, &["FR01"]).await;
    let inv2 = app.token(Role::Investigator, &["FR02"]).await;
    let s1 = enrolled(&app, &inv1, "FR01").await;
    let s2 = enrolled(&app, &inv2, "FR02").await;
    app.post(
        &format!("/api/v1/subjects/{s1}/adverse-events"),
        &inv1,
        &pneumonia(),
    )
    .await;
    app.post(
        &format!("/api/v1/subjects/{s2}/adverse-events"),
        &inv2,
        &mild_event(),
    )
    .await;
    let sponsor = app.token(Role::Sponsor, &[]).await;
    let all = app.get("/api/v1/adverse-events", &sponsor).await;
    assert_eq!(all.body["items"].as_array().unwrap().len(), 2);
    let serious = app
        .get("/api/v1/adverse-events?serious=true&grade=3", &sponsor)
        .await;
    assert_eq!(serious.body["items"].as_array().unwrap().len(), 1);
    assert_eq!(serious.body["items"][0]["subject_code"], json!(s1));
    let monitor = app.token(Role::Monitor, &["FR02"]).await;
    let mine = app.get("/api/v1/adverse-events", &monitor).await;
    assert_eq!(mine.body["items"].as_array().unwrap().len(), 1);
    assert_eq!(mine.body["items"][0]["subject_code"], json!(s2));
    // awareness on 8 October, entered today: late, and never delivered (no webhook)
    let overdue = app.get("/api/v1/safety/overdue", &sponsor).await;
    let items = overdue.body.as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["entered_late"], json!(true));
    assert_eq!(items[0]["delivery_late"], json!(true));
    assert_eq!(items[0]["alert_status"], json!("pending"));
    let monitor_fr02 = app.get("/api/v1/safety/overdue", &monitor).await;
    assert_eq!(
        monitor_fr02.body,
        json!([]),
        "the FR01 report is outside this monitor's sites"
    );
}
