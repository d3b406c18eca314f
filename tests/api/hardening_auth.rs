//! Authentication and the HTTP edge under attack (issue 16): lockout under concurrency,
//! bounded audit values from unauthenticated requests, password oracles, admin self-demotion,
//! the lockout oracle, slow bodies, sessions after access changes, problem bodies.

use casebook::auth::Role;
use futures_util::future::join_all;
use reqwest::Method;
use serde_json::json;

use crate::helpers::{Resp, TestApp, PASSWORD};

async fn login(app: &TestApp, email: &str, password: &str) -> Resp {
    app.request(
        Method::POST,
        "/api/v1/auth/login",
        None,
        Some(&json!({"email": email, "password": password})),
        &[],
    )
    .await
}

fn failed_logins(app: &TestApp, email: &str) -> i64 {
    app.count(&format!(
        "SELECT failed_logins::bigint AS n FROM users WHERE email = '{email}'"
    ))
}

/// Audit rows of failures whose password was actually verified (not refused unverified).
fn verified_failures(app: &TestApp, action: &str) -> i64 {
    app.count(&format!(
        "SELECT count(*) AS n FROM audit_log WHERE action = '{action}' \
         AND new_values->>'cause' = 'bad_password'"
    ))
}

#[actix_web::test]
async fn parallel_wrong_passwords_get_at_most_five_verifications() {
    let app = TestApp::spawn().await;
    let email = app.user(Role::Investigator, &[]);
    let answers = join_all((0..40).map(|i| {
        let (app, email) = (&app, &email);
        async move { login(app, email, &format!("a wrong password number {i}")).await }
    }))
    .await;
    for a in &answers {
        a.assert_problem(401, None);
    }
    assert_eq!(
        verified_failures(&app, "login_failed"),
        5,
        "at most five wrong passwords verified in a lockout window"
    );
    assert_eq!(failed_logins(&app, &email), 5);
    assert_eq!(
        app.count("SELECT count(*) AS n FROM users WHERE locked_until > now()"),
        1
    );
    assert_eq!(
        app.count("SELECT count(*) AS n FROM audit_log WHERE action = 'login_failed'"),
        40,
        "every attempt audited, verified or not"
    );
    // the lock holds against the right password too
    login(&app, &email, PASSWORD)
        .await
        .assert_problem(401, None);
}

#[actix_web::test]
async fn a_right_password_among_parallel_wrong_ones_neither_beats_nor_clears_the_lock() {
    let app = TestApp::spawn().await;
    let email = app.user(Role::Investigator, &[]);
    let answers = join_all((0..100).map(|i| {
        let (app, email) = (&app, &email);
        async move {
            let pw = if i == 50 {
                PASSWORD.to_owned()
            } else {
                format!("a wrong password number {i}")
            };
            login(app, email, &pw).await
        }
    }))
    .await;
    let ok = answers.iter().filter(|a| a.status == 200).count();
    let refused = answers.iter().filter(|a| a.status == 401).count();
    assert!(ok <= 1 && ok + refused == 100, "{ok} ok, {refused} refused");
    // The counter never passes five: each failure's audit row carries it, and the one that
    // reached five carries the lock.
    assert_eq!(
        app.count(
            "SELECT count(*) AS n FROM audit_log WHERE action = 'login_failed' \
             AND (new_values->>'failed_logins')::int > 5"
        ),
        0
    );
    assert_eq!(
        app.count(
            "SELECT count(*) AS n FROM audit_log WHERE action = 'login_failed' \
             AND (new_values->>'failed_logins')::int = 5 AND new_values->>'locked_until' IS NULL"
        ),
        0
    );
    // Only a success that overlapped no other attempt clears the failures before it, so
    // more than five verified failures need that one success between them.
    let verified = verified_failures(&app, "login_failed");
    assert!(
        verified <= 5 || (ok == 1 && verified <= 9),
        "{verified} wrong passwords verified, {ok} success"
    );
    assert!(failed_logins(&app, &email) <= 5);
}

