//! Verification of the hash chain: reads `audit_chain` joined to `audit_log` with
//! `COPY (SELECT ...) TO STDOUT (FORMAT binary)`, in ranges of `seq`, and recomputes every
//! link from the bytes PostgreSQL sent, without building an [`AuditRow`](super::AuditRow)
//! per row.
//!
//! Why COPY: a normal query either buffers its whole result in the client (one batch at a
//! time, the server idle while the client works) or, in libpq's single-row mode, builds one
//! result object per row. COPY streams the rows, one message each, while the client checks
//! the previous ones, with no per-row result object. Measured (docs/benchmarks-history.md,
//! issue 3), one connection reads about as fast this way as in single-row mode: PostgreSQL
//! producing the rows (above all `jsonb::text`) is the limit, and the client's work hides
//! behind it. What gains is checking ranges on two connections, so that two backends produce
//! rows.
//!
//! Each range is checked on its own: every row's hash is recomputed from its own stored
//! `prev_hash`, and within a range each row's `seq` and `prev_hash` are compared with the
//! row before it. The ranges are then joined in `seq` order, comparing each range's first row
//! with the previous range's last row, so the report is exactly the one a single walk from
//! `seq` 1 would give: the first failing row, with the checks in the same order (sequence,
//! then `prev_hash`, then content). Ranges can be checked on several connections at once
//! ([`verify_parallel`]).

use std::io::BufRead;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use diesel::connection::SimpleConnection;
use diesel::pg::{CopyFormat, CopyTarget, Pg};
use diesel::prelude::*;
use diesel::query_builder::AstPass;
use diesel::result::Error as DieselError;
use diesel::sql_types::BigInt;
use serde::Serialize;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use super::chain::{write_canonical, Fields};
use crate::schema::{audit_chain, audit_log, audit_unsealed};

/// Rows of `seq` per COPY statement: bounds the work thrown away when a range fails early
/// (the rest of its COPY is read and discarded) and how unevenly workers can finish.
const RANGE_SEQS: i64 = 50_000;

/// The outcome of a verification.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq, Eq)]
pub struct ChainReport {
    /// True when every sealed row hashes correctly and every audit row is sealed or pending.
    pub ok: bool,
    pub rows_checked: i64,
    /// Committed rows the sealer has not chained yet: not an error.
    pub pending: i64,
    /// The audit_log id of the first row that does not verify.
    pub first_bad_id: Option<i64>,
    pub problem: Option<String>,
}

/// Recomputes the chain on one connection, streaming (memory bounded by one row plus one
/// small record per range of [`RANGE_SEQS`] links).
pub fn verify(conn: &mut PgConnection) -> QueryResult<ChainReport> {
    verify_in_ranges(conn, &mut [], RANGE_SEQS)
}

/// As [`verify`], with the ranges of `seq` shared between `conn` and `helpers`, one thread
/// per connection. The report is identical whatever the number of connections.
pub fn verify_parallel(
    conn: &mut PgConnection,
    helpers: &mut [&mut PgConnection],
) -> QueryResult<ChainReport> {
    verify_in_ranges(conn, helpers, RANGE_SEQS)
}

