//! The audit trail: same transaction, append-only in the database, a hash chain that
//! stays linear under concurrent writers and instances, and names the first tampered row.

use casebook::auth::Role;
use diesel::connection::SimpleConnection;
use serde_json::json;

use crate::helpers::TestApp;

fn verify_cli(app: &TestApp) -> (i32, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_casebook"))
        .arg("verify-audit")
        .env("DATABASE_URL", &app.db.url)
        .env("CASEBOOK_ENV", "test")
        .env(
            "CASEBOOK_CONFIG_DIR",
            concat!(env!("CARGO_MANIFEST_DIR"), "/config"),
        )
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[actix_web::test]
async fn a_write_and_its_audit_row_share_one_transaction() {
    let app = TestApp::spawn().await;
    let admin = app.token(Role::Admin, &[]).await;
    let before = app.count("SELECT count(*) AS n FROM audit_log");
    let r = app.post("/api/v1/sites", &admin, &json!({"code": "FR07", "name": "CHU de Lille", "country": "FR", "time_zone": "Europe/Paris"})).await;
    assert_eq!(r.status, 201);
    let id = r.body["id"].as_i64().unwrap();
    assert_eq!(app.count("SELECT count(*) AS n FROM audit_log") - before, 1);
    let me = app.get("/api/v1/me", &admin).await.body["id"]
        .as_i64()
        .unwrap();
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) AS n FROM audit_log WHERE action = 'create' AND entity_table = 'sites'
             AND record_id = {id} AND site_id = {id} AND actor_id = {me} AND actor_role = 'admin'
             AND new_values->>'code' = 'FR07' AND old_values IS NULL AND request_id <> ''
             AND client_addr = '127.0.0.1'"
        )),
        1
    );
    // a conflicting write leaves neither a row nor an audit row
    let r = app
        .post(
            "/api/v1/sites",
            &admin,
            &json!({"code": "FR07", "name": "Again", "country": "FR"}),
        )
        .await;
    assert_eq!(r.status, 409);
    assert_eq!(app.count("SELECT count(*) AS n FROM audit_log") - before, 1);
    assert_eq!(app.count("SELECT count(*) AS n FROM sites"), 1);
}

#[actix_web::test]
async fn the_audit_log_refuses_update_delete_and_truncate() {
    // The sealer reads audit_chain then audit_log in one transaction; TRUNCATE ... CASCADE
    // locks them the other way round, and the two can deadlock before the refusing trigger
    // fires (seen in CI). That is not what this test is about: the sealer runs once, at start.
    let app = TestApp::spawn_with(&[("CASEBOOK__AUDIT__SEAL_INTERVAL_MS", "3600000")]).await;
    app.token(Role::Admin, &[]).await; // a login: some audit rows exist
    let mut owner = app.conn();
    for sql in [
        "UPDATE audit_log SET reason = 'edited'",
        "DELETE FROM audit_log",
        "TRUNCATE audit_log CASCADE",
        "UPDATE audit_chain SET hash = prev_hash",
        "DELETE FROM audit_chain",
    ] {
        let err = owner.batch_execute(sql).expect_err(sql);
        assert!(err.to_string().contains("append-only"), "{sql}: {err}");
    }
    let mut app_role = app.conn();
    app_role.batch_execute("SET ROLE casebook_app").unwrap();
    for sql in [
        "UPDATE audit_log SET reason = 'edited'",
        "DELETE FROM audit_log",
        "TRUNCATE audit_log",
    ] {
        let err = app_role.batch_execute(sql).expect_err(sql);
        assert!(
            err.to_string().contains("permission denied"),
            "{sql}: {err}"
        );
    }
    // and the application role can still append
    app_role
        .batch_execute("INSERT INTO audit_log (action, entity_table) VALUES ('test', 'none')")
        .unwrap();
}

