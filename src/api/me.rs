//! The caller's own account.

use actix_web::{web, HttpResponse};
use diesel::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use crate::audit::{self, AuditEvent};
use crate::auth::attempts::{confirm_password, MAX_PASSWORD_BYTES};
use crate::auth::password::check_policy;
use crate::auth::{Caller, Role};
use crate::db;
use crate::error::{AppError, AppResult};
use crate::schema::{sessions, users};
use crate::state::AppState;

use super::{resource, Json};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/me").route(web::get().to(me)))
        .service(resource("/me/password").route(web::post().to(change_password)));
}

#[derive(Serialize, ToSchema)]
pub struct Me {
    pub id: i64,
    pub email: String,
    pub name: String,
    pub role: Role,
    pub sites: Vec<String>,
}

/// Who am I.
#[utoipa::path(get, path = "/api/v1/me", tag = "auth",
    responses((status = 200, body = Me), (status = 401, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn me(caller: Caller) -> AppResult<HttpResponse> {
    // the caller lookup returns the site codes too: one query in all
    let id = caller.user_id;
    let sites = caller.site_codes;
    Ok(HttpResponse::Ok().json(Me {
        id,
        email: caller.email,
        name: caller.name,
        role: caller.role,
        sites,
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordChange {
    pub current_password: String,
    pub new_password: String,
}

/// Change my password. Every other session ends. A wrong `current_password` counts toward the
/// account's lockout like a wrong login or signing password, and is audited.
#[utoipa::path(post, path = "/api/v1/me/password", tag = "auth", request_body = PasswordChange,
    responses((status = 204), (status = 401, body = crate::error::Problem), (status = 422, body = crate::error::Problem),
        (status = 429, description = "account locked after repeated wrong passwords; see Retry-After", body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn change_password(
    state: web::Data<AppState>,
    caller: Caller,
    body: Json<PasswordChange>,
) -> AppResult<HttpResponse> {
    let PasswordChange {
        current_password,
        new_password,
    } = body.value;
    if current_password.len() > MAX_PASSWORD_BYTES {
        return Err(AppError::invalid("current_password", "is too long"));
    }
    check_policy("new_password", &new_password, &caller.email)
        .map_err(|e| AppError::Validation(vec![e]))?;
    confirm_password(
        &state,
        &caller,
        current_password,
        "current_password",
        ("password_change_failed", "users"),
        json!({}),
    )
    .await?;
    let id = caller.user_id;
    let new_hash = state
        .with_hasher(move |h| h.hash(&new_password))
        .await?
        .map_err(AppError::internal)?;
    db::transaction(&state.pool, move |conn| {
        diesel::update(users::table.find(id))
            .set((
                users::password_hash.eq(new_hash),
                users::token_version.eq(users::token_version + 1),
                users::updated_at.eq(diesel::dsl::now),
            ))
            .execute(conn)?;
        diesel::update(
            sessions::table
                .filter(sessions::user_id.eq(id))
                .filter(sessions::revoked_at.is_null()),
        )
        .set((
            sessions::revoked_at.eq(diesel::dsl::now),
            sessions::revoked_why.eq("password changed"),
        ))
        .execute(conn)?;
        audit::record(
            conn,
            &AuditEvent::new(Some(&caller.actor), "user_change", "users", &caller.meta)
                .record(id)
                .new_values(json!({"password": "changed"})),
        )?;
        Ok(())
    })
    .await?;
    Ok(HttpResponse::NoContent().finish())
}
