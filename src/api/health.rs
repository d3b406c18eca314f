//! Liveness, readiness and metrics.

use actix_web::{web, HttpResponse};
use serde::Serialize;
use utoipa::ToSchema;

use crate::db;
use crate::error::{AppError, AppResult};
use crate::state::AppState;

use super::resource;

#[derive(Serialize, ToSchema)]
pub struct Health {
    pub status: &'static str,
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/health/live").route(web::get().to(live)))
        .service(resource("/health/ready").route(web::get().to(ready)))
        .service(resource("/metrics").route(web::get().to(metrics)));
}

/// The process is up.
#[utoipa::path(get, path = "/health/live", tag = "operations",
    responses((status = 200, body = Health)))]
pub async fn live() -> HttpResponse {
    HttpResponse::Ok().json(Health { status: "live" })
}

/// The database answers and the schema is current.
#[utoipa::path(get, path = "/health/ready", tag = "operations",
    responses((status = 200, body = Health), (status = 503, body = crate::error::Problem)))]
pub async fn ready(state: web::Data<AppState>) -> AppResult<HttpResponse> {
    let current = db::run(&state.pool, db::migrations_current).await?;
    if !current {
        return Err(AppError::Unavailable("migrations pending".into()));
    }
    Ok(HttpResponse::Ok().json(Health { status: "ready" }))
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, content_type = "text/plain", body = String)))]
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render(&state.pool))
}
