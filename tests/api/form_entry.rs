//! The one-statement entry of engine forms (src/services/form_entry.rs, migration 000021):
//! a new record whose form's rules read no other record goes to one batched statement, and
//! whatever that statement refuses is answered by the step-by-step path. Each case below is
//! sent twice, without an Idempotency-Key (the short path first) and with one (the
//! step-by-step path always): the answers must be the same, and a refusal writes nothing.
//! The records and audit rows the two paths leave must be the same too.

use casebook::auth::Role;
use reqwest::Method;
use serde_json::{json, Value};

use crate::clinical::{enrolled, new_subject};
use crate::helpers::{Resp, TestApp, PASSWORD};

struct Fixture {
    app: TestApp,
    inv: String,
    /// FRA (Paris), consented on 2026-10-01, born 2023-04
    code: String,
}

async fn spawn() -> Fixture {
    let file = format!("{}/tests/studies/entry.toml", env!("CARGO_MANIFEST_DIR"));
    let app = TestApp::spawn_with(&[("CASEBOOK_STUDY", &file)]).await;
    app.site("FRA", "Europe/Paris");
    app.site("FRB", "Europe/Paris");
    let inv = app.token(Role::Investigator, &["FRA"]).await;
    let code = enrolled(&app, &inv, "FRA").await;
    Fixture { app, inv, code }
}

/// A POST of a record; `key` sends an Idempotency-Key, which takes the step-by-step path.
async fn post(
    app: &TestApp,
    token: &str,
    code: &str,
    form: &str,
    values: &Value,
    key: bool,
) -> Resp {
    let path = format!("/api/v1/subjects/{code}/forms/{form}");
    let k = uuid::Uuid::new_v4().to_string();
    let headers: Vec<(&str, &str)> = if key {
        vec![("idempotency-key", k.as_str())]
    } else {
        vec![]
    };
    app.request(
        Method::POST,
        &path,
        Some(token),
        Some(&json!({"values": values})),
        &headers,
    )
    .await
}

/// Records, audit rows of records, and signatures invalidated.
fn written(app: &TestApp) -> (i64, i64, i64) {
    (
        app.count("SELECT count(*) AS n FROM form_records"),
        app.count("SELECT count(*) AS n FROM audit_log WHERE entity_table = 'form_records'"),
        app.count("SELECT count(*) AS n FROM signatures WHERE invalidated_at IS NOT NULL"),
    )
}

/// `values` is refused with `status` (naming `field`) on both paths alike, writing nothing.
async fn refused_alike(
    app: &TestApp,
    token: &str,
    code: &str,
    form: &str,
    values: Value,
    status: u16,
    field: Option<&str>,
) {
    let before = written(app);
    let short = post(app, token, code, form, &values, false).await;
    let long = post(app, token, code, form, &values, true).await;
    short.assert_problem(status, field);
    assert_eq!(short.status, long.status, "{values}: {}", long.text);
    assert_eq!(short.body, long.body, "{values}");
    assert_eq!(written(app), before, "{values}: nothing written");
}

fn diary(day: &str) -> Value {
    json!({"noted_on": day, "pain": 3})
}

