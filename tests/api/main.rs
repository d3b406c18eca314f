//! Black-box tests through HTTP against a real PostgreSQL database per test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod helpers;

mod adverse_event_records;
mod adverse_events;
mod audit_trail;
mod clinical;
mod dataset_json;
mod endpoints;
mod exports;
mod form_entry;
mod form_exports;
mod form_parity;
mod form_rules;
mod forms;
mod foundation;
mod hardening_auth;
mod hardening_clinical;
mod hardening_data;
mod identity;
mod injection_records;
mod monitoring;
mod monitoring_forms;
mod schedule;
mod sdtm;
mod seed;
mod study_definition;
mod study_versions;
mod temperature_records;
