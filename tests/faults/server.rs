//! The real `casebook` binary as child processes: `serve` (so that it can be killed or sent
//! SIGTERM), and the `migrate`, `seed-demo` and `verify-audit` commands.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_casebook");
pub const DEMO_PASSWORD: &str = "demo password for casebook";

fn manifest() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The environment every casebook process gets: nothing inherited but PATH, so that a
/// DATABASE_URL or CASEBOOK_* of the caller cannot leak in.
fn base_command(db_url: &str, extra: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("CASEBOOK_CONFIG_DIR", manifest().join("config"))
        .env("CASEBOOK_ENV", "test")
        .env(
            "CASEBOOK_PROTOCOL",
            manifest().join("config/protocols/kawasaki.toml"),
        )
        .env("DATABASE_URL", db_url)
        .env("RUST_LOG", "info")
        .current_dir(manifest())
        .stdin(Stdio::null());
    for (k, v) in extra {
        cmd.env(k, v);
    }
    cmd
}

/// Runs a one-shot `casebook` command to completion.
pub fn cli(db_url: &str, args: &[&str]) -> Output {
    base_command(db_url, &[])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {BIN} {args:?}: {e}"))
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `casebook migrate` then `casebook seed-demo --accounts-only`: the schema and the demo
/// accounts, without the demo subjects (these tests count every row they write).
pub fn migrate_and_seed(db_url: &str) {
    let o = cli(db_url, &["migrate"]);
    assert!(o.status.success(), "casebook migrate failed: {}", text(&o));
    let o = cli(db_url, &["seed-demo", "--accounts-only"]);
    assert!(
        o.status.success(),
        "casebook seed-demo failed: {}",
        text(&o)
    );
}

/// `casebook verify-audit`: exit 0 and its report, or a panic with its output.
pub fn verify_audit(db_url: &str) -> String {
    let o = cli(db_url, &["verify-audit"]);
    let out = text(&o);
    assert!(
        o.status.success(),
        "casebook verify-audit failed ({}): {out}",
        o.status
    );
    out.trim().to_owned()
}

/// A `casebook serve` child process on 127.0.0.1. Killed when dropped.
pub struct Server {
    child: Child,
    pub port: u16,
    pub base: String,
    pub log: PathBuf,
}

impl Server {
    /// Starts `casebook serve` on `port`, logging to `log`, without waiting.
    pub fn spawn(db_url: &str, port: u16, log: &Path, extra: &[(&str, &str)]) -> Self {
        let listen = format!("127.0.0.1:{port}");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("{}: {e}", log.display()));
        let err = file.try_clone().expect("clone log handle");
        let mut all: Vec<(&str, &str)> = vec![("CASEBOOK_LISTEN", listen.as_str())];
        all.extend_from_slice(extra);
        let child = base_command(db_url, &all)
            .arg("serve")
            .stdout(file)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {BIN} serve: {e}"));
        Self {
            child,
            port,
            base: format!("http://127.0.0.1:{port}"),
            log: log.to_path_buf(),
        }
    }

    /// Starts the server and waits until `/health/ready` answers 200.
    pub async fn start(db_url: &str, port: u16, log: &Path, extra: &[(&str, &str)]) -> Self {
        let mut s = Self::spawn(db_url, port, log, extra);
        s.wait_ready(Duration::from_secs(30)).await;
        s
    }

    pub async fn wait_ready(&mut self, within: Duration) {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .expect("client");
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.try_wait() {
                panic!(
                    "casebook serve exited before it was ready ({status}):\n{}",
                    self.log_tail(30)
                );
            }
            if let Ok(r) = client.get(self.url("/health/ready")).send().await {
                if r.status() == 200 {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "casebook serve not ready after {within:?}:\n{}",
                self.log_tail(30)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("try_wait")
    }

    /// SIGTERM: graceful shutdown.
    pub fn terminate(&self) {
        let ok = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -TERM {} failed", self.pid());
    }

    /// SIGKILL, and reap.
    pub fn kill(&mut self) -> ExitStatus {
        let _ = self.child.kill();
        self.child.wait().expect("wait for the killed server")
    }

    /// Waits up to `within` for the process to exit.
    pub async fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(s) = self.try_wait() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = self.log_text();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Log lines at ERROR level (an internal error is logged there with its cause).
    pub fn error_lines(&self) -> Vec<String> {
        self.log_text()
            .lines()
            .filter(|l| l.contains("\"level\":\"ERROR\""))
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
