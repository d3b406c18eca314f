//! Monitoring: the query life cycle, automatic queries from edit checks, source data
//! verification, e-signatures and locks.

use casebook::auth::Role;
use reqwest::Method;
use serde_json::{json, Value};

use crate::clinical::{enrolled, injection};
use crate::helpers::{Resp, TestApp, PASSWORD};

struct Team {
    app: TestApp,
    inv: String,
    inv_email: String,
    monitor: String,
    admin: String,
    sponsor: String,
    code: String,
}

async fn team() -> Team {
    let app = TestApp::spawn().await;
    app.site("FR01", "Europe/Paris");
    let inv_email = app.user(Role::Investigator, &["FR01"]);
    let inv = app.login(&inv_email).await;
    let monitor = app.token(Role::Monitor, &["FR01"]).await;
    let admin = app.token(Role::Admin, &[]).await;
    let sponsor = app.token(Role::Sponsor, &[]).await;
    let code = enrolled(&app, &inv, "FR01").await;
    Team {
        app,
        inv,
        inv_email,
        monitor,
        admin,
        sponsor,
        code,
    }
}

impl Team {
    async fn temperature(&self, at: &str, c: f64) -> Resp {
        self.app
            .post(
                &format!("/api/v1/subjects/{}/temperatures", self.code),
                &self.inv,
                &json!({"measured_at": at, "celsius": c, "method": "oral"}),
            )
            .await
    }
    async fn query_on(&self, record_type: &str, id: i64) -> i64 {
        let r = self
            .app
            .post("/api/v1/queries", &self.monitor, &json!({"record_type": record_type, "record_id": id, "field": "celsius", "text": "The source shows 37.9."}))
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        r.body["id"].as_i64().unwrap()
    }
    async fn step(&self, token: &str, id: i64, step: &str) -> Resp {
        self.app
            .post(
                &format!("/api/v1/queries/{id}/{step}"),
                token,
                &json!({"text": format!("{step} note")}),
            )
            .await
    }
}

#[actix_web::test]
async fn the_query_life_cycle_allows_each_role_only_its_steps() {
    let t = team().await;
    let temp = t.temperature("2026-10-05T08:00:00Z", 38.0).await.body["id"]
        .as_i64()
        .unwrap();
    t.app
        .post("/api/v1/queries", &t.monitor, &json!({"record_type": "temperatures", "record_id": temp, "field": "colour", "text": "x"}))
        .await
        .assert_problem(422, Some("field"));
    t.app
        .post(
            "/api/v1/queries",
            &t.inv,
            &json!({"record_type": "temperatures", "record_id": temp, "text": "x"}),
        )
        .await
        .assert_problem(403, None);
    let q = t.query_on("temperatures", temp).await;

    // open: the investigator answers; nobody else may; the monitor may close
    for (token, step) in [
        (&t.monitor, "answer"),
        (&t.admin, "answer"),
        (&t.sponsor, "answer"),
        (&t.inv, "close"),
        (&t.inv, "reopen"),
    ] {
        t.step(token, q, step).await.assert_problem(403, None);
    }
    t.step(&t.monitor, q, "reopen")
        .await
        .assert_problem(409, None);
    assert_eq!(
        t.step(&t.inv, q, "answer").await.body["status"],
        json!("answered")
    );
    // answered: no second answer, no reopen; close
    t.step(&t.inv, q, "answer").await.assert_problem(409, None);
    t.step(&t.monitor, q, "reopen")
        .await
        .assert_problem(409, None);
    assert_eq!(
        t.step(&t.monitor, q, "close").await.body["status"],
        json!("closed")
    );
    // closed: only reopen
    t.step(&t.inv, q, "answer").await.assert_problem(409, None);
    t.step(&t.monitor, q, "close")
        .await
        .assert_problem(409, None);
    let r = t.step(&t.monitor, q, "reopen").await;
    assert_eq!(r.body["status"], json!("open"));
    let kinds: Vec<&str> = r.body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["open", "answer", "close", "reopen"],
        "the whole thread is kept"
    );
    // open -> closed directly is allowed too
    assert_eq!(
        t.step(&t.monitor, q, "close").await.body["status"],
        json!("closed")
    );
    for action in ["query_open", "query_answer", "query_close", "query_reopen"] {
        assert!(
            t.app.count(&format!(
                "SELECT count(*) AS n FROM audit_log WHERE action = '{action}' AND record_id = {q}"
            )) >= 1,
            "{action}"
        );
    }
    // correcting the field does not close a query by itself
    let q2 = t.query_on("temperatures", temp).await;
    t.app
        .patch(
            &format!("/api/v1/subjects/{}/temperatures/{temp}", t.code),
            &t.inv,
            1,
            &json!({"celsius": 37.9, "reason": "as per source"}),
        )
        .await;
    assert_eq!(
        t.app
            .get(&format!("/api/v1/queries/{q2}"), &t.monitor)
            .await
            .body["status"],
        json!("open")
    );
    let counts = t.app.get("/api/v1/queries/counts", &t.monitor).await;
    assert_eq!(
        counts.body,
        json!([{"site_code": "FR01", "status": "closed", "count": 1}, {"site_code": "FR01", "status": "open", "count": 1}])
    );
    let open = t
        .app
        .get(
            &format!("/api/v1/queries?status=open&subject={}", t.code),
            &t.inv,
        )
        .await;
    assert_eq!(open.body["items"].as_array().unwrap().len(), 1);
}

