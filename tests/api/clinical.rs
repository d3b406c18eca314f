//! Clinical data as the protocols describe it: enrolment, consent, daily injections,
//! temperatures, the hard checks, corrections and the derived endpoints.

use casebook::auth::Role;
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{Resp, TestApp};

const KD_ELIGIBLE: &[(&str, bool)] = &[
    ("INC-KD", true),
    ("INC-IVIG", true),
    ("INC-WINDOW", true),
    ("INC-CONSENT", true),
    ("EXC-INFECTION", false),
    ("EXC-ANAKINRA", false),
];

pub fn new_subject(site: &str) -> Value {
    let eligibility: serde_json::Map<String, Value> = KD_ELIGIBLE
        .iter()
        .map(|(k, v)| ((*k).to_owned(), json!(v)))
        .collect();
    json!({"site_code": site, "sex": "female", "birth_year_month": "2023-04", "weight_kg": 20.0, "eligibility": eligibility})
}

pub fn injection(day: i32, at: &str, dose: f64) -> Value {
    json!({"study_day": day, "administered_at": at, "dose_mg": dose, "weight_kg": 20.0,
           "injection_site": "thigh", "lot_number": "LOT-1", "given": true})
}

fn temperature(at: &str, celsius: f64) -> Value {
    json!({"measured_at": at, "celsius": celsius, "method": "rectal"})
}

