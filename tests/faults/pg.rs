//! A private PostgreSQL cluster for the fault tests: initdb'd once per test binary run under
//! the target directory, on a free port of 127.0.0.1, stopped and started at will. The
//! machine's own server is never touched. A watchdog process stops the cluster and removes
//! its directory when this test process exits, however it exits.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::BigInt;

pub const SKIP_VAR: &str = "CASEBOOK_SKIP_FAULT_TESTS";
/// Keeps the cluster directory (server logs included) after the run, for post-mortems.
pub const KEEP_VAR: &str = "CASEBOOK_KEEP_FAULT_PG";

pub struct Cluster {
    bin: PathBuf,
    pub dir: PathBuf,
    data: PathBuf,
    run: PathBuf,
    pub log_dir: PathBuf,
    pub port: u16,
    as_root: bool,
}

/// The cluster of this run; `None` when the fault tests are skipped on purpose.
/// Panics with a clear message when PostgreSQL's server tools are missing.
pub fn cluster() -> Option<&'static Cluster> {
    if std::env::var(SKIP_VAR).is_ok_and(|v| v == "1") {
        eprintln!("fault tests skipped: {SKIP_VAR}=1");
        return None;
    }
    static CLUSTER: OnceLock<Result<Cluster, String>> = OnceLock::new();
    match CLUSTER.get_or_init(Cluster::create) {
        Ok(c) => Some(c),
        Err(e) => panic!("fault tests cannot run: {e}\n(set {SKIP_VAR}=1 to skip them)"),
    }
}

/// Where initdb and pg_ctl are, instead of looking for them.
pub const BIN_VAR: &str = "CASEBOOK_FAULT_PG_BIN";

/// $CASEBOOK_FAULT_PG_BIN, else the newest /usr/lib/postgresql/N/bin with initdb and pg_ctl,
/// else initdb on PATH.
fn find_bin() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os(BIN_VAR) {
        let bin = PathBuf::from(dir);
        return if bin.join("initdb").is_file() && bin.join("pg_ctl").is_file() {
            Ok(bin)
        } else {
            Err(format!(
                "{BIN_VAR}={} holds no initdb and pg_ctl",
                bin.display()
            ))
        };
    }
    let mut best: Option<(u32, PathBuf)> = None;
    if let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") {
        for e in entries.flatten() {
            let bin = e.path().join("bin");
            let version = e.file_name().to_string_lossy().parse::<u32>().unwrap_or(0);
            if bin.join("initdb").is_file()
                && bin.join("pg_ctl").is_file()
                && best.as_ref().is_none_or(|(v, _)| version > *v)
            {
                best = Some((version, bin));
            }
        }
    }
    if let Some((_, bin)) = best {
        return Ok(bin);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let initdb = dir.join("initdb");
        if initdb.is_file() {
            let real = std::fs::canonicalize(&initdb).unwrap_or(initdb);
            let bin = real.parent().map(Path::to_path_buf).unwrap_or(dir.clone());
            if bin.join("pg_ctl").is_file() {
                return Ok(bin);
            }
            if dir.join("pg_ctl").is_file() {
                return Ok(dir);
            }
        }
    }
    Err(
        "PostgreSQL's initdb and pg_ctl were not found (looked in /usr/lib/postgresql/*/bin \
         and on PATH); install the server, e.g. `apt-get install -y postgresql`"
            .into(),
    )
}

fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local addr").port()
}

fn output_text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

