//! The OpenAPI 3 document, generated from the handlers, and the Swagger UI page (assets
//! embedded in the binary: utoipa-swagger-ui's `vendored` feature).

use actix_web::web;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_swagger_ui::SwaggerUi;

use super::*;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Casebook", description = "Electronic data capture for multicenter anakinra trials. Errors are application/problem+json (RFC 9457)."),
    paths(
        health::live, health::ready, health::metrics,
        auth::login, auth::refresh, auth::logout,
        me::me, me::change_password,
        study::study,
        sites::list, sites::create, sites::get, sites::update,
        users::list, users::create, users::get, users::update,
        audit::list, audit::verify,
        clinical::subjects::list, clinical::subjects::create, clinical::subjects::get, clinical::subjects::update,
        clinical::consents::list, clinical::consents::create, clinical::consents::withdraw,
        clinical::injections::list, clinical::injections::create, clinical::injections::get,
        clinical::injections::update, clinical::injections::delete,
        clinical::temperatures::list, clinical::temperatures::create, clinical::temperatures::get,
        clinical::temperatures::update, clinical::temperatures::delete,
        clinical::casebook::casebook,
        clinical::adverse_events::list, clinical::adverse_events::create, clinical::adverse_events::get,
        clinical::adverse_events::update, clinical::adverse_events::delete,
        sae_alerts::list,
        safety::list, safety::overdue,
        monitoring::queries::list, monitoring::queries::counts, monitoring::queries::create,
        monitoring::queries::get, monitoring::queries::answer, monitoring::queries::close,
        monitoring::queries::reopen, monitoring::verify::verify, monitoring::signatures::list,
        monitoring::signatures::sign, monitoring::locks::list, monitoring::locks::create,
        monitoring::locks::unlock,
    ),
    components(schemas(crate::error::Problem, crate::error::FieldError)),
    modifiers(&BearerAuth),
)]
pub struct ApiDoc;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(SwaggerUi::new("/docs/{_:.*}").url("/api/v1/openapi.json", ApiDoc::openapi()));
}
