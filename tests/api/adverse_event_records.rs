//! Adverse events are form records of the form `adverse_event` (docs/engine-migration.md
//! step 4): the legacy path and the generic route read and write the same records under the
//! same ids, the definition's `sae_alert` rule queues the safety desk's alert on the form
//! record, `GET /adverse-events` filters and pages over form records, and queries and
//! verifications accept `adverse_events` for them (and only for them).

use casebook::auth::Role;
use reqwest::Method;
use serde_json::{json, Value};

use crate::adverse_events::mild_event;
use crate::clinical::enrolled;
use crate::helpers::TestApp;

fn serious_event() -> Value {
    json!({"term": "Febrile seizure", "onset_date": "2026-10-06", "grade": 3, "serious": true,
           "seriousness_criteria": ["hospitalisation"], "relationship": "unlikely",
           "action_taken": "interrupted", "outcome": "recovering",
           "awareness_date": "2026-10-07"})
}

#[actix_web::test]
async fn an_adverse_event_is_one_record_at_the_legacy_path_and_the_generic_route() {
    let app = TestApp::spawn().await;
    app.site("FR01", "Europe/Paris");
    let inv = app.token(Role::Investigator, &["FR01"]).await;
    let code = enrolled(&app, &inv, "FR01").await;
    let legacy = format!("/api/v1/subjects/{code}/adverse-events");
    let generic = format!("/api/v1/subjects/{code}/forms/adverse_event");

    // entered at the legacy path, read through the engine under the same id
    let r = app.post(&legacy, &inv, &mild_event()).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(
        r.body["seriousness_criteria"],
        json!([]),
        "answered when absent"
    );
    let id = r.body["id"].as_i64().unwrap();
    let g = app.get(&format!("{generic}/{id}"), &inv).await;
    assert_eq!(g.status, 200, "{}", g.text);
    assert_eq!(g.body["id"], json!(id));
    assert_eq!(
        g.body["values"],
        json!({"term": "Injection-site pain, \"sharp\", thigh", "onset_date": "2026-10-06",
               "grade": 1, "serious": false, "relationship": "probable",
               "action_taken": "none", "outcome": "recovering",
               "awareness_date": "2026-10-06"}),
        "no criteria stored for a non-serious event"
    );
    assert_eq!(app.count("SELECT count(*) AS n FROM sae_alerts"), 0);

    // becoming serious at the legacy path: the rule queues the alert on the form record,
    // audited in the same transaction
    let path = format!("{legacy}/{id}");
    let r = app
        .patch(
            &path,
            &inv,
            1,
            &json!({"serious": true, "grade": 3, "seriousness_criteria": ["hospitalisation"],
                    "reason": "admitted overnight"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["seriousness_criteria"], json!(["hospitalisation"]));
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) AS n FROM sae_alerts WHERE form_record_id = {id} \
             AND status = 'pending' AND payload->>'form' = 'adverse_event' \
             AND (payload->>'form_record_id')::bigint = {id} \
             AND (payload->>'adverse_event_id')::bigint = {id} \
             AND payload->>'study_id' = 'KD-ANAKINRA' AND (payload->>'grade')::int = 3"
        )),
        1
    );
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) AS n FROM audit_log a JOIN sae_alerts s ON s.id = a.record_id \
             WHERE a.entity_table = 'sae_alerts' AND a.action = 'sae_queued' \
             AND (a.new_values->>'form_record_id')::bigint = {id} AND s.form_record_id = {id}"
        )),
        1
    );
    // a correction of an event already serious raises no second alert
    let r = app
        .patch(&path, &inv, 2, &json!({"grade": 4, "reason": "worsened"}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(app.count("SELECT count(*) AS n FROM sae_alerts"), 1);

    // entered through the engine, serious: read at the legacy path, alerted once
    let r = app
        .post(
            &generic,
            &inv,
            &json!({"values": {"term": "Febrile seizure", "onset_date": "2026-10",
                    "grade": 3, "serious": true, "seriousness_criteria": ["hospitalisation"],
                    "relationship": "unlikely", "action_taken": "none",
                    "outcome": "recovering", "awareness_date": "2026-10-07"}}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let second = r.body["id"].as_i64().unwrap();
    let l = app.get(&format!("{legacy}/{second}"), &inv).await;
    assert_eq!(l.status, 200, "{}", l.text);
    assert_eq!(l.body["onset_date"], json!("2026-10"));
    assert_eq!(l.body["awareness_date"], json!("2026-10-07"));
    assert_eq!(l.body["grade"], json!(3));
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) AS n FROM sae_alerts WHERE form_record_id = {second}"
        )),
        1
    );
    let list = app.get(&legacy, &inv).await;
    let ids: Vec<i64> = list
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, [id, second], "by id, as entered");

    // never deleted: marked entered in error, and then not corrected, under its noun
    let del = app
        .request(
            Method::DELETE,
            &path,
            Some(&inv),
            Some(&json!({"reason": "duplicate report"})),
            &[],
        )
        .await;
    assert_eq!(del.status, 200, "{}", del.text);
    assert!(del.body["deleted_at"].is_string());
    let r = app
        .patch(&path, &inv, 4, &json!({"grade": 2, "reason": "late"}))
        .await;
    r.assert_problem(409, None);
    assert!(
        r.text
            .contains("This adverse event is marked entered in error."),
        "{}",
        r.text
    );
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) AS n FROM form_records WHERE id = {id} AND deleted_at IS NOT NULL"
        )),
        1
    );
}