/// [`verify_parallel`] with ranges of `range_seqs` links (at least 1): for tests, which
/// compare reports across range sizes.
#[doc(hidden)]
pub fn verify_in_ranges(
    conn: &mut PgConnection,
    helpers: &mut [&mut PgConnection],
    range_seqs: i64,
) -> QueryResult<ChainReport> {
    let bounds: (Option<i64>, Option<i64>) = audit_chain::table
        .select((
            diesel::dsl::min(audit_chain::seq),
            diesel::dsl::max(audit_chain::seq),
        ))
        .get_result(conn)?;
    let ranges = split(bounds, range_seqs.max(1));
    let outcomes = check_ranges(conn, helpers, &ranges)?;
    let (checked, mut bad) = join(&outcomes);

    let pending: i64 = audit_unsealed::table.count().get_result(conn)?;
    if bad.is_none() {
        // Every audit row must be either chained or waiting: one in neither was hidden.
        let orphan: Option<i64> = audit_log::table
            .left_join(audit_chain::table)
            .left_join(audit_unsealed::table)
            .filter(audit_chain::seq.is_null())
            .filter(audit_unsealed::audit_id.is_null())
            .select(audit_log::id)
            .order(audit_log::id)
            .first(conn)
            .optional()?;
        if let Some(id) = orphan {
            bad = Some((id, "row is neither sealed nor pending".into()));
        }
    }
    Ok(ChainReport {
        ok: bad.is_none(),
        rows_checked: checked,
        pending,
        first_bad_id: bad.as_ref().map(|b| b.0),
        problem: bad.map(|b| b.1),
    })
}

/// Ranges `(after, upto]` of `seq` that together cover every `i64`: the first is open
/// below and the last open above, so a link outside the `min..=max` read first (one sealed
/// since, or a stray `seq` such as 0) is still read.
fn split(bounds: (Option<i64>, Option<i64>), range_seqs: i64) -> Vec<(i64, i64)> {
    let (Some(min), Some(max)) = bounds else {
        return vec![(i64::MIN, i64::MAX)];
    };
    let mut ranges = Vec::new();
    let mut after = i64::MIN;
    let mut next = min.saturating_sub(1).saturating_add(range_seqs);
    while next < max {
        ranges.push((after, next));
        after = next;
        next = next.saturating_add(range_seqs);
    }
    ranges.push((after, i64::MAX));
    ranges
}

/// What one range held, checked on its own.
#[derive(Debug, Default)]
struct RangeOutcome {
    /// `seq`, `audit_log` id and `prev_hash` of the range's first row.
    first: Option<(i64, i64, Vec<u8>)>,
    /// `seq` and `hash` of its last row.
    last: Option<(i64, Vec<u8>)>,
    /// Rows that verified, all of them when `failure` is `None`.
    verified: i64,
    /// The first row that fails a check that needs only this range: the content of any
    /// row, the sequence and `prev_hash` of any row but the first.
    failure: Option<(i64, String)>,
}

/// Joins the ranges in order: the rows verified before the first failure, and that failure.
fn join(outcomes: &[RangeOutcome]) -> (i64, Option<(i64, String)>) {
    let mut checked = 0i64;
    let mut last_seq = 0i64;
    let mut prev: Vec<u8> = vec![0u8; 32];
    for o in outcomes {
        let Some((seq, id, prev_hash)) = &o.first else {
            continue;
        };
        if *seq != last_seq.wrapping_add(1) {
            return (
                checked,
                Some((*id, format!("sequence jumps from {last_seq} to {seq}"))),
            );
        }
        if *prev_hash != prev {
            return (
                checked,
                Some((*id, "prev_hash does not match the previous row".into())),
            );
        }
        checked += o.verified;
        if let Some(f) = &o.failure {
            return (checked, Some(f.clone()));
        }
        if let Some((seq, hash)) = &o.last {
            last_seq = *seq;
            prev.clone_from(hash);
        }
    }
    (checked, None)
}

