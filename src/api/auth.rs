//! Login, refresh, logout. Every attempt is audited; failures in a short transaction of
//! their own.

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::audit::{self, Actor, AuditEvent, RequestMeta};
use crate::auth::attempts::{check_password, Checked, MAX_PASSWORD_BYTES};
use crate::auth::caller::request_meta;
use crate::auth::token::{hash_refresh_token, new_refresh_token};
use crate::auth::Caller;
use crate::db;
use crate::domain::email;
use crate::domain::FieldError;
use crate::error::{AppError, AppResult};
use crate::schema::{refresh_tokens, sessions, users};
use crate::state::AppState;

use super::{resource, Json};

/// Refresh tokens are 43 characters; anything much longer is not one (an access token
/// presented by mistake, about 400, still gets the 401 any wrong token gets).
const MAX_REFRESH_TOKEN_BYTES: usize = 1024;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/auth/login").route(web::post().to(login)))
        .service(resource("/auth/refresh").route(web::post().to(refresh)))
        .service(resource("/auth/logout").route(web::post().to(logout)));
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub email: String,
    pub password: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    pub refresh_token: String,
}

#[derive(Serialize, ToSchema)]
pub struct TokenPair {
    pub access_token: String,
    pub refresh_token: String,
    /// always "Bearer"
    pub token_type: &'static str,
    /// seconds until the access token expires
    pub expires_in: i64,
}

type AccountRow = (i64, String, bool, i32);
/// token id, session, expiry, spent, session revoked, user
type RefreshRow = (
    i64,
    Uuid,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
    i64,
);

struct Account {
    id: i64,
    role: String,
    active: bool,
    token_version: i32,
}

/// Starts a session (refresh-token family) and returns a token pair; audits `action`.
fn open_session(
    conn: &mut PgConnection,
    state: &AppState,
    user_id: i64,
    token_version: i32,
    actor: &Actor,
    meta: &RequestMeta,
) -> AppResult<TokenPair> {
    let sid = Uuid::new_v4();
    diesel::insert_into(sessions::table)
        .values((sessions::id.eq(sid), sessions::user_id.eq(user_id)))
        .execute(conn)?;
    let refresh = issue_refresh(conn, state, sid)?;
    audit::record(
        conn,
        &AuditEvent::new(Some(actor), "login", "users", meta)
            .record(user_id)
            .new_values(json!({"session": sid})),
    )?;
    pair(state, user_id, token_version, sid, refresh)
}

fn issue_refresh(conn: &mut PgConnection, state: &AppState, sid: Uuid) -> AppResult<String> {
    let (token, hash) = new_refresh_token();
    let expires = Utc::now() + chrono::Duration::seconds(state.tokens.refresh_ttl_secs);
    diesel::insert_into(refresh_tokens::table)
        .values((
            refresh_tokens::session_id.eq(sid),
            refresh_tokens::token_hash.eq(hash),
            refresh_tokens::expires_at.eq(expires),
        ))
        .execute(conn)?;
    Ok(token)
}

fn pair(
    state: &AppState,
    user_id: i64,
    version: i32,
    sid: Uuid,
    refresh: String,
) -> AppResult<TokenPair> {
    let access = state
        .tokens
        .issue_access(user_id, version, sid)
        .map_err(AppError::internal)?;
    Ok(TokenPair {
        access_token: access,
        refresh_token: refresh,
        token_type: "Bearer",
        expires_in: state.tokens.access_ttl_secs,
    })
}

/// Sign in with e-mail and password.
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "auth", request_body = LoginRequest,
    responses(
        (status = 200, body = TokenPair),
        (status = 401, description = "any failure, all alike: unknown e-mail, wrong password, inactive or locked account", body = crate::error::Problem),
        (status = 422, description = "`email` over 254 characters or `password` over 1024 bytes, refused before any lookup", body = crate::error::Problem)))]
pub async fn login(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: Json<LoginRequest>,
) -> AppResult<HttpResponse> {
    let LoginRequest { email, password } = body.value;
    // Both refused before the database: the e-mail of an unknown account is audited.
    let mut errors = Vec::new();
    let email = email::typed_at_login("email", &email)
        .map_err(|e| errors.push(e))
        .ok();
    if password.len() > MAX_PASSWORD_BYTES {
        errors.push(FieldError::new("password", "is too long"));
    }
    let (Some(email), true) = (email, errors.is_empty()) else {
        return Err(AppError::Validation(errors));
    };
    let meta = request_meta(&req);
    let lookup = email.clone();
    let account: Option<Account> = db::run(&state.pool, move |conn| {
        let row: Option<AccountRow> = users::table
            .filter(
                diesel::dsl::sql::<diesel::sql_types::Bool>("lower(email) = ")
                    .bind::<diesel::sql_types::Text, _>(lookup),
            )
            .select((users::id, users::role, users::active, users::token_version))
            .first(conn)
            .optional()?;
        Ok(row.map(|(id, role, active, token_version)| Account {
            id,
            role,
            active,
            token_version,
        }))
    })
    .await?;

    let acc = match account {
        Some(acc) if acc.active => acc,
        other => {
            // No attempt to count: no such account, or one nobody can sign in to. The dummy
            // hash makes the answer take as long as a verified one.
            state
                .with_hasher(move |h| {
                    let _ = h.verify(&password, None);
                })
                .await?;
            db::transaction(&state.pool, move |conn| {
                let actor = other.as_ref().map(|a| Actor {
                    user_id: a.id,
                    role: a.role.clone(),
                });
                let event = match &other {
                    Some(acc) => AuditEvent::new(actor.as_ref(), "login_failed", "users", &meta)
                        .record(acc.id)
                        .new_values(json!({"cause": "inactive"})),
                    None => AuditEvent::new(None, "login_failed", "users", &meta)
                        .new_values(json!({"cause": "unknown_account", "email": email})),
                };
                audit::record(conn, &event)?;
                Ok(())
            })
            .await?;
            return Err(AppError::Unauthorized);
        }
    };

    let st = state.clone();
    let m = meta.clone();
    let actor = Actor {
        user_id: acc.id,
        role: acc.role.clone(),
    };
    let failed_actor = actor.clone();
    let checked = check_password(
        &state,
        acc.id,
        password,
        move |conn| open_session(conn, &st, acc.id, acc.token_version, &actor, &meta),
        move |conn, failure| {
            audit::record(
                conn,
                &AuditEvent::new(Some(&failed_actor), "login_failed", "users", &m)
                    .record(failed_actor.user_id)
                    .new_values(failure.audit_values()),
            )?;
            Ok(())
        },
    )
    .await?;
    match checked {
        Checked::Accepted(tokens) => Ok(HttpResponse::Ok().json(tokens)),
        // A locked account answers as a wrong password does (README, Lockout): a distinct
        // answer would tell anyone which e-mails have accounts.
        Checked::Wrong | Checked::Refused { .. } => Err(AppError::Unauthorized),
    }
}

