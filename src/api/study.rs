//! The running protocol and study definition.

use actix_web::{web, HttpResponse};

use crate::auth::{authorize, Caller, Permission};
use crate::domain::study::view::DefinitionView;
use crate::error::AppResult;
use crate::state::AppState;

use super::resource;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/study").route(web::get().to(study)))
        .service(resource("/study/definition").route(web::get().to(definition)));
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

/// The running study definition: visits with their windows, forms with their items (types,
/// units, ranges, code lists, conditions, derivations), edit checks and named rules; what a
/// client reads to build its forms (docs/study-definitions.md).
#[utoipa::path(get, path = "/api/v1/study/definition", tag = "study",
    responses((status = 200, body = crate::domain::study::view::DefinitionView), (status = 401, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn definition(state: web::Data<AppState>, caller: Caller) -> AppResult<HttpResponse> {
    authorize(&caller, Permission::ReadStudy)?;
    Ok(HttpResponse::Ok().json(DefinitionView::of(&state.study)))
}
