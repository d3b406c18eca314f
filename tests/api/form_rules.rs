//! The named rules of a definition on forms of the engine, through
//! `/subjects/{code}/forms/{form}[/{id}]`: MKD's dose rules (mg/kg, canakinumab every 56
//! days, the switch from anakinra), and tests/studies/rules.toml for the study day, the
//! fever flag, the escalation on fever, once per day, the visit window and day 1.

use std::time::Duration;

use casebook::auth::Role;
use diesel::connection::SimpleConnection;
use reqwest::Method;
use serde_json::{json, Value};

use crate::clinical::enrolled;
use crate::helpers::{Resp, TestApp};

async fn spawn(file: &str) -> (TestApp, String, String) {
    let app = TestApp::spawn_with(&[("CASEBOOK_STUDY", file)]).await;
    app.site("FRA", "Europe/Paris");
    let inv = app.token(Role::Investigator, &["FRA"]).await;
    let code = enrolled(&app, &inv, "FRA").await;
    (app, inv, code)
}

fn mkd() -> String {
    format!("{}/config/studies/mkd.toml", env!("CARGO_MANIFEST_DIR"))
}

fn rules_study() -> String {
    format!("{}/tests/studies/rules.toml", env!("CARGO_MANIFEST_DIR"))
}

fn injection(at: &str, dose: &str) -> Value {
    json!({"values": {"study_day": 1, "administered_at": at, "dose_mg": dose, "weight_kg": "20.00",
                      "injection_site": "thigh", "lot_number": "L1"}})
}

async fn delete(app: &TestApp, token: &str, path: &str) -> Resp {
    app.request(
        Method::DELETE,
        path,
        Some(token),
        Some(&json!({"reason": "entered for the wrong subject"})),
        &[],
    )
    .await
}

fn queries_on(app: &TestApp, id: i64, field: &str) -> i64 {
    // a dose rule's deviation is queried as today's injection form queries it
    let origin = if field == "dose_mg" {
        "dose_check"
    } else {
        "edit_check"
    };
    app.count(&format!(
        "SELECT count(*) AS n FROM queries WHERE record_type = 'form_records' AND record_id = {id} \
         AND field = '{field}' AND origin = '{origin}' AND status = 'open'"
    ))
}