#[actix_web::test]
async fn parallel_wrong_signing_passwords_get_at_most_five_verifications() {
    let app = TestApp::spawn().await;
    app.site("FR01", "Europe/Paris");
    let email = app.user(Role::Investigator, &["FR01"]);
    let inv = app.login(&email).await;
    let code = crate::clinical::enrolled(&app, &inv, "FR01").await;
    let sign = format!("/api/v1/subjects/{code}/signatures");
    let answers = join_all((0..30).map(|i| {
        let (app, inv, sign) = (&app, &inv, &sign);
        async move {
            app.post(
                sign,
                inv,
                &json!({"password": format!("a wrong password number {i}"), "meaning": "approval"}),
            )
            .await
        }
    }))
    .await;
    let wrong = answers.iter().filter(|a| a.status == 422).count();
    let locked = answers.iter().filter(|a| a.status == 429).count();
    for a in answers.iter().filter(|a| a.status == 422) {
        a.assert_problem(422, Some("password"));
        assert!(a.headers.get("www-authenticate").is_none());
    }
    assert_eq!(wrong, 5, "five verified, the others refused unverified");
    assert_eq!(locked, 25);
    assert_eq!(verified_failures(&app, "sign_failed"), 5);
    assert_eq!(failed_logins(&app, &email), 5);
    let r = app
        .post(
            sign.as_str(),
            &inv,
            &json!({"password": PASSWORD, "meaning": "approval"}),
        )
        .await;
    r.assert_problem(429, None);
    assert_eq!(app.count("SELECT count(*) AS n FROM signatures"), 0);
}

#[actix_web::test]
async fn an_overlong_login_email_is_refused_before_the_database() {
    let app = TestApp::spawn().await;
    // the start's own rows (the study definition's publication)
    let before = app.count("SELECT count(*) AS n FROM audit_log");
    let long = format!("{}@test.casebook", "x".repeat(250));
    login(&app, &long, "a wrong password here")
        .await
        .assert_problem(422, Some("email"));
    let huge = format!("{}@test.casebook", "x".repeat(180_000));
    login(&app, &huge, "a wrong password here")
        .await
        .assert_problem(422, Some("email"));
    assert_eq!(
        app.count("SELECT count(*) AS n FROM audit_log") - before,
        0,
        "nothing reaches the append-only audit log"
    );
    // 254 characters is still an e-mail address, audited as tried
    let longest = format!("{}@test.casebook", "y".repeat(254 - "@test.casebook".len()));
    login(&app, &longest, "a wrong password here")
        .await
        .assert_problem(401, None);
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) AS n FROM audit_log WHERE new_values->>'email' = '{longest}'"
        )),
        1
    );
}

#[actix_web::test]
async fn no_unauthenticated_request_writes_more_than_a_bounded_audit_row() {
    let app = TestApp::spawn().await;
    let email = app.user(Role::Monitor, &[]);
    let big = "z".repeat(200_000);
    // a huge refresh token, request id and password: refused or not stored
    app.request(
        Method::POST,
        "/api/v1/auth/refresh",
        None,
        Some(&json!({"refresh_token": big})),
        &[],
    )
    .await
    .assert_problem(422, Some("refresh_token"));
    let long_id = "r".repeat(5_000);
    login(&app, &email, &"p".repeat(100_000))
        .await
        .assert_problem(422, Some("password"));
    app.request(
        Method::POST,
        "/api/v1/auth/login",
        None,
        Some(&json!({"email": "ghost@test.casebook", "password": "a wrong password here"})),
        &[("x-request-id", &long_id)],
    )
    .await
    .assert_problem(401, None);
    assert_eq!(
        app.count(
            "SELECT count(*) AS n FROM audit_log WHERE length(coalesce(new_values::text, '')) \
             + length(coalesce(request_id, '')) + length(coalesce(client_addr, '')) > 2000"
        ),
        0
    );
    assert_eq!(
        app.count("SELECT count(*) AS n FROM audit_log WHERE action = 'login_failed'"),
        1
    );
}

