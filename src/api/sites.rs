//! Sites (admin).

use actix_web::{http::StatusCode, web, HttpResponse};
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::audit::{self, diff, AuditEvent};
use crate::auth::{authorize, Caller, Permission};
use crate::db;
use crate::domain::time::parse_zone;
use crate::domain::values::bounded_text;
use crate::domain::FieldError;
use crate::error::{AppError, AppResult};
use crate::schema::{sites, subjects};
use crate::state::AppState;

use super::{resource, Json, Page, PageParams};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        resource("/sites")
            .route(web::get().to(list))
            .route(web::post().to(create)),
    )
    .service(
        resource("/sites/{site_code}")
            .route(web::get().to(get))
            .route(web::patch().to(update)),
    );
}

#[derive(Debug, Clone, Serialize, Queryable, Selectable, ToSchema)]
#[diesel(table_name = sites)]
pub struct Site {
    pub id: i64,
    pub code: String,
    pub name: String,
    pub country: String,
    pub time_zone: String,
    pub active: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSite {
    /// 2-10 capital letters or digits, e.g. FR01
    pub code: String,
    pub name: String,
    /// ISO 3166-1 alpha-2
    pub country: String,
    /// IANA time zone, e.g. Europe/Paris; default UTC
    pub time_zone: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SiteChange {
    pub name: Option<String>,
    pub country: Option<String>,
    pub time_zone: Option<String>,
    pub active: Option<bool>,
}

fn check_code(code: &str) -> Result<(), FieldError> {
    let ok = (2..=10).contains(&code.len())
        && code
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
    ok.then_some(())
        .ok_or_else(|| FieldError::new("code", "2-10 capital letters or digits"))
}

fn check_country(c: &str) -> Result<(), FieldError> {
    (c.len() == 2 && c.bytes().all(|b| b.is_ascii_uppercase()))
        .then_some(())
        .ok_or_else(|| FieldError::new("country", "two capital letters (ISO 3166-1)"))
}

fn check_zone(z: &str) -> Result<(), FieldError> {
    parse_zone(z)
        .map(|_| ())
        .ok_or_else(|| FieldError::new("time_zone", "not an IANA time zone"))
}

fn collect(results: Vec<Result<(), FieldError>>) -> AppResult<()> {
    let errors: Vec<FieldError> = results.into_iter().filter_map(Result::err).collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(AppError::Validation(errors))
    }
}

/// List sites.
#[utoipa::path(get, path = "/api/v1/sites", tag = "administration", params(PageParams),
    responses((status = 200, body = Page<Site>), (status = 403, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn list(
    state: web::Data<AppState>,
    caller: Caller,
    page: web::Query<PageParams>,
) -> AppResult<HttpResponse> {
    authorize(&caller, Permission::ManageAccess)?;
    let (limit, after) = (page.limit()?, page.after());
    let items = db::run(&state.pool, move |conn| {
        Ok(sites::table
            .filter(sites::id.gt(after))
            .order(sites::id)
            .limit(limit)
            .select(Site::as_select())
            .load(conn)?)
    })
    .await?;
    Ok(HttpResponse::Ok().json(Page::new(items, limit, |s| s.id)))
}

/// Create a site.
#[utoipa::path(post, path = "/api/v1/sites", tag = "administration", request_body = NewSite,
    responses((status = 201, body = Site), (status = 409, body = crate::error::Problem), (status = 422, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn create(
    state: web::Data<AppState>,
    caller: Caller,
    body: Json<NewSite>,
) -> AppResult<HttpResponse> {
    authorize(&caller, Permission::ManageAccess)?;
    let b = body.value;
    let zone = b.time_zone.unwrap_or_else(|| "UTC".into());
    let name = bounded_text("name", &b.name, 200);
    collect(vec![
        check_code(&b.code),
        check_country(&b.country),
        check_zone(&zone),
        name.as_ref().map(|_| ()).map_err(Clone::clone),
    ])?;
    let name = name.map_err(|e| AppError::Validation(vec![e]))?;
    let site = db::transaction(&state.pool, move |conn| {
        let exists: i64 = sites::table
            .filter(sites::code.eq(&b.code))
            .count()
            .get_result(conn)?;
        if exists > 0 {
            return Err(AppError::Conflict(format!(
                "Site {} already exists.",
                b.code
            )));
        }
        let site: Site = diesel::insert_into(sites::table)
            .values((
                sites::code.eq(&b.code),
                sites::name.eq(&name),
                sites::country.eq(&b.country),
                sites::time_zone.eq(&zone),
            ))
            .returning(Site::as_returning())
            .get_result(conn)?;
        audit::record(
            conn,
            &AuditEvent::new(Some(&caller.actor), "create", "sites", &caller.meta)
                .record(site.id)
                .site(Some(site.id))
                .new_values(serde_json::to_value(&site).unwrap_or_default()),
        )?;
        Ok(site)
    })
    .await?;
    Ok(HttpResponse::build(StatusCode::CREATED).json(site))
}

/// One site.
#[utoipa::path(get, path = "/api/v1/sites/{site_code}", tag = "administration",
    params(("site_code" = String, Path)),
    responses((status = 200, body = Site), (status = 404, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn get(
    state: web::Data<AppState>,
    caller: Caller,
    code: web::Path<String>,
) -> AppResult<HttpResponse> {
    authorize(&caller, Permission::ManageAccess)?;
    let code = code.into_inner();
    let site = db::run(&state.pool, move |conn| {
        Ok(sites::table
            .filter(sites::code.eq(code))
            .select(Site::as_select())
            .first(conn)?)
    })
    .await?;
    Ok(HttpResponse::Ok().json(site))
}

/// Rename, move or deactivate a site.
#[utoipa::path(patch, path = "/api/v1/sites/{site_code}", tag = "administration",
    params(("site_code" = String, Path)), request_body = SiteChange,
    responses((status = 200, body = Site), (status = 404, body = crate::error::Problem), (status = 422, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn update(
    state: web::Data<AppState>,
    caller: Caller,
    code: web::Path<String>,
    body: Json<SiteChange>,
) -> AppResult<HttpResponse> {
    authorize(&caller, Permission::ManageAccess)?;
    let b = body.value;
    let mut checks = Vec::new();
    if let Some(c) = &b.country {
        checks.push(check_country(c));
    }
    if let Some(z) = &b.time_zone {
        checks.push(check_zone(z));
    }
    if let Some(n) = &b.name {
        checks.push(bounded_text("name", n, 200).map(|_| ()));
    }
    collect(checks)?;
    let code = code.into_inner();
    let site = db::transaction(&state.pool, move |conn| {
        let old: Site = sites::table
            .filter(sites::code.eq(&code))
            .select(Site::as_select())
            .for_update()
            .first(conn)?;
        // Local dates (study days, consent windows, SDTM dates) are read in the site's
        // zone: once it has subjects, a new zone would silently re-date their data. The
        // row lock above also holds off enrolments (they update the site's row).
        let rezoned = b.time_zone.as_deref().is_some_and(|z| z != old.time_zone);
        if rezoned {
            let enrolled: i64 = subjects::table
                .filter(subjects::site_id.eq(old.id))
                .count()
                .get_result(conn)?;
            if enrolled > 0 {
                return Err(AppError::invalid(
                    "time_zone",
                    format!(
                        "cannot change once subjects are enrolled at the site ({enrolled} so far): \
                         their local dates, study days and consent windows would change"
                    ),
                ));
            }
        }
        let new: Site = diesel::update(sites::table.find(old.id))
            .set((
                sites::name.eq(b.name.as_deref().map(str::trim).unwrap_or(&old.name)),
                sites::country.eq(b.country.as_deref().unwrap_or(&old.country)),
                sites::time_zone.eq(b.time_zone.as_deref().unwrap_or(&old.time_zone)),
                sites::active.eq(b.active.unwrap_or(old.active)),
                sites::updated_at.eq(diesel::dsl::now),
            ))
            .returning(Site::as_returning())
            .get_result(conn)?;
        let mut o = serde_json::to_value(&old).unwrap_or_default();
        let mut n = serde_json::to_value(&new).unwrap_or_default();
        for v in [&mut o, &mut n] {
            if let Some(m) = v.as_object_mut() {
                m.remove("updated_at");
            }
        }
        let (o, n) = diff(&o, &n);
        audit::record(
            conn,
            &AuditEvent::new(Some(&caller.actor), "update", "sites", &caller.meta)
                .record(new.id)
                .site(Some(new.id))
                .old(o)
                .new_values(n),
        )?;
        Ok(new)
    })
    .await?;
    Ok(HttpResponse::Ok().json(site))
}
