//! `casebook seed-demo` on each study of config/studies/: the binary, run as `make run`
//! runs it, then the data read back through the API and the database.

use std::process::{Command, Output};

use crate::helpers::TestApp;

const STUDIES: [&str; 5] = [
    "kawasaki.toml",
    "mkd.toml",
    "nlrp12.toml",
    "ssc-calcinosis.toml",
    "thera.toml",
];
const DEMO_PASSWORD: &str = "demo password for casebook";
/// The tables the demo writes to, with the action that audits a new row.
const WRITTEN: [(&str, &str); 6] = [
    ("sites", "create"),
    ("subjects", "create"),
    ("consents", "create"),
    ("form_records", "create"),
    ("queries", "query_open"),
    ("users", "create"),
];

pub fn seed_demo(app: &TestApp, study: &str, env: &str) -> Output {
    seed_demo_with(app, study, env, &[])
}

fn seed_demo_with(app: &TestApp, study: &str, env: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_casebook"))
        .arg("seed-demo")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("CASEBOOK_ENV", env)
        .env("DATABASE_URL", &app.db.url)
        .env("CASEBOOK_STUDY", study)
        .env("RUST_LOG", "warn")
        // production refuses the development secret before anything else
        .env(
            "CASEBOOK_JWT_SECRET",
            "a production secret of the seed-demo test, long enough",
        )
        .output()
        .expect("run casebook seed-demo")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Rows of every table the demo writes, and of the audit trail.
fn rows(app: &TestApp) -> Vec<i64> {
    WRITTEN
        .iter()
        .map(|(t, _)| *t)
        .chain(["audit_log"])
        .map(|t| app.count(&format!("SELECT count(*) AS n FROM {t}")))
        .collect()
}

async fn login(app: &TestApp, email: &str) -> String {
    let r = app
        .request(
            reqwest::Method::POST,
            "/api/v1/auth/login",
            None,
            Some(&serde_json::json!({"email": email, "password": DEMO_PASSWORD})),
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.body["access_token"].as_str().unwrap().to_owned()
}

async fn one_study(file: &str) {
    let path = format!("{}/config/studies/{file}", env!("CARGO_MANIFEST_DIR"));
    let app = TestApp::spawn_with(&[("CASEBOOK_STUDY", &path)]).await;
    let def = casebook::services::study::load(std::path::Path::new(&path)).unwrap();
    let o = seed_demo(&app, &path, "test");
    assert!(o.status.success(), "{file}: {}", text(&o));
    assert!(text(&o).contains("6 new subjects"), "{file}: {}", text(&o));
    // the engine's dose rules find the demo's doses as prescribed (but for the injection
    // form's deliberate deviation, checked below)
    assert_eq!(
        app.count(
            "SELECT count(*) AS n FROM form_records WHERE values ? 'expected_dose_mg' \
             AND values->>'protocol_deviation' = 'true' AND form_id <> 'injection'"
        ),
        0,
        "{file}"
    );
    // ... given for the subject's own weight (not a weight picked inside the item's range)
    for r in def.rules.iter().filter(|r| r.item("weight").is_some()) {
        let (form, weight) = (r.form.as_deref().unwrap(), r.item("weight").unwrap());
        assert_eq!(
            app.count(&format!(
                "SELECT count(*) AS n FROM form_records r JOIN subjects s ON s.id = r.subject_id \
                 WHERE r.form_id = '{form}' AND (r.values->>'{weight}')::numeric IS DISTINCT FROM s.weight_kg"
            )),
            0,
            "{file}: {form}.{weight}"
        );
    }

    // every form of the definition has records, and no other form
    for form in &def.forms {
        let n = app.count(&format!(
            "SELECT count(*) AS n FROM form_records WHERE form_id = '{}' AND deleted_at IS NULL",
            form.id
        ));
        assert!(n > 0, "{file}: no record of the form {}", form.id);
    }
    let forms: Vec<String> = def.forms.iter().map(|f| format!("'{}'", f.id)).collect();
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) AS n FROM form_records WHERE form_id NOT IN ({})",
            forms.join(", ")
        )),
        0,
        "{file}"
    );
    // a soft finding, flagged on its record, with its automatic query open on that item
    let flagged = app.count(
        "SELECT count(*) AS n FROM form_records r JOIN queries q \
         ON q.record_type = 'form_records' AND q.record_id = r.id \
         AND q.field = r.flags -> 0 ->> 'item' AND q.status = 'open' AND q.origin = 'edit_check' \
         WHERE jsonb_array_length(r.flags) > 0",
    );
    assert!(flagged >= 1, "{file}: no soft flag with its open query");
    if def.form("injection").is_some() {
        let deviations = app.count(
            "SELECT count(*) AS n FROM form_records i JOIN queries q \
             ON q.record_type = 'form_records' AND q.record_id = i.id AND q.status = 'open' \
             AND q.origin = 'dose_check' \
             WHERE i.form_id = 'injection' AND (i.values->>'protocol_deviation')::boolean",
        );
        assert!(deviations >= 1, "{file}: no dose deviation with its query");
    }
    if def.form("temperature").is_some() {
        assert!(
            app.count(
                "SELECT count(*) AS n FROM form_records \
                 WHERE form_id = 'temperature' AND (\"values\" ->> 'fever')::boolean"
            ) >= 1
        );
    }
    // each subject consented before its first record
    assert_eq!(app.count("SELECT count(*) AS n FROM subjects"), 6);
    assert_eq!(
        app.count(
            "SELECT count(DISTINCT subject_id) AS n FROM consents c \
             WHERE c.signed_on <= (SELECT min(created_at)::date FROM form_records)"
        ),
        6,
        "{file}"
    );
    // every row written has its audit row, once
    for (table, action) in WRITTEN {
        let lacking = app.count(&format!(
            "SELECT count(*) AS n FROM {table} t WHERE (SELECT count(*) FROM audit_log a \
             WHERE a.entity_table = '{table}' AND a.record_id = t.id AND a.action = '{action}') <> 1"
        ));
        assert_eq!(lacking, 0, "{file}: {table} rows without one audit row");
    }
    // the records are under the running version, and an investigator reads them
    let records = app.count(
        "SELECT count(*) AS n FROM form_records r JOIN study_versions v ON v.id = r.study_version_id \
         WHERE v.sha256 <> (SELECT sha256 FROM study_versions ORDER BY version DESC LIMIT 1)",
    );
    assert_eq!(records, 0, "{file}: records under another version");
    let token = login(&app, "investigator.fr01@casebook.test").await;
    let r = app.get("/api/v1/subjects", &token).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let codes: Vec<&str> = r.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["subject_code"].as_str())
        .collect();
    assert_eq!(codes, ["FR01-001", "FR01-002"], "{file}");
    let engine_form = &def.forms[0];
    let r = app
        .get(
            &format!("/api/v1/subjects/FR01-001/forms/{}", engine_form.id),
            &token,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(!r.body.as_array().unwrap().is_empty(), "{file}: {}", r.text);
    assert!(r.body[0]["values"]
        .as_object()
        .is_some_and(|v| !v.is_empty()));

    // a second run adds nothing
    let before = rows(&app);
    let o = seed_demo(&app, &path, "test");
    assert!(o.status.success(), "{file}: {}", text(&o));
    assert!(text(&o).contains("0 new subjects"), "{}", text(&o));
    assert_eq!(rows(&app), before, "{file}: the second run wrote");
}

