//! Builds the application: state, routes, middleware, the HTTP server and the background
//! loops (audit sealer, SAE alerts), and ends them in order at shutdown. Tests start exactly
//! this, on a random port. Nothing under src/api imports it.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::{middleware::from_fn, web, App, HttpServer};

use crate::config::Settings;
use crate::db;
use crate::state::AppState;
use crate::telemetry;

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
        // the request middleware's own share, so that telemetry needs no state
        let metrics = web::Data::from(state.metrics.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .app_data(metrics.clone())
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
