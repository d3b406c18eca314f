//! The casebook's `endpoints` come from the running definition's rules, whatever the study:
//! tests/studies/endpoints.toml (fever above 37.5 °C, fever-free from 24 h after the first
//! dose to the day-4 dose) and NLRP12 (no dose rule, no fever_endpoints rule). Kawasaki
//! disease's (38.0 °C, 48 h, day 3) are in clinical.rs and injection_records.rs.

use casebook::auth::Role;
use serde_json::{json, Value};

use crate::clinical::enrolled;
use crate::helpers::TestApp;

fn study(path: &str) -> String {
    format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))
}

async fn endpoints(app: &TestApp, token: &str, code: &str) -> Value {
    let r = app
        .get(&format!("/api/v1/subjects/{code}/casebook"), token)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.body["endpoints"].clone()
}

#[actix_web::test]
async fn a_study_s_endpoints_follow_its_own_fever_endpoints_rule() {
    let app =
        TestApp::spawn_with(&[("CASEBOOK_STUDY", &study("tests/studies/endpoints.toml"))]).await;
    app.site("FRA", "Europe/Paris");
    let inv = app.token(Role::Investigator, &["FRA"]).await;
    let code = enrolled(&app, &inv, "FRA").await;
    let dosing = format!("/api/v1/subjects/{code}/forms/dosing");
    let vitals = format!("/api/v1/subjects/{code}/forms/vitals");
    let dose = |at: &str, mg: &str, given: bool| json!({"values": {"given_at": at, "dose_mg": mg, "given": given}});
    let measure =
        |at: &str, celsius: &str| json!({"values": {"measured_at": at, "celsius": celsius}});

    assert_eq!(
        endpoints(&app, &inv, &code).await,
        json!({"fever_free_at_24h": null, "fever_days": 0, "days_on_treatment": 0,
               "cumulative_dose_mg": 0.0})
    );
    let r = app
        .post(&dosing, &inv, &dose("2026-10-05T08:00:00Z", "100.00", true))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    // 18 h after the first dose: a fever day, before the endpoint's window opens at 24 h
    let r = app
        .post(&vitals, &inv, &measure("2026-10-06T02:00:00Z", "39.0"))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(
        endpoints(&app, &inv, &code).await,
        json!({"fever_free_at_24h": null, "fever_days": 1, "days_on_treatment": 1,
               "cumulative_dose_mg": 100.0})
    );
    // the day-2 dose was not given: no treatment day, no mg
    let r = app
        .post(&dosing, &inv, &dose("2026-10-06T08:00:00Z", "0.00", false))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    // 26 h: in the window, and 37.5 is not above the threshold
    app.post(&vitals, &inv, &measure("2026-10-06T10:00:00Z", "37.5"))
        .await;
    assert_eq!(
        endpoints(&app, &inv, &code).await,
        json!({"fever_free_at_24h": true, "fever_days": 1, "days_on_treatment": 1,
               "cumulative_dose_mg": 100.0})
    );
    // 37.6 on day 4 (Paris) before its dose is entered: in the window, a fever by 37.5 (not
    // by Kawasaki disease's 38.0)
    app.post(&vitals, &inv, &measure("2026-10-08T20:00:00Z", "37.6"))
        .await;
    assert_eq!(
        endpoints(&app, &inv, &code).await,
        json!({"fever_free_at_24h": false, "fever_days": 2, "days_on_treatment": 1,
               "cumulative_dose_mg": 100.0})
    );
    // the day-4 dose, given that morning, closes the window before the 37.6
    let r = app
        .post(&dosing, &inv, &dose("2026-10-08T07:00:00Z", "100.00", true))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["values"]["study_day"], json!(4));
    assert_eq!(
        endpoints(&app, &inv, &code).await,
        json!({"fever_free_at_24h": true, "fever_days": 2, "days_on_treatment": 2,
               "cumulative_dose_mg": 200.0})
    );
}

#[actix_web::test]
async fn a_study_without_dose_or_fever_endpoints_rules_has_no_such_endpoints() {
    let app =
        TestApp::spawn_with(&[("CASEBOOK_STUDY", &study("config/studies/nlrp12.toml"))]).await;
    app.site("FRA", "Europe/Paris");
    let inv = app.token(Role::Investigator, &["FRA"]).await;
    let code = enrolled(&app, &inv, "FRA").await;
    let r = app
        .post(
            &format!("/api/v1/subjects/{code}/forms/treatment"),
            &inv,
            &json!({"values": {"started_on": "2026-10-05", "daily_dose_mg": "100.0"}}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(endpoints(&app, &inv, &code).await, json!({}));
}
