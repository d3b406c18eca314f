//! PostgreSQL access: the pool, running work off the actix workers, migrations.

pub mod async_batch;
pub mod audit;
pub mod caller;
pub mod form_entry;
pub mod form_records;
pub mod guard;
pub mod queries;
pub mod sae_alerts;
pub mod safety;
pub mod schedule;
pub mod signatures;
pub mod study_versions;
pub mod subjects;

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::r2d2::{ConnectionManager, CustomizeConnection};
use diesel::{Connection, QueryResult, RunQueryDsl};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

use crate::config::DatabaseSettings;
use crate::error::{AppError, AppResult};

pub type Pool = r2d2::Pool<ConnectionManager<PgConnection>>;
pub type Conn = PgConnection;

pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// Advisory lock key for migrations ("casebook" in ASCII, truncated to fit an i64).
const MIGRATION_LOCK: i64 = 0x6361_7365_626f_6f6b;

#[derive(Debug)]
struct SessionSetup {
    statement_timeout_ms: u64,
    app_role: String,
    application_name: String,
    /// Dropped with the pool's shared state: see [`PoolGone`].
    _alive: Arc<()>,
}

/// Tells when a pool is really gone. r2d2 opens connections on threads of its own, and one
/// that is opening a connection keeps the pool alive until it is done; dropping our handle
/// does not wait for it. The pool's customizer is dropped only with the pool's shared state,
/// that is after every connection was closed and no r2d2 thread holds the pool any longer.
/// A process that exits while a thread is inside libpq can crash in libcrypto or libc as
/// their exit handlers run (issue 15), so the server waits for this before it returns.
#[derive(Debug)]
pub struct PoolGone(Weak<()>);

