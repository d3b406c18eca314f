//! Typed values and the trial's rules. No I/O here: no database, no HTTP.

pub mod consent;
pub mod dosing;
pub mod email;
pub mod endpoints;
pub mod field_error;
pub mod partial_date;
pub mod protocol;
pub mod sae;
pub mod study;
pub mod text;
pub mod time;
pub mod values;

pub use field_error::FieldError;
