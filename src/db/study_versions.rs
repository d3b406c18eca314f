//! Published versions of the study definition, and what collected data holds (what a new
//! version may not take away).

use diesel::prelude::*;
use diesel::sql_types::{Array, Text};
use serde_json::Value;

use crate::domain::study::compat::{Shape, Usage};
use crate::schema::study_versions as sv;

/// Advisory lock key for publication ("studyver" in ASCII); the second key is the study's.
const PUBLISH_LOCK: i32 = 0x7374_7576;

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = sv)]
pub struct Published {
    pub id: i64,
    pub version: i32,
    pub sha256: String,
    pub definition: Value,
}

/// Serialises publication of one study until the transaction ends, so that two instances
/// starting together compare against, and publish, one version.
pub fn lock(conn: &mut PgConnection, study_id: &str) -> QueryResult<()> {
    diesel::sql_query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
        .bind::<diesel::sql_types::Integer, _>(PUBLISH_LOCK)
        .bind::<Text, _>(study_id)
        .execute(conn)
        .map(|_| ())
}

pub fn newest(conn: &mut PgConnection, study_id: &str) -> QueryResult<Option<Published>> {
    sv::table
        .filter(sv::study_id.eq(study_id))
        .order(sv::version.desc())
        .select(Published::as_select())
        .first(conn)
        .optional()
}

pub struct NewVersion<'a> {
    pub study_id: &'a str,
    pub version: i32,
    pub declared_version: &'a str,
    pub sha256: &'a str,
    pub definition: &'a Value,
    pub published_by: &'a str,
}

pub fn insert(conn: &mut PgConnection, v: &NewVersion<'_>) -> QueryResult<i64> {
    diesel::insert_into(sv::table)
        .values((
            sv::study_id.eq(v.study_id),
            sv::version.eq(v.version),
            sv::declared_version.eq(v.declared_version),
            sv::sha256.eq(v.sha256),
            sv::definition.eq(v.definition),
            sv::published_by.eq(v.published_by),
        ))
        .returning(sv::id)
        .get_result(conn)
}

#[derive(QueryableByName)]
struct FormItem {
    #[diesel(sql_type = Text)]
    form_id: String,
    #[diesel(sql_type = Text)]
    item: String,
}

#[derive(QueryableByName)]
struct FormItemCode {
    #[diesel(sql_type = Text)]
    form_id: String,
    #[diesel(sql_type = Text)]
    item: String,
    #[diesel(sql_type = Text)]
    code: String,
}

/// Which forms, items and codes of `old` hold data in the records of `study_id` (entered in
/// error included: their values stay stored and must stay readable).
pub fn usage(conn: &mut PgConnection, study_id: &str, old: &Shape) -> QueryResult<Usage> {
    let mut u = Usage::default();
    let items: Vec<FormItem> = diesel::sql_query(
        "SELECT DISTINCT r.form_id, e.key AS item
         FROM form_records r
         JOIN study_versions v ON v.id = r.study_version_id AND v.study_id = $1
         CROSS JOIN LATERAL jsonb_each(r.\"values\") e
         WHERE e.value <> 'null'::jsonb",
    )
    .bind::<Text, _>(study_id)
    .load(conn)?;
    for r in items {
        u.forms.insert(r.form_id.clone());
        u.items.insert((r.form_id, r.item));
    }
    let forms: Vec<FormItem> = diesel::sql_query(
        "SELECT DISTINCT r.form_id, '' AS item
         FROM form_records r
         JOIN study_versions v ON v.id = r.study_version_id AND v.study_id = $1",
    )
    .bind::<Text, _>(study_id)
    .load(conn)?;
    u.forms.extend(forms.into_iter().map(|r| r.form_id));
    let (cf, ci): (Vec<String>, Vec<String>) = old.coded_items().into_iter().unzip();
    let codes: Vec<FormItemCode> = diesel::sql_query(
        "SELECT DISTINCT r.form_id, e.key AS item, c.code
         FROM unnest($2::text[], $3::text[]) AS ci(form_id, item)
         JOIN form_records r ON r.form_id = ci.form_id
         JOIN study_versions v ON v.id = r.study_version_id AND v.study_id = $1
         CROSS JOIN LATERAL jsonb_each(r.\"values\") e
         CROSS JOIN LATERAL (
             SELECT e.value #>> '{}' AS code WHERE jsonb_typeof(e.value) = 'string'
             UNION ALL
             SELECT jsonb_array_elements_text(e.value) WHERE jsonb_typeof(e.value) = 'array'
         ) c
         WHERE e.key = ci.item",
    )
    .bind::<Text, _>(study_id)
    .bind::<Array<Text>, _>(&cf)
    .bind::<Array<Text>, _>(&ci)
    .load(conn)?;
    u.codes
        .extend(codes.into_iter().map(|r| (r.form_id, r.item, r.code)));
    Ok(u)
}

/// The id of the version records are entered under: the newest publication of the running
/// definition (its start published it when it differed from the newest).
pub fn running_id(conn: &mut PgConnection, study_id: &str, sha256: &str) -> QueryResult<i64> {
    running(conn, study_id, sha256).map(|(id, _)| id)
}

/// The running definition's published version: its id and its number.
pub fn running(conn: &mut PgConnection, study_id: &str, sha256: &str) -> QueryResult<(i64, i32)> {
    sv::table
        .filter(sv::study_id.eq(study_id))
        .filter(sv::sha256.eq(sha256))
        .order(sv::version.desc())
        .select((sv::id, sv::version))
        .first(conn)
}
