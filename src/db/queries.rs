//! SQL of data queries that the write paths share with the monitoring routes.

use diesel::prelude::*;

use crate::schema::{queries as q, query_messages as m};

#[allow(clippy::too_many_arguments)]
pub fn insert(
    conn: &mut PgConnection,
    site_id: i64,
    subject_id: i64,
    record_type: &str,
    record_id: i64,
    field: Option<&str>,
    origin: &str,
    author: Option<i64>,
    text: &str,
) -> QueryResult<i64> {
    let id: i64 = diesel::insert_into(q::table)
        .values((
            q::site_id.eq(site_id),
            q::subject_id.eq(subject_id),
            q::record_type.eq(record_type),
            q::record_id.eq(record_id),
            q::field.eq(field),
            q::origin.eq(origin),
            q::created_by.eq(author),
        ))
        .returning(q::id)
        .get_result(conn)?;
    diesel::insert_into(m::table)
        .values((
            m::query_id.eq(id),
            m::kind.eq("open"),
            m::text.eq(text),
            m::author_id.eq(author),
        ))
        .execute(conn)?;
    Ok(id)
}

/// Whether a query of `origin` on this record's `field` is open or answered.
pub fn is_pending(
    conn: &mut PgConnection,
    record_type: &str,
    record_id: i64,
    origin: &str,
    field: &str,
) -> QueryResult<bool> {
    let n: i64 = q::table
        .filter(q::record_type.eq(record_type))
        .filter(q::record_id.eq(record_id))
        .filter(q::origin.eq(origin))
        .filter(q::field.eq(field))
        .filter(q::status.ne("closed"))
        .count()
        .get_result(conn)?;
    Ok(n > 0)
}
