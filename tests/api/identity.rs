//! Identity and access: logins, lockout, tokens, sessions, admin API, and the
//! authorization matrix of every route.

use base64::Engine;
use casebook::auth::Role;
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{TestApp, PASSWORD};

/// One row of the authorization matrix: a route and the status each role gets.
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    /// the concrete path on the caller's own site's data ({own} placeholders filled by the fixture)
    pub own: &'static str,
    /// the same on another site's data; equal to `own` for routes without a site
    pub other: &'static str,
    /// the request body, given the site code of the side (FRA own, FRB other)
    pub body: fn(&str) -> Value,
    /// expected status for admin, investigator, monitor, sponsor on own site
    pub expect_own: [u16; 4],
    /// expected status on the other site
    pub expect_other: [u16; 4],
}

fn none(_: &str) -> Value {
    Value::Null
}

/// Every route of the API. A route in the OpenAPI document without a row here fails
/// `every_route_has_a_matrix_row`.
pub const ROUTES: &[Route] = &[
    Route {
        method: "GET",
        path: "/health/live",
        own: "/health/live",
        other: "/health/live",
        body: none,
        expect_own: [200; 4],
        expect_other: [200; 4],
    },
    Route {
        method: "GET",
        path: "/health/ready",
        own: "/health/ready",
        other: "/health/ready",
        body: none,
        expect_own: [200; 4],
        expect_other: [200; 4],
    },
    Route {
        method: "GET",
        path: "/metrics",
        own: "/metrics",
        other: "/metrics",
        body: none,
        expect_own: [200; 4],
        expect_other: [200; 4],
    },
    Route {
        method: "GET",
        path: "/api/v1/me",
        own: "/api/v1/me",
        other: "/api/v1/me",
        body: none,
        expect_own: [200; 4],
        expect_other: [200; 4],
    },
    Route {
        method: "GET",
        path: "/api/v1/study",
        own: "/api/v1/study",
        other: "/api/v1/study",
        body: none,
        expect_own: [200; 4],
        expect_other: [200; 4],
    },
    Route {
        method: "GET",
        path: "/api/v1/study/definition",
        own: "/api/v1/study/definition",
        other: "/api/v1/study/definition",
        body: none,
        expect_own: [200; 4],
        expect_other: [200; 4],
    },
    Route {
        method: "GET",
        path: "/api/v1/sites",
        own: "/api/v1/sites",
        other: "/api/v1/sites",
        body: none,
        expect_own: [200, 403, 403, 403],
        expect_other: [200, 403, 403, 403],
    },
    Route {
        method: "POST",
        path: "/api/v1/sites",
        own: "/api/v1/sites",
        other: "/api/v1/sites",
        body: |_| json!({"code": "NEW1", "name": "New", "country": "FR"}),
        expect_own: [201, 403, 403, 403],
        expect_other: [409, 403, 403, 403],
    },
    Route {
        method: "GET",
        path: "/api/v1/sites/{site_code}",
        own: "/api/v1/sites/FRA",
        other: "/api/v1/sites/FRB",
        body: none,
        expect_own: [200, 403, 403, 403],
        expect_other: [200, 403, 403, 403],
    },
    Route {
        method: "PATCH",
        path: "/api/v1/sites/{site_code}",
        own: "/api/v1/sites/FRA",
        other: "/api/v1/sites/FRB",
        body: |_| json!({"name": "Renamed"}),
        expect_own: [200, 403, 403, 403],
        expect_other: [200, 403, 403, 403],
    },
    Route {
        method: "GET",
        path: "/api/v1/users",
        own: "/api/v1/users",
        other: "/api/v1/users",
        body: none,
        expect_own: [200, 403, 403, 403],
        expect_other: [200, 403, 403, 403],
    },
    Route {
        method: "POST",
        path: "/api/v1/users",
        own: "/api/v1/users",
        other: "/api/v1/users",
        body: |_| json!({"email": "new.person@test.casebook", "name": "New", "role": "monitor", "password": "a fresh passphrase here", "site_codes": ["FRA"]}),
        expect_own: [201, 403, 403, 403],
        expect_other: [409, 403, 403, 403],
    },
    Route {
        method: "GET",
        path: "/api/v1/users/{user_id}",
        own: "/api/v1/users/1",
        other: "/api/v1/users/1",
        body: none,
        expect_own: [200, 403, 403, 403],
        expect_other: [200, 403, 403, 403],
    },
    Route {
        method: "PATCH",
        path: "/api/v1/users/{user_id}",
        own: "/api/v1/users/1",
        other: "/api/v1/users/1",
        body: |_| json!({"name": "Renamed"}),
        expect_own: [200, 403, 403, 403],
        expect_other: [200, 403, 403, 403],
    },
    Route {
        method: "GET",
        path: "/api/v1/audit",
        own: "/api/v1/audit?site=FRA",
        other: "/api/v1/audit?site=FRB",
        body: none,
        expect_own: [200, 403, 200, 403],
        expect_other: [200, 403, 200, 403],
    },
    Route {
        method: "GET",
        path: "/api/v1/audit/verify",
        own: "/api/v1/audit/verify",
        other: "/api/v1/audit/verify",
        body: none,
        expect_own: [200, 403, 403, 403],
        expect_other: [200, 403, 403, 403],
    },
    Route {
        method: "POST",
        path: "/api/v1/me/password",
        own: "/api/v1/me/password",
        other: "/api/v1/me/password",
        body: |_| json!({"current_password": "wrong wrong wrong", "new_password": "another long passphrase"}),
        expect_own: [422; 4],
        expect_other: [422; 4],
    },
    Route {
        method: "POST",
        path: "/api/v1/auth/logout",
        own: "/api/v1/auth/logout",
        other: "/api/v1/auth/logout",
        body: none,
        expect_own: [204; 4],
        expect_other: [204; 4],
    },
    // no token needed: a token is ignored, the body decides
    Route {
        method: "POST",
        path: "/api/v1/auth/login",
        own: "/api/v1/auth/login",
        other: "/api/v1/auth/login",
        body: |_| json!({"email": "nobody@test.casebook", "password": "whatever it is here"}),
        expect_own: [401; 4],
        expect_other: [401; 4],
    },
    Route {
        method: "POST",
        path: "/api/v1/auth/refresh",
        own: "/api/v1/auth/refresh",
        other: "/api/v1/auth/refresh",
        body: |_| json!({"refresh_token": "not-a-token"}),
        expect_own: [401; 4],
        expect_other: [401; 4],
    },
    // clinical data: FRA-001 is own-site, FRB-001 other-site (see `clinical_fixture`)
    Route {
        method: "GET",
        path: "/api/v1/subjects",
        own: "/api/v1/subjects?site=FRA",
        other: "/api/v1/subjects?site=FRB",
        body: none,
        expect_own: [200; 4],
        expect_other: [200; 4],
    },
    Route {
        method: "POST",
        path: "/api/v1/subjects",
        own: "/api/v1/subjects",
        other: "/api/v1/subjects",
        body: |site| crate::clinical::new_subject(site),
        expect_own: [403, 201, 403, 403],
        expect_other: [403, 404, 403, 403],
    },
    Route {
        method: "GET",
        path: "/api/v1/subjects/{subject_code}",
        own: "/api/v1/subjects/FRA-001",
        other: "/api/v1/subjects/FRB-001",
        body: none,
        expect_own: [200; 4],
        expect_other: [200, 404, 404, 200],
    },
    Route {
        method: "PATCH",
        path: "/api/v1/subjects/{subject_code}",
        own: "/api/v1/subjects/FRA-001",
        other: "/api/v1/subjects/FRB-001",
        body: |_| json!({"weight_kg": 20.5, "reason": "weighed again"}),
        expect_own: [403, 200, 403, 403],
        expect_other: [403, 404, 403, 403],
    },
    Route {
        method: "GET",
        path: "/api/v1/subjects/{subject_code}/casebook",
        own: "/api/v1/subjects/FRA-001/casebook",
        other: "/api/v1/subjects/FRB-001/casebook",
        body: none,
        expect_own: [200; 4],
        expect_other: [200, 404, 404, 200],
    },
    Route {
        method: "GET",
        path: "/api/v1/subjects/{subject_code}/consents",
        own: "/api/v1/subjects/FRA-001/consents",
        other: "/api/v1/subjects/FRB-001/consents",
        body: none,
        expect_own: [200; 4],
        expect_other: [200, 404, 404, 200],
    },
    Route {
        method: "POST",
        path: "/api/v1/subjects/{subject_code}/consents",
        own: "/api/v1/subjects/FRA-001/consents",
        other: "/api/v1/subjects/FRB-001/consents",
        body: |_| json!({"form_version": "2.0", "signed_on": "2026-10-02", "signer": "legal_representative", "representative_relationship": "father"}),
        expect_own: [403, 201, 403, 403],
        expect_other: [403, 404, 403, 403],
    },
    Route {
        method: "PATCH",
        path: "/api/v1/subjects/{subject_code}/consents/{id}",
        own: "/api/v1/subjects/FRA-001/consents/1",
        other: "/api/v1/subjects/FRB-001/consents/2",
        body: |_| json!({"assent": true, "reason": "assent form found in the source"}),
        expect_own: [403, 200, 403, 403],
        expect_other: [403, 404, 403, 403],
    },
    Route {
        method: "GET",
        path: "/api/v1/subjects/{subject_code}/injections",
        own: "/api/v1/subjects/FRA-001/injections",
        other: "/api/v1/subjects/FRB-001/injections",
        body: none,
        expect_own: [200; 4],
        expect_other: [200, 404, 404, 200],
    },
    Route {
        method: "POST",
        path: "/api/v1/subjects/{subject_code}/injections",
        own: "/api/v1/subjects/FRA-001/injections",
        other: "/api/v1/subjects/FRB-001/injections",
        body: |_| crate::clinical::injection(2, "2026-10-06T06:00:00Z", 40.0),
        expect_own: [403, 201, 403, 403],
        expect_other: [403, 404, 403, 403],
    },
    Route {
        method: "GET",
        path: "/api/v1/subjects/{subject_code}/injections/{id}",
        own: "/api/v1/subjects/FRA-001/injections/1",
        other: "/api/v1/subjects/FRB-001/injections/4",
        body: none,
        expect_own: [200; 4],
        expect_other: [200, 404, 404, 200],
    },
    Route {
        method: "PATCH",
        path: "/api/v1/subjects/{subject_code}/injections/{id}",
        own: "/api/v1/subjects/FRA-001/injections/1",
        other: "/api/v1/subjects/FRB-001/injections/4",
        body: |_| json!({"lot_number": "LOT-2", "reason": "transcription error"}),
        expect_own: [403, 200, 403, 403],
        expect_other: [403, 404, 403, 403],
    },
    Route {
        method: "GET",
        path: "/api/v1/subjects/{subject_code}/temperatures",
        own: "/api/v1/subjects/FRA-001/temperatures",
        other: "/api/v1/subjects/FRB-001/temperatures",
        body: none,
        expect_own: [200; 4],
        expect_other: [200, 404, 404, 200],
    },
    Route {
        method: "POST",
        path: "/api/v1/subjects/{subject_code}/temperatures",
        own: "/api/v1/subjects/FRA-001/temperatures",
        other: "/api/v1/subjects/FRB-001/temperatures",
        body: |_| json!({"measured_at": "2026-10-05T18:00:00Z", "celsius": 38.2, "method": "rectal"}),
        expect_own: [403, 201, 403, 403],
        expect_other: [403, 404, 403, 403],
    },
    Route {
        method: "GET",
        path: "/api/v1/subjects/{subject_code}/temperatures/{id}",
        own: "/api/v1/subjects/FRA-001/temperatures/2",
        other: "/api/v1/subjects/FRB-001/temperatures/5",
        body: none,
        expect_own: [200; 4],
        expect_other: [200, 404, 404, 200],
    },
    Route {
        method: "PATCH",
        path: "/api/v1/subjects/{subject_code}/temperatures/{id}",
        own: "/api/v1/subjects/FRA-001/temperatures/2",
        other: "/api/v1/subjects/FRB-001/temperatures/5",
        body: |_| json!({"celsius": 38.1, "reason": "misread"}),
        expect_own: [403, 200, 403, 403],
        expect_other: [403, 404, 403, 403],
    },
    Route {
        method: "DELETE",
        path: "/api/v1/subjects/{subject_code}/temperatures/{id}",
        own: "/api/v1/subjects/FRA-001/temperatures/2",
        other: "/api/v1/subjects/FRB-001/temperatures/5",
        body: |_| json!({"reason": "wrong patient"}),
        expect_own: [403, 200, 403, 403],
        expect_other: [403, 404, 403, 403],
    },
    // the day-2 injection the POST above entered (form record 9, after the fixture's eight):
    // day 1 cannot go while a later day counts from it
    Route {
        method: "DELETE",
        path: "/api/v1/subjects/{subject_code}/injections/{id}",
        own: "/api/v1/subjects/FRA-001/injections/9",
        other: "/api/v1/subjects/FRB-001/injections/4",
        body: |_| json!({"reason": "wrong patient"}),
        expect_own: [403, 200, 403, 403],
        expect_other: [403, 404, 403, 403],
    },
    Route {
        method: "GET",
        path: "/api/v1/subjects/{subject_code}/adverse-events",
        own: "/api/v1/subjects/FRA-001/adverse-events",
        other: "/api/v1/subjects/FRB-001/adverse-events",
        body: none,
        expect_own: [200; 4],
        expect_other: [200, 404, 404, 200],
    },
    Route {
        method: "POST",
        path: "/api/v1/subjects/{subject_code}/adverse-events",
        own: "/api/v1/subjects/FRA-001/adverse-events",
        other: "/api/v1/subjects/FRB-001/adverse-events",
        body: |_| crate::adverse_events::mild_event(),
        expect_own: [403, 201, 403, 403],
        expect_other: [403, 404, 403, 403],
    },
    Route {
        method: "GET",
        path: "/api/v1/subjects/{subject_code}/adverse-events/{id}",
        own: "/api/v1/subjects/FRA-001/adverse-events/3",
        other: "/api/v1/subjects/FRB-001/adverse-events/6",
        body: none,
        expect_own: [200; 4],
        expect_other: [200, 404, 404, 200],
    },
    Route {
        method: "PATCH",
        path: "/api/v1/subjects/{subject_code}/adverse-events/{id}",
        own: "/api/v1/subjects/FRA-001/adverse-events/3",
        other: "/api/v1/subjects/FRB-001/adverse-events/6",
        body: |_| json!({"grade": 2, "reason": "reassessed"}),
        expect_own: [403, 200, 403, 403],
        expect_other: [403, 404, 403, 403],
    },
    Route {
        method: "DELETE",
        path: "/api/v1/subjects/{subject_code}/adverse-events/{id}",
        own: "/api/v1/subjects/FRA-001/adverse-events/3",
        other: "/api/v1/subjects/FRB-001/adverse-events/6",
        body: |_| json!({"reason": "duplicate report"}),
        expect_own: [403, 200, 403, 403],
        expect_other: [403, 404, 403, 403],
    },
    Route {
        method: "GET",
        path: "/api/v1/subjects/{subject_code}/schedule",
        own: "/api/v1/subjects/FRA-001/schedule",
        other: "/api/v1/subjects/FRB-001/schedule",
        body: none,
        expect_own: [200; 4],
        expect_other: [200, 404, 404, 200],
    },
    Route {
        method: "GET",
        path: "/api/v1/subjects/{subject_code}/forms/{form}",
        own: "/api/v1/subjects/FRA-001/forms/echocardiography",
        other: "/api/v1/subjects/FRB-001/forms/echocardiography",
        body: none,
        expect_own: [200; 4],
        expect_other: [200, 404, 404, 200],
    },
    Route {
        method: "POST",
        path: "/api/v1/subjects/{subject_code}/forms/{form}",
        own: "/api/v1/subjects/FRA-001/forms/echocardiography",
        other: "/api/v1/subjects/FRB-001/forms/echocardiography",
        body: |_| {
            json!({"visit": "EOT", "values": {"performed_on": "2026-10-06", "lmca_z": "1.00", "lad_z": "1.00",
                         "rca_z": "1.00", "dilatation": false, "aneurysm": false}})
        },
        expect_own: [403, 201, 403, 403],
        expect_other: [403, 404, 403, 403],
    },
    // form records share one id space: the fixture's injections are 1 (FRA) and 4 (FRB),
    // its temperatures 2 and 5, its adverse events 3 and 6, its echocardiographies 7 and 8
    Route {
        method: "GET",
        path: "/api/v1/subjects/{subject_code}/forms/{form}/{id}",
        own: "/api/v1/subjects/FRA-001/forms/echocardiography/7",
        other: "/api/v1/subjects/FRB-001/forms/echocardiography/8",
        body: none,
        expect_own: [200; 4],
        expect_other: [200, 404, 404, 200],
    },
    Route {
        method: "PATCH",
        path: "/api/v1/subjects/{subject_code}/forms/{form}/{id}",
        own: "/api/v1/subjects/FRA-001/forms/echocardiography/7",
        other: "/api/v1/subjects/FRB-001/forms/echocardiography/8",
        body: |_| json!({"values": {"rca_z": "0.50"}, "reason": "remeasured"}),
        expect_own: [403, 200, 403, 403],
        expect_other: [403, 404, 403, 403],
    },
    // before the DELETE row below marks record 3 entered in error
    Route {
        method: "POST",
        path: "/api/v1/subjects/{subject_code}/forms/{form}/{id}/verify",
        own: "/api/v1/subjects/FRA-001/forms/echocardiography/7/verify",
        other: "/api/v1/subjects/FRB-001/forms/echocardiography/8/verify",
        body: none,
        expect_own: [403, 403, 200, 403],
        expect_other: [403, 403, 404, 403],
    },
    Route {
        method: "DELETE",
        path: "/api/v1/subjects/{subject_code}/forms/{form}/{id}",
        own: "/api/v1/subjects/FRA-001/forms/echocardiography/7",
        other: "/api/v1/subjects/FRB-001/forms/echocardiography/8",
        body: |_| json!({"reason": "wrong patient"}),
        expect_own: [403, 200, 403, 403],
        expect_other: [403, 404, 403, 403],
    },
    Route {
        method: "GET",
        path: "/api/v1/adverse-events",
        own: "/api/v1/adverse-events?site=FRA",
        other: "/api/v1/adverse-events?site=FRB",
        body: none,
        expect_own: [200; 4],
        expect_other: [200; 4],
    },
    Route {
        method: "GET",
        path: "/api/v1/safety/overdue",
        own: "/api/v1/safety/overdue",
        other: "/api/v1/safety/overdue",
        body: none,
        expect_own: [200, 403, 200, 200],
        expect_other: [200, 403, 200, 200],
    },
    Route {
        method: "GET",
        path: "/api/v1/sae-alerts",
        own: "/api/v1/sae-alerts",
        other: "/api/v1/sae-alerts",
        body: none,
        expect_own: [200, 403, 403, 200],
        expect_other: [200, 403, 403, 200],
    },
    Route {
        method: "GET",
        path: "/api/v1/exports/{form}.csv",
        own: "/api/v1/exports/temperatures.csv",
        other: "/api/v1/exports/temperatures.csv",
        body: none,
        expect_own: [200, 403, 403, 200],
        expect_other: [200, 403, 403, 200],
    },
    Route {
        method: "GET",
        path: "/api/v1/exports/odm.xml",
        own: "/api/v1/exports/odm.xml",
        other: "/api/v1/exports/odm.xml",
        body: none,
        expect_own: [200, 403, 403, 200],
        expect_other: [200, 403, 403, 200],
    },
    Route {
        method: "GET",
        path: "/api/v1/exports/sdtm/{domain}.csv",
        own: "/api/v1/exports/sdtm/vs.csv",
        other: "/api/v1/exports/sdtm/vs.csv",
        body: none,
        expect_own: [200, 403, 403, 200],
        expect_other: [200, 403, 403, 200],
    },
    Route {
        method: "GET",
        path: "/api/v1/exports/sdtm/{domain}.xpt",
        own: "/api/v1/exports/sdtm/dm.xpt",
        other: "/api/v1/exports/sdtm/dm.xpt",
        body: none,
        expect_own: [200, 403, 403, 200],
        expect_other: [200, 403, 403, 200],
    },
    Route {
        method: "GET",
        path: "/api/v1/exports/sdtm/{domain}.json",
        own: "/api/v1/exports/sdtm/ae.json",
        other: "/api/v1/exports/sdtm/ae.json",
        body: none,
        expect_own: [200, 403, 403, 200],
        expect_other: [200, 403, 403, 200],
    },
    Route {
        method: "GET",
        path: "/api/v1/exports/sdtm/define.xml",
        own: "/api/v1/exports/sdtm/define.xml",
        other: "/api/v1/exports/sdtm/define.xml",
        body: none,
        expect_own: [200, 403, 403, 200],
        expect_other: [200, 403, 403, 200],
    },
    // monitoring: queries 1 (FRA-001) and 2 (FRB-001) exist, raised on consents 1 and 2
    Route {
        method: "GET",
        path: "/api/v1/queries",
        own: "/api/v1/queries?site=FRA",
        other: "/api/v1/queries?site=FRB",
        body: none,
        expect_own: [200, 200, 200, 403],
        expect_other: [200, 200, 200, 403],
    },
    Route {
        method: "GET",
        path: "/api/v1/queries/counts",
        own: "/api/v1/queries/counts",
        other: "/api/v1/queries/counts",
        body: none,
        expect_own: [200, 200, 200, 403],
        expect_other: [200, 200, 200, 403],
    },
    Route {
        method: "POST",
        path: "/api/v1/queries",
        own: "/api/v1/queries",
        other: "/api/v1/queries",
        body: |site| json!({"record_type": "consents", "record_id": if site == "FRA" { 1 } else { 2 }, "field": "signed_on", "text": "Please check the date against the source."}),
        expect_own: [403, 403, 201, 403],
        expect_other: [403, 403, 404, 403],
    },
    Route {
        method: "GET",
        path: "/api/v1/queries/{id}",
        own: "/api/v1/queries/1",
        other: "/api/v1/queries/2",
        body: none,
        expect_own: [200, 200, 200, 403],
        expect_other: [200, 404, 404, 403],
    },
    Route {
        method: "POST",
        path: "/api/v1/queries/{id}/answer",
        own: "/api/v1/queries/1/answer",
        other: "/api/v1/queries/2/answer",
        body: |_| json!({"text": "Checked: correct."}),
        expect_own: [403, 200, 403, 403],
        expect_other: [403, 404, 403, 403],
    },
    Route {
        method: "POST",
        path: "/api/v1/queries/{id}/close",
        own: "/api/v1/queries/1/close",
        other: "/api/v1/queries/2/close",
        body: |_| json!({"text": "Thank you."}),
        expect_own: [403, 403, 200, 403],
        expect_other: [403, 403, 404, 403],
    },
    Route {
        method: "POST",
        path: "/api/v1/queries/{id}/reopen",
        own: "/api/v1/queries/1/reopen",
        other: "/api/v1/queries/2/reopen",
        body: |_| json!({"text": "The source says otherwise."}),
        expect_own: [403, 403, 200, 403],
        expect_other: [403, 403, 404, 403],
    },
    Route {
        method: "POST",
        path: "/api/v1/subjects/{subject_code}/{form}/{id}/verify",
        own: "/api/v1/subjects/FRA-001/consents/1/verify",
        other: "/api/v1/subjects/FRB-001/consents/2/verify",
        body: none,
        expect_own: [403, 403, 200, 403],
        expect_other: [403, 403, 404, 403],
    },
    Route {
        method: "GET",
        path: "/api/v1/subjects/{subject_code}/signatures",
        own: "/api/v1/subjects/FRA-001/signatures",
        other: "/api/v1/subjects/FRB-001/signatures",
        body: none,
        expect_own: [200; 4],
        expect_other: [200, 404, 404, 200],
    },
    // the fixture has no signature: every reader gets as far as looking for it
    Route {
        method: "GET",
        path: "/api/v1/subjects/{subject_code}/signatures/{signature_id}/check",
        own: "/api/v1/subjects/FRA-001/signatures/1/check",
        other: "/api/v1/subjects/FRB-001/signatures/1/check",
        body: none,
        expect_own: [404; 4],
        expect_other: [404; 4],
    },
    // open queries on FRA-001: the investigator gets as far as the rule (422)
    Route {
        method: "POST",
        path: "/api/v1/subjects/{subject_code}/signatures",
        own: "/api/v1/subjects/FRA-001/signatures",
        other: "/api/v1/subjects/FRB-001/signatures",
        body: |_| json!({"password": crate::helpers::PASSWORD, "meaning": "approval"}),
        expect_own: [403, 422, 403, 403],
        expect_other: [403, 404, 403, 403],
    },
    Route {
        method: "GET",
        path: "/api/v1/locks",
        own: "/api/v1/locks",
        other: "/api/v1/locks",
        body: none,
        expect_own: [200, 403, 403, 403],
        expect_other: [200, 403, 403, 403],
    },
    Route {
        method: "POST",
        path: "/api/v1/locks",
        own: "/api/v1/locks",
        other: "/api/v1/locks",
        body: |site| json!({"scope": "subject", "target": if site == "FRA" { "FRA-002" } else { "FRB-001" }, "reason": "interim analysis"}),
        expect_own: [201, 403, 403, 403],
        expect_other: [201, 403, 403, 403],
    },
    Route {
        method: "DELETE",
        path: "/api/v1/locks/{id}",
        own: "/api/v1/locks/1",
        other: "/api/v1/locks/2",
        body: |_| json!({"reason": "analysis done"}),
        expect_own: [200, 403, 403, 403],
        expect_other: [200, 403, 403, 403],
    },
    Route {
        method: "POST",
        path: "/api/v1/subjects/{subject_code}/consents/{id}/withdraw",
        own: "/api/v1/subjects/FRA-001/consents/1/withdraw",
        other: "/api/v1/subjects/FRB-001/consents/2/withdraw",
        body: |_| json!({"withdrawn_on": "2026-11-01", "scope": "all", "reason": "parents' decision"}),
        expect_own: [403, 200, 403, 403],
        expect_other: [403, 404, 403, 403],
    },
];

