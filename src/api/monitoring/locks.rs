//! Locks: an admin locks a subject, a site or the whole study (the database lock before
//! analysis). Writes touching locked data answer 423. Unlocking needs a reason.

use actix_web::{http::StatusCode, web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use crate::api::{resource, Json};
use crate::audit::{self, AuditEvent};
use crate::auth::{authorize, Caller, Permission};
use crate::db;
use crate::domain::values::Reason;
use crate::error::{conflict_on_unique, AppError, AppResult};
use crate::schema::{locks as l, sites, subjects};
use crate::state::AppState;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        resource("/locks")
            .route(web::get().to(list))
            .route(web::post().to(create)),
    )
    .service(resource("/locks/{id}").route(web::delete().to(unlock)));
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum LockScope {
    Study,
    Site,
    Subject,
}

#[derive(Debug, Clone, Serialize, Queryable, Selectable, ToSchema)]
#[diesel(table_name = l)]
pub struct Lock {
    pub id: i64,
    /// study, site or subject
    pub scope: String,
    pub site_id: Option<i64>,
    pub subject_id: Option<i64>,
    pub reason: String,
    pub locked_by: i64,
    pub locked_at: DateTime<Utc>,
    pub unlocked_by: Option<i64>,
    pub unlocked_at: Option<DateTime<Utc>>,
    pub unlock_reason: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewLock {
    pub scope: LockScope,
    /// site code or subject code; absent for the study
    pub target: Option<String>,
    pub reason: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Unlock {
    pub reason: String,
}

/// Locks, newest first, active and past.
#[utoipa::path(get, path = "/api/v1/locks", tag = "monitoring",
    responses((status = 200, body = Vec<Lock>), (status = 403, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn list(state: web::Data<AppState>, caller: Caller) -> AppResult<HttpResponse> {
    authorize(&caller, Permission::Lock)?;
    let items = db::run(&state.pool, |conn| {
        Ok(l::table
            .order(l::id.desc())
            .limit(1000)
            .select(Lock::as_select())
            .load(conn)?)
    })
    .await?;
    Ok(HttpResponse::Ok().json(items))
}

/// Lock the study, a site or a subject.
#[utoipa::path(post, path = "/api/v1/locks", tag = "monitoring", request_body = NewLock,
    responses((status = 201, body = Lock), (status = 403, body = crate::error::Problem),
        (status = 404, description = "no such site or subject", body = crate::error::Problem),
        (status = 409, description = "already locked", body = crate::error::Problem),
        (status = 422, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn create(
    state: web::Data<AppState>,
    caller: Caller,
    body: Json<NewLock>,
) -> AppResult<HttpResponse> {
    authorize(&caller, Permission::Lock)?;
    let b = body.value;
    let reason =
        Reason::parse("reason", Some(&b.reason)).map_err(|e| AppError::Validation(vec![e]))?;
    if (b.scope == LockScope::Study) != b.target.is_none() {
        return Err(AppError::invalid(
            "target",
            "a site or subject code; none for the study",
        ));
    }
    let lock = db::transaction(&state.pool, move |conn| {
        let (scope, site_id, subject_id) = match (b.scope, b.target.as_deref()) {
            (LockScope::Site, Some(code)) => {
                let id: i64 = sites::table
                    .filter(sites::code.eq(code))
                    .select(sites::id)
                    .first(conn)?;
                ("site", Some(id), None)
            }
            (LockScope::Subject, Some(code)) => {
                let (id, site): (i64, i64) = subjects::table
                    .filter(subjects::subject_code.eq(code))
                    .select((subjects::id, subjects::site_id))
                    .first(conn)?;
                ("subject", Some(site), Some(id))
            }
            _ => ("study", None, None),
        };
        let mut same = l::table
            .filter(l::unlocked_at.is_null())
            .filter(l::scope.eq(scope))
            .into_boxed();
        if scope == "site" {
            same = same.filter(l::site_id.eq(site_id.unwrap_or(-1)));
        }
        if scope == "subject" {
            same = same.filter(l::subject_id.eq(subject_id.unwrap_or(-1)));
        }
        let already = format!("That {scope} is already locked.");
        if same.count().get_result::<i64>(conn)? > 0 {
            return Err(AppError::Conflict(already));
        }
        let lock: Lock = diesel::insert_into(l::table)
            .values((
                l::scope.eq(scope),
                l::site_id.eq(site_id),
                l::subject_id.eq(subject_id),
                l::reason.eq(reason.as_str()),
                l::locked_by.eq(caller.user_id),
            ))
            .returning(Lock::as_returning())
            .get_result(conn)
            .map_err(conflict_on_unique(already))?;
        audit::record(
            conn,
            &AuditEvent::new(Some(&caller.actor), "lock", "locks", &caller.meta)
                .record(lock.id)
                .site(site_id)
                .subject(subject_id)
                .new_values(json!({"scope": scope, "target": b.target}))
                .reason(Some(reason.as_str())),
        )?;
        Ok(lock)
    })
    .await?;
    Ok(HttpResponse::build(StatusCode::CREATED).json(lock))
}

/// Unlock, with a reason.
#[utoipa::path(delete, path = "/api/v1/locks/{id}", tag = "monitoring", params(("id" = i64, Path)),
    request_body = Unlock,
    responses((status = 200, body = Lock), (status = 403, body = crate::error::Problem),
        (status = 404, body = crate::error::Problem), (status = 409, description = "not locked", body = crate::error::Problem),
        (status = 422, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn unlock(
    state: web::Data<AppState>,
    caller: Caller,
    _req: HttpRequest,
    id: web::Path<i64>,
    body: Json<Unlock>,
) -> AppResult<HttpResponse> {
    authorize(&caller, Permission::Lock)?;
    let reason = Reason::parse("reason", Some(&body.value.reason))
        .map_err(|e| AppError::Validation(vec![e]))?;
    let id = id.into_inner();
    let lock = db::transaction(&state.pool, move |conn| {
        let old: Lock = l::table
            .find(id)
            .select(Lock::as_select())
            .for_update()
            .first(conn)?;
        if old.unlocked_at.is_some() {
            return Err(AppError::Conflict("This lock was already lifted.".into()));
        }
        let lock: Lock = diesel::update(l::table.find(id))
            .set((
                l::unlocked_at.eq(diesel::dsl::now),
                l::unlocked_by.eq(caller.user_id),
                l::unlock_reason.eq(reason.as_str()),
            ))
            .returning(Lock::as_returning())
            .get_result(conn)?;
        audit::record(
            conn,
            &AuditEvent::new(Some(&caller.actor), "unlock", "locks", &caller.meta)
                .record(id)
                .site(old.site_id)
                .subject(old.subject_id)
                .old(json!({"active": true}))
                .new_values(json!({"active": false}))
                .reason(Some(reason.as_str())),
        )?;
        Ok(lock)
    })
    .await?;
    Ok(HttpResponse::Ok().json(lock))
}