#[actix_web::test]
async fn a_deviating_dose_opens_exactly_one_query_from_the_dose_check() {
    let t = team().await;
    let path = format!("/api/v1/subjects/{}/injections", t.code);
    let r = t
        .app
        .post(&path, &t.inv, &injection(1, "2026-10-05T06:00:00Z", 60.0))
        .await;
    assert_eq!(r.body["protocol_deviation"], json!(true));
    let id = r.body["id"].as_i64().unwrap();
    let queries = t
        .app
        .get("/api/v1/queries?origin=dose_check", &t.monitor)
        .await;
    let items = queries.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["record_type"], json!("injections"));
    assert_eq!(items[0]["record_id"], json!(id));
    assert_eq!(items[0]["field"], json!("dose_mg"));
    assert_eq!(items[0]["status"], json!("open"));
    // still deviating after a correction: no second query while the first is open
    let r = t
        .app
        .patch(
            &format!("{path}/{id}"),
            &t.inv,
            1,
            &json!({"dose_mg": 55.0, "reason": "pharmacy record"}),
        )
        .await;
    assert_eq!(r.body["protocol_deviation"], json!(true));
    assert_eq!(
        t.app
            .count("SELECT count(*) AS n FROM queries WHERE origin = 'dose_check'"),
        1
    );
    // a dose within the rule opens nothing
    t.app
        .post(&path, &t.inv, &injection(2, "2026-10-06T06:00:00Z", 40.0))
        .await;
    assert_eq!(t.app.count("SELECT count(*) AS n FROM queries"), 1);
    assert_eq!(t.app.count("SELECT count(*) AS n FROM audit_log WHERE action = 'query_open' AND actor_role = 'system:dose_check'"), 1);
}

