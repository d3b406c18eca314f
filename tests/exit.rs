//! The process exits cleanly right after a busy server is dropped (issue 15).
//!
//! A process that exits while one of its threads is inside libpq can die in the exit handlers
//! of libcrypto, libc or libkrb5 (SIGSEGV, SIGABRT): the API test binary did, now and then,
//! after all its tests had passed, because each test's server went on running, its workers
//! closing pooled connections, while the process exited. This test runs itself as child
//! processes; each starts the application, loads it with requests that use the database,
//! drops it mid-load and exits at once. Every child must exit 0. `CASEBOOK_EXIT_RUNS` sets
//! how many children (default 20).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code)]
#[path = "api/helpers.rs"]
mod helpers;

use std::process::Command;
use std::time::Duration;

use casebook::auth::Role;
use helpers::TestApp;

const CHILD: &str = "CASEBOOK_EXIT_CHILD";

fn main() {
    if std::env::var_os(CHILD).is_some() {
        child();
        return;
    }
    let runs: usize = std::env::var("CASEBOOK_EXIT_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let exe = std::env::current_exe().expect("own path");
    let mut failed = Vec::new();
    for run in 0..runs {
        let status = Command::new(&exe)
            .env(CHILD, run.to_string())
            .status()
            .expect("start child");
        if !status.success() {
            failed.push((run, status));
        }
    }
    println!(
        "exit: {} of {runs} children exited cleanly",
        runs - failed.len()
    );
    if !failed.is_empty() {
        eprintln!("exit: children that did not exit cleanly: {failed:?}");
        std::process::exit(1);
    }
}

/// Starts the application, loads it from 16 tasks (each request reads the database), drops it
/// after a varying time, and returns from `main` while the load tasks are still running.
fn child() {
    let run: u64 = std::env::var(CHILD)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    actix_web::rt::System::new().block_on(async move {
        let app = TestApp::spawn().await;
        let token = app.token(Role::Admin, &[]).await;
        for n in 0..16 {
            let client = app.client.clone();
            let token = token.clone();
            let url = if n % 2 == 0 {
                app.url("/api/v1/me")
            } else {
                app.url("/health/ready")
            };
            actix_web::rt::spawn(async move {
                loop {
                    let _ = client.get(&url).bearer_auth(&token).send().await;
                }
            });
        }
        tokio::time::sleep(Duration::from_millis(30 + (run * 37) % 200)).await;
        drop(app);
    });
}