#[actix_web::test]
async fn wrong_current_passwords_count_toward_the_lock_and_are_audited() {
    let app = TestApp::spawn().await;
    let email = app.user(Role::Monitor, &[]);
    let token = app.login(&email).await;
    let change = |current: String| {
        let (app, token) = (&app, &token);
        async move {
            app.post(
                "/api/v1/me/password",
                token,
                &json!({"current_password": current, "new_password": "a brand new passphrase"}),
            )
            .await
        }
    };
    let answers = join_all((0..12).map(|i| change(format!("not my password {i}")))).await;
    let wrong = answers.iter().filter(|a| a.status == 422).count();
    let locked = answers.iter().filter(|a| a.status == 429).count();
    assert_eq!((wrong, locked), (5, 7));
    for a in answers.iter().filter(|a| a.status == 422) {
        a.assert_problem(422, Some("current_password"));
    }
    assert_eq!(verified_failures(&app, "password_change_failed"), 5);
    assert_eq!(
        app.count(
            "SELECT count(*) AS n FROM audit_log WHERE action = 'password_change_failed' \
             AND actor_id IS NOT NULL AND new_values->>'cause' = 'locked'"
        ),
        7
    );
    assert_eq!(failed_logins(&app, &email), 5);
    // locked: even the right current password is refused, and nothing changes
    let r = change(PASSWORD.to_owned()).await;
    r.assert_problem(429, None);
    assert_eq!(
        app.count("SELECT count(*) AS n FROM audit_log WHERE action = 'user_change'"),
        0
    );
    // and the lock is the account's: logging in is refused too
    login(&app, &email, PASSWORD)
        .await
        .assert_problem(401, None);
}

/// What a client can compare between two answers: status, body and headers, less the
/// request id that differs on every answer anyway.
fn observable(r: &Resp) -> (u16, String, Vec<(String, String)>) {
    let mut headers: Vec<(String, String)> = r
        .headers
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "x-request-id" | "date" | "content-length"))
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_owned()))
        .collect();
    headers.sort();
    (r.status.as_u16(), r.text.clone(), headers)
}

#[actix_web::test]
async fn a_locked_account_answers_like_a_wrong_password_and_an_unknown_email() {
    let app = TestApp::spawn().await;
    let email = app.user(Role::Investigator, &[]);
    let other = app.user(Role::Investigator, &[]);
    for _ in 0..5 {
        login(&app, &email, "a wrong password here")
            .await
            .assert_problem(401, None);
    }
    let locked_right = login(&app, &email, PASSWORD).await;
    let locked_wrong = login(&app, &email, "a wrong password here").await;
    let wrong = login(&app, &other, "a wrong password here").await;
    let unknown = login(&app, "nobody@test.casebook", "a wrong password here").await;
    locked_right.assert_problem(401, None);
    assert!(locked_right.headers.get("retry-after").is_none());
    let expected = observable(&wrong);
    for r in [&locked_right, &locked_wrong, &unknown] {
        assert_eq!(observable(r), expected);
    }
    // the lock still holds, and the refused attempts are audited as such
    assert_eq!(
        app.count(
            "SELECT count(*) AS n FROM audit_log WHERE action = 'login_failed' \
             AND new_values->>'cause' = 'locked'"
        ),
        2
    );
    assert_eq!(
        app.count("SELECT count(*) AS n FROM users WHERE locked_until > now()"),
        1
    );
}

#[actix_web::test]
async fn invented_http_methods_do_not_grow_the_metrics() {
    let app = TestApp::spawn().await;
    for i in 0..30 {
        let method = Method::from_bytes(format!("BREW{i}").as_bytes()).unwrap();
        let r = app
            .request(method, "/api/v1/auth/login", None, None, &[])
            .await;
        assert!(r.status.is_client_error(), "{}", r.status);
    }
    let metrics = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !metrics.contains("BREW"),
        "a client-chosen method became a label"
    );
    let lines = metrics
        .lines()
        .filter(|l| l.starts_with("casebook_http_requests_total{"))
        .filter(|l| l.contains("method=\"other\""))
        .count();
    assert_eq!(lines, 1, "{metrics}");
}