const ROLES: [Role; 4] = [
    Role::Admin,
    Role::Investigator,
    Role::Monitor,
    Role::Sponsor,
];

#[actix_web::test]
async fn authorization_matrix() {
    let app = TestApp::spawn().await;
    app.site("FRA", "Europe/Paris");
    app.site("FRB", "Europe/Paris");
    crate::clinical::matrix_fixture(&app).await;
    crate::forms::matrix_records(&app).await;
    for route in ROUTES {
        for (side, path, expected) in [
            ("own", route.own, route.expect_own),
            ("other", route.other, route.expect_other),
        ] {
            for (i, role) in ROLES.iter().enumerate() {
                // a fresh caller per cell: logout and password rows must not affect the next
                let token = app.token(*role, &["FRA"]).await;
                let body = (route.body)(if side == "own" { "FRA" } else { "FRB" });
                let method = Method::from_bytes(route.method.as_bytes()).unwrap();
                let body = if body.is_null() { None } else { Some(&body) };
                // every record of the fixture is at version 1 when first changed
                let headers: &[(&str, &str)] = if route.method == "PATCH" {
                    &[("if-match", "\"1\"")]
                } else {
                    &[]
                };
                let r = app.request(method, path, Some(&token), body, headers).await;
                assert_eq!(
                    r.status.as_u16(),
                    expected[i],
                    "{} {} ({side}) as {}: {}",
                    route.method,
                    path,
                    role.as_str(),
                    r.text
                );
            }
        }
    }
}