#[actix_web::test]
async fn the_adverse_event_listing_filters_and_pages_over_form_records() {
    let app = TestApp::spawn().await;
    app.site("FR01", "Europe/Paris");
    app.site("FR02", "Europe/Paris");
    let inv1 = app.token(Role::Investigator, &["FR01"]).await;
    let inv2 = app.token(Role::Investigator, &["FR02"]).await;
    let s1 = enrolled(&app, &inv1, "FR01").await;
    let s2 = enrolled(&app, &inv2, "FR02").await;
    let post = |code: &str, token: &str, body: Value| {
        let path = format!("/api/v1/subjects/{code}/adverse-events");
        let token = token.to_owned();
        let app = &app;
        async move {
            let r = app.post(&path, &token, &body).await;
            assert_eq!(r.status, 201, "{}", r.text);
            r.body["id"].as_i64().unwrap()
        }
    };
    let mild1 = post(&s1, &inv1, mild_event()).await;
    let serious1 = post(&s1, &inv1, serious_event()).await;
    let mild2 = post(&s2, &inv2, mild_event()).await;
    // one entered through the generic route is listed like the others
    let r = app
        .post(
            &format!("/api/v1/subjects/{s2}/forms/adverse_event"),
            &inv2,
            &json!({"values": {"term": "Rash", "onset_date": "2026-10-06", "grade": 2,
                    "serious": false, "relationship": "possible", "action_taken": "none",
                    "outcome": "recovering", "awareness_date": "2026-10-06"}}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let rash2 = r.body["id"].as_i64().unwrap();
    // an echocardiography in between: another form, never listed
    let r = app
        .post(
            &format!("/api/v1/subjects/{s1}/forms/echocardiography"),
            &inv1,
            &json!({"visit": "EOT", "values": {"performed_on": "2026-10-06", "lmca_z": "1.00",
                    "lad_z": "1.00", "rca_z": "1.00", "dilatation": false, "aneurysm": false}}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let deleted = post(&s1, &inv1, mild_event()).await;
    let r = app
        .request(
            Method::DELETE,
            &format!("/api/v1/subjects/{s1}/adverse-events/{deleted}"),
            Some(&inv1),
            Some(&json!({"reason": "wrong subject"})),
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);

    let sponsor = app.token(Role::Sponsor, &[]).await;
    let ids = |body: &Value| -> Vec<i64> {
        body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["id"].as_i64().unwrap())
            .collect()
    };
    let get = |q: &str| {
        let path = format!("/api/v1/adverse-events{q}");
        let token = sponsor.clone();
        let app = &app;
        async move {
            let r = app.get(&path, &token).await;
            assert_eq!(r.status, 200, "{}", r.text);
            r.body
        }
    };
    assert_eq!(ids(&get("").await), [mild1, serious1, mild2, rash2]);
    assert_eq!(
        ids(&get("?include_deleted=true").await),
        [mild1, serious1, mild2, rash2, deleted]
    );
    assert_eq!(ids(&get("?serious=true").await), [serious1]);
    assert_eq!(ids(&get("?serious=false").await), [mild1, mild2, rash2]);
    assert_eq!(ids(&get("?grade=2").await), [rash2]);
    assert_eq!(ids(&get("?site=FR02").await), [mild2, rash2]);
    assert_eq!(ids(&get("?relationship=possible").await), [rash2]);
    assert_eq!(ids(&get("?relationship=probable&site=FR01").await), [mild1]);
    // the legacy answer, with its subject
    let one = get("?serious=true").await;
    assert_eq!(one["items"][0]["subject_code"], json!(s1));
    assert_eq!(
        one["items"][0]["seriousness_criteria"],
        json!(["hospitalisation"])
    );
    assert_eq!(one["items"][0]["awareness_date"], json!("2026-10-07"));
    // keyset pages by id
    let page = get("?limit=2").await;
    assert_eq!(ids(&page), [mild1, serious1]);
    let next = page["next_after"].as_i64().unwrap();
    let page = get(&format!("?limit=2&after={next}")).await;
    assert_eq!(ids(&page), [mild2, rash2]);
    // a monitor sees only the sites they monitor
    let monitor = app.token(Role::Monitor, &["FR02"]).await;
    let mine = app.get("/api/v1/adverse-events", &monitor).await;
    assert_eq!(ids(&mine.body), [mild2, rash2]);
}

#[actix_web::test]
async fn queries_and_verifications_take_adverse_events_for_adverse_event_records_only() {
    let app = TestApp::spawn().await;
    app.site("FR01", "Europe/Paris");
    let inv = app.token(Role::Investigator, &["FR01"]).await;
    let monitor = app.token(Role::Monitor, &["FR01"]).await;
    let code = enrolled(&app, &inv, "FR01").await;
    let r = app
        .post(
            &format!("/api/v1/subjects/{code}/adverse-events"),
            &inv,
            &mild_event(),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let ae = r.body["id"].as_i64().unwrap();
    let r = app
        .post(
            &format!("/api/v1/subjects/{code}/temperatures"),
            &inv,
            &json!({"measured_at": "2026-10-06T08:00:00Z", "celsius": 37.0, "method": "oral"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let temp = r.body["id"].as_i64().unwrap();

    let r = app
        .post(
            "/api/v1/queries",
            &monitor,
            &json!({"record_type": "adverse_events", "record_id": ae, "field": "grade",
                    "text": "Source says grade 2"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["record_type"], json!("adverse_events"));
    assert_eq!(r.body["record_id"], json!(ae));
    assert_eq!(r.body["form"], json!("adverse_event"));
    let q = r.body["id"].as_i64().unwrap();
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) AS n FROM queries WHERE id = {q} \
             AND record_type = 'form_records' AND record_id = {ae}"
        )),
        1,
        "stored as the form record it is"
    );
    let listed = app
        .get("/api/v1/queries?form=adverse_event", &monitor)
        .await;
    assert_eq!(listed.status, 200, "{}", listed.text);
    assert_eq!(listed.body["items"][0]["id"], json!(q));
    assert_eq!(
        listed.body["items"][0]["record_type"],
        json!("adverse_events")
    );
    // a field the form does not have, and a record of another form under the alias
    app.post(
        "/api/v1/queries",
        &monitor,
        &json!({"record_type": "adverse_events", "record_id": ae, "field": "colour", "text": "x"}),
    )
    .await
    .assert_problem(422, Some("field"));
    app.post(
        "/api/v1/queries",
        &monitor,
        &json!({"record_type": "adverse_events", "record_id": temp, "text": "x"}),
    )
    .await
    .assert_problem(404, None);

    let r = app
        .request(
            Method::POST,
            &format!("/api/v1/subjects/{code}/adverse-events/{ae}/verify"),
            Some(&monitor),
            None,
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["record_type"], json!("adverse_events"));
    let book = app
        .get(&format!("/api/v1/subjects/{code}/casebook"), &monitor)
        .await;
    let verified = book.body["monitoring"]["verified"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["form"] == "adverse-events")
        .cloned();
    assert_eq!(
        verified,
        Some(json!({"form": "adverse-events", "records": 1, "verified": 1}))
    );
    assert_eq!(book.body["adverse_events"][0]["id"], json!(ae));
    assert_eq!(
        book.body["form_records"],
        json!([]),
        "an adverse event shows once, in adverse_events"
    );
    app.request(
        Method::POST,
        &format!("/api/v1/subjects/{code}/adverse-events/{temp}/verify"),
        Some(&monitor),
        None,
        &[],
    )
    .await
    .assert_problem(404, None);
}