#[actix_web::test]
async fn verification_is_cleared_by_a_later_change() {
    let t = team().await;
    let id = t.temperature("2026-10-05T08:00:00Z", 38.0).await.body["id"]
        .as_i64()
        .unwrap();
    t.temperature("2026-10-05T12:00:00Z", 37.0).await;
    let verify = format!("/api/v1/subjects/{}/temperatures/{id}/verify", t.code);
    t.app
        .request(Method::POST, &verify, Some(&t.inv), None, &[])
        .await
        .assert_problem(403, None);
    let r = t
        .app
        .request(Method::POST, &verify, Some(&t.monitor), None, &[])
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["record_version"], json!(1));
    t.app
        .request(Method::POST, &verify, Some(&t.monitor), None, &[])
        .await
        .assert_problem(409, None);
    let book = t
        .app
        .get(&format!("/api/v1/subjects/{}/casebook", t.code), &t.monitor)
        .await;
    let temps = book.body["monitoring"]["verified"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["form"] == "temperatures")
        .unwrap()
        .clone();
    assert_eq!(
        temps,
        json!({"form": "temperatures", "records": 2, "verified": 1})
    );

    t.app
        .patch(
            &format!("/api/v1/subjects/{}/temperatures/{id}", t.code),
            &t.inv,
            1,
            &json!({"celsius": 38.1, "reason": "typo"}),
        )
        .await;
    let book = t
        .app
        .get(&format!("/api/v1/subjects/{}/casebook", t.code), &t.monitor)
        .await;
    let temps = book.body["monitoring"]["verified"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["form"] == "temperatures")
        .unwrap()
        .clone();
    assert_eq!(temps["verified"], json!(0));
    assert_eq!(
        t.app
            .count("SELECT count(*) AS n FROM audit_log WHERE action = 'sdv_cleared'"),
        1
    );
    // the new version can be verified again
    assert_eq!(
        t.app
            .request(Method::POST, &verify, Some(&t.monitor), None, &[])
            .await
            .body["record_version"],
        json!(2)
    );
}

