//! SQL of the safety views over the records of the study's forms bound to the `sae_alert`
//! rule, and of the adverse event listing. Scoped to the caller's sites here: a record
//! outside them is never read.

use chrono::{DateTime, Utc};
use diesel::dsl::sql;
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Bool, Jsonb, Nullable, Text, Timestamptz};

use super::form_records::{Row, COLUMNS};
use crate::domain::sae::Binding;
use crate::schema::{form_records as r, sites, study_versions as sv, subjects as s};

/// What `GET /adverse-events` selects, by the values of the adverse event form.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub serious: Option<bool>,
    pub grade: Option<i16>,
    /// site code
    pub site: Option<String>,
    pub relationship: Option<String>,
    pub include_deleted: bool,
    /// keyset: records with a greater id
    pub after: i64,
    pub limit: i64,
}

/// The records of `form` in study `study_id` that `f` selects, with their subject codes,
/// by id; `site_ids`: none for every site.
pub fn events(
    conn: &mut PgConnection,
    study_id: &str,
    form: &str,
    f: &EventFilter,
    site_ids: Option<&[i64]>,
) -> QueryResult<Vec<(Row, String)>> {
    let mut q = r::table
        .inner_join(sv::table)
        .inner_join(s::table)
        .inner_join(sites::table.on(sites::id.eq(r::site_id)))
        .filter(sv::study_id.eq(study_id))
        .filter(r::form_id.eq(form))
        .filter(r::id.gt(f.after))
        .into_boxed();
    if let Some(ids) = site_ids {
        q = q.filter(r::site_id.eq_any(ids.to_vec()));
    }
    if !f.include_deleted {
        q = q.filter(r::deleted_at.is_null());
    }
    // values compared as JSON: a boolean and an integer are stored as JSON's own
    if let Some(v) = f.serious {
        q = q.filter(
            sql::<Bool>("form_records.\"values\" -> 'serious' = ")
                .bind::<Jsonb, _>(serde_json::Value::Bool(v)),
        );
    }
    if let Some(g) = f.grade {
        q = q.filter(
            sql::<Bool>("form_records.\"values\" -> 'grade' = ")
                .bind::<Jsonb, _>(serde_json::Value::from(g)),
        );
    }
    if let Some(code) = &f.site {
        q = q.filter(sites::code.eq(code.clone()));
    }
    if let Some(rel) = &f.relationship {
        q = q.filter(
            sql::<Bool>("form_records.\"values\" ->> 'relationship' = ")
                .bind::<Text, _>(rel.clone()),
        );
    }
    let rows: Vec<((super::form_records::Stored, i32), String)> = q
        .order(r::id)
        .limit(f.limit)
        .select(((COLUMNS, sv::version), s::subject_code))
        .load(conn)?;
    Ok(rows
        .into_iter()
        .map(|(row, code)| (Row::of(row), code))
        .collect())
}

/// A live serious record of a bound form, with the alert it raised.
#[derive(Debug, QueryableByName)]
pub struct SeriousRecord {
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    #[diesel(sql_type = Text)]
    pub form_id: String,
    #[diesel(sql_type = Text)]
    pub subject_code: String,
    #[diesel(sql_type = Text)]
    pub site_code: String,
    #[diesel(sql_type = Nullable<Text>)]
    pub term: Option<String>,
    /// as the record holds it (`YYYY-MM-DD`), none when the form does not record it
    #[diesel(sql_type = Nullable<Text>)]
    pub awareness_date: Option<String>,
    #[diesel(sql_type = Timestamptz)]
    pub entered_at: DateTime<Utc>,
    #[diesel(sql_type = Text)]
    pub alert_status: String,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub delivered_at: Option<DateTime<Utc>>,
}

/// The records of `b.form` in study `study_id` that are serious now and not entered in error,
/// joined to their alerts, oldest first; `site_ids`: none for every site.
pub fn serious_records(
    conn: &mut PgConnection,
    study_id: &str,
    b: &Binding,
    site_ids: Option<&[i64]>,
) -> QueryResult<Vec<SeriousRecord>> {
    diesel::sql_query(
        "SELECT r.id, r.form_id, s.subject_code, st.code AS site_code,
                r.\"values\" ->> $3 AS term, r.\"values\" ->> $4 AS awareness_date,
                r.created_at AS entered_at, a.status AS alert_status, a.delivered_at
         FROM form_records r
         JOIN study_versions v ON v.id = r.study_version_id AND v.study_id = $1
         JOIN sae_alerts a ON a.form_record_id = r.id
         JOIN subjects s ON s.id = r.subject_id
         JOIN sites st ON st.id = r.site_id
         WHERE r.form_id = $2 AND r.deleted_at IS NULL
           AND r.\"values\" -> $5 = 'true'::jsonb
           AND ($6::bigint[] IS NULL OR r.site_id = ANY($6))
         ORDER BY r.id, a.id",
    )
    .bind::<Text, _>(study_id)
    .bind::<Text, _>(&b.form)
    .bind::<Nullable<Text>, _>(b.term.as_deref())
    .bind::<Nullable<Text>, _>(b.awareness_date.as_deref())
    .bind::<Text, _>(&b.serious)
    .bind::<Nullable<Array<BigInt>>, _>(site_ids)
    .load(conn)
}