/// Enrols a subject at `site` with a consent signed on 2026-10-01; returns its code.
pub async fn enrolled(app: &TestApp, token: &str, site: &str) -> String {
    let r = app
        .post("/api/v1/subjects", token, &new_subject(site))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let code = r.body["subject_code"].as_str().unwrap().to_owned();
    let r = app
        .post(
            &format!("/api/v1/subjects/{code}/consents"),
            token,
            &json!({"form_version": "2.0", "signed_on": "2026-10-01", "signer": "legal_representative",
                    "representative_relationship": "mother", "assent": false}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    code
}

/// FRA-001 and FRB-001 with a consent (ids 1, 2), a day-1 injection and a temperature (form
/// records 1 and 2 for FRA-001, 3 and 4 for FRB-001) and a mild adverse event (ids 1, 2)
/// each.
pub async fn matrix_fixture(app: &TestApp) {
    matrix_records(app).await;
    // queries 1 and 2, on the consents of FRA-001 and FRB-001
    let monitor = app.token(Role::Monitor, &["FRA", "FRB"]).await;
    for consent in [1, 2] {
        let r = app
            .post(
                "/api/v1/queries",
                &monitor,
                &json!({"record_type": "consents", "record_id": consent, "text": "Is the signer the mother?"}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
    }
}

async fn matrix_records(app: &TestApp) {
    for site in ["FRA", "FRB"] {
        let inv = app.token(Role::Investigator, &[site]).await;
        let code = enrolled(app, &inv, site).await;
        assert_eq!(code, format!("{site}-001"));
        let r = app
            .post(
                &format!("/api/v1/subjects/{code}/injections"),
                &inv,
                &injection(1, "2026-10-05T06:00:00Z", 40.0),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        let r = app
            .post(
                &format!("/api/v1/subjects/{code}/temperatures"),
                &inv,
                &temperature("2026-10-05T12:00:00Z", 38.5),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        let r = app
            .post(
                &format!("/api/v1/subjects/{code}/adverse-events"),
                &inv,
                &crate::adverse_events::mild_event(),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
    }
}

struct Site {
    app: TestApp,
    inv: String,
}

async fn paris_site() -> Site {
    let app = TestApp::spawn().await;
    app.site("FR01", "Europe/Paris");
    app.site("FR02", "Europe/Paris");
    let inv = app.token(Role::Investigator, &["FR01"]).await;
    Site { app, inv }
}

impl Site {
    async fn inject(&self, code: &str, day: i32, at: &str, dose: f64) -> Resp {
        self.app
            .post(
                &format!("/api/v1/subjects/{code}/injections"),
                &self.inv,
                &injection(day, at, dose),
            )
            .await
    }
    async fn measure(&self, code: &str, at: &str, celsius: f64) -> Resp {
        self.app
            .post(
                &format!("/api/v1/subjects/{code}/temperatures"),
                &self.inv,
                &temperature(at, celsius),
            )
            .await
    }
    fn counts(&self) -> (i64, i64, i64) {
        (
            self.app
                .count("SELECT count(*) AS n FROM form_records WHERE form_id = 'injection'"),
            self.app
                .count("SELECT count(*) AS n FROM form_records WHERE form_id = 'temperature'"),
            self.app.count("SELECT count(*) AS n FROM audit_log"),
        )
    }
}

#[actix_web::test]
async fn kawasaki_dose_escalates_on_day_3_fever() {
    let s = paris_site().await;
    let on_rule = enrolled(&s.app, &s.inv, "FR01").await;
    let deviating = enrolled(&s.app, &s.inv, "FR01").await;
    for code in [&on_rule, &deviating] {
        assert_eq!(
            s.inject(code, 1, "2026-10-05T06:00:00Z", 40.0).await.status,
            201
        );
        let r = s.inject(code, 2, "2026-10-06T06:00:00Z", 40.0).await;
        assert_eq!(r.body["expected_dose_mg"], json!(40.0));
        assert_eq!(r.body["protocol_deviation"], json!(false));
        // still febrile on day 3 morning, before the dose
        assert_eq!(
            s.measure(code, "2026-10-07T05:00:00Z", 38.6).await.body["fever"],
            json!(true)
        );
    }
    let r = s.inject(&on_rule, 3, "2026-10-07T06:00:00Z", 80.0).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["expected_dose_mg"], json!(80.0));
    assert_eq!(r.body["protocol_deviation"], json!(false));

    let r = s.inject(&deviating, 3, "2026-10-07T06:00:00Z", 40.0).await;
    assert_eq!(
        r.status, 201,
        "a deviating dose is still recorded: {}",
        r.text
    );
    assert_eq!(r.body["expected_dose_mg"], json!(80.0));
    assert_eq!(r.body["protocol_deviation"], json!(true));
    assert!(r.body["deviation_reason"].as_str().unwrap().contains("80"));

    let book = s
        .app
        .get(&format!("/api/v1/subjects/{on_rule}/casebook"), &s.inv)
        .await;
    let e = &book.body["endpoints"];
    assert_eq!(e["cumulative_dose_mg"], json!(160.0));
    assert_eq!(e["days_on_treatment"], json!(3));
    assert_eq!(e["fever_days"], json!(1));
    // the 38.6 was measured at 47 h, before the endpoint's window (48 h to the day-3 dose)
    assert_eq!(e["fever_free_at_48h"], Value::Null);
}

#[actix_web::test]
async fn fever_free_at_48h_is_unknown_without_a_measurement_and_true_when_afebrile() {
    let s = paris_site().await;
    let code = enrolled(&s.app, &s.inv, "FR01").await;
    s.inject(&code, 1, "2026-10-05T06:00:00Z", 40.0).await;
    // a fever before 48 h does not count for the endpoint
    s.measure(&code, "2026-10-06T06:00:00Z", 39.0).await;
    let book = s
        .app
        .get(&format!("/api/v1/subjects/{code}/casebook"), &s.inv)
        .await;
    assert_eq!(book.body["endpoints"]["fever_free_at_48h"], Value::Null);
    s.measure(&code, "2026-10-07T06:30:00Z", 37.2).await;
    let book = s
        .app
        .get(&format!("/api/v1/subjects/{code}/casebook"), &s.inv)
        .await;
    assert_eq!(book.body["endpoints"]["fever_free_at_48h"], json!(true));
    assert_eq!(book.body["endpoints"]["fever_days"], json!(1));
}

#[actix_web::test]
async fn thera_runs_from_its_own_file_with_a_fixed_dose_for_five_days() {
    let protocol = concat!(env!("CARGO_MANIFEST_DIR"), "/config/protocols/thera.toml");
    // the dose rule is the definition's (the injection form's `dose` rule)
    let study = concat!(env!("CARGO_MANIFEST_DIR"), "/config/studies/thera.toml");
    let app =
        TestApp::spawn_with(&[("CASEBOOK_PROTOCOL", protocol), ("CASEBOOK_STUDY", study)]).await;
    app.site("FR01", "Europe/Paris");
    let inv = app.token(Role::Investigator, &["FR01"]).await;
    let study = app.get("/api/v1/study", &inv).await;
    assert_eq!(study.body["study"]["id"], json!("THERA"));
    assert_eq!(study.body["dose"], json!({"kind": "fixed", "mg": 100.0}));
    assert_eq!(study.body["file_hash"].as_str().unwrap().len(), 64);
    let criteria = study.body["eligibility"].as_array().unwrap();
    let eligibility: serde_json::Map<String, Value> = criteria
        .iter()
        .map(|c| {
            (
                c["id"].as_str().unwrap().to_owned(),
                json!(c["kind"] == "inclusion"),
            )
        })
        .collect();
    let r = app
        .post("/api/v1/subjects", &inv, &json!({"site_code": "FR01", "sex": "male", "birth_year_month": "1961-02", "weight_kg": 82.0, "eligibility": eligibility}))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let code = r.body["subject_code"].as_str().unwrap().to_owned();
    app.post(
        &format!("/api/v1/subjects/{code}/consents"),
        &inv,
        &json!({"form_version": "1.0", "signed_on": "2026-10-01", "signer": "participant"}),
    )
    .await;
    for day in 1..=6 {
        let at = format!("2026-10-{:02}T08:00:00Z", 4 + day);
        let body = json!({"study_day": day, "administered_at": at, "dose_mg": 100.0,
                          "injection_site": "abdomen", "lot_number": "T-1", "given": true});
        let r = app
            .post(&format!("/api/v1/subjects/{code}/injections"), &inv, &body)
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        assert_eq!(r.body["expected_dose_mg"], json!(100.0));
        assert_eq!(r.body["protocol_deviation"], json!(day == 6), "day {day}");
    }
}

#[actix_web::test]
async fn enrolment_refuses_unmet_criteria_naming_them() {
    let s = paris_site().await;
    let mut body = new_subject("FR01");
    body["eligibility"]["INC-IVIG"] = json!(false);
    body["eligibility"]["EXC-INFECTION"] = json!(true);
    let r = s.app.post("/api/v1/subjects", &s.inv, &body).await;
    r.assert_problem(422, Some("eligibility.INC-IVIG"));
    r.assert_problem(422, Some("eligibility.EXC-INFECTION"));
    let mut body = new_subject("FR01");
    body["eligibility"]
        .as_object_mut()
        .unwrap()
        .remove("INC-KD");
    s.app
        .post("/api/v1/subjects", &s.inv, &body)
        .await
        .assert_problem(422, Some("eligibility.INC-KD"));
    assert_eq!(s.app.count("SELECT count(*) AS n FROM subjects"), 0);
    assert_eq!(
        s.app
            .count("SELECT count(*) AS n FROM audit_log WHERE entity_table = 'subjects'"),
        0
    );
    // a site outside the caller's scope is not there at all
    s.app
        .post("/api/v1/subjects", &s.inv, &new_subject("FR02"))
        .await
        .assert_problem(404, None);
}

#[actix_web::test]
async fn hard_checks_reject_and_write_nothing() {
    let s = paris_site().await;
    let code = enrolled(&s.app, &s.inv, "FR01").await;
    assert_eq!(
        s.inject(&code, 1, "2026-10-05T06:00:00Z", 40.0)
            .await
            .status,
        201
    );
    let before = s.counts();
    let path = format!("/api/v1/subjects/{code}/injections");
    let tpath = format!("/api/v1/subjects/{code}/temperatures");
    let future = (chrono::Utc::now() + chrono::Duration::minutes(10)).to_rfc3339();
    let cases: Vec<(&str, Value, u16, Option<&str>)> = vec![
        (&tpath, temperature(&future, 37.0), 422, Some("measured_at")),
        (
            &path,
            injection(2, &future, 40.0),
            422,
            Some("administered_at"),
        ),
        (
            &tpath,
            temperature("2026-09-30T12:00:00Z", 37.0),
            422,
            Some("measured_at"),
        ),
        // 23:30 UTC on 30 Sept is 01:30 on 1 Oct in Paris: the consent day, accepted below
        (
            &tpath,
            temperature("2026-09-30T21:30:00Z", 37.0),
            422,
            Some("measured_at"),
        ),
        (
            &tpath,
            temperature("2026-10-05T12:00:00Z", 29.9),
            422,
            Some("celsius"),
        ),
        (
            &tpath,
            temperature("2026-10-05T12:00:00Z", 45.1),
            422,
            Some("celsius"),
        ),
        (
            &tpath,
            temperature("2026-10-05T12:00:00Z", 38.25),
            422,
            Some("celsius"),
        ),
        (
            &tpath,
            json!({"measured_at": "2026-10-05T12:00:00Z", "celsius": 38.0, "method": "by hand"}),
            422,
            Some("method"),
        ),
        (
            &tpath,
            json!({"measured_at": "2026-10-05T12:00:00Z", "method": "oral"}),
            422,
            Some("celsius"),
        ),
        (
            &tpath,
            json!({"measured_at": "yesterday", "celsius": 38.0, "method": "oral"}),
            422,
            Some("measured_at"),
        ),
        (&path, injection(1, "2026-10-05T09:00:00Z", 40.0), 409, None),
        (
            &path,
            injection(3, "2026-10-06T06:00:00Z", 40.0),
            422,
            Some("study_day"),
        ),
        (
            &path,
            json!({"study_day": 2, "administered_at": "2026-10-06T06:00:00Z", "dose_mg": 40.0, "injection_site": "ear", "lot_number": "L", "given": true}),
            422,
            Some("injection_site"),
        ),
        (
            &path,
            json!({"study_day": 2, "administered_at": "2026-10-06T06:00:00Z", "dose_mg": 0.0, "injection_site": "thigh", "lot_number": "L", "given": false}),
            422,
            Some("not_given_reason"),
        ),
        (
            &path,
            json!({"study_day": 2, "administered_at": "2026-10-06T06:00:00Z", "dose_mg": -5.0, "injection_site": "thigh", "lot_number": "L", "given": true}),
            422,
            Some("dose_mg"),
        ),
        (
            &path,
            json!({"study_day": 2, "administered_at": "2026-10-06T06:00:00Z", "dose_mg": 40.0, "injection_site": "thigh", "lot_number": "L", "given": true, "route": "intravenous"}),
            422,
            Some("route"),
        ),
        (
            &path,
            json!({"study_day": 2, "administered_at": "2026-10-06T06:00:00Z", "injection_site": "thigh", "lot_number": "L", "given": true}),
            422,
            Some("dose_mg"),
        ),
    ];
    for (p, body, status, field) in cases {
        let r = s.app.post(p, &s.inv, &body).await;
        r.assert_problem(status, field);
        assert_eq!(s.counts(), before, "nothing written for {body}");
    }
    // the consent day in Paris is accepted even when it is still the day before in UTC
    assert_eq!(
        s.measure(&code, "2026-09-30T22:30:00Z", 37.0).await.status,
        201
    );

    // after a withdrawal, nothing may be dated later
    let consents = s
        .app
        .get(&format!("/api/v1/subjects/{code}/consents"), &s.inv)
        .await;
    let consent_id = consents.body[0]["id"].as_i64().unwrap();
    let r = s
        .app
        .post(
            &format!("/api/v1/subjects/{code}/consents/{consent_id}/withdraw"),
            &s.inv,
            &json!({"withdrawn_on": "2026-10-10", "scope": "all", "reason": "family moved away"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let before = s.counts();
    s.measure(&code, "2026-10-11T08:00:00Z", 37.0)
        .await
        .assert_problem(422, Some("measured_at"));
    assert_eq!(s.counts(), before);
    let subject = s.app.get(&format!("/api/v1/subjects/{code}"), &s.inv).await;
    assert_eq!(subject.body["status"], json!("withdrawn"));

    // another site's subject does not exist for this investigator
    let other = s.app.token(Role::Investigator, &["FR02"]).await;
    let theirs = enrolled(&s.app, &other, "FR02").await;
    let r = s.measure(&theirs, "2026-10-05T08:00:00Z", 37.0).await;
    let missing = s.measure("FR02-999", "2026-10-05T08:00:00Z", 37.0).await;
    r.assert_problem(404, None);
    assert_eq!(
        r.text, missing.text,
        "same body as a subject that does not exist"
    );
}

#[actix_web::test]
async fn no_clinical_data_before_any_consent() {
    let s = paris_site().await;
    let r = s
        .app
        .post("/api/v1/subjects", &s.inv, &new_subject("FR01"))
        .await;
    let code = r.body["subject_code"].as_str().unwrap();
    s.measure(code, "2026-10-05T08:00:00Z", 37.0)
        .await
        .assert_problem(422, Some("measured_at"));
    s.app
        .post(
            &format!("/api/v1/subjects/{code}/consents"),
            &s.inv,
            &json!({"form_version": "0.9", "signed_on": "2026-10-01", "signer": "participant"}),
        )
        .await
        .assert_problem(422, Some("form_version"));
    s.app
        .post(&format!("/api/v1/subjects/{code}/consents"), &s.inv, &json!({"form_version": "2.0", "signed_on": "2026-10-01", "signer": "legal_representative"}))
        .await
        .assert_problem(422, Some("representative_relationship"));
    assert_eq!(s.app.count("SELECT count(*) AS n FROM consents"), 0);
}

#[actix_web::test]
async fn study_days_follow_the_site_calendar_across_midnight_and_daylight_saving() {
    let s = paris_site().await;
    let code = enrolled(&s.app, &s.inv, "FR01").await;
    // 23:30 in Paris (CEST, UTC+2) on 24 October is day 1
    assert_eq!(
        s.inject(&code, 1, "2026-10-24T21:30:00Z", 40.0)
            .await
            .status,
        201
    );
    // clocks go back on 25 October; 23:30 in Paris (CET, UTC+1) that day is day 2
    let r = s.inject(&code, 2, "2026-10-25T22:30:00Z", 40.0).await;
    assert_eq!(r.status, 201, "{}", r.text);
    // 00:30 Paris on 27 October is day 4, not day 3 (it is still 26 October in UTC)
    s.inject(&code, 3, "2026-10-26T23:30:00Z", 40.0)
        .await
        .assert_problem(422, Some("study_day"));
    assert_eq!(
        s.inject(&code, 4, "2026-10-26T23:30:00Z", 40.0)
            .await
            .status,
        201
    );
}

#[actix_web::test]
async fn corrections_need_if_match_and_a_reason_and_are_audited() {
    let s = paris_site().await;
    let code = enrolled(&s.app, &s.inv, "FR01").await;
    let r = s.measure(&code, "2026-10-05T08:00:00Z", 38.4).await;
    let id = r.body["id"].as_i64().unwrap();
    assert_eq!(r.headers["etag"], "\"1\"");
    let path = format!("/api/v1/subjects/{code}/temperatures/{id}");

    let no_match = s
        .app
        .request(
            Method::PATCH,
            &path,
            Some(&s.inv),
            Some(&json!({"celsius": 37.4, "reason": "misread"})),
            &[],
        )
        .await;
    no_match.assert_problem(428, None);
    s.app
        .patch(&path, &s.inv, 1, &json!({"celsius": 37.4}))
        .await
        .assert_problem(422, Some("reason"));
    s.app
        .patch(&path, &s.inv, 1, &json!({"celsius": 37.4, "reason": "   "}))
        .await
        .assert_problem(422, Some("reason"));
    s.app
        .patch(
            &path,
            &s.inv,
            1,
            &json!({"celsius": 37.4, "reason": "x".repeat(1001)}),
        )
        .await
        .assert_problem(422, Some("reason"));
    let r = s
        .app
        .patch(
            &path,
            &s.inv,
            1,
            &json!({"celsius": 37.4, "reason": "misread the thermometer"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["fever"], json!(false));
    assert_eq!(r.body["version"], json!(2));
    let stale = s
        .app
        .patch(
            &path,
            &s.inv,
            1,
            &json!({"celsius": 39.0, "reason": "again"}),
        )
        .await;
    stale.assert_problem(412, None);
    assert_eq!(
        s.app.get(&path, &s.inv).await.body["celsius"],
        json!(37.4),
        "nothing changed"
    );

    let audit: Vec<(String, Option<String>, String, String)> = {
        use diesel::prelude::*;
        #[derive(QueryableByName)]
        struct Row {
            #[diesel(sql_type = diesel::sql_types::Text)]
            action: String,
            #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
            reason: Option<String>,
            #[diesel(sql_type = diesel::sql_types::Text)]
            old: String,
            #[diesel(sql_type = diesel::sql_types::Text)]
            new: String,
        }
        let mut c = s.app.conn();
        diesel::sql_query(format!(
            "SELECT action, reason, coalesce(old_values::text, '') AS old, coalesce(new_values::text, '') AS new
             FROM audit_log WHERE entity_table = 'form_records' AND record_id = {id} ORDER BY id"
        ))
        .load::<Row>(&mut c)
        .unwrap()
        .into_iter()
        .map(|r| (r.action, r.reason, r.old, r.new))
        .collect()
    };
    assert_eq!(audit.len(), 2);
    assert_eq!(audit[1].0, "update");
    assert_eq!(audit[1].1.as_deref(), Some("misread the thermometer"));
    assert_eq!(
        audit[1].2,
        r#"{"values": {"fever": true, "celsius": "38.4"}}"#
    );
    assert_eq!(
        audit[1].3,
        r#"{"values": {"fever": false, "celsius": "37.4"}}"#
    );

    // entered in error: kept, flagged, out of the casebook, and the reason is required
    let del = s
        .app
        .request(
            Method::DELETE,
            &path,
            Some(&s.inv),
            Some(&json!({"reason": ""})),
            &[],
        )
        .await;
    del.assert_problem(422, Some("reason"));
    let del = s
        .app
        .request(
            Method::DELETE,
            &path,
            Some(&s.inv),
            Some(&json!({"reason": "wrong subject"})),
            &[],
        )
        .await;
    assert_eq!(del.status, 200, "{}", del.text);
    assert!(del.body["deleted_at"].is_string());
    assert_eq!(
        s.app
            .count("SELECT count(*) AS n FROM form_records WHERE form_id = 'temperature'"),
        1
    );
    let book = s
        .app
        .get(&format!("/api/v1/subjects/{code}/casebook"), &s.inv)
        .await;
    assert_eq!(book.body["temperatures"], json!([]));
    assert_eq!(
        s.app.count(&format!("SELECT count(*) AS n FROM audit_log WHERE action = 'delete' AND record_id = {id} AND reason = 'wrong subject'")),
        1
    );
}

#[actix_web::test]
async fn idempotent_retries_write_once() {
    let s = paris_site().await;
    let code = enrolled(&s.app, &s.inv, "FR01").await;
    let path = format!("/api/v1/subjects/{code}/temperatures");
    let body = temperature("2026-10-05T08:00:00Z", 38.4);
    let key = [("idempotency-key", "retry-1")];
    let first = s
        .app
        .request(Method::POST, &path, Some(&s.inv), Some(&body), &key)
        .await;
    let second = s
        .app
        .request(Method::POST, &path, Some(&s.inv), Some(&body), &key)
        .await;
    assert_eq!(first.status, 201);
    assert_eq!(second.status, 201);
    assert_eq!(first.body, second.body);
    assert_eq!(
        s.app
            .count("SELECT count(*) AS n FROM form_records WHERE form_id = 'temperature'"),
        1
    );
    assert_eq!(
        s.app
            .count("SELECT count(*) AS n FROM audit_log WHERE entity_table = 'form_records'"),
        1
    );
    let other = temperature("2026-10-05T09:00:00Z", 38.4);
    s.app
        .request(Method::POST, &path, Some(&s.inv), Some(&other), &key)
        .await
        .assert_problem(422, Some("Idempotency-Key"));
    assert_eq!(
        s.app
            .count("SELECT count(*) AS n FROM form_records WHERE form_id = 'temperature'"),
        1
    );
}

#[actix_web::test]
async fn concurrent_enrolment_gives_gap_free_codes() {
    let s = paris_site().await;
    let mut tasks = Vec::new();
    for client in 0..8 {
        let (client_http, url, token) = (
            s.app.client.clone(),
            s.app.url("/api/v1/subjects"),
            s.inv.clone(),
        );
        let n = if client < 4 { 3 } else { 2 };
        tasks.push(actix_web::rt::spawn(async move {
            let mut codes = Vec::new();
            for _ in 0..n {
                let r = client_http
                    .post(&url)
                    .bearer_auth(&token)
                    .json(&new_subject("FR01"))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 201);
                let v: Value = r.json().await.unwrap();
                codes.push(v["subject_code"].as_str().unwrap().to_owned());
            }
            codes
        }));
    }
    let mut codes = Vec::new();
    for t in tasks {
        codes.extend(t.await.unwrap());
    }
    codes.sort();
    let expected: Vec<String> = (1..=20).map(|i| format!("FR01-{i:03}")).collect();
    assert_eq!(codes, expected);
}

#[actix_web::test]
async fn subjects_list_is_scoped_and_filtered() {
    let s = paris_site().await;
    let other = s.app.token(Role::Investigator, &["FR02"]).await;
    enrolled(&s.app, &s.inv, "FR01").await;
    enrolled(&s.app, &other, "FR02").await;
    let mine = s.app.get("/api/v1/subjects", &s.inv).await;
    let items = mine.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["subject_code"], json!("FR01-001"));
    let sponsor = s.app.token(Role::Sponsor, &[]).await;
    let all = s
        .app
        .get("/api/v1/subjects?status=enrolled", &sponsor)
        .await;
    assert_eq!(all.body["items"].as_array().unwrap().len(), 2);
    let monitor = s.app.token(Role::Monitor, &["FR02"]).await;
    let seen = s.app.get("/api/v1/subjects?site=FR01", &monitor).await;
    assert_eq!(seen.body["items"].as_array().unwrap().len(), 0);
}

#[actix_web::test]
async fn a_consent_is_corrected_with_a_reason_but_never_after_the_data() {
    let s = paris_site().await;
    let code = enrolled(&s.app, &s.inv, "FR01").await;
    s.measure(&code, "2026-10-05T08:00:00Z", 37.0).await;
    let consents = s
        .app
        .get(&format!("/api/v1/subjects/{code}/consents"), &s.inv)
        .await;
    let id = consents.body[0]["id"].as_i64().unwrap();
    let path = format!("/api/v1/subjects/{code}/consents/{id}");
    s.app
        .patch(
            &path,
            &s.inv,
            1,
            &json!({"signed_on": "2026-10-06", "reason": "date misread"}),
        )
        .await
        .assert_problem(422, Some("signed_on"));
    s.app
        .patch(&path, &s.inv, 1, &json!({"signed_on": "2026-09-28"}))
        .await
        .assert_problem(422, Some("reason"));
    let r = s
        .app
        .patch(
            &path,
            &s.inv,
            1,
            &json!({"signed_on": "2026-09-28", "reason": "date misread"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["signed_on"], json!("2026-09-28"));
    assert_eq!(r.body["version"], json!(2));
    s.app
        .patch(&path, &s.inv, 1, &json!({"assent": true, "reason": "late"}))
        .await
        .assert_problem(412, None);
    assert_eq!(
        s.app.count(&format!(
            "SELECT count(*) AS n FROM audit_log WHERE entity_table = 'consents' AND record_id = {id} \
             AND action = 'update' AND reason = 'date misread' \
             AND old_values->>'signed_on' = '2026-10-01' AND new_values->>'signed_on' = '2026-09-28'"
        )),
        1
    );
}
