//! The caller's row: the user, the live session and the site assignments, in one round trip
//! (migrations/*_lookup_functions). The rules applied to it are the caller extractor's
//! (src/auth/caller.rs).

use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::{Array, BigInt, Bool, Integer, Text};
use uuid::Uuid;

/// `SELECT * FROM casebook_caller($1, $2)` as a statement diesel prepares once per
/// connection: `diesel::sql_query` is never cached, so PostgreSQL parsed and planned it on
/// every request (the function's own plan is cached either way).
struct CallerQuery {
    user_id: i64,
    session: Uuid,
}

impl QueryId for CallerQuery {
    type QueryId = CallerQuery;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl Query for CallerQuery {
    type SqlType = diesel::sql_types::Untyped;
}

impl QueryFragment<Pg> for CallerQuery {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql("SELECT * FROM casebook_caller(");
        out.push_bind_param::<BigInt, _>(&self.user_id)?;
        out.push_sql(", ");
        out.push_bind_param::<diesel::sql_types::Uuid, _>(&self.session)?;
        out.push_sql(")");
        Ok(())
    }
}

impl RunQueryDsl<PgConnection> for CallerQuery {}

/// The caller's row as `casebook_caller` returns it.
#[derive(Debug, Clone, QueryableByName)]
pub struct CallerRecord {
    #[diesel(sql_type = Text)]
    pub email: String,
    #[diesel(sql_type = Text)]
    pub name: String,
    #[diesel(sql_type = Text)]
    pub role: String,
    #[diesel(sql_type = Bool)]
    pub active: bool,
    #[diesel(sql_type = Integer)]
    pub token_version: i32,
    #[diesel(sql_type = Array<BigInt>)]
    pub site_ids: Vec<i64>,
    #[diesel(sql_type = Array<Text>)]
    pub site_codes: Vec<String>,
}

/// The record of `user_id` when `session` is one of its live sessions.
pub fn find(
    conn: &mut PgConnection,
    user_id: i64,
    session: Uuid,
) -> QueryResult<Option<CallerRecord>> {
    CallerQuery { user_id, session }.get_result(conn).optional()
}
