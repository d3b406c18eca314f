//! Fault tests: the real `casebook` binary as child processes against a private PostgreSQL
//! cluster that these tests initdb, start, stop and restart themselves (under the target
//! directory, on a free port of 127.0.0.1; the machine's own server is never touched).
//!
//! Each test asserts what a client sees (statuses, Retry-After, connections refused, exit
//! codes), then the invariants left in the database: every acknowledged write is there with
//! its audit row, no data row lacks its audit row, the audit chain verifies.
//!
//! The tests take turns (one lock): they stop the shared cluster and load both cores.
//! Without PostgreSQL's server tools they fail, saying so, unless CASEBOOK_SKIP_FAULT_TESTS=1.
//! CASEBOOK_FAULT_PG_BIN names the directory of initdb and pg_ctl (default: the newest
//! /usr/lib/postgresql/*/bin, else PATH). The cluster lives in target/tmp/fault-pg-<pid>/ (as root:
//! /tmp/casebook-fault-tests/fault-pg-<pid>/, which the `postgres` user can always reach)
//! and is stopped and removed when the test process exits; CASEBOOK_KEEP_FAULT_PG=1 keeps
//! the directory, with every server's log in its log/ (one file per database and server).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "faults/api.rs"]
mod api;
#[path = "faults/load.rs"]
mod load;
#[path = "faults/net.rs"]
mod net;
#[path = "faults/pg.rs"]
mod pg;
#[path = "faults/server.rs"]
mod server;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::PgConnection;

use load::{Ack, Attempt, Config, Kind, Load, Writer};
use pg::{count, numbers, strings, Cluster};
use server::Server;

/// One test at a time: they stop the shared cluster and saturate the machine.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Fixture {
    _turn: tokio::sync::MutexGuard<'static, ()>,
    pg: &'static Cluster,
    db: String,
    url: String,
    started: Instant,
}

/// Takes this test's turn, makes sure the cluster runs, creates, migrates and seeds a
/// database `fault_<name>` with the real binary. None when fault tests are skipped.
async fn fixture(name: &str) -> Option<Fixture> {
    let turn = TURN.lock().await;
    let pg = pg::cluster()?;
    let started = Instant::now();
    pg.ensure_running();
    let db = format!("fault_{name}");
    pg.create_db(&db);
    let url = pg.url(&db);
    server::migrate_and_seed(&url);
    eprintln!(
        "[{name}] database {db} migrated and seeded in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Some(Fixture {
        _turn: turn,
        pg,
        db,
        url,
        started,
    })
}

impl Fixture {
    fn log(&self, label: &str) -> PathBuf {
        self.pg.log_dir.join(format!("{}-{label}.log", self.db))
    }

    fn conn(&self) -> PgConnection {
        self.pg.connect(&self.db)
    }

    async fn server(&self, label: &str, extra: &[(&str, &str)]) -> Server {
        Server::start(&self.url, pg::free_port(), &self.log(label), extra).await
    }

    fn say(&self, what: &str) {
        eprintln!(
            "[{} +{:.1}s] {what}",
            self.db,
            self.started.elapsed().as_secs_f64()
        );
    }

    /// `n` writers: investigators of FR01..FR04 in turn, one consented subject each.
    async fn writers(&self, base: &str, n: usize) -> Vec<Writer> {
        let client = api::client();
        let mut tokens = Vec::new();
        for site in ["FR01", "FR02", "FR03", "FR04"] {
            tokens.push((
                site,
                api::login(&client, base, &api::investigator(site)).await,
            ));
        }
        let mut writers = Vec::new();
        for i in 0..n {
            let (site, token) = &tokens[i % tokens.len()];
            let subject = api::enrolled(&client, base, token, site).await;
            writers.push(Writer {
                token: token.clone(),
                subject,
            });
        }
        writers
    }

