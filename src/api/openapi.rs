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

/// The answers every operation can give whatever its handler documents, from the layers all
/// handlers share: errors are `application/problem+json` (not the `application/json` that
/// `body = Problem` implies); a bearer operation answers 401 without a valid token and 403 for
/// a role without the permission; a path parameter that does not parse or names nothing is a
/// 404; a query string that does not parse is a 422; a JSON body answers 400 (malformed),
/// 413 (over the limit), 415 (not JSON) or 422 (a field); a write on clinical data answers
/// 423 when its site or subject is locked; the database being away is a 503 everywhere.
struct ProblemResponses;

impl ProblemResponses {
    /// Bearer operations that check no permission (every role may call them).
    const NO_PERMISSION: [&'static str; 3] =
        ["/api/v1/me", "/api/v1/me/password", "/api/v1/auth/logout"];

    fn problem(description: &str) -> utoipa::openapi::Response {
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/problem+json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("Problem")))
                    .build(),
            )
            .build()
    }

    fn operation(path: &str, method: &str, op: &mut utoipa::openapi::path::Operation) {
        use utoipa::openapi::path::ParameterIn;
        use utoipa::openapi::RefOr;
        let problem_ref = "#/components/schemas/Problem";
        for resp in op.responses.responses.values_mut() {
            let RefOr::T(resp) = resp else { continue };
            let is_problem = resp.content.get("application/json").is_some_and(
                |c| matches!(&c.schema, Some(RefOr::Ref(r)) if r.ref_location == problem_ref),
            );
            if is_problem {
                if let Some(c) = resp.content.shift_remove("application/json") {
                    resp.content.insert("application/problem+json".into(), c);
                }
            }
        }
        let params = op.parameters.as_deref().unwrap_or_default();
        let has = |at: ParameterIn| params.iter().any(|p| p.parameter_in == at);
        let secured = op.security.as_ref().is_some_and(|s| !s.is_empty());
        let mut add: Vec<(&str, &str)> = Vec::new();
        if op.request_body.is_some() {
            add.push(("400", "malformed JSON"));
            add.push(("413", "the body is over the size limit"));
            add.push(("415", "the body is not application/json"));
            add.push(("422", "a field is missing or invalid"));
        }
        if has(ParameterIn::Query) {
            add.push(("422", "a query parameter is invalid"));
        }
        if has(ParameterIn::Path) {
            add.push(("404", "no such resource, or not in your scope"));
        }
        if secured {
            add.push(("401", "the bearer token is missing, invalid or revoked"));
            if !Self::NO_PERMISSION.contains(&path) {
                add.push(("403", "your role may not do this"));
            }
        }
        let clinical = path == "/api/v1/subjects" || path.starts_with("/api/v1/subjects/");
        let monitoring = path.ends_with("/signatures") || path.ends_with("/verify");
        if method != "get" && clinical && !monitoring {
            add.push(("423", "the site or the subject is locked"));
        }
        if path.starts_with("/api/v1/") {
            add.push((
                "503",
                "the database is unavailable; retry after Retry-After",
            ));
        }
        for (status, description) in add {
            op.responses
                .responses
                .entry(status.to_owned())
                .or_insert_with(|| RefOr::T(Self::problem(description)));
        }
    }
}

impl Modify for ProblemResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        // `#[serde(flatten)]` of a `deny_unknown_fields` struct becomes an `allOf` holding a
        // closed object, which refuses the keys of the other members (Protocol's file_hash):
        // a schema flattened into another is open.
        if let Some(components) = openapi.components.as_mut() {
            use utoipa::openapi::schema::{AdditionalProperties, Schema};
            use utoipa::openapi::RefOr;
            let flattened: Vec<String> = components
                .schemas
                .values()
                .filter_map(|s| match s {
                    RefOr::T(Schema::AllOf(all)) => Some(&all.items),
                    _ => None,
                })
                .flatten()
                .filter_map(|item| match item {
                    RefOr::Ref(r) => r.ref_location.strip_prefix("#/components/schemas/"),
                    RefOr::T(_) => None,
                })
                .map(str::to_owned)
                .collect();
            for name in flattened {
                if let Some(RefOr::T(Schema::Object(o))) = components.schemas.get_mut(&name) {
                    if matches!(
                        o.additional_properties.as_deref(),
                        Some(AdditionalProperties::FreeForm(false))
                    ) {
                        o.additional_properties = None;
                    }
                }
            }
        }
        for (path, item) in openapi.paths.paths.iter_mut() {
            for (method, op) in [
                ("get", &mut item.get),
                ("post", &mut item.post),
                ("put", &mut item.put),
                ("patch", &mut item.patch),
                ("delete", &mut item.delete),
            ] {
                if let Some(op) = op {
                    Self::operation(path, method, op);
                }
            }
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Casebook", description = "Electronic data capture for multicenter anakinra trials. Errors are application/problem+json (RFC 9457)."),
    paths(
        health::live, health::ready, health::metrics,
        auth::login, auth::refresh, auth::logout,
        me::me, me::change_password,
        study::study, study::definition,
        sites::list, sites::create, sites::get, sites::update,
        users::list, users::create, users::get, users::update,
        audit::list, audit::verify,
        clinical::subjects::list, clinical::subjects::create, clinical::subjects::get, clinical::subjects::update,
        clinical::consents::list, clinical::consents::create, clinical::consents::withdraw, clinical::consents::update,
        clinical::injections::list, clinical::injections::create, clinical::injections::get,
        clinical::injections::update, clinical::injections::delete,
        clinical::temperatures::list, clinical::temperatures::create, clinical::temperatures::get,
        clinical::temperatures::update, clinical::temperatures::delete,
        clinical::casebook::casebook,
        clinical::adverse_events::list, clinical::adverse_events::create, clinical::adverse_events::get,
        clinical::adverse_events::update, clinical::adverse_events::delete,
        clinical::forms::list, clinical::forms::create, clinical::forms::get,
        clinical::forms::update, clinical::forms::delete, clinical::schedule::get,
        sae_alerts::list,
        safety::list, safety::overdue,
        monitoring::queries::list, monitoring::queries::counts, monitoring::queries::create,
        monitoring::queries::get, monitoring::queries::answer, monitoring::queries::close,
        monitoring::queries::reopen, monitoring::verify::verify, monitoring::verify::verify_form,
        monitoring::signatures::list,
        monitoring::signatures::sign, monitoring::signatures::check, monitoring::locks::list, monitoring::locks::create,
        monitoring::locks::unlock,
        exports::form_csv, exports::odm, exports::sdtm_csv, exports::sdtm_xpt, exports::sdtm_json, exports::define,
    ),
    components(schemas(crate::error::Problem, crate::domain::FieldError)),
    modifiers(&BearerAuth, &ProblemResponses),
)]
pub struct ApiDoc;

async fn docs_redirect() -> actix_web::HttpResponse {
    actix_web::HttpResponse::PermanentRedirect()
        .insert_header((actix_web::http::header::LOCATION, "/docs/"))
        .finish()
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/docs", web::get().to(docs_redirect));
    cfg.service(SwaggerUi::new("/docs/{_:.*}").url("/api/v1/openapi.json", ApiDoc::openapi()));
}