impl PoolGone {
    /// Waits up to `limit` for the pool to be gone; false if it is still there.
    pub fn wait(&self, limit: Duration) -> bool {
        let start = Instant::now();
        while self.0.strong_count() > 0 {
            if start.elapsed() >= limit {
                return false;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        true
    }
}

impl CustomizeConnection<PgConnection, diesel::r2d2::Error> for SessionSetup {
    fn on_acquire(&self, conn: &mut PgConnection) -> Result<(), diesel::r2d2::Error> {
        // A runaway query must not hold a connection forever; UTC so that every timestamp the
        // database renders is UTC.
        let mut sql = format!(
            "SET statement_timeout = {}; SET TIME ZONE 'UTC'; SET application_name = '{}';",
            self.statement_timeout_ms, self.application_name
        );
        if !self.app_role.is_empty() {
            // validated in config: letters, digits and _ only
            sql.push_str(&format!("SET ROLE {};", self.app_role));
        }
        conn.batch_execute(&sql)
            .map_err(diesel::r2d2::Error::QueryError)
    }
}

/// The `application_name` of this process's connections: `casebook` and a random tag, so
/// that [`cancel_running`] finds this instance's statements and no other's.
pub fn instance_name() -> String {
    format!("casebook {:012x}", rand::random::<u64>() & 0xffff_ffff_ffff)
}

/// Builds the pool without connecting: an outage later must not stop the server. Drop the
/// pool, then wait on the [`PoolGone`] before the process exits.
pub fn build_pool(db: &DatabaseSettings, application_name: &str) -> (Pool, PoolGone) {
    let manager = ConnectionManager::<PgConnection>::new(&db.url);
    let alive = Arc::new(());
    let gone = PoolGone(Arc::downgrade(&alive));
    let pool = r2d2::Pool::builder()
        .max_size(db.pool_max_size)
        .min_idle(Some(1))
        .connection_timeout(Duration::from_millis(db.pool_timeout_ms))
        // measured.md: SELECT 1 on every checkout costs 5-20% of throughput; a broken
        // connection surfaces as an error mapped to 503 and is discarded by r2d2.
        .test_on_check_out(false)
        .connection_customizer(Box::new(SessionSetup {
            statement_timeout_ms: db.statement_timeout_ms,
            app_role: db.app_role.clone(),
            // made by instance_name(): letters, digits and a space only
            application_name: application_name.to_owned(),
            _alive: alive,
        }))
        .error_handler(Box::new(r2d2::LoggingErrorHandler))
        .build_unchecked(manager);
    (pool, gone)
}

/// Cancels the statements this instance still has running (`application_name`), on a
/// connection of its own: at the end of the shutdown timeout, a request stuck in the database
/// is given up, and its statement must not go on to commit a write nobody was told about.
/// Returns how many were cancelled.
pub fn cancel_running(url: &str, application_name: &str) -> QueryResult<usize> {
    #[derive(diesel::QueryableByName)]
    struct Cancelled {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let mut conn = PgConnection::establish(url)
        .map_err(|e| diesel::result::Error::QueryBuilderError(e.to_string().into()))?;
    let done: Cancelled = diesel::sql_query(
        "SELECT count(*) FILTER (WHERE pg_cancel_backend(pid)) AS n FROM pg_stat_activity \
         WHERE application_name = $1 AND state = 'active' AND pid <> pg_backend_pid()",
    )
    .bind::<diesel::sql_types::Text, _>(application_name)
    .get_result(&mut conn)?;
    Ok(usize::try_from(done.n).unwrap_or(0))
}

/// Checks once that the database answers, so that `serve` can stop with a clear message.
pub fn check_reachable(url: &str) -> Result<(), String> {
    PgConnection::establish(url).map(|_| ()).map_err(|e| {
        e.to_string()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    })
}

/// Runs a unit of database work on the blocking thread pool, never on an actix worker.
pub async fn run<T, F>(pool: &Pool, work: F) -> AppResult<T>
where
    F: FnOnce(&mut Conn) -> AppResult<T> + Send + 'static,
    T: Send + 'static,
{
    let pool = pool.clone();
    actix_web::web::block(move || {
        let mut conn = pool.get()?;
        work(&mut conn)
    })
    .await?
}

/// Runs `work` in one transaction: everything it wrote commits or rolls back together.
pub async fn transaction<T, F>(pool: &Pool, work: F) -> AppResult<T>
where
    F: FnOnce(&mut Conn) -> AppResult<T> + Send + 'static,
    T: Send + 'static,
{
    run(pool, move |conn| conn.transaction(work)).await
}

/// Applies pending migrations under an advisory lock, so that instances starting together
/// take turns and the second finds nothing to do. Returns the versions applied.
pub fn migrate(url: &str) -> Result<Vec<String>, String> {
    let mut conn = PgConnection::establish(url).map_err(|e| e.to_string())?;
    conn.batch_execute(&format!("SELECT pg_advisory_lock({MIGRATION_LOCK})"))
        .map_err(|e| e.to_string())?;
    let result = conn
        .run_pending_migrations(MIGRATIONS)
        .map(|v| v.iter().map(|m| m.to_string()).collect())
        .map_err(|e| e.to_string());
    let unlock = conn
        .batch_execute(&format!("SELECT pg_advisory_unlock({MIGRATION_LOCK})"))
        .map_err(|e| e.to_string());
    let applied = result?;
    unlock?;
    Ok(applied)
}

#[derive(diesel::QueryableByName)]
struct AppliedVersion {
    #[diesel(sql_type = diesel::sql_types::Text)]
    version: String,
}

/// True when the schema is current: used by readiness and by `serve` at start. Reads the
/// migrations table directly: diesel's own check tries to create it, which the
/// application role may not do.
pub fn migrations_current(conn: &mut Conn) -> AppResult<bool> {
    use diesel::migration::MigrationSource;
    use diesel::RunQueryDsl;
    let applied: Vec<AppliedVersion> =
        diesel::sql_query("SELECT version FROM __diesel_schema_migrations")
            .load(conn)
            .map_err(|e| AppError::Unavailable(e.to_string()))?;
    let embedded = MigrationSource::<diesel::pg::Pg>::migrations(&MIGRATIONS)
        .map_err(|e| AppError::Internal(e.to_string()))?;
    Ok(embedded.iter().all(|m| {
        let v = m.name().version().to_string();
        applied.iter().any(|a| a.version == v)
    }))
}