/// Checks `ranges` on `conn` and `helpers`, each connection on its own thread taking the
/// next unchecked range; stops handing out ranges after one that failed.
fn check_ranges(
    conn: &mut PgConnection,
    helpers: &mut [&mut PgConnection],
    ranges: &[(i64, i64)],
) -> QueryResult<Vec<RangeOutcome>> {
    let next = AtomicUsize::new(0);
    // lowest index of a range that failed: later ranges need not be read
    let stop = AtomicUsize::new(usize::MAX);
    let results: Mutex<Vec<Option<RangeOutcome>>> =
        Mutex::new((0..ranges.len()).map(|_| None).collect());
    let work = |c: &mut PgConnection| -> QueryResult<()> {
        // One transaction per connection, for the settings below only.
        c.transaction(|c| {
            c.batch_execute(PLAN_SETTINGS)?;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= ranges.len() || i > stop.load(Ordering::Relaxed) {
                    return Ok(());
                }
                let (after, upto) = ranges[i];
                let outcome = check_range(c, after, upto)?;
                if outcome.failure.is_some() {
                    stop.fetch_min(i, Ordering::Relaxed);
                }
                let mut r = results.lock().map_err(|_| {
                    DieselError::QueryBuilderError("verification thread panicked".into())
                })?;
                r[i] = Some(outcome);
            }
        })
    };
    if helpers.is_empty() {
        work(conn)?;
    } else {
        std::thread::scope(|s| -> QueryResult<()> {
            let work = &work;
            let handles: Vec<_> = helpers
                .iter_mut()
                .map(|h| s.spawn(move || work(h)))
                .collect();
            let mine = work(conn);
            for h in handles {
                h.join().map_err(|_| {
                    DieselError::QueryBuilderError("verification thread panicked".into())
                })??;
            }
            mine
        })?;
    }
    let results = results
        .into_inner()
        .map_err(|_| DieselError::QueryBuilderError("verification thread panicked".into()))?;
    // Ranges after the first failed one may be missing; `join` never reaches them.
    Ok(results.into_iter().map(Option::unwrap_or_default).collect())
}

/// The statement whose rows are checked: `COPY (SELECT ...) TO STDOUT`. COPY takes no bind
/// parameters, so the range comes from two settings of the session, set just before.
struct ChainRange;

const RANGE_QUERY: &str = "(SELECT c.seq, c.prev_hash, c.hash, l.id, l.occurred_at, \
     l.actor_id, l.actor_role, l.action, l.entity_table, l.record_id, l.site_id, \
     l.subject_id, l.old_values::text, l.new_values::text, l.reason, l.request_id, \
     l.client_addr \
     FROM audit_chain AS c \
     CROSS JOIN LATERAL (SELECT * FROM audit_log WHERE audit_log.id = c.audit_id OFFSET 0) AS l \
     WHERE c.seq > current_setting('casebook.verify_after')::bigint \
       AND c.seq <= current_setting('casebook.verify_upto')::bigint \
     ORDER BY c.seq)";

/// For [`RANGE_QUERY`], whose row estimate PostgreSQL cannot know: without these it may
/// hash all of `audit_log` for each range (measured: a parallel hash join reading the whole
/// table), or spend longer compiling the query (JIT) than running it. The `OFFSET 0` in the
/// query keeps the lookup of each link's row by primary key.
const PLAN_SETTINGS: &str = "SET LOCAL jit = off; SET LOCAL max_parallel_workers_per_gather = 0";

/// Columns of [`RANGE_QUERY`].
const COLUMNS: usize = 17;

impl CopyTarget for ChainRange {
    type Table = audit_chain::table;
    type SqlType = (BigInt,);

    fn walk_target(mut pass: AstPass<'_, '_, Pg>) -> QueryResult<()> {
        pass.push_sql(RANGE_QUERY);
        Ok(())
    }
}

fn bad_data(what: &str) -> DieselError {
    DieselError::DeserializationError(format!("audit verification: {what}").into())
}

/// Reads and checks the links with `after < seq <= upto`.
fn check_range(conn: &mut PgConnection, after: i64, upto: i64) -> QueryResult<RangeOutcome> {
    // Two integers of ours, not client data: safe to write into the statement. Local to
    // the transaction the caller holds.
    conn.batch_execute(&format!(
        "SELECT set_config('casebook.verify_after', '{after}', true), \
                set_config('casebook.verify_upto', '{upto}', true)"
    ))?;
    let result = {
        let mut copy = diesel::copy_to(ChainRange)
            .with_format(CopyFormat::Binary)
            .load_raw(conn)?;
        let result = check_rows(&mut CopyReader::new(), &mut copy);
        // The connection stays in COPY mode until the stream has been read to its end.
        if result.is_err() {
            while let Ok(chunk) = copy.fill_buf() {
                let len = chunk.len();
                if len == 0 {
                    break;
                }
                copy.consume(len);
            }
        }
        result
    };
    // diesel leaves the COPY's closing result unread, which a prepared statement would
    // trip over ("another command is already in progress"); a simple query reads it.
    conn.batch_execute("SELECT 1")?;
    result
}