impl Cluster {
    fn create() -> Result<Self, String> {
        let bin = find_bin()?;
        let as_root = effective_uid() == Some(0);
        if as_root {
            let ok = Command::new("getent")
                .args(["passwd", "postgres"])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                return Err(
                    "running as root, but there is no `postgres` user to run initdb \
                            and the server as"
                        .into(),
                );
            }
        }
        // As root the cluster runs as `postgres`, which must be able to reach its directory:
        // a checkout under /root (mode 700) would not do, /tmp always does.
        let root = if as_root {
            std::env::temp_dir().join("casebook-fault-tests")
        } else {
            PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        };
        std::fs::create_dir_all(&root).map_err(|e| format!("{}: {e}", root.display()))?;
        let dir = root.join(format!("fault-pg-{}", std::process::id()));
        let c = Self {
            data: dir.join("data"),
            run: dir.join("run"),
            log_dir: dir.join("log"),
            dir,
            bin,
            port: free_port(),
            as_root,
        };
        c.remove_stale(&root);
        let _ = std::fs::remove_dir_all(&c.dir);
        for d in [&c.data, &c.run, &c.log_dir] {
            std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
        }
        if as_root {
            let o = Command::new("chown")
                .args(["-R", "postgres:"])
                .arg(&c.dir)
                .output()
                .map_err(|e| format!("chown: {e}"))?;
            if !o.status.success() {
                return Err(format!("chown -R postgres: failed: {}", output_text(&o)));
            }
        }
        c.spawn_watchdog()?;
        let started = Instant::now();
        let o = c
            .as_owner(&c.bin.join("initdb"))
            .arg("-D")
            .arg(&c.data)
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                "--no-sync",
            ])
            .output()
            .map_err(|e| format!("cannot run initdb: {e}"))?;
        if !o.status.success() {
            return Err(format!(
                "initdb failed (as {}): {}",
                if as_root { "postgres" } else { "this user" },
                output_text(&o)
            ));
        }
        c.start_inner()?;
        eprintln!(
            "fault tests: private PostgreSQL ({}) on 127.0.0.1:{} in {} ({:.1} s)",
            c.bin.display(),
            c.port,
            c.dir.display(),
            started.elapsed().as_secs_f64()
        );
        Ok(c)
    }

    /// Clusters left by runs that died without their watchdog.
    fn remove_stale(&self, root: &Path) {
        let Ok(entries) = std::fs::read_dir(root) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(pid) = name.strip_prefix("fault-pg-") else {
                continue;
            };
            if Path::new(&format!("/proc/{pid}")).exists() {
                continue;
            }
            let data = e.path().join("data");
            if data.join("postmaster.pid").exists() {
                let _ = self
                    .as_owner(&self.bin.join("pg_ctl"))
                    .arg("-D")
                    .arg(&data)
                    .args(["-m", "immediate", "-w", "stop"])
                    .output();
            }
            let _ = std::fs::remove_dir_all(e.path());
        }
    }

    /// A process that outlives this one by a moment: it stops the cluster (and removes its
    /// directory) once this test process has exited, since statics are never dropped.
    fn spawn_watchdog(&self) -> Result<(), String> {
        let pg_ctl = self.bin.join("pg_ctl");
        let stop = if self.as_root {
            format!(
                "runuser -u postgres -- '{}' -D '{}' -m immediate -w stop",
                pg_ctl.display(),
                self.data.display()
            )
        } else {
            format!(
                "'{}' -D '{}' -m immediate -w stop",
                pg_ctl.display(),
                self.data.display()
            )
        };
        let remove = if std::env::var(KEEP_VAR).is_ok_and(|v| v == "1") {
            String::new()
        } else {
            format!("rm -rf '{}'", self.dir.display())
        };
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 0.2; done; cd /; {stop} >/dev/null 2>&1; {remove}",
            pid = std::process::id()
        );
        Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map(|_| ())
            .map_err(|e| format!("cannot start the cleanup watchdog: {e}"))
    }

    /// A command run as the cluster's owner (postgres when we are root: initdb and the
    /// server refuse to run as root).
    fn as_owner(&self, program: &Path) -> Command {
        let mut cmd = if self.as_root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        };
        // the owner must be able to enter the working directory
        cmd.current_dir(&self.dir).stdin(Stdio::null());
        cmd
    }

    fn pg_ctl(&self) -> Command {
        let mut c = self.as_owner(&self.bin.join("pg_ctl"));
        c.arg("-D").arg(&self.data);
        c
    }

    fn start_inner(&self) -> Result<(), String> {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off \
             -c full_page_writes=off -c max_connections=300",
            self.port,
            self.run.display()
        );
        let mut last = String::new();
        // One retry: a postmaster that just stopped can linger a moment holding its lock.
        for attempt in 0..2 {
            let o = self
                .pg_ctl()
                .arg("-l")
                .arg(self.log_dir.join("postgres.log"))
                .args(["-w", "-t", "60", "-o", &opts, "start"])
                .output()
                .map_err(|e| format!("cannot run pg_ctl: {e}"))?;
            if o.status.success() {
                return Ok(());
            }
            last = output_text(&o);
            if attempt == 0 {
                std::thread::sleep(Duration::from_secs(1));
            }
        }
        Err(format!(
            "pg_ctl start failed: {last}\n{}",
            self.server_log_tail(20)
        ))
    }

    pub fn server_log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(self.log_dir.join("postgres.log")).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// `pg_ctl start -w` (blocking).
    pub fn start(&self) {
        if let Err(e) = self.start_inner() {
            panic!("{e}");
        }
    }

    /// `pg_ctl stop -m fast -w` (blocking): sessions are terminated, the server is gone
    /// when this returns.
    pub fn stop_fast(&self) {
        let o = self
            .pg_ctl()
            .args(["-m", "fast", "-w", "-t", "60", "stop"])
            .output()
            .expect("run pg_ctl stop");
        assert!(
            o.status.success(),
            "pg_ctl stop failed: {}",
            output_text(&o)
        );
    }

    pub fn is_running(&self) -> bool {
        self.pg_ctl()
            .arg("status")
            .output()
            .is_ok_and(|o| o.status.success())
    }

    /// Starts the cluster if an earlier (failed) test left it stopped.
    pub fn ensure_running(&self) {
        if !self.is_running() {
            self.start();
        }
    }

    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    pub fn connect(&self, db: &str) -> PgConnection {
        let url = self.url(db);
        PgConnection::establish(&url).unwrap_or_else(|e| panic!("connect {url}: {e}"))
    }

    /// A fresh, empty database.
    pub fn create_db(&self, name: &str) {
        let mut admin = self.connect("postgres");
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .expect("drop database");
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .expect("create database");
    }
}

#[derive(QueryableByName)]
struct N {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// `SELECT <bigint> AS n ...`: one number.
pub fn count(conn: &mut PgConnection, sql: &str) -> i64 {
    diesel::sql_query(sql)
        .get_result::<N>(conn)
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .n
}

/// `SELECT <bigint> AS n ...`: a column of numbers.
pub fn numbers(conn: &mut PgConnection, sql: &str) -> Vec<i64> {
    diesel::sql_query(sql)
        .load::<N>(conn)
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .into_iter()
        .map(|r| r.n)
        .collect()
}

#[derive(QueryableByName)]
struct S {
    #[diesel(sql_type = diesel::sql_types::Text)]
    s: String,
}

/// `SELECT <text> AS s ...`: a column of strings.
pub fn strings(conn: &mut PgConnection, sql: &str) -> Vec<String> {
    diesel::sql_query(sql)
        .load::<S>(conn)
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .into_iter()
        .map(|r| r.s)
        .collect()
}
