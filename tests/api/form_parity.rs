//! The engine gives the answers today's three forms give (docs/engine-migration.md, section
//! c), through `/subjects/{code}/forms/{form}[/{id}]` on tests/studies/parity.toml.

use casebook::auth::Role;
use serde_json::json;

use crate::clinical::enrolled;
use crate::helpers::TestApp;

async fn spawn() -> (TestApp, String, String) {
    let file = format!("{}/tests/studies/parity.toml", env!("CARGO_MANIFEST_DIR"));
    let app = TestApp::spawn_with(&[("CASEBOOK_STUDY", &file)]).await;
    app.site("FRA", "Europe/Paris");
    let inv = app.token(Role::Investigator, &["FRA"]).await;
    let code = enrolled(&app, &inv, "FRA").await;
    (app, inv, code)
}

/// Whether record `id` holds exactly `sql` (an SQL expression over the row) = `want`.
fn holds(app: &TestApp, id: i64, sql: &str, want: &str) -> bool {
    app.count(&format!(
        "SELECT count(*) AS n FROM form_records WHERE id = {id} AND {sql} = '{want}'"
    )) == 1
}

#[actix_web::test]
async fn a_datetime_keeps_its_fraction_of_a_second_to_the_microsecond() {
    let (app, inv, code) = spawn().await;
    let vitals = format!("/api/v1/subjects/{code}/forms/vitals");

    let r = app
        .post(
            &vitals,
            &inv,
            &json!({"values": {"measured_at": "2026-10-05T08:00:00.123456+02:00", "pulse": 90}}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let id = r.body["id"].as_i64().unwrap();
    assert_eq!(
        r.body["values"]["measured_at"],
        "2026-10-05T06:00:00.123456Z"
    );
    assert!(holds(
        &app,
        id,
        "values->>'measured_at'",
        "2026-10-05T06:00:00.123456Z"
    ));
    let r = app.get(&format!("{vitals}/{id}"), &inv).await;
    assert_eq!(
        r.body["values"]["measured_at"],
        "2026-10-05T06:00:00.123456Z"
    );
    // PostgreSQL reads it back to the same instant (exports and rules cast it)
    assert!(holds(
        &app,
        id,
        "to_char((values->>'measured_at')::timestamptz AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')",
        "2026-10-05 06:00:00.123456"
    ));

    // a correction to another fraction is a change, audited with both values
    let r = app
        .patch(
            &format!("{vitals}/{id}"),
            &inv,
            1,
            &json!({"values": {"measured_at": "2026-10-05T06:00:00.5Z"}, "reason": "clock read again"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["version"], 2);
    assert_eq!(r.body["values"]["measured_at"], "2026-10-05T06:00:00.500Z");
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) AS n FROM audit_log WHERE action = 'update' AND record_id = {id} \
             AND old_values->'values'->>'measured_at' = '2026-10-05T06:00:00.123456Z' \
             AND new_values->'values'->>'measured_at' = '2026-10-05T06:00:00.500Z'"
        )),
        1
    );

    // finer than PostgreSQL keeps: refused, not rounded
    let before = app.count("SELECT count(*) AS n FROM form_records");
    app.post(
        &vitals,
        &inv,
        &json!({"values": {"measured_at": "2026-10-05T08:00:00.1234567Z"}}),
    )
    .await
    .assert_problem(422, Some("values.measured_at"));
    assert_eq!(app.count("SELECT count(*) AS n FROM form_records"), before);

    // whole seconds are answered as before
    let r = app
        .post(
            &vitals,
            &inv,
            &json!({"values": {"measured_at": "2026-10-06T08:00:00Z"}}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["values"]["measured_at"], "2026-10-06T08:00:00Z");
}

fn event(onset: &str, end: Option<&str>, awareness: &str) -> serde_json::Value {
    let mut v =
        json!({"term": "Rash", "onset_date": onset, "serious": false, "awareness_date": awareness});
    if let Some(e) = end {
        v["end_date"] = json!(e);
    }
    json!({ "values": v })
}

#[actix_web::test]
async fn every_date_of_a_record_is_ordered_plausible_and_above_the_floor() {
    let (app, inv, code) = spawn().await;
    let events = format!("/api/v1/subjects/{code}/forms/safety_event");
    let count = || app.count("SELECT count(*) AS n FROM form_records");

    // the end known to the month only is not before an onset in that month
    let r = app
        .post(
            &events,
            &inv,
            &event("2026-10-05", Some("2026-10"), "2026-10-05"),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let id = r.body["id"].as_i64().unwrap();

    let refused = [
        // end before onset, at the precision both know
        (
            event("2026-10-05", Some("2026-09"), "2026-10-05"),
            "values.end_date",
            "must not be before onset_date",
        ),
        // the site learnt of it before it began
        (
            event("2026-10-05", None, "2026-10-04"),
            "values.awareness_date",
            "must not be before onset_date",
        ),
        // an end in the future, though the record's date (the onset) is not
        (
            event("2026-10-05", Some("2099"), "2026-10-05"),
            "values.end_date",
            "must not be in the future",
        ),
        // every date item holds to the subject's date floor (born 2023-04), not only the onset
        (
            event("2023", None, "2023-03-31"),
            "values.awareness_date",
            "must not be before the subject's birth month (2023-04-01)",
        ),
    ];
    for (body, field, message) in refused {
        let r = app.post(&events, &inv, &body).await;
        r.assert_problem(422, Some(field));
        assert!(r.text.contains(message), "{}", r.text);
    }
    assert_eq!(count(), 1);

    // a correction is held to the same order: nothing changes
    let r = app
        .patch(
            &format!("{events}/{id}"),
            &inv,
            1,
            &json!({"values": {"end_date": "2026-09-30"}, "reason": "end date corrected"}),
        )
        .await;
    r.assert_problem(422, Some("values.end_date"));
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) AS n FROM form_records WHERE id = {id} AND version = 1 \
             AND values->>'end_date' = '2026-10'"
        )),
        1
    );
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) AS n FROM audit_log WHERE entity_table = 'form_records' AND record_id = {id}"
        )),
        1
    );
}

