//! Units of work shared by the HTTP API and the command line (each runs in the caller's
//! transaction and records its audit row there).

pub mod deletion;
pub mod demo;
pub mod form_entry;
pub mod form_records;
mod form_rules;
pub mod guard;
pub mod idempotency;
pub mod queries;
pub mod sae;
pub mod study;
pub mod users;
