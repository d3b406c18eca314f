//! Password checks that count toward the account's lockout: login, e-signature and password
//! change share one allowance of failures.
//!
//! An attempt is reserved in one conditional `UPDATE` before its password is verified: the
//! verified failures of the window plus the attempts being verified never exceed
//! [`MAX_FAILURES`], so parallel guesses cannot all be verified before the lock (read the
//! lock, verify, count afterwards let 99 parallel guesses through); an attempt that finds the
//! allowance held by attempts being verified waits for one to settle. Only then is the password
//! verified, and the attempt settled: a failure is counted (and locks at the threshold), a
//! success frees its reservation and clears the failures before it only when no other attempt
//! overlapped it, so it cannot wipe out what overlapping failures earned.

use std::time::Duration;

use actix_web::web;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Integer, Nullable, Text, Timestamptz};
use serde_json::{json, Value};

use crate::audit::{self, AuditEvent};
use crate::auth::password::Verdict;
use crate::auth::Caller;
use crate::db;
use crate::error::{AppError, AppResult};
use crate::state::AppState;

/// Failures within this window count toward a lock.
pub const FAILURE_WINDOW_MINUTES: i32 = 15;
pub const MAX_FAILURES: i32 = 5;
pub const LOCK_MINUTES: i32 = 15;
/// A reservation left by a server that died while verifying stops counting after this long
/// without any new reservation (a live verification never takes that long).
const STALE_RESERVATION_MINUTES: i32 = LOCK_MINUTES;
/// How long an attempt waits for the account's allowance to free up before it is refused.
const WAIT_FOR_ATTEMPT: Duration = Duration::from_secs(2);
/// Longer passwords are refused before hashing (bounds argon2's work).
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// Why an attempt did not succeed; its audit row says which.
#[derive(Debug, Clone)]
pub enum Failure {
    /// verified and wrong
    Wrong {
        failed_logins: i32,
        locked_until: Option<DateTime<Utc>>,
    },
    /// refused unverified: the account is locked, or its remaining attempts are all being
    /// verified right now
    Refused { locked_until: Option<DateTime<Utc>> },
}

impl Failure {
    /// The `new_values` of the failure's audit row.
    pub fn audit_values(&self) -> Value {
        match self {
            Self::Wrong {
                failed_logins,
                locked_until,
            } => json!({
                "cause": "bad_password",
                "failed_logins": failed_logins,
                "locked_until": locked_until,
            }),
            Self::Refused { locked_until } => json!({
                "cause": "locked",
                "locked_until": locked_until,
            }),
        }
    }
}

/// The answer to a password check.
#[derive(Debug)]
pub enum Checked<T> {
    /// right password; what the caller's work returned
    Accepted(T),
    /// wrong password, counted
    Wrong,
    /// not verified: try again after this many seconds
    Refused { retry_after_secs: i64 },
}

#[derive(QueryableByName)]
struct Reserved {
    #[diesel(sql_type = Text)]
    password_hash: String,
}

#[derive(QueryableByName)]
struct Counted {
    #[diesel(sql_type = Integer)]
    failed_logins: i32,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    locked_until: Option<DateTime<Utc>>,
}

#[derive(QueryableByName)]
struct LockState {
    #[diesel(sql_type = Nullable<Timestamptz>)]
    locked_until: Option<DateTime<Utc>>,
}

/// Takes one attempt of the account's allowance, or none when it is locked or used up.
/// Returns the stored hash to verify against.
fn reserve(conn: &mut PgConnection, user_id: i64) -> QueryResult<Option<String>> {
    // One statement: under READ COMMITTED a concurrent reservation's row is re-read after its
    // commit and the WHERE re-checked on it, so the allowance cannot be overdrawn.
    let row: Option<Reserved> = diesel::sql_query(
        "UPDATE users SET
            failed_logins = CASE WHEN first_failed_at >= now() - make_interval(mins => $2)
                THEN failed_logins ELSE 0 END,
            first_failed_at = CASE WHEN first_failed_at >= now() - make_interval(mins => $2)
                THEN first_failed_at END,
            attempts_pending = CASE WHEN attempt_reserved_at >= now() - make_interval(mins => $4)
                THEN attempts_pending ELSE 0 END + 1,
            attempt_reserved_at = now()
         WHERE id = $1
           AND (locked_until IS NULL OR locked_until <= now())
           AND CASE WHEN first_failed_at >= now() - make_interval(mins => $2)
                 THEN failed_logins ELSE 0 END
             + CASE WHEN attempt_reserved_at >= now() - make_interval(mins => $4)
                 THEN attempts_pending ELSE 0 END < $3
         RETURNING password_hash",
    )
    .bind::<BigInt, _>(user_id)
    .bind::<Integer, _>(FAILURE_WINDOW_MINUTES)
    .bind::<Integer, _>(MAX_FAILURES)
    .bind::<Integer, _>(STALE_RESERVATION_MINUTES)
    .get_result(conn)
    .optional()?;
    Ok(row.map(|r| r.password_hash))
}