fn check_rows(reader: &mut CopyReader, copy: &mut impl BufRead) -> QueryResult<RangeOutcome> {
    reader.header(copy)?;
    let mut out = RangeOutcome::default();
    let mut buf = Vec::with_capacity(1024);
    let mut prev_seq = 0i64;
    let mut prev_hash = [0u8; 32];
    let mut error = None;
    while let Some(row) = reader.next_row(copy)? {
        if out.failure.is_some() || error.is_some() {
            continue; // read to the end: the connection must leave COPY mode
        }
        let r = match decode(&row) {
            Ok(r) => r,
            Err(e) => {
                error = Some(e);
                continue;
            }
        };
        if out.first.is_none() {
            out.first = Some((r.fields.seq, r.fields.id, r.prev_hash.to_vec()));
        } else if r.fields.seq != prev_seq.wrapping_add(1) {
            out.failure = Some((
                r.fields.id,
                format!("sequence jumps from {prev_seq} to {}", r.fields.seq),
            ));
            continue;
        } else if r.prev_hash != prev_hash {
            out.failure = Some((
                r.fields.id,
                "prev_hash does not match the previous row".into(),
            ));
            continue;
        }
        write_canonical(&r.fields, &mut buf);
        let mut h = Sha256::new();
        h.update(r.prev_hash);
        h.update(&buf);
        let digest: [u8; 32] = h.finalize().into();
        if digest[..] != *r.hash {
            out.failure = Some((r.fields.id, "content does not match its hash".into()));
            continue;
        }
        prev_hash = digest;
        prev_seq = r.fields.seq;
        out.verified += 1;
    }
    if let Some(e) = error {
        return Err(e);
    }
    if out.verified > 0 {
        out.last = Some((prev_seq, prev_hash.to_vec()));
    }
    Ok(out)
}

struct Decoded<'a> {
    prev_hash: &'a [u8],
    hash: &'a [u8],
    fields: Fields<'a>,
}

/// PostgreSQL's epoch, 2000-01-01 UTC, in Unix microseconds.
const PG_EPOCH_US: i64 = 946_684_800_000_000;

fn decode<'a>(row: &[Option<&'a [u8]>; COLUMNS]) -> QueryResult<Decoded<'a>> {
    fn int(v: Option<&[u8]>) -> QueryResult<Option<i64>> {
        match v {
            None => Ok(None),
            Some(b) => <[u8; 8]>::try_from(b)
                .map(|a| Some(i64::from_be_bytes(a)))
                .map_err(|_| bad_data("bigint of the wrong size")),
        }
    }
    fn text(v: Option<&[u8]>) -> QueryResult<Option<&str>> {
        v.map(std::str::from_utf8)
            .transpose()
            .map_err(|_| bad_data("text is not UTF-8"))
    }
    fn some<T>(v: Option<T>) -> QueryResult<T> {
        v.ok_or_else(|| bad_data("unexpected NULL"))
    }
    let micros = some(int(row[4])?)?;
    let occurred_at = micros
        .checked_add(PG_EPOCH_US)
        .and_then(DateTime::<Utc>::from_timestamp_micros)
        .ok_or_else(|| bad_data("timestamp out of range"))?;
    Ok(Decoded {
        prev_hash: some(row[1])?,
        hash: some(row[2])?,
        fields: Fields {
            seq: some(int(row[0])?)?,
            id: some(int(row[3])?)?,
            occurred_at,
            actor_id: int(row[5])?,
            actor_role: text(row[6])?,
            action: some(text(row[7])?)?,
            entity_table: some(text(row[8])?)?,
            record_id: int(row[9])?,
            site_id: int(row[10])?,
            subject_id: int(row[11])?,
            old_values: text(row[12])?,
            new_values: text(row[13])?,
            reason: text(row[14])?,
            request_id: text(row[15])?,
            client_addr: text(row[16])?,
        },
    })
}

