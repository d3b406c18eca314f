//! `Idempotency-Key` on POST: the same key and body return the first answer and write
//! nothing again; the same key with another body is refused. Keys live in PostgreSQL, in
//! the same transaction as the write, so this holds across instances and retries.

use diesel::prelude::*;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::error::{AppError, AppResult};
use crate::schema::idempotency_keys as k;

pub enum Claim {
    /// First use: do the work, then `store` the answer.
    Fresh,
    /// Seen before with the same body: replay this answer.
    Replay { status: u16, body: Value },
}

pub fn fingerprint(method: &str, path: &str, body: &[u8]) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(method.as_bytes());
    h.update([0]);
    h.update(path.as_bytes());
    h.update([0]);
    h.update(body);
    h.finalize().to_vec()
}

/// A key as sent: 1 to 255 visible ASCII characters. Anything else is refused rather than
/// ignored, which would write a retry twice.
pub fn parse_key(raw: &[u8]) -> AppResult<String> {
    let valid = (1..=255).contains(&raw.len()) && raw.iter().all(u8::is_ascii_graphic);
    match std::str::from_utf8(raw) {
        Ok(key) if valid => Ok(key.to_owned()),
        _ => Err(AppError::invalid(
            "Idempotency-Key",
            "must be 1 to 255 visible ASCII characters",
        )),
    }
}

/// Claims `key` (from [`parse_key`]) inside the open transaction. A concurrent request
/// with the same key waits on the row until the first commits, then sees its answer. The
/// caller has checked that the record's subject or site is still in its scope: a replay
/// answers only what the caller could see now.
pub fn claim(
    conn: &mut PgConnection,
    user_id: i64,
    key: &str,
    request_hash: &[u8],
) -> AppResult<Claim> {
    // Keys older than 24 h are forgotten.
    diesel::delete(
        k::table
            .filter(k::user_id.eq(user_id))
            .filter(k::key.eq(key))
            .filter(k::created_at.lt(chrono::Utc::now() - chrono::Duration::hours(24))),
    )
    .execute(conn)?;
    let inserted = diesel::insert_into(k::table)
        .values((
            k::user_id.eq(user_id),
            k::key.eq(key),
            k::request_hash.eq(request_hash),
        ))
        .on_conflict_do_nothing()
        .execute(conn)?;
    if inserted == 1 {
        return Ok(Claim::Fresh);
    }
    let (hash, status, body): (Vec<u8>, Option<i16>, Option<Value>) = k::table
        .filter(k::user_id.eq(user_id))
        .filter(k::key.eq(key))
        .select((k::request_hash, k::status, k::body))
        .first(conn)?;
    if hash != request_hash {
        return Err(AppError::invalid(
            "Idempotency-Key",
            "was already used with a different request body",
        ));
    }
    match (status, body) {
        (Some(s), Some(b)) => Ok(Claim::Replay {
            status: u16::try_from(s).unwrap_or(200),
            body: b,
        }),
        _ => Err(AppError::Conflict(
            "A request with this Idempotency-Key is in progress.".into(),
        )),
    }
}

pub fn store(
    conn: &mut PgConnection,
    user_id: i64,
    key: &str,
    status: u16,
    body: &Value,
) -> AppResult<()> {
    diesel::update(
        k::table
            .filter(k::user_id.eq(user_id))
            .filter(k::key.eq(key)),
    )
    .set((
        k::status.eq(i16::try_from(status).unwrap_or(200)),
        k::body.eq(body),
    ))
    .execute(conn)?;
    Ok(())
}