async fn me_id(app: &TestApp, token: &str) -> i64 {
    app.get("/api/v1/me", token).await.body["id"]
        .as_i64()
        .unwrap()
}

#[actix_web::test]
async fn admins_cannot_change_their_own_role_nor_remove_the_last_admin() {
    let app = TestApp::spawn().await;
    let a = app.token(Role::Admin, &[]).await;
    let a_id = me_id(&app, &a).await;
    let user = |id: i64| format!("/api/v1/users/{id}");
    let changes = || app.count("SELECT count(*) AS n FROM audit_log WHERE action = 'user_change'");
    app.patch(&user(a_id), &a, 0, &json!({"role": "investigator"}))
        .await
        .assert_problem(422, Some("role"));
    let last = app
        .patch(&user(a_id), &a, 0, &json!({"active": false}))
        .await;
    last.assert_problem(409, None);
    assert!(last.text.contains("last active admin"), "{}", last.text);
    assert_eq!(changes(), 0);
    assert_eq!(
        app.count("SELECT count(*) AS n FROM users WHERE role = 'admin' AND active"),
        1
    );

    // with a second admin, each may remove the other, but not both at once
    let b = app.token(Role::Admin, &[]).await;
    let b_id = me_id(&app, &b).await;
    app.patch(&user(a_id), &a, 0, &json!({"role": "monitor"}))
        .await
        .assert_problem(422, Some("role"));
    let (path_a, path_b) = (user(a_id), user(b_id));
    let (demote_b, deactivate_a) = (json!({"role": "sponsor"}), json!({"active": false}));
    let (ra, rb) = tokio::join!(
        app.patch(&path_b, &a, 0, &demote_b),
        app.patch(&path_a, &b, 0, &deactivate_a),
    );
    let mut statuses = [ra.status.as_u16(), rb.status.as_u16()];
    statuses.sort();
    // the loser finds itself no longer an admin (401) or the last one (409)
    assert!(
        matches!(statuses, [200, 401] | [200, 409]),
        "{statuses:?}: {} / {}",
        ra.text,
        rb.text
    );
    assert_eq!(
        app.count("SELECT count(*) AS n FROM users WHERE role = 'admin' AND active"),
        1
    );
    assert_eq!(changes(), 1);
}

async fn refresh(app: &TestApp, token: &str) -> Resp {
    app.request(
        Method::POST,
        "/api/v1/auth/refresh",
        None,
        Some(&json!({"refresh_token": token})),
        &[],
    )
    .await
}

async fn login_refresh_token(app: &TestApp, email: &str) -> String {
    let r = login(app, email, PASSWORD).await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.body["refresh_token"].as_str().unwrap().to_owned()
}

#[actix_web::test]
async fn role_site_and_activity_changes_end_the_refresh_tokens_too() {
    let app = TestApp::spawn().await;
    app.site("FRA", "Europe/Paris");
    app.site("FRB", "Europe/Paris");
    let admin = app.token(Role::Admin, &[]).await;
    let email = app.user(Role::Investigator, &["FRA"]);
    let id = {
        let t = app.login(&email).await;
        me_id(&app, &t).await
    };
    let path = format!("/api/v1/users/{id}");
    for change in [
        json!({"name": "Renamed Person"}),
        json!({"site_codes": ["FRA", "FRB"]}),
        json!({"role": "monitor"}),
        json!({"active": false}),
    ] {
        let keeps = change.get("name").is_some();
        let token = login_refresh_token(&app, &email).await;
        let r = app.patch(&path, &admin, 0, &change).await;
        assert_eq!(r.status, 200, "{}", r.text);
        let after = refresh(&app, &token).await;
        if keeps {
            assert_eq!(after.status, 200, "a rename leaves sessions alone");
        } else {
            after.assert_problem(401, None);
        }
        let audit = app
            .get(
                &format!("/api/v1/audit?table=users&record_id={id}&action=user_change"),
                &admin,
            )
            .await;
        let last = audit.body["items"]
            .as_array()
            .unwrap()
            .last()
            .unwrap()
            .clone();
        if keeps {
            assert!(
                last["new_values"].get("sessions_revoked").is_none(),
                "{last}"
            );
        } else {
            assert!(
                last["new_values"]["sessions_revoked"].as_i64().unwrap() >= 1,
                "{last}"
            );
        }
    }
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) AS n FROM sessions WHERE user_id = {id} AND revoked_at IS NULL"
        )),
        0
    );
}

