//! The hash chain over the audit log.
//!
//! `hash(n) = SHA-256(prev_hash(n) || canonical(n))`, where `prev_hash(1)` is 32 zero bytes
//! and `canonical(n)` is the UTF-8 JSON array, without whitespace, of
//! `[seq, id, occurred_at, actor_id, actor_role, action, entity_table, record_id, site_id,
//!   subject_id, old_values, new_values, reason, request_id, client_addr]`
//! with `occurred_at` as `YYYY-MM-DDTHH:MM:SS.ffffffZ` (UTC, microseconds), text values as
//! JSON strings, absent values as `null`, and `old_values` / `new_values` inserted verbatim
//! as PostgreSQL renders the jsonb (`jsonb::text`): that rendering is canonical (keys
//! ordered by PostgreSQL, numbers kept exactly as stored), so no JSON library's number
//! formatting can change a hash.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Bool, Nullable, Text};
use sha2::{Digest, Sha256};

use crate::schema::{audit_chain, audit_log, audit_unsealed};

/// Advisory lock key held by whichever instance is sealing.
pub const SEALER_LOCK: i64 = 0x6175_6469_745f_7365;

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = audit_log)]
pub struct AuditRow {
    pub id: i64,
    pub occurred_at: DateTime<Utc>,
    pub actor_id: Option<i64>,
    pub actor_role: Option<String>,
    pub action: String,
    pub entity_table: String,
    pub record_id: Option<i64>,
    pub site_id: Option<i64>,
    pub subject_id: Option<i64>,
    #[diesel(select_expression = diesel::dsl::sql::<Nullable<Text>>("audit_log.old_values::text"))]
    #[diesel(select_expression_type = diesel::expression::SqlLiteral<Nullable<Text>>)]
    pub old_values: Option<String>,
    #[diesel(select_expression = diesel::dsl::sql::<Nullable<Text>>("audit_log.new_values::text"))]
    #[diesel(select_expression_type = diesel::expression::SqlLiteral<Nullable<Text>>)]
    pub new_values: Option<String>,
    pub reason: Option<String>,
    pub request_id: Option<String>,
    pub client_addr: Option<String>,
}

/// The bytes hashed for one row; see the module documentation.
pub fn canonical_bytes(seq: i64, row: &AuditRow, out: &mut Vec<u8>) {
    write_canonical(
        &Fields {
            seq,
            id: row.id,
            occurred_at: row.occurred_at,
            actor_id: row.actor_id,
            actor_role: row.actor_role.as_deref(),
            action: &row.action,
            entity_table: &row.entity_table,
            record_id: row.record_id,
            site_id: row.site_id,
            subject_id: row.subject_id,
            old_values: row.old_values.as_deref(),
            new_values: row.new_values.as_deref(),
            reason: row.reason.as_deref(),
            request_id: row.request_id.as_deref(),
            client_addr: row.client_addr.as_deref(),
        },
        out,
    );
}

/// One row's hashed fields, borrowed: the sealer fills it from an [`AuditRow`], the
/// verifier straight from the bytes PostgreSQL sent.
pub(crate) struct Fields<'a> {
    pub seq: i64,
    pub id: i64,
    pub occurred_at: DateTime<Utc>,
    pub actor_id: Option<i64>,
    pub actor_role: Option<&'a str>,
    pub action: &'a str,
    pub entity_table: &'a str,
    pub record_id: Option<i64>,
    pub site_id: Option<i64>,
    pub subject_id: Option<i64>,
    pub old_values: Option<&'a str>,
    pub new_values: Option<&'a str>,
    pub reason: Option<&'a str>,
    pub request_id: Option<&'a str>,
    pub client_addr: Option<&'a str>,
}

