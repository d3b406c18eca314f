//! Benchmarks the audit trail on a scratch database it creates and drops itself.
//!
//! 1. Verification: bulk-inserts audit rows, seals them with `seal_pending`, times `verify`
//!    (one connection) and `verify_parallel` (two, as `casebook verify-audit` runs it) over
//!    the whole chain and compares them with raw SHA-256 over the very same canonical bytes,
//!    with reading alone (COPY, on one and two connections; and row by row, as the first
//!    verifier read) and canonicalization alone as further figures.
//! 2. Write throughput of "data row + audit row" transactions at 8 and 32 writers, with the
//!    sealer design (A) and with a chain lock held until commit (B), interleaved in 2 rounds.
//!
//! Run: `cargo run --release --example bench_audit -- [--rows N] [--seconds S]`
//! Base URL: `CASEBOOK_TEST_DATABASE_URL`, default `postgres://postgres@127.0.0.1:5432/postgres`
//! (a superuser: the benchmark creates a database and toggles a trigger in it).

use std::error::Error;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use casebook::audit::{self, canonical_bytes, Actor, AuditEvent, RequestMeta};
use casebook::schema::{audit_chain, audit_log, audit_unsealed};
use chrono::{DateTime, Utc};
use diesel::connection::SimpleConnection;
use diesel::pg::PgRowByRowLoadingMode;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Bytea, Nullable, Text, Timestamptz};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

type Res<T> = Result<T, Box<dyn Error + Send + Sync>>;

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
/// The batch the server's background sealer uses (src/startup.rs).
const SEAL_BATCH: i64 = 5_000;
/// Variant A: the sealer runs this often, as `audit.seal_interval_ms` in config/default.toml.
const SEAL_INTERVAL: Duration = Duration::from_millis(100);
/// Variant B: the global chain lock.
const CHAIN_LOCK: i64 = 0x6265_6e63_685f_6c6b;
const INSERT_CHUNK: i64 = 100_000;

diesel::table! {
    bench_form (id) {
        id -> Int8,
        site_id -> Nullable<Int8>,
        payload -> Nullable<Jsonb>,
    }
}

diesel::table! {
    bench_chain (seq) {
        seq -> Int8,
        audit_id -> Int8,
        hash -> Bytea,
    }
}

/// `casebook::audit` exports `canonical_bytes` but not `AuditRow`, the row type it takes;
/// passing `canonical_bytes` here lets type inference name that type for diesel.
///
/// The rows are loaded positionally with `audit_row_select!()`, which spells out what
/// `AuditRow::as_select()` selects: every column, jsonb read as PostgreSQL's text.
fn as_audit_row<R>(row: R, _canonical: fn(i64, &R, &mut Vec<u8>)) -> R {
    row
}

macro_rules! audit_row_select {
    () => {
        (
            audit_log::id,
            audit_log::occurred_at,
            audit_log::actor_id,
            audit_log::actor_role,
            audit_log::action,
            audit_log::entity_table,
            audit_log::record_id,
            audit_log::site_id,
            audit_log::subject_id,
            diesel::dsl::sql::<Nullable<Text>>("audit_log.old_values::text"),
            diesel::dsl::sql::<Nullable<Text>>("audit_log.new_values::text"),
            audit_log::reason,
            audit_log::request_id,
            audit_log::client_addr,
        )
    };
}

struct Args {
    rows: i64,
    seconds: u64,
}