#[actix_web::test]
async fn signing_needs_the_password_no_open_queries_and_breaks_on_change() {
    let t = team().await;
    let id = t.temperature("2026-10-05T08:00:00Z", 38.0).await.body["id"]
        .as_i64()
        .unwrap();
    let sign = format!("/api/v1/subjects/{}/signatures", t.code);
    let q = t.query_on("temperatures", id).await;
    t.app
        .post(
            &sign,
            &t.inv,
            &json!({"password": PASSWORD, "meaning": "approval"}),
        )
        .await
        .assert_problem(422, Some("subject_code"));
    t.step(&t.monitor, q, "close").await;
    t.app
        .post(
            &sign,
            &t.inv,
            &json!({"password": PASSWORD, "meaning": "whatever"}),
        )
        .await
        .assert_problem(422, Some("meaning"));
    let wrong = t
        .app
        .post(
            &sign,
            &t.inv,
            &json!({"password": "not my password at all", "meaning": "approval"}),
        )
        .await;
    // not a 401: the session is fine, and clients take a 401 for an expired one
    wrong.assert_problem(422, Some("password"));
    assert!(wrong.headers.get("www-authenticate").is_none());
    assert_eq!(t.app.count("SELECT count(*) AS n FROM signatures"), 0);
    assert_eq!(
        t.app
            .count("SELECT count(*) AS n FROM audit_log WHERE action = 'sign_failed'"),
        1
    );
    assert_eq!(
        t.app.count(&format!(
            "SELECT failed_logins::bigint AS n FROM users WHERE email = '{}'",
            t.inv_email
        )),
        1,
        "counts toward lockout"
    );

    let r = t
        .app
        .post(
            &sign,
            &t.inv,
            &json!({"password": PASSWORD, "meaning": "approval"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(
        r.body["meaning"],
        json!("I approve the data of this casebook.")
    );
    assert_eq!(r.body["printed_name"], json!("Test User"));
    assert_eq!(r.body["casebook_sha256"].as_str().unwrap().len(), 64);
    assert_eq!(r.body["invalidated_at"], Value::Null);
    assert_eq!(
        t.app
            .count("SELECT count(*) AS n FROM audit_log WHERE action = 'sign'"),
        1
    );

    // any later change to the subject's data invalidates it; it is kept, shown as such
    t.temperature("2026-10-05T12:00:00Z", 37.0).await;
    let list = t.app.get(&sign, &t.monitor).await;
    let sig = &list.body["items"][0];
    assert!(sig["invalidated_at"].is_string(), "{}", list.text);
    assert_eq!(
        sig["invalidated_reason"],
        json!("temperatures changed after signing")
    );
    assert_eq!(
        t.app
            .count("SELECT count(*) AS n FROM audit_log WHERE action = 'signature_invalidated'"),
        1
    );
    t.app
        .post(
            &sign,
            &t.monitor,
            &json!({"password": PASSWORD, "meaning": "review"}),
        )
        .await
        .assert_problem(403, None);
}

#[actix_web::test]
async fn every_write_path_answers_423_under_each_kind_of_lock() {
    let t = team().await;
    let code = t.code.clone();
    let inj = t
        .app
        .post(
            &format!("/api/v1/subjects/{code}/injections"),
            &t.inv,
            &injection(1, "2026-10-05T06:00:00Z", 40.0),
        )
        .await
        .body["id"]
        .as_i64()
        .unwrap();
    let temp = t.temperature("2026-10-05T08:00:00Z", 38.0).await.body["id"]
        .as_i64()
        .unwrap();
    let ae = t
        .app
        .post(
            &format!("/api/v1/subjects/{code}/adverse-events"),
            &t.inv,
            &crate::adverse_events::mild_event(),
        )
        .await
        .body["id"]
        .as_i64()
        .unwrap();
    let consent = t
        .app
        .get(&format!("/api/v1/subjects/{code}/consents"), &t.inv)
        .await
        .body[0]["id"]
        .as_i64()
        .unwrap();
    let writes: Vec<(Method, String, Value)> = vec![
        (
            Method::POST,
            "/api/v1/subjects".into(),
            crate::clinical::new_subject("FR01"),
        ),
        (
            Method::PATCH,
            format!("/api/v1/subjects/{code}"),
            json!({"weight_kg": 21.0, "reason": "r"}),
        ),
        (
            Method::POST,
            format!("/api/v1/subjects/{code}/consents"),
            json!({"form_version": "2.0", "signed_on": "2026-10-02", "signer": "participant"}),
        ),
        (
            Method::POST,
            format!("/api/v1/subjects/{code}/consents/{consent}/withdraw"),
            json!({"withdrawn_on": "2026-11-01", "scope": "all", "reason": "r"}),
        ),
        (
            Method::POST,
            format!("/api/v1/subjects/{code}/injections"),
            injection(2, "2026-10-06T06:00:00Z", 40.0),
        ),
        (
            Method::PATCH,
            format!("/api/v1/subjects/{code}/injections/{inj}"),
            json!({"lot_number": "L9", "reason": "r"}),
        ),
        (
            Method::DELETE,
            format!("/api/v1/subjects/{code}/injections/{inj}"),
            json!({"reason": "r"}),
        ),
        (
            Method::POST,
            format!("/api/v1/subjects/{code}/temperatures"),
            json!({"measured_at": "2026-10-05T09:00:00Z", "celsius": 37.0, "method": "oral"}),
        ),
        (
            Method::PATCH,
            format!("/api/v1/subjects/{code}/temperatures/{temp}"),
            json!({"celsius": 37.5, "reason": "r"}),
        ),
        (
            Method::DELETE,
            format!("/api/v1/subjects/{code}/temperatures/{temp}"),
            json!({"reason": "r"}),
        ),
        (
            Method::POST,
            format!("/api/v1/subjects/{code}/adverse-events"),
            crate::adverse_events::mild_event(),
        ),
        (
            Method::PATCH,
            format!("/api/v1/subjects/{code}/adverse-events/{ae}"),
            json!({"grade": 2, "reason": "r"}),
        ),
        (
            Method::DELETE,
            format!("/api/v1/subjects/{code}/adverse-events/{ae}"),
            json!({"reason": "r"}),
        ),
    ];
    for (scope, target) in [
        ("subject", Some(code.as_str())),
        ("site", Some("FR01")),
        ("study", None),
    ] {
        let lock = t.app.post("/api/v1/locks", &t.admin, &json!({"scope": scope, "target": target, "reason": "database lock before analysis"})).await;
        assert_eq!(lock.status, 201, "{}", lock.text);
        let lock_id = lock.body["id"].as_i64().unwrap();
        let before = (
            t.app.count("SELECT count(*) AS n FROM audit_log WHERE action NOT IN ('login', 'lock', 'unlock')"),
            t.app.count("SELECT sum(version)::bigint + count(*) AS n FROM (SELECT version FROM subjects UNION ALL SELECT version FROM form_records UNION ALL SELECT version FROM consents) v"),
        );
        for (method, path, body) in &writes {
            // subject-level locks leave enrolment of new subjects at the site open
            if scope == "subject" && path == "/api/v1/subjects" {
                continue;
            }
            let headers: &[(&str, &str)] = if *method == Method::PATCH {
                &[("if-match", "\"1\"")]
            } else {
                &[]
            };
            let r = t
                .app
                .request(method.clone(), path, Some(&t.inv), Some(body), headers)
                .await;
            r.assert_problem(423, None);
            assert!(
                r.body["detail"]
                    .as_str()
                    .unwrap()
                    .contains(&format!("lock {lock_id}")),
                "{}",
                r.text
            );
        }
        let after = (
            t.app.count("SELECT count(*) AS n FROM audit_log WHERE action NOT IN ('login', 'lock', 'unlock')"),
            t.app.count("SELECT sum(version)::bigint + count(*) AS n FROM (SELECT version FROM subjects UNION ALL SELECT version FROM form_records UNION ALL SELECT version FROM consents) v"),
        );
        assert_eq!(before, after, "nothing written under a {scope} lock");
        let unlock = format!("/api/v1/locks/{lock_id}");
        t.app
            .request(
                Method::DELETE,
                &unlock,
                Some(&t.admin),
                Some(&json!({"reason": ""})),
                &[],
            )
            .await
            .assert_problem(422, Some("reason"));
        let r = t
            .app
            .request(
                Method::DELETE,
                &unlock,
                Some(&t.admin),
                Some(&json!({"reason": "analysis done"})),
                &[],
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
    }
    // unlocked: writes work again
    assert_eq!(
        t.temperature("2026-10-05T10:00:00Z", 37.2).await.status,
        201
    );
    assert_eq!(
        t.app
            .count("SELECT count(*) AS n FROM audit_log WHERE action = 'lock'"),
        3
    );
    assert_eq!(t.app.count("SELECT count(*) AS n FROM audit_log WHERE action = 'unlock' AND reason = 'analysis done'"), 3);
}

/// The hash the code before migration 000020 (947b1db's parent: `sign`'s `build` and
/// `signed_content`, run once by hand on its own migrations and
/// tests/fixtures/casebook_before_the_move.sql) computed for that casebook; the content it
/// hashed is tests/fixtures/casebook_before_the_move.json.
const SIGNED_BEFORE_THE_MOVE: &str =
    "edef2391a8b67983c284af2aeaebeda436193e0f55a330cb42a6f4e099f80ec3";

#[actix_web::test]
async fn a_signature_made_before_the_move_still_matches_its_casebook() {
    use diesel::connection::SimpleConnection;
    use diesel::Connection;
    use diesel_migrations::MigrationHarness;

    use sha2::{Digest, Sha256};
    let signed = include_bytes!("../fixtures/casebook_before_the_move.json");
    assert_eq!(hex::encode(Sha256::digest(signed)), SIGNED_BEFORE_THE_MOVE);

    // the schema before today's three forms moved into form_records, with their data and a
    // signature of it
    let db = actix_web::web::block(crate::helpers::TestDb::empty)
        .await
        .unwrap();
    let mut conn = diesel::PgConnection::establish(&db.url).unwrap();
    let pending = conn.pending_migrations(casebook::db::MIGRATIONS).unwrap();
    for m in pending
        .iter()
        .take_while(|m| *m.name().to_string() < *"2026-12-05-000020")
    {
        conn.run_migration(m).unwrap();
    }
    // the move needs a published version: the one the release before it published at start
    let settings = crate::helpers::test_settings(&db.url, &[]);
    let def = casebook::services::study::load(&settings.study).unwrap();
    let pool = r2d2::Pool::builder()
        .max_size(1)
        .build(diesel::r2d2::ConnectionManager::<diesel::PgConnection>::new(&db.url))
        .unwrap();
    casebook::services::study::publish(&pool, &def, "test").unwrap();
    drop(pool);
    conn.batch_execute(include_str!("../fixtures/casebook_before_the_move.sql"))
        .unwrap();
    conn.batch_execute(&format!(
        "INSERT INTO signatures (site_id, subject_id, signer_id, printed_name, meaning, signed_at,
                                 casebook_sha256)
         VALUES (1, 1, 1, 'Dr Inv', 'I approve the data of this casebook.',
                 '2026-10-04T12:00:00Z', '{SIGNED_BEFORE_THE_MOVE}')"
    ))
    .unwrap();
    drop(conn);
    // the move, then this release
    casebook::db::migrate(&db.url).unwrap();
    let app = TestApp::spawn_on(db, &[]).await;
    assert_eq!(
        app.count(
            "SELECT count(*) AS n FROM legacy_record_ids m JOIN form_records r ON r.id = m.new_id \
             WHERE m.new_id <> m.old_id"
        ),
        5,
        "every record has another id now"
    );
    let inv_email = app.user(Role::Investigator, &["FR01"]);
    let inv = app.login(&inv_email).await;
    let check = "/api/v1/subjects/FR01-001/signatures/1/check";
    let r = app.get(check, &inv).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["casebook_sha256"], json!(SIGNED_BEFORE_THE_MOVE));
    assert_eq!(
        r.body["recomputed_sha256"],
        json!(SIGNED_BEFORE_THE_MOVE),
        "{}",
        r.text
    );
    assert_eq!(r.body["matches"], json!(true));
    assert_eq!(r.body["ids_mapped_back"], json!(5));

    // signed after the move: its ids are the new ones
    let r = app
        .post(
            "/api/v1/subjects/FR01-001/signatures",
            &inv,
            &json!({"password": PASSWORD, "meaning": "review"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let after = r.body["id"].as_i64().unwrap();
    assert_ne!(r.body["casebook_sha256"], json!(SIGNED_BEFORE_THE_MOVE));
    let r = app
        .get(
            &format!("/api/v1/subjects/FR01-001/signatures/{after}/check"),
            &inv,
        )
        .await;
    assert_eq!(
        (r.body["matches"].clone(), r.body["ids_mapped_back"].clone()),
        (json!(true), json!(0)),
        "{}",
        r.text
    );

    // a change after both: neither matches
    let temperature = app.count(
        "SELECT new_id AS n FROM legacy_record_ids WHERE entity = 'temperatures' AND old_id = 12",
    );
    let r = app
        .patch(
            &format!("/api/v1/subjects/FR01-001/temperatures/{temperature}"),
            &inv,
            2,
            &json!({"celsius": 37.3, "reason": "misread"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    for id in [1, after] {
        let r = app
            .get(
                &format!("/api/v1/subjects/FR01-001/signatures/{id}/check"),
                &inv,
            )
            .await;
        assert_eq!(r.body["matches"], json!(false), "{}", r.text);
    }
    // another site's investigator: not found
    app.site("FR02", "Europe/Paris");
    let away = app.token(Role::Investigator, &["FR02"]).await;
    app.get(check, &away).await.assert_problem(404, None);
}
