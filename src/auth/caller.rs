//! The authenticated caller, extracted from the Bearer token and checked against the database
//! on every request: a deactivated user, a changed role or sites, a new password or a logout
//! take effect at once.

use std::future::Future;
use std::pin::Pin;

use actix_web::{web, FromRequest, HttpMessage, HttpRequest};
use diesel::PgConnection;
use uuid::Uuid;

use crate::audit::{Actor, RequestMeta};
use crate::db;
use crate::db::caller::CallerRecord;
use crate::error::AppError;
use crate::state::AppState;

use super::token::Claims;
use super::Role;

#[derive(Debug, Clone)]
pub struct Caller {
    pub user_id: i64,
    pub role: Role,
    pub email: String,
    pub name: String,
    pub site_ids: Vec<i64>,
    /// the codes of the same sites, ordered by code
    pub site_codes: Vec<String>,
    pub session_id: Uuid,
    pub actor: Actor,
    pub meta: RequestMeta,
}

/// Request id and client address of a request, for audit rows.
pub fn request_meta(req: &HttpRequest) -> RequestMeta {
    RequestMeta {
        request_id: req
            .extensions()
            .get::<crate::telemetry::RequestId>()
            .map(|r| r.0.clone())
            .unwrap_or_default(),
        client_addr: req.peer_addr().map(|a| a.ip().to_string()),
    }
}

fn bearer(req: &HttpRequest) -> Option<String> {
    let value = req.headers().get(actix_web::http::header::AUTHORIZATION)?;
    let value = value.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    Some(token.trim().to_owned())
}

/// A request's bearer token, checked (signature, expiry, audience) but not yet against the
/// database. Hot write paths take this instead of [`Caller`] and confirm the caller in the
/// same round trip as their own lookups ([`Caller::confirm`]), saving a pool checkout and a
/// query per request.
#[derive(Debug, Clone)]
pub struct Bearer {
    pub user_id: i64,
    pub claims: Claims,
    pub meta: RequestMeta,
}

impl Bearer {
    fn from_parts(
        state: &AppState,
        token: Option<String>,
        meta: RequestMeta,
    ) -> Result<Self, AppError> {
        let token = token.ok_or(AppError::Unauthorized)?;
        let claims = state
            .tokens
            .decode_access(&token)
            .ok_or(AppError::Unauthorized)?;
        let user_id: i64 = claims.sub.parse().map_err(|_| AppError::Unauthorized)?;
        Ok(Self {
            user_id,
            claims,
            meta,
        })
    }
}

impl FromRequest for Bearer {
    type Error = AppError;
    type Future = std::future::Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let result = match req.app_data::<web::Data<AppState>>() {
            Some(state) => Self::from_parts(state, bearer(req), request_meta(req)),
            None => Err(AppError::internal("application state missing")),
        };
        std::future::ready(result)
    }
}

impl Caller {
    /// Confirms the token's caller against the database on `conn`: one round trip (the user,
    /// the live session and the site assignments, migrations/*_lookup_functions).
    pub fn load(conn: &mut PgConnection, bearer: Bearer) -> Result<Self, AppError> {
        let found = db::caller::find(conn, bearer.user_id, bearer.claims.sid)?;
        Caller::confirm(bearer, found)
    }

    /// The caller a token stands for, given the database's record of its user and live
    /// session (`None`: no such user or the session ended). 401 for an inactive user or a
    /// token older than the user's last role, site or password change.
    pub fn confirm(bearer: Bearer, found: Option<CallerRecord>) -> Result<Self, AppError> {
        let row = found.ok_or(AppError::Unauthorized)?;
        if !row.active || row.token_version != bearer.claims.ver {
            return Err(AppError::Unauthorized);
        }
        let role = Role::parse(&row.role).ok_or(AppError::Unauthorized)?;
        Ok(Caller {
            user_id: bearer.user_id,
            role,
            email: row.email,
            name: row.name,
            site_ids: row.site_ids,
            site_codes: row.site_codes,
            session_id: bearer.claims.sid,
            actor: Actor {
                user_id: bearer.user_id,
                role: role.as_str().into(),
            },
            meta: bearer.meta,
        })
    }
}

impl FromRequest for Caller {
    type Error = AppError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let state = req.app_data::<web::Data<AppState>>().cloned();
        let token = bearer(req);
        let meta = request_meta(req);
        Box::pin(async move {
            let state = state.ok_or_else(|| AppError::internal("application state missing"))?;
            let bearer = Bearer::from_parts(&state, token, meta)?;
            db::run(&state.pool, move |conn| Caller::load(conn, bearer)).await
        })
    }
}
