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
        for w in writes {
            assert_eq!(w.await.unwrap(), 201);
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
