//! Casebook: an electronic data-capture backend for multicenter anakinra trials.
//!
//! Data flows one way: HTTP (`api`) parses requests into domain values (`domain`), checks
//! policy (`auth`), and runs one transaction that writes the data and its audit row
//! (`db`, `audit`) together.

pub mod api;
pub mod audit;
pub mod auth;
pub mod config;
pub mod db;
pub mod domain;
pub mod error;
pub mod export;
pub mod schema;
pub mod services;
pub mod startup;
pub mod state;
pub mod telemetry;
