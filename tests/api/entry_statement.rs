//! The one statement that checks and writes a new temperature (src/db/temperature_entry.rs)
//! must refuse everything the step-by-step rules refuse: each case below breaks one rule,
//! and the statement must then write nothing, neither the reading nor an audit row. The
//! answers the client sees in those cases are tested through HTTP elsewhere (clinical.rs).

use bigdecimal::BigDecimal;
use casebook::auth::{roles_with_own_sites, Permission, Role};
use casebook::db::temperature_entry::{enter_alone, CheckedTemperature};
use chrono::{DateTime, SubsecRound, Utc};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Integer};
use serde_json::json;

use crate::clinical::enrolled;
use crate::helpers::TestApp;

#[derive(QueryableByName)]
struct Identity {
    #[diesel(sql_type = BigInt)]
    user_id: i64,
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    session: uuid::Uuid,
    #[diesel(sql_type = Integer)]
    token_version: i32,
}

/// The live session of the investigator assigned to `site`.
fn identity(conn: &mut PgConnection, site: &str) -> Identity {
    diesel::sql_query(
        "SELECT u.id AS user_id, s.id AS session, u.token_version FROM users u \
         JOIN sessions s ON s.user_id = u.id AND s.revoked_at IS NULL \
         JOIN user_sites us ON us.user_id = u.id JOIN sites st ON st.id = us.site_id \
         WHERE u.role = 'investigator' AND st.code = $1",
    )
    .bind::<diesel::sql_types::Text, _>(site)
    .get_result(conn)
    .unwrap()
}

fn at(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

fn reading(who: &Identity, code: &str, measured_at: &str) -> CheckedTemperature {
    let now = Utc::now().trunc_subsecs(6);
    CheckedTemperature {
        user_id: who.user_id,
        session: who.session,
        token_version: who.token_version,
        subject_code: code.to_owned(),
        measured_at: at(measured_at),
        celsius: BigDecimal::from(37),
        method: "rectal".into(),
        fever: false,
        now,
        new_values: json!({"subject_code": code, "celsius": 37.0}),
        request_id: format!("entry-{code}-{measured_at}"),
        client_addr: None,
        roles: roles_with_own_sites(Permission::EnterClinical),
    }
}

#[actix_web::test]
async fn the_entry_statement_writes_only_what_every_rule_allows() {
    let app = TestApp::spawn().await;
    app.site("FR01", "Europe/Paris");
    app.site("FR02", "Europe/Paris");
    let inv = app.token(Role::Investigator, &["FR01"]).await;
    let other = app.token(Role::Investigator, &["FR02"]).await;
    // consented on 2026-10-01 (Paris) each
    let open = enrolled(&app, &inv, "FR01").await;
    let withdrawn = enrolled(&app, &inv, "FR01").await;
    let locked = enrolled(&app, &inv, "FR01").await;
    let signed = enrolled(&app, &inv, "FR01").await;
    let unconsented = {
        let r = app
            .post(
                "/api/v1/subjects",
                &inv,
                &crate::clinical::new_subject("FR01"),
            )
            .await;
        r.body["subject_code"].as_str().unwrap().to_owned()
    };
    let elsewhere = enrolled(&app, &other, "FR02").await;
    let mut conn = app.conn();
    conn.batch_execute(&format!(
        "UPDATE consents SET withdrawn_on = '2026-10-10' \
           WHERE subject_id = (SELECT id FROM subjects WHERE subject_code = '{withdrawn}');
         INSERT INTO locks (scope, subject_id, reason, locked_by) \
           SELECT 'subject', id, 'test', 1 FROM subjects WHERE subject_code = '{locked}';
         INSERT INTO signatures (site_id, subject_id, signer_id, printed_name, meaning, casebook_sha256) \
           SELECT site_id, id, 1, 'Dr Test', 'approval', 'x' FROM subjects WHERE subject_code = '{signed}';"
    ))
    .unwrap();
    let who = identity(&mut conn, "FR01");
    let rows = "SELECT count(*) AS n FROM temperatures";
    let audit = "SELECT count(*) AS n FROM audit_log WHERE entity_table = 'temperatures'";

    let refused: Vec<(&str, CheckedTemperature)> = vec![
        // 23:00 in Paris on 30 September, the day before the consent
        (
            "before consent",
            reading(&who, &open, "2026-09-30T21:00:00Z"),
        ),
        (
            "after withdrawal",
            reading(&who, &withdrawn, "2026-10-11T08:00:00Z"),
        ),
        (
            "no consent",
            reading(&who, &unconsented, "2026-10-05T08:00:00Z"),
        ),
        (
            "locked subject",
            reading(&who, &locked, "2026-10-05T08:00:00Z"),
        ),
        (
            "signed casebook",
            reading(&who, &signed, "2026-10-05T08:00:00Z"),
        ),
        (
            "other site",
            reading(&who, &elsewhere, "2026-10-05T08:00:00Z"),
        ),
        (
            "unknown subject",
            reading(&who, "FR01-999", "2026-10-05T08:00:00Z"),
        ),
        (
            "ended session",
            CheckedTemperature {
                session: uuid::Uuid::new_v4(),
                ..reading(&who, &open, "2026-10-05T08:00:00Z")
            },
        ),
        (
            "older token",
            CheckedTemperature {
                token_version: who.token_version - 1,
                ..reading(&who, &open, "2026-10-05T08:00:00Z")
            },
        ),
        (
            "role may not enter data",
            CheckedTemperature {
                roles: vec!["monitor"],
                ..reading(&who, &open, "2026-10-05T08:00:00Z")
            },
        ),
    ];
    for (case, entry) in &refused {
        let written = enter_alone(&mut conn, entry).unwrap();
        assert_eq!(written, None, "{case}: not written");
        assert_eq!(app.count(rows), 0, "{case}: no reading");
        assert_eq!(app.count(audit), 0, "{case}: no audit row");
    }

    // the boundaries themselves are inside: 00:30 in Paris on the consent day (22:30 UTC
    // the day before), and the withdrawal day
    let allowed = [
        reading(&who, &open, "2026-09-30T22:30:00Z"),
        reading(&who, &withdrawn, "2026-10-10T20:00:00Z"),
    ];
    for entry in &allowed {
        let id = enter_alone(&mut conn, entry).unwrap().expect("written");
        let n = app.count(&format!(
            "SELECT count(*) AS n FROM temperatures t JOIN subjects s ON s.id = t.subject_id \
             WHERE t.id = {id} AND s.subject_code = '{}' AND t.created_at = '{}'",
            entry.subject_code,
            entry.now.to_rfc3339()
        ));
        assert_eq!(
            n, 1,
            "the reading of {} is stored as sent",
            entry.subject_code
        );
        let n = app.count(&format!(
            "SELECT count(*) AS n FROM audit_log WHERE entity_table = 'temperatures' \
             AND action = 'create' AND record_id = {id} AND actor_role = 'investigator' \
             AND new_values = '{}'::jsonb",
            json!({"id": id, "subject_code": entry.subject_code, "celsius": 37.0})
        ));
        assert_eq!(n, 1, "its audit row holds the values with the new id");
    }
    assert_eq!(app.count(rows), 2);
    app.wait_sealed().await;
}
