//! New temperatures share their statements when they arrive together (src/db/batch.rs):
//! one lookup call and one write for many requests. Each request must still get exactly the
//! answer it would have had alone, and leave exactly its own row and audit row.

use std::sync::{Arc, Barrier, Mutex};
use std::time::Duration;

use bigdecimal::BigDecimal;
use casebook::auth::Role;
use casebook::db::async_batch::AsyncBatcher;
use casebook::db::batch::Batcher;
use casebook::db::group_commit::{write_one, NewTemperature};
use chrono::Utc;
use diesel::connection::SimpleConnection;
use diesel::{Connection, PgConnection};
use reqwest::Method;
use serde_json::{json, Value};

use crate::clinical::enrolled;
use crate::helpers::{TestApp, TestDb};

fn reading(celsius: f64) -> Value {
    json!({"measured_at": "2026-10-05T08:00:00Z", "celsius": celsius, "method": "rectal"})
}

/// POSTs a temperature of `celsius` for subject `code` as `token`, on a task of its own, so
/// that many run at once; the task gives the status and the body.
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
            .json(&reading(celsius))
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
    // that has ended (401), all at once, so that the lookups and writes are shared.
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
        let (expected, celsius) = (*expected, *celsius);
        assert_eq!(status, expected, "{body}");
        if status == 201 {
            assert_eq!(
                body["celsius"],
                json!(celsius),
                "the answer is this request's own"
            );
            created.push(body);
        }
    }
    let mut ids: Vec<i64> = created.iter().map(|b| b["id"].as_i64().unwrap()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 24, "distinct ids");
    assert_eq!(app.count("SELECT count(*) AS n FROM temperatures"), 24);
    assert_eq!(
        app.count(
            "SELECT count(*) AS n FROM audit_log WHERE entity_table = 'temperatures' AND action = 'create'"
        ),
        24
    );
    // every answer is exactly what its audit row says was written
    for body in &created {
        let id = body["id"].as_i64().unwrap();
        let n = app.count(&format!(
            "SELECT count(*) AS n FROM audit_log WHERE entity_table = 'temperatures' \
             AND record_id = {id} AND new_values = '{}'::jsonb",
            body.to_string().replace('\'', "''")
        ));
        assert_eq!(n, 1, "audit row of temperature {id} holds the answer");
    }
    app.wait_sealed().await;
}

fn new_temperature(id: i64, site_id: i64, subject_id: i64, user_id: i64) -> NewTemperature {
    let now = Utc::now();
    NewTemperature {
        id,
        site_id,
        subject_id,
        measured_at: now,
        celsius: BigDecimal::from(37),
        method: "rectal".into(),
        fever: false,
        user_id,
        now,
        actor_role: "investigator".into(),
        new_values: json!({"id": id}),
        request_id: format!("request-{id}"),
        client_addr: None,
    }
}

#[actix_web::test]
async fn a_temperature_written_alone_commits_with_its_audit_row_or_not_at_all() {
    let app = TestApp::spawn().await;
    app.site("FR01", "Europe/Paris");
    let inv = app.token(Role::Investigator, &["FR01"]).await;
    enrolled(&app, &inv, "FR01").await;
    let subject = app.count("SELECT id AS n FROM subjects");
    let site = app.count("SELECT site_id AS n FROM subjects");
    let user = app.count("SELECT id AS n FROM users WHERE role = 'investigator'");
    let mut conn = app.conn();
    // the middle entry names a subject that does not exist
    let records = [
        new_temperature(9001, site, subject, user),
        new_temperature(9002, site, subject + 1000, user),
        new_temperature(9003, site, subject, user),
    ];
    let written: Vec<bool> = records
        .iter()
        .map(|r| write_one(&mut conn, r).is_ok())
        .collect();
    assert_eq!(written, [true, false, true]);
    assert_eq!(
        app.count("SELECT count(*) AS n FROM temperatures WHERE id IN (9001, 9002, 9003)"),
        2
    );
    assert_eq!(
        app.count("SELECT count(*) AS n FROM audit_log WHERE record_id IN (9001, 9003) AND entity_table = 'temperatures'"),
        2
    );
    assert_eq!(
        app.count("SELECT count(*) AS n FROM audit_log WHERE record_id = 9002"),
        0
    );
}