#[actix_web::test]
async fn seed_demo_fills_every_form_of_each_study_once() {
    for file in STUDIES {
        one_study(file).await;
    }
}

#[actix_web::test]
async fn seed_demo_refuses_in_production_and_writes_nothing() {
    let app = TestApp::spawn().await;
    let path = format!(
        "{}/config/studies/kawasaki.toml",
        env!("CARGO_MANIFEST_DIR")
    );
    let before = rows(&app);
    let o = seed_demo(&app, &path, "production");
    assert!(!o.status.success());
    assert!(text(&o).contains("refuses"), "{}", text(&o));
    assert_eq!(rows(&app), before);
}

#[actix_web::test]
async fn seed_demo_accounts_only_enrols_nobody() {
    let app = TestApp::spawn().await;
    let path = format!(
        "{}/config/studies/kawasaki.toml",
        env!("CARGO_MANIFEST_DIR")
    );
    let o = seed_demo_with(&app, &path, "test", &["--accounts-only"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(app.count("SELECT count(*) AS n FROM users"), 7);
    assert_eq!(app.count("SELECT count(*) AS n FROM sites"), 4);
    for table in ["subjects", "consents", "form_records", "queries"] {
        let n = app.count(&format!("SELECT count(*) AS n FROM {table}"));
        assert_eq!(n, 0, "{table}");
    }
}

/// The command leaves no database thread running when it exits: one still inside libpq
/// crashed the process now and then (SIGSEGV in an r2d2 worker, 8 runs in 300 before the
/// pool was closed first).
#[actix_web::test]
async fn seed_demo_exits_cleanly_run_after_run() {
    let app = TestApp::spawn().await;
    let path = format!("{}/config/studies/thera.toml", env!("CARGO_MANIFEST_DIR"));
    let o = seed_demo(&app, &path, "test");
    assert!(o.status.success(), "{}", text(&o));
    for run in 0..100 {
        let o = seed_demo(&app, &path, "test");
        assert!(o.status.success(), "run {run}: {:?} {}", o.status, text(&o));
    }
}
