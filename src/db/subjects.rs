//! A subject as the write paths need it, found within the caller's sites in SQL (anything
//! else is 404), and the dates its consents allow.

use bigdecimal::{BigDecimal, ToPrimitive};
use chrono::NaiveDate;
use chrono_tz::Tz;
use diesel::prelude::*;

use crate::auth::Scope;
use crate::domain::consent::ConsentWindow;
use crate::domain::time::{parse_zone, DateFloor};
use crate::error::{AppError, AppResult};
use crate::schema::{consents as c, sites, subjects as s};

/// The subject a record belongs to, as the write paths need it.
#[derive(Debug, Clone)]
pub struct SubjectRef {
    pub id: i64,
    pub site_id: i64,
    pub code: String,
    pub weight_kg: f64,
    pub tz: Tz,
    /// no clinical date of the subject's before this
    pub floor: DateFloor,
}

/// Finds a subject within `scope`; anything else is 404.
pub fn find_subject(conn: &mut PgConnection, scope: &Scope, code: &str) -> AppResult<SubjectRef> {
    let mut q = s::table
        .inner_join(sites::table)
        .filter(s::subject_code.eq(code))
        .filter(s::deleted_at.is_null())
        .into_boxed();
    if let Some(ids) = scope.site_ids() {
        q = q.filter(s::site_id.eq_any(ids.to_vec()));
    }
    let (id, site_id, code, weight, zone, birth): (i64, i64, String, BigDecimal, String, String) =
        q.select((
            s::id,
            s::site_id,
            s::subject_code,
            s::weight_kg,
            sites::time_zone,
            s::birth_year_month,
        ))
        .first(conn)
        .optional()?
        .ok_or(AppError::NotFound)?;
    Ok(SubjectRef {
        id,
        site_id,
        code,
        weight_kg: weight.to_f64().unwrap_or(f64::NAN),
        tz: parse_zone(&zone).unwrap_or(Tz::UTC),
        floor: DateFloor::of_birth(&birth),
    })
}

/// The subject's consent window from its live consents.
pub fn consent_window(conn: &mut PgConnection, subject_id: i64) -> QueryResult<ConsentWindow> {
    let rows: Vec<(NaiveDate, Option<NaiveDate>)> = c::table
        .filter(c::subject_id.eq(subject_id))
        .filter(c::deleted_at.is_null())
        .select((c::signed_on, c::withdrawn_on))
        .load(conn)?;
    Ok(ConsentWindow {
        first_signed: rows.iter().map(|r| r.0).min(),
        withdrawn_on: rows.iter().filter_map(|r| r.1).min(),
    })
}

/// The code of a site (`FRA`), as alerts name it.
pub fn site_code(conn: &mut PgConnection, site_id: i64) -> QueryResult<String> {
    sites::table.find(site_id).select(sites::code).first(conn)
}
