//! The test harness: each test gets its own database, cloned from a migrated template,
//! and the real application on a random port. Tests talk HTTP like a client and look at
//! the rows and audit entries left behind through a direct connection.

use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::OnceLock;

use casebook::audit::RequestMeta;
use casebook::auth::password::Hasher;
use casebook::auth::Role;
use casebook::config::Settings;
use casebook::startup::Application;
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};
use reqwest::StatusCode;
use serde_json::Value;

pub const PASSWORD: &str = "a long test passphrase";

fn maintenance_url() -> String {
    std::env::var("CASEBOOK_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

fn url_for(db: &str) -> String {
    let base = maintenance_url();
    let (head, query) = match base.split_once('?') {
        Some((h, q)) => (h.to_owned(), format!("?{q}")),
        None => (base.clone(), String::new()),
    };
    let server = head
        .rsplit_once('/')
        .map(|(s, _)| s.to_owned())
        .unwrap_or(head);
    format!("{server}/{db}{query}")
}

fn manifest() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The template's name changes whenever a migration changes.
fn template_name() -> String {
    use sha2::{Digest, Sha256};
    let mut files: Vec<PathBuf> = Vec::new();
    let mut stack = vec![manifest().join("migrations")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("migrations dir").flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                files.push(p);
            }
        }
    }
    files.sort();
    let mut h = Sha256::new();
    for f in files {
        h.update(f.to_string_lossy().as_bytes());
        h.update(std::fs::read(&f).expect("read migration"));
    }
    format!("casebook_tpl_{}", &hex::encode(h.finalize())[..16])
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// Creates the template once per run; several test processes may race, hence the lock.
fn template() -> &'static str {
    static TEMPLATE: OnceLock<String> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let name = template_name();
        let mut admin = PgConnection::establish(&maintenance_url())
            .expect("CASEBOOK_TEST_DATABASE_URL must reach a PostgreSQL superuser");
        admin.batch_execute("SELECT pg_advisory_lock(4242)").expect("lock");
        let exists: Count = diesel::sql_query("SELECT count(*) AS n FROM pg_database WHERE datname = $1")
            .bind::<Text, _>(&name)
            .get_result(&mut admin)
            .expect("query pg_database");
        if exists.n == 0 {
            // leftovers of crashed runs and older templates
            let stale: Vec<Name> = diesel::sql_query(
                "SELECT datname AS name FROM pg_database WHERE datname LIKE 'casebook_tpl_%'",
            )
            .load(&mut admin)
            .expect("list templates");
            for s in stale {
                let _ = admin.batch_execute(&format!(
                    "ALTER DATABASE {0} WITH IS_TEMPLATE false; DROP DATABASE IF EXISTS {0} WITH (FORCE)",
                    s.name
                ));
            }
            admin
                .batch_execute(&format!("CREATE DATABASE {name}"))
                .expect("create template");
            casebook::db::migrate(&url_for(&name)).expect("migrate template");
            admin
                .batch_execute(&format!(
                    "ALTER DATABASE {name} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false"
                ))
                .expect("mark template");
        }
        admin.batch_execute("SELECT pg_advisory_unlock(4242)").expect("unlock");
        name
    })
}

#[derive(QueryableByName)]
struct Name {
    #[diesel(sql_type = Text)]
    name: String,
}

/// A fresh database for one test; dropped with the guard.
pub struct TestDb {
    pub name: String,
    pub url: String,
}

