//! What a subject's schedule reads. Every query names the subject, which the caller found
//! within its scope (`find_subject`), so nothing of a subject outside it is reached.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use serde_json::Value;

use crate::domain::study::schedule::{anchor_form, AnchorFacts};
use crate::domain::study::Definition;
use crate::schema::{form_records as r, subjects as s};

/// (visit, form) of the subject's live records entered for a visit.
pub fn visit_records(
    conn: &mut PgConnection,
    subject_id: i64,
) -> QueryResult<Vec<(String, String)>> {
    let rows: Vec<(Option<String>, String)> = r::table
        .filter(r::subject_id.eq(subject_id))
        .filter(r::deleted_at.is_null())
        .filter(r::visit_id.is_not_null())
        .select((r::visit_id, r::form_id))
        .load(conn)?;
    Ok(rows
        .into_iter()
        .filter_map(|(v, f)| v.map(|v| (v, f)))
        .collect())
}

/// (form, values) of the subject's live records entered without a visit.
pub fn unplaced_records(
    conn: &mut PgConnection,
    subject_id: i64,
) -> QueryResult<Vec<(String, Value)>> {
    r::table
        .filter(r::subject_id.eq(subject_id))
        .filter(r::deleted_at.is_null())
        .filter(r::visit_id.is_null())
        .select((r::form_id, r::values))
        .load(conn)
}

/// The values of `item` in the subject's live records of `form` (for an anchor item), the
/// record `except` left out (one being written, whose new value the caller knows).
pub fn item_values(
    conn: &mut PgConnection,
    subject_id: i64,
    form: &str,
    item: &str,
    except: Option<i64>,
) -> QueryResult<Vec<String>> {
    let rows: Vec<Value> = r::table
        .filter(r::subject_id.eq(subject_id))
        .filter(r::form_id.eq(form))
        .filter(r::deleted_at.is_null())
        .filter(r::id.ne(except.unwrap_or(-1)))
        .select(r::values)
        .load(conn)?;
    Ok(rows
        .iter()
        .filter_map(|v| v.get(item).and_then(Value::as_str).map(str::to_owned))
        .collect())
}

/// When the subject was enrolled (its record created).
pub fn enrolled_at(conn: &mut PgConnection, subject_id: i64) -> QueryResult<DateTime<Utc>> {
    s::table
        .filter(s::id.eq(subject_id))
        .select(s::created_at)
        .first(conn)
}

/// What the subject's day 1 is made of (`schedule::day_one`), the record `except` left out.
pub fn anchor_facts(
    conn: &mut PgConnection,
    def: &Definition,
    subject_id: i64,
    except: Option<i64>,
) -> QueryResult<AnchorFacts> {
    Ok(AnchorFacts {
        enrolled_at: Some(enrolled_at(conn, subject_id)?),
        item_values: match anchor_form(def) {
            Some((form, item)) => item_values(conn, subject_id, form, item, except)?,
            None => Vec::new(),
        },
    })
}

/// (id, form, values) of the subject's live records of `forms`, the record `except` left out.
pub fn live_records(
    conn: &mut PgConnection,
    subject_id: i64,
    forms: &[&str],
    except: Option<i64>,
) -> QueryResult<Vec<(i64, String, Value)>> {
    r::table
        .filter(r::subject_id.eq(subject_id))
        .filter(r::form_id.eq_any(forms))
        .filter(r::deleted_at.is_null())
        .filter(r::id.ne(except.unwrap_or(-1)))
        .order(r::id)
        .select((r::id, r::form_id, r::values))
        .load(conn)
}