/// A parser of PostgreSQL's binary COPY format over the chunks `load_raw` hands out: a
/// signature and header, then per row a 16-bit field count and per field a 32-bit length
/// (-1 for NULL) and the bytes, then a field count of -1.
struct CopyReader {
    buf: Vec<u8>,
    pos: usize,
}

const SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";

impl CopyReader {
    fn new() -> Self {
        Self {
            buf: Vec::with_capacity(64 * 1024),
            pos: 0,
        }
    }

    /// Makes at least `n` unread bytes available; false at the end of the data.
    fn fill(&mut self, src: &mut impl BufRead, n: usize) -> QueryResult<bool> {
        while self.buf.len() - self.pos < n {
            if self.pos > 0 {
                self.buf.drain(..self.pos);
                self.pos = 0;
            }
            let chunk = src
                .fill_buf()
                .map_err(|e| DieselError::DeserializationError(Box::new(e)))?;
            if chunk.is_empty() {
                return Ok(false);
            }
            let len = chunk.len();
            self.buf.extend_from_slice(chunk);
            src.consume(len);
        }
        Ok(true)
    }

    fn header(&mut self, src: &mut impl BufRead) -> QueryResult<()> {
        if !self.fill(src, SIGNATURE.len() + 8)? || &self.buf[..SIGNATURE.len()] != SIGNATURE {
            return Err(bad_data("not a binary COPY stream"));
        }
        let at = SIGNATURE.len();
        let flags = u32::from_be_bytes([
            self.buf[at],
            self.buf[at + 1],
            self.buf[at + 2],
            self.buf[at + 3],
        ]);
        if flags & 0xffff_0000 != 0 {
            return Err(bad_data("binary COPY with OIDs or unknown critical flags"));
        }
        let ext = u32::from_be_bytes([
            self.buf[at + 4],
            self.buf[at + 5],
            self.buf[at + 6],
            self.buf[at + 7],
        ]) as usize;
        let total = at + 8 + ext;
        if !self.fill(src, total)? {
            return Err(bad_data("truncated binary COPY header"));
        }
        self.pos = total;
        Ok(())
    }

