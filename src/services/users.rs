//! Users and sites: creation and changes, each with its audit row.

use diesel::prelude::*;
use serde_json::json;

use crate::audit::{self, Actor, AuditEvent, RequestMeta};
use crate::auth::Role;
use crate::domain::FieldError;
use crate::error::{AppError, AppResult};
use crate::schema::{sites, user_sites, users};

pub struct NewUser<'a> {
    pub email: &'a str,
    pub name: &'a str,
    pub role: Role,
    pub password_hash: &'a str,
    pub site_ids: &'a [i64],
}

/// Looks up site ids for codes; an unknown code is a 422 on `field`.
pub fn site_ids_for_codes(
    conn: &mut PgConnection,
    field: &str,
    codes: &[String],
) -> AppResult<Vec<i64>> {
    let found: Vec<(i64, String)> = sites::table
        .filter(sites::code.eq_any(codes))
        .select((sites::id, sites::code))
        .load(conn)?;
    let mut errors = Vec::new();
    for c in codes {
        if !found.iter().any(|(_, code)| code == c) {
            errors.push(FieldError::new(field, format!("unknown site code `{c}`")));
        }
    }
    if !errors.is_empty() {
        return Err(AppError::Validation(errors));
    }
    let mut ids: Vec<i64> = found.into_iter().map(|(id, _)| id).collect();
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}

pub fn site_codes(conn: &mut PgConnection, user_id: i64) -> QueryResult<Vec<String>> {
    user_sites::table
        .inner_join(sites::table)
        .filter(user_sites::user_id.eq(user_id))
        .select(sites::code)
        .order(sites::code)
        .load(conn)
}

/// Creates a user with their site assignments. `actor` is None only on the command line.
pub fn create_user(
    conn: &mut PgConnection,
    new: &NewUser<'_>,
    actor: Option<&Actor>,
    meta: &RequestMeta,
) -> AppResult<i64> {
    let taken: i64 = users::table
        .filter(
            diesel::dsl::sql::<diesel::sql_types::Bool>("lower(email) = lower(")
                .bind::<diesel::sql_types::Text, _>(new.email)
                .sql(")"),
        )
        .count()
        .get_result(conn)?;
    if taken > 0 {
        return Err(AppError::Conflict(
            "A user with this e-mail already exists.".into(),
        ));
    }
    let id: i64 = diesel::insert_into(users::table)
        .values((
            users::email.eq(new.email),
            users::name.eq(new.name),
            users::role.eq(new.role.as_str()),
            users::password_hash.eq(new.password_hash),
        ))
        .returning(users::id)
        .get_result(conn)?;
    let rows: Vec<_> = new
        .site_ids
        .iter()
        .map(|s| (user_sites::user_id.eq(id), user_sites::site_id.eq(*s)))
        .collect();
    diesel::insert_into(user_sites::table)
        .values(&rows)
        .execute(conn)?;
    let codes = site_codes(conn, id)?;
    let event = AuditEvent::new(actor, "create", "users", meta)
        .record(id)
        .new_values(json!({
            "email": new.email, "name": new.name, "role": new.role.as_str(),
            "active": true, "site_codes": codes,
        }))
        .reason(actor.is_none().then_some("created from the command line"));
    audit::record(conn, &event)?;
    Ok(id)
}

/// Ensures a site exists (used by seed-demo); returns its id.
pub fn ensure_site(
    conn: &mut PgConnection,
    code: &str,
    name: &str,
    country: &str,
    time_zone: &str,
    meta: &RequestMeta,
) -> AppResult<i64> {
    if let Some(id) = sites::table
        .filter(sites::code.eq(code))
        .select(sites::id)
        .first::<i64>(conn)
        .optional()?
    {
        return Ok(id);
    }
    let id: i64 = diesel::insert_into(sites::table)
        .values((
            sites::code.eq(code),
            sites::name.eq(name),
            sites::country.eq(country),
            sites::time_zone.eq(time_zone),
        ))
        .returning(sites::id)
        .get_result(conn)?;
    let event = AuditEvent::new(None, "create", "sites", meta)
        .record(id)
        .site(Some(id))
        .new_values(json!({"code": code, "name": name, "country": country, "time_zone": time_zone, "active": true}))
        .reason(Some("created from the command line"));
    audit::record(conn, &event)?;
    Ok(id)
}