#[actix_web::test]
async fn every_refusal_of_the_statement_is_the_answer_of_the_step_by_step_path() {
    let Fixture { app, inv, code } = spawn().await;
    let ok = diary("2026-10-05");

    // the caller: a session ended, a token older than the user's last change, a role that
    // may not enter data, a subject at another site
    let email = app.user(Role::Investigator, &["FRA"]);
    let ended = app.login(&email).await;
    let r = app
        .request(Method::POST, "/api/v1/auth/logout", Some(&ended), None, &[])
        .await;
    assert!(r.status.is_success(), "{}", r.text);
    refused_alike(&app, &ended, &code, "diary", ok.clone(), 401, None).await;
    let email = app.user(Role::Investigator, &["FRA"]);
    let old = app.login(&email).await;
    app.count(&format!(
        "WITH u AS (UPDATE users SET token_version = token_version + 1 WHERE email = '{email}' RETURNING 1) SELECT count(*) AS n FROM u"
    ));
    refused_alike(&app, &old, &code, "diary", ok.clone(), 401, None).await;
    let monitor = app.token(Role::Monitor, &["FRA"]).await;
    refused_alike(&app, &monitor, &code, "diary", ok.clone(), 403, None).await;
    let elsewhere = app.token(Role::Investigator, &["FRB"]).await;
    refused_alike(&app, &elsewhere, &code, "diary", ok.clone(), 404, None).await;
    refused_alike(&app, &inv, "FRA-999", "diary", ok.clone(), 404, None).await;

    // the subject: locked, its site inactive
    app.count(&format!(
        "WITH l AS (INSERT INTO locks (scope, subject_id, reason, locked_by) \
         SELECT 'subject', s.id, 'data review', s.created_by FROM subjects s WHERE s.subject_code = '{code}' RETURNING 1) \
         SELECT count(*) AS n FROM l"
    ));
    refused_alike(&app, &inv, &code, "diary", ok.clone(), 423, None).await;
    app.count("WITH l AS (UPDATE locks SET unlocked_at = now(), unlocked_by = locked_by, unlock_reason = 'done' RETURNING 1) SELECT count(*) AS n FROM l");
    app.count("WITH s AS (UPDATE sites SET active = false WHERE code = 'FRA' RETURNING 1) SELECT count(*) AS n FROM s");
    refused_alike(&app, &inv, &code, "diary", ok.clone(), 423, None).await;
    app.count("WITH s AS (UPDATE sites SET active = true WHERE code = 'FRA' RETURNING 1) SELECT count(*) AS n FROM s");

    // the dates: before the consent (in the site's time for a datetime), before the birth
    // month (a partial date: every day it can mean), after the site's today, no consent
    refused_alike(
        &app,
        &inv,
        &code,
        "diary",
        diary("2026-09-30"),
        422,
        Some("values.noted_on"),
    )
    .await;
    refused_alike(
        &app,
        &inv,
        &code,
        "vitals",
        json!({"measured_at": "2026-09-30T21:30:00Z", "temperature_c": "37.0"}),
        422,
        Some("values.measured_at"),
    )
    .await;
    refused_alike(
        &app,
        &inv,
        &code,
        "note",
        json!({"noted_in": "2026-09", "text": "x"}),
        422,
        Some("values.noted_in"),
    )
    .await;
    refused_alike(
        &app,
        &inv,
        &code,
        "diary",
        json!({"noted_on": "2026-10-05", "pain": 3, "started": "2023-03"}),
        422,
        Some("values.started"),
    )
    .await;
    refused_alike(
        &app,
        &inv,
        &code,
        "diary",
        diary("2099-01-01"),
        422,
        Some("values.noted_on"),
    )
    .await;
    refused_alike(
        &app,
        &inv,
        &code,
        "vitals",
        json!({"measured_at": "2099-01-01T08:00:00Z"}),
        422,
        Some("values.measured_at"),
    )
    .await;
    // 22:00 on 31 March in Paris: before the birth month
    refused_alike(
        &app,
        &inv,
        &code,
        "note",
        json!({"noted_in": "2026-10", "text": "x", "seen_at": "2023-03-31T20:00:00Z"}),
        422,
        Some("values.seen_at"),
    )
    .await;
    let r = app
        .post("/api/v1/subjects", &inv, &new_subject("FRA"))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let unconsented = r.body["subject_code"].as_str().unwrap().to_owned();
    refused_alike(
        &app,
        &inv,
        &unconsented,
        "diary",
        ok.clone(),
        422,
        Some("values.noted_on"),
    )
    .await;

    // what the statement accepts at the edges: 23:30 UTC on 30 September is 1 October in
    // Paris; a partial date any of whose days is inside
    let r = post(
        &app,
        &inv,
        &code,
        "vitals",
        &json!({"measured_at": "2026-09-30T23:30:00Z"}),
        false,
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let r = post(
        &app,
        &inv,
        &code,
        "diary",
        &json!({"noted_on": "2026-10-04", "pain": 3, "started": "2023-04"}),
        false,
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let r = post(
        &app,
        &inv,
        &code,
        "note",
        &json!({"noted_in": "2026-10", "text": "x", "seen_at": "2023-03-31T23:30:00Z"}),
        false,
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);

    // a second record of a day: a date, and a datetime whose day is the site's
    let r = post(&app, &inv, &code, "diary", &ok, false).await;
    assert_eq!(r.status, 201, "{}", r.text);
    refused_alike(&app, &inv, &code, "diary", ok.clone(), 409, None).await;
    let r = post(
        &app,
        &inv,
        &code,
        "vitals",
        &json!({"measured_at": "2026-10-06T22:30:00Z"}),
        false,
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    refused_alike(
        &app,
        &inv,
        &code,
        "vitals",
        json!({"measured_at": "2026-10-07T08:00:00Z"}),
        409,
        None,
    )
    .await;
    let r = post(
        &app,
        &inv,
        &code,
        "vitals",
        &json!({"measured_at": "2026-10-06T08:00:00Z"}),
        false,
    )
    .await;
    assert_eq!(r.status, 201, "another day in Paris: {}", r.text);
}

/// A row as JSON without what differs between two records by construction.
fn row(app: &TestApp, sql: &str) -> Value {
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Jsonb)]
        j: Value,
    }
    use diesel::RunQueryDsl;
    let rows: Vec<Row> = diesel::sql_query(sql).load(&mut app.conn()).unwrap();
    Value::Array(rows.into_iter().map(|r| r.j).collect())
}

