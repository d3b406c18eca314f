//! SQL of the audit trail's listing. The log is append-only: a record of a legacy form that
//! moved into `form_records` keeps its earlier rows under its old table and id, and its
//! history is read through `legacy_record_ids`.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use serde::Serialize;
use utoipa::ToSchema;

use super::form_records::ENTITY;
use crate::domain::study::moved_form;
use crate::schema::{audit_log as a, form_records as r, legacy_record_ids as m, sites, subjects};

#[derive(Debug, Serialize, Queryable, Selectable, ToSchema)]
#[diesel(table_name = a)]
pub struct AuditEntry {
    pub id: i64,
    pub occurred_at: DateTime<Utc>,
    pub actor_id: Option<i64>,
    pub actor_role: Option<String>,
    pub action: String,
    pub entity_table: String,
    pub record_id: Option<i64>,
    pub site_id: Option<i64>,
    pub subject_id: Option<i64>,
    pub old_values: Option<serde_json::Value>,
    pub new_values: Option<serde_json::Value>,
    pub reason: Option<String>,
    pub request_id: Option<String>,
    pub client_addr: Option<String>,
}

/// What `GET /audit` selects; every filter narrows.
#[derive(Debug, Default)]
pub struct AuditQuery {
    /// subject code
    pub subject: Option<String>,
    /// site code
    pub site: Option<String>,
    /// the stored `entity_table`, as written
    pub table: Option<String>,
    /// alone or with `table`: the stored `record_id`; with `form`: a form record's id
    pub record_id: Option<i64>,
    /// the rows of the records of this form, with those written before its records moved
    /// into `form_records` (a form of the running definition: the handler checks it)
    pub form: Option<String>,
    pub user_id: Option<i64>,
    pub action: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    /// keyset: rows with a greater id
    pub after: i64,
    pub limit: i64,
}

/// The rows `f` selects, oldest first; `site_ids`: none for every site.
pub fn list(
    conn: &mut PgConnection,
    f: &AuditQuery,
    site_ids: Option<&[i64]>,
) -> QueryResult<Vec<AuditEntry>> {
    let mut q = a::table.filter(a::id.gt(f.after)).into_boxed();
    if let Some(ids) = site_ids {
        q = q.filter(a::site_id.eq_any(ids.to_vec()));
    }
    if let Some(code) = &f.subject {
        let id: Option<i64> = subjects::table
            .filter(subjects::subject_code.eq(code))
            .select(subjects::id)
            .first(conn)
            .optional()?;
        q = q.filter(a::subject_id.eq(id.unwrap_or(-1)));
    }
    if let Some(code) = &f.site {
        let id: Option<i64> = sites::table
            .filter(sites::code.eq(code))
            .select(sites::id)
            .first(conn)
            .optional()?;
        q = q.filter(a::site_id.eq(id.unwrap_or(-1)));
    }
    if let Some(t) = &f.table {
        q = q.filter(a::entity_table.eq(t));
    }
    match (&f.form, f.record_id) {
        (Some(form), record) => {
            let mut records = r::table.filter(r::form_id.eq(form)).into_boxed();
            if let Some(id) = record {
                records = records.filter(r::id.eq(id));
            }
            let own = a::entity_table
                .eq(ENTITY)
                .and(a::record_id.eq_any(records.select(r::id.nullable())));
            q = match moved_form(form) {
                // its records' rows from before the move, under their old table and ids
                Some(moved) => {
                    let mut mapped = m::table
                        .inner_join(r::table)
                        .filter(m::entity.eq(moved.entity))
                        .filter(r::form_id.eq(form))
                        .into_boxed();
                    if let Some(id) = record {
                        mapped = mapped.filter(m::new_id.eq(id));
                    }
                    let before = a::entity_table
                        .eq(moved.entity)
                        .and(a::record_id.eq_any(mapped.select(m::old_id.nullable())));
                    q.filter(own.or(before))
                }
                None => q.filter(own),
            };
        }
        (None, Some(id)) => q = q.filter(a::record_id.eq(id)),
        (None, None) => {}
    }
    if let Some(u) = f.user_id {
        q = q.filter(a::actor_id.eq(u));
    }
    if let Some(action) = &f.action {
        q = q.filter(a::action.eq(action));
    }
    if let Some(from) = f.from {
        q = q.filter(a::occurred_at.ge(from));
    }
    if let Some(to) = f.to {
        q = q.filter(a::occurred_at.lt(to));
    }
    q.order(a::id)
        .limit(f.limit)
        .select(AuditEntry::as_select())
        .load(conn)
}
