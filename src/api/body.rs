//! The JSON body extractor: size limit before reading, time limit while reading, content
//! type, unknown fields and type errors reported with the field's path.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use actix_web::{web, FromRequest, HttpRequest};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;

use crate::domain::FieldError;
use crate::error::AppError;
use crate::state::AppState;

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
                let name = rest.split('`').next().filter(|n| !n.is_empty())?;
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
                    if path == "." || path.is_empty() {
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

/// True when a JSON text holds `\u0000` in a string. PostgreSQL text cannot store NUL: such a
/// value would reach SQL and come back as a database error (a 500). Any other escape is
/// skipped whole, so `"\\u0000"` (a backslash, then `u0000`) is not taken for one.
pub fn has_nul_escape(raw: &[u8]) -> bool {
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'\\' {
            if raw[i + 1..].starts_with(b"u0000") {
                return true;
            }
            i += 2;
        } else {
            i += 1;
        }
    }
    false
}

/// Parses a request body as the extractor does: malformed JSON (trailing data included) is a
/// 400, a wrong, missing or unknown field a 422 naming its path, a `\u0000` a 422.
pub fn parse<T: DeserializeOwned>(raw: &[u8]) -> Result<T, AppError> {
    let de = &mut serde_json::Deserializer::from_slice(raw);
    let value = serde_path_to_error::deserialize(&mut *de).map_err(classify)?;
    de.end()
        .map_err(|e| AppError::BadRequest(format!("Malformed JSON: {e}")))?;
    if has_nul_escape(raw) {
        return Err(AppError::invalid(
            "body",
            "text must not contain the NUL character (\\u0000)",
        ));
    }
    Ok(value)
}

impl<T: DeserializeOwned + 'static> FromRequest for Json<T> {
    type Error = AppError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, payload: &mut actix_web::dev::Payload) -> Self::Future {
        let (limit, timeout_ms) = req
            .app_data::<web::Data<AppState>>()
            .map(|s| (s.settings.body_limit_bytes, s.settings.body_timeout_ms))
            .unwrap_or((256 * 1024, 10_000));
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
            // actix bounds the time to send a head, not a body: a client trickling (or
            // withholding) the body would hold the connection and this task for ever.
            let read = async {
                let mut buf = web::BytesMut::new();
                while let Some(chunk) = payload.next().await {
                    let chunk = chunk
                        .map_err(|_| AppError::BadRequest("Could not read the body.".into()))?;
                    if buf.len() + chunk.len() > limit {
                        return Err(AppError::PayloadTooLarge);
                    }
                    buf.extend_from_slice(&chunk);
                }
                Ok(buf)
            };
            let buf = tokio::time::timeout(Duration::from_millis(timeout_ms), read)
                .await
                .map_err(|_| AppError::RequestTimeout)??;
            let raw = buf.freeze();
            let value = parse(&raw)?;
            Ok(Json { value, raw })
        })
    }
}