#[actix_web::test]
async fn every_route_has_a_matrix_row() {
    let app = TestApp::spawn().await;
    let r = app
        .request(Method::GET, "/api/v1/openapi.json", None, None, &[])
        .await;
    let paths = r.body["paths"].as_object().unwrap();
    for (path, item) in paths {
        for method in item.as_object().unwrap().keys() {
            let m = method.to_uppercase();
            assert!(
                ROUTES.iter().any(|row| row.path == path && row.method == m),
                "{m} {path} has no row in the authorization matrix"
            );
        }
    }
}

#[actix_web::test]
async fn a_protected_route_without_token_is_401_with_www_authenticate() {
    let app = TestApp::spawn().await;
    let r = app
        .request(Method::GET, "/api/v1/me", None, None, &[])
        .await;
    r.assert_problem(401, None);
    assert_eq!(
        r.headers["www-authenticate"],
        "Bearer error=\"invalid_token\""
    );
    let r = app
        .request(Method::GET, "/api/v1/me?access_token=abc", None, None, &[])
        .await;
    assert_eq!(r.status, 401, "tokens in the query string are not accepted");
}

fn b64(v: &Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

fn split(token: &str) -> (Value, Value, String) {
    let parts: Vec<&str> = token.split('.').collect();
    let dec = |s: &str| -> Value {
        serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(s)
                .unwrap(),
        )
        .unwrap()
    };
    (dec(parts[0]), dec(parts[1]), parts[2].to_owned())
}

