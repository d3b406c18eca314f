//! Monitoring of the records of the study definition's forms, exactly as of today's three:
//! queries by hand on a record and item, source data verification cleared by a change,
//! the casebook's verification status per form, locks (423) and signatures broken by a
//! change. Kawasaki's `echocardiography` and `disease_activity` are the engine's forms here.

use casebook::auth::Role;
use reqwest::Method;
use serde_json::{json, Value};

use crate::clinical::enrolled;
use crate::helpers::{Resp, TestApp, PASSWORD};

/// An echocardiography at V1; `lad` above 2.00 is a soft finding (an automatic query).
fn echo(lad: &str) -> Value {
    json!({"visit": "V1", "values": {"performed_on": "2026-10-05", "lmca_z": "1.50", "lad_z": lad,
           "rca_z": "-1.00", "dilatation": false, "aneurysm": false}})
}

fn activity(visit: &str) -> Value {
    json!({"visit": visit, "values": {"assessed_on": "2026-10-05", "crp_mg_l": "12.0", "wbc": "9.5",
           "conjunctivitis": true, "oral_changes": false, "rash": false,
           "extremity_changes": false, "lymphadenopathy": false}})
}

struct Sites {
    app: TestApp,
    /// investigator, monitor of FRA; investigator, monitor of FRB; admin
    inv: String,
    monitor: String,
    inv_b: String,
    monitor_b: String,
    admin: String,
    /// FRA-001, FRB-001
    code: String,
    code_b: String,
}

async fn sites() -> Sites {
    let app = TestApp::spawn().await;
    app.site("FRA", "Europe/Paris");
    app.site("FRB", "Europe/Paris");
    let inv = app.token(Role::Investigator, &["FRA"]).await;
    let inv_b = app.token(Role::Investigator, &["FRB"]).await;
    let code = enrolled(&app, &inv, "FRA").await;
    let code_b = enrolled(&app, &inv_b, "FRB").await;
    Sites {
        monitor: app.token(Role::Monitor, &["FRA"]).await,
        monitor_b: app.token(Role::Monitor, &["FRB"]).await,
        admin: app.token(Role::Admin, &[]).await,
        app,
        inv,
        inv_b,
        code,
        code_b,
    }
}

