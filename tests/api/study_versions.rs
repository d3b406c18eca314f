//! Versions of the study definition: a start publishes the running definition when it
//! differs from the newest published one (audited with its SHA-256), once however many
//! instances start; a change that would lose or recode collected data stops the start,
//! naming each conflict; safe changes are published.

use std::path::PathBuf;
use std::time::Duration;

use casebook::auth::Role;
use serde_json::json;

use crate::clinical::enrolled;
use crate::helpers::{test_settings, RunningServer, TestApp};

const KAWASAKI: &str = include_str!("../../config/studies/kawasaki.toml");

fn sha256(text: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

/// Writes a definition file into a directory of its own; returns its path.
pub fn definition_file(text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("casebook-study-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("study.toml");
    std::fs::write(&file, text).unwrap();
    file
}

/// Kawasaki with an edit; panics if the edit does not apply.
pub fn kawasaki_with(from: &str, to: &str) -> String {
    assert!(KAWASAKI.contains(from), "`{from}` is not in kawasaki.toml");
    KAWASAKI.replacen(from, to, 1)
}

/// Safe changes: a new code, a new label, a wider range, a new form.
fn safely_amended() -> String {
    kawasaki_with(
        "  { code = \"temporal\", label = \"Temporal\", sdtm = \"TEMPORAL ARTERY\" },",
        "  { code = \"temporal\", label = \"Temporal artery\", sdtm = \"TEMPORAL ARTERY\" },\n  { code = \"skin\", label = \"Skin\" },",
    )
    .replacen(
        "range = { min = -5.0, max = 40.0 }",
        "range = { min = -6.0, max = 45.0 }",
        1,
    ) + "\n[[forms]]\nid = \"height\"\nname = \"Height\"\nrepeat = \"any\"\ndated_by = \"measured_on\"\n\n  [[forms.items]]\n  id = \"measured_on\"\n  label = \"Date\"\n  type = \"date\"\n  required = true\n"
}

fn start_with(app: &TestApp, text: &str) -> RunningServer {
    let file = definition_file(text);
    RunningServer::start(test_settings(
        &app.db.url,
        &[("CASEBOOK_STUDY", file.to_str().unwrap())],
    ))
}

/// What a start on `text` says, when it refuses to start.
fn refused_start(app: &TestApp, text: &str) -> String {
    let file = definition_file(text);
    let settings = test_settings(&app.db.url, &[("CASEBOOK_STUDY", file.to_str().unwrap())]);
    match casebook::state::AppState::new(settings) {
        Ok(state) => {
            state.close(Duration::from_secs(5));
            panic!("the start was not refused")
        }
        Err(e) => e,
    }
}

fn versions(app: &TestApp) -> i64 {
    app.count("SELECT count(*) AS n FROM study_versions WHERE study_id = 'KD-ANAKINRA'")
}

fn publications(app: &TestApp, sha: &str) -> i64 {
    app.count(&format!(
        "SELECT count(*) AS n FROM audit_log WHERE action = 'publish' AND entity_table = 'study_versions' \
         AND actor_role = 'system:study' AND new_values->>'sha256' = '{sha}'"
    ))
}

#[actix_web::test]
async fn a_start_publishes_a_changed_definition_once_and_audits_its_sha256() {
    let app = TestApp::spawn().await;
    let first = sha256(KAWASAKI);
    assert_eq!(versions(&app), 1);
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) AS n FROM study_versions WHERE version = 1 AND sha256 = '{first}' \
             AND declared_version = '1' AND definition->'study'->>'id' = 'KD-ANAKINRA' \
             AND definition->>'sha256' = '{first}'"
        )),
        1
    );
    assert_eq!(publications(&app, &first), 1);

    // the same file again: nothing to publish
    drop(app.second_instance());
    assert_eq!(versions(&app), 1);
    assert_eq!(publications(&app, &first), 1);

    // safe changes make version 2, served and audited
    let amended = safely_amended();
    let second = sha256(&amended);
    let server = start_with(&app, &amended);
    assert_eq!(versions(&app), 2);
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) AS n FROM study_versions WHERE version = 2 AND sha256 = '{second}'"
        )),
        1
    );
    assert_eq!(publications(&app, &second), 1);
    let sponsor = app.token(Role::Sponsor, &[]).await;
    let r = app
        .client
        .get(format!("{}/api/v1/study/definition", server.address()))
        .bearer_auth(&sponsor)
        .send()
        .await
        .unwrap();
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["sha256"], second);
}

