//! The audit trail: one writer called by every write path inside its transaction, a sealer
//! that chains committed rows, and a verifier.
//!
//! Why a sealer: chaining inside each write transaction needs the previous row's hash, i.e.
//! one global lock held until commit, which lets only one commit happen at a time. Writers
//! here only insert; a single sealer (advisory lock) appends committed rows to `audit_chain`
//! in a sequence of its own. The chain order is the seal order.

mod chain;
mod verify;
mod writer;

pub use chain::{canonical_bytes, seal_pending, AuditRow, SEALER_LOCK};
pub use verify::{verify, verify_in_ranges, verify_parallel, ChainReport};
pub use writer::{audit_view, diff, record, Actor, AuditEvent, RequestMeta};
