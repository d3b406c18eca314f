//! What a write to clinical data checks first, in one round trip: the subject's row held
//! FOR KEY SHARE (against a signature, see services::guard), whether the site is active, and
//! the first lock in force on the study, the site or the subject.

use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::{BigInt, Bool, Nullable, Text};

/// One statement that diesel prepares once per connection. The subject's row is locked by
/// the CTE, which the outer query reads so that it runs; a subject id of `-1` (a write that
/// is not a subject's) locks nothing and matches no subject lock.
struct WriteGuardQuery {
    site_id: i64,
    subject_id: i64,
}

impl QueryId for WriteGuardQuery {
    type QueryId = WriteGuardQuery;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl Query for WriteGuardQuery {
    type SqlType = diesel::sql_types::Untyped;
}

impl QueryFragment<Pg> for WriteGuardQuery {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql("WITH held AS MATERIALIZED (SELECT id FROM subjects WHERE id = ");
        out.push_bind_param::<BigInt, _>(&self.subject_id)?;
        out.push_sql(
            " FOR KEY SHARE) \
             SELECT st.active, (SELECT count(*) FROM held) AS held, \
             lk.id AS lock_id, lk.scope AS lock_scope, lk.reason AS lock_reason \
             FROM sites st LEFT JOIN LATERAL (SELECT l.id, l.scope, l.reason FROM locks l \
             WHERE l.unlocked_at IS NULL AND (l.scope = 'study' \
             OR (l.scope = 'site' AND l.site_id = st.id) \
             OR (l.scope = 'subject' AND l.subject_id = ",
        );
        out.push_bind_param::<BigInt, _>(&self.subject_id)?;
        out.push_sql(")) ORDER BY l.id LIMIT 1) lk ON true WHERE st.id = ");
        out.push_bind_param::<BigInt, _>(&self.site_id)?;
        Ok(())
    }
}

impl RunQueryDsl<PgConnection> for WriteGuardQuery {}

#[derive(Debug, QueryableByName)]
pub struct WriteGuard {
    #[diesel(sql_type = Bool)]
    pub active: bool,
    #[diesel(sql_type = BigInt)]
    held: i64,
    #[diesel(sql_type = Nullable<BigInt>)]
    pub lock_id: Option<i64>,
    #[diesel(sql_type = Nullable<Text>)]
    pub lock_scope: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub lock_reason: Option<String>,
}

/// Holds `subject_id`'s row FOR KEY SHARE until the transaction ends and reads the site's
/// state and the first lock in force.
pub fn hold_for_write(
    conn: &mut PgConnection,
    site_id: i64,
    subject_id: Option<i64>,
) -> QueryResult<WriteGuard> {
    let g: WriteGuard = WriteGuardQuery {
        site_id,
        subject_id: subject_id.unwrap_or(-1),
    }
    .get_result(conn)?;
    debug_assert!(g.held <= 1);
    Ok(g)
}
