//! The running protocol.

use actix_web::{web, HttpResponse};

use crate::app::AppState;
use crate::auth::{authorize, Caller, Permission};
use crate::error::AppResult;

use super::resource;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/study").route(web::get().to(study)));
}

/// The protocol this server runs: id, name, file hash, consent versions, eligibility
/// criteria, dose rule, fever threshold and limits.
#[utoipa::path(get, path = "/api/v1/study", tag = "study",
    responses((status = 200, body = crate::domain::protocol::Protocol), (status = 401, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn study(state: web::Data<AppState>, caller: Caller) -> AppResult<HttpResponse> {
    authorize(&caller, Permission::ReadStudy)?;
    Ok(HttpResponse::Ok().json(state.protocol.as_ref()))
}
