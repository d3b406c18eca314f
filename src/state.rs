//! The state every handler shares: the pool, settings, keys and the running study.
//! Start-up (src/startup.rs) builds it and serves with it; handlers take it and never the
//! other way round.

use std::sync::Arc;
use std::time::Duration;

use crate::auth::hashing::{HashingPool, Lowered};
use crate::auth::password::Hasher;
use crate::auth::token::Tokens;
use crate::config::Settings;
use crate::db::form_entry::{form_entries, FormEntries};
use crate::db::{self, Pool, PoolGone};
use crate::domain::protocol::Protocol;
use crate::domain::study::Definition;
use crate::telemetry::Metrics;

/// Everything a handler needs; shared by all workers.
pub struct AppState {
    pub pool: Pool,
    pub settings: Arc<Settings>,
    pub tokens: Tokens,
    pub hasher: Hasher,
    /// Password hashing runs on its own lowest-priority threads (src/auth/hashing.rs), so
    /// a login storm cannot starve other requests.
    hashing: HashingPool,
    /// The `application_name` of this instance's database connections.
    pub(crate) instance: String,
    /// Says when the pool's last connection is closed (see [`AppState::close`]).
    pool_gone: PoolGone,
    pub protocol: Arc<Protocol>,
    /// The running study definition (GET /study/definition).
    pub study: Arc<Definition>,
    pub metrics: Arc<Metrics>,
    /// Most new records of engine forms are checked and written in one statement, batched
    /// (services::form_entry).
    pub form_entries: FormEntries,
}

impl AppState {
    pub fn new(settings: Settings) -> Result<Self, String> {
        let protocol = Protocol::load(&settings.protocol)?;
        let study = crate::services::study::load(&settings.study)?;
        if study.study.id != protocol.file.study.id {
            // today's three forms still run from the protocol file (the form engine of issue
            // 17 replaces it): two different studies is a setting to look at, not an error
            tracing::warn!(
                study = %study.study.id,
                protocol = %protocol.file.study.id,
                "CASEBOOK_STUDY and CASEBOOK_PROTOCOL name different studies"
            );
        }
        let hasher = Hasher::new(&settings.password)?;
        let tokens = Tokens::new(&settings.jwt);
        let instance = db::instance_name();
        let (pool, pool_gone) = db::build_pool(&settings.database, &instance);
        crate::services::study::publish(&pool, &study, &instance)?;
        let db = &settings.database;
        let form_entries = form_entries(
            db.batch_max_size,
            db.batch_write_leaders,
            Duration::from_micros(db.batch_gather_us),
        );
        let threads = settings.password.hashing_threads();
        let (hashing, lowered) = HashingPool::start(hasher.clone(), threads)
            .map_err(|e| format!("cannot start the password hashing threads: {e}"))?;
        if lowered != Lowered::Idle {
            tracing::warn!(
                ?lowered,
                "password hashing threads could not be set to SCHED_IDLE; logins compete with requests"
            );
        }
        Ok(Self {
            pool,
            tokens,
            hasher,
            hashing,
            instance,
            pool_gone,
            protocol: Arc::new(protocol),
            study: Arc::new(study),
            metrics: Arc::new(Metrics::default()),
            form_entries,
            settings: Arc::new(settings),
        })
    }
}

impl AppState {
    /// Ends what the state started: the hashing threads are joined, and the pool's connections
    /// are closed and its threads have let go of it before this returns, so that nothing runs
    /// inside libpq when the process exits (issue 15). Returns false if the pool was not gone
    /// within `limit` (a connection attempt still waiting for its timeout).
    pub fn close(self, limit: Duration) -> bool {
        let Self {
            pool,
            pool_gone,
            hashing,
            ..
        } = self;
        hashing.stop();
        drop(pool);
        pool_gone.wait(limit)
    }

    /// Runs password work off the actix workers, on the low-priority hashing threads.
    pub async fn with_hasher<T, F>(&self, work: F) -> crate::error::AppResult<T>
    where
        F: FnOnce(&Hasher) -> T + Send + 'static,
        T: Send + 'static,
    {
        self.hashing
            .run(work)
            .await
            .map_err(crate::error::AppError::internal)
    }
}