#[actix_web::test]
async fn mkd_doses_are_checked_per_kg_every_56_days_and_across_the_switch() {
    let (app, inv, code) = spawn(&mkd()).await;
    let ana = format!("/api/v1/subjects/{code}/forms/anakinra_injection");
    let cana = format!("/api/v1/subjects/{code}/forms/canakinumab_injection");

    // 2 mg/kg for 20 kg: 40 mg expected, computed and stored
    let r = app
        .post(&ana, &inv, &injection("2026-10-05T08:00:00Z", "40.00"))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["values"]["expected_dose_mg"], "40.00");
    assert_eq!(r.body["values"]["protocol_deviation"], false);
    assert!(r.body["values"].get("deviation_reason").is_none());
    assert_eq!(r.body["flags"], json!([]));

    // what the rule computes is never taken from the client
    let mut sent = injection("2026-10-06T08:00:00Z", "40.00");
    sent["values"]["expected_dose_mg"] = json!("40.00");
    app.post(&ana, &inv, &sent)
        .await
        .assert_problem(422, Some("values.expected_dose_mg"));
    assert_eq!(app.count("SELECT count(*) AS n FROM form_records"), 1);

    // more than 10 % off: stored, flagged, explained and queried
    let r = app
        .post(&ana, &inv, &injection("2026-10-06T08:00:00Z", "50.00"))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let off = r.body["id"].as_i64().unwrap();
    assert_eq!(r.body["values"]["protocol_deviation"], true);
    let why = r.body["values"]["deviation_reason"].as_str().unwrap();
    assert!(
        why.contains("differs from the expected 40 mg by more than 10%"),
        "{why}"
    );
    assert_eq!(r.body["flags"][0]["item"], "dose_mg");
    assert_eq!(queries_on(&app, off, "dose_mg"), 1);
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) AS n FROM audit_log WHERE entity_table = 'form_records' AND action = 'create' \
             AND record_id = {off} AND new_values->'values'->>'protocol_deviation' = 'true'"
        )),
        1
    );

    // corrected to the prescribed dose: the deviation goes, and the audit row says so
    let r = app
        .patch(
            &format!("{ana}/{off}"),
            &inv,
            1,
            &json!({"values": {"dose_mg": "40.00"}, "reason": "transcription error"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["values"]["protocol_deviation"], false);
    assert!(r.body["values"].get("deviation_reason").is_none());
    assert_eq!(r.body["flags"], json!([]));
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) AS n FROM audit_log WHERE action = 'update' AND record_id = {off} \
             AND old_values->'values'->>'protocol_deviation' = 'true' \
             AND new_values->'values'->>'protocol_deviation' = 'false' \
             AND new_values->'values'->'deviation_reason' = 'null'::jsonb"
        )),
        1
    );

    // the switch the protocol foresees: canakinumab after anakinra
    let r = app
        .post(&cana, &inv, &injection("2026-10-20T08:00:00Z", "40.00"))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["values"]["protocol_deviation"], false, "{}", r.text);
    let first_cana = r.body["id"].as_i64().unwrap();

    // canakinumab again 12 days later: every 56 days
    let r = app
        .post(&cana, &inv, &injection("2026-11-01T08:00:00Z", "40.00"))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let second_cana = r.body["id"].as_i64().unwrap();
    assert_eq!(r.body["values"]["protocol_deviation"], true);
    assert!(r.body["values"]["deviation_reason"]
        .as_str()
        .unwrap()
        .contains(
            "12 days after the previous dose on 2026-10-20: the protocol's interval is 56 days"
        ));

    // anakinra after the switch to canakinumab
    let r = app
        .post(&ana, &inv, &injection("2026-11-02T08:00:00Z", "40.00"))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert!(r.body["values"]["deviation_reason"]
        .as_str()
        .unwrap()
        .contains("switched to canakinumab on 2026-10-20"));
    let late_ana = r.body["id"].as_i64().unwrap();

    // the first canakinumab was entered in error: the later doses' rules run again
    let r = delete(&app, &inv, &format!("{cana}/{first_cana}")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = app.get(&format!("{cana}/{second_cana}"), &inv).await;
    assert_eq!(r.body["version"], 2, "{}", r.text);
    assert_eq!(r.body["values"]["protocol_deviation"], false);
    assert_eq!(r.body["flags"], json!([]));
    assert_eq!(
        r.body["change_reason"],
        format!("re-checked: canakinumab_injection {first_cana} changed")
    );
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) AS n FROM audit_log WHERE action = 'update' AND record_id = {second_cana} \
             AND old_values->'values'->>'protocol_deviation' = 'true' \
             AND new_values->'values'->>'protocol_deviation' = 'false'"
        )),
        1
    );
    let r = app.get(&format!("{ana}/{late_ana}"), &inv).await;
    assert_eq!(r.body["version"], 2, "{}", r.text);
    assert!(r.body["values"]["deviation_reason"]
        .as_str()
        .unwrap()
        .contains("switched to canakinumab on 2026-11-01"));
    // earlier doses are not touched
    let r = app.get(&format!("{ana}/{off}"), &inv).await;
    assert_eq!(r.body["version"], 2, "{}", r.text);
}

fn dosing(at: &str, dose: &str) -> Value {
    json!({"values": {"given_at": at, "weight_kg": "20.00", "dose_mg": dose, "given": true}})
}

fn vitals(at: &str, celsius: &str) -> Value {
    json!({"values": {"measured_at": at, "celsius": celsius}})
}