#[actix_web::test]
async fn a_withdrawal_counts_the_records_of_every_form_and_safety_reports_come_after_it() {
    let (app, inv, code) = spawn().await;
    let vitals = format!("/api/v1/subjects/{code}/forms/vitals");
    let events = format!("/api/v1/subjects/{code}/forms/safety_event");
    let consent = app.count("SELECT id AS n FROM consents");
    let consent_path = format!("/api/v1/subjects/{code}/consents/{consent}");
    let at = |t: &str| json!({"values": {"measured_at": t}});

    let r = app.post(&vitals, &inv, &at("2026-10-10T08:00:00Z")).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let late = r.body["id"].as_i64().unwrap();
    let r = app
        .post(&events, &inv, &event("2026-10-12", None, "2026-10-12"))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let ae = r.body["id"].as_i64().unwrap();

    // the measurement is dated after the withdrawal: refused, naming it; the adverse event
    // (a form that takes reports after a withdrawal) is no obstacle
    let withdraw =
        json!({"withdrawn_on": "2026-10-09", "scope": "all", "reason": "parents withdrew"});
    let r = app
        .post(&format!("{consent_path}/withdraw"), &inv, &withdraw)
        .await;
    r.assert_problem(422, Some("withdrawn_on"));
    assert!(
        r.text.contains(&format!("vitals {late} on 2026-10-10")),
        "{}",
        r.text
    );
    assert!(
        !r.text.contains(&format!("safety_event {ae}")),
        "{}",
        r.text
    );
    assert_eq!(
        app.count("SELECT count(*) AS n FROM consents WHERE withdrawn_on IS NOT NULL"),
        0
    );
    assert_eq!(
        app.count("SELECT count(*) AS n FROM audit_log WHERE entity_table = 'consents' AND action = 'update'"),
        0
    );

    // once it is marked entered in error, the withdrawal goes through
    let r = app
        .request(
            reqwest::Method::DELETE,
            &format!("{vitals}/{late}"),
            Some(&inv),
            Some(&json!({"reason": "entered for the wrong subject"})),
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = app
        .post(&format!("{consent_path}/withdraw"), &inv, &withdraw)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);

    // after it: a measurement is refused, an adverse event is still reported
    app.post(&vitals, &inv, &at("2026-10-11T08:00:00Z"))
        .await
        .assert_problem(422, Some("values.measured_at"));
    let r = app
        .post(&events, &inv, &event("2026-10-20", None, "2026-10-21"))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);

    // a correction of the withdrawal is held to the same records
    let r = app.post(&vitals, &inv, &at("2026-10-05T08:00:00Z")).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let early = r.body["id"].as_i64().unwrap();
    let r = app
        .patch(
            &consent_path,
            &inv,
            2,
            &json!({"withdrawn_on": "2026-10-04", "reason": "date misread"}),
        )
        .await;
    r.assert_problem(422, Some("withdrawn_on"));
    assert!(
        r.text.contains(&format!("vitals {early} on 2026-10-05")),
        "{}",
        r.text
    );
    // and the first consent must not come after them
    let r = app
        .patch(
            &consent_path,
            &inv,
            2,
            &json!({"signed_on": "2026-10-06", "reason": "date misread"}),
        )
        .await;
    r.assert_problem(422, Some("signed_on"));
    assert!(
        r.text.contains("clinical data from 2026-10-05"),
        "{}",
        r.text
    );
    assert_eq!(
        app.count("SELECT count(*) AS n FROM consents WHERE version = 2 AND withdrawn_on = '2026-10-09' AND signed_on = '2026-10-01'"),
        1
    );
    let r = app
        .patch(
            &consent_path,
            &inv,
            2,
            &json!({"withdrawn_on": "2026-10-06", "reason": "date misread"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
}

#[actix_web::test]
async fn a_serious_record_of_an_engine_form_raises_the_safety_alert_once() {
    let (app, inv, code) = spawn().await;
    let events = format!("/api/v1/subjects/{code}/forms/safety_event");
    let alerts = || app.count("SELECT count(*) AS n FROM sae_alerts");

    // not serious: no alert
    let r = app
        .post(&events, &inv, &event("2026-10-05", None, "2026-10-05"))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let mild = r.body["id"].as_i64().unwrap();
    assert_eq!(alerts(), 0);

    // refused (a serious event needs its criteria): nothing queued either
    let mut serious = event("2026-10-06", None, "2026-10-07");
    serious["values"]["serious"] = json!(true);
    serious["values"]["term"] = json!("Sepsis");
    let mut incomplete = serious.clone();
    incomplete["values"]["seriousness_criteria"] = json!([]);
    app.post(&events, &inv, &incomplete)
        .await
        .assert_problem(422, Some("values.seriousness_criteria"));
    assert_eq!(alerts(), 0);

    // entered serious: one alert in the same transaction, pointing at the record, audited
    serious["values"]["seriousness_criteria"] = json!(["hospitalisation"]);
    let r = app.post(&events, &inv, &serious).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let id = r.body["id"].as_i64().unwrap();
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) AS n FROM sae_alerts WHERE form_record_id = {id} \
             AND NOT payload ? 'adverse_event_id' AND status = 'pending' \
             AND payload->>'kind' = 'serious_adverse_event' AND payload->>'study_id' = 'PARITY' \
             AND payload->>'form' = 'safety_event' AND (payload->>'form_record_id')::bigint = {id} \
             AND payload->>'subject_code' = '{code}' AND payload->>'site_code' = 'FRA' \
             AND payload->>'term' = 'Sepsis' AND payload->'seriousness_criteria' = '[\"hospitalisation\"]' \
             AND payload->>'onset_date' = '2026-10-06' AND payload->>'awareness_date' = '2026-10-07' \
             AND payload->>'report_due_by' = '2026-10-08T00:00:00 site time' \
             AND payload->'grade' = 'null'::jsonb"
        )),
        1
    );
    let alert = app.count("SELECT id AS n FROM sae_alerts");
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) AS n FROM audit_log WHERE action = 'sae_queued' AND entity_table = 'sae_alerts' \
             AND record_id = {alert} AND (new_values->>'form_record_id')::bigint = {id} \
             AND actor_role = 'investigator'"
        )),
        1
    );
    let sponsor = app.token(Role::Sponsor, &[]).await;
    let r = app.get("/api/v1/sae-alerts", &sponsor).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["items"][0]["form_record_id"], id, "{}", r.text);
    assert_eq!(r.body["items"][0]["adverse_event_id"], json!(null));

    // a correction of an event already serious raises no second alert
    let r = app
        .patch(
            &format!("{events}/{id}"),
            &inv,
            1,
            &json!({"values": {"term": "Septic shock"}, "reason": "diagnosis confirmed"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(alerts(), 1);

    // corrected to serious: the alert goes out then
    let r = app
        .patch(
            &format!("{events}/{mild}"),
            &inv,
            1,
            &json!({"values": {"serious": true, "seriousness_criteria": ["death"]}, "reason": "the child died"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) AS n FROM sae_alerts WHERE form_record_id = {mild} AND payload->>'term' = 'Rash'"
        )),
        1
    );
    assert_eq!(alerts(), 2);
    assert_eq!(
        app.count("SELECT count(*) AS n FROM audit_log WHERE action = 'sae_queued'"),
        2
    );
}

#[actix_web::test]
async fn a_late_serious_record_of_an_engine_form_is_overdue_in_its_sites_while_serious_and_live() {
    let (app, inv, code) = spawn().await;
    app.site("DEU", "Europe/Berlin");
    let events = format!("/api/v1/subjects/{code}/forms/safety_event");
    let overdue = |token: String| {
        let app = &app;
        async move {
            let r = app.get("/api/v1/safety/overdue", &token).await;
            assert_eq!(r.status, 200, "{}", r.text);
            r.body
        }
    };

    // not serious: never listed
    let r = app
        .post(&events, &inv, &event("2026-10-05", None, "2026-10-05"))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    // serious, the site aware since 7 October, entered today: late, and not delivered
    let serious = |term: &str| {
        let mut v = event("2026-10-06", None, "2026-10-07");
        v["values"]["serious"] = json!(true);
        v["values"]["term"] = json!(term);
        v["values"]["seriousness_criteria"] = json!(["hospitalisation"]);
        v
    };
    let r = app.post(&events, &inv, &serious("Sepsis")).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let sepsis = r.body["id"].as_i64().unwrap();
    let r = app.post(&events, &inv, &serious("Seizure")).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let seizure = r.body["id"].as_i64().unwrap();

    let sponsor = app.token(Role::Sponsor, &[]).await;
    let body = overdue(sponsor.clone()).await;
    let items = body.as_array().unwrap();
    assert_eq!(items.len(), 2, "{body}");
    let first = &items[0];
    assert_eq!(first["form"], "safety_event");
    assert_eq!(first["form_record_id"], sepsis);
    assert!(first.get("adverse_event_id").is_none(), "{first}");
    assert_eq!(first["subject_code"], json!(code));
    assert_eq!(first["site_code"], "FRA");
    assert_eq!(first["term"], "Sepsis");
    assert_eq!(first["awareness_date"], "2026-10-07");
    assert_eq!(first["entered_late"], true);
    assert_eq!(first["delivery_late"], true);
    assert_eq!(first["alert_status"], "pending");
    assert_eq!(first["delivered_at"], json!(null));
    assert_eq!(items[1]["form_record_id"], seizure);

    // a monitor sees the site's reports, and none of another site's
    let fra = app.token(Role::Monitor, &["FRA"]).await;
    assert_eq!(overdue(fra).await.as_array().unwrap().len(), 2);
    let deu = app.token(Role::Monitor, &["DEU"]).await;
    assert_eq!(overdue(deu).await, json!([]));

    // corrected to not serious: leaves the list
    let r = app
        .patch(
            &format!("{events}/{sepsis}"),
            &inv,
            1,
            &json!({"values": {"serious": false, "seriousness_criteria": null}, "reason": "not hospitalised"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let body = overdue(sponsor.clone()).await;
    assert_eq!(body.as_array().unwrap().len(), 1, "{body}");
    assert_eq!(body[0]["form_record_id"], seizure);

    // marked entered in error: leaves it too
    let r = app
        .request(
            reqwest::Method::DELETE,
            &format!("{events}/{seizure}"),
            Some(&inv),
            Some(&json!({"reason": "entered for the wrong subject"})),
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(overdue(sponsor).await, json!([]));
}
