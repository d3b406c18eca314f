//! Injections are form records of the form `injection` (docs/engine-migration.md step 5):
//! the legacy path and the generic route read and write the same records under the same
//! ids, the legacy path fills the weight and the route, the dose rule's deviation is queried
//! with origin `dose_check` and answered as `injections`, and the schedule, day 1 and the
//! endpoints read the records.

use casebook::auth::Role;
use reqwest::Method;
use serde_json::{json, Value};

use crate::clinical::{enrolled, injection};
use crate::helpers::TestApp;

async fn site() -> (TestApp, String, String) {
    let app = TestApp::spawn().await;
    app.site("FR01", "Europe/Paris");
    let inv = app.token(Role::Investigator, &["FR01"]).await;
    let code = enrolled(&app, &inv, "FR01").await;
    (app, inv, code)
}

#[actix_web::test]
async fn an_injection_is_one_record_at_the_legacy_path_and_the_generic_route() {
    let (app, inv, code) = site().await;
    let legacy = format!("/api/v1/subjects/{code}/injections");
    let generic = format!("/api/v1/subjects/{code}/forms/injection");

    // entered at the legacy path without weight or route: the subject's weight (20 kg) and
    // the only route are filled; read through the engine under the same id
    let mut body = injection(1, "2026-10-05T06:00:00Z", 40.0);
    body.as_object_mut().unwrap().remove("weight_kg");
    let r = app.post(&legacy, &inv, &body).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["weight_kg"], json!(20.0), "a JSON number");
    assert_eq!(r.body["route"], json!("subcutaneous"));
    assert_eq!(r.body["expected_dose_mg"], json!(40.0));
    let day1 = r.body["id"].as_i64().unwrap();
    let g = app.get(&format!("{generic}/{day1}"), &inv).await;
    assert_eq!(g.status, 200, "{}", g.text);
    assert_eq!(g.body["id"], json!(day1));
    assert_eq!(
        g.body["values"],
        json!({"study_day": 1, "administered_at": "2026-10-05T06:00:00Z", "dose_mg": "40.00",
               "weight_kg": "20.00", "route": "subcutaneous", "injection_site": "thigh",
               "lot_number": "LOT-1", "given": true, "expected_dose_mg": "40.00",
               "protocol_deviation": false})
    );

    // entered through the engine, read at the legacy path with the same id, listed by day
    let r = app
        .post(
            &generic,
            &inv,
            &json!({"values": {"study_day": 2, "administered_at": "2026-10-06T06:00:00Z",
                    "dose_mg": "40.00", "weight_kg": "20.00", "route": "subcutaneous",
                    "injection_site": "abdomen", "lot_number": "LOT-1", "given": true}}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let day2 = r.body["id"].as_i64().unwrap();
    let l = app.get(&format!("{legacy}/{day2}"), &inv).await;
    assert_eq!(l.status, 200, "{}", l.text);
    assert_eq!(l.body["study_day"], json!(2));
    assert_eq!(l.body["dose_mg"], json!(40.0));
    let list = app.get(&legacy, &inv).await;
    let days: Vec<(i64, i64)> = list
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["study_day"].as_i64().unwrap(), i["id"].as_i64().unwrap()))
        .collect();
    assert_eq!(days, [(1, day1), (2, day2)]);

    // a second injection on day 2 at the legacy path: 409, nothing written
    let before = app.count("SELECT count(*) AS n FROM form_records");
    app.post(&legacy, &inv, &injection(2, "2026-10-06T07:00:00Z", 40.0))
        .await
        .assert_problem(409, None);
    // day 1 cannot move nor go while day 2 counts from it
    app.patch(
        &format!("{legacy}/{day1}"),
        &inv,
        1,
        &json!({"administered_at": "2026-10-04T06:00:00Z", "reason": "wrong date"}),
    )
    .await
    .assert_problem(409, None);
    let r = app
        .request(
            Method::DELETE,
            &format!("{legacy}/{day1}"),
            Some(&inv),
            Some(&json!({"reason": "wrong patient"})),
            &[],
        )
        .await;
    r.assert_problem(409, None);
    assert!(r.text.contains(&format!("injection {day2}")), "{}", r.text);
    assert_eq!(app.count("SELECT count(*) AS n FROM form_records"), before);
    // an injection's id is not a temperature's
    app.get(
        &format!("/api/v1/subjects/{code}/temperatures/{day1}"),
        &inv,
    )
    .await
    .assert_problem(404, None);
}