/// Writes `canonical(n)` into `out` (cleared first); see the module documentation.
pub(crate) fn write_canonical(f: &Fields<'_>, out: &mut Vec<u8>) {
    out.clear();
    out.push(b'[');
    push_int(out, f.seq);
    out.push(b',');
    push_int(out, f.id);
    out.push(b',');
    push_timestamp(out, &f.occurred_at);
    out.push(b',');
    push_num(out, f.actor_id);
    out.push(b',');
    push_str(out, f.actor_role);
    out.push(b',');
    push_str(out, Some(f.action));
    out.push(b',');
    push_str(out, Some(f.entity_table));
    out.push(b',');
    push_num(out, f.record_id);
    out.push(b',');
    push_num(out, f.site_id);
    out.push(b',');
    push_num(out, f.subject_id);
    out.push(b',');
    push_raw_json(out, f.old_values);
    out.push(b',');
    push_raw_json(out, f.new_values);
    out.push(b',');
    push_str(out, f.reason);
    out.push(b',');
    push_str(out, f.request_id);
    out.push(b',');
    push_str(out, f.client_addr);
    out.push(b']');
}

/// Decimal, `-` for negatives, no leading zeros (as `i64`'s `Display`).
fn push_int(out: &mut Vec<u8>, n: i64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut v = n.unsigned_abs();
    loop {
        at -= 1;
        digits[at] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    if n < 0 {
        out.push(b'-');
    }
    out.extend_from_slice(&digits[at..]);
}

fn push_num(out: &mut Vec<u8>, n: Option<i64>) {
    match n {
        Some(n) => push_int(out, n),
        None => out.extend_from_slice(b"null"),
    }
}

/// Fixed-width digits, most significant first.
fn push_digits(out: &mut Vec<u8>, v: u32, width: usize) {
    let mut digits = [b'0'; 10];
    let mut v = v;
    for d in digits[..width].iter_mut().rev() {
        *d = b'0' + (v % 10) as u8;
        v /= 10;
    }
    out.extend_from_slice(&digits[..width]);
}

/// `"YYYY-MM-DDTHH:MM:SS.ffffffZ"`: what chrono's `%Y-%m-%dT%H:%M:%S%.6fZ` prints, written
/// directly for the years 0-9999 (chrono itself does the rest: a sign and more digits).
fn push_timestamp(out: &mut Vec<u8>, t: &DateTime<Utc>) {
    use chrono::{Datelike, Timelike};
    let (year, nanos) = (t.year(), t.nanosecond());
    if !(0..=9999).contains(&year) || nanos >= 1_000_000_000 {
        push_str(out, Some(&t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()));
        return;
    }
    out.push(b'"');
    push_digits(out, year.unsigned_abs(), 4);
    out.push(b'-');
    push_digits(out, t.month(), 2);
    out.push(b'-');
    push_digits(out, t.day(), 2);
    out.push(b'T');
    push_digits(out, t.hour(), 2);
    out.push(b':');
    push_digits(out, t.minute(), 2);
    out.push(b':');
    push_digits(out, t.second(), 2);
    out.push(b'.');
    push_digits(out, nanos / 1000, 6);
    out.extend_from_slice(b"Z\"");
}

/// A JSON string escaped exactly as serde_json escapes it: `"` and `\\` with a backslash,
/// `\b \t \n \f \r` by name, other characters below U+0020 as `\u00xx` (lowercase hex),
/// everything else (U+007F and non-ASCII included) as is.
fn push_str(out: &mut Vec<u8>, s: Option<&str>) {
    let Some(s) = s else {
        out.extend_from_slice(b"null");
        return;
    };
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    out.push(b'"');
    let mut run = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if b >= 0x20 && b != b'"' && b != b'\\' {
            continue;
        }
        out.extend_from_slice(&bytes[run..i]);
        run = i + 1;
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x09 => out.extend_from_slice(b"\\t"),
            0x0a => out.extend_from_slice(b"\\n"),
            0x0c => out.extend_from_slice(b"\\f"),
            0x0d => out.extend_from_slice(b"\\r"),
            _ => out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[(b >> 4) as usize],
                HEX[(b & 0xf) as usize],
            ]),
        }
    }
    out.extend_from_slice(&bytes[run..]);
    out.push(b'"');
}

