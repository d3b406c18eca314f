//! Users and their site assignments (admin). Password hashes never leave the server and
//! never enter the audit trail.

use actix_web::{http::StatusCode, web, HttpResponse};
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use crate::audit::{self, diff, AuditEvent};
use crate::auth::password::check_policy;
use crate::auth::policy::check_access_change;
use crate::auth::{authorize, Caller, Permission, Role};
use crate::db;
use crate::domain::email;
use crate::domain::values::bounded_text;
use crate::error::{AppError, AppResult};
use crate::schema::{sessions, user_sites, users};
use crate::services::users::{create_user, site_codes, site_ids_for_codes, NewUser};
use crate::state::AppState;

use super::{resource, Json, Page, PageParams};

/// `pg_advisory_xact_lock` key serialising user changes ("userchg" in ASCII).
const USER_CHANGE_LOCK: i64 = 0x0075_7365_7263_6867;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        resource("/users")
            .route(web::get().to(list))
            .route(web::post().to(create)),
    )
    .service(
        resource("/users/{user_id}")
            .route(web::get().to(get))
            .route(web::patch().to(update)),
    );
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct User {
    pub id: i64,
    pub email: String,
    pub name: String,
    pub role: Role,
    pub active: bool,
    pub site_codes: Vec<String>,
    pub locked_until: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUserRequest {
    pub email: String,
    pub name: String,
    pub role: Role,
    /// 15-128 characters
    pub password: String,
    #[serde(default)]
    pub site_codes: Vec<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserChange {
    pub name: Option<String>,
    pub role: Option<Role>,
    pub active: Option<bool>,
    pub site_codes: Option<Vec<String>>,
}

type UserRow = (
    i64,
    String,
    String,
    String,
    bool,
    Option<DateTime<Utc>>,
    DateTime<Utc>,
);

fn load_user(conn: &mut PgConnection, id: i64) -> AppResult<User> {
    let (id, email, name, role, active, locked_until, created_at): UserRow = users::table
        .find(id)
        .select((
            users::id,
            users::email,
            users::name,
            users::role,
            users::active,
            users::locked_until,
            users::created_at,
        ))
        .first(conn)?;
    Ok(User {
        id,
        email,
        name,
        role: Role::parse(&role).ok_or_else(|| AppError::internal("unknown role in database"))?,
        active,
        site_codes: site_codes(conn, id)?,
        locked_until,
        created_at,
    })
}

/// List users.
#[utoipa::path(get, path = "/api/v1/users", tag = "administration", params(PageParams),
    responses((status = 200, body = Page<User>), (status = 403, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn list(
    state: web::Data<AppState>,
    caller: Caller,
    page: web::Query<PageParams>,
) -> AppResult<HttpResponse> {
    authorize(&caller, Permission::ManageAccess)?;
    let (limit, after) = (page.limit()?, page.after());
    let items = db::run(&state.pool, move |conn| {
        let ids: Vec<i64> = users::table
            .filter(users::id.gt(after))
            .order(users::id)
            .limit(limit)
            .select(users::id)
            .load(conn)?;
        ids.into_iter()
            .map(|id| load_user(conn, id))
            .collect::<AppResult<Vec<_>>>()
    })
    .await?;
    Ok(HttpResponse::Ok().json(Page::new(items, limit, |u| u.id)))
}

/// Create a user.
#[utoipa::path(post, path = "/api/v1/users", tag = "administration", request_body = NewUserRequest,
    responses((status = 201, body = User), (status = 409, body = crate::error::Problem), (status = 422, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn create(
    state: web::Data<AppState>,
    caller: Caller,
    body: Json<NewUserRequest>,
) -> AppResult<HttpResponse> {
    authorize(&caller, Permission::ManageAccess)?;
    let b = body.value;
    let mut errors = Vec::new();
    let email = email::parse("email", &b.email)
        .map_err(|e| errors.push(e))
        .ok();
    let name = bounded_text("name", &b.name, 200)
        .map_err(|e| errors.push(e))
        .ok();
    if let Err(e) = check_policy("password", &b.password, &b.email) {
        errors.push(e);
    }
    let (Some(email), Some(name), true) = (email, name, errors.is_empty()) else {
        return Err(AppError::Validation(errors));
    };
    let password = b.password;
    let hash = state
        .with_hasher(move |h| h.hash(&password))
        .await?
        .map_err(AppError::internal)?;
    let user = db::transaction(&state.pool, move |conn| {
        let site_ids = site_ids_for_codes(conn, "site_codes", &b.site_codes)?;
        let id = create_user(
            conn,
            &NewUser {
                email: &email,
                name: &name,
                role: b.role,
                password_hash: &hash,
                site_ids: &site_ids,
            },
            Some(&caller.actor),
            &caller.meta,
        )?;
        load_user(conn, id)
    })
    .await?;
    Ok(HttpResponse::build(StatusCode::CREATED).json(user))
}

/// One user.
#[utoipa::path(get, path = "/api/v1/users/{user_id}", tag = "administration",
    params(("user_id" = i64, Path)),
    responses((status = 200, body = User), (status = 404, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn get(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<i64>,
) -> AppResult<HttpResponse> {
    authorize(&caller, Permission::ManageAccess)?;
    let id = id.into_inner();
    let user = db::run(&state.pool, move |conn| load_user(conn, id)).await?;
    Ok(HttpResponse::Ok().json(user))
}

/// Change a user's name, role, sites or activity. Role, site and activity changes end the
/// user's sessions at once: access tokens stop working and refresh tokens are refused. An admin cannot change their own
/// role (422 naming `role`), and the last active admin can be neither demoted nor deactivated
/// (409).
#[utoipa::path(patch, path = "/api/v1/users/{user_id}", tag = "administration",
    params(("user_id" = i64, Path)), request_body = UserChange,
    responses((status = 200, body = User), (status = 404, body = crate::error::Problem),
        (status = 409, description = "would leave no active admin", body = crate::error::Problem),
        (status = 422, description = "invalid field, or an admin's own `role`", body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn update(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<i64>,
    body: Json<UserChange>,
) -> AppResult<HttpResponse> {
    authorize(&caller, Permission::ManageAccess)?;
    let b = body.value;
    let name = match &b.name {
        Some(n) => Some(bounded_text("name", n, 200).map_err(|e| AppError::Validation(vec![e]))?),
        None => None,
    };
    let id = id.into_inner();
    let user = db::transaction(&state.pool, move |conn| {
        // One user change at a time: two admins removing each other at once must not leave
        // none (row locks taken in different orders would deadlock instead).
        diesel::sql_query("SELECT pg_advisory_xact_lock($1)")
            .bind::<diesel::sql_types::BigInt, _>(USER_CHANGE_LOCK)
            .execute(conn)?;
        // lock first, so the old values in the audit diff are the ones replaced
        users::table.find(id).select(users::id).for_update().first::<i64>(conn)?;
        let old = load_user(conn, id)?;
        let site_ids = match &b.site_codes {
            Some(codes) => Some(site_ids_for_codes(conn, "site_codes", codes)?),
            None => None,
        };
        let role = b.role.unwrap_or(old.role);
        let active = b.active.unwrap_or(old.active);
        let other_active_admins: i64 = users::table
            .filter(users::role.eq(Role::Admin.as_str()))
            .filter(users::active)
            .filter(users::id.ne(id))
            .count()
            .get_result(conn)?;
        check_access_change(
            caller.user_id,
            id,
            (old.role, role),
            (old.active, active),
            other_active_admins,
        )?;
        let sites_changed = b
            .site_codes
            .as_ref()
            .is_some_and(|c| {
                let mut c = c.clone();
                c.sort();
                c.dedup();
                c != old.site_codes
            });
        let access_changed = role != old.role || active != old.active || sites_changed;
        diesel::update(users::table.find(id))
            .set((
                users::name.eq(name.as_deref().unwrap_or(&old.name)),
                users::role.eq(role.as_str()),
                users::active.eq(active),
                users::updated_at.eq(diesel::dsl::now),
            ))
            .execute(conn)?;
        if let Some(ids) = site_ids {
            diesel::delete(user_sites::table.filter(user_sites::user_id.eq(id))).execute(conn)?;
            let rows: Vec<_> = ids
                .iter()
                .map(|s| (user_sites::user_id.eq(id), user_sites::site_id.eq(*s)))
                .collect();
            diesel::insert_into(user_sites::table).values(&rows).execute(conn)?;
        }
        // Access tokens die with the token version; the sessions end too, so that their
        // refresh tokens cannot mint new access tokens under the new role or sites.
        let mut sessions_revoked = 0;
        if access_changed {
            diesel::update(users::table.find(id))
                .set(users::token_version.eq(users::token_version + 1))
                .execute(conn)?;
            let why = if active { "access changed" } else { "deactivated" };
            sessions_revoked = diesel::update(
                sessions::table
                    .filter(sessions::user_id.eq(id))
                    .filter(sessions::revoked_at.is_null()),
            )
            .set((
                sessions::revoked_at.eq(diesel::dsl::now),
                sessions::revoked_why.eq(why),
            ))
            .execute(conn)?;
        }
        let new = load_user(conn, id)?;
        let view = |u: &User| json!({"name": u.name, "role": u.role, "active": u.active, "site_codes": u.site_codes});
        let (o, mut n) = diff(&view(&old), &view(&new));
        if access_changed {
            n["sessions_revoked"] = json!(sessions_revoked);
        }
        audit::record(
            conn,
            &AuditEvent::new(Some(&caller.actor), "user_change", "users", &caller.meta)
                .record(id)
                .old(o)
                .new_values(n),
        )?;
        Ok(new)
    })
    .await?;
    Ok(HttpResponse::Ok().json(user))
}