#[actix_web::test]
async fn tampering_is_reported_at_exactly_that_row() {
    let app = TestApp::spawn().await;
    let admin = app.token(Role::Admin, &[]).await;
    for code in ["FR11", "FR12", "FR13", "FR14"] {
        let r = app
            .post(
                "/api/v1/sites",
                &admin,
                &json!({"code": code, "name": "Site", "country": "FR"}),
            )
            .await;
        assert_eq!(r.status, 201);
    }
    app.wait_sealed().await;
    let r = app.get("/api/v1/audit/verify", &admin).await;
    assert_eq!(r.body["ok"], json!(true), "{}", r.text);
    let total = app.count("SELECT count(*) AS n FROM audit_log");
    assert_eq!(r.body["rows_checked"].as_i64().unwrap(), total);
    assert_eq!(verify_cli(&app).0, 0);

    let victim = app.count("SELECT id AS n FROM audit_log WHERE new_values->>'code' = 'FR12'");
    app.conn()
        .batch_execute(&format!(
            "ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only;
             UPDATE audit_log SET new_values = jsonb_set(new_values, '{{name}}', '\"Forged\"') WHERE id = {victim};
             ALTER TABLE audit_log ENABLE TRIGGER audit_log_append_only;"
        ))
        .unwrap();
    let r = app.get("/api/v1/audit/verify", &admin).await;
    assert_eq!(r.body["ok"], json!(false));
    assert_eq!(r.body["first_bad_id"].as_i64(), Some(victim), "{}", r.text);
    let (code, out) = verify_cli(&app);
    assert_eq!(code, 1);
    assert!(out.contains(&format!("id {victim}")), "{out}");
}

#[actix_web::test]
async fn a_row_hidden_from_the_sealer_is_reported() {
    let app = TestApp::spawn().await;
    let admin = app.token(Role::Admin, &[]).await;
    app.wait_sealed().await;
    // stop sealing by holding the sealer's lock, write, then drop the pending marker
    let mut holder = app.conn();
    holder
        .batch_execute(&format!(
            "SELECT pg_advisory_lock({})",
            casebook::audit::SEALER_LOCK
        ))
        .unwrap();
    let r = app
        .post(
            "/api/v1/sites",
            &admin,
            &json!({"code": "FR21", "name": "Site", "country": "FR"}),
        )
        .await;
    assert_eq!(r.status, 201);
    let r = app.get("/api/v1/audit/verify", &admin).await;
    assert_eq!(
        r.body["ok"],
        json!(true),
        "pending is not broken: {}",
        r.text
    );
    assert!(r.body["pending"].as_i64().unwrap() >= 1);
    let hidden = app.count("SELECT max(audit_id) AS n FROM audit_unsealed");
    app.conn()
        .batch_execute(&format!(
            "DELETE FROM audit_unsealed WHERE audit_id = {hidden}"
        ))
        .unwrap();
    let r = app.get("/api/v1/audit/verify", &admin).await;
    assert_eq!(r.body["ok"], json!(false));
    assert_eq!(r.body["first_bad_id"].as_i64(), Some(hidden));
    holder
        .batch_execute(&format!(
            "SELECT pg_advisory_unlock({})",
            casebook::audit::SEALER_LOCK
        ))
        .unwrap();
}

