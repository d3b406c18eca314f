//! Temperatures are form records of the form `temperature` (docs/engine-migration.md step 3):
//! the legacy path and the generic route read and write the same records under the same
//! ids, queries and verifications accept `temperatures` for them (and only for them), and
//! a correction through the legacy path is audited on `form_records`.

use casebook::auth::Role;
use reqwest::Method;
use serde_json::{json, Value};

use crate::clinical::enrolled;
use crate::helpers::TestApp;

/// A record of another form of the study (Kawasaki's echocardiography); returns its id.
async fn echocardiography(app: &TestApp, token: &str, code: &str) -> i64 {
    let r = app
        .post(
            &format!("/api/v1/subjects/{code}/forms/echocardiography"),
            token,
            &json!({"visit": "EOT", "values": {"performed_on": "2026-10-06", "lmca_z": "1.00",
                    "lad_z": "1.00", "rca_z": "1.00", "dilatation": false, "aneurysm": false}}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    r.body["id"].as_i64().unwrap()
}

fn reading(at: &str, celsius: f64) -> Value {
    json!({"measured_at": at, "celsius": celsius, "method": "rectal"})
}

#[actix_web::test]
async fn a_temperature_is_one_record_at_the_legacy_path_and_the_generic_route() {
    let app = TestApp::spawn().await;
    app.site("FR01", "Europe/Paris");
    let inv = app.token(Role::Investigator, &["FR01"]).await;
    let code = enrolled(&app, &inv, "FR01").await;
    let legacy = format!("/api/v1/subjects/{code}/temperatures");
    let generic = format!("/api/v1/subjects/{code}/forms/temperature");

    // entered at the legacy path (with a fraction of a second), read through the engine
    let r = app
        .post(&legacy, &inv, &reading("2026-10-05T08:00:00.250Z", 38.4))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["celsius"], json!(38.4), "a JSON number");
    assert_eq!(r.body["fever"], json!(true));
    let first = r.body["id"].as_i64().unwrap();
    let g = app.get(&format!("{generic}/{first}"), &inv).await;
    assert_eq!(g.status, 200, "{}", g.text);
    assert_eq!(g.body["id"], json!(first));
    assert_eq!(
        g.body["values"],
        json!({"measured_at": "2026-10-05T08:00:00.250Z", "celsius": "38.4",
               "method": "rectal", "fever": true})
    );

    // entered through the engine, read at the legacy path with the same id
    let r = app
        .post(
            &generic,
            &inv,
            &json!({"values": {"measured_at": "2026-10-05T07:00:00Z", "celsius": "37.2",
                               "method": "oral"}}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let second = r.body["id"].as_i64().unwrap();
    let l = app.get(&format!("{legacy}/{second}"), &inv).await;
    assert_eq!(l.status, 200, "{}", l.text);
    assert_eq!(l.body["id"], json!(second));
    assert_eq!(l.body["measured_at"], json!("2026-10-05T07:00:00Z"));
    assert_eq!(l.body["celsius"], json!(37.2));
    assert_eq!(l.body["fever"], json!(false));
    // the legacy list keeps its order: by measurement time
    let list = app.get(&legacy, &inv).await;
    let ids: Vec<i64> = list
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, [second, first]);

    // another form's record is no temperature; a legacy 422 names the field, not `values.`
    let echo = echocardiography(&app, &inv, &code).await;
    app.get(&format!("{legacy}/{echo}"), &inv)
        .await
        .assert_problem(404, None);
    app.post(&legacy, &inv, &reading("2026-10-05T09:00:00Z", 29.9))
        .await
        .assert_problem(422, Some("celsius"));

    // a correction at the legacy path: audited on form_records in the engine's shape
    let r = app
        .patch(
            &format!("{legacy}/{first}"),
            &inv,
            1,
            &json!({"celsius": 37.6, "reason": "misread"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["version"], json!(2));
    assert_eq!(r.body["fever"], json!(false));
    let audited = app.count(&format!(
        "SELECT count(*) AS n FROM audit_log WHERE entity_table = 'form_records' \
         AND record_id = {first} AND action = 'update' AND reason = 'misread' \
         AND old_values = '{{\"values\": {{\"celsius\": \"38.4\", \"fever\": true}}}}' \
         AND new_values = '{{\"values\": {{\"celsius\": \"37.6\", \"fever\": false}}}}'"
    ));
    assert_eq!(audited, 1);
    assert_eq!(
        app.count("SELECT count(*) AS n FROM audit_log WHERE entity_table = 'temperatures'"),
        0,
        "nothing is audited under the old table"
    );
    // entered in error keeps the noun
    let path = format!("{legacy}/{first}");
    let del = app
        .request(
            Method::DELETE,
            &path,
            Some(&inv),
            Some(&json!({"reason": "wrong subject"})),
            &[],
        )
        .await;
    assert_eq!(del.status, 200, "{}", del.text);
    let r = app
        .patch(&path, &inv, 3, &json!({"celsius": 37.0, "reason": "again"}))
        .await;
    r.assert_problem(409, None);
    assert!(r.text.contains("This temperature is marked"), "{}", r.text);
}

#[actix_web::test]
async fn queries_and_verifications_take_temperatures_for_temperature_records_only() {
    let app = TestApp::spawn().await;
    app.site("FR01", "Europe/Paris");
    let inv = app.token(Role::Investigator, &["FR01"]).await;
    let monitor = app.token(Role::Monitor, &["FR01"]).await;
    let code = enrolled(&app, &inv, "FR01").await;
    let r = app
        .post(
            &format!("/api/v1/subjects/{code}/forms/temperature"),
            &inv,
            &json!({"values": {"measured_at": "2026-10-05T07:00:00Z", "celsius": "38.2",
                               "method": "oral"}}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let temp = r.body["id"].as_i64().unwrap();
    let echo = echocardiography(&app, &inv, &code).await;

    let r = app
        .post(
            "/api/v1/queries",
            &monitor,
            &json!({"record_type": "temperatures", "record_id": temp, "field": "celsius",
                    "text": "Source says 38.1"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["record_type"], json!("temperatures"));
    assert_eq!(r.body["record_id"], json!(temp));
    let q = r.body["id"].as_i64().unwrap();
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) AS n FROM queries WHERE id = {q} \
             AND record_type = 'form_records' AND record_id = {temp}"
        )),
        1,
        "stored as the form record it is"
    );
    // a field the form does not have, and a record of another form under the alias
    app.post(
        "/api/v1/queries",
        &monitor,
        &json!({"record_type": "temperatures", "record_id": temp, "field": "colour", "text": "x"}),
    )
    .await
    .assert_problem(422, Some("field"));
    app.post(
        "/api/v1/queries",
        &monitor,
        &json!({"record_type": "temperatures", "record_id": echo, "text": "x"}),
    )
    .await
    .assert_problem(404, None);

    let verify = format!("/api/v1/subjects/{code}/temperatures/{temp}/verify");
    let r = app
        .request(Method::POST, &verify, Some(&monitor), None, &[])
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["record_type"], json!("temperatures"));
    let book = app
        .get(&format!("/api/v1/subjects/{code}/casebook"), &monitor)
        .await;
    let temps = book.body["monitoring"]["verified"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["form"] == "temperatures")
        .cloned();
    assert_eq!(
        temps,
        Some(json!({"form": "temperatures", "records": 1, "verified": 1}))
    );
    let forms: Vec<&str> = book.body["form_records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["form"].as_str().unwrap())
        .collect();
    assert_eq!(
        forms,
        ["echocardiography"],
        "a temperature shows once, in temperatures"
    );
    assert_eq!(book.body["temperatures"][0]["id"], json!(temp));
    // the generic verify route sees the same verification
    app.request(
        Method::POST,
        &format!("/api/v1/subjects/{code}/forms/temperature/{temp}/verify"),
        Some(&monitor),
        None,
        &[],
    )
    .await
    .assert_problem(409, None);
    // another form's record under the alias is not found
    app.request(
        Method::POST,
        &format!("/api/v1/subjects/{code}/temperatures/{echo}/verify"),
        Some(&monitor),
        None,
        &[],
    )
    .await
    .assert_problem(404, None);
    // a correction clears the verification
    let r = app
        .patch(
            &format!("/api/v1/subjects/{code}/temperatures/{temp}"),
            &inv,
            1,
            &json!({"celsius": 38.1, "reason": "as per source"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) AS n FROM verifications WHERE record_type = 'form_records' \
             AND record_id = {temp} AND cleared_at IS NOT NULL"
        )),
        1
    );
}

/// POSTs a temperature on a task of its own, so that many run at once.
fn send_reading(
    app: &TestApp,
    token: &str,
    code: &str,
    celsius: f64,
) -> actix_web::rt::task::JoinHandle<(u16, Value)> {
    let (client, token) = (app.client.clone(), token.to_owned());
    let url = app.url(&format!("/api/v1/subjects/{code}/temperatures"));
    actix_web::rt::spawn(async move {
        let r = client
            .post(&url)
            .bearer_auth(&token)
            .json(&reading("2026-10-05T08:00:00Z", celsius))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    })
}

#[actix_web::test]
async fn a_burst_of_temperatures_gets_each_request_its_own_answer_and_rows() {
    let app = TestApp::spawn().await;
    app.site("FR01", "Europe/Paris");
    app.site("FR02", "Europe/Paris");
    let inv = app.token(Role::Investigator, &["FR01"]).await;
    let elsewhere = app.token(Role::Investigator, &["FR02"]).await;
    let ended = app.token(Role::Investigator, &["FR01"]).await;
    let code = enrolled(&app, &inv, "FR01").await;
    let r = app
        .request(Method::POST, "/api/v1/auth/logout", Some(&ended), None, &[])
        .await;
    assert_eq!(r.status, 204);

    // 24 good readings, 4 from an investigator of another site (404) and 4 on a session
    // that has ended (401), all at once
    let mut callers: Vec<(String, u16, f64)> = Vec::new();
    for i in 0..24 {
        callers.push((inv.clone(), 201, 36.0 + f64::from(i) / 10.0));
    }
    for _ in 0..4 {
        callers.push((elsewhere.clone(), 404, 37.0));
        callers.push((ended.clone(), 401, 37.0));
    }
    let tasks: Vec<_> = callers
        .iter()
        .map(|(token, _, celsius)| send_reading(&app, token, &code, *celsius))
        .collect();
    let mut created = Vec::new();
    for ((_, expected, celsius), task) in callers.iter().zip(tasks) {
        let (status, body) = task.await.unwrap();
        assert_eq!(status, *expected, "{body}");
        if status == 201 {
            assert_eq!(body["celsius"], json!(celsius), "the answer is its own");
            created.push(body);
        }
    }
    let mut ids: Vec<i64> = created.iter().map(|b| b["id"].as_i64().unwrap()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 24, "distinct ids");
    assert_eq!(
        app.count("SELECT count(*) AS n FROM form_records WHERE form_id = 'temperature'"),
        24
    );
    // every answer is what its record and its one audit row hold
    for body in &created {
        let id = body["id"].as_i64().unwrap();
        let celsius = format!("{:.1}", body["celsius"].as_f64().unwrap());
        let n = app.count(&format!(
            "SELECT count(*) AS n FROM audit_log a JOIN form_records r ON r.id = a.record_id \
             WHERE a.entity_table = 'form_records' AND a.action = 'create' AND r.id = {id} \
             AND r.\"values\" ->> 'celsius' = '{celsius}' \
             AND a.new_values -> 'values' ->> 'celsius' = '{celsius}'"
        ));
        assert_eq!(
            n, 1,
            "temperature {id}: its record and audit row hold {celsius}"
        );
    }
    app.wait_sealed().await;
}