/// Sends `raw` and reads what comes back until the server closes or `wait` passes.
fn raw_exchange(
    address: &str,
    raw: &[u8],
    wait: std::time::Duration,
) -> (String, std::time::Duration) {
    use std::io::{Read, Write};
    let host = address.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(host).unwrap();
    s.set_read_timeout(Some(wait)).unwrap();
    let started = std::time::Instant::now();
    s.write_all(raw).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    (
        String::from_utf8_lossy(&got).into_owned(),
        started.elapsed(),
    )
}

#[actix_web::test]
async fn a_body_that_stops_arriving_is_answered_408_and_the_connection_closed() {
    let app = TestApp::spawn_with(&[("CASEBOOK__BODY_TIMEOUT_MS", "400")]).await;
    // the start's own rows (the study definition's publication)
    let before = app.count("SELECT count(*) AS n FROM audit_log");
    let address = app.address.clone();
    let (answer, took) = actix_web::web::block(move || {
        raw_exchange(
            &address,
            b"POST /api/v1/auth/login HTTP/1.1\r\nHost: localhost\r\n\
              Content-Type: application/json\r\nContent-Length: 69\r\n\r\n{\"email\": ",
            std::time::Duration::from_secs(6),
        )
    })
    .await
    .unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 408"),
        "after {took:?}: {answer:?}"
    );
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("content-type: application/problem+json"),
        "{answer}"
    );
    assert!(answer.contains("\"status\":408"), "{answer}");
    assert!(took < std::time::Duration::from_secs(3), "{took:?}");
    assert_eq!(
        app.count("SELECT count(*) AS n FROM audit_log") - before,
        0,
        "nothing written"
    );
}

/// Not a fix but the measured limit (README, "Errors actix answers itself"): a request line
/// longer than `http::Uri` accepts (65,534 bytes) is refused by actix's HTTP/1 parser with a
/// bare 400 before any of our code runs (actix-http offers no hook for it), and a head over
/// 128 KiB with a bare 431. Shorter long paths reach the application and get problem+json.
#[actix_web::test]
async fn overlong_paths_are_refused_and_the_connection_closed() {
    let app = TestApp::spawn().await;
    let exchange = |path_len: usize| {
        let address = app.address.clone();
        actix_web::web::block(move || {
            let raw = format!(
                "GET /{} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
                "a".repeat(path_len)
            );
            raw_exchange(&address, raw.as_bytes(), std::time::Duration::from_secs(5))
        })
    };
    let (reached, _) = exchange(60_000).await.unwrap();
    assert!(reached.starts_with("HTTP/1.1 404"), "{reached:.200}");
    assert!(
        reached.contains("application/problem+json"),
        "{reached:.400}"
    );
    let (refused, took) = exchange(100_000).await.unwrap();
    assert!(refused.starts_with("HTTP/1.1 400"), "{refused:.200}");
    assert!(refused.contains("content-length: 0"), "{refused}");
    assert!(took < std::time::Duration::from_secs(3), "closed at once");
    let (too_large, _) = exchange(140_000).await.unwrap();
    assert!(too_large.starts_with("HTTP/1.1 431"), "{too_large:.200}");
}

#[actix_web::test]
async fn parallel_logins_with_the_right_password_all_succeed() {
    let app = TestApp::spawn().await;
    let email = app.user(Role::Sponsor, &[]);
    let answers = join_all((0..16).map(|_| login(&app, &email, PASSWORD))).await;
    for a in &answers {
        assert_eq!(a.status, 200, "{}", a.text);
    }
    assert_eq!(
        app.count("SELECT count(*) AS n FROM users WHERE attempts_pending = 0 AND failed_logins = 0 AND locked_until IS NULL"),
        1,
        "every reservation settled"
    );
}