fn sign(header: &Value, claims: &Value, secret: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let input = format!("{}.{}", b64(header), b64(claims));
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret).unwrap();
    mac.update(input.as_bytes());
    let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{input}.{sig}")
}

#[actix_web::test]
async fn forged_and_stale_tokens_are_refused() {
    let app = TestApp::spawn().await;
    let token = app.token(Role::Investigator, &[]).await;
    let me = |t: String| {
        let app = &app;
        async move {
            app.request(Method::GET, "/api/v1/me", Some(&t), None, &[])
                .await
                .status
                .as_u16()
        }
    };
    assert_eq!(me(token.clone()).await, 200, "the genuine token works");
    let (header, claims, _) = split(&token);
    let secret = app.settings.jwt.secret.as_bytes().to_vec();

    // re-signed with the right key: accepted (proves the forging helper is faithful)
    assert_eq!(me(sign(&header, &claims, &secret)).await, 200);
    for alg in ["none", "None", "NONE", "nOnE"] {
        let h = json!({"alg": alg, "typ": "at+jwt"});
        assert_eq!(
            me(format!("{}.{}.", b64(&h), b64(&claims))).await,
            401,
            "alg {alg}"
        );
    }
    let mut tampered = claims.clone();
    tampered["sub"] = json!("1");
    let (_, _, sig) = split(&token);
    assert_eq!(
        me(format!("{}.{}.{sig}", b64(&header), b64(&tampered))).await,
        401,
        "tampered payload"
    );
    assert_eq!(
        me(sign(
            &header,
            &claims,
            b"another secret of thirty-two bytes!!"
        ))
        .await,
        401,
        "wrong key"
    );
    assert_eq!(
        me(sign(
            &json!({"alg": "HS512", "typ": "at+jwt"}),
            &claims,
            &secret
        ))
        .await,
        401,
        "HS512"
    );
    let now = chrono::Utc::now().timestamp();
    let mut expired = claims.clone();
    expired["exp"] = json!(now - 6 - i64::try_from(app.settings.jwt.leeway_secs).unwrap());
    assert_eq!(
        me(sign(&header, &expired, &secret)).await,
        401,
        "expired beyond leeway"
    );
    let mut aud = claims.clone();
    aud["aud"] = json!("someone-else");
    assert_eq!(
        me(sign(&header, &aud, &secret)).await,
        401,
        "wrong audience"
    );
    let mut no_aud = claims.clone();
    no_aud.as_object_mut().unwrap().remove("aud");
    assert_eq!(
        me(sign(&header, &no_aud, &secret)).await,
        401,
        "missing audience"
    );
    let mut no_iss = claims.clone();
    no_iss.as_object_mut().unwrap().remove("iss");
    assert_eq!(
        me(sign(&header, &no_iss, &secret)).await,
        401,
        "missing issuer"
    );
    let mut future = claims.clone();
    future["nbf"] = json!(now + 600);
    assert_eq!(
        me(sign(&header, &future, &secret)).await,
        401,
        "not yet valid"
    );
    let mut old_version = claims.clone();
    old_version["ver"] = json!(claims["ver"].as_i64().unwrap() - 1);
    assert_eq!(
        me(sign(&header, &old_version, &secret)).await,
        401,
        "older token version"
    );
    assert_eq!(
        me(sign(
            &json!({"alg": "HS256", "typ": "JWT"}),
            &claims,
            &secret
        ))
        .await,
        401,
        "not an access token type"
    );
    let mut kid = header.clone();
    kid["kid"] = json!("../../dev/null");
    assert_eq!(
        me(sign(&kid, &claims, &secret)).await,
        200,
        "kid is ignored, never followed"
    );
    assert_eq!(me("x".repeat(10_000)).await, 401);
}