#[actix_web::test]
async fn study_days_come_from_day_one_and_the_dose_escalates_on_recorded_fever() {
    let (app, inv, code) = spawn(&rules_study()).await;
    let dose_at = format!("/api/v1/subjects/{code}/forms/dosing");
    let vitals_at = format!("/api/v1/subjects/{code}/forms/vitals");

    // before the first dose there is no day 1: a study day cannot be computed
    let r = app
        .post(&vitals_at, &inv, &vitals("2026-10-04T08:00:00Z", "37.0"))
        .await;
    r.assert_problem(422, Some("values.study_day"));
    assert!(
        r.text
            .contains("day 1 is the date of the first dosing.given_at"),
        "{}",
        r.text
    );
    assert_eq!(app.count("SELECT count(*) AS n FROM form_records"), 0);

    // the first dose is day 1, filled in
    let r = app
        .post(&dose_at, &inv, &dosing("2026-10-05T08:00:00Z", "40.00"))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["values"]["study_day"], 1);
    assert_eq!(r.body["values"]["expected_dose_mg"], "40.00");
    let day1 = r.body["id"].as_i64().unwrap();

    // a day sent is checked against the date
    let mut wrong = dosing("2026-10-06T08:00:00Z", "40.00");
    wrong["values"]["study_day"] = json!(3);
    let r = app.post(&dose_at, &inv, &wrong).await;
    r.assert_problem(422, Some("values.study_day"));
    assert!(r.text.contains("which is study day 2"), "{}", r.text);
    let mut right = dosing("2026-10-06T08:00:00Z", "40.00");
    right["values"]["study_day"] = json!(2);
    assert_eq!(app.post(&dose_at, &inv, &right).await.status, 201);

    // 38.5 °C at 00:00 in Paris on day 3 (22:00 UTC the day before): fever, on day 3
    let r = app
        .post(&vitals_at, &inv, &vitals("2026-10-06T22:00:00Z", "38.5"))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["values"]["fever"], true);
    assert_eq!(r.body["values"]["study_day"], 3);
    let r = app
        .post(&vitals_at, &inv, &vitals("2026-10-06T21:00:00Z", "37.2"))
        .await;
    assert_eq!(r.body["values"]["fever"], false, "{}", r.text);
    assert_eq!(r.body["values"]["study_day"], 2);
    let mut sent = vitals("2026-10-06T21:30:00Z", "37.2");
    sent["values"]["fever"] = json!(false);
    app.post(&vitals_at, &inv, &sent)
        .await
        .assert_problem(422, Some("values.fever"));

    // day 3 after fever that day, before the dose: 4 mg/kg
    let r = app
        .post(&dose_at, &inv, &dosing("2026-10-07T06:00:00Z", "80.00"))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["values"]["study_day"], 3);
    assert_eq!(r.body["values"]["expected_dose_mg"], "80.00");
    assert_eq!(r.body["values"]["protocol_deviation"], false);
    let day3 = r.body["id"].as_i64().unwrap();

    // one dose per study day: a second on day 3 (site time) is refused, naming the day
    let before = app.count("SELECT count(*) AS n FROM form_records");
    let r = app
        .post(&dose_at, &inv, &dosing("2026-10-07T20:00:00Z", "80.00"))
        .await;
    r.assert_problem(409, None);
    assert!(r.text.contains("study day 3"), "{}", r.text);
    assert_eq!(app.count("SELECT count(*) AS n FROM form_records"), before);

    // a correction of the date moves the day with it, and the day's place
    let r = app
        .patch(
            &format!("{dose_at}/{day3}"),
            &inv,
            1,
            &json!({"values": {"given_at": "2026-10-08T06:00:00Z"}, "reason": "wrong date"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["values"]["study_day"], 4);
    let r = app
        .post(&dose_at, &inv, &dosing("2026-10-07T20:00:00Z", "80.00"))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["values"]["study_day"], 3);

    // day 1 moves under the later records: refused, naming them, nothing written
    let r = app
        .patch(
            &format!("{dose_at}/{day1}"),
            &inv,
            1,
            &json!({"values": {"given_at": "2026-10-04T08:00:00Z"}, "reason": "wrong date"}),
        )
        .await;
    r.assert_problem(409, None);
    assert!(
        r.text.contains(&format!("dosing {day3} (study day 4)")),
        "{}",
        r.text
    );
    assert!(r.text.contains("vitals"), "{}", r.text);
    let r = delete(&app, &inv, &format!("{dose_at}/{day1}")).await;
    r.assert_problem(409, None);
    assert!(r.text.contains("would become 2026-10-06"), "{}", r.text);
    assert_eq!(
        app.count("SELECT count(*) AS n FROM form_records WHERE deleted_at IS NOT NULL"),
        0
    );
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) AS n FROM audit_log WHERE entity_table = 'form_records' \
             AND action IN ('update', 'delete') AND record_id = {day1}"
        )),
        0
    );

    // a correction of day 1 that keeps its date is allowed
    let r = app
        .patch(
            &format!("{dose_at}/{day1}"),
            &inv,
            1,
            &json!({"values": {"given_at": "2026-10-05T09:00:00Z"}, "reason": "exact time"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
}

#[actix_web::test]
async fn a_daily_form_is_entered_once_per_site_day() {
    let (app, inv, code) = spawn(&rules_study()).await;
    let at = format!("/api/v1/subjects/{code}/forms/diary");
    let entry = json!({"values": {"kept_on": "2026-10-05", "pain_mm": 20}});
    let r = app.post(&at, &inv, &entry).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let first = r.body["id"].as_i64().unwrap();
    let r = app.post(&at, &inv, &entry).await;
    r.assert_problem(409, None);
    assert!(r.text.contains("2026-10-05"), "{}", r.text);
    // another day, then a correction onto the day already taken
    let r = app
        .post(
            &at,
            &inv,
            &json!({"values": {"kept_on": "2026-10-06", "pain_mm": 10}}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let second = r.body["id"].as_i64().unwrap();
    let r = app
        .patch(
            &format!("{at}/{second}"),
            &inv,
            1,
            &json!({"values": {"kept_on": "2026-10-05"}, "reason": "wrong day"}),
        )
        .await;
    r.assert_problem(409, None);
    // once the first is entered in error, its day is free again
    assert_eq!(
        delete(&app, &inv, &format!("{at}/{first}")).await.status,
        200
    );
    assert_eq!(app.post(&at, &inv, &entry).await.status, 201);
}

#[actix_web::test]
async fn a_visit_outside_its_window_is_stored_flagged_and_queried() {
    let (app, inv, code) = spawn(&rules_study()).await;
    let pain = format!("/api/v1/subjects/{code}/forms/pain");
    let visit =
        |v: &str, on: &str| json!({"visit": v, "values": {"assessed_on": on, "pain_mm": 30}});

    // no day 1 yet: the window is not known, nothing is flagged
    let r = app.post(&pain, &inv, &visit("D1", "2026-10-04")).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["flags"], json!([]));
    let early = r.body["id"].as_i64().unwrap();

    let d = format!("/api/v1/subjects/{code}/forms/dosing");
    assert_eq!(
        app.post(&d, &inv, &dosing("2026-10-05T08:00:00Z", "40.00"))
            .await
            .status,
        201
    );
    // day 1 is known now: the D1 record before it is outside D1's window, and says so
    let r = app.get(&format!("{pain}/{early}"), &inv).await;
    assert_eq!(r.body["version"], 2, "{}", r.text);
    assert_eq!(
        r.body["flags"],
        json!([{"item": "assessed_on",
                "message": "outside the window of visit D1 (study day 1): 2026-10-05 to 2026-10-05"}])
    );
    assert_eq!(
        r.body["change_reason"],
        "day 1 is now 2026-10-05: the visit window is checked again"
    );
    assert_eq!(queries_on(&app, early, "assessed_on"), 1);
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) AS n FROM audit_log WHERE entity_table = 'form_records' AND action = 'update' \
             AND record_id = {early} AND old_values->'flags' = '[]'::jsonb \
             AND new_values->'flags'->0->>'item' = 'assessed_on' AND reason LIKE 'day 1 is now%'"
        )),
        1
    );
    // day 8 with [1, 2]: 2026-10-11 to 2026-10-14, edges included
    let r = app.post(&pain, &inv, &visit("D8", "2026-10-14")).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["flags"], json!([]));
    let id = r.body["id"].as_i64().unwrap();
    let r = app
        .patch(
            &format!("{pain}/{id}"),
            &inv,
            1,
            &json!({"values": {"assessed_on": "2026-10-15"}, "reason": "late visit"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["values"]["assessed_on"], "2026-10-15");
    assert_eq!(r.body["flags"][0]["item"], "assessed_on");
    assert_eq!(
        r.body["flags"][0]["message"],
        "outside the window of visit D8 (study day 8): 2026-10-11 to 2026-10-14"
    );
    assert_eq!(queries_on(&app, id, "assessed_on"), 1);
    // unscheduled visits have no window
    let r = app.post(&pain, &inv, &visit("UNS", "2026-10-30")).await;
    assert_eq!(r.body["flags"], json!([]), "{}", r.text);
}

fn send(
    app: &TestApp,
    token: &str,
    method: Method,
    path: &str,
    body: Value,
) -> actix_web::rt::task::JoinHandle<(u16, String)> {
    let (client, token, url) = (app.client.clone(), token.to_owned(), app.url(path));
    actix_web::rt::spawn(async move {
        let r = client
            .request(method, &url)
            .bearer_auth(&token)
            .json(&body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap_or_default())
    })
}

#[actix_web::test]
async fn writes_whose_rules_read_other_records_of_the_subject_wait_for_each_other() {
    let (app, inv, code) = spawn(&rules_study()).await;
    let dose_at = format!("/api/v1/subjects/{code}/forms/dosing");
    let r = app
        .post(&dose_at, &inv, &dosing("2026-10-05T08:00:00Z", "40.00"))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let day1 = r.body["id"].as_i64().unwrap();
    // someone else's write that reads the subject's records holds the subject
    let mut other = app.conn();
    other
        .batch_execute(&format!(
            "BEGIN; SELECT 1 FROM subjects WHERE subject_code = '{code}' FOR NO KEY UPDATE"
        ))
        .unwrap();
    // a temperature counts its study day from day 1, which the deletion takes away
    let vitals_at = format!("/api/v1/subjects/{code}/forms/vitals");
    let temperature = send(
        &app,
        &inv,
        Method::POST,
        &vitals_at,
        vitals("2026-10-06T08:00:00Z", "37.0"),
    );
    actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    let deletion = send(
        &app,
        &inv,
        Method::DELETE,
        &format!("{dose_at}/{day1}"),
        json!({"reason": "wrong subject"}),
    );
    // a form without such rules does not wait
    let diary = send(
        &app,
        &inv,
        Method::POST,
        &format!("/api/v1/subjects/{code}/forms/diary"),
        json!({"values": {"kept_on": "2026-10-05", "pain_mm": 20}}),
    );
    let (status, text) = actix_web::rt::time::timeout(Duration::from_secs(5), diary)
        .await
        .expect("the diary waited")
        .unwrap();
    assert_eq!(status, 201, "{text}");
    actix_web::rt::time::sleep(Duration::from_millis(200)).await;
    assert!(!temperature.is_finished(), "the temperature did not wait");
    assert!(!deletion.is_finished(), "the deletion did not wait");
    other.batch_execute("COMMIT").unwrap();
    // one after the other: the temperature gets its day and the deletion is refused, or
    // the deletion goes first and the temperature has no day 1; never both
    let t = temperature.await.unwrap();
    let d = deletion.await.unwrap();
    assert!(
        matches!((t.0, d.0), (201, 409) | (422, 200)),
        "temperature {t:?}, deletion {d:?}"
    );
}

#[actix_web::test]
async fn records_at_visits_share_the_subject_and_wait_only_for_writes_that_read_doses_or_move_day_one(
) {
    let (app, inv, code) = spawn(&rules_study()).await;
    let dose_at = format!("/api/v1/subjects/{code}/forms/dosing");
    let r = app
        .post(&dose_at, &inv, &dosing("2026-10-05T08:00:00Z", "40.00"))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    // another record at a visit is being entered: it holds the subject shared
    let mut other = app.conn();
    other
        .batch_execute(&format!(
            "BEGIN; SELECT 1 FROM subjects WHERE subject_code = '{code}' FOR SHARE"
        ))
        .unwrap();
    // a record at a visit with a window reads day 1 as well, and does not wait
    let d8 = send(
        &app,
        &inv,
        Method::POST,
        &format!("/api/v1/subjects/{code}/forms/pain"),
        json!({"visit": "D8", "values": {"assessed_on": "2026-10-12", "pain_mm": 30}}),
    );
    let (status, text) = actix_web::rt::time::timeout(Duration::from_secs(5), d8)
        .await
        .expect("the record at D8 waited")
        .unwrap();
    assert_eq!(status, 201, "{text}");
    // a dose reads the earlier doses and may move day 1: it waits
    let dose = send(
        &app,
        &inv,
        Method::POST,
        &dose_at,
        dosing("2026-10-06T08:00:00Z", "40.00"),
    );
    actix_web::rt::time::sleep(Duration::from_millis(300)).await;
    assert!(!dose.is_finished(), "the dose did not wait");
    other.batch_execute("COMMIT").unwrap();
    let (status, text) = dose.await.unwrap();
    assert_eq!(status, 201, "{text}");
}

#[actix_web::test]
async fn every_write_waits_for_a_signature_being_made_on_its_subject() {
    let (app, inv, code) = spawn(&rules_study()).await;
    // signing holds the subject FOR UPDATE while it reads the casebook
    let mut signer = app.conn();
    signer
        .batch_execute(&format!(
            "BEGIN; SELECT 1 FROM subjects WHERE subject_code = '{code}' FOR UPDATE"
        ))
        .unwrap();
    let diary = send(
        &app,
        &inv,
        Method::POST,
        &format!("/api/v1/subjects/{code}/forms/diary"),
        json!({"values": {"kept_on": "2026-10-05", "pain_mm": 20}}),
    );
    actix_web::rt::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !diary.is_finished(),
        "the record did not wait for the signature"
    );
    signer.batch_execute("COMMIT").unwrap();
    let (status, text) = diary.await.unwrap();
    assert_eq!(status, 201, "{text}");
}
