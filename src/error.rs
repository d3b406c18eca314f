//! One error type for the whole API, rendered as `application/problem+json` (RFC 9457).
//!
//! Internal causes are logged with the request id and never put in a response body:
//! database messages can carry participant data.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use utoipa::ToSchema;

use crate::domain::FieldError;

/// A problem details body.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("unauthorized")]
    Unauthorized,
    #[error("forbidden: {0}")]
    Forbidden(String),
    #[error("not found")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("precondition failed")]
    PreconditionFailed,
    #[error("precondition required: {0}")]
    PreconditionRequired(String),
    #[error("payload too large")]
    PayloadTooLarge,
    /// the body did not arrive in time; the connection is closed with the answer
    #[error("request timeout")]
    RequestTimeout,
    #[error("unsupported media type")]
    UnsupportedMediaType,
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    #[error("locked: {0}")]
    Locked(String),
    #[error("too many requests")]
    TooManyRequests { retry_after_secs: i64 },
    /// 429 for capacity (not throttling of the caller): the detail says what is busy.
    #[error("busy: {detail}")]
    Busy {
        retry_after_secs: i64,
        detail: String,
    },
    #[error("service unavailable: {0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl AppError {
    /// A 422 about one field.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Validation(vec![FieldError::new(field, message)])
    }

    pub fn internal(e: impl std::fmt::Display) -> Self {
        Self::Internal(e.to_string())
    }

    fn parts(&self) -> (&'static str, &'static str, String) {
        match self {
            Self::BadRequest(d) => ("bad-request", "Bad request", d.clone()),
            Self::Unauthorized => (
                "unauthorized",
                "Unauthorized",
                "Authentication failed or is missing.".into(),
            ),
            Self::Forbidden(d) => ("forbidden", "Forbidden", d.clone()),
            Self::NotFound => ("not-found", "Not found", "No such resource.".into()),
            Self::MethodNotAllowed => (
                "method-not-allowed",
                "Method not allowed",
                "This resource does not accept that method.".into(),
            ),
            Self::Conflict(d) => ("conflict", "Conflict", d.clone()),
            Self::PreconditionFailed => (
                "precondition-failed",
                "Precondition failed",
                "The record changed since you read it (If-Match does not match its version)."
                    .into(),
            ),
            Self::PreconditionRequired(d) => {
                ("precondition-required", "Precondition required", d.clone())
            }
            Self::PayloadTooLarge => (
                "payload-too-large",
                "Payload too large",
                "The request body is over the size limit.".into(),
            ),
            Self::RequestTimeout => (
                "request-timeout",
                "Request timeout",
                "The request body did not arrive in time.".into(),
            ),
            Self::UnsupportedMediaType => (
                "unsupported-media-type",
                "Unsupported media type",
                "Send JSON with Content-Type: application/json.".into(),
            ),
            Self::Validation(_) => (
                "validation",
                "Validation failed",
                "One or more fields are invalid.".into(),
            ),
            Self::Locked(d) => ("locked", "Locked", d.clone()),
            Self::TooManyRequests { .. } => (
                "too-many-requests",
                "Too many requests",
                "Too many attempts; try again later.".into(),
            ),
            Self::Busy { detail, .. } => ("busy", "Too many requests", detail.clone()),
            Self::Unavailable(_) => (
                "unavailable",
                "Service unavailable",
                "The database is unavailable; retry shortly.".into(),
            ),
            Self::Internal(_) => (
                "internal",
                "Internal server error",
                "An unexpected error occurred; it has been logged with the request id.".into(),
            ),
        }
    }
}

impl ResponseError for AppError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::PreconditionFailed => StatusCode::PRECONDITION_FAILED,
            Self::PreconditionRequired(_) => StatusCode::PRECONDITION_REQUIRED,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Locked(_) => StatusCode::LOCKED,
            Self::TooManyRequests { .. } | Self::Busy { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        match self {
            Self::Internal(cause) => tracing::error!(%cause, "internal error"),
            Self::Unavailable(cause) => tracing::warn!(%cause, "dependency unavailable"),
            _ => {}
        }
        let (kind, title, detail) = self.parts();
        let errors = match self {
            Self::Validation(e) => e.clone(),
            _ => Vec::new(),
        };
        let body = Problem {
            kind: format!("https://casebook.example/problems/{kind}"),
            title: title.into(),
            status: status.as_u16(),
            detail,
            errors,
        };
        let mut resp = HttpResponse::build(status);
        resp.content_type("application/problem+json");
        match self {
            Self::Unauthorized => {
                resp.insert_header((header::WWW_AUTHENTICATE, "Bearer error=\"invalid_token\""));
            }
            Self::TooManyRequests { retry_after_secs }
            | Self::Busy {
                retry_after_secs, ..
            } => {
                resp.insert_header((header::RETRY_AFTER, retry_after_secs.max(&1).to_string()));
            }
            Self::Unavailable(_) => {
                resp.insert_header((header::RETRY_AFTER, "2"));
            }
            // the rest of the body may still come: it must not be read as the next request
            Self::RequestTimeout => {
                resp.force_close();
            }
            _ => {}
        }
        resp.body(serde_json::to_string(&body).unwrap_or_default())
    }
}