    /// Waits until the sealers have chained every committed audit row.
    async fn wait_sealed(&self, within: Duration) {
        let mut conn = self.conn();
        let deadline = Instant::now() + within;
        loop {
            let n = count(&mut conn, "SELECT count(*) AS n FROM audit_unsealed");
            if n == 0 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{n} audit rows still unsealed after {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Every acknowledged write is in the database with its audit row; no data row lacks
    /// its audit row, none has two; with `exact`, nothing was written that was not
    /// acknowledged (every write was retried with its key until acknowledged).
    fn check_writes(&self, acks: &[Ack], exact: bool) {
        let mut conn = self.conn();
        for kind in [Kind::Temperature, Kind::AdverseEvent] {
            let table = kind.table();
            let rows: BTreeSet<i64> =
                numbers(&mut conn, &format!("SELECT id AS n FROM {}", kind.rows()))
                    .into_iter()
                    .collect();
            let acked: Vec<i64> = acks
                .iter()
                .filter(|a| a.kind == kind)
                .map(|a| a.id)
                .collect();
            let acked_set: BTreeSet<i64> = acked.iter().copied().collect();
            assert_eq!(
                acked.len(),
                acked_set.len(),
                "{table}: one id acknowledged for two different writes"
            );
            let lost: Vec<&i64> = acked_set.difference(&rows).collect();
            assert!(
                lost.is_empty(),
                "{table}: {} acknowledged writes are NOT in the database (lost): {lost:?}",
                lost.len()
            );
            if exact {
                let extra: Vec<&i64> = rows.difference(&acked_set).collect();
                assert!(
                    extra.is_empty(),
                    "{table}: {} rows were written but never acknowledged, although every \
                     write was retried with its Idempotency-Key until acknowledged: {extra:?}",
                    extra.len()
                );
            }
            self.say(&format!(
                "{table}: {} acknowledged, {} rows",
                acked_set.len(),
                rows.len()
            ));
        }
        // the answer stored with each Idempotency-Key is the one the client got
        let stored: std::collections::BTreeMap<String, i64> = strings(
            &mut conn,
            "SELECT key || ' ' || (body->>'id') AS s FROM idempotency_keys WHERE body ? 'id'",
        )
        .into_iter()
        .filter_map(|s| {
            let (k, id) = s.rsplit_once(' ')?;
            Some((k.to_owned(), id.parse().ok()?))
        })
        .collect();
        for a in acks.iter().filter(|a| !a.key.is_empty()) {
            assert_eq!(
                stored.get(&a.key),
                Some(&a.id),
                "Idempotency-Key {}: stored answer differs from the acknowledged one",
                a.key
            );
        }
        // temperatures and adverse events are form records
        for table in ["subjects", "consents", "form_records"] {
            let lacking = numbers(
                &mut conn,
                &format!(
                    "SELECT t.id AS n FROM {table} t WHERE NOT EXISTS (SELECT 1 FROM audit_log a \
                     WHERE a.entity_table = '{table}' AND a.record_id = t.id AND a.action = 'create')"
                ),
            );
            assert!(
                lacking.is_empty(),
                "{table}: rows without their audit row: {lacking:?}"
            );
            let twice = numbers(
                &mut conn,
                &format!(
                    "SELECT record_id AS n FROM audit_log WHERE entity_table = '{table}' \
                     AND action = 'create' GROUP BY record_id HAVING count(*) > 1"
                ),
            );
            assert!(
                twice.is_empty(),
                "{table}: records audited as created twice: {twice:?}"
            );
        }
    }

    /// Waits for the sealers, then `casebook verify-audit` must exit 0.
    async fn check_audit_chain(&self) {
        self.wait_sealed(Duration::from_secs(20)).await;
        let report = server::verify_audit(&self.url);
        self.say(&format!("verify-audit: {report}"));
    }
}

/// No status outside `allowed`; every 503 is problem+json with a Retry-After.
fn assert_statuses(attempts: &[Attempt], allowed: &[u16]) {
    let bad: Vec<&Attempt> = attempts
        .iter()
        .filter(|a| a.status.is_some_and(|s| !allowed.contains(&s)))
        .collect();
    assert!(
        bad.is_empty(),
        "{} responses with an unexpected status (allowed {allowed:?}); first ones: {:#?}",
        bad.len(),
        &bad[..bad.len().min(5)]
    );
    let no_retry: Vec<&Attempt> = attempts
        .iter()
        .filter(|a| {
            a.status == Some(503)
                && (a.retry_after.is_none() || a.content_type != "application/problem+json")
        })
        .collect();
    assert!(
        no_retry.is_empty(),
        "503 without Retry-After or not problem+json: {:#?}",
        &no_retry[..no_retry.len().min(5)]
    );
}

/// One attempt, its times relative to `t0`, for failure messages.
fn describe(a: &Attempt, t0: Instant) -> String {
    let ms = |t: Instant| {
        if t >= t0 {
            format!("+{}", (t - t0).as_millis())
        } else {
            format!("-{}", (t0 - t).as_millis())
        }
    };
    format!(
        "client {} {:?} key {} to server {}: sent {} ms, ended {} ms: {}",
        a.client,
        a.kind,
        a.key,
        a.base,
        ms(a.started),
        ms(a.ended),
        match (a.status, &a.error) {
            (Some(s), _) => format!("{s} {}", a.text),
            (None, Some(e)) => e.clone(),
            (None, None) => "?".into(),
        }
    )
}

fn transport_errors(attempts: &[Attempt]) -> Vec<&Attempt> {
    attempts.iter().filter(|a| a.status.is_none()).collect()
}

fn assert_no_internal_errors(server: &Server) {
    let lines: Vec<String> = server
        .error_lines()
        .into_iter()
        .filter(|l| l.contains("internal error"))
        .collect();
    assert!(
        lines.is_empty(),
        "the server logged internal errors:\n{}",
        lines.join("\n")
    );
}

// ---------------------------------------------------------------------------------------

/// 16 clients write while PostgreSQL is stopped (fast) for 5 s and started again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn database_restart_under_load() {
    let Some(fx) = fixture("db_restart").await else {
        return;
    };
    let mut server = fx.server("serve", &[]).await;
    let writers = fx.writers(&server.base, 16).await;
    let load = Load::start(&writers, &Config::retrying(vec![server.base.clone()]));
    tokio::time::sleep(Duration::from_secs(2)).await;

    fx.say("stopping PostgreSQL (fast)");
    let pg = fx.pg;
    tokio::task::spawn_blocking(move || pg.stop_fast())
        .await
        .unwrap();
    let down = Instant::now();
    // what an orchestrator sees meanwhile: alive, not ready
    tokio::time::sleep(Duration::from_millis(500)).await;
    let probe = api::client();
    let live = api::send(
        &probe,
        reqwest::Method::GET,
        &server.url("/health/live"),
        None,
        None,
        None,
    )
    .await
    .expect("/health/live while the database is down");
    assert_eq!(live.status, 200, "{}", live.text);
    let t = Instant::now();
    let ready = api::send(
        &probe,
        reqwest::Method::GET,
        &server.url("/health/ready"),
        None,
        None,
        None,
    )
    .await
    .expect("/health/ready while the database is down");
    fx.say(&format!(
        "database down: /health/live {}, /health/ready {} in {} ms (Retry-After {:?})",
        live.status,
        ready.status,
        t.elapsed().as_millis(),
        ready.retry_after
    ));
    assert_eq!(ready.status, 503, "{}", ready.text);
    assert!(ready.retry_after.is_some());
    tokio::time::sleep(Duration::from_secs(5).saturating_sub(down.elapsed())).await;
    let restarting = Instant::now();
    tokio::task::spawn_blocking(move || pg.start())
        .await
        .unwrap();
    let up = Instant::now();
    fx.say(&format!(
        "PostgreSQL back after {:.1} s down",
        (up - down).as_secs_f64()
    ));
    let recovered = load
        .first_success_since(up, Duration::from_secs(20))
        .await
        .expect("no write succeeded within 20 s of PostgreSQL coming back");
    fx.say(&format!(
        "first acknowledged write {:.2} s after PostgreSQL was back",
        (recovered - up).as_secs_f64()
    ));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let report = load.stop().await;

    assert!(
        server.try_wait().is_none(),
        "the server exited while the database was away:\n{}",
        server.log_tail(30)
    );
    fx.say(&format!("attempts: {}", load::histogram(&report.attempts)));
    let outage: Vec<Attempt> = report
        .attempts
        .iter()
        .filter(|a| a.ended >= down && a.ended <= restarting)
        .cloned()
        .collect();
    fx.say(&format!(
        "answers while the database was down: {}",
        load::histogram(&outage)
    ));
    assert!(
        outage.iter().any(|a| a.status == Some(503)),
        "no 503 while the database was down"
    );
    // Pooled connections died with the server and were discarded during the outage (each
    // failing one request with 503), so requests sent once it is back should succeed.
    let after = report
        .attempts
        .iter()
        .filter(|a| a.started >= up && a.status == Some(503))
        .count();
    fx.say(&format!(
        "503s to requests sent after PostgreSQL was back: {after}"
    ));
    // the server's own account of any 500 first: it names the cause
    assert_no_internal_errors(&server);
    assert_statuses(&report.attempts, &[201, 503]);
    let errors = transport_errors(&report.attempts);
    assert!(
        errors.is_empty(),
        "the server dropped connections: {:#?}",
        &errors[..errors.len().min(5)]
    );
    assert!(
        recovered - up < Duration::from_secs(10),
        "recovery took {:?}",
        recovered - up
    );
    assert!(
        report.gave_up.is_empty(),
        "writes never acknowledged: {:?}",
        report.gave_up
    );
    fx.check_writes(&report.acks, true);
    fx.check_audit_chain().await;
}

/// 16 clients write while the server is SIGKILLed and started again on the same port.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn server_killed_under_load_then_restarted() {
    let Some(fx) = fixture("sigkill").await else {
        return;
    };
    let port = pg::free_port();
    let mut first = Server::start(&fx.url, port, &fx.log("first"), &[]).await;
    let writers = fx.writers(&first.base, 16).await;
    // Keep the first server's sealer from running (it only try-locks), so that the kill
    // leaves committed audit rows unsealed for the next server to chain.
    let mut sealer_lock = fx.conn();
    sealer_lock
        .batch_execute(&format!(
            "SELECT pg_advisory_lock({})",
            casebook::audit::SEALER_LOCK
        ))
        .unwrap();
    let load = Load::start(&writers, &Config::retrying(vec![first.base.clone()]));
    tokio::time::sleep(Duration::from_millis(2500)).await;

    let killed = Instant::now();
    let status = first.kill();
    fx.say(&format!("server killed ({status})"));
    assert!(!status.success());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pending = count(&mut fx.conn(), "SELECT count(*) AS n FROM audit_unsealed");
    fx.say(&format!(
        "{pending} audit rows left unsealed by the killed server"
    ));
    assert!(pending > 0);
    drop(sealer_lock);

    let mut second = Server::spawn(&fx.url, port, &fx.log("second"), &[]);
    second.wait_ready(Duration::from_secs(30)).await;
    let restarted = Instant::now();
    fx.say("server restarted");
    let recovered = load
        .first_success_since(restarted, Duration::from_secs(20))
        .await
        .expect("no write succeeded within 20 s of the restart");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let report = load.stop().await;

    fx.say(&format!(
        "attempts: {}; first acknowledged write {:.2} s after the restart",
        load::histogram(&report.attempts),
        (recovered - restarted).as_secs_f64()
    ));
    assert_statuses(&report.attempts, &[201, 503]);
    let outside: Vec<&Attempt> = transport_errors(&report.attempts)
        .into_iter()
        .filter(|a| a.ended < killed || a.started > restarted)
        .collect();
    assert!(
        outside.is_empty(),
        "transport errors while a server was up: {:#?}",
        &outside[..outside.len().min(5)]
    );
    let in_flight = transport_errors(&report.attempts)
        .iter()
        .filter(|a| a.started < killed)
        .count();
    fx.say(&format!("{in_flight} requests were in flight at the kill"));
    assert!(report.gave_up.is_empty(), "{:?}", report.gave_up);
    fx.check_writes(&report.acks, true);
    fx.check_audit_chain().await;
    assert!(second.try_wait().is_none());
    assert_no_internal_errors(&second);
}

/// SIGTERM while requests are in flight (some held in the database by a row lock the test
/// owns): they complete normally, new connections are refused at once, the process seals
/// the last audit rows and exits 0 within the shutdown timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn graceful_shutdown_on_sigterm() {
    let Some(fx) = fixture("sigterm").await else {
        return;
    };
    let timeout_secs = 6u64;
    let timeout = timeout_secs.to_string();
    let mut server = fx
        .server(
            "serve",
            &[("CASEBOOK__SHUTDOWN_TIMEOUT_SECS", timeout.as_str())],
        )
        .await;
    let mut writers = fx.writers(&server.base, 17).await;
    let slow = writers.pop().expect("a writer for the slow requests");
    let cfg = Config {
        retry_until_acked: false,
        ..Config::retrying(vec![server.base.clone()])
    };
    let load = Load::start(&writers, &cfg);
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // Hold the slow subject's row: its temperature inserts wait on the foreign key check.
    let mut lock = net::RowLock::subject(fx.conn(), &slow.subject);
    let mut slow_requests = Vec::new();
    for n in 0..4u64 {
        let url = format!(
            "{}/api/v1/subjects/{}/temperatures",
            server.base, slow.subject
        );
        let token = slow.token.clone();
        slow_requests.push(tokio::spawn(async move {
            let r = api::send(
                &api::client(),
                reqwest::Method::POST,
                &url,
                Some(&token),
                Some(&api::temperature(100_000 + n)),
                None,
            )
            .await;
            (r, Instant::now())
        }));
    }
    lock.wait_blocked(4, Duration::from_secs(10)).await;