#[actix_web::test]
async fn concurrent_writers_on_two_instances_keep_one_complete_chain() {
    let app = TestApp::spawn().await;
    // a second server instance on the same database, sealing concurrently
    let second = app.second_instance();
    let second_addr = second.address();

    let admin = app.token(Role::Admin, &[]).await;
    let mut tasks = Vec::new();
    for w in 0..8 {
        let base = if w % 2 == 0 {
            app.address.clone()
        } else {
            second_addr.clone()
        };
        let client = app.client.clone();
        let token = admin.clone();
        tasks.push(actix_web::rt::spawn(async move {
            for i in 0..200 {
                let r = client
                    .post(format!("{base}/api/v1/sites"))
                    .bearer_auth(&token)
                    .json(&json!({"code": format!("W{w}N{i}"), "name": "Load", "country": "FR"}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 201);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    app.wait_sealed().await;
    let r = app.get("/api/v1/audit/verify", &admin).await;
    assert_eq!(r.body["ok"], json!(true), "{}", r.text);
    let total = app.count("SELECT count(*) AS n FROM audit_log");
    assert!(total >= 1600);
    assert_eq!(r.body["rows_checked"].as_i64().unwrap(), total);
    assert_eq!(
        app.count("SELECT count(DISTINCT audit_id) AS n FROM audit_chain"),
        total
    );
    assert_eq!(app.count("SELECT max(seq) AS n FROM audit_chain"), total);
}

#[actix_web::test]
async fn audit_is_filtered_paginated_and_scoped() {
    let app = TestApp::spawn().await;
    app.site("FRA", "Europe/Paris");
    app.site("FRB", "Europe/Paris");
    let admin = app.token(Role::Admin, &[]).await;
    let monitor = app.token(Role::Monitor, &["FRA"]).await;
    for (code, name) in [("FRA", "A1"), ("FRB", "B1"), ("FRA", "A2")] {
        app.patch(
            &format!("/api/v1/sites/{code}"),
            &admin,
            0,
            &json!({"name": name}),
        )
        .await;
    }
    let all = app
        .get("/api/v1/audit?table=sites&action=update&limit=2", &admin)
        .await;
    assert_eq!(all.body["items"].as_array().unwrap().len(), 2);
    let after = all.body["next_after"].as_i64().unwrap();
    let rest = app
        .get(
            &format!("/api/v1/audit?table=sites&action=update&after={after}"),
            &admin,
        )
        .await;
    assert_eq!(rest.body["items"].as_array().unwrap().len(), 1);
    assert_eq!(rest.body["next_after"], json!(null));
    let mon = app
        .get("/api/v1/audit?table=sites&action=update", &monitor)
        .await;
    let items = mon.body["items"].as_array().unwrap();
    assert_eq!(
        items.len(),
        2,
        "a monitor sees only own-site rows: {}",
        mon.text
    );
    assert!(!mon.text.contains("B1"));
    let none = app.get("/api/v1/audit?site=FRB", &monitor).await;
    assert_eq!(none.body["items"].as_array().unwrap().len(), 0);
    app.get("/api/v1/audit?bogus=1", &admin)
        .await
        .assert_problem(422, Some("bogus"));
}

/// Verification reads the chain in ranges of `seq`, possibly on two connections; the report
/// must be the one a single walk from `seq` 1 gives, wherever the ranges cut.
#[actix_web::test]
async fn the_report_does_not_depend_on_ranges_or_connections() {
    use casebook::audit::{verify_in_ranges, ChainReport};

    let app = TestApp::spawn().await;
    let admin = app.token(Role::Admin, &[]).await;
    for i in 0..12 {
        let r = app
            .post(
                "/api/v1/sites",
                &admin,
                &json!({"code": format!("RG{i:02}"), "name": "Site", "country": "FR"}),
            )
            .await;
        assert_eq!(r.status, 201);
    }
    app.wait_sealed().await;
    let total = app.count("SELECT count(*) AS n FROM audit_chain");
    assert!(total >= 12);
    let id_at = |seq: i64| {
        app.count(&format!(
            "SELECT audit_id AS n FROM audit_chain WHERE seq = {seq}"
        ))
    };
    let reports = || -> ChainReport {
        let mut conn = app.conn();
        let mut helper = app.conn();
        let mut all = Vec::new();
        for size in [1, 2, 3, 5, 1_000_000] {
            all.push(verify_in_ranges(&mut conn, &mut [], size).unwrap());
            all.push(verify_in_ranges(&mut conn, &mut [&mut helper], size).unwrap());
        }
        for r in &all[1..] {
            assert_eq!(r, &all[0]);
        }
        all.swap_remove(0)
    };
    let r = reports();
    assert!(r.ok, "{r:?}");
    assert_eq!(r.rows_checked, total);

    let tamper = |sql: &str| {
        app.conn()
            .batch_execute(&format!(
                "ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only;
                 ALTER TABLE audit_chain DISABLE TRIGGER audit_chain_append_only;
                 {sql};
                 ALTER TABLE audit_log ENABLE TRIGGER audit_log_append_only;
                 ALTER TABLE audit_chain ENABLE TRIGGER audit_chain_append_only;"
            ))
            .unwrap();
    };
    // Each step breaks a lower seq than the one before, so it becomes the first failure.
    let cases = [
        (
            9,
            "UPDATE audit_chain SET prev_hash = sha256('x') WHERE seq = 9".to_owned(),
            "prev_hash does not match the previous row",
            8,
        ),
        (
            6,
            format!(
                "UPDATE audit_log SET reason = 'forged' WHERE id = {}",
                id_at(6)
            ),
            "content does not match its hash",
            5,
        ),
        (
            5,
            "DELETE FROM audit_chain WHERE seq = 4".to_owned(),
            "sequence jumps from 3 to 5",
            3,
        ),
        (
            2,
            "DELETE FROM audit_chain WHERE seq = 1".to_owned(),
            "sequence jumps from 0 to 2",
            0,
        ),
    ];
    for (bad_seq, sql, problem, checked) in cases {
        let bad_id = id_at(bad_seq);
        tamper(&sql);
        let r = reports();
        assert!(!r.ok);
        assert_eq!(r.first_bad_id, Some(bad_id), "{sql}: {r:?}");
        assert_eq!(r.problem.as_deref(), Some(problem), "{sql}");
        assert_eq!(r.rows_checked, checked, "{sql}");
    }
}

/// The ids of the audit rows a `GET /audit` answered.
fn audit_ids(r: &crate::helpers::Resp) -> Vec<i64> {
    assert_eq!(r.status, 200, "{}", r.text);
    r.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_i64().unwrap())
        .collect()
}

#[actix_web::test]
async fn a_moved_record_s_history_is_one_answer_with_its_rows_from_before_the_move() {
    let app = TestApp::spawn().await;
    app.site("FR01", "Europe/Paris");
    app.site("FR02", "Europe/Paris");
    let inv = app.token(Role::Investigator, &["FR01"]).await;
    let code = crate::clinical::enrolled(&app, &inv, "FR01").await;
    let path = format!("/api/v1/subjects/{code}/temperatures");
    let mut ids = Vec::new();
    for at in ["2026-10-02T08:00:00Z", "2026-10-03T08:00:00Z"] {
        let r = app
            .post(
                &path,
                &inv,
                &json!({"measured_at": at, "celsius": 38.4, "method": "rectal"}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        ids.push(r.body["id"].as_i64().unwrap());
    }
    let (moved, other) = (ids[0], ids[1]);
    // the rows the two records had in `temperatures` before migration 000020 moved them
    // (old ids 9001 and 9002), its mapping and `migrate` rows, and an injection's row under
    // the same old id 9001
    let before = app.count("SELECT max(id) AS n FROM audit_log");
    app.conn()
        .batch_execute(&format!(
            "INSERT INTO audit_log (action, entity_table, record_id, site_id, subject_id, new_values, reason)
             SELECT x.action, x.entity, x.old_id, s.site_id, s.id, x.body::jsonb, x.reason
             FROM subjects s, (VALUES
               (1, 'create', 'temperatures', 9001, '{{\"celsius\": 38.4}}', NULL),
               (2, 'update', 'temperatures', 9001, '{{\"celsius\": 38.5}}', 'misread'),
               (3, 'create', 'temperatures', 9002, '{{\"celsius\": 37.0}}', NULL),
               (4, 'create', 'injections', 9001, '{{\"dose_mg\": 40}}', NULL))
               AS x(n, action, entity, old_id, body, reason)
             WHERE s.subject_code = '{code}' ORDER BY x.n"
        ))
        .unwrap();
    app.conn()
        .batch_execute(&format!(
            "INSERT INTO legacy_record_ids VALUES ('temperatures', 9001, {moved}), ('temperatures', 9002, {other});
             INSERT INTO audit_log (actor_role, action, entity_table, record_id, site_id, subject_id, old_values)
             SELECT 'system:migration', 'migrate', 'form_records', new_id, r.site_id, r.subject_id,
                    jsonb_build_object('entity', 'temperatures', 'id', old_id)
             FROM legacy_record_ids JOIN form_records r ON r.id = new_id ORDER BY old_id;"
        ))
        .unwrap();
    let r = app
        .patch(
            &format!("{path}/{moved}"),
            &inv,
            1,
            &json!({"celsius": 38.6, "reason": "second reading"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);

    let admin = app.token(Role::Admin, &[]).await;
    let row = |sql: &str| app.count(&format!("SELECT id AS n FROM audit_log WHERE {sql}"));
    let pre_create =
        row("entity_table = 'temperatures' AND record_id = 9001 AND action = 'create'");
    let pre_update =
        row("entity_table = 'temperatures' AND record_id = 9001 AND action = 'update'");
    let other_pre = row("entity_table = 'temperatures' AND record_id = 9002");
    let injection_pre = row("entity_table = 'injections'");
    assert!(injection_pre > before);
    let own = |id: i64| -> Vec<i64> {
        #[derive(diesel::QueryableByName)]
        struct Row {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            id: i64,
        }
        let sql = format!(
            "SELECT id FROM audit_log WHERE entity_table = 'form_records' AND record_id = {id} ORDER BY id"
        );
        let rows: Vec<Row> =
            diesel::RunQueryDsl::load(diesel::sql_query(sql), &mut app.conn()).unwrap();
        rows.into_iter().map(|r| r.id).collect()
    };
    let (moved_own, other_own) = (own(moved), own(other));
    assert_eq!(moved_own.len(), 3, "create, migrate, update");

    // one record: its rows under its old table and id and its own, oldest first (its
    // `create` row here is the test's, written before the pre-move rows were)
    let history = app
        .get(
            &format!("/api/v1/audit?form=temperature&record_id={moved}"),
            &admin,
        )
        .await;
    let mut expected = vec![pre_create, pre_update];
    expected.extend(&moved_own);
    expected.sort_unstable();
    assert_eq!(audit_ids(&history), expected, "{}", history.text);
    let first_old = &history.body["items"][1];
    assert_eq!(first_old["entity_table"], json!("temperatures"));
    assert_eq!(first_old["record_id"], json!(9001));
    // a page at a time, as any listing
    let page = app
        .get(
            &format!("/api/v1/audit?form=temperature&record_id={moved}&limit=3"),
            &admin,
        )
        .await;
    assert_eq!(audit_ids(&page), expected[..3]);
    let next = page.body["next_after"].as_i64().unwrap();
    let page = app
        .get(
            &format!("/api/v1/audit?form=temperature&record_id={moved}&after={next}"),
            &admin,
        )
        .await;
    assert_eq!(audit_ids(&page), expected[3..]);

    // the form: both records, no injection's row that has the same old id
    let all = audit_ids(&app.get("/api/v1/audit?form=temperature", &admin).await);
    let mut expected = vec![pre_create, pre_update, other_pre];
    expected.extend(&moved_own);
    expected.extend(&other_own);
    expected.sort_unstable();
    assert_eq!(all, expected);
    assert!(audit_ids(&app.get("/api/v1/audit?form=injection", &admin).await).is_empty());
    // a record of another form is not one of this form
    assert!(audit_ids(
        &app.get(
            &format!("/api/v1/audit?form=injection&record_id={moved}"),
            &admin
        )
        .await
    )
    .is_empty());

    // `table` answers the rows as stored
    assert_eq!(
        audit_ids(&app.get("/api/v1/audit?table=temperatures", &admin).await),
        [pre_create, pre_update, other_pre]
    );
    assert_eq!(
        audit_ids(
            &app.get("/api/v1/audit?table=temperatures&record_id=9001", &admin)
                .await
        ),
        [pre_create, pre_update]
    );

    // a monitor of another site sees none of it; of the site, all of it
    let away = app.token(Role::Monitor, &["FR02"]).await;
    let url = format!("/api/v1/audit?form=temperature&record_id={moved}");
    assert!(audit_ids(&app.get(&url, &away).await).is_empty());
    let monitor = app.token(Role::Monitor, &["FR01"]).await;
    assert_eq!(audit_ids(&app.get(&url, &monitor).await).len(), 5);

    app.get("/api/v1/audit?form=temperatures", &admin)
        .await
        .assert_problem(422, Some("form"));
}