    /// The next row's fields, borrowed from the reader's buffer; `None` after the trailer.
    /// An end of data before the trailer is an error (the server stopped mid-way).
    fn next_row<'s>(
        &'s mut self,
        src: &mut impl BufRead,
    ) -> QueryResult<Option<[Option<&'s [u8]>; COLUMNS]>> {
        // First find the row's extent, pulling in more data as needed, then borrow it.
        if !self.fill(src, 2)? {
            return Err(bad_data("binary COPY ended without its trailer"));
        }
        let count = i16::from_be_bytes([self.buf[self.pos], self.buf[self.pos + 1]]);
        if count == -1 {
            self.pos += 2;
            // drain: nothing may follow the trailer
            if self.fill(src, 1)? {
                return Err(bad_data("data after the binary COPY trailer"));
            }
            return Ok(None);
        }
        if count as usize != COLUMNS {
            return Err(bad_data(
                "binary COPY row with an unexpected number of fields",
            ));
        }
        let mut spans = [(0usize, 0usize, false); COLUMNS];
        let mut at = 2usize;
        for span in spans.iter_mut() {
            if !self.fill(src, at + 4)? {
                return Err(bad_data("binary COPY ended mid-row"));
            }
            let p = self.pos + at;
            let len = i32::from_be_bytes([
                self.buf[p],
                self.buf[p + 1],
                self.buf[p + 2],
                self.buf[p + 3],
            ]);
            at += 4;
            if len < 0 {
                *span = (0, 0, false);
                continue;
            }
            let len = len as usize;
            if !self.fill(src, at + len)? {
                return Err(bad_data("binary COPY ended mid-row"));
            }
            *span = (at, len, true);
            at += len;
        }
        let base = self.pos;
        self.pos += at;
        let buf = &self.buf;
        Ok(Some(spans.map(|(off, len, present)| {
            present.then(|| &buf[base + off..base + off + len])
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_cover_every_seq_once() {
        assert_eq!(split((None, None), 10), vec![(i64::MIN, i64::MAX)]);
        assert_eq!(split((Some(1), Some(10)), 10), vec![(i64::MIN, i64::MAX)]);
        assert_eq!(
            split((Some(1), Some(11)), 10),
            vec![(i64::MIN, 10), (10, i64::MAX)]
        );
        let r = split((Some(1), Some(1_000_000)), 50_000);
        assert_eq!(r.len(), 20);
        assert_eq!(r[0], (i64::MIN, 50_000));
        assert_eq!(r[19], (950_000, i64::MAX));
        assert!(r.windows(2).all(|w| w[0].1 == w[1].0));
        // extreme bounds do not overflow
        let r = split((Some(i64::MIN), Some(i64::MAX)), i64::MAX);
        assert_eq!(r.first().map(|x| x.0), Some(i64::MIN));
        assert_eq!(r.last().map(|x| x.1), Some(i64::MAX));
    }

    fn range(first: i64, n: i64, prev: u8, last: u8) -> RangeOutcome {
        RangeOutcome {
            first: Some((first, 100 + first, vec![prev; 32])),
            last: Some((first + n - 1, vec![last; 32])),
            verified: n,
            failure: None,
        }
    }

    #[test]
    fn joining_ranges_reports_the_first_failure_in_chain_order() {
        let ok = vec![
            range(1, 5, 0, 1),
            RangeOutcome::default(),
            range(6, 5, 1, 2),
        ];
        assert_eq!(join(&ok), (10, None));

        // a gap at a boundary: reported at the next range's first row
        let gap = vec![range(1, 5, 0, 1), range(7, 5, 1, 2)];
        assert_eq!(
            join(&gap),
            (5, Some((107, "sequence jumps from 5 to 7".into())))
        );
        // the first range must start at 1
        assert_eq!(
            join(&[range(2, 5, 0, 1)]),
            (0, Some((102, "sequence jumps from 0 to 2".into())))
        );
        // a broken link at a boundary, before a failure inside the range
        let mut second = range(6, 2, 9, 2);
        second.failure = Some((200, "content does not match its hash".into()));
        assert_eq!(
            join(&[range(1, 5, 0, 1), second]),
            (
                5,
                Some((106, "prev_hash does not match the previous row".into()))
            )
        );
        // a failure inside a range, after its verified rows, hides later ranges
        let mut first = range(1, 3, 0, 1);
        first.failure = Some((104, "content does not match its hash".into()));
        first.last = None;
        assert_eq!(
            join(&[first, range(99, 1, 7, 7)]),
            (3, Some((104, "content does not match its hash".into())))
        );
    }

    /// A binary COPY stream of `rows`, as PostgreSQL writes it.
    fn stream(rows: &[Vec<Option<Vec<u8>>>]) -> Vec<u8> {
        let mut out = SIGNATURE.to_vec();
        out.extend_from_slice(&0u32.to_be_bytes());
        out.extend_from_slice(&4u32.to_be_bytes());
        out.extend_from_slice(b"ext!");
        for row in rows {
            out.extend_from_slice(&(row.len() as i16).to_be_bytes());
            for f in row {
                match f {
                    None => out.extend_from_slice(&(-1i32).to_be_bytes()),
                    Some(b) => {
                        out.extend_from_slice(&(b.len() as i32).to_be_bytes());
                        out.extend_from_slice(b);
                    }
                }
            }
        }
        out.extend_from_slice(&(-1i16).to_be_bytes());
        out
    }

    fn sample_row(seq: i64) -> Vec<Option<Vec<u8>>> {
        let int = |n: i64| Some(n.to_be_bytes().to_vec());
        let text = |s: &str| Some(s.as_bytes().to_vec());
        // 2026-11-22T10:00:00.123456Z in microseconds since 2000-01-01
        let ts = 1_795_341_600_123_456i64 - PG_EPOCH_US;
        vec![
            int(seq),
            Some(vec![0; 32]),
            Some(vec![1; 32]),
            int(7),
            int(ts),
            int(3),
            text("investigator"),
            text("create"),
            text("temperatures"),
            int(11),
            int(1),
            None,
            None,
            text(r#"{"a": "x\"y", "m": [1.5, true], "z": 1}"#),
            None,
            text("r1"),
            None,
        ]
    }

    /// Hands out `step` bytes at a time, as libpq hands out one message at a time.
    struct Chunked<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl std::io::Read for Chunked<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.fill_buf()?.len().min(buf.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.consume(n);
            Ok(n)
        }
    }

    impl BufRead for Chunked<'_> {
        fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
            Ok(&self.data[..self.step.min(self.data.len())])
        }
        fn consume(&mut self, amt: usize) {
            self.data = &self.data[amt..];
        }
    }

    #[test]
    fn binary_copy_rows_decode_to_the_documented_canonical_form() {
        let data = stream(&[sample_row(1), sample_row(2)]);
        for step in [1, 2, 3, 7, 64, data.len()] {
            let mut src = Chunked { data: &data, step };
            let mut reader = CopyReader::new();
            reader.header(&mut src).expect("header");
            let mut seqs = Vec::new();
            let mut buf = Vec::new();
            while let Some(row) = reader.next_row(&mut src).expect("row") {
                let d = decode(&row).expect("decode");
                seqs.push(d.fields.seq);
                if d.fields.seq == 1 {
                    write_canonical(&d.fields, &mut buf);
                    assert_eq!(
                        String::from_utf8_lossy(&buf),
                        r#"[1,7,"2026-11-22T10:00:00.123456Z",3,"investigator","create","temperatures",11,1,null,null,{"a": "x\"y", "m": [1.5, true], "z": 1},null,"r1",null]"#
                    );
                }
            }
            assert_eq!(seqs, vec![1, 2], "step {step}");
        }
    }

    #[test]
    fn truncated_or_malformed_copy_streams_are_errors() {
        let data = stream(&[sample_row(1)]);
        // cut anywhere before the trailer's end: an error, never a silent end
        for cut in 0..data.len() {
            let mut src = Chunked {
                data: &data[..cut],
                step: 5,
            };
            let mut reader = CopyReader::new();
            let result = reader.header(&mut src).and_then(|()| {
                while reader.next_row(&mut src)?.is_some() {}
                Ok(())
            });
            assert!(result.is_err(), "cut at {cut}");
        }
        // a wrong field count
        let mut row = sample_row(1);
        row.pop();
        let data = stream(&[row]);
        let mut src = Chunked {
            data: &data,
            step: 4096,
        };
        let mut reader = CopyReader::new();
        reader.header(&mut src).expect("header");
        assert!(reader.next_row(&mut src).is_err());
        // bad field contents
        let mut row = sample_row(1);
        row[3] = Some(vec![0; 4]); // id: not 8 bytes
        row[7] = Some(vec![0xff]); // action: not UTF-8
        let data = stream(&[row]);
        let mut src = Chunked {
            data: &data,
            step: 4096,
        };
        let mut reader = CopyReader::new();
        reader.header(&mut src).expect("header");
        let row = reader.next_row(&mut src).expect("framing is fine");
        assert!(row.is_some_and(|r| decode(&r).is_err()));
    }
}