impl TestDb {
    pub fn new() -> Self {
        let tpl = template();
        let name = format!("casebook_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = PgConnection::establish(&maintenance_url()).expect("maintenance db");
        admin
            .batch_execute(&format!(
                "CREATE DATABASE {name} TEMPLATE {tpl} STRATEGY FILE_COPY"
            ))
            .expect("clone template");
        let url = url_for(&name);
        Self { name, url }
    }

    /// A database without any migration, for tests of a migration on data of an older schema.
    pub fn empty() -> Self {
        let name = format!("casebook_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = PgConnection::establish(&maintenance_url()).expect("maintenance db");
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .expect("create db");
        let url = url_for(&name);
        Self { name, url }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if std::env::var("CASEBOOK_KEEP_TEST_DB").is_ok() {
            eprintln!("kept test database {}", self.name);
            return;
        }
        if let Ok(mut admin) = PgConnection::establish(&maintenance_url()) {
            let _ = admin.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
        }
    }
}

pub fn test_settings(db_url: &str, extra: &[(&str, &str)]) -> Settings {
    let mut vars = vec![
        ("CASEBOOK_ENV".to_owned(), "test".to_owned()),
        ("DATABASE_URL".to_owned(), db_url.to_owned()),
        ("CASEBOOK_LISTEN".to_owned(), "127.0.0.1:0".to_owned()),
        (
            "CASEBOOK_PROTOCOL".to_owned(),
            manifest()
                .join("config/protocols/kawasaki.toml")
                .to_string_lossy()
                .into_owned(),
        ),
        (
            "CASEBOOK_STUDY".to_owned(),
            manifest()
                .join("config/studies/kawasaki.toml")
                .to_string_lossy()
                .into_owned(),
        ),
    ];
    for (k, v) in extra {
        vars.retain(|(key, _)| key != k);
        vars.push(((*k).to_owned(), (*v).to_owned()));
    }
    Settings::load_from(&manifest().join("config"), &vars).expect("test settings")
}

/// A server on its own thread and actix System. Dropping it stops the server and waits for
/// its thread, which returns only when the server's workers, background loops and pool are
/// gone: a test leaves no thread behind that could be inside libpq when the test process
/// exits (issue 15: such a thread crashed the process in libcrypto's exit handlers).
pub struct RunningServer {
    pub port: u16,
    pub handle: actix_web::dev::ServerHandle,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RunningServer {
    pub fn start(settings: Settings) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("test-server".into())
            .spawn(move || {
                actix_web::rt::System::new().block_on(async move {
                    let app =
                        Application::build_with_listener(settings, listener).expect("build app");
                    tx.send((app.port(), app.handle())).expect("test waits");
                    let _ = app.run_until_stopped().await;
                })
            })
            .expect("server thread");
        let (port, handle) = rx.recv().expect("server started");
        Self {
            port,
            handle,
            thread: Some(thread),
        }
    }

    pub fn address(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        // The command is sent at once; the future only waits for its completion.
        drop(self.handle.stop(false));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub settings: Settings,
    pub server: RunningServer,
    // last: dropped after the server is stopped
    pub db: TestDb,
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(&[]).await
    }

    /// Starts the app with extra environment-style settings.
    pub async fn spawn_with(extra: &[(&str, &str)]) -> Self {
        let db = actix_web::web::block(TestDb::new).await.expect("test db");
        Self::spawn_on(db, extra).await
    }

    pub async fn spawn_on(db: TestDb, extra: &[(&str, &str)]) -> Self {
        if std::env::var("TEST_LOG").is_ok() {
            casebook::telemetry::init_logging();
        }
        let settings = test_settings(&db.url, extra);
        let server = RunningServer::start(settings.clone());
        Self {
            address: server.address(),
            // the server closes idle keep-alive connections after 5 s; never reuse one that old
            client: reqwest::Client::builder()
                .pool_idle_timeout(std::time::Duration::from_secs(2))
                .build()
                .expect("http client"),
            settings,
            server,
            db,
        }
    }

    /// A second instance of the application on this test's database.
    pub fn second_instance(&self) -> RunningServer {
        RunningServer::start(self.settings.clone())
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    /// A direct superuser connection to this test's database, for arrange and assert.
    pub fn conn(&self) -> PgConnection {
        PgConnection::establish(&self.db.url).expect("connect test db")
    }

    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Resp {
        let mut rb = self.client.request(method, self.url(path));
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        if let Some(b) = body {
            rb = rb.json(b);
        }
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        let resp = rb.send().await.expect("request sent");
        Resp::read(resp).await
    }

    pub async fn get(&self, path: &str, token: &str) -> Resp {
        self.request(reqwest::Method::GET, path, Some(token), None, &[])
            .await
    }

    pub async fn post(&self, path: &str, token: &str, body: &Value) -> Resp {
        self.request(reqwest::Method::POST, path, Some(token), Some(body), &[])
            .await
    }

    pub async fn patch(&self, path: &str, token: &str, version: i64, body: &Value) -> Resp {
        let v = format!("\"{version}\"");
        self.request(
            reqwest::Method::PATCH,
            path,
            Some(token),
            Some(body),
            &[("if-match", &v)],
        )
        .await
    }

    /// Creates a site directly (arrange step).
    pub fn site(&self, code: &str, time_zone: &str) -> i64 {
        let mut c = self.conn();
        casebook::services::users::ensure_site(
            &mut c,
            code,
            &format!("Site {code}"),
            "FR",
            time_zone,
            &RequestMeta::default(),
        )
        .expect("site")
    }

    /// Creates a user with the test password (arrange step); returns the e-mail.
    pub fn user(&self, role: Role, site_codes: &[&str]) -> String {
        static HASH: OnceLock<String> = OnceLock::new();
        let hash = HASH.get_or_init(|| {
            Hasher::new(&self.settings.password)
                .expect("hasher")
                .hash(PASSWORD)
                .expect("hash")
        });
        let email = format!(
            "{}.{}@test.casebook",
            role.as_str(),
            uuid::Uuid::new_v4().simple()
        );
        let mut c = self.conn();
        let codes: Vec<String> = site_codes.iter().map(|s| (*s).to_owned()).collect();
        c.transaction(|c| {
            let ids = casebook::services::users::site_ids_for_codes(c, "site_codes", &codes)?;
            casebook::services::users::create_user(
                c,
                &casebook::services::users::NewUser {
                    email: &email,
                    name: "Test User",
                    role,
                    password_hash: hash,
                    site_ids: &ids,
                },
                None,
                &RequestMeta::default(),
            )
        })
        .expect("user");
        email
    }

    pub async fn login(&self, email: &str) -> String {
        let r = self
            .request(
                reqwest::Method::POST,
                "/api/v1/auth/login",
                None,
                Some(&serde_json::json!({"email": email, "password": PASSWORD})),
                &[],
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "login failed: {}", r.body);
        r.body["access_token"].as_str().expect("token").to_owned()
    }

    /// A user of `role` at `sites`, logged in: returns the access token.
    pub async fn token(&self, role: Role, sites: &[&str]) -> String {
        let email = self.user(role, sites);
        self.login(&email).await
    }

    /// Counts rows with a raw SQL count query (`SELECT count(*) AS n ...`).
    pub fn count(&self, sql: &str) -> i64 {
        let mut c = self.conn();
        diesel::sql_query(sql)
            .get_result::<Count>(&mut c)
            .expect("count")
            .n
    }

    /// Waits until the sealer has chained every committed audit row.
    pub async fn wait_sealed(&self) {
        for _ in 0..200 {
            if self.count("SELECT count(*) AS n FROM audit_unsealed") == 0 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        panic!("audit rows were not sealed in time");
    }
}

/// A response read whole: status, headers, JSON body (Null when not JSON).
pub struct Resp {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Resp {
    pub async fn read(resp: reqwest::Response) -> Self {
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Self {
            status,
            headers,
            body,
            text,
        }
    }

    pub fn content_type(&self) -> &str {
        self.headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    /// Asserts a problem+json body with this status, naming `field` when given.
    pub fn assert_problem(&self, status: u16, field: Option<&str>) {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.text);
        assert_eq!(
            self.content_type(),
            "application/problem+json",
            "body: {}",
            self.text
        );
        assert_eq!(self.body["status"].as_u64(), Some(u64::from(status)));
        assert!(self.body["title"].is_string() && self.body["type"].is_string());
        if let Some(f) = field {
            let named = self.body["errors"]
                .as_array()
                .is_some_and(|errs| errs.iter().any(|e| e["field"] == f));
            assert!(named, "expected an error naming `{f}`: {}", self.text);
        }
    }
}