    let term = Instant::now();
    server.terminate();
    fx.say("SIGTERM sent");
    let refused = net::wait_refused(server.port, Duration::from_secs(3)).await;
    fx.say(&format!(
        "new connections refused {:.0} ms after SIGTERM",
        (refused - term).as_secs_f64() * 1000.0
    ));
    // still refused while the slow requests are in flight
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            net::connect_refused(server.port),
            "a new connection was accepted during shutdown"
        );
    }
    let fresh = api::send(
        &api::client(),
        reqwest::Method::GET,
        &server.url("/health/live"),
        None,
        None,
        None,
    )
    .await;
    assert!(
        fresh.as_ref().is_err_and(reqwest::Error::is_connect),
        "a new request during shutdown was not refused: {fresh:?}"
    );
    assert!(
        slow_requests.iter().all(|h| !h.is_finished()),
        "the slow requests should still be waiting on the row lock"
    );
    tokio::time::sleep(Duration::from_millis(1000)).await;
    lock.release();
    let released = Instant::now();

    let mut slow_acks = Vec::new();
    for h in slow_requests {
        let (r, at) = h.await.unwrap();
        let r = r.unwrap_or_else(|e| panic!("an in-flight request was cut off: {e:?}"));
        assert_eq!(r.status, 201, "in-flight request: {}", r.text);
        slow_acks.push(Ack {
            kind: Kind::Temperature,
            key: String::new(),
            id: r.body["id"].as_i64().unwrap(),
        });
        fx.say(&format!(
            "slow request answered 201 {:.0} ms after the lock was released",
            (at - released).as_secs_f64() * 1000.0
        ));
    }
    let exit = server
        .wait_exit(Duration::from_secs(timeout_secs + 10))
        .await;
    let exited = Instant::now();
    let report = load.stop().await;
    let exit = exit.unwrap_or_else(|| {
        panic!(
            "still running {} s after SIGTERM:\n{}",
            timeout_secs + 10,
            server.log_tail(20)
        )
    });
    fx.say(&format!(
        "exited ({exit}) {:.2} s after SIGTERM; load attempts: {}",
        (exited - term).as_secs_f64(),
        load::histogram(&report.attempts)
    ));
    assert!(
        exit.success(),
        "exit status {exit}: {}",
        server.log_tail(20)
    );
    assert!(
        exited - term <= Duration::from_secs(timeout_secs),
        "exit took {:?}, over the {timeout_secs} s shutdown timeout",
        exited - term
    );
    assert_statuses(&report.attempts, &[201]);
    let cut: Vec<&Attempt> = transport_errors(&report.attempts)
        .into_iter()
        .filter(|a| a.started < term)
        .collect();
    // A keep-alive request whose bytes reached the server just before SIGTERM, but that no
    // worker had started yet, is dropped by actix's graceful drain (the connection closes
    // without an answer). Acceptable only if the server never processed it: no audit-logged
    // answer for its request id, no stored Idempotency-Key (so a retry is safe).
    let log = server.log_text();
    let mut conn = fx.conn();
    for a in &cut {
        let served = log.lines().any(|l| {
            l.contains(&format!("\"request_id\":\"{}\"", a.request_id)) && l.contains("served")
        });
        let stored = count(
            &mut conn,
            &format!(
                "SELECT count(*) AS n FROM idempotency_keys WHERE key = '{}'",
                a.key
            ),
        );
        assert!(
            !served && stored == 0 && a.ended >= term,
            "a request in flight at SIGTERM was processed but its answer lost \
             (served {served}, key stored {stored}): {}",
            describe(a, term)
        );
    }
    if !cut.is_empty() {
        fx.say(&format!(
            "{} requests sent shortly before SIGTERM got no answer; the server had not \
             started them (no log line, no stored key), so a retry with their key is safe:{}",
            cut.len(),
            cut.iter()
                .map(|a| format!("\n    {}", describe(a, term)))
                .collect::<String>()
        ));
    }
    // the final seal ran before the exit
    let unsealed = count(&mut fx.conn(), "SELECT count(*) AS n FROM audit_unsealed");
    assert_eq!(unsealed, 0, "audit rows left unsealed at exit");
    let mut acks = report.acks;
    acks.extend(slow_acks);
    fx.check_writes(&acks, false);
    fx.check_audit_chain().await;
    assert_no_internal_errors(&server);
}