async fn login_raw(app: &TestApp, email: &str, password: &str) -> crate::helpers::Resp {
    app.request(
        Method::POST,
        "/api/v1/auth/login",
        None,
        Some(&json!({"email": email, "password": password})),
        &[],
    )
    .await
}

#[actix_web::test]
async fn login_failures_are_generic_and_audited() {
    let app = TestApp::spawn().await;
    let email = app.user(Role::Investigator, &[]);
    let wrong = login_raw(&app, &email, "not the password at all").await;
    let unknown = login_raw(&app, "nobody@test.casebook", "not the password at all").await;
    wrong.assert_problem(401, None);
    unknown.assert_problem(401, None);
    assert_eq!(
        wrong.text, unknown.text,
        "same body for unknown user and wrong password"
    );
    assert_eq!(
        app.count("SELECT count(*) AS n FROM audit_log WHERE action = 'login_failed' AND actor_id IS NOT NULL"),
        1
    );
    assert_eq!(
        app.count("SELECT count(*) AS n FROM audit_log WHERE action = 'login_failed' AND actor_id IS NULL"),
        1
    );
    // e-mail is case-insensitive, the password is not
    let ok = login_raw(&app, &email.to_uppercase(), PASSWORD).await;
    assert_eq!(ok.status, 200);
    let case = login_raw(&app, &email, &PASSWORD.to_uppercase()).await;
    assert_eq!(case.status, 401);
    let trimmed = login_raw(&app, &email, &PASSWORD[..PASSWORD.len() - 1]).await;
    assert_eq!(trimmed.status, 401);
    let huge = login_raw(&app, &email, &"p".repeat(10_000)).await;
    huge.assert_problem(422, Some("password"));
}

