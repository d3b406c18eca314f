//! Data queries: open -> answered -> closed, and closed -> reopened (open). Raised by a
//! monitor or by a soft edit check; answered by an investigator of the site; closed and
//! reopened by a monitor. Every step is a message in the thread, and audited.

use actix_web::{http::StatusCode, web, HttpResponse};
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

use crate::api::{resource, Json, Page};
use crate::audit::{self, AuditEvent};
use crate::auth::{authorize, Caller, Permission};
use crate::db;
use crate::domain::values::long_text;
use crate::error::{AppError, AppResult};
use crate::schema::{queries as q, query_messages as m, sites, subjects};
use crate::state::AppState;

use super::{known_field, record_owner, RECORD_TYPES};
use crate::services::form_records;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        resource("/queries")
            .route(web::get().to(list))
            .route(web::post().to(create)),
    )
    .service(resource("/queries/counts").route(web::get().to(counts)))
    .service(resource("/queries/{id}").route(web::get().to(get)))
    .service(resource("/queries/{id}/answer").route(web::post().to(answer)))
    .service(resource("/queries/{id}/close").route(web::post().to(close)))
    .service(resource("/queries/{id}/reopen").route(web::post().to(reopen)));
}

#[derive(Debug, Clone, Serialize, Queryable, Selectable, ToSchema)]
#[diesel(table_name = m)]
pub struct Message {
    pub id: i64,
    /// open, answer, close or reopen
    pub kind: String,
    pub text: String,
    pub author_id: Option<i64>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = q)]
