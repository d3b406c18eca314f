//! Builds the application: state, routes, middleware, the HTTP server and the audit sealer.
//! Tests start exactly this, on a random port.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::{middleware::from_fn, web, App, HttpServer};

use crate::api::clinical::entry::{context_batcher, ContextBatcher};
use crate::auth::hashing::{HashingPool, Lowered};
use crate::auth::password::Hasher;
use crate::auth::token::Tokens;
use crate::config::Settings;
use crate::db::temperature_entry::{temperature_entries, TemperatureEntries};
use crate::db::{self, Pool, PoolGone};
use crate::domain::protocol::Protocol;
use crate::domain::study::Definition;
use crate::telemetry::{self, Metrics};

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
    instance: String,
    /// Says when the pool's last connection is closed (see [`AppState::close`]).
    pool_gone: PoolGone,
    pub protocol: Arc<Protocol>,
    /// The running study definition (GET /study/definition).
    pub study: Arc<Definition>,
    pub metrics: Arc<Metrics>,
    /// The lookups before new temperatures are made in batches
    pub temperature_contexts: ContextBatcher,
    /// Most new temperatures are checked and written in one statement, also in batches.
    pub temperature_entries: TemperatureEntries,
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
        let temperature_contexts = context_batcher(db.batch_max_size, db.batch_lookup_leaders);
        let temperature_entries = temperature_entries(
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
            temperature_contexts,
            temperature_entries,
            settings: Arc::new(settings),
        })
    }
}

/// Binds with a listen backlog of 1024: std's `TcpListener::bind` uses 128, and a burst of
/// new connections beyond it waits a second in the kernel (seen in the fault tests).
pub fn listen(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
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

pub struct Application {
    port: u16,
    server: Server,
    state: web::Data<AppState>,
}

impl Application {
    /// Binds the listener and builds the server; nothing runs until `run_until_stopped`.
    pub fn build(settings: Settings) -> Result<Self, String> {
        let listener = listen(settings.listen)
            .map_err(|e| format!("CASEBOOK_LISTEN: cannot bind {}: {e}", settings.listen))?;
        Self::build_with_listener(settings, listener)
    }

    pub fn build_with_listener(settings: Settings, listener: TcpListener) -> Result<Self, String> {
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        let shutdown = settings.shutdown_timeout_secs;
        let request_timeout = settings.client_request_timeout_ms;
        let state = web::Data::new(AppState::new(settings)?);
        let data = state.clone();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .app_data(crate::api::query_config())
                .app_data(crate::api::path_config())
                .wrap(from_fn(telemetry::middleware))
                .configure(crate::api::routes)
        })
        .listen(listener)
        .map_err(|e| e.to_string())?
        .shutdown_timeout(shutdown)
        .client_request_timeout(Duration::from_millis(request_timeout))
        .run();
        Ok(Self {
            port,
            server,
            state,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn handle(&self) -> actix_web::dev::ServerHandle {
        self.server.handle()
    }

    /// Serves until the server stops (SIGTERM, SIGINT or a handle), sealing audit rows
    /// in the background meanwhile. When it returns, the background loops have ended, every
    /// worker has let go of the state, and the pool is closed: the process may exit.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let sealer = actix_web::rt::spawn(seal_forever(self.state.clone(), stopped.clone()));
        let alerts = actix_web::rt::spawn(deliver_alerts_forever(self.state.clone(), stopped));
        let result = self.server.await;
        // Not `abort`: a loop may be inside `web::block`, whose closure would go on running in
        // libpq after its task is gone. Each loop ends after its current round.
        let _ = stop.send(true);
        let _ = sealer.await;
        let _ = alerts.await;
        // Requests still in the database when the shutdown timeout ran out were given up:
        // cancel their statements, so that none commits after its client lost the answer.
        let state = self.state.clone();
        let cancelled =
            web::block(move || db::cancel_running(&state.settings.database.url, &state.instance))
                .await;
        match cancelled {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => tracing::warn!(
                statements = n,
                "cancelled statements of requests given up at shutdown"
            ),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "could not cancel the statements still running at shutdown")
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not cancel the statements still running at shutdown")
            }
        }
        // Seal what the last requests wrote before exiting, when the database allows.
        let state = self.state.clone();
        let _ = web::block(move || {
            let mut conn = state.pool.get().ok()?;
            crate::audit::seal_pending(&mut conn, 100_000).ok()
        })
        .await;
        close_when_released(self.state.into_inner()).await;
        result
    }
}

/// Waits until the workers (and any blocking work they left running) have dropped their
/// share of the state, then closes it on a blocking thread. Bounded: a share still held
/// after the limit is reported, and the process goes on to exit.
async fn close_when_released(state: Arc<AppState>) {
    const LIMIT: Duration = Duration::from_secs(15);
    let start = std::time::Instant::now();
    let mut state = state;
    let owned = loop {
        match Arc::try_unwrap(state) {
            Ok(owned) => break owned,
            Err(shared) if start.elapsed() < LIMIT => {
                state = shared;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err(shared) => {
                tracing::warn!(
                    holders = Arc::strong_count(&shared) - 1,
                    "shutdown: the state is still held; exiting without closing the pool"
                );
                return;
            }
        }
    };
    let closed = web::block(move || owned.close(LIMIT)).await;
    if !matches!(closed, Ok(true)) {
        tracing::warn!("shutdown: the database pool did not close in time");
    }
}

/// Sleeps `interval`, or less if the server is stopping; true when it is.
async fn stopping_after(
    interval: Duration,
    stopped: &mut tokio::sync::watch::Receiver<bool>,
) -> bool {
    if *stopped.borrow() {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(interval) => *stopped.borrow(),
        _ = stopped.changed() => true,
    }
}

async fn seal_forever(state: web::Data<AppState>, mut stopped: tokio::sync::watch::Receiver<bool>) {
    let interval = Duration::from_millis(state.settings.audit.seal_interval_ms.max(1));
    loop {
        let s = state.clone();
        let sealed = web::block(move || -> Result<usize, String> {
            let mut conn = s.pool.get().map_err(|e| e.to_string())?;
            crate::audit::seal_pending(&mut conn, 5_000).map_err(|e| e.to_string())
        })
        .await;
        match sealed {
            // a full batch: more may be waiting, go again at once
            Ok(Ok(n)) if n >= 5_000 && !*stopped.borrow() => continue,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "audit sealer could not run; rows stay pending")
            }
            Err(e) => tracing::warn!(error = %e, "audit sealer task failed"),
        }
        if stopping_after(interval, &mut stopped).await {
            return;
        }
    }
}

async fn deliver_alerts_forever(
    state: web::Data<AppState>,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    let interval = Duration::from_millis(state.settings.sae.poll_interval_ms.max(10));
    loop {
        let s = state.clone();
        let delivered = web::block(move || -> Result<usize, String> {
            let mut conn = s.pool.get().map_err(|e| e.to_string())?;
            crate::services::sae::deliver_due(&mut conn, &s.settings.sae).map_err(|e| e.to_string())
        })
        .await;
        match delivered {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "SAE alert delivery could not run"),
            Err(e) => tracing::warn!(error = %e, "SAE alert task failed"),
        }
        if stopping_after(interval, &mut stopped).await {
            return;
        }
    }
}
