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