enum RefreshOutcome {
    Issued(TokenPair),
    Refused,
}

/// Trade a refresh token for a new pair. The old token is spent; presenting a spent token
/// again revokes its whole family (it was stolen or replayed).
#[utoipa::path(post, path = "/api/v1/auth/refresh", tag = "auth", request_body = RefreshRequest,
    responses((status = 200, body = TokenPair), (status = 401, body = crate::error::Problem),
        (status = 422, description = "`refresh_token` over 1024 bytes", body = crate::error::Problem)))]
pub async fn refresh(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: Json<RefreshRequest>,
) -> AppResult<HttpResponse> {
    if body.value.refresh_token.len() > MAX_REFRESH_TOKEN_BYTES {
        return Err(AppError::invalid("refresh_token", "is too long"));
    }
    let meta = request_meta(&req);
    let hash = hash_refresh_token(&body.value.refresh_token);
    let st = state.clone();
    let outcome = db::transaction(&state.pool, move |conn| {
        let found: Option<RefreshRow> = refresh_tokens::table
            .inner_join(sessions::table)
            .filter(refresh_tokens::token_hash.eq(&hash))
            .select((
                refresh_tokens::id,
                refresh_tokens::session_id,
                refresh_tokens::expires_at,
                refresh_tokens::spent_at,
                sessions::revoked_at,
                sessions::user_id,
            ))
            .for_update()
            .first(conn)
            .optional()?;
        let Some((token_id, sid, expires_at, spent_at, revoked_at, user_id)) = found else {
            return Ok(RefreshOutcome::Refused);
        };
        let (role, active, version): (String, bool, i32) = users::table
            .find(user_id)
            .select((users::role, users::active, users::token_version))
            .first(conn)?;
        let actor = Actor { user_id, role };
        if revoked_at.is_some() {
            return Ok(RefreshOutcome::Refused);
        }
        if spent_at.is_some() {
            diesel::update(sessions::table.find(sid))
                .set((
                    sessions::revoked_at.eq(diesel::dsl::now),
                    sessions::revoked_why.eq("refresh token reused"),
                ))
                .execute(conn)?;
            audit::record(
                conn,
                &AuditEvent::new(Some(&actor), "refresh_reuse", "sessions", &meta)
                    .record(user_id)
                    .new_values(json!({"session": sid, "revoked": true})),
            )?;
            return Ok(RefreshOutcome::Refused);
        }
        if expires_at <= Utc::now() || !active {
            return Ok(RefreshOutcome::Refused);
        }
        diesel::update(refresh_tokens::table.find(token_id))
            .set(refresh_tokens::spent_at.eq(diesel::dsl::now))
            .execute(conn)?;
        let token = issue_refresh(conn, &st, sid)?;
        audit::record(
            conn,
            &AuditEvent::new(Some(&actor), "refresh", "sessions", &meta)
                .record(user_id)
                .new_values(json!({"session": sid})),
        )?;
        Ok(RefreshOutcome::Issued(pair(
            &st, user_id, version, sid, token,
        )?))
    })
    .await?;
    match outcome {
        RefreshOutcome::Issued(p) => Ok(HttpResponse::Ok().json(p)),
        RefreshOutcome::Refused => Err(AppError::Unauthorized),
    }
}

/// End the caller's session: its refresh tokens and access tokens stop working at once.
#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "auth",
    responses((status = 204), (status = 401, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn logout(state: web::Data<AppState>, caller: Caller) -> AppResult<HttpResponse> {
    db::transaction(&state.pool, move |conn| {
        diesel::update(sessions::table.find(caller.session_id))
            .set((
                sessions::revoked_at.eq(diesel::dsl::now),
                sessions::revoked_why.eq("logout"),
            ))
            .execute(conn)?;
        audit::record(
            conn,
            &AuditEvent::new(Some(&caller.actor), "logout", "sessions", &caller.meta)
                .record(caller.user_id)
                .new_values(json!({"session": caller.session_id})),
        )?;
        Ok(())
    })
    .await?;
    Ok(HttpResponse::NoContent().finish())
}