#[actix_web::test]
async fn a_deviating_dose_at_the_legacy_path_is_queried_as_injections() {
    let (app, inv, code) = site().await;
    let monitor = app.token(Role::Monitor, &["FR01"]).await;
    let legacy = format!("/api/v1/subjects/{code}/injections");
    let r = app
        .post(&legacy, &inv, &injection(1, "2026-10-05T06:00:00Z", 60.0))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["protocol_deviation"], json!(true));
    let id = r.body["id"].as_i64().unwrap();
    let q = app.get("/api/v1/queries?origin=dose_check", &monitor).await;
    let items = q.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{}", q.text);
    assert_eq!(items[0]["record_type"], json!("injections"));
    assert_eq!(items[0]["record_id"], json!(id));
    assert_eq!(items[0]["field"], json!("dose_mg"));
    // stored on the form record, flagged there
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) AS n FROM queries WHERE record_type = 'form_records' \
             AND record_id = {id} AND origin = 'dose_check' AND status = 'open'"
        )),
        1
    );
    let g = app
        .get(
            &format!("/api/v1/subjects/{code}/forms/injection/{id}"),
            &inv,
        )
        .await;
    assert_eq!(g.body["flags"][0]["item"], json!("dose_mg"));
    // a query raised on `injections` takes injection records only
    let raise = |record: i64| {
        json!({"record_type": "injections", "record_id": record, "field": "lot_number",
               "text": "Which lot?"})
    };
    let r = app.post("/api/v1/queries", &monitor, &raise(id)).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["record_type"], json!("injections"));
    let t = app
        .post(
            &format!("/api/v1/subjects/{code}/temperatures"),
            &inv,
            &json!({"measured_at": "2026-10-05T12:00:00Z", "celsius": 37.0, "method": "rectal"}),
        )
        .await;
    let temp = t.body["id"].as_i64().unwrap();
    app.post("/api/v1/queries", &monitor, &raise(temp))
        .await
        .assert_problem(404, None);
    // verified at its legacy path, counted in the casebook under `injections`
    let r = app
        .request(
            Method::POST,
            &format!("/api/v1/subjects/{code}/injections/{id}/verify"),
            Some(&monitor),
            None,
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["record_type"], json!("injections"));
    let book = app
        .get(&format!("/api/v1/subjects/{code}/casebook"), &inv)
        .await;
    let verified: Vec<&Value> = book.body["monitoring"]["verified"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["form"] == "injections")
        .collect();
    assert_eq!(
        verified,
        [&json!({"form": "injections", "records": 1, "verified": 1})]
    );
}

#[actix_web::test]
async fn the_schedule_and_the_endpoints_read_legacy_injections() {
    let (app, inv, code) = site().await;
    let legacy = format!("/api/v1/subjects/{code}/injections");
    for (day, at) in [
        (1, "2026-10-05T06:00:00Z"),
        (2, "2026-10-06T06:00:00Z"),
        (3, "2026-10-07T06:00:00Z"),
    ] {
        let r = app.post(&legacy, &inv, &injection(day, at, 40.0)).await;
        assert_eq!(r.status, 201, "day {day}: {}", r.text);
    }
    // day 3 entered as day 4: the study day follows day 1 (the first injection, Paris time)
    app.post(&legacy, &inv, &injection(5, "2026-10-08T06:00:00Z", 40.0))
        .await
        .assert_problem(422, Some("study_day"));

    let s = app
        .get(&format!("/api/v1/subjects/{code}/schedule"), &inv)
        .await;
    assert_eq!(s.status, 200, "{}", s.text);
    assert_eq!(s.body["day1"], json!("2026-10-05"));
    let recorded = |id: &str| {
        s.body["visits"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["id"] == id)
            .map(|v| v["recorded"].clone())
            .unwrap()
    };
    // each injection counts for the visit on its study day, and for no other
    assert_eq!(recorded("V1"), json!(["injection"]));
    assert_eq!(recorded("V3"), json!(["injection"]));
    assert_eq!(recorded("EOT"), json!([]));

    let book = app
        .get(&format!("/api/v1/subjects/{code}/casebook"), &inv)
        .await;
    let e = &book.body["endpoints"];
    assert_eq!(e["cumulative_dose_mg"], json!(120.0));
    assert_eq!(e["days_on_treatment"], json!(3));
    assert_eq!(e["fever_free_at_48h"], Value::Null);
    let days: Vec<i64> = book.body["injections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["study_day"].as_i64().unwrap())
        .collect();
    assert_eq!(days, [1, 2, 3]);
    // the legacy arrays are not repeated among the other forms' records
    assert_eq!(book.body["form_records"], json!([]));
}
