//! The JSON body extractor: size limit before reading, content type, unknown fields and
//! type errors reported with the field's path.

use std::future::Future;
use std::pin::Pin;

use actix_web::{web, FromRequest, HttpRequest};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;

use crate::app::AppState;
use crate::error::{AppError, FieldError};

/// A parsed JSON body, plus its raw bytes (for idempotency fingerprints).
pub struct Json<T> {
    pub value: T,
    pub raw: web::Bytes,
}

fn classify(e: serde_path_to_error::Error<serde_json::Error>) -> AppError {
    let path = e.path().to_string();
    let inner = e.into_inner();
    use serde_json::error::Category;
    match inner.classify() {
        Category::Syntax | Category::Eof | Category::Io => {
            AppError::BadRequest(format!("Malformed JSON: {inner}"))
        }
        Category::Data => {
            let msg = inner.to_string();
            // serde names unknown and missing fields in backticks; put the name in the path.
            let named = |prefix: &str| -> Option<String> {
                let rest = msg.strip_prefix(prefix)?;
                let name = rest.split('`').next()?;
                Some(if path == "." || path.is_empty() {
                    name.to_owned()
                } else if path == name || path.ends_with(&format!(".{name}")) {
                    path.clone()
                } else {
                    format!("{path}.{name}")
                })
            };
            let field = named("unknown field `")
                .or_else(|| named("missing field `"))
                .unwrap_or_else(|| {
                    if path == "." {
                        "body".into()
                    } else {
                        path.clone()
                    }
                });
            let message = msg.split(" at line ").next().unwrap_or(&msg).to_owned();
            AppError::Validation(vec![FieldError::new(field, message)])
        }
    }
}

impl<T: DeserializeOwned + 'static> FromRequest for Json<T> {
    type Error = AppError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, payload: &mut actix_web::dev::Payload) -> Self::Future {
        let limit = req
            .app_data::<web::Data<AppState>>()
            .map(|s| s.settings.body_limit_bytes)
            .unwrap_or(256 * 1024);
        let content_type_ok = req
            .headers()
            .get(actix_web::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                let v = v.to_ascii_lowercase();
                v.starts_with("application/json") || v.contains("+json")
            })
            .unwrap_or(false);
        let declared: Option<usize> = req
            .headers()
            .get(actix_web::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let mut payload = payload.take();
        Box::pin(async move {
            // Refuse on the declared length, before reading a byte of it.
            if declared.is_some_and(|n| n > limit) {
                return Err(AppError::PayloadTooLarge);
            }
            if !content_type_ok {
                return Err(AppError::UnsupportedMediaType);
            }
            let mut buf = web::BytesMut::new();
            while let Some(chunk) = payload.next().await {
                let chunk =
                    chunk.map_err(|_| AppError::BadRequest("Could not read the body.".into()))?;
                if buf.len() + chunk.len() > limit {
                    return Err(AppError::PayloadTooLarge);
                }
                buf.extend_from_slice(&chunk);
            }
            let raw = buf.freeze();
            let de = &mut serde_json::Deserializer::from_slice(&raw);
            let value = serde_path_to_error::deserialize(de).map_err(classify)?;
            Ok(Json { value, raw })
        })
    }
}