fn parse_args() -> Res<Args> {
    let mut args = Args {
        rows: 1_000_000,
        seconds: 10,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--rows" => args.rows = it.next().ok_or("--rows needs a value")?.parse()?,
            "--seconds" => args.seconds = it.next().ok_or("--seconds needs a value")?.parse()?,
            "-h" | "--help" => {
                println!("usage: bench_audit [--rows N] [--seconds S]");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    if args.rows < 1 || args.seconds < 1 {
        return Err("--rows and --seconds must be at least 1".into());
    }
    Ok(args)
}

/// The scratch database; dropped (WITH FORCE) when this goes out of scope, errors included.
struct ScratchDb {
    admin_url: String,
    name: String,
    url: String,
}

impl ScratchDb {
    fn create() -> Res<Self> {
        let admin_url =
            std::env::var("CASEBOOK_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_URL.into());
        let name = format!("casebook_bench_{:016x}", rand::random::<u64>());
        let mut admin = PgConnection::establish(&admin_url)?;
        admin.batch_execute(&format!("CREATE DATABASE {name}"))?;
        let (head, query) = match admin_url.split_once('?') {
            Some((h, q)) => (h.to_owned(), format!("?{q}")),
            None => (admin_url.clone(), String::new()),
        };
        let server = head
            .rsplit_once('/')
            .map(|(s, _)| s.to_owned())
            .unwrap_or(head);
        let url = format!("{server}/{name}{query}");
        Ok(Self {
            admin_url,
            name,
            url,
        })
    }
}

impl Drop for ScratchDb {
    fn drop(&mut self) {
        let dropped = PgConnection::establish(&self.admin_url)
            .map_err(|e| e.to_string())
            .and_then(|mut c| {
                c.batch_execute(&format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    self.name
                ))
                .map_err(|e| e.to_string())
            });
        match dropped {
            Ok(()) => println!("dropped scratch database {}", self.name),
            Err(e) => eprintln!("could not drop scratch database {}: {e}", self.name),
        }
    }
}

#[derive(QueryableByName)]
struct Setting {
    #[diesel(sql_type = Text)]
    v: String,
}

fn show(conn: &mut PgConnection, sql: &str) -> Res<String> {
    let s: Setting = diesel::sql_query(sql).get_result(conn)?;
    Ok(s.v)
}

fn connect(url: &str) -> Res<PgConnection> {
    let mut conn = PgConnection::establish(url)?;
    conn.batch_execute("SET TIME ZONE 'UTC'; SET application_name = 'bench_audit'")?;
    Ok(conn)
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn per_sec(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

fn cpu_info() -> (String, bool) {
    let text = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = text
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_owned())
        .unwrap_or_else(|| "unknown".into());
    let sha_ni = text
        .lines()
        .find(|l| l.starts_with("flags"))
        .is_some_and(|l| l.split_whitespace().any(|f| f == "sha_ni"));
    (model, sha_ni)
}

// ---------------------------------------------------------------------------------------
// Part 1: verification

/// Realistic audit rows: a ~300-byte form as new_values, every 5th an update with old
/// values and a reason.
const BULK_INSERT: &str = r#"
INSERT INTO audit_log (occurred_at, actor_id, actor_role, action, entity_table, record_id,
                       site_id, subject_id, old_values, new_values, reason, request_id,
                       client_addr)
SELECT now() - ($2 - g) * interval '31 milliseconds' - (g % 997) * interval '1 microsecond',
       1 + g % 40,
       (ARRAY['investigator', 'monitor', 'admin', 'sponsor'])[1 + g % 4],
       CASE WHEN g % 5 = 0 THEN 'update' ELSE 'create' END,
       (ARRAY['temperatures', 'injections', 'consents', 'subjects'])[1 + g % 4],
       g,
       1 + g % 12,
       1 + g % 2000,
       CASE WHEN g % 5 = 0 THEN jsonb_build_object('temperature_c', 37.2, 'version', 1) END,
       jsonb_build_object(
           'subject_code', 'FR' || lpad((1 + g % 12)::text, 2, '0') || '-'
                           || lpad((1 + g % 2000)::text, 4, '0'),
           'visit', 'D' || (g % 28),
           'measured_at', to_char(timestamp '2026-01-01' + g * interval '37 seconds',
                                  'YYYY-MM-DD"T"HH24:MI:SS'),
           'temperature_c', round(36 + (g % 50) / 10.0, 1),
           'route', (ARRAY['tympanic', 'oral', 'axillary'])[1 + g % 3],
           'fever', g % 3 = 0,
           'dose_mg', 100,
           'lot', 'ANK-' || (20260 + g % 40),
           'eligibility', jsonb_build_object('age_ok', true, 'crp_mg_l', g % 200,
                                             'criteria', jsonb_build_array('I1', 'I2', 'E3')),
           'notes', 'entered from the paper CRF; source verified',
           'version', 1 + g % 3),
       CASE WHEN g % 5 = 0 THEN 'transcription error corrected' END,
       gen_random_uuid()::text,
       '10.' || (g % 250) || '.' || (g % 7) || '.' || (1 + g % 200)
FROM generate_series($1::bigint, $2::bigint) AS g
"#;

#[derive(QueryableByName)]
struct Sizes {
    #[diesel(sql_type = diesel::sql_types::Double)]
    text_len: f64,
    #[diesel(sql_type = diesel::sql_types::Double)]
    stored: f64,
}

/// Reads verify's rows as the first verifier did: one query, row by row (libpq single-row
/// mode), each row decoded into `AuditRow`; no hashing.
fn read_pass(conn: &mut PgConnection) -> Res<(u64, Duration)> {
    let start = Instant::now();
    let mut n = 0u64;
    let rows = audit_chain::table
        .inner_join(audit_log::table)
        .select((
            audit_chain::seq,
            audit_chain::prev_hash,
            audit_chain::hash,
            audit_row_select!(),
        ))
        .order(audit_chain::seq)
        .load_iter::<(i64, Vec<u8>, Vec<u8>, _), PgRowByRowLoadingMode>(conn)?;
    for item in rows {
        let (seq, prev_hash, hash, row) = item?;
        let row = as_audit_row(row, canonical_bytes);
        black_box((seq, &prev_hash, &hash, &row));
        n += 1;
    }
    Ok((n, start.elapsed()))
}

/// verify's statement (src/audit/verify.rs) with its range read from two settings; the
/// bytes are counted and discarded. A copy of the library's private query: a floor for
/// what verify can reach, not part of it.
struct VerifyRows;

impl diesel::pg::CopyTarget for VerifyRows {
    type Table = audit_chain::table;
    type SqlType = (BigInt,);

    fn walk_target(
        mut pass: diesel::query_builder::AstPass<'_, '_, diesel::pg::Pg>,
    ) -> QueryResult<()> {
        pass.push_sql(
            "(SELECT c.seq, c.prev_hash, c.hash, l.id, l.occurred_at, \
             l.actor_id, l.actor_role, l.action, l.entity_table, l.record_id, l.site_id, \
             l.subject_id, l.old_values::text, l.new_values::text, l.reason, l.request_id, \
             l.client_addr \
             FROM audit_chain AS c \
             CROSS JOIN LATERAL (SELECT * FROM audit_log WHERE audit_log.id = c.audit_id OFFSET 0) AS l \
             WHERE c.seq > current_setting('bench.after')::bigint \
               AND c.seq <= current_setting('bench.upto')::bigint \
             ORDER BY c.seq)",
        );
        Ok(())
    }
}

/// Reads verify's rows with `after < seq <= upto` as verify does (binary COPY, 50,000 links
/// per statement, same settings), without parsing or hashing them. Returns the bytes read.
fn copy_read(conn: &mut PgConnection, after: i64, upto: i64) -> Res<u64> {
    use std::io::BufRead;
    let mut bytes = 0u64;
    conn.transaction::<_, Box<dyn Error + Send + Sync>, _>(|c| {
        c.batch_execute("SET LOCAL jit = off; SET LOCAL max_parallel_workers_per_gather = 0")?;
        let mut from = after;
        while from < upto {
            let to = from.saturating_add(50_000).min(upto);
            c.batch_execute(&format!(
                "SELECT set_config('bench.after', '{from}', true), set_config('bench.upto', '{to}', true)"
            ))?;
            {
                let mut copy = diesel::copy_to(VerifyRows)
                    .with_format(diesel::pg::CopyFormat::Binary)
                    .load_raw(c)?;
                loop {
                    let n = copy.fill_buf()?.len();
                    if n == 0 {
                        break;
                    }
                    bytes += n as u64;
                    copy.consume(n);
                }
            }
            c.batch_execute("SELECT 1")?;
            from = to;
        }
        Ok(())
    })?;
    Ok(bytes)
}

/// Reading alone, on `conns.len()` connections at once, each its share of `1..=n`.
fn copy_read_pass(conns: &mut [PgConnection], n: i64) -> Res<(u64, Duration)> {
    let k = conns.len() as i64;
    let start = Instant::now();
    let total = thread::scope(|s| -> Res<u64> {
        let handles: Vec<_> = conns
            .iter_mut()
            .enumerate()
            .map(|(i, c)| {
                let (after, upto) = (n * i as i64 / k, n * (i as i64 + 1) / k);
                s.spawn(move || copy_read(c, after, upto))
            })
            .collect();
        let mut total = 0;
        for h in handles {
            total += h.join().map_err(|_| "a read thread panicked")??;
        }
        Ok(total)
    })?;
    black_box(total);
    Ok((total, start.elapsed()))
}

/// The first verifier's walk, for comparison within this run: one query read row by row,
/// each row decoded into `AuditRow`, canonicalized (with today's `canonical_bytes`) and its
/// hash checked against the previous one; then the same tail checks as verify.
fn row_by_row_verify_pass(conn: &mut PgConnection) -> Res<(u64, Duration)> {
    let start = Instant::now();
    let mut n = 0u64;
    let mut prev = vec![0u8; 32];
    let mut buf = Vec::with_capacity(1024);
    {
        let rows = audit_chain::table
            .inner_join(audit_log::table)
            .select((
                audit_chain::seq,
                audit_chain::prev_hash,
                audit_chain::hash,
                audit_row_select!(),
            ))
            .order(audit_chain::seq)
            .load_iter::<(i64, Vec<u8>, Vec<u8>, _), PgRowByRowLoadingMode>(conn)?;
        for item in rows {
            let (seq, prev_hash, hash, row) = item?;
            let row = as_audit_row(row, canonical_bytes);
            if seq != n as i64 + 1 || prev_hash != prev {
                return Err(format!("row-by-row walk: chain broken at seq {seq}").into());
            }
            canonical_bytes(seq, &row, &mut buf);
            let got = Sha256::new()
                .chain_update(&prev)
                .chain_update(&buf)
                .finalize()
                .to_vec();
            if got != hash {
                return Err(format!("row-by-row walk: hash differs at seq {seq}").into());
            }
            prev = hash;
            n += 1;
        }
    }
    tail_checks(conn)?;
    Ok((n, start.elapsed()))
}

/// The canonical bytes of every sealed row, in chain order, in one buffer.
struct Canon {
    bytes: Vec<u8>,
    ends: Vec<usize>,
    stored_head: Vec<u8>,
    canonicalize: Duration,
    total: Duration,
}

fn canon_pass(conn: &mut PgConnection) -> Res<Canon> {
    let start = Instant::now();
    let mut out = Canon {
        bytes: Vec::new(),
        ends: Vec::new(),
        stored_head: Vec::new(),
        canonicalize: Duration::ZERO,
        total: Duration::ZERO,
    };
    let mut buf = Vec::with_capacity(512);
    let rows = audit_chain::table
        .inner_join(audit_log::table)
        .select((audit_chain::seq, audit_chain::hash, audit_row_select!()))
        .order(audit_chain::seq)
        .load_iter::<(i64, Vec<u8>, _), PgRowByRowLoadingMode>(conn)?;
    for item in rows {
        let (seq, hash, row) = item?;
        let row = as_audit_row(row, canonical_bytes);
        let t = Instant::now();
        canonical_bytes(seq, &row, &mut buf);
        out.canonicalize += t.elapsed();
        out.bytes.extend_from_slice(&buf);
        out.ends.push(out.bytes.len());
        out.stored_head = hash;
    }
    out.total = start.elapsed();
    Ok(out)
}

/// Raw SHA-256, chained exactly as the audit chain is: h(n) = SHA-256(h(n-1) || canonical(n)).
fn hash_pass(c: &Canon) -> ([u8; 32], Duration) {
    let start = Instant::now();
    let mut prev = [0u8; 32];
    let mut from = 0usize;
    for &end in &c.ends {
        let mut h = Sha256::new();
        h.update(prev);
        h.update(&c.bytes[from..end]);
        prev = h.finalize().into();
        from = end;
    }
    (prev, start.elapsed())
}

/// The two queries verify runs after the stream: pending count and the orphan anti-join.
fn tail_checks(conn: &mut PgConnection) -> Res<Duration> {
    let start = Instant::now();
    let pending: i64 = audit_unsealed::table.count().get_result(conn)?;
    let orphan: Option<i64> = audit_log::table
        .left_join(audit_chain::table)
        .left_join(audit_unsealed::table)
        .filter(audit_chain::seq.is_null())
        .filter(audit_unsealed::audit_id.is_null())
        .select(audit_log::id)
        .order(audit_log::id)
        .first(conn)
        .optional()?;
    black_box((pending, orphan));
    Ok(start.elapsed())
}

struct Figure {
    what: &'static str,
    rows: u64,
    time: Duration,
    note: String,
}

fn part1(url: &str, n_rows: i64) -> Res<Vec<Figure>> {
    let mut conn = connect(url)?;
    let mut figs = Vec::new();
    let n = n_rows as u64;

    println!("== Part 1: verification speed ({n_rows} audit rows) ==");
    let start = Instant::now();
    let mut from = 1i64;
    while from <= n_rows {
        let to = (from + INSERT_CHUNK - 1).min(n_rows);
        diesel::sql_query(BULK_INSERT)
            .bind::<BigInt, _>(from)
            .bind::<BigInt, _>(to)
            .execute(&mut conn)?;
        from = to + 1;
    }
    let insert = start.elapsed();
    println!(
        "insert (INSERT ... SELECT generate_series, 6 indexes + enqueue trigger): {n} rows in {:.2} s = {:.0} rows/s",
        secs(insert),
        per_sec(n, insert)
    );
    let t = Instant::now();
    conn.batch_execute("ANALYZE audit_log; ANALYZE audit_unsealed")?;
    println!("ANALYZE after the bulk insert: {:.2} s", secs(t.elapsed()));
    let sizes: Sizes = diesel::sql_query(
        "SELECT avg(length(new_values::text))::float8 AS text_len, \
         avg(pg_column_size(new_values))::float8 AS stored FROM audit_log",
    )
    .get_result(&mut conn)?;
    println!(
        "new_values size: {:.0} bytes as JSON text, {:.0} bytes stored as jsonb (average)",
        sizes.text_len, sizes.stored
    );

    let start = Instant::now();
    let mut sealed = 0u64;
    let mut calls = 0u64;
    loop {
        let got = audit::seal_pending(&mut conn, SEAL_BATCH)?;
        calls += 1;
        if got == 0 {
            break;
        }
        sealed += got as u64;
    }
    let seal = start.elapsed();
    println!(
        "seal_pending(batch {SEAL_BATCH}) in a loop: {sealed} rows in {:.2} s ({calls} calls) = {:.0} rows/s",
        secs(seal),
        per_sec(sealed, seal)
    );
    if sealed != n {
        return Err(format!("sealed {sealed} rows, expected {n}").into());
    }
    figs.push(Figure {
        what: "insert (bulk INSERT ... SELECT)",
        rows: n,
        time: insert,
        note: String::new(),
    });
    figs.push(Figure {
        what: "seal_pending loop (batch 5000)",
        rows: sealed,
        time: seal,
        note: String::new(),
    });

    let t = Instant::now();
    conn.batch_execute("VACUUM ANALYZE audit_log, audit_chain, audit_unsealed")?;
    println!(
        "VACUUM ANALYZE after sealing (as autovacuum would): {:.2} s",
        secs(t.elapsed())
    );

    // Warm the caches so that every timed pass below reads the same way.
    let (warm_bytes, warm) = copy_read_pass(std::slice::from_mut(&mut conn), n_rows)?;
    println!(
        "warm-up read (not counted): {warm_bytes} bytes of binary COPY in {:.2} s",
        secs(warm)
    );

    // Interleaved: one connection, two connections, the first verifier's walk; twice.
    let mut helper = connect(url)?;
    let mut verify_times = Vec::new();
    let mut parallel_times = Vec::new();
    let mut walk_times = Vec::new();
    for round in 1..=2 {
        for parallel in [false, true] {
            let start = Instant::now();
            let report = if parallel {
                audit::verify_parallel(&mut conn, &mut [&mut helper])?
            } else {
                audit::verify(&mut conn)?
            };
            let d = start.elapsed();
            if !report.ok || report.rows_checked != n_rows {
                return Err(format!("verify failed: {report:?}").into());
            }
            println!(
                "{} (run {round}): {} rows in {:.2} s = {:.0} rows/s (ok={}, pending={})",
                if parallel {
                    "verify_parallel, 2 connections"
                } else {
                    "verify, 1 connection"
                },
                report.rows_checked,
                secs(d),
                per_sec(n, d),
                report.ok,
                report.pending
            );
            if parallel {
                parallel_times.push(d);
            } else {
                verify_times.push(d);
            }
        }
        let (rows, d) = row_by_row_verify_pass(&mut conn)?;
        println!(
            "row-by-row verify walk, the first verifier (run {round}; read row by row + canonical_bytes + SHA-256 + tail checks): {rows} rows in {:.2} s = {:.0} rows/s",
            secs(d),
            per_sec(rows, d)
        );
        walk_times.push(d);
    }

    let mut pair = [connect(url)?, connect(url)?];
    let (copy_bytes, copy_one) = copy_read_pass(&mut pair[..1], n_rows)?;
    println!(
        "read only, binary COPY as verify reads, 1 connection, no parsing or hashing: {n} rows ({copy_bytes} bytes) in {:.2} s = {:.0} rows/s",
        secs(copy_one),
        per_sec(n, copy_one)
    );
    let (_, copy_two) = copy_read_pass(&mut pair, n_rows)?;
    println!(
        "read only, binary COPY as verify reads, 2 connections at once: {n} rows in {:.2} s = {:.0} rows/s",
        secs(copy_two),
        per_sec(n, copy_two)
    );
    drop(pair);
    let (read_rows, read) = read_pass(&mut conn)?;
    println!(
        "read only, row by row as the first verifier read (decoded into AuditRow, no hashing): {read_rows} rows in {:.2} s = {:.0} rows/s",
        secs(read),
        per_sec(read_rows, read)
    );
    let tail = tail_checks(&mut conn)?;
    println!(
        "verify's tail checks alone (pending count + orphan anti-join): {:.2} s",
        secs(tail)
    );

    let canon = canon_pass(&mut conn)?;
    let total_bytes = canon.bytes.len() as u64;
    println!(
        "canonical_bytes alone (summed inside a read pass): {n} rows in {:.2} s = {:.0} rows/s (read + canonicalize pass: {:.2} s)",
        secs(canon.canonicalize),
        per_sec(n, canon.canonicalize),
        secs(canon.total)
    );
    println!(
        "canonical bytes: {total_bytes} bytes in memory, {:.0} bytes/row on average",
        total_bytes as f64 / n as f64
    );

    let mut hash_times = Vec::new();
    for round in 1..=2 {
        let (head, d) = hash_pass(&canon);
        if head.as_slice() != canon.stored_head.as_slice() {
            return Err("raw hash chain head differs from audit_chain's head".into());
        }
        let hashed = total_bytes + 32 * n;
        println!(
            "raw SHA-256 chained over the same bytes in memory (run {round}): {n} rows in {:.3} s = {:.0} rows/s, {:.0} MB/s (head matches audit_chain)",
            secs(d),
            per_sec(n, d),
            hashed as f64 / 1e6 / secs(d).max(1e-9)
        );
        hash_times.push(d);
    }
    let hash = hash_times.iter().min().copied().unwrap_or_default();
    let raw_rate = per_sec(n, hash);
    for (label, times) in [
        ("verify, 1 connection", &verify_times),
        ("verify_parallel, 2 connections", &parallel_times),
        ("row-by-row walk (first verifier)", &walk_times),
    ] {
        for (i, d) in times.iter().enumerate() {
            let ratio = per_sec(n, *d) / raw_rate;
            println!(
                "ratio {label}/raw SHA-256 (run {}): {:.1}% of raw hash speed (target >= 50%: {})",
                i + 1,
                100.0 * ratio,
                if ratio >= 0.5 { "met" } else { "NOT met" }
            );
        }
    }
    let best_verify = verify_times.iter().min().copied().unwrap_or_default();
    let best_parallel = parallel_times.iter().min().copied().unwrap_or_default();
    println!(
        "ratio verify/read-only: 1 connection {:.1}% of the speed of reading alone on 1, 2 connections {:.1}% of reading alone on 2 (best runs)",
        100.0 * secs(copy_one) / secs(best_verify),
        100.0 * secs(copy_two) / secs(best_parallel)
    );
    println!(
        "reading alone (binary COPY, bytes discarded) against raw SHA-256: 1 connection {:.1}%, 2 connections {:.1}% of raw hash speed: the ceiling for verify",
        100.0 * per_sec(n, copy_one) / raw_rate,
        100.0 * per_sec(n, copy_two) / raw_rate
    );
    let sum = copy_one + canon.canonicalize + hash + tail;
    println!(
        "where verify's time goes (best 1-connection run {:.2} s), parts timed separately: COPY read {:.2} s, canonicalize {:.2} s, SHA-256 {:.3} s, tail checks {:.2} s; sum {:.2} s (the parts overlap: the server produces rows on one core while the client parses, canonicalizes and hashes on the other, so they need not add up)",
        secs(best_verify),
        secs(copy_one),
        secs(canon.canonicalize),
        secs(hash),
        secs(tail),
        secs(sum)
    );

    for (label, times) in [
        (
            ["verify, 1 connection, run 1", "verify, 1 connection, run 2"],
            &verify_times,
        ),
        (
            [
                "verify_parallel, 2 connections, run 1",
                "verify_parallel, 2 connections, run 2",
            ],
            &parallel_times,
        ),
        (
            [
                "row-by-row walk (first verifier), run 1",
                "row-by-row walk (first verifier), run 2",
            ],
            &walk_times,
        ),
    ] {
        for (i, d) in times.iter().enumerate() {
            figs.push(Figure {
                what: label[i.min(1)],
                rows: n,
                time: *d,
                note: format!("{:.1}% of raw SHA-256", 100.0 * per_sec(n, *d) / raw_rate),
            });
        }
    }
    figs.push(Figure {
        what: "read only, binary COPY, 1 connection (no parse, no hash)",
        rows: n,
        time: copy_one,
        note: format!(
            "{:.1}% of raw SHA-256",
            100.0 * per_sec(n, copy_one) / raw_rate
        ),
    });
    figs.push(Figure {
        what: "read only, binary COPY, 2 connections",
        rows: n,
        time: copy_two,
        note: format!(
            "{:.1}% of raw SHA-256",
            100.0 * per_sec(n, copy_two) / raw_rate
        ),
    });
    figs.push(Figure {
        what: "read only, row by row (the first verifier's reading)",
        rows: read_rows,
        time: read,
        note: String::new(),
    });
    figs.push(Figure {
        what: "canonical_bytes only",
        rows: n,
        time: canon.canonicalize,
        note: String::new(),
    });
    figs.push(Figure {
        what: "raw SHA-256 chained, in memory (best of 2)",
        rows: n,
        time: hash,
        note: format!(
            "{:.0} MB/s",
            (total_bytes + 32 * n) as f64 / 1e6 / secs(hash).max(1e-9)
        ),
    });
    figs.push(Figure {
        what: "verify tail checks only",
        rows: n,
        time: tail,
        note: "pending count + orphan anti-join".into(),
    });
    Ok(figs)
}

// ---------------------------------------------------------------------------------------
// Part 2: write throughput

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Variant {
    /// Writers only insert; a background thread seals every 100 ms.
    Sealer,
    /// Each write takes a global lock, reads the chain head and appends to it.
    ChainLock,
}

impl Variant {
    fn label(self) -> &'static str {
        match self {
            Variant::Sealer => "A sealer",
            Variant::ChainLock => "B chain lock",
        }
    }
}

struct RunResult {
    variant: Variant,
    writers: usize,
    round: usize,
    writes: u64,
    errors: u64,
    elapsed: Duration,
    p50_us: u32,
    p99_us: u32,
    sealed_during: u64,
    backlog: i64,
    drain: Duration,
}

impl RunResult {
    fn rate(&self) -> f64 {
        per_sec(self.writes, self.elapsed)
    }
}

#[derive(QueryableByName)]
struct Head {
    #[diesel(sql_type = Timestamptz)]
    ts: DateTime<Utc>,
    #[diesel(sql_type = Nullable<Text>)]
    nv: Option<String>,
    #[diesel(sql_type = Nullable<BigInt>)]
    seq: Option<i64>,
    #[diesel(sql_type = Nullable<Bytea>)]
    hash: Option<Vec<u8>>,
}

fn payload(k: u64, site: i64, subject: i64) -> Value {
    json!({
        "subject_code": format!("FR{site:02}-{subject:04}"),
        "visit": format!("D{}", k % 28),
        "measured_at": Utc::now().format("%Y-%m-%dT%H:%M:%S").to_string(),
        "temperature_c": 36.0 + (k % 50) as f64 / 10.0,
        "route": "tympanic",
        "fever": k.is_multiple_of(3),
        "notes": "entered at the bedside",
        "version": 1
    })
}

fn writer(
    mut conn: PgConnection,
    variant: Variant,
    index: usize,
    start: Arc<Barrier>,
    stop: Arc<AtomicBool>,
) -> Res<(u64, u64, Vec<u32>)> {
    let actor = Actor {
        user_id: 1 + index as i64,
        role: "investigator".into(),
    };
    // Variant B builds the audit row in Rust to hash it; start from any stored row.
    let mut row = as_audit_row(
        audit_log::table
            .select(audit_row_select!())
            .order(audit_log::id)
            .first(&mut conn)?,
        canonical_bytes,
    );
    let mut buf = Vec::with_capacity(512);
    let mut latencies = Vec::with_capacity(1 << 16);
    let (mut done, mut errors) = (0u64, 0u64);
    let mut k = index as u64 * 1_000_003;
    start.wait();
    while !stop.load(Ordering::Relaxed) {
        k += 1;
        let site = 1 + (k % 12) as i64;
        let subject = 1 + (k % 2000) as i64;
        let data = payload(k, site, subject);
        let meta = RequestMeta {
            request_id: uuid::Uuid::new_v4().to_string(),
            client_addr: Some(format!("10.0.{}.{}", index, k % 250)),
        };
        let t = Instant::now();
        let result = conn.transaction::<_, diesel::result::Error, _>(|c| {
            let form_id: i64 = diesel::insert_into(bench_form::table)
                .values((bench_form::site_id.eq(site), bench_form::payload.eq(&data)))
                .returning(bench_form::id)
                .get_result(c)?;
            let event = AuditEvent::new(Some(&actor), "create", "bench_form", &meta)
                .record(form_id)
                .site(Some(site))
                .subject(Some(subject))
                .new_values(data.clone());
            let audit_id = audit::record(c, &event)?;
            if variant == Variant::ChainLock {
                // Held until commit: every writer queues here.
                diesel::sql_query("SELECT pg_advisory_xact_lock($1)")
                    .bind::<BigInt, _>(CHAIN_LOCK)
                    .execute(c)?;
                // A statement of its own, after the lock: its snapshot sees the last commit.
                // It also reads back what the canonical form takes from the database: the
                // row's occurred_at and its jsonb as PostgreSQL renders it.
                let head: Head = diesel::sql_query(
                    "SELECT a.occurred_at AS ts, a.new_values::text AS nv, h.seq, h.hash \
                     FROM audit_log AS a LEFT JOIN LATERAL \
                     (SELECT seq, hash FROM bench_chain ORDER BY seq DESC LIMIT 1) AS h ON true \
                     WHERE a.id = $1",
                )
                .bind::<BigInt, _>(audit_id)
                .get_result(c)?;
                row.id = audit_id;
                row.occurred_at = head.ts;
                row.actor_id = Some(actor.user_id);
                row.actor_role = Some(actor.role.clone());
                row.action = "create".into();
                row.entity_table = "bench_form".into();
                row.record_id = Some(form_id);
                row.site_id = Some(site);
                row.subject_id = Some(subject);
                row.old_values = None;
                row.new_values = head.nv;
                row.reason = None;
                row.request_id = Some(meta.request_id.clone());
                row.client_addr = meta.client_addr.clone();
                let seq = head.seq.unwrap_or(0) + 1;
                let prev = head.hash.unwrap_or_else(|| vec![0u8; 32]);
                canonical_bytes(seq, &row, &mut buf);
                let hash = Sha256::new()
                    .chain_update(&prev)
                    .chain_update(&buf)
                    .finalize()
                    .to_vec();
                diesel::insert_into(bench_chain::table)
                    .values((
                        bench_chain::seq.eq(seq),
                        bench_chain::audit_id.eq(audit_id),
                        bench_chain::hash.eq(hash),
                    ))
                    .execute(c)?;
            }
            Ok(())
        });
        match result {
            Ok(()) => {
                done += 1;
                latencies.push(t.elapsed().as_micros().min(u32::MAX as u128) as u32);
            }
            Err(e) => {
                if errors == 0 {
                    eprintln!("writer {index}: {e}");
                }
                errors += 1;
            }
        }
    }
    Ok((done, errors, latencies))
}

fn sealer(mut conn: PgConnection, stop: Arc<AtomicBool>, sealed: Arc<AtomicU64>) -> Res<()> {
    while !stop.load(Ordering::Relaxed) {
        // as src/startup.rs: a full batch means more is waiting, so go again at once
        loop {
            let n = audit::seal_pending(&mut conn, SEAL_BATCH)?;
            sealed.fetch_add(n as u64, Ordering::Relaxed);
            if (n as i64) < SEAL_BATCH {
                break;
            }
        }
        thread::sleep(SEAL_INTERVAL);
    }
    Ok(())
}

fn join<T>(h: thread::JoinHandle<Res<T>>) -> Res<T> {
    h.join().map_err(|_| "a benchmark thread panicked")?
}

fn write_run(
    url: &str,
    variant: Variant,
    writers: usize,
    round: usize,
    seconds: u64,
) -> Res<RunResult> {
    let mut admin = connect(url)?;
    if variant == Variant::ChainLock {
        // The chain-lock design has no queue for a sealer: no enqueue trigger either.
        admin.batch_execute("ALTER TABLE audit_log DISABLE TRIGGER audit_log_enqueue")?;
    }
    let start = Arc::new(Barrier::new(writers + 1));
    let stop = Arc::new(AtomicBool::new(false));
    let sealed = Arc::new(AtomicU64::new(0));
    let mut handles = Vec::with_capacity(writers);
    for i in 0..writers {
        let conn = connect(url)?;
        let (start, stop) = (start.clone(), stop.clone());
        handles.push(thread::spawn(move || writer(conn, variant, i, start, stop)));
    }
    let sealer_handle = if variant == Variant::Sealer {
        let conn = connect(url)?;
        let (stop, sealed) = (stop.clone(), sealed.clone());
        Some(thread::spawn(move || sealer(conn, stop, sealed)))
    } else {
        None
    };
    start.wait();
    let began = Instant::now();
    thread::sleep(Duration::from_secs(seconds));
    stop.store(true, Ordering::Relaxed);
    let (mut writes, mut errors, mut lat) = (0u64, 0u64, Vec::new());
    for h in handles {
        let (d, e, l) = join(h)?;
        writes += d;
        errors += e;
        lat.extend(l);
    }
    let elapsed = began.elapsed();
    if let Some(h) = sealer_handle {
        join(h)?;
    }
    lat.sort_unstable();
    let pick = |q: f64| -> u32 {
        if lat.is_empty() {
            0
        } else {
            lat[((lat.len() - 1) as f64 * q).round() as usize]
        }
    };
    let (p50_us, p99_us) = (pick(0.50), pick(0.99));
    let backlog: i64 = audit_unsealed::table.count().get_result(&mut admin)?;
    let t = Instant::now();
    while audit::seal_pending(&mut admin, SEAL_BATCH)? > 0 {}
    let drain = t.elapsed();
    if variant == Variant::ChainLock {
        admin.batch_execute("ALTER TABLE audit_log ENABLE TRIGGER audit_log_enqueue")?;
    }
    let r = RunResult {
        variant,
        writers,
        round,
        writes,
        errors,
        elapsed,
        p50_us,
        p99_us,
        sealed_during: sealed.load(Ordering::Relaxed),
        backlog,
        drain,
    };
    let extra = if variant == Variant::Sealer {
        format!(
            ", sealed during run {} rows, backlog at stop {} rows (drained in {:.2} s)",
            r.sealed_during,
            r.backlog,
            secs(r.drain)
        )
    } else {
        String::new()
    };
    println!(
        "round {round} {:<12} {writers:>2} writers: {:.0} writes/s ({} writes in {:.2} s, {} errors), latency p50 {:.1} ms p99 {:.1} ms{extra}",
        variant.label(),
        r.rate(),
        r.writes,
        secs(r.elapsed),
        r.errors,
        r.p50_us as f64 / 1000.0,
        r.p99_us as f64 / 1000.0,
    );
    Ok(r)
}

fn part2(url: &str, seconds: u64) -> Res<Vec<RunResult>> {
    println!();
    println!(
        "== Part 2: write throughput, {seconds} s per run (one write = INSERT bench_form + audit::record, one transaction) =="
    );
    let mut conn = connect(url)?;
    conn.batch_execute(
        "CREATE TABLE bench_form (id bigserial PRIMARY KEY, site_id bigint, payload jsonb);
         CREATE TABLE bench_chain (seq bigint PRIMARY KEY, audit_id bigint NOT NULL,
                                   hash bytea NOT NULL);",
    )?;
    let mut results = Vec::new();
    for round in 1..=2 {
        for writers in [8usize, 32] {
            for variant in [Variant::Sealer, Variant::ChainLock] {
                results.push(write_run(url, variant, writers, round, seconds)?);
            }
        }
    }
    let chained: i64 = bench_chain::table.count().get_result(&mut conn)?;
    let b_writes: u64 = results
        .iter()
        .filter(|r| r.variant == Variant::ChainLock)
        .map(|r| r.writes)
        .sum();
    println!("bench_chain rows: {chained} (B writes committed: {b_writes})");
    for writers in [8usize, 32] {
        let mean = |v: Variant| {
            let rates: Vec<f64> = results
                .iter()
                .filter(|r| r.variant == v && r.writers == writers)
                .map(RunResult::rate)
                .collect();
            rates.iter().sum::<f64>() / rates.len().max(1) as f64
        };
        let (a, b) = (mean(Variant::Sealer), mean(Variant::ChainLock));
        println!(
            "mean of 2 rounds, {writers} writers: A sealer {a:.0} writes/s, B chain lock {b:.0} writes/s; B = {:.2} x A ({:+.0}% vs A)",
            b / a,
            100.0 * (b / a - 1.0)
        );
    }
    Ok(results)
}

fn main() -> Res<()> {
    let args = parse_args()?;
    let db = ScratchDb::create()?;
    println!("scratch database: {}", db.name);
    casebook::db::migrate(&db.url)?;
    let mut conn = connect(&db.url)?;
    let (cpu, sha_ni) = cpu_info();
    println!(
        "machine: {} cores, {cpu}, sha_ni {}",
        thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        if sha_ni { "yes" } else { "no" }
    );
    println!(
        "server: {}; synchronous_commit={} fsync={} shared_buffers={}",
        show(&mut conn, "SELECT version() AS v")?,
        show(
            &mut conn,
            "SELECT current_setting('synchronous_commit') AS v"
        )?,
        show(&mut conn, "SELECT current_setting('fsync') AS v")?,
        show(&mut conn, "SELECT current_setting('shared_buffers') AS v")?,
    );
    drop(conn);

    let figs = part1(&db.url, args.rows)?;
    let runs = part2(&db.url, args.seconds)?;

    println!();
    println!("| Part 1 measurement | rows | seconds | rows/s | note |");
    println!("|---|---:|---:|---:|---|");
    for f in &figs {
        println!(
            "| {} | {} | {:.3} | {:.0} | {} |",
            f.what,
            f.rows,
            secs(f.time),
            per_sec(f.rows, f.time),
            f.note
        );
    }
    println!();
    println!("| round | writers | A sealer (writes/s) | B chain lock (writes/s) | B/A | A p99 (ms) | B p99 (ms) |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    let find = |round: usize, writers: usize, v: Variant| {
        runs.iter()
            .find(|r| r.round == round && r.writers == writers && r.variant == v)
    };
    for writers in [8usize, 32] {
        let (mut sum_a, mut sum_b) = (0.0, 0.0);
        for round in 1..=2 {
            if let (Some(a), Some(b)) = (
                find(round, writers, Variant::Sealer),
                find(round, writers, Variant::ChainLock),
            ) {
                sum_a += a.rate();
                sum_b += b.rate();
                println!(
                    "| {round} | {writers} | {:.0} | {:.0} | {:.2} | {:.1} | {:.1} |",
                    a.rate(),
                    b.rate(),
                    b.rate() / a.rate(),
                    a.p99_us as f64 / 1000.0,
                    b.p99_us as f64 / 1000.0
                );
            }
        }
        println!(
            "| mean | {writers} | {:.0} | {:.0} | {:.2} | | |",
            sum_a / 2.0,
            sum_b / 2.0,
            sum_b / sum_a
        );
    }
    Ok(())
}