#[actix_web::test]
async fn instances_starting_together_publish_once() {
    let app = TestApp::spawn().await;
    let amended = safely_amended();
    let file = definition_file(&amended);
    let settings = test_settings(&app.db.url, &[("CASEBOOK_STUDY", file.to_str().unwrap())]);
    let starts: Vec<_> = (0..3)
        .map(|_| {
            let s = settings.clone();
            std::thread::spawn(move || RunningServer::start(s))
        })
        .collect();
    let servers: Vec<RunningServer> = starts.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(servers.len(), 3);
    assert_eq!(versions(&app), 2);
    assert_eq!(publications(&app, &sha256(&amended)), 1);
}

#[actix_web::test]
async fn a_change_that_would_lose_collected_data_stops_the_start() {
    let app = TestApp::spawn().await;
    let rounded = kawasaki_with(
        "  decimals = 1\n  unit = \"°C\"",
        "  decimals = 0\n  unit = \"°C\"",
    );
    // without temperatures, fewer decimals lose nothing: published, and back again
    drop(start_with(&app, &rounded));
    drop(start_with(&app, KAWASAKI));
    assert_eq!(versions(&app), 3);

    app.site("FRA", "Europe/Paris");
    let inv = app.token(Role::Investigator, &["FRA"]).await;
    let code = enrolled(&app, &inv, "FRA").await;
    let r = app
        .post(
            &format!("/api/v1/subjects/{code}/temperatures"),
            &inv,
            &json!({"measured_at": "2026-10-05T12:00:00Z", "celsius": 38.5, "method": "rectal"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);

    let err = refused_start(&app, &rounded);
    assert!(
        err.contains(
            "cannot be published over version 3: 1 change(s) would lose or recode collected data"
        ),
        "{err}"
    );
    assert!(
        err.contains("temperature.celsius: the item holds data: fewer digits after the point (1 to 0) would round it"),
        "{err}"
    );
    assert_eq!(versions(&app), 3);
    assert_eq!(publications(&app, &sha256(&rounded)), 1);
}

#[actix_web::test]
async fn an_item_holding_form_records_cannot_be_rounded_away() {
    let app = TestApp::spawn().await;
    let rounded = kawasaki_with(
        "  decimals = 1\n  unit = \"mg/L\"",
        "  decimals = 0\n  unit = \"mg/L\"",
    );
    app.site("FRA", "Europe/Paris");
    let inv = app.token(Role::Investigator, &["FRA"]).await;
    let code = enrolled(&app, &inv, "FRA").await;
    let r = app
        .post(
            &format!("/api/v1/subjects/{code}/forms/disease_activity"),
            &inv,
            &json!({"visit": "V1", "values": {"assessed_on": "2026-10-05", "crp_mg_l": "120.5", "wbc": "14.2",
                    "conjunctivitis": true, "oral_changes": true, "rash": false,
                    "extremity_changes": false, "lymphadenopathy": false}}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let err = refused_start(&app, &rounded);
    assert!(
        err.contains("disease_activity.crp_mg_l: the item holds data: fewer digits after the point (1 to 0) would round it"),
        "{err}"
    );
    assert_eq!(versions(&app), 1);
}

/// The MetaDataVersion OID of an ODM export from the server at `address`.
async fn mdv_oid(app: &TestApp, address: &str, sponsor: &str) -> String {
    let r = app
        .client
        .get(format!("{address}/api/v1/exports/odm.xml"))
        .bearer_auth(sponsor)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let xml = r.text().await.unwrap();
    let at = xml
        .find("<MetaDataVersion OID=\"")
        .expect("the export has a MetaDataVersion")
        + "<MetaDataVersion OID=\"".len();
    xml[at..].split('"').next().unwrap().to_owned()
}

#[actix_web::test]
async fn an_amended_definition_exports_under_a_new_metadata_version_oid() {
    let app = TestApp::spawn().await;
    let sponsor = app.token(Role::Sponsor, &[]).await;
    let first = mdv_oid(&app, &app.url(""), &sponsor).await;
    assert_eq!(mdv_oid(&app, &app.url(""), &sponsor).await, first);

    // a safe change: the metadata differ, so must the OID
    let server = start_with(&app, &safely_amended());
    let second = mdv_oid(&app, &server.address(), &sponsor).await;
    assert!(first.starts_with("MDV.") && second.starts_with("MDV."));
    assert_ne!(first, second);
    drop(server);

    // back to the first file: its OID again
    let server = start_with(&app, KAWASAKI);
    assert_eq!(mdv_oid(&app, &server.address(), &sponsor).await, first);
}