#[actix_web::test]
async fn five_failures_lock_the_account_for_everyone() {
    let app = TestApp::spawn().await;
    let email = app.user(Role::Investigator, &[]);
    for _ in 0..5 {
        assert_eq!(
            login_raw(&app, &email, "a wrong password here")
                .await
                .status,
            401
        );
    }
    let locked_right = login_raw(&app, &email, PASSWORD).await;
    let locked_wrong = login_raw(&app, &email, "a wrong password here").await;
    // answered as a wrong password is, so that a lock tells nobody the account exists
    locked_right.assert_problem(401, None);
    assert_eq!(
        locked_right.text, locked_wrong.text,
        "no hint whether the password was right"
    );
    assert!(locked_right.headers.get("retry-after").is_none());
    assert_eq!(
        app.count(
            "SELECT count(*) AS n FROM users WHERE locked_until > now() + interval '14 minutes'"
        ),
        1
    );
    assert_eq!(
        app.count("SELECT count(*) AS n FROM audit_log WHERE action = 'login_failed'"),
        7
    );
    // the lock ends: move it into the past as the clock would
    let mut c = app.conn();
    diesel::RunQueryDsl::execute(
        diesel::sql_query("UPDATE users SET locked_until = now() - interval '1 second', first_failed_at = now() - interval '16 minutes'"),
        &mut c,
    )
    .unwrap();
    assert_eq!(login_raw(&app, &email, PASSWORD).await.status, 200);
}