#[actix_web::test]
async fn a_subject_whose_row_is_locked_holds_up_only_its_own_entries() {
    // one shared write at a time: a leader waiting on the lock would hold up every entry
    let app = TestApp::spawn_with(&[("CASEBOOK__DATABASE__BATCH_WRITE_LEADERS", "1")]).await;
    app.site("FR01", "Europe/Paris");
    let inv = app.token(Role::Investigator, &["FR01"]).await;
    let held = enrolled(&app, &inv, "FR01").await;
    let free = enrolled(&app, &inv, "FR01").await;
    // a long transaction of someone else's holds the subject's row: the foreign key check
    // of its new temperatures waits for it
    let mut lock = app.conn();
    lock.batch_execute(&format!(
        "BEGIN; SELECT 1 FROM subjects WHERE subject_code = '{held}' FOR UPDATE"
    ))
    .unwrap();
    let waiting = send_reading(&app, &inv, &held, 38.0);
    actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    let others: Vec<_> = (0..12)
        .map(|i| send_reading(&app, &inv, &free, 36.0 + f64::from(i) / 10.0))
        .collect();
    for other in others {
        let status = actix_web::rt::time::timeout(Duration::from_secs(5), other)
            .await
            .expect("an entry of another subject waited for the locked row")
            .unwrap()
            .0;
        assert_eq!(status, 201);
    }
    assert!(
        !waiting.is_finished(),
        "the locked subject's entry still waits"
    );
    lock.batch_execute("COMMIT").unwrap();
    assert_eq!(waiting.await.unwrap().0, 201);
    assert_eq!(app.count("SELECT count(*) AS n FROM temperatures"), 13);
}

/// Batches seen by the test batch functions below: their sizes.
static SEEN: Mutex<Vec<usize>> = Mutex::new(Vec::new());

/// Records the batch's size in `seen`, then answers ten times each item; the batch with
/// item 0 is slow, so that the other callers queue behind it.
fn tenfold_slowly(seen: &Mutex<Vec<usize>>, items: &[u64]) -> Vec<u64> {
    seen.lock().unwrap().push(items.len());
    std::thread::sleep(Duration::from_millis(if items.contains(&0) {
        300
    } else {
        5
    }));
    items.iter().map(|i| i * 10).collect()
}

fn slow_tenfold(_: &mut PgConnection, items: &[u64]) -> Vec<u64> {
    tenfold_slowly(&SEEN, items)
}

/// The batches `seen` served 8 callers, each once, the first alone; returns how many.
fn assert_served_eight(seen: &Mutex<Vec<usize>>) -> usize {
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen.iter().sum::<usize>(),
        8,
        "every item in exactly one batch"
    );
    assert_eq!(
        seen.first(),
        Some(&1),
        "the first caller did not wait: {seen:?}"
    );
    seen.len()
}

fn connections(n: usize) -> (TestDb, Vec<PgConnection>) {
    let db = TestDb::new();
    let conns = (0..n)
        .map(|_| PgConnection::establish(&db.url).unwrap())
        .collect();
    (db, conns)
}

#[test]
fn callers_arriving_during_a_batch_share_the_next_and_get_their_own_answers() {
    let (_db, conns) = connections(8);
    let batcher: Batcher<u64, u64> = Batcher::new(slow_tenfold, || u64::MAX, 64, 1);
    let start = Arc::new(Barrier::new(8));
    let threads: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(i, mut conn)| {
            let (batcher, start) = (batcher.clone(), start.clone());
            std::thread::spawn(move || {
                let item = i as u64;
                start.wait();
                if item > 0 {
                    // item 0 leads the first, slow batch; the rest arrive while it runs
                    std::thread::sleep(Duration::from_millis(50));
                }
                (item, batcher.run(&mut conn, item))
            })
        })
        .collect();
    for t in threads {
        let (item, answer) = t.join().unwrap();
        assert_eq!(answer, item * 10);
    }
    let batches = assert_served_eight(&SEEN);
    assert!(
        batches <= 3,
        "the seven callers queued during the first batch were served together: {batches} batches"
    );
}

fn panics_on_seven(_: &mut PgConnection, items: &[u64]) -> Vec<u64> {
    assert!(!items.contains(&7), "batch function failed");
    items.to_vec()
}

#[test]
fn a_panicking_batch_answers_its_callers_and_frees_the_way() {
    let (_db, mut conns) = connections(1);
    let conn = &mut conns[0];
    let batcher: Batcher<u64, u64> = Batcher::new(panics_on_seven, || u64::MAX, 64, 1);
    assert_eq!(batcher.run(conn, 7), u64::MAX);
    assert_eq!(batcher.run(conn, 3), 3, "the next call is led and answered");
}

fn sizes_alone(_: &mut PgConnection, items: &[u64]) -> Vec<u64> {
    items.iter().map(|_| items.len() as u64).collect()
}

#[test]
fn inside_a_transaction_an_item_runs_alone() {
    let (_db, mut conns) = connections(1);
    let batcher: Batcher<u64, u64> = Batcher::new(sizes_alone, || u64::MAX, 64, 1);
    let size = conns[0]
        .transaction(|conn| Ok::<_, diesel::result::Error>(batcher.run(conn, 1)))
        .unwrap();
    assert_eq!(size, 1);
}

// The async batcher (src/db/async_batch.rs): requests wait on their workers, a leader on
// the blocking pool runs the batches.

static ASYNC_SEEN: Mutex<Vec<usize>> = Mutex::new(Vec::new());

fn slow_tenfold_async(_: &mut PgConnection, items: &[u64]) -> Vec<u64> {
    tenfold_slowly(&ASYNC_SEEN, items)
}

