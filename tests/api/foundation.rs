//! The skeleton: errors as problem+json, health, readiness, migrations, OpenAPI, headers.

use casebook::auth::Role;
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use reqwest::Method;
use serde_json::json;

use crate::helpers::{TestApp, TestDb};

#[actix_web::test]
async fn unknown_route_is_a_problem_404() {
    let app = TestApp::spawn().await;
    let r = app
        .request(Method::GET, "/api/v1/no-such-thing", None, None, &[])
        .await;
    r.assert_problem(404, None);
    assert!(r.headers.get("x-request-id").is_some());
}

#[actix_web::test]
async fn wrong_method_is_a_problem_405() {
    let app = TestApp::spawn().await;
    let r = app
        .request(Method::DELETE, "/api/v1/auth/login", None, None, &[])
        .await;
    r.assert_problem(405, None);
    assert_eq!(r.headers["allow"], "POST");
    let r = app
        .request(
            Method::PUT,
            "/api/v1/subjects/FR01-001/temperatures/7",
            None,
            None,
            &[],
        )
        .await;
    r.assert_problem(405, None);
    assert_eq!(r.headers["allow"], "DELETE, GET, PATCH");
}

#[actix_web::test]
async fn malformed_json_is_400_unknown_field_is_422_naming_it() {
    let app = TestApp::spawn().await;
    let r = app
        .client
        .post(app.url("/api/v1/auth/login"))
        .header("content-type", "application/json")
        .body("{\"email\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.headers()["content-type"], "application/problem+json");

    let r = app
        .request(
            Method::POST,
            "/api/v1/auth/login",
            None,
            Some(&json!({"email": "a@b.c", "password": "x", "remember_me": true})),
            &[],
        )
        .await;
    r.assert_problem(422, Some("remember_me"));

    let r = app
        .request(
            Method::POST,
            "/api/v1/auth/login",
            None,
            Some(&json!({"email": "a@b.c"})),
            &[],
        )
        .await;
    r.assert_problem(422, Some("password"));

    let r = app
        .request(
            Method::POST,
            "/api/v1/auth/login",
            None,
            Some(&json!({"email": 12, "password": "x"})),
            &[],
        )
        .await;
    r.assert_problem(422, Some("email"));
}

#[actix_web::test]
async fn oversized_body_is_413_and_writes_nothing() {
    let app = TestApp::spawn().await;
    let big = "x".repeat(300 * 1024);
    let before = app.count("SELECT count(*) AS n FROM audit_log");
    let r = app
        .client
        .post(app.url("/api/v1/auth/login"))
        .header("content-type", "application/json")
        .body(format!("{{\"email\":\"{big}\",\"password\":\"x\"}}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    assert_eq!(app.count("SELECT count(*) AS n FROM audit_log"), before);
}

#[actix_web::test]
async fn wrong_content_type_is_415() {
    let app = TestApp::spawn().await;
    let r = app
        .client
        .post(app.url("/api/v1/auth/login"))
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
}

#[actix_web::test]
async fn bad_query_parameter_is_422_naming_it() {
    let app = TestApp::spawn().await;
    let token = app.token(Role::Admin, &[]).await;
    let r = app.get("/api/v1/sites?limit=lots", &token).await;
    r.assert_problem(422, None);
    let r = app.get("/api/v1/sites?limit=0", &token).await;
    r.assert_problem(422, Some("limit"));
}

#[actix_web::test]
async fn request_id_is_echoed_or_generated() {
    let app = TestApp::spawn().await;
    let r = app
        .request(
            Method::GET,
            "/health/live",
            None,
            None,
            &[("x-request-id", "abc-123")],
        )
        .await;
    assert_eq!(r.headers["x-request-id"], "abc-123");
    let r = app
        .request(
            Method::GET,
            "/health/live",
            None,
            None,
            &[("x-request-id", "bad id with spaces")],
        )
        .await;
    assert_ne!(r.headers["x-request-id"], "bad id with spaces");
    assert_eq!(r.headers["x-content-type-options"], "nosniff");
    assert_eq!(r.headers["x-frame-options"], "DENY");
}

#[actix_web::test]
async fn api_responses_are_not_cached() {
    let app = TestApp::spawn().await;
    let token = app.token(Role::Admin, &[]).await;
    let r = app.get("/api/v1/me", &token).await;
    assert_eq!(r.headers["cache-control"], "no-store");
}

#[actix_web::test]
async fn readiness_follows_the_database() {
    let app = TestApp::spawn().await;
    let r = app
        .request(Method::GET, "/health/ready", None, None, &[])
        .await;
    assert_eq!(r.status, 200, "{}", r.text);

    // Take the database away: refuse new connections and cut the open ones.
    let mut admin = PgConnection::establish(
        &std::env::var("CASEBOOK_TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into()),
    )
    .unwrap();
    admin
        .batch_execute(&format!(
            "ALTER DATABASE {0} ALLOW_CONNECTIONS false;
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{0}';",
            app.db.name
        ))
        .unwrap();
    // A connection the pool was opening while the database was altered can slip through,
    // and backends exit asynchronously: keep cutting connections until none is left, as a
    // stopped server would.
    let mut r = app
        .request(Method::GET, "/health/ready", None, None, &[])
        .await;
    for _ in 0..50 {
        if r.status == 503 {
            break;
        }
        admin
            .batch_execute(&format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{}'",
                app.db.name
            ))
            .unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        r = app
            .request(Method::GET, "/health/ready", None, None, &[])
            .await;
    }
    r.assert_problem(503, None);
    assert!(r.headers.get("retry-after").is_some());
    let r = app
        .request(Method::GET, "/health/live", None, None, &[])
        .await;
    assert_eq!(r.status, 200);

    admin
        .batch_execute(&format!(
            "ALTER DATABASE {} ALLOW_CONNECTIONS true",
            app.db.name
        ))
        .unwrap();
    let mut ready = false;
    for _ in 0..50 {
        let r = app
            .request(Method::GET, "/health/ready", None, None, &[])
            .await;
        if r.status == 200 {
            ready = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(ready, "readiness did not come back");
}

#[actix_web::test]
async fn readiness_is_503_while_migrations_are_pending() {
    let app = TestApp::spawn().await;
    let mut c = app.conn();
    c.batch_execute(
        "DELETE FROM __diesel_schema_migrations WHERE version = (SELECT max(version) FROM __diesel_schema_migrations)",
    )
    .unwrap();
    let r = app
        .request(Method::GET, "/health/ready", None, None, &[])
        .await;
    r.assert_problem(503, None);
}

#[test]
fn two_concurrent_migrations_apply_each_migration_once() {
    // an empty database, not the template
    let db = TestDb::new();
    let mut c = PgConnection::establish(&db.url).unwrap();
    c.batch_execute(
        "DROP SCHEMA public CASCADE; CREATE SCHEMA public; GRANT ALL ON SCHEMA public TO public;",
    )
    .unwrap();
    let url = db.url.clone();
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let u = url.clone();
            std::thread::spawn(move || casebook::db::migrate(&u))
        })
        .collect();
    let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let applied: usize = results
        .iter()
        .map(|r| r.as_ref().map(Vec::len).unwrap_or(0))
        .sum();
    let total = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
        .unwrap()
        .count();
    assert_eq!(
        applied, total,
        "each migration applied by exactly one instance"
    );
}

#[actix_web::test]
async fn openapi_document_lists_every_route() {
    let app = TestApp::spawn().await;
    let r = app
        .request(Method::GET, "/api/v1/openapi.json", None, None, &[])
        .await;
    assert_eq!(r.status, 200);
    assert!(r.body["openapi"].as_str().unwrap().starts_with("3."));
    let paths = r.body["paths"].as_object().unwrap();
    for p in crate::identity::ROUTES {
        assert!(
            paths.contains_key(p.path),
            "{} missing from the OpenAPI document",
            p.path
        );
    }
    let docs = app.request(Method::GET, "/docs/", None, None, &[]).await;
    assert_eq!(docs.status, 200);
    assert!(
        docs.text.contains("swagger"),
        "Swagger UI page served from the binary"
    );
}

#[actix_web::test]
async fn metrics_count_requests_by_route() {
    let app = TestApp::spawn().await;
    app.request(Method::GET, "/health/live", None, None, &[])
        .await;
    let r = app.request(Method::GET, "/metrics", None, None, &[]).await;
    assert_eq!(r.status, 200);
    assert!(
        r.text.contains(
            "casebook_http_requests_total{route=\"/health/live\",method=\"GET\",status=\"200\"} 1"
        ),
        "{}",
        r.text
    );
    assert!(r.text.contains("casebook_db_pool_connections"));
}