#[actix_web::test]
async fn unknown_email_login_is_not_measurably_faster() {
    // production-grade hashing: the cheap test parameters would let database work dominate
    let app = TestApp::spawn_with(&[
        ("CASEBOOK__PASSWORD__M_COST_KIB", "19456"),
        ("CASEBOOK__PASSWORD__T_COST", "2"),
    ])
    .await;
    let email = app.user(Role::Monitor, &[]);
    let mut known = Vec::new();
    let mut unknown = Vec::new();
    for i in 0..20 {
        // interleaved so that machine noise hits both alike; a fresh account each 4 tries
        // would dodge the lock, but 20 failures lock it: reset the counter instead
        let t = std::time::Instant::now();
        login_raw(&app, &email, "a wrong password here").await;
        known.push(t.elapsed());
        let t = std::time::Instant::now();
        login_raw(
            &app,
            &format!("ghost{i}@test.casebook"),
            "a wrong password here",
        )
        .await;
        unknown.push(t.elapsed());
        let mut c = app.conn();
        diesel::RunQueryDsl::execute(
            diesel::sql_query(
                "UPDATE users SET failed_logins = 0, first_failed_at = NULL, locked_until = NULL",
            ),
            &mut c,
        )
        .unwrap();
    }
    known.sort();
    unknown.sort();
    let (k, u) = (known[10].as_secs_f64(), unknown[10].as_secs_f64());
    assert!(u > k * 0.7, "unknown median {u:.4}s vs known {k:.4}s");
}

async fn login_pair(app: &TestApp, email: &str) -> (String, String) {
    let r = login_raw(app, email, PASSWORD).await;
    assert_eq!(r.status, 200);
    (
        r.body["access_token"].as_str().unwrap().to_owned(),
        r.body["refresh_token"].as_str().unwrap().to_owned(),
    )
}

async fn refresh(app: &TestApp, token: &str) -> crate::helpers::Resp {
    app.request(
        Method::POST,
        "/api/v1/auth/refresh",
        None,
        Some(&json!({"refresh_token": token})),
        &[],
    )
    .await
}

#[actix_web::test]
async fn refresh_rotates_and_reuse_revokes_the_family() {
    let app = TestApp::spawn().await;
    let email = app.user(Role::Monitor, &[]);
    let (_, r1) = login_pair(&app, &email).await;
    let second = refresh(&app, &r1).await;
    assert_eq!(second.status, 200);
    let r2 = second.body["refresh_token"].as_str().unwrap().to_owned();
    let a2 = second.body["access_token"].as_str().unwrap().to_owned();
    assert_ne!(r1, r2);
    assert_eq!(app.get("/api/v1/me", &a2).await.status, 200);
    // r1 is spent: presenting it again is theft or replay
    refresh(&app, &r1).await.assert_problem(401, None);
    refresh(&app, &r2).await.assert_problem(401, None);
    assert_eq!(
        app.get("/api/v1/me", &a2).await.status,
        401,
        "the family's access tokens die too"
    );
    assert_eq!(
        app.count("SELECT count(*) AS n FROM audit_log WHERE action = 'refresh_reuse'"),
        1
    );
    assert_eq!(
        app.count("SELECT count(*) AS n FROM audit_log WHERE action = 'refresh'"),
        1
    );
    assert_eq!(
        app.count("SELECT count(*) AS n FROM refresh_tokens WHERE length(token_hash) = 32"),
        app.count("SELECT count(*) AS n FROM refresh_tokens"),
        "only hashes are stored"
    );
    // an access token is not a refresh token
    refresh(&app, &a2).await.assert_problem(401, None);
}

#[actix_web::test]
async fn logout_ends_the_session() {
    let app = TestApp::spawn().await;
    let email = app.user(Role::Sponsor, &[]);
    let (access, refresh_token) = login_pair(&app, &email).await;
    let (other_access, _) = login_pair(&app, &email).await;
    let r = app
        .request(
            Method::POST,
            "/api/v1/auth/logout",
            Some(&access),
            None,
            &[],
        )
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(app.get("/api/v1/me", &access).await.status, 401);
    refresh(&app, &refresh_token)
        .await
        .assert_problem(401, None);
    assert_eq!(
        app.get("/api/v1/me", &other_access).await.status,
        200,
        "other sessions live on"
    );
    assert_eq!(
        app.count("SELECT count(*) AS n FROM audit_log WHERE action = 'logout'"),
        1
    );
}

