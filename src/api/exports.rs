//! Export endpoints (sponsor and admin).

use actix_web::web;

pub fn routes(_cfg: &mut web::ServiceConfig) {}