fn failed_as(e: casebook::error::AppError) -> u64 {
    match e {
        casebook::error::AppError::Unavailable(_) => u64::MAX - 1,
        _ => u64::MAX,
    }
}

fn pool(url: &str, timeout: Duration) -> casebook::db::Pool {
    diesel::r2d2::Pool::builder()
        .max_size(2)
        .min_idle(Some(0))
        .connection_timeout(timeout)
        .build_unchecked(diesel::r2d2::ConnectionManager::new(url))
}

/// A pool with a connection made beforehand, so that the first leader does not wait to
/// connect (and gather the later callers into the first batch meanwhile).
fn connected_pool(db: &TestDb) -> casebook::db::Pool {
    let pool = pool(&db.url, Duration::from_secs(5));
    drop(pool.get().unwrap());
    pool
}

/// Runs `item` through `batcher` on a task of its own; the task gives the item and its answer.
fn spawn_run(
    batcher: &AsyncBatcher<u64, u64>,
    pool: &casebook::db::Pool,
    item: u64,
) -> actix_web::rt::task::JoinHandle<(u64, u64)> {
    let (batcher, pool) = (batcher.clone(), pool.clone());
    actix_web::rt::spawn(async move { (item, batcher.run(&pool, item).await) })
}

#[actix_web::test]
async fn async_waiters_share_the_next_batch_and_get_their_own_answers() {
    let db = TestDb::new();
    let pool = connected_pool(&db);
    let batcher: AsyncBatcher<u64, u64> =
        AsyncBatcher::new(slow_tenfold_async, failed_as, 64, 1, Duration::ZERO);
    // item 0 leads the first, slow batch; the rest arrive while it runs
    let mut tasks = vec![spawn_run(&batcher, &pool, 0)];
    actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    tasks.extend((1..8).map(|i| spawn_run(&batcher, &pool, i)));
    for t in tasks {
        let (item, answer) = t.await.unwrap();
        assert_eq!(answer, item * 10);
    }
    let batches = assert_served_eight(&ASYNC_SEEN);
    assert_eq!(
        batches, 2,
        "the seven callers queued meanwhile went together"
    );
}

#[actix_web::test]
async fn an_async_batch_that_panics_or_has_no_connection_answers_every_caller() {
    let db = TestDb::new();
    let good = pool(&db.url, Duration::from_secs(5));
    let batcher: AsyncBatcher<u64, u64> =
        AsyncBatcher::new(panics_on_seven, failed_as, 64, 1, Duration::ZERO);
    assert_eq!(
        batcher.run(&good, 7).await,
        u64::MAX,
        "the panic is an answer"
    );
    assert_eq!(
        batcher.run(&good, 3).await,
        3,
        "the next call is led and answered"
    );
    // no database behind the pool: every caller hears "unavailable" after the pool timeout
    let nowhere = pool(
        "postgres://postgres@127.0.0.1:1/nowhere",
        Duration::from_millis(200),
    );
    let batcher: AsyncBatcher<u64, u64> =
        AsyncBatcher::new(panics_on_seven, failed_as, 64, 1, Duration::ZERO);
    let answers = futures_util::future::join_all((0..3).map(|i| batcher.run(&nowhere, i))).await;
    assert_eq!(answers, [u64::MAX - 1; 3]);
}

static GATHERED: Mutex<Vec<usize>> = Mutex::new(Vec::new());

fn slow_tenfold_gathered(_: &mut PgConnection, items: &[u64]) -> Vec<u64> {
    tenfold_slowly(&GATHERED, items)
}

#[actix_web::test]
async fn a_leader_waits_within_its_window_for_the_callers_coming_back() {
    let db = TestDb::new();
    let pool = connected_pool(&db);
    let window = Duration::from_secs(1);
    let batcher: AsyncBatcher<u64, u64> =
        AsyncBatcher::new(slow_tenfold_gathered, failed_as, 64, 1, window);
    // item 0 is alone and runs at once; 1-7 queue while its slow batch runs, so the next
    // batch is expected to hold 8 (the one answered and the seven waiting): it waits for
    // item 8 instead of running 1-7 and then 8 alone
    let mut tasks = vec![spawn_run(&batcher, &pool, 0)];
    actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    tasks.extend((1..8).map(|i| spawn_run(&batcher, &pool, i)));
    actix_web::rt::time::sleep(Duration::from_millis(400)).await;
    tasks.push(spawn_run(&batcher, &pool, 8));
    for t in tasks {
        let (item, answer) = t.await.unwrap();
        assert_eq!(answer, item * 10);
    }
    // nobody else comes: the lone caller waits out the window, then the expected size is 1
    // and the next lone caller does not wait at all
    assert_eq!(batcher.run(&pool, 9).await, 90);
    assert_eq!(batcher.run(&pool, 10).await, 100);
    let seen = GATHERED.lock().unwrap().clone();
    assert_eq!(seen, [1, 8, 1, 1], "batch sizes");
}