/// SIGTERM while a request is stuck in the database past the shutdown timeout: the process
/// still exits 0 at the timeout, and the stuck write, never acknowledged, leaves nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn graceful_shutdown_gives_up_on_a_stuck_request_at_the_timeout() {
    let Some(fx) = fixture("sigterm_stuck").await else {
        return;
    };
    let timeout_secs = 2u64;
    let timeout = timeout_secs.to_string();
    let mut server = fx
        .server(
            "serve",
            &[("CASEBOOK__SHUTDOWN_TIMEOUT_SECS", timeout.as_str())],
        )
        .await;
    let writers = fx.writers(&server.base, 1).await;
    let stuck = &writers[0];
    let mut lock = net::RowLock::subject(fx.conn(), &stuck.subject);
    let url = server.url(&format!("/api/v1/subjects/{}/temperatures", stuck.subject));
    let token = stuck.token.clone();
    let request = tokio::spawn(async move {
        api::send(
            &api::client(),
            reqwest::Method::POST,
            &url,
            Some(&token),
            Some(&api::temperature(1)),
            None,
        )
        .await
    });
    lock.wait_blocked(1, Duration::from_secs(10)).await;
    let term = Instant::now();
    server.terminate();
    let exit = server.wait_exit(Duration::from_secs(15)).await;
    let took = term.elapsed();
    // release the row only now: the stuck transaction must not outlive the process
    lock.release();
    let answer = request.await.unwrap();
    fx.say(&format!(
        "exit {exit:?} {:.2} s after SIGTERM (shutdown timeout {timeout_secs} s); the stuck \
         request got: {}",
        took.as_secs_f64(),
        match &answer {
            Ok(r) => format!("{} {}", r.status, r.text),
            Err(e) => format!("{e}"),
        }
    ));
    let exit = exit.unwrap_or_else(|| {
        panic!(
            "casebook serve still running 15 s after SIGTERM with a request stuck in the \
             database (shutdown timeout {timeout_secs} s):\n{}",
            server.log_tail(20)
        )
    });
    assert!(exit.success(), "exit status {exit}");
    assert!(
        took <= Duration::from_millis(timeout_secs * 1000 + 1500),
        "exit took {took:?}; the shutdown timeout is {timeout_secs} s"
    );
    assert!(
        answer.is_err(),
        "the stuck request cannot have been answered: {answer:?}"
    );
    let rows = count(
        &mut fx.conn(),
        "SELECT count(*) AS n FROM form_records WHERE form_id = 'temperature'",
    );
    assert_eq!(rows, 0, "the unacknowledged write left a row");
    fx.check_writes(&[], true);
    fx.check_audit_chain().await;
}

