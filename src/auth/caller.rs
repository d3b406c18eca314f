//! The authenticated caller, extracted from the Bearer token and checked against the database
//! on every request: a deactivated user, a changed role or sites, a new password or a logout
//! take effect at once.

use std::future::Future;
use std::pin::Pin;

use actix_web::{web, FromRequest, HttpMessage, HttpRequest};
use diesel::prelude::*;
use uuid::Uuid;

use crate::app::AppState;
use crate::audit::{Actor, RequestMeta};
use crate::db;
use crate::error::AppError;
use crate::schema::{sessions, user_sites, users};

use super::Role;

#[derive(Debug, Clone)]
pub struct Caller {
    pub user_id: i64,
    pub role: Role,
    pub email: String,
    pub name: String,
    pub site_ids: Vec<i64>,
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

impl FromRequest for Caller {
    type Error = AppError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let state = req.app_data::<web::Data<AppState>>().cloned();
        let token = bearer(req);
        let meta = request_meta(req);
        Box::pin(async move {
            let state = state.ok_or_else(|| AppError::internal("application state missing"))?;
            let token = token.ok_or(AppError::Unauthorized)?;
            let claims = state
                .tokens
                .decode_access(&token)
                .ok_or(AppError::Unauthorized)?;
            let user_id: i64 = claims.sub.parse().map_err(|_| AppError::Unauthorized)?;
            let sid = claims.sid;
            let (user, sites) = db::run(&state.pool, move |conn| {
                let user: Option<(String, String, String, bool, i32)> = users::table
                    .inner_join(sessions::table)
                    .filter(users::id.eq(user_id))
                    .filter(sessions::id.eq(sid))
                    .filter(sessions::revoked_at.is_null())
                    .select((
                        users::email,
                        users::name,
                        users::role,
                        users::active,
                        users::token_version,
                    ))
                    .first(conn)
                    .optional()?;
                let sites: Vec<i64> = user_sites::table
                    .filter(user_sites::user_id.eq(user_id))
                    .select(user_sites::site_id)
                    .order(user_sites::site_id)
                    .load(conn)?;
                Ok((user, sites))
            })
            .await?;
            let (email, name, role, active, version) = user.ok_or(AppError::Unauthorized)?;
            if !active || version != claims.ver {
                return Err(AppError::Unauthorized);
            }
            let role = Role::parse(&role).ok_or(AppError::Unauthorized)?;
            Ok(Caller {
                user_id,
                role,
                email,
                name,
                site_ids: sites,
                session_id: sid,
                actor: Actor {
                    user_id,
                    role: role.as_str().into(),
                },
                meta,
            })
        })
    }
}