fn record_row(app: &TestApp, id: i64) -> Value {
    row(
        app,
        &format!(
            "SELECT to_jsonb(r) - 'id' - 'subject_id' - 'created_at' - 'updated_at' AS j \
             FROM form_records r WHERE id = {id}"
        ),
    )
}

/// The audit rows of a subject after audit id `after`, without ids, times and the request.
fn audit_rows(app: &TestApp, code: &str, after: i64) -> Value {
    row(
        app,
        &format!(
            "SELECT to_jsonb(a) - 'id' - 'occurred_at' - 'record_id' - 'subject_id' - 'request_id' \
             || jsonb_build_object('new_values', a.new_values - 'id' - 'subject_code') AS j \
             FROM audit_log a JOIN subjects s ON s.id = a.subject_id \
             WHERE s.subject_code = '{code}' AND a.id > {after} ORDER BY a.action, a.id"
        ),
    )
}

/// Whether record `id` was written by one statement from the request's clock: its
/// created_at is the request's, before its audit row's; a transaction stamps both with its
/// start.
fn written_at_once(app: &TestApp, id: i64) -> bool {
    app.count(&format!(
        "SELECT count(*) AS n FROM form_records r JOIN audit_log a ON a.entity_table = 'form_records' \
         AND a.record_id = r.id AND a.action = 'create' WHERE r.id = {id} AND r.created_at < a.occurred_at"
    )) == 1
}