/// Two instances on one database, writes spread over both.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_share_one_database() {
    let Some(fx) = fixture("two_instances").await else {
        return;
    };
    let desk = net::Desk::start();
    let webhook = [
        ("CASEBOOK_SAE_WEBHOOK_URL", desk.url.as_str()),
        (
            "CASEBOOK_SAE_WEBHOOK_SECRET",
            "a webhook secret for the fault tests",
        ),
    ];
    let a = fx.server("a", &webhook).await;
    let b = fx.server("b", &webhook).await;
    let bases = [a.base.clone(), b.base.clone()];
    let client = api::client();
    let fr01 = api::login(&client, &a.base, &api::investigator("FR01")).await;
    let fr02 = api::login(&client, &b.base, &api::investigator("FR02")).await;

    // Concurrent enrolments through both instances: unique, gap-free codes.
    let mut jobs = Vec::new();
    for i in 0..32usize {
        let (site, token) = if i % 3 == 2 {
            ("FR02", fr02.clone())
        } else {
            ("FR01", fr01.clone())
        };
        let url = format!("{}/api/v1/subjects", bases[i % 2]);
        let client = client.clone();
        jobs.push(tokio::spawn(async move {
            let r = api::post(&client, &url, &token, &api::new_subject(site), None).await;
            assert_eq!(r.status, 201, "enrolment: {}", r.text);
            (
                site,
                r.body["subject_code"].as_str().unwrap().to_owned(),
                token,
            )
        }));
    }
    let mut enrolled = Vec::new();
    for j in jobs {
        enrolled.push(j.await.unwrap());
    }
    for site in ["FR01", "FR02"] {
        let mut codes: Vec<String> = enrolled
            .iter()
            .filter(|(s, _, _)| *s == site)
            .map(|(_, c, _)| c.clone())
            .collect();
        codes.sort();
        let expected: Vec<String> = (1..=codes.len())
            .map(|n| format!("{site}-{n:03}"))
            .collect();
        assert_eq!(codes, expected, "{site}: codes not unique and gap-free");
        let in_db = strings(
            &mut fx.conn(),
            &format!(
                "SELECT s.subject_code AS s FROM subjects s JOIN sites t ON t.id = s.site_id \
                 WHERE t.code = '{site}' ORDER BY 1"
            ),
        );
        assert_eq!(in_db, expected, "{site}: subjects in the database");
    }
    fx.say("32 concurrent enrolments over two instances: codes unique and gap-free");
    for (i, (_, code, token)) in enrolled.iter().enumerate() {
        api::add_consent(&client, &bases[i % 2], token, code).await;
    }

    // Writes spread over both instances in the background.
    let writers: Vec<Writer> = enrolled
        .iter()
        .skip(2)
        .take(12)
        .map(|(_, code, token)| Writer {
            token: token.clone(),
            subject: code.clone(),
        })
        .collect();
    let load = Load::start(&writers, &Config::retrying(bases.to_vec()));

    // An Idempotency-Key retried on the other instance writes once.
    let code = &enrolled[0].1;
    let temps = |base: &str| format!("{base}/api/v1/subjects/{code}/temperatures");
    let body = api::temperature(77_777);
    let first = api::post(&client, &temps(&a.base), &fr01, &body, Some("retry-on-b")).await;
    assert_eq!(first.status, 201, "{}", first.text);
    let again = api::post(&client, &temps(&b.base), &fr01, &body, Some("retry-on-b")).await;
    assert_eq!(again.status, 201, "{}", again.text);
    assert_eq!(
        again.body, first.body,
        "the retry must return the first answer"
    );
    let other = api::post(
        &client,
        &temps(&b.base),
        &fr01,
        &api::temperature(77_778),
        Some("retry-on-b"),
    )
    .await;
    assert_eq!(other.status, 422, "same key, other body: {}", other.text);
    // The same key sent to both at once, several times.
    let mut raced = vec![first.body["id"].as_i64().unwrap()];
    for k in 0..6u64 {
        let key = format!("race-{k}");
        let body = api::temperature(88_000 + k);
        let (url_a, url_b) = (temps(&a.base), temps(&b.base));
        let (ra, rb) = tokio::join!(
            api::post(&client, &url_a, &fr01, &body, Some(&key)),
            api::post(&client, &url_b, &fr01, &body, Some(&key)),
        );
        assert_eq!(
            (ra.status, rb.status),
            (201, 201),
            "{} / {}",
            ra.text,
            rb.text
        );
        assert_eq!(ra.body, rb.body, "both answers must be the one write");
        raced.push(ra.body["id"].as_i64().unwrap());
    }
    let rows = count(
        &mut fx.conn(),
        &format!(
            "SELECT count(*) AS n FROM form_records t JOIN subjects s ON s.id = t.subject_id \
             WHERE t.form_id = 'temperature' AND s.subject_code = '{code}'"
        ),
    );
    assert_eq!(rows, 7, "one row per Idempotency-Key");
    fx.say("Idempotency-Key retried or raced across instances: one row each");

    // Serious adverse events through both: each alert delivered once.
    let mut events = BTreeSet::new();
    for i in 0..6usize {
        let r = api::post(
            &client,
            &format!("{}/api/v1/subjects/{code}/adverse-events", bases[i % 2]),
            &fr01,
            &api::serious_event(),
            None,
        )
        .await;
        assert_eq!(r.status, 201, "{}", r.text);
        events.insert(r.body["id"].as_i64().unwrap());
    }
    let mut conn = fx.conn();
    let deadline = Instant::now() + Duration::from_secs(30);
    while count(
        &mut conn,
        "SELECT count(*) AS n FROM sae_alerts WHERE status = 'delivered'",
    ) < 6
    {
        assert!(
            Instant::now() < deadline,
            "SAE alerts not delivered within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // a few more polling rounds of both instances
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let received = desk.received();
    let got: Vec<i64> = received
        .iter()
        .map(|(_, body)| body["adverse_event_id"].as_i64().unwrap_or(-1))
        .collect();
    let got_set: BTreeSet<i64> = got.iter().copied().collect();
    assert_eq!(got.len(), 6, "deliveries: {got:?} (each alert once)");
    assert_eq!(got_set, events, "the six serious events, each once");
    let alert_ids: BTreeSet<&str> = received
        .iter()
        .filter_map(|(id, _)| id.as_deref())
        .collect();
    assert_eq!(alert_ids.len(), 6, "six distinct X-Casebook-Alert-Id");
    fx.say("6 SAE alerts through two instances: each delivered once");

    let report = load.stop().await;
    fx.say(&format!(
        "background writes over both: {} ({})",
        load::histogram(&report.attempts),
        load::latencies(&report.attempts)
    ));
    assert_statuses(&report.attempts, &[201]);
    assert!(transport_errors(&report.attempts).is_empty());
    let mut acks = report.acks;
    for id in raced {
        acks.push(Ack {
            kind: Kind::Temperature,
            key: String::new(),
            id,
        });
    }
    for id in &events {
        acks.push(Ack {
            kind: Kind::AdverseEvent,
            key: String::new(),
            id: *id,
        });
    }
    fx.check_writes(&acks, true);
    fx.check_audit_chain().await;
    let sealed_by = numbers(&mut fx.conn(), "SELECT count(*) AS n FROM audit_chain");
    fx.say(&format!("audit chain of {} rows", sealed_by[0]));
    assert_no_internal_errors(&a);
    assert_no_internal_errors(&b);
}

/// Body size limit, slow request heads, many idle connections, pool exhaustion.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn resource_limits() {
    let Some(fx) = fixture("limits").await else {
        return;
    };
    let request_timeout_ms = 2000u64;
    let rt = request_timeout_ms.to_string();
    let server = fx
        .server(
            "serve",
            &[
                ("CASEBOOK__CLIENT_REQUEST_TIMEOUT_MS", rt.as_str()),
                ("CASEBOOK__DATABASE__POOL_MAX_SIZE", "2"),
                ("CASEBOOK__DATABASE__POOL_TIMEOUT_MS", "300"),
            ],
        )
        .await;
    let idle_server = fx
        .server("idle", &[("CASEBOOK__CLIENT_REQUEST_TIMEOUT_MS", "30000")])
        .await;
    let client = api::client();
    let token = api::login(&client, &server.base, &api::investigator("FR01")).await;
    let subject = api::enrolled(&client, &server.base, &token, "FR01").await;

    // 1. A 10 MiB body is refused with 413 after its first kilobyte.
    for (path, auth) in [
        ("/api/v1/auth/login", None),
        ("/api/v1/subjects", Some(token.as_str())),
    ] {
        let seen = net::oversized_body(server.port, path, auth, 10 * 1024 * 1024);
        fx.say(&format!("10 MiB body to {path}: {seen}"));
        assert!(
            seen.answered_after < Duration::from_secs(2),
            "413 after {:?}",
            seen.answered_after
        );
        assert!(
            seen.cut_after < Duration::from_secs(5),
            "the server kept taking the rest of the body for {:?}",
            seen.cut_after
        );
    }

    // 2. A request head sent byte by byte is cut off by the request timeout, and so are
    //    connections that send nothing.
    let (silent, _) = net::open_idle(server.port, 50);
    let silent_since = Instant::now();
    let slow = net::slow_head(server.port, Duration::from_millis(50));
    fx.say(&format!("byte-by-byte head: {slow}"));
    assert!(
        slow.cut_after >= Duration::from_millis(request_timeout_ms - 600)
            && slow.cut_after <= Duration::from_millis(request_timeout_ms + 1500),
        "cut off after {:?}, the request timeout is {request_timeout_ms} ms",
        slow.cut_after
    );
    assert!(
        slow.answer.starts_with("HTTP/1.1 408"),
        "expected a 408: {:?}",
        slow.answer
    );
    let wait =
        Duration::from_millis(request_timeout_ms + 1500).saturating_sub(silent_since.elapsed());
    tokio::time::sleep(wait).await;
    assert_eq!(
        net::count_open(&silent),
        0,
        "silent connections outlived the request timeout"
    );
    drop(silent);

    // 3. 1,000 idle connections do not stop others being served (on a server whose request
    //    timeout outlasts the check, so that they are all still open during it).
    let wanted = 1000usize;
    let limit = net::open_files_limit();
    let n = wanted.min(usize::try_from(limit.saturating_sub(200)).unwrap_or(wanted));
    if n < wanted {
        eprintln!(
            "RLIMIT_NOFILE is {limit}: opening {n} idle connections instead of {wanted} \
             (this test cannot raise it: unsafe code is forbidden in this crate)"
        );
    }
    let overflows_before = net::listen_overflows();
    let opened = Instant::now();
    let (idle, syn_retried) = net::open_idle(idle_server.port, n);
    let open_ms = opened.elapsed().as_millis();
    let overflows = overflows_before
        .zip(net::listen_overflows())
        .map_or("?".to_owned(), |(a, b)| (b - a).to_string());
    let t = Instant::now();
    let live = client
        .get(idle_server.url("/health/live"))
        .send()
        .await
        .unwrap();
    let live_ms = t.elapsed().as_millis();
    assert_eq!(live.status(), 200);
    let t = Instant::now();
    let record = api::send(
        &client,
        reqwest::Method::GET,
        &idle_server.url(&format!("/api/v1/subjects/{subject}")),
        Some(&token),
        None,
        None,
    )
    .await
    .unwrap();
    let record_ms = t.elapsed().as_millis();
    assert_eq!(record.status, 200, "{}", record.text);
    let still_open = net::count_open(&idle);
    fx.say(&format!(
        "{n} idle connections opened in {open_ms} ms ({syn_retried} of them waited ~1 s for \
         a SYN retry; kernel listen-queue overflows meanwhile: {overflows}); then \
         /health/live {live_ms} ms, GET subject {record_ms} ms, with {still_open} idle \
         connections open"
    ));
    assert_eq!(
        still_open, n,
        "the idle connections were not all open during the check"
    );
    assert!(
        live_ms < 1000 && record_ms < 2000,
        "slow answers beside idle connections"
    );
    drop(idle);

    // 4. Every pool connection busy: 503 after the pool timeout, not a hang. The two
    // writes carry an Idempotency-Key, so each waits for the lock in a transaction on its
    // own connection (a plain one is first tried in a shared batch whose leader holds a
    // connection of its own for 50 ms, and the pool is not yet full while it does).
    let mut lock = net::RowLock::subject(fx.conn(), &subject);
    let mut held = Vec::new();
    for n in 0..2u64 {
        let url = server.url(&format!("/api/v1/subjects/{subject}/temperatures"));
        let token = token.clone();
        held.push(tokio::spawn(async move {
            let key = format!("pool-exhausted-{n}");
            api::send(
                &api::client(),
                reqwest::Method::POST,
                &url,
                Some(&token),
                Some(&api::temperature(200_000 + n)),
                Some(&key),
            )
            .await
        }));
    }
    lock.wait_blocked(2, Duration::from_secs(10)).await;
    for path in ["/health/ready", &format!("/api/v1/subjects/{subject}")] {
        let t = Instant::now();
        let r = api::send(
            &client,
            reqwest::Method::GET,
            &server.url(path),
            Some(&token),
            None,
            None,
        )
        .await
        .unwrap();
        let took = t.elapsed();
        fx.say(&format!(
            "GET {path} with the pool exhausted: {} in {} ms (Retry-After {:?})",
            r.status,
            took.as_millis(),
            r.retry_after
        ));
        assert_eq!(r.status, 503, "{}", r.text);
        assert!(r.retry_after.is_some(), "503 without Retry-After");
        assert_eq!(r.content_type, "application/problem+json");
        assert!(
            took >= Duration::from_millis(250) && took < Duration::from_millis(2000),
            "answered after {took:?}; the pool timeout is 300 ms"
        );
    }
    lock.release();
    for h in held {
        let r = h.await.unwrap().unwrap();
        assert_eq!(r.status, 201, "held request: {}", r.text);
    }
    let ready = client
        .get(server.url("/health/ready"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200, "ready again once the pool is free");
    assert_no_internal_errors(&server);
}
