//! Login, refresh, logout. Every attempt is audited; failures in a short transaction of
//! their own.

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Integer, Nullable, Timestamptz};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::app::AppState;
use crate::audit::{self, Actor, AuditEvent, RequestMeta};
use crate::auth::caller::request_meta;
use crate::auth::password::Verdict;
use crate::auth::token::{hash_refresh_token, new_refresh_token};
use crate::auth::Caller;
use crate::db;
use crate::error::{AppError, AppResult};
use crate::schema::{refresh_tokens, sessions, users};

use super::{resource, Json};

/// Failures within this window count toward a lock.
const FAILURE_WINDOW_MINUTES: i64 = 15;
const MAX_FAILURES: i32 = 5;
const LOCK_MINUTES: i64 = 15;
/// Longer passwords are refused before hashing (bounds argon2's work).
const MAX_PASSWORD_BYTES: usize = 1024;

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

type AccountRow = (i64, String, bool, String, Option<DateTime<Utc>>, i32);
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
    password_hash: String,
    locked_until: Option<DateTime<Utc>>,
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

#[derive(QueryableByName)]
pub struct FailureCount {
    #[diesel(sql_type = Integer)]
    pub failed_logins: i32,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub locked_until: Option<DateTime<Utc>>,
}

/// Counts a failure in one statement, so concurrent failures cannot undercount.
pub fn count_failure(conn: &mut PgConnection, user_id: i64) -> QueryResult<FailureCount> {
    diesel::sql_query(
        "UPDATE users SET
            failed_logins = CASE WHEN first_failed_at IS NULL
                OR first_failed_at < now() - make_interval(mins => $2::int)
                THEN 1 ELSE failed_logins + 1 END,
            first_failed_at = CASE WHEN first_failed_at IS NULL
                OR first_failed_at < now() - make_interval(mins => $2::int)
                THEN now() ELSE first_failed_at END,
            locked_until = CASE WHEN first_failed_at IS NOT NULL
                AND first_failed_at >= now() - make_interval(mins => $2::int)
                AND failed_logins + 1 >= $3
                THEN now() + make_interval(mins => $4::int) ELSE locked_until END
         WHERE id = $1
         RETURNING failed_logins, locked_until",
    )
    .bind::<BigInt, _>(user_id)
    .bind::<Integer, _>(FAILURE_WINDOW_MINUTES as i32)
    .bind::<Integer, _>(MAX_FAILURES)
    .bind::<Integer, _>(LOCK_MINUTES as i32)
    .get_result(conn)
}

/// Sign in with e-mail and password.
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "auth", request_body = LoginRequest,
    responses(
        (status = 200, body = TokenPair),
        (status = 401, description = "any failure: unknown e-mail, wrong password, inactive account", body = crate::error::Problem),
        (status = 422, body = crate::error::Problem),
        (status = 429, description = "account locked after repeated failures; see Retry-After", body = crate::error::Problem)))]
pub async fn login(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: Json<LoginRequest>,
) -> AppResult<HttpResponse> {
    let LoginRequest { email, password } = body.value;
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(AppError::invalid("password", "is too long"));
    }
    let meta = request_meta(&req);
    let email = email.trim().to_lowercase();
    let lookup = email.clone();
    let account: Option<Account> = db::run(&state.pool, move |conn| {
        let row: Option<AccountRow> = users::table
            .filter(
                diesel::dsl::sql::<diesel::sql_types::Bool>("lower(email) = ")
                    .bind::<diesel::sql_types::Text, _>(lookup),
            )
            .select((
                users::id,
                users::role,
                users::active,
                users::password_hash,
                users::locked_until,
                users::token_version,
            ))
            .first(conn)
            .optional()?;
        Ok(row.map(
            |(id, role, active, password_hash, locked_until, token_version)| Account {
                id,
                role,
                active,
                password_hash,
                locked_until,
                token_version,
            },
        ))
    })
    .await?;

    let now = Utc::now();
    if let Some(acc) = &account {
        if let Some(until) = acc.locked_until.filter(|u| *u > now) {
            // Locked: the same answer whether or not the password is right; not verified.
            let (id, role) = (acc.id, acc.role.clone());
            let m = meta.clone();
            db::transaction(&state.pool, move |conn| {
                let actor = Actor { user_id: id, role };
                audit::record(
                    conn,
                    &AuditEvent::new(Some(&actor), "login_failed", "users", &m)
                        .record(id)
                        .new_values(json!({"cause": "locked"})),
                )?;
                Ok(())
            })
            .await?;
            return Err(AppError::TooManyRequests {
                retry_after_secs: (until - now).num_seconds() + 1,
            });
        }
    }

    let stored = account.as_ref().map(|a| a.password_hash.clone());
    let pw = password.clone();
    let verdict = state
        .with_hasher(move |h| h.verify(&pw, stored.as_deref()))
        .await?;

    match (account, verdict) {
        (Some(acc), Verdict::Match { needs_rehash }) if acc.active => {
            let new_hash = if needs_rehash {
                Some(
                    state
                        .with_hasher(move |h| h.hash(&password))
                        .await?
                        .map_err(AppError::internal)?,
                )
            } else {
                None
            };
            let st = state.clone();
            let tokens = db::transaction(&state.pool, move |conn| {
                diesel::update(users::table.find(acc.id))
                    .set((
                        users::failed_logins.eq(0),
                        users::first_failed_at.eq(None::<DateTime<Utc>>),
                        users::locked_until.eq(None::<DateTime<Utc>>),
                    ))
                    .execute(conn)?;
                if let Some(h) = new_hash {
                    diesel::update(users::table.find(acc.id))
                        .set(users::password_hash.eq(h))
                        .execute(conn)?;
                }
                let actor = Actor {
                    user_id: acc.id,
                    role: acc.role.clone(),
                };
                open_session(conn, &st, acc.id, acc.token_version, &actor, &meta)
            })
            .await?;
            Ok(HttpResponse::Ok().json(tokens))
        }
        (account, _) => {
            let m = meta.clone();
            let attempted = email.clone();
            db::transaction(&state.pool, move |conn| {
                match account {
                    Some(acc) => {
                        let counted = count_failure(conn, acc.id)?;
                        let actor = Actor {
                            user_id: acc.id,
                            role: acc.role.clone(),
                        };
                        let cause = if acc.active {
                            "bad_password"
                        } else {
                            "inactive"
                        };
                        audit::record(
                            conn,
                            &AuditEvent::new(Some(&actor), "login_failed", "users", &m)
                                .record(acc.id)
                                .new_values(json!({
                                    "cause": cause,
                                    "failed_logins": counted.failed_logins,
                                    "locked_until": counted.locked_until,
                                })),
                        )?;
                    }
                    None => {
                        audit::record(
                            conn,
                            &AuditEvent::new(None, "login_failed", "users", &m).new_values(
                                json!({"cause": "unknown_account", "email": attempted}),
                            ),
                        )?;
                    }
                }
                Ok(())
            })
            .await?;
            Err(AppError::Unauthorized)
        }
    }
}

enum RefreshOutcome {
    Issued(TokenPair),
    Refused,
}

/// Trade a refresh token for a new pair. The old token is spent; presenting a spent token
/// again revokes its whole family (it was stolen or replayed).
#[utoipa::path(post, path = "/api/v1/auth/refresh", tag = "auth", request_body = RefreshRequest,
    responses((status = 200, body = TokenPair), (status = 401, body = crate::error::Problem)))]
pub async fn refresh(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: Json<RefreshRequest>,
) -> AppResult<HttpResponse> {
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