impl Sites {
    async fn record(&self, code: &str, form: &str, body: &Value) -> i64 {
        let token = if code == self.code {
            &self.inv
        } else {
            &self.inv_b
        };
        let r = self
            .app
            .post(
                &format!("/api/v1/subjects/{code}/forms/{form}"),
                token,
                body,
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        r.body["id"].as_i64().unwrap()
    }

    fn count(&self, sql: &str) -> i64 {
        self.app.count(sql)
    }

    async fn queries(&self, token: &str, filter: &str) -> Vec<Value> {
        let r = self
            .app
            .get(&format!("/api/v1/queries?{filter}"), token)
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        r.body["items"].as_array().unwrap().clone()
    }

    async fn verify(&self, token: &str, form: &str, id: i64) -> Resp {
        self.app
            .request(
                Method::POST,
                &format!("/api/v1/subjects/{}/forms/{form}/{id}/verify", self.code),
                Some(token),
                None,
                &[],
            )
            .await
    }

    async fn delete(&self, form: &str, id: i64, reason: &str) -> Resp {
        self.app
            .request(
                Method::DELETE,
                &format!("/api/v1/subjects/{}/forms/{form}/{id}", self.code),
                Some(&self.inv),
                Some(&json!({"reason": reason})),
                &[],
            )
            .await
    }

    /// The casebook's verification status of `form`: (records, verified).
    async fn sdv(&self, form: &str) -> (i64, i64) {
        let book = self
            .app
            .get(
                &format!("/api/v1/subjects/{}/casebook", self.code),
                &self.monitor,
            )
            .await;
        assert_eq!(book.status, 200, "{}", book.text);
        let row = book.body["monitoring"]["verified"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["form"] == form)
            .unwrap_or_else(|| panic!("no {form} in {}", book.text))
            .clone();
        (
            row["records"].as_i64().unwrap(),
            row["verified"].as_i64().unwrap(),
        )
    }
}

fn ids(list: &[Value]) -> Vec<i64> {
    list.iter().map(|q| q["id"].as_i64().unwrap()).collect()
}

#[actix_web::test]
async fn queries_on_form_records_name_an_item_of_the_form_and_run_the_life_cycle() {
    let s = sites().await;
    let id = s.record(&s.code, "echocardiography", &echo("1.00")).await;
    let other = s.record(&s.code_b, "echocardiography", &echo("1.00")).await;
    let raise = |record: i64, field: &str| {
        json!({"record_type": "form_records", "record_id": record, "field": field,
               "text": "The report says 1.10."})
    };

    // an item the form does not have (one of another form's, one of no form): 422, nothing written
    for field in ["crp_mg_l", "celsius"] {
        s.app
            .post("/api/v1/queries", &s.monitor, &raise(id, field))
            .await
            .assert_problem(422, Some("field"));
    }
    // another site's record, or a record that does not exist: 404
    s.app
        .post("/api/v1/queries", &s.monitor, &raise(other, "lad_z"))
        .await
        .assert_problem(404, None);
    s.app
        .post("/api/v1/queries", &s.monitor, &raise(9999, "lad_z"))
        .await
        .assert_problem(404, None);
    // investigators do not raise queries
    s.app
        .post("/api/v1/queries", &s.inv, &raise(id, "lad_z"))
        .await
        .assert_problem(403, None);
    assert_eq!(s.count("SELECT count(*) AS n FROM queries"), 0);
    assert_eq!(
        s.count("SELECT count(*) AS n FROM audit_log WHERE entity_table = 'queries'"),
        0
    );

    let r = s
        .app
        .post("/api/v1/queries", &s.monitor, &raise(id, "lad_z"))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let q = r.body["id"].as_i64().unwrap();
    assert_eq!(r.body["record_type"], "form_records");
    assert_eq!(r.body["record_id"], id);
    assert_eq!(r.body["form"], "echocardiography");
    assert_eq!(r.body["field"], "lad_z");
    assert_eq!(r.body["status"], "open");
    assert_eq!(r.body["origin"], "manual");
    assert_eq!(
        s.count(&format!(
            "SELECT count(*) AS n FROM queries WHERE id = {q} AND record_type = 'form_records' \
             AND record_id = {id} AND field = 'lad_z' AND origin = 'manual' AND status = 'open'"
        )),
        1
    );
    assert_eq!(
        s.count(&format!(
            "SELECT count(*) AS n FROM audit_log WHERE action = 'query_open' AND entity_table = 'queries' \
             AND record_id = {q} AND new_values->>'record_type' = 'form_records' \
             AND (new_values->>'record_id')::bigint = {id} AND new_values->>'field' = 'lad_z'"
        )),
        1
    );
    // a query on the whole record names no item
    let r = s
        .app
        .post(
            "/api/v1/queries",
            &s.monitor,
            &json!({"record_type": "form_records", "record_id": id, "text": "Is this the right visit?"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["field"], Value::Null);
    assert_eq!(r.body["form"], "echocardiography");
    let whole = r.body["id"].as_i64().unwrap();

    // the other site's people neither see nor step it
    let step = |token: &str, step: &str| {
        let path = format!("/api/v1/queries/{q}/{step}");
        let (token, body) = (token.to_owned(), json!({"text": format!("{step} note")}));
        let app = &s.app;
        async move { app.post(&path, &token, &body).await }
    };
    step(&s.inv_b, "answer").await.assert_problem(404, None);
    step(&s.monitor_b, "close").await.assert_problem(404, None);
    s.app
        .get(&format!("/api/v1/queries/{q}"), &s.monitor_b)
        .await
        .assert_problem(404, None);
    assert!(s.queries(&s.monitor_b, "limit=500").await.is_empty());

    // open -> answered -> closed -> reopened, each audited
    assert_eq!(step(&s.inv, "answer").await.body["status"], "answered");
    assert_eq!(step(&s.monitor, "close").await.body["status"], "closed");
    step(&s.inv, "answer").await.assert_problem(409, None);
    let r = step(&s.monitor, "reopen").await;
    assert_eq!(r.body["status"], "open", "{}", r.text);
    assert_eq!(r.body["form"], "echocardiography");
    assert_eq!(r.body["messages"].as_array().unwrap().len(), 4);
    for action in ["query_answer", "query_close", "query_reopen"] {
        assert_eq!(
            s.count(&format!(
                "SELECT count(*) AS n FROM audit_log WHERE action = '{action}' AND record_id = {q}"
            )),
            1,
            "{action}"
        );
    }

    // the lists: by subject, by site, open; an automatic query on a form record lists alike
    let flagged = s
        .record(&s.code, "echocardiography", &{
            let mut b = echo("2.50");
            b["visit"] = json!("EOT");
            b
        })
        .await;
    let by_subject = s.queries(&s.monitor, &format!("subject={}", s.code)).await;
    let by_site = s.queries(&s.monitor, "site=FRA").await;
    let open = s.queries(&s.monitor, "status=open").await;
    for list in [&by_subject, &by_site, &open] {
        assert_eq!(ids(list).len(), 3, "{list:?}");
        assert!(ids(list).contains(&q) && ids(list).contains(&whole));
        for query in list.iter() {
            assert_eq!(query["form"], "echocardiography", "{query}");
        }
    }
    let automatic = open.iter().find(|x| x["origin"] == "edit_check").unwrap();
    assert_eq!(automatic["record_id"], flagged);
    assert_eq!(automatic["field"], "lad_z");
    // a query on today's tables has no form
    let r = s
        .app
        .post(
            "/api/v1/queries",
            &s.monitor,
            &json!({"record_type": "consents", "record_id": 1, "field": "signer", "text": "Who signed?"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["form"], Value::Null);
    let on_consent = r.body["id"].as_i64().unwrap();
    // the queries of one form's records
    let echo_queries = ids(&s.queries(&s.monitor, "form=echocardiography").await);
    assert_eq!(echo_queries.len(), 3, "{echo_queries:?}");
    assert!(echo_queries.contains(&q) && !echo_queries.contains(&on_consent));
    assert!(s
        .queries(&s.monitor, "form=disease_activity")
        .await
        .is_empty());
    // today's forms are forms of the engine like the others
    assert!(s.queries(&s.monitor, "form=adverse_event").await.is_empty());
    s.app
        .get("/api/v1/queries?form=nothing_such", &s.monitor)
        .await
        .assert_problem(422, Some("form"));
    // the queries export names the form too
    let csv = s.app.get("/api/v1/exports/queries.csv", &s.admin).await;
    assert_eq!(csv.status, 200, "{}", csv.text);
    let rows = crate::exports::parse_csv(&csv.text);
    let col = |name: &str| rows[0].iter().position(|c| c == name).unwrap();
    let (id_col, form_col) = (col("id"), col("form"));
    assert_eq!(col("record_id") + 1, form_col);
    for row in &rows[1..] {
        let id: i64 = row[id_col].parse().unwrap();
        let want = if id == on_consent {
            ""
        } else {
            "echocardiography"
        };
        assert_eq!(row[form_col], want, "query {id}");
    }
    assert_eq!(rows.len(), 5);

    // a record entered in error takes no new query
    assert_eq!(
        s.delete("echocardiography", id, "wrong patient")
            .await
            .status,
        200
    );
    s.app
        .post("/api/v1/queries", &s.monitor, &raise(id, "lad_z"))
        .await
        .assert_problem(404, None);
}

#[actix_web::test]
async fn form_records_are_source_data_verified_and_a_change_clears_it() {
    let s = sites().await;
    let id = s.record(&s.code, "echocardiography", &echo("1.00")).await;
    s.record(&s.code_b, "echocardiography", &echo("1.00")).await;

    // every form of the definition is in the casebook's status, today's tables by their paths
    let book = s
        .app
        .get(&format!("/api/v1/subjects/{}/casebook", s.code), &s.monitor)
        .await;
    let forms: Vec<&str> = book.body["monitoring"]["verified"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["form"].as_str().unwrap())
        .collect();
    assert_eq!(
        forms,
        [
            "consents",
            "injections",
            "temperatures",
            "adverse-events",
            "echocardiography",
            "disease_activity"
        ]
    );
    assert_eq!(s.sdv("echocardiography").await, (1, 0));
    assert_eq!(s.sdv("disease_activity").await, (0, 0));

    // only a monitor of the site; the record must be of that form and subject
    s.verify(&s.inv, "echocardiography", id)
        .await
        .assert_problem(403, None);
    s.verify(&s.monitor_b, "echocardiography", id)
        .await
        .assert_problem(404, None);
    s.verify(&s.monitor, "disease_activity", id)
        .await
        .assert_problem(404, None);
    s.verify(&s.monitor, "no_such_form", id)
        .await
        .assert_problem(404, None);
    s.verify(&s.monitor, "echocardiography", id + 1)
        .await
        .assert_problem(404, None);
    assert_eq!(s.count("SELECT count(*) AS n FROM verifications"), 0);

    let r = s.verify(&s.monitor, "echocardiography", id).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["record_type"], "form_records");
    assert_eq!(r.body["record_id"], id);
    assert_eq!(r.body["record_version"], 1);
    let first = r.body["id"].as_i64().unwrap();
    assert_eq!(
        s.count(&format!(
            "SELECT count(*) AS n FROM audit_log WHERE action = 'verify' AND entity_table = 'form_records' \
             AND record_id = {id} AND (new_values->>'verified_version')::int = 1 \
             AND (new_values->>'verification')::bigint = {first}"
        )),
        1
    );
    s.verify(&s.monitor, "echocardiography", id)
        .await
        .assert_problem(409, None);
    assert_eq!(s.sdv("echocardiography").await, (1, 1));

    // a correction clears it, audited; the new version can be verified again
    let at = format!("/api/v1/subjects/{}/forms/echocardiography/{id}", s.code);
    let r = s
        .app
        .patch(
            &at,
            &s.inv,
            1,
            &json!({"values": {"rca_z": "0.50"}, "reason": "remeasured"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        s.count(&format!(
            "SELECT count(*) AS n FROM verifications WHERE id = {first} AND cleared_at IS NOT NULL"
        )),
        1
    );
    assert_eq!(
        s.count(&format!(
            "SELECT count(*) AS n FROM audit_log WHERE action = 'sdv_cleared' AND record_id = {first} \
             AND new_values->>'record_type' = 'form_records' AND (new_values->>'record_id')::bigint = {id}"
        )),
        1
    );
    assert_eq!(s.sdv("echocardiography").await, (1, 0));
    let r = s.verify(&s.monitor, "echocardiography", id).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["record_version"], 2);
    let second = r.body["id"].as_i64().unwrap();

    // a second form counts apart
    let da = s.record(&s.code, "disease_activity", &activity("V1")).await;
    assert_eq!(
        s.verify(&s.monitor, "disease_activity", da).await.status,
        200
    );
    assert_eq!(s.sdv("disease_activity").await, (1, 1));
    assert_eq!(s.sdv("echocardiography").await, (1, 1));

    // marking it entered in error clears it too, and leaves nothing to verify
    assert_eq!(
        s.delete("echocardiography", id, "wrong patient")
            .await
            .status,
        200
    );
    assert_eq!(
        s.count(&format!(
            "SELECT count(*) AS n FROM audit_log WHERE action = 'sdv_cleared' AND record_id = {second}"
        )),
        1
    );
    s.verify(&s.monitor, "echocardiography", id)
        .await
        .assert_problem(404, None);
    assert_eq!(s.sdv("echocardiography").await, (0, 0));
    assert_eq!(
        s.count("SELECT count(*) AS n FROM verifications WHERE cleared_at IS NULL"),
        1
    );
}

#[actix_web::test]
async fn locks_refuse_writes_on_the_form_routes_and_any_change_breaks_a_signature() {
    let s = sites().await;
    let at = format!("/api/v1/subjects/{}/forms/echocardiography", s.code);
    let id = s.record(&s.code, "echocardiography", &echo("1.00")).await;
    let writes = [
        // a record that would be accepted unlocked (V1 has one already)
        (Method::POST, at.clone(), {
            let mut b = echo("1.00");
            b["visit"] = json!("EOT");
            b
        }),
        (
            Method::PATCH,
            format!("{at}/{id}"),
            json!({"values": {"rca_z": "0.50"}, "reason": "remeasured"}),
        ),
        (
            Method::DELETE,
            format!("{at}/{id}"),
            json!({"reason": "wrong patient"}),
        ),
    ];
    let written =
        "SELECT (SELECT count(*) FROM audit_log WHERE action NOT IN ('login', 'lock', 'unlock')) \
                   + (SELECT sum(version) + count(*) FROM form_records) AS n";
    for (scope, target) in [
        ("subject", Some(s.code.as_str())),
        ("site", Some("FRA")),
        ("study", None),
    ] {
        let lock = s
            .app
            .post(
                "/api/v1/locks",
                &s.admin,
                &json!({"scope": scope, "target": target, "reason": "interim analysis"}),
            )
            .await;
        assert_eq!(lock.status, 201, "{}", lock.text);
        let lock_id = lock.body["id"].as_i64().unwrap();
        let before = s.count(written);
        for (method, path, body) in &writes {
            let headers: &[(&str, &str)] = if *method == Method::PATCH {
                &[("if-match", "\"1\"")]
            } else {
                &[]
            };
            let r = s
                .app
                .request(method.clone(), path, Some(&s.inv), Some(body), headers)
                .await;
            r.assert_problem(423, None);
            assert!(
                r.text.contains(&format!("lock {lock_id}")),
                "{method} {path}: {}",
                r.text
            );
        }
        assert_eq!(
            s.count(written),
            before,
            "nothing written under a {scope} lock"
        );
        // reading stays open
        assert_eq!(s.app.get(&format!("{at}/{id}"), &s.inv).await.status, 200);
        let r = s
            .app
            .request(
                Method::DELETE,
                &format!("/api/v1/locks/{lock_id}"),
                Some(&s.admin),
                Some(&json!({"reason": "analysis done"})),
                &[],
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
    }

    // a signed casebook: a new record, a correction and a deletion each invalidate it
    let sign = format!("/api/v1/subjects/{}/signatures", s.code);
    let signed = || async {
        let r = s
            .app
            .post(
                &sign,
                &s.inv,
                &json!({"password": PASSWORD, "meaning": "approval"}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        r.body["id"].as_i64().unwrap()
    };
    let invalidated = |sig: i64| {
        s.count(&format!(
            "SELECT count(*) AS n FROM signatures WHERE id = {sig} AND invalidated_at IS NOT NULL \
             AND invalidated_reason = 'form_records changed after signing'"
        )) + s.count(&format!(
            "SELECT count(*) AS n FROM audit_log WHERE action = 'signature_invalidated' AND record_id = {sig}"
        ))
    };
    let sig = signed().await;
    assert_eq!(invalidated(sig), 0);
    let da = s.record(&s.code, "disease_activity", &activity("V1")).await;
    assert_eq!(invalidated(sig), 2, "a new record");
    let sig = signed().await;
    let r = s
        .app
        .patch(
            &format!("/api/v1/subjects/{}/forms/disease_activity/{da}", s.code),
            &s.inv,
            1,
            &json!({"values": {"wbc": "10.5"}, "reason": "lab report"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(invalidated(sig), 2, "a correction");
    let sig = signed().await;
    assert_eq!(
        s.delete("disease_activity", da, "wrong visit").await.status,
        200
    );
    assert_eq!(invalidated(sig), 2, "a deletion");
    let sig = signed().await;
    // a verification changes no data: the signature holds
    assert_eq!(
        s.verify(&s.monitor, "echocardiography", id).await.status,
        200
    );
    assert_eq!(invalidated(sig), 0);
}