/// Settles a reservation as a failure: counts it, and locks the account at the threshold.
fn settle_failure(conn: &mut PgConnection, user_id: i64) -> QueryResult<Counted> {
    diesel::sql_query(
        "UPDATE users SET
            attempts_pending = GREATEST(attempts_pending - 1, 0),
            failed_logins = CASE WHEN first_failed_at >= now() - make_interval(mins => $2)
                THEN failed_logins + 1 ELSE 1 END,
            first_failed_at = CASE WHEN first_failed_at >= now() - make_interval(mins => $2)
                THEN first_failed_at ELSE now() END,
            locked_until = CASE WHEN CASE WHEN first_failed_at >= now() - make_interval(mins => $2)
                    THEN failed_logins + 1 ELSE 1 END >= $3
                THEN now() + make_interval(mins => $4) ELSE locked_until END
         WHERE id = $1
         RETURNING failed_logins, locked_until",
    )
    .bind::<BigInt, _>(user_id)
    .bind::<Integer, _>(FAILURE_WINDOW_MINUTES)
    .bind::<Integer, _>(MAX_FAILURES)
    .bind::<Integer, _>(LOCK_MINUTES)
    .get_result(conn)
}

/// Settles a reservation as a success. The failures before it are cleared only when no other
/// attempt is being verified alongside and the account is not locked. Returns the lock, if
/// any (then the success does not count).
fn settle_success(conn: &mut PgConnection, user_id: i64) -> QueryResult<Option<DateTime<Utc>>> {
    let row: LockState = diesel::sql_query(
        "UPDATE users SET
            attempts_pending = GREATEST(attempts_pending - 1, 0),
            failed_logins = CASE WHEN attempts_pending <= 1
                AND (locked_until IS NULL OR locked_until <= now()) THEN 0 ELSE failed_logins END,
            first_failed_at = CASE WHEN attempts_pending <= 1
                AND (locked_until IS NULL OR locked_until <= now()) THEN NULL ELSE first_failed_at END
         WHERE id = $1
         RETURNING locked_until",
    )
    .bind::<BigInt, _>(user_id)
    .get_result(conn)?;
    Ok(row.locked_until.filter(|u| *u > Utc::now()))
}

/// Gives a reservation back without settling it (the password could not be verified).
fn release(conn: &mut PgConnection, user_id: i64) -> QueryResult<usize> {
    diesel::sql_query(
        "UPDATE users SET attempts_pending = GREATEST(attempts_pending - 1, 0) WHERE id = $1",
    )
    .bind::<BigInt, _>(user_id)
    .execute(conn)
}

fn lock_of(conn: &mut PgConnection, user_id: i64) -> QueryResult<Option<DateTime<Utc>>> {
    let row: LockState = diesel::sql_query("SELECT locked_until FROM users WHERE id = $1")
        .bind::<BigInt, _>(user_id)
        .get_result(conn)?;
    Ok(row.locked_until.filter(|u| *u > Utc::now()))
}

fn retry_after(locked_until: Option<DateTime<Utc>>) -> i64 {
    locked_until
        .map(|u| (u - Utc::now()).num_seconds() + 1)
        .unwrap_or(1)
        .max(1)
}