struct QueryRow {
    id: i64,
    site_id: i64,
    subject_id: i64,
    record_type: String,
    record_id: i64,
    field: Option<String>,
    status: String,
    origin: String,
    created_at: DateTime<Utc>,
    created_by: Option<i64>,
    updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Query {
    pub id: i64,
    pub subject_code: String,
    pub site_code: String,
    /// subjects, consents, injections, temperatures, adverse_events, or form_records (a
    /// record of a form of the study definition; temperatures and adverse events are form
    /// records of the forms `temperature` and `adverse_event`, answered by their old names)
    pub record_type: String,
    pub record_id: i64,
    /// the form of a form record (an id of GET /study/definition); null otherwise
    pub form: Option<String>,
    /// the field, or for a form record the item, the query is about
    pub field: Option<String>,
    /// open, answered or closed
    pub status: String,
    /// "manual", or the edit check that raised it
    pub origin: String,
    pub created_at: DateTime<Utc>,
    pub created_by: Option<i64>,
    pub updated_at: DateTime<Utc>,
    pub messages: Vec<Message>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewQuery {
    pub record_type: String,
    pub record_id: i64,
    pub field: Option<String>,
    pub text: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QueryStep {
    pub text: String,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct QueryFilter {
    /// site code
    pub site: Option<String>,
    /// open, answered or closed
    pub status: Option<String>,
    /// subject code
    pub subject: Option<String>,
    pub origin: Option<String>,
    /// a form of the study definition entered through /subjects/{code}/forms/{form}: only
    /// the queries on its records
    pub form: Option<String>,
    /// only queries opened at least this many days ago
    pub min_age_days: Option<i64>,
    pub limit: Option<i64>,
    pub after: Option<i64>,
}

fn load(conn: &mut PgConnection, ids: &[i64]) -> AppResult<Vec<Query>> {
    let rows: Vec<(QueryRow, String, String)> = q::table
        .inner_join(subjects::table.inner_join(sites::table))
        .filter(q::id.eq_any(ids))
        .order(q::id)
        .select((QueryRow::as_select(), subjects::subject_code, sites::code))
        .load(conn)?;
    let messages: Vec<(i64, Message)> = m::table
        .filter(m::query_id.eq_any(ids))
        .order(m::id)
        .select((m::query_id, Message::as_select()))
        .load(conn)?;
    let form_record_ids: Vec<i64> = rows
        .iter()
        .filter(|(r, _, _)| r.record_type == form_records::ENTITY)
        .map(|(r, _, _)| r.record_id)
        .collect();
    let forms = if form_record_ids.is_empty() {
        Vec::new()
    } else {
        crate::db::form_records::forms_of(conn, &form_record_ids)?
    };
    Ok(rows
        .into_iter()
        .map(|(r, subject_code, site_code)| Query {
            messages: messages
                .iter()
                .filter(|(qid, _)| *qid == r.id)
                .map(|(_, msg)| msg.clone())
                .collect(),
            id: r.id,
            subject_code,
            site_code,
            form: (r.record_type == form_records::ENTITY)
                .then(|| forms.iter().find(|(id, _)| *id == r.record_id))
                .flatten()
                .map(|(_, f)| f.clone()),
            record_type: r.record_type,
            record_id: r.record_id,
            field: r.field,
            status: r.status,
            origin: r.origin,
            created_at: r.created_at,
            created_by: r.created_by,
            updated_at: r.updated_at,
        })
        .map(|mut q| {
            q.record_type = super::answered_type(&q.record_type, q.form.as_deref());
            q
        })
        .collect())
}

/// Data queries in the caller's sites.
#[utoipa::path(get, path = "/api/v1/queries", tag = "monitoring", params(QueryFilter),
    responses((status = 200, body = Page<Query>), (status = 403, body = crate::error::Problem), (status = 422, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn list(
    state: web::Data<AppState>,
    caller: Caller,
    f: web::Query<QueryFilter>,
) -> AppResult<HttpResponse> {
    let scope = authorize(&caller, Permission::ReadQueries)?;
    let f = f.into_inner();
    let limit = f.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(AppError::invalid("limit", "must be between 1 and 500"));
    }
    if let Some(form) = &f.form {
        if state.study.form(form).is_none() {
            return Err(AppError::invalid(
                "form",
                "is not a form of the study entered through /subjects/{code}/forms/{form}",
            ));
        }
    }
    let items = db::run(&state.pool, move |conn| {
        let mut sel = q::table
            .inner_join(subjects::table.inner_join(sites::table))
            .filter(q::id.gt(f.after.unwrap_or(0)))
            .into_boxed();
        if let Some(ids) = scope.site_ids() {
            sel = sel.filter(q::site_id.eq_any(ids.to_vec()));
        }
        if let Some(s) = f.site {
            sel = sel.filter(sites::code.eq(s));
        }
        if let Some(s) = f.status {
            sel = sel.filter(q::status.eq(s));
        }
        if let Some(s) = f.subject {
            sel = sel.filter(subjects::subject_code.eq(s));
        }
        if let Some(o) = f.origin {
            sel = sel.filter(q::origin.eq(o));
        }
        if let Some(form) = f.form {
            sel = sel
                .filter(q::record_type.eq(form_records::ENTITY))
                .filter(q::record_id.eq_any(crate::db::form_records::ids_of_form(form)));
        }
        if let Some(days) = f.min_age_days {
            sel = sel.filter(
                q::created_at.le(Utc::now() - chrono::Duration::days(days.clamp(0, 36500))),
            );
        }
        let ids: Vec<i64> = sel.order(q::id).limit(limit).select(q::id).load(conn)?;
        load(conn, &ids)
    })
    .await?;
    Ok(HttpResponse::Ok().json(Page::new(items, limit, |x| x.id)))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct QueryCount {
    pub site_code: String,
    pub status: String,
    pub count: i64,
}

/// Counts per site and status, for dashboards.
#[utoipa::path(get, path = "/api/v1/queries/counts", tag = "monitoring",
    responses((status = 200, body = Vec<QueryCount>), (status = 403, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn counts(state: web::Data<AppState>, caller: Caller) -> AppResult<HttpResponse> {
    let scope = authorize(&caller, Permission::ReadQueries)?;
    let items = db::run(&state.pool, move |conn| {
        let grouped = q::table
            .group_by((q::site_id, q::status))
            .select((q::site_id, q::status, diesel::dsl::count_star()))
            .order((q::site_id, q::status));
        let counted: Vec<(i64, String, i64)> = match scope.site_ids() {
            Some(ids) => grouped.filter(q::site_id.eq_any(ids.to_vec())).load(conn)?,
            None => grouped.load(conn)?,
        };
        let codes: Vec<(i64, String)> = sites::table.select((sites::id, sites::code)).load(conn)?;
        let code_of = |id: i64| {
            codes
                .iter()
                .find(|(i, _)| *i == id)
                .map(|(_, c)| c.clone())
                .unwrap_or_default()
        };
        let rows: Vec<(String, String, i64)> = counted
            .into_iter()
            .map(|(site, status, n)| (code_of(site), status, n))
            .collect();
        Ok(rows
            .into_iter()
            .map(|(site_code, status, count)| QueryCount {
                site_code,
                status,
                count,
            })
            .collect::<Vec<_>>())
    })
    .await?;
    Ok(HttpResponse::Ok().json(items))
}

/// Raise a query on a record (and optionally one of its fields).
#[utoipa::path(post, path = "/api/v1/queries", tag = "monitoring", request_body = NewQuery,
    responses((status = 201, body = Query), (status = 403, body = crate::error::Problem),
        (status = 404, body = crate::error::Problem), (status = 422, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn create(
    state: web::Data<AppState>,
    caller: Caller,
    body: Json<NewQuery>,
) -> AppResult<HttpResponse> {
    let scope = authorize(&caller, Permission::RaiseQuery)?;
    let b = body.value;
    let record_type = RECORD_TYPES
        .iter()
        .find(|(t, path)| *t == b.record_type || *path == Some(b.record_type.as_str()))
        .map(|(t, _)| *t)
        .ok_or_else(|| {
            let names: Vec<&str> = RECORD_TYPES.iter().map(|(t, _)| *t).collect();
            AppError::invalid("record_type", format!("one of {}", names.join(", ")))
        })?;
    if let Some(f) = &b.field {
        let items_of_form = super::stored_type(record_type) == form_records::ENTITY;
        if !items_of_form && !known_field(record_type, f) {
            return Err(AppError::invalid(
                "field",
                format!("not a field of {record_type}"),
            ));
        }
    }
    let text = long_text("text", &b.text, 2000).map_err(|e| AppError::Validation(vec![e]))?;
    let def = state.study.clone();
    let query = db::transaction(&state.pool, move |conn| {
        let owner = record_owner(conn, record_type, b.record_id)?;
        let (site_id, subject_id) = (owner.site_id, owner.subject_id);
        if !scope.covers(site_id) {
            return Err(AppError::NotFound);
        }
        // a form record's items are known once the record (and so its form) is found
        if let (Some(form), Some(f)) = (&owner.form, &b.field) {
            if def.form(form).and_then(|x| x.item(f)).is_none() {
                return Err(AppError::invalid(
                    "field",
                    format!("not an item of the form {form}"),
                ));
            }
        }
        let record_type = super::stored_type(record_type);
        let id = db::queries::insert(conn, site_id, subject_id, record_type, b.record_id, b.field.as_deref(), "manual", Some(caller.user_id), &text)?;
        audit::record(
            conn,
            &AuditEvent::new(Some(&caller.actor), "query_open", "queries", &caller.meta)
                .record(id)
                .site(Some(site_id))
                .subject(Some(subject_id))
                .new_values(json!({"record_type": record_type, "record_id": b.record_id, "field": b.field, "text": text})),
        )?;
        load(conn, &[id])?.pop().ok_or(AppError::NotFound)
    })
    .await?;
    Ok(HttpResponse::build(StatusCode::CREATED).json(query))
}

/// One query with its thread.
#[utoipa::path(get, path = "/api/v1/queries/{id}", tag = "monitoring", params(("id" = i64, Path)),
    responses((status = 200, body = Query), (status = 404, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn get(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<i64>,
) -> AppResult<HttpResponse> {
    let scope = authorize(&caller, Permission::ReadQueries)?;
    let id = id.into_inner();
    let query = db::run(&state.pool, move |conn| {
        let query = load(conn, &[id])?.pop().ok_or(AppError::NotFound)?;
        let site: i64 = q::table.find(id).select(q::site_id).first(conn)?;
        if !scope.covers(site) {
            return Err(AppError::NotFound);
        }
        Ok(query)
    })
    .await?;
    Ok(HttpResponse::Ok().json(query))
}

/// A step in the life cycle: who may take it, from which states, to which state.
struct Transition {
    permission: Permission,
    kind: &'static str,
    from: &'static [&'static str],
    to: &'static str,
    action: &'static str,
}

const ANSWER: Transition = Transition {
    permission: Permission::AnswerQuery,
    kind: "answer",
    from: &["open"],
    to: "answered",
    action: "query_answer",
};
const CLOSE: Transition = Transition {
    permission: Permission::ManageQuery,
    kind: "close",
    from: &["open", "answered"],
    to: "closed",
    action: "query_close",
};
const REOPEN: Transition = Transition {
    permission: Permission::ManageQuery,
    kind: "reopen",
    from: &["closed"],
    to: "open",
    action: "query_reopen",
};

async fn step(
    state: web::Data<AppState>,
    caller: Caller,
    id: i64,
    text: String,
    t: Transition,
) -> AppResult<HttpResponse> {
    let Transition {
        permission,
        kind,
        from,
        to,
        action,
    } = t;
    let scope = authorize(&caller, permission)?;
    let text = long_text("text", &text, 2000).map_err(|e| AppError::Validation(vec![e]))?;
    let query = db::transaction(&state.pool, move |conn| {
        let row: QueryRow = q::table
            .find(id)
            .select(QueryRow::as_select())
            .for_update()
            .first(conn)?;
        if !scope.covers(row.site_id) {
            return Err(AppError::NotFound);
        }
        if !from.contains(&row.status.as_str()) {
            return Err(AppError::Conflict(format!(
                "A query that is {} cannot be {}.",
                row.status,
                match kind {
                    "answer" => "answered",
                    "close" => "closed",
                    _ => "reopened",
                }
            )));
        }
        diesel::update(q::table.find(id))
            .set((q::status.eq(to), q::updated_at.eq(diesel::dsl::now)))
            .execute(conn)?;
        diesel::insert_into(m::table)
            .values((
                m::query_id.eq(id),
                m::kind.eq(kind),
                m::text.eq(&text),
                m::author_id.eq(caller.user_id),
            ))
            .execute(conn)?;
        audit::record(
            conn,
            &AuditEvent::new(Some(&caller.actor), action, "queries", &caller.meta)
                .record(id)
                .site(Some(row.site_id))
                .subject(Some(row.subject_id))
                .old(json!({"status": row.status}))
                .new_values(json!({"status": to, "text": text})),
        )?;
        load(conn, &[id])?.pop().ok_or(AppError::NotFound)
    })
    .await?;
    Ok(HttpResponse::Ok().json(query))
}

/// Answer an open query (investigator of the site).
#[utoipa::path(post, path = "/api/v1/queries/{id}/answer", tag = "monitoring", params(("id" = i64, Path)),
    request_body = QueryStep,
    responses((status = 200, body = Query), (status = 403, body = crate::error::Problem),
        (status = 404, body = crate::error::Problem), (status = 409, description = "not open", body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn answer(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<i64>,
    body: Json<QueryStep>,
) -> AppResult<HttpResponse> {
    step(state, caller, id.into_inner(), body.value.text, ANSWER).await
}

/// Close an open or answered query (monitor).
#[utoipa::path(post, path = "/api/v1/queries/{id}/close", tag = "monitoring", params(("id" = i64, Path)),
    request_body = QueryStep,
    responses((status = 200, body = Query), (status = 403, body = crate::error::Problem),
        (status = 404, body = crate::error::Problem), (status = 409, description = "already closed", body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn close(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<i64>,
    body: Json<QueryStep>,
) -> AppResult<HttpResponse> {
    step(state, caller, id.into_inner(), body.value.text, CLOSE).await
}

/// Reopen a closed query (monitor).
#[utoipa::path(post, path = "/api/v1/queries/{id}/reopen", tag = "monitoring", params(("id" = i64, Path)),
    request_body = QueryStep,
    responses((status = 200, body = Query), (status = 403, body = crate::error::Problem),
        (status = 404, body = crate::error::Problem), (status = 409, description = "not closed", body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn reopen(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<i64>,
    body: Json<QueryStep>,
) -> AppResult<HttpResponse> {
    step(state, caller, id.into_inner(), body.value.text, REOPEN).await
}