#[actix_web::test]
async fn deactivation_and_access_changes_take_effect_at_once() {
    let app = TestApp::spawn().await;
    app.site("FRA", "Europe/Paris");
    app.site("FRB", "Europe/Paris");
    let admin = app.token(Role::Admin, &[]).await;
    let email = app.user(Role::Investigator, &["FRA"]);
    let (inv, _) = login_pair(&app, &email).await;
    let id = app.get("/api/v1/me", &inv).await.body["id"]
        .as_i64()
        .unwrap();

    let r = app
        .patch(
            &format!("/api/v1/users/{id}"),
            &admin,
            0,
            &json!({"name": "Renamed Person"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        app.get("/api/v1/me", &inv).await.status,
        200,
        "a rename does not end sessions"
    );

    let r = app
        .patch(
            &format!("/api/v1/users/{id}"),
            &admin,
            0,
            &json!({"site_codes": ["FRA", "FRB"]}),
        )
        .await;
    assert_eq!(r.body["site_codes"], json!(["FRA", "FRB"]));
    assert_eq!(
        app.get("/api/v1/me", &inv).await.status,
        401,
        "site change bumps the token version"
    );

    let (inv, _) = login_pair(&app, &email).await;
    let r = app
        .patch(
            &format!("/api/v1/users/{id}"),
            &admin,
            0,
            &json!({"active": false}),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(app.get("/api/v1/me", &inv).await.status, 401);
    assert_eq!(login_raw(&app, &email, PASSWORD).await.status, 401);

    let audit = app
        .get(
            &format!("/api/v1/audit?table=users&record_id={id}&action=user_change"),
            &admin,
        )
        .await;
    let items = audit.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 3);
    assert_eq!(items[2]["old_values"], json!({"active": true}));
    assert_eq!(
        items[2]["new_values"],
        json!({"active": false, "sessions_revoked": 1})
    );
    assert!(
        !audit.text.contains("argon2"),
        "no password hash in the audit trail"
    );
}

#[actix_web::test]
async fn admin_creates_users_with_policy_and_unique_emails() {
    let app = TestApp::spawn().await;
    app.site("FRA", "Europe/Paris");
    let admin = app.token(Role::Admin, &[]).await;
    let body = |email: &str, pw: &str| json!({"email": email, "name": "Nina Nurse", "role": "investigator", "password": pw, "site_codes": ["FRA"]});
    app.post(
        "/api/v1/users",
        &admin,
        &body("nina@site.fr", "fourteen chars"),
    )
    .await
    .assert_problem(422, Some("password"));
    app.post(
        "/api/v1/users",
        &admin,
        &body("nina@site.fr", "passwordpassword"),
    )
    .await
    .assert_problem(422, Some("password"));
    app.post("/api/v1/users", &admin, &json!({"email": "x@site.fr", "name": "X", "role": "investigator", "password": "a fine passphrase", "site_codes": ["NOPE"]}))
        .await
        .assert_problem(422, Some("site_codes"));
    app.post("/api/v1/users", &admin, &json!({"email": "x@site.fr", "name": "X", "role": "wizard", "password": "a fine passphrase"}))
        .await
        .assert_problem(422, Some("role"));
    assert_eq!(
        app.count("SELECT count(*) AS n FROM users WHERE email LIKE '%site.fr'"),
        0,
        "nothing written"
    );
    let r = app
        .post(
            "/api/v1/users",
            &admin,
            &body("nina@site.fr", "fifteen chars!!"),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["site_codes"], json!(["FRA"]));
    assert!(r.body.get("password_hash").is_none());
    app.post(
        "/api/v1/users",
        &admin,
        &body("NINA@site.fr", "fifteen chars!!"),
    )
    .await
    .assert_problem(409, None);
    let hashes =
        app.count("SELECT count(*) AS n FROM users WHERE password_hash LIKE '$argon2id$v=19$%'");
    assert_eq!(hashes, app.count("SELECT count(*) AS n FROM users"));
    let id = r.body["id"].as_i64().unwrap();
    assert_eq!(
        app.count(&format!("SELECT count(*) AS n FROM audit_log WHERE entity_table = 'users' AND record_id = {id} AND action = 'create' AND new_values->>'email' = 'nina@site.fr' AND NOT new_values ? 'password'")),
        1
    );
}

#[actix_web::test]
async fn password_change_needs_the_current_one_and_ends_other_sessions() {
    let app = TestApp::spawn().await;
    let email = app.user(Role::Monitor, &[]);
    let (a1, _) = login_pair(&app, &email).await;
    let (a2, r2) = login_pair(&app, &email).await;
    app.post(
        "/api/v1/me/password",
        &a1,
        &json!({"current_password": "not my password!", "new_password": "a brand new passphrase"}),
    )
    .await
    .assert_problem(422, Some("current_password"));
    app.post(
        "/api/v1/me/password",
        &a1,
        &json!({"current_password": PASSWORD, "new_password": "short"}),
    )
    .await
    .assert_problem(422, Some("new_password"));
    let r = app
        .post(
            "/api/v1/me/password",
            &a1,
            &json!({"current_password": PASSWORD, "new_password": "a brand new passphrase"}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert_eq!(app.get("/api/v1/me", &a2).await.status, 401);
    refresh(&app, &r2).await.assert_problem(401, None);
    assert_eq!(
        login_raw(&app, &email, "a brand new passphrase")
            .await
            .status,
        200
    );
}

#[actix_web::test]
async fn rehash_on_login_when_parameters_change() {
    let app = TestApp::spawn().await;
    let email = app.user(Role::Sponsor, &[]);
    let weak = casebook::auth::password::Hasher::new(&casebook::config::PasswordSettings {
        m_cost_kib: 512,
        t_cost: 1,
        p_cost: 1,
        hashing_threads: None,
    })
    .unwrap()
    .hash(PASSWORD)
    .unwrap();
    let mut c = app.conn();
    diesel::RunQueryDsl::execute(
        diesel::sql_query("UPDATE users SET password_hash = $1")
            .bind::<diesel::sql_types::Text, _>(&weak),
        &mut c,
    )
    .unwrap();
    assert_eq!(login_raw(&app, &email, PASSWORD).await.status, 200);
    let m = app.settings.password.m_cost_kib;
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) AS n FROM users WHERE password_hash LIKE '$argon2id$v=19$m={m},%'"
        )),
        1
    );
}

#[actix_web::test]
async fn sites_are_created_validated_and_audited() {
    let app = TestApp::spawn().await;
    let admin = app.token(Role::Admin, &[]).await;
    app.post(
        "/api/v1/sites",
        &admin,
        &json!({"code": "fr-1", "name": "X", "country": "France", "time_zone": "Mars/Olympus"}),
    )
    .await
    .assert_problem(422, Some("time_zone"));
    assert_eq!(app.count("SELECT count(*) AS n FROM sites"), 0);
    let r = app
        .post("/api/v1/sites", &admin, &json!({"code": "FR09", "name": "CHU de Nantes", "country": "FR", "time_zone": "Europe/Paris"}))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    app.post(
        "/api/v1/sites",
        &admin,
        &json!({"code": "FR09", "name": "Again", "country": "FR"}),
    )
    .await
    .assert_problem(409, None);
    let r = app
        .patch("/api/v1/sites/FR09", &admin, 0, &json!({"active": false}))
        .await;
    assert_eq!(r.body["active"], json!(false));
    let audit = app.get("/api/v1/audit?table=sites", &admin).await;
    let items = audit.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[1]["old_values"], json!({"active": true}));
    assert_eq!(items[1]["new_values"], json!({"active": false}));
    assert_eq!(app.get("/api/v1/sites/NOPE", &admin).await.status, 404);
}
