//! SQL a signature's check needs: which of a subject's records carried another id when it
//! was signed.

use chrono::{DateTime, Utc};
use diesel::prelude::*;

use super::form_records::ENTITY;
use crate::schema::{audit_log as a, form_records as r, legacy_record_ids as m};

/// The records of subject `subject_id` that moved from a legacy table into `form_records`
/// after `signed_at`, as (old table, new id, old id): a casebook signed before the move
/// serialised them under their old ids. The move's time is its `migrate` audit row's.
pub fn moved_after(
    conn: &mut PgConnection,
    subject_id: i64,
    signed_at: DateTime<Utc>,
) -> QueryResult<Vec<(String, i64, i64)>> {
    m::table
        .inner_join(r::table)
        .inner_join(
            a::table.on(a::entity_table
                .eq(ENTITY)
                .and(a::record_id.eq(m::new_id.nullable()))
                .and(a::action.eq("migrate"))),
        )
        .filter(r::subject_id.eq(subject_id))
        .filter(a::occurred_at.gt(signed_at))
        .select((m::entity, m::new_id, m::old_id))
        .load(conn)
}