/// jsonb as PostgreSQL printed it; SQL NULL as `null`.
fn push_raw_json(out: &mut Vec<u8>, v: Option<&str>) {
    out.extend_from_slice(v.unwrap_or("null").as_bytes());
}

fn chain_hash(prev: &[u8], canonical: &[u8]) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(prev);
    h.update(canonical);
    h.finalize().to_vec()
}

#[derive(QueryableByName)]
struct Locked {
    #[diesel(sql_type = Bool)]
    locked: bool,
}

/// Chains up to `batch` committed, unsealed rows. Returns how many were sealed; 0 when
/// another instance holds the sealer lock.
pub fn seal_pending(conn: &mut PgConnection, batch: i64) -> QueryResult<usize> {
    conn.transaction(|conn| {
        let got: Locked = diesel::sql_query("SELECT pg_try_advisory_xact_lock($1) AS locked")
            .bind::<BigInt, _>(SEALER_LOCK)
            .get_result(conn)?;
        if !got.locked {
            return Ok(0);
        }
        // Read after taking the lock: under READ COMMITTED this statement sees every chain
        // row the previous sealer committed, so the chain cannot fork.
        let head: Option<(i64, Vec<u8>)> = audit_chain::table
            .select((audit_chain::seq, audit_chain::hash))
            .order(audit_chain::seq.desc())
            .first(conn)
            .optional()?;
        // Ids first: a join ordered by audit_log.id walks the primary key from the start of
        // the log on every pass (measured: 600k rows touched per batch at 1M rows).
        let pending: Vec<i64> = audit_unsealed::table
            .select(audit_unsealed::audit_id)
            .order(audit_unsealed::audit_id)
            .limit(batch)
            .load(conn)?;
        let rows: Vec<AuditRow> = audit_log::table
            .filter(audit_log::id.eq_any(&pending))
            .select(AuditRow::as_select())
            .order(audit_log::id)
            .load(conn)?;
        if rows.is_empty() {
            return Ok(0);
        }
        let (mut seq, mut prev) = head.unwrap_or((0, vec![0u8; 32]));
        let mut buf = Vec::with_capacity(512);
        let mut links = Vec::with_capacity(rows.len());
        for row in &rows {
            seq += 1;
            canonical_bytes(seq, row, &mut buf);
            let hash = chain_hash(&prev, &buf);
            links.push((
                audit_chain::seq.eq(seq),
                audit_chain::audit_id.eq(row.id),
                audit_chain::prev_hash.eq(prev.clone()),
                audit_chain::hash.eq(hash.clone()),
            ));
            prev = hash;
        }
        // PostgreSQL caps bind parameters at 65535; 4 per link
        for chunk in links.chunks(10_000) {
            diesel::insert_into(audit_chain::table)
                .values(chunk)
                .execute(conn)?;
        }
        let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
        diesel::delete(audit_unsealed::table.filter(audit_unsealed::audit_id.eq_any(&ids)))
            .execute(conn)?;
        Ok(rows.len())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> AuditRow {
        AuditRow {
            id: 7,
            occurred_at: DateTime::parse_from_rfc3339("2026-11-22T10:00:00.123456Z")
                .map(|d| d.with_timezone(&Utc))
                .unwrap_or_default(),
            actor_id: Some(3),
            actor_role: Some("investigator".into()),
            action: "create".into(),
            entity_table: "temperatures".into(),
            record_id: Some(11),
            site_id: Some(1),
            subject_id: None,
            old_values: None,
            new_values: Some(r#"{"a": "x\"y", "m": [1.5, true], "z": 1}"#.into()),
            reason: None,
            request_id: Some("r1".into()),
            client_addr: None,
        }
    }

    #[test]
    fn canonical_form_is_documented_shape() {
        let mut out = Vec::new();
        canonical_bytes(1, &row(), &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap_or_default(),
            r#"[1,7,"2026-11-22T10:00:00.123456Z",3,"investigator","create","temperatures",11,1,null,null,{"a": "x\"y", "m": [1.5, true], "z": 1},null,"r1",null]"#
        );
    }

    #[test]
    fn any_change_changes_the_hash() {
        let mut a = Vec::new();
        let mut b = Vec::new();
        canonical_bytes(1, &row(), &mut a);
        let mut changed = row();
        changed.new_values = Some(r#"{"a": "x\"y", "m": [1.5, true], "z": 2}"#.into());
        canonical_bytes(1, &changed, &mut b);
        assert_ne!(chain_hash(&[0; 32], &a), chain_hash(&[0; 32], &b));
    }

    /// The writer before it was made faster: serde_json's string escaping, chrono's
    /// formatting, `i64`'s `Display`. The two must agree byte for byte.
    fn reference(seq: i64, row: &AuditRow) -> Vec<u8> {
        let num = |n: Option<i64>| n.map_or("null".to_owned(), |n| n.to_string());
        let st = |s: Option<&str>| {
            s.map_or("null".to_owned(), |s| {
                serde_json::Value::String(s.to_owned()).to_string()
            })
        };
        let parts = [
            seq.to_string(),
            row.id.to_string(),
            st(Some(
                &row.occurred_at.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
            )),
            num(row.actor_id),
            st(row.actor_role.as_deref()),
            st(Some(&row.action)),
            st(Some(&row.entity_table)),
            num(row.record_id),
            num(row.site_id),
            num(row.subject_id),
            row.old_values.clone().unwrap_or_else(|| "null".into()),
            row.new_values.clone().unwrap_or_else(|| "null".into()),
            st(row.reason.as_deref()),
            st(row.request_id.as_deref()),
            st(row.client_addr.as_deref()),
        ];
        format!("[{}]", parts.join(",")).into_bytes()
    }

    #[test]
    fn canonical_form_matches_the_reference_writer_at_the_edges() {
        let mut out = Vec::new();
        for (seq, micros, text) in [
            (
                i64::MIN,
                i64::MIN / 4,
                "\u{0}\u{1f}\u{7f}\"\\/\u{8}\t\n\u{b}\u{c}\r",
            ),
            (i64::MAX, 0, "é€😀 plain"),
            (0, -62_167_219_200_000_000, ""),   // 0000-01-01
            (-1, -62_167_219_200_000_001, "x"), // the year -1
            (10, 253_402_300_800_000_000, "y"), // 10000-01-01
            (11, 253_402_300_799_999_999, "z"), // 9999-12-31T23:59:59.999999
        ] {
            let mut r = row();
            r.id = seq.wrapping_mul(3);
            r.occurred_at = DateTime::from_timestamp_micros(micros).unwrap_or_default();
            r.actor_role = Some(text.into());
            r.reason = Some(text.repeat(3));
            r.subject_id = Some(seq);
            canonical_bytes(seq, &r, &mut out);
            assert_eq!(out, reference(seq, &r), "{seq} {micros} {text:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn canonical_form_matches_the_reference_writer(
            seq in proptest::num::i64::ANY,
            id in proptest::num::i64::ANY,
            micros in -8_000_000_000_000_000i64..8_000_000_000_000_000i64,
            actor in proptest::option::of(proptest::num::i64::ANY),
            text in "\\PC*",
            control in proptest::collection::vec(0u8..0x80, 0..40),
        ) {
            let mut r = row();
            r.id = id;
            r.occurred_at = DateTime::from_timestamp_micros(micros).unwrap_or_default();
            r.actor_id = actor;
            r.actor_role = Some(text.clone());
            r.action = String::from_utf8(control).unwrap_or_default();
            r.reason = Some(format!("{text}\"\\\n"));
            r.client_addr = None;
            let mut out = Vec::new();
            canonical_bytes(seq, &r, &mut out);
            proptest::prop_assert_eq!(out, reference(seq, &r));
        }
    }
}
