//! HTTP: one module per resource. Handlers parse, check policy, call one unit of work.

pub mod audit;
pub mod auth;
pub mod body;
pub mod clinical;
pub mod exports;
pub mod health;
pub mod me;
pub mod monitoring;
pub mod openapi;
pub mod sae_alerts;
pub mod safety;
pub mod sites;
pub mod study;
pub mod users;

use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::domain::FieldError;
use crate::error::{AppError, AppResult};

pub use body::Json;

async fn not_found() -> AppResult<HttpResponse> {
    Err(AppError::NotFound)
}

/// The methods of each route, read once from the OpenAPI document (which lists every route:
/// the authorization matrix test holds it to that), for the `Allow` header of a 405.
fn allowed_methods(pattern: &str) -> Option<String> {
    use std::collections::HashMap;
    use std::sync::OnceLock;
    use utoipa::OpenApi;
    static ALLOWED: OnceLock<HashMap<String, String>> = OnceLock::new();
    let map = ALLOWED.get_or_init(|| {
        let doc = serde_json::to_value(openapi::ApiDoc::openapi()).unwrap_or_default();
        let mut map = HashMap::new();
        if let Some(paths) = doc.get("paths").and_then(|p| p.as_object()) {
            for (path, item) in paths {
                let methods: Vec<String> = item
                    .as_object()
                    .map(|m| m.keys().map(|k| k.to_uppercase()).collect())
                    .unwrap_or_default();
                map.insert(path.clone(), methods.join(", "));
            }
        }
        map
    });
    map.get(pattern).cloned()
}

async fn method_not_allowed(req: HttpRequest) -> HttpResponse {
    use actix_web::ResponseError;
    let mut resp = AppError::MethodNotAllowed.error_response();
    // RFC 9110: a 405 says which methods the resource does support
    if let Some(allow) = req.match_pattern().and_then(|p| allowed_methods(&p)) {
        if let Ok(v) = actix_web::http::header::HeaderValue::from_str(&allow) {
            resp.headers_mut().insert(actix_web::http::header::ALLOW, v);
        }
    }
    resp
}

/// A resource whose unsupported methods answer 405 (actix answers 404 by default).
pub fn resource(path: &str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(method_not_allowed))
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    health::routes(cfg);
    openapi::routes(cfg);
    cfg.service(
        web::scope("/api/v1")
            .wrap(actix_web::middleware::from_fn(reject_nul))
            .configure(auth::routes)
            .configure(me::routes)
            .configure(study::routes)
            .configure(sites::routes)
            .configure(users::routes)
            .configure(audit::routes)
            .configure(clinical::routes)
            .configure(sae_alerts::routes)
            .configure(safety::routes)
            .configure(monitoring::routes)
            .configure(exports::routes),
    );
    cfg.default_service(web::to(not_found));
}

/// PostgreSQL text cannot hold NUL: a path or query string with `%00` would reach SQL and come
/// back as a database error (a 500). Refused here: a path as 404 (like any path parameter that
/// does not parse), a query string as 422.
async fn reject_nul(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody + 'static>,
) -> Result<actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>, actix_web::Error> {
    use actix_web::ResponseError;
    let error = if req.uri().path().contains("%00") {
        Some(AppError::NotFound)
    } else if req.query_string().contains("%00") {
        Some(AppError::invalid(
            "query",
            "must not contain the NUL character (%00)",
        ))
    } else {
        None
    };
    match error {
        Some(e) => Ok(req.into_response(e.error_response()).map_into_right_body()),
        None => Ok(next.call(req).await?.map_into_left_body()),
    }
}

fn field_from_serde_message(msg: &str) -> String {
    for prefix in ["unknown field `", "missing field `"] {
        if let Some(rest) = msg.split(prefix).nth(1) {
            if let Some(name) = rest.split('`').next() {
                return name.to_owned();
            }
        }
    }
    "query".into()
}

/// Query-string errors as problem+json naming the parameter.
pub fn query_config() -> web::QueryConfig {
    web::QueryConfig::default().error_handler(|err, _| {
        let msg = err.to_string();
        let field = field_from_serde_message(&msg);
        AppError::Validation(vec![FieldError::new(field, msg)]).into()
    })
}

pub fn path_config() -> web::PathConfig {
    web::PathConfig::default().error_handler(|_, _| AppError::NotFound.into())
}

/// Cursor pagination: `?limit=&after=`, ordered by id.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// 1-500, default 100
    pub limit: Option<i64>,
    /// return records with an id greater than this
    pub after: Option<i64>,
}

impl PageParams {
    pub fn limit(&self) -> AppResult<i64> {
        let l = self.limit.unwrap_or(100);
        if !(1..=500).contains(&l) {
            return Err(AppError::invalid("limit", "must be between 1 and 500"));
        }
        Ok(l)
    }
    pub fn after(&self) -> i64 {
        self.after.unwrap_or(0)
    }
}

/// A page of results; pass `next_after` as `after` for the next one.
#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_after: Option<i64>,
}

impl<T> Page<T> {
    pub fn new(items: Vec<T>, limit: i64, id: impl Fn(&T) -> i64) -> Self {
        let next_after = if items.len() as i64 == limit {
            items.last().map(&id)
        } else {
            None
        };
        Self { items, next_after }
    }
}

/// The version a PATCH or DELETE expects, from `If-Match` (428 when missing).
pub fn if_match(req: &HttpRequest) -> AppResult<i32> {
    let raw = req
        .headers()
        .get(actix_web::http::header::IF_MATCH)
        .ok_or_else(|| {
            AppError::PreconditionRequired(
                "Send If-Match with the record's version (its ETag).".into(),
            )
        })?;
    let s = raw.to_str().unwrap_or_default().trim();
    let s = s.strip_prefix("W/").unwrap_or(s).trim_matches('"');
    s.parse::<i32>()
        .map_err(|_| AppError::invalid("If-Match", "must be the record's version, e.g. \"3\""))
}

/// The `Idempotency-Key` header, if sent (422 when it is not a valid key).
pub fn idempotency_key(req: &HttpRequest) -> crate::error::AppResult<Option<String>> {
    req.headers()
        .get("idempotency-key")
        .map(|v| crate::services::idempotency::parse_key(v.as_bytes()))
        .transpose()
}

/// A JSON response with the record's version as its ETag.
pub fn with_etag<T: Serialize>(
    status: actix_web::http::StatusCode,
    version: i32,
    body: &T,
) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header((actix_web::http::header::ETAG, format!("\"{version}\"")))
        .json(body)
}