/// One field in error: the 422 that names it.
impl From<FieldError> for AppError {
    fn from(e: FieldError) -> Self {
        Self::Validation(vec![e])
    }
}

impl From<diesel::result::Error> for AppError {
    fn from(e: diesel::result::Error) -> Self {
        use diesel::result::{DatabaseErrorKind as K, Error as E};
        // COMMIT failed and so did the ROLLBACK after it: what COMMIT said is the cause (a
        // lost connection when the database went away mid-transaction).
        let e = match e {
            E::RollbackErrorOnCommit { commit_error, .. } => *commit_error,
            other => other,
        };
        match &e {
            E::NotFound => Self::NotFound,
            E::DatabaseError(K::ClosedConnection, _) => Self::Unavailable(e.to_string()),
            E::DatabaseError(K::UniqueViolation, _) => {
                Self::Conflict("A record with the same key already exists.".into())
            }
            E::DatabaseError(K::SerializationFailure, _) => Self::Unavailable(e.to_string()),
            // a connection whose transaction state is unknown: the pool discards it
            E::BrokenTransactionManager => Self::Unavailable(e.to_string()),
            E::DatabaseError(_, info) if is_connection_loss(info.message()) => {
                Self::Unavailable(e.to_string())
            }
            // chrono parses years PostgreSQL cannot store (before 4713 BC): the client's date.
            E::DatabaseError(_, info)
                if matches!(
                    info.message(),
                    "date out of range" | "timestamp out of range"
                ) =>
            {
                Self::invalid("date", "is outside the range of dates that can be stored")
            }
            _ => Self::Internal(e.to_string()),
        }
    }
}

/// For an insert that a unique index guards against a race the handler's own check cannot
/// see (two requests that both found nothing): the loser gets the same 409 as if the check
/// had seen the winner.
pub fn conflict_on_unique(detail: String) -> impl FnOnce(diesel::result::Error) -> AppError {
    move |e| match e {
        diesel::result::Error::DatabaseError(
            diesel::result::DatabaseErrorKind::UniqueViolation,
            _,
        ) => AppError::Conflict(detail),
        other => other.into(),
    }
}

/// libpq reports a dropped server in several wordings; all mean "retry later", not a bug.
pub(crate) fn is_connection_loss(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("server closed the connection")
        || m.contains("terminating connection")
        || m.contains("connection refused")
        || m.contains("no connection to the server")
        || m.contains("could not receive data")
        || m.contains("could not send data")
        || m.contains("the database system is")
        || m.contains("canceling statement due to statement timeout")
}

impl From<r2d2::Error> for AppError {
    fn from(e: r2d2::Error) -> Self {
        Self::Unavailable(e.to_string())
    }
}

impl From<actix_web::error::BlockingError> for AppError {
    fn from(e: actix_web::error::BlockingError) -> Self {
        Self::Internal(e.to_string())
    }
}

pub type AppResult<T> = Result<T, AppError>;

#[cfg(test)]
mod tests {
    use super::*;
    use diesel::result::{DatabaseErrorInformation, DatabaseErrorKind, Error as E};

    struct Message(&'static str);

    impl DatabaseErrorInformation for Message {
        fn message(&self) -> &str {
            self.0
        }
        fn details(&self) -> Option<&str> {
            None
        }
        fn hint(&self) -> Option<&str> {
            None
        }
        fn table_name(&self) -> Option<&str> {
            None
        }
        fn column_name(&self) -> Option<&str> {
            None
        }
        fn constraint_name(&self) -> Option<&str> {
            None
        }
        fn statement_position(&self) -> Option<i32> {
            None
        }
    }

    fn database(kind: DatabaseErrorKind, message: &'static str) -> E {
        E::DatabaseError(kind, Box::new(Message(message)))
    }

    #[test]
    fn a_commit_lost_with_its_connection_is_unavailable_not_internal() {
        let lost = E::RollbackErrorOnCommit {
            commit_error: Box::new(database(
                DatabaseErrorKind::ClosedConnection,
                "server closed the connection unexpectedly",
            )),
            rollback_error: Box::new(database(
                DatabaseErrorKind::UnableToSendCommand,
                "no connection to the server",
            )),
        };
        assert!(matches!(AppError::from(lost), AppError::Unavailable(_)));
        assert!(matches!(
            AppError::from(E::BrokenTransactionManager),
            AppError::Unavailable(_)
        ));
    }

    #[test]
    fn a_failed_commit_keeps_its_own_meaning() {
        let conflict = E::RollbackErrorOnCommit {
            commit_error: Box::new(database(
                DatabaseErrorKind::UniqueViolation,
                "duplicate key value violates unique constraint",
            )),
            rollback_error: Box::new(database(
                DatabaseErrorKind::UnableToSendCommand,
                "no connection to the server",
            )),
        };
        assert!(matches!(AppError::from(conflict), AppError::Conflict(_)));
        assert!(matches!(
            AppError::from(database(DatabaseErrorKind::Unknown, "division by zero")),
            AppError::Internal(_)
        ));
    }
}