async fn sign(app: &TestApp, token: &str, code: &str) {
    let r = app
        .post(
            &format!("/api/v1/subjects/{code}/signatures"),
            token,
            &json!({"password": PASSWORD, "meaning": "approval"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
}

#[actix_web::test]
async fn a_record_entered_at_once_leaves_the_rows_and_audit_rows_of_the_step_by_step_path() {
    let Fixture { app, inv, code } = spawn().await;
    let other = enrolled(&app, &inv, "FRA").await;
    // both casebooks signed: the new record invalidates the signature
    sign(&app, &inv, &code).await;
    sign(&app, &inv, &other).await;
    let last = app.count("SELECT max(id) AS n FROM audit_log");
    let values = json!({"noted_on": "2026-10-05", "pain": 4, "started": "2026-09"});

    let short = post(&app, &inv, &code, "diary", &values, false).await;
    let long = post(&app, &inv, &other, "diary", &values, true).await;
    assert_eq!(short.status, 201, "{}", short.text);
    assert_eq!(long.status, 201, "{}", long.text);
    let (a, b) = (
        short.body["id"].as_i64().unwrap(),
        long.body["id"].as_i64().unwrap(),
    );
    assert!(written_at_once(&app, a), "the short path wrote record {a}");
    assert!(
        !written_at_once(&app, b),
        "the step-by-step path wrote record {b}"
    );

    // the answers: status, ETag, body but the id, subject and times
    assert_eq!(short.headers.get("etag"), long.headers.get("etag"));
    assert_eq!(short.content_type(), long.content_type());
    let strip = |r: &Resp| {
        let mut v = r.body.clone();
        for k in ["id", "subject_code", "created_at", "updated_at"] {
            v.as_object_mut().unwrap().remove(k);
        }
        v
    };
    assert_eq!(strip(&short), strip(&long));
    assert_eq!(short.body["values"]["started"], "2026-09");
    assert_eq!(short.body["created_at"], short.body["updated_at"]);
    // what the answer says is what is stored
    let got = app
        .get(&format!("/api/v1/subjects/{code}/forms/diary/{a}"), &inv)
        .await;
    assert_eq!(got.body, short.body);

    // the rows: the record, and its audit rows (the create, the signature invalidated)
    assert_eq!(record_row(&app, a), record_row(&app, b));
    let (sa, sb) = (
        audit_rows(&app, &code, last),
        audit_rows(&app, &other, last),
    );
    assert_eq!(sa.as_array().unwrap().len(), 2, "{sa}");
    assert_eq!(sa, sb);

    // a soft finding opens a query: the step-by-step path writes it, on both
    let flagged = json!({"noted_on": "2026-10-06", "pain": 9});
    let short = post(&app, &inv, &code, "diary", &flagged, false).await;
    let long = post(&app, &inv, &other, "diary", &flagged, true).await;
    assert_eq!(short.status, 201, "{}", short.text);
    assert_eq!(strip(&short), strip(&long));
    assert_eq!(short.body["flags"][0]["item"], "pain", "{}", short.text);
    assert_eq!(
        app.count(
            "SELECT count(*) AS n FROM queries q JOIN form_records r ON r.id = q.record_id \
             WHERE q.record_type = 'form_records' AND r.values->>'pain' = '9'"
        ),
        2
    );
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) AS n FROM signatures g JOIN subjects s ON s.id = g.subject_id \
             WHERE s.subject_code IN ('{code}', '{other}') \
             AND g.invalidated_reason = 'form_records changed after signing'"
        )),
        2
    );
}

#[actix_web::test]
async fn a_burst_of_records_is_written_whole_each_with_its_answer() {
    let Fixture { app, inv, code } = spawn().await;
    let (app, inv, code) = (&app, inv.as_str(), code.as_str());
    let posts = (0..24).map(|i| async move {
        let values = json!({"noted_in": "2026-10-05", "text": format!("note {i}")});
        post(app, inv, code, "note", &values, false).await
    });
    let answers = futures_util::future::join_all(posts).await;
    let mut ids: Vec<i64> = answers
        .iter()
        .map(|r| {
            assert_eq!(r.status, 201, "{}", r.text);
            r.body["id"].as_i64().unwrap()
        })
        .collect();
    for (i, r) in answers.iter().enumerate() {
        assert_eq!(
            r.body["values"]["text"],
            format!("note {i}"),
            "each its own answer"
        );
    }
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 24);
    assert_eq!(
        app.count("SELECT count(*) AS n FROM form_records WHERE form_id = 'note'"),
        24
    );
    assert_eq!(
        app.count(
            "SELECT count(*) AS n FROM audit_log a JOIN form_records r ON r.id = a.record_id \
             WHERE a.entity_table = 'form_records' AND a.action = 'create' \
             AND a.new_values->'values' = r.values AND (a.new_values->>'id')::bigint = r.id"
        ),
        24
    );

    // records of the same day sent together: one written, the others refused as the
    // step-by-step path refuses a second one
    let posts = (0..6)
        .map(|_| async move { post(app, inv, code, "diary", &diary("2026-10-05"), false).await });
    let answers = futures_util::future::join_all(posts).await;
    let statuses: Vec<u16> = answers.iter().map(|r| r.status.as_u16()).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 409).count(),
        5,
        "{statuses:?}"
    );
    assert_eq!(
        app.count("SELECT count(*) AS n FROM form_records WHERE form_id = 'diary'"),
        1
    );
    assert_eq!(
        app.count("SELECT count(*) AS n FROM audit_log WHERE entity_table = 'form_records' AND action = 'create'"),
        25
    );
}