/// Reserves an attempt; while the account's remaining allowance is held by attempts being
/// verified (not locked), waits for one of them to settle rather than refuse at once, so that
/// a few parallel logins with the right password (a script, several tabs) are served in turn.
/// `None`: locked, or still no attempt free after [`WAIT_FOR_ATTEMPT`].
async fn wait_for_attempt(pool: &db::Pool, user_id: i64) -> AppResult<Option<String>> {
    let started = std::time::Instant::now();
    let mut pause = Duration::from_millis(5);
    loop {
        let (reserved, locked) = db::run(pool, move |conn| {
            Ok(match reserve(conn, user_id)? {
                Some(hash) => (Some(hash), false),
                None => (None, lock_of(conn, user_id)?.is_some()),
            })
        })
        .await?;
        if reserved.is_some() || locked || started.elapsed() >= WAIT_FOR_ATTEMPT {
            return Ok(reserved);
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// Verifies `password` for `user_id` within the account's lockout allowance.
///
/// On a right password, `accepted` runs in one transaction with the settling of the attempt
/// (and a rehash when the hashing parameters changed). On a wrong or refused one, `failed`
/// writes its audit row in one transaction with the count. A refused attempt still costs one
/// hash, so that it takes as long as a verified one.
///
/// The check runs as a task of its own: a client that hangs up mid-way cannot leave its
/// reservation behind.
pub async fn check_password<T, A, F>(
    state: &web::Data<AppState>,
    user_id: i64,
    password: String,
    accepted: A,
    failed: F,
) -> AppResult<Checked<T>>
where
    T: Send + 'static,
    A: FnOnce(&mut PgConnection) -> AppResult<T> + Send + 'static,
    F: FnOnce(&mut PgConnection, &Failure) -> AppResult<()> + Send + 'static,
{
    let state = state.clone();
    actix_web::rt::spawn(async move { run(state, user_id, password, accepted, failed).await })
        .await
        .map_err(AppError::internal)?
}

async fn run<T, A, F>(
    state: web::Data<AppState>,
    user_id: i64,
    password: String,
    accepted: A,
    failed: F,
) -> AppResult<Checked<T>>
where
    T: Send + 'static,
    A: FnOnce(&mut PgConnection) -> AppResult<T> + Send + 'static,
    F: FnOnce(&mut PgConnection, &Failure) -> AppResult<()> + Send + 'static,
{
    let pool = &state.pool;
    let Some(stored) = wait_for_attempt(pool, user_id).await? else {
        state
            .with_hasher(move |h| {
                let _ = h.verify(&password, None);
            })
            .await?;
        let locked_until = db::transaction(pool, move |conn| {
            let locked_until = lock_of(conn, user_id)?;
            failed(conn, &Failure::Refused { locked_until })?;
            Ok(locked_until)
        })
        .await?;
        return Ok(Checked::Refused {
            retry_after_secs: retry_after(locked_until),
        });
    };
    let pw = password.clone();
    let verdict = state
        .with_hasher(move |h| h.verify(&pw, Some(&stored)))
        .await;
    let verdict = match verdict {
        Ok(v) => v,
        Err(e) => {
            // not verified: give the reservation back, counting nothing and clearing nothing
            let _ = db::run(pool, move |conn| Ok(release(conn, user_id)?)).await;
            return Err(e);
        }
    };
    match verdict {
        Verdict::Match { needs_rehash } => {
            // a rehash that fails leaves the old hash, which still verifies
            let new_hash = if needs_rehash {
                state
                    .with_hasher(move |h| h.hash(&password))
                    .await
                    .ok()
                    .and_then(Result::ok)
            } else {
                None
            };
            let outcome = db::transaction(pool, move |conn| {
                if let Some(locked_until) = settle_success(conn, user_id)? {
                    failed(
                        conn,
                        &Failure::Refused {
                            locked_until: Some(locked_until),
                        },
                    )?;
                    return Ok(Checked::Refused {
                        retry_after_secs: retry_after(Some(locked_until)),
                    });
                }
                if let Some(h) = new_hash {
                    diesel::sql_query("UPDATE users SET password_hash = $2 WHERE id = $1")
                        .bind::<BigInt, _>(user_id)
                        .bind::<Text, _>(h)
                        .execute(conn)?;
                }
                Ok(Checked::Accepted(accepted(conn)?))
            })
            .await;
            if outcome.is_err() {
                // the work refused or failed and rolled back the settling with it
                let _ = db::run(pool, move |conn| Ok(settle_success(conn, user_id)?)).await;
            }
            outcome
        }
        Verdict::NoMatch => {
            let counted = db::transaction(pool, move |conn| {
                let c = settle_failure(conn, user_id)?;
                failed(
                    conn,
                    &Failure::Wrong {
                        failed_logins: c.failed_logins,
                        locked_until: c.locked_until,
                    },
                )?;
                Ok(())
            })
            .await;
            if let Err(e) = counted {
                // the failure counts even when its audit row could not be written
                let _ = db::run(pool, move |conn| Ok(settle_failure(conn, user_id)?)).await;
                return Err(e);
            }
            Ok(Checked::Wrong)
        }
    }
}

/// A signed-in caller enters their password again (e-signature, password change): a wrong
/// one is a 422 naming `field` (not a 401: the session is fine), a locked account a 429.
/// Every failure is audited as `action` on `entity_table`, with `context` added to its values.
pub async fn confirm_password(
    state: &web::Data<AppState>,
    caller: &Caller,
    password: String,
    field: &'static str,
    (action, entity_table): (&'static str, &'static str),
    context: Value,
) -> AppResult<()> {
    let c = caller.clone();
    let checked = check_password(
        state,
        caller.user_id,
        password,
        |_| Ok(()),
        move |conn, failure| {
            let mut values = failure.audit_values();
            if let (Some(values), Value::Object(extra)) = (values.as_object_mut(), context) {
                values.extend(extra);
            }
            audit::record(
                conn,
                &AuditEvent::new(Some(&c.actor), action, entity_table, &c.meta)
                    .record(c.user_id)
                    .new_values(values),
            )?;
            Ok(())
        },
    )
    .await?;
    match checked {
        Checked::Accepted(()) => Ok(()),
        Checked::Wrong => Err(AppError::invalid(field, "is not your password")),
        Checked::Refused { retry_after_secs } => {
            Err(AppError::TooManyRequests { retry_after_secs })
        }
    }
}
