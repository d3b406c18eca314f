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
use crate::db::{self, Pool};
use crate::domain::protocol::Protocol;
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
    pub protocol: Arc<Protocol>,
    pub metrics: Arc<Metrics>,
    /// The lookups before new temperatures are made in batches
    pub temperature_contexts: ContextBatcher,
    /// Most new temperatures are checked and written in one statement, also in batches.
    pub temperature_entries: TemperatureEntries,
}

impl AppState {
    pub fn new(settings: Settings) -> Result<Self, String> {
        let protocol = Protocol::load(&settings.protocol)?;
        let hasher = Hasher::new(&settings.password)?;
        let tokens = Tokens::new(&settings.jwt);
        let instance = db::instance_name();
        let pool = db::build_pool(&settings.database, &instance);
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
            protocol: Arc::new(protocol),
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
    /// in the background meanwhile.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let state = self.state.clone();
        let sealer = actix_web::rt::spawn(seal_forever(state.clone()));
        let alerts = actix_web::rt::spawn(deliver_alerts_forever(state));
        let result = self.server.await;
        sealer.abort();
        alerts.abort();
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
        result
    }
}

async fn seal_forever(state: web::Data<AppState>) {
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
            Ok(Ok(n)) if n >= 5_000 => continue,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "audit sealer could not run; rows stay pending")
            }
            Err(e) => tracing::warn!(error = %e, "audit sealer task failed"),
        }
        tokio::time::sleep(interval).await;
    }
}

async fn deliver_alerts_forever(state: web::Data<AppState>) {
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
        tokio::time::sleep(interval).await;
    }
}
