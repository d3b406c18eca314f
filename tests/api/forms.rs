//! Records of the forms a study definition describes, through
//! `/subjects/{code}/forms/{form}[/{id}]`: every form of every study in config/studies/,
//! with values built from GET /study/definition as a client would build them.

use casebook::auth::Role;
use reqwest::Method;
use serde_json::{json, Map, Value};

use crate::clinical::enrolled;
use crate::helpers::{Resp, TestApp};

const LEGACY: [&str; 0] = [];
const DAY: &str = "2026-10-05";

fn num(v: &Value) -> Option<f64> {
    v.as_f64()
}

/// A number inside the item's hard range and, when it has one, its soft range.
fn inside(item: &Value) -> f64 {
    let lo = [num(&item["min"]), num(&item["soft_min"])]
        .into_iter()
        .flatten()
        .fold(f64::NEG_INFINITY, f64::max);
    let hi = [num(&item["max"]), num(&item["soft_max"])]
        .into_iter()
        .flatten()
        .fold(f64::INFINITY, f64::min);
    match (lo.is_finite(), hi.is_finite()) {
        (true, true) => (lo + hi) / 2.0,
        (true, false) => lo + 1.0,
        (false, true) => hi - 1.0,
        (false, false) => 1.0,
    }
}

/// A number as the client sends it: integers as numbers, decimals as text at the item's
/// digits (what the server stores and returns).
fn number(item: &Value, x: f64) -> Value {
    match item["type"].as_str() {
        Some("integer") => json!(x.floor() as i64),
        _ => {
            let d = item["decimals"].as_u64().unwrap_or(0) as usize;
            json!(format!("{x:.d$}"))
        }
    }
}

fn valid(item: &Value) -> Value {
    match item["type"].as_str().unwrap() {
        "text" => {
            let max = item["max_length"].as_u64().unwrap_or(10) as usize;
            json!("as written".chars().take(max).collect::<String>())
        }
        "integer" | "decimal" => number(item, inside(item)),
        "boolean" => json!(false),
        "date" | "partial_date" => json!(DAY),
        "datetime" => json!(format!("{DAY}T10:00:00Z")),
        "time" => json!("08:30"),
        "choice" => item["choices"][0]["code"].clone(),
        "choices" => json!([item["choices"][0]["code"]]),
        t => panic!("type {t}"),
    }
}

/// The dose a dose rule bound to the form expects, as a site following the protocol
/// enters it (a fixed dose, or mg/kg of the weight entered).
fn as_prescribed(def: &Value, form: &Value, values: &mut Map<String, Value>) {
    for r in def["rules"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["kind"] == "dose" && r["form"] == form["id"])
    {
        let t = def["treatments"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["id"] == r["treatment"])
            .unwrap();
        let mg = match t["dose"].as_str().unwrap() {
            "fixed" => t["mg"].as_f64().unwrap(),
            _ => {
                let weight = &values[r["items"]["weight"].as_str().unwrap()];
                t["mg_per_kg"].as_f64().unwrap() * weight.as_str().unwrap().parse::<f64>().unwrap()
            }
        };
        values.insert(
            r["items"]["dose"].as_str().unwrap().to_owned(),
            json!(format!("{mg:.2}")),
        );
    }
}

fn entered(item: &Value) -> bool {
    item["derived"] != true
}

/// Valid values for a form, as a client builds them: every item that is not derived; items
/// whose condition does not hold are left out as the server names them.
async fn valid_record(
    app: &TestApp,
    token: &str,
    path: &str,
    def: &Value,
    form: &Value,
    visit: &Option<String>,
) -> (Resp, Map<String, Value>) {
    let mut values: Map<String, Value> = form["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| entered(i))
        .map(|i| (i["id"].as_str().unwrap().to_owned(), valid(i)))
        .collect();
    as_prescribed(def, form, &mut values);
    // a study day is filled from the record's date when not sent
    for r in def["rules"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["kind"] == "study_day" && r["form"] == form["id"])
    {
        values.remove(r["items"]["day"].as_str().unwrap());
    }
    if let Some(v) = visit {
        // on the visit's target day, when the subject's day 1 is known
        let code = path.split('/').nth(4).unwrap();
        let schedule = app
            .get(&format!("/api/v1/subjects/{code}/schedule"), token)
            .await
            .body;
        let target = schedule["visits"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["id"] == v.as_str())
            .map(|x| x["target_date"].clone())
            .unwrap_or(Value::Null);
        if target.is_string() {
            values.insert(form["dated_by"].as_str().unwrap().to_owned(), target);
        }
    }
    for _ in 0..4 {
        let r = app.post(path, token, &body(visit, &values)).await;
        if r.status != 422 {
            return (r, values);
        }
        // what a client does with the answer: empty the hidden items, and bring the numbers
        // an edit check names down to their lowest value
        let mut fixed = 0;
        for e in r.body["errors"].as_array().unwrap() {
            let item = e["field"].as_str().unwrap().trim_start_matches("values.");
            let def = form["items"]
                .as_array()
                .unwrap()
                .iter()
                .find(|i| i["id"] == item);
            if e["message"].as_str().unwrap().starts_with("must be empty") {
                values.remove(item);
                fixed += 1;
            } else if let Some(i) =
                def.filter(|i| i["type"] == "date" && i["id"] != form["dated_by"])
            {
                // an end after a start: the day after
                let later = json!("2026-10-06");
                if values.get(item) != Some(&later) {
                    values.insert(i["id"].as_str().unwrap().to_owned(), later);
                    fixed += 1;
                }
            } else if def.is_some_and(|i| i["type"] == "text" && i["required"] != true)
                && values.contains_key(item)
            {
                // an optional text a check holds to a pattern (a MedDRA code): left out
                values.remove(item);
                fixed += 1;
            } else if let Some(i) =
                def.filter(|i| matches!(i["type"].as_str(), Some("integer" | "decimal")))
            {
                let low = i["min"]
                    .as_f64()
                    .unwrap_or(0.0)
                    .max(i["soft_min"].as_f64().unwrap_or(f64::MIN));
                let v = number(i, low);
                if values.get(item) != Some(&v) {
                    values.insert(item.to_owned(), v);
                    fixed += 1;
                }
            }
        }
        assert!(fixed > 0, "{}: {}", form["id"], r.text);
    }
    panic!("{}: no valid record", form["id"]);
}

fn body(visit: &Option<String>, values: &Map<String, Value>) -> Value {
    match visit {
        Some(v) => json!({"visit": v, "values": values}),
        None => json!({"values": values}),
    }
}

fn visit_of(def: &Value, form: &Value) -> Option<String> {
    if form["repeat"] != "per_visit" {
        return None;
    }
    def["visits"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["unscheduled"] != true && v["forms"].as_array().unwrap().contains(&form["id"]))
        .map(|v| v["id"].as_str().unwrap().to_owned())
}

fn audit_rows(app: &TestApp, action: &str, id: i64, extra: &str) -> i64 {
    app.count(&format!(
        "SELECT count(*) AS n FROM audit_log WHERE entity_table = 'form_records' AND action = '{action}' \
         AND record_id = {id} {extra}"
    ))
}

fn sql_json(v: &Value) -> String {
    v.to_string().replace('\'', "''")
}

#[derive(Default)]
struct Seen {
    forms: usize,
    hard: usize,
    soft: usize,
    cleared: usize,
}

/// One study: every form that is not one of today's three, through its whole life.
async fn run_study(file: &str, seen: &mut Seen) {
    let path = format!("{}/config/studies/{file}", env!("CARGO_MANIFEST_DIR"));
    let app = TestApp::spawn_with(&[("CASEBOOK_STUDY", &path)]).await;
    app.site("FRA", "Europe/Paris");
    let inv = app.token(Role::Investigator, &["FRA"]).await;
    let code = enrolled(&app, &inv, "FRA").await;
    let def = app.get("/api/v1/study/definition", &inv).await.body;
    for form in def["forms"].as_array().unwrap() {
        let id = form["id"].as_str().unwrap();
        if LEGACY.contains(&id) {
            continue;
        }
        seen.forms += 1;
        let at = format!("/api/v1/subjects/{code}/forms/{id}");
        let visit = visit_of(&def, form);
        let (r, values) = valid_record(&app, &inv, &at, &def, form, &visit).await;
        assert_eq!(r.status, 201, "{file} {id}: {}", r.text);
        let rid = r.body["id"].as_i64().unwrap();
        assert_eq!(r.headers["etag"], "\"1\"");
        assert_eq!(r.body["flags"], json!([]), "{file} {id}");
        assert_eq!(r.body["visit"], json!(visit));
        for (k, v) in &values {
            assert_eq!(&r.body["values"][k], v, "{file} {id}.{k}");
        }
        let got = app.get(&format!("{at}/{rid}"), &inv).await;
        assert_eq!(got.status, 200, "{}", got.text);
        assert_eq!(got.body["values"], r.body["values"], "{file} {id}");
        assert_eq!(
            audit_rows(
                &app,
                "create",
                rid,
                &format!(
                    "AND new_values->'values' = '{}'::jsonb",
                    sql_json(&r.body["values"])
                )
            ),
            1,
            "{file} {id}"
        );

        // a correction of one entered item, with If-Match and a reason
        let items = form["items"].as_array().unwrap();
        let target = items
            .iter()
            .find(|i| {
                entered(i)
                    && i["id"] != form["dated_by"]
                    && values.contains_key(i["id"].as_str().unwrap())
                    && (matches!(
                        i["type"].as_str(),
                        Some("integer" | "decimal" | "text" | "boolean")
                    ) || (i["type"] == "choice" && i["choices"].as_array().unwrap().len() > 1))
            })
            .unwrap_or_else(|| panic!("{file} {id}: nothing to correct"));
        let item = target["id"].as_str().unwrap();
        let old = values[item].clone();
        let new = match target["type"].as_str().unwrap() {
            "text" => json!("corrected"),
            "boolean" => json!(true),
            "choice" => target["choices"][1]["code"].clone(),
            _ => {
                let x = inside(target);
                let mut n = number(target, x + if x > 0.0 { -0.5 } else { 0.5 });
                if n == old {
                    n = number(target, x + 1.0);
                }
                n
            }
        };
        assert_ne!(new, old, "{file} {id}.{item}");
        let r = app
            .patch(
                &format!("{at}/{rid}"),
                &inv,
                1,
                &json!({"values": {item: new}, "reason": "transcription error"}),
            )
            .await;
        if r.status == 422 {
            // the change made a condition or check fail: the client learns which, nothing written
            assert_eq!(audit_rows(&app, "update", rid, ""), 0);
        } else {
            assert_eq!(r.status, 200, "{file} {id}.{item}: {}", r.text);
            assert_eq!(r.body["version"], 2);
            assert_eq!(r.body["values"][item], new);
            assert_eq!(r.body["change_reason"], "transcription error");
            assert_eq!(
                audit_rows(
                    &app,
                    "update",
                    rid,
                    &format!(
                        "AND reason = 'transcription error' AND old_values->'values'->'{item}' = '{}'::jsonb \
                         AND new_values->'values'->'{item}' = '{}'::jsonb",
                        sql_json(&old),
                        sql_json(&new)
                    )
                ),
                1,
                "{file} {id}.{item}"
            );
        }
        let version = app.get(&format!("{at}/{rid}"), &inv).await.body["version"]
            .as_i64()
            .unwrap();

        // an optional item is cleared with null
        if let Some(opt) = items.iter().find(|i| {
            entered(i)
                && i["required"] == false
                && i.get("show_if").is_none()
                && values.contains_key(i["id"].as_str().unwrap())
        }) {
            let o = opt["id"].as_str().unwrap();
            let r = app
                .patch(
                    &format!("{at}/{rid}"),
                    &inv,
                    version,
                    &json!({"values": {o: null}, "reason": "not measured"}),
                )
                .await;
            if r.status == 200 {
                assert!(r.body["values"].get(o).is_none(), "{file} {id}.{o}");
                assert_eq!(
                    audit_rows(&app, "update", rid, &format!("AND reason = 'not measured' AND new_values->'values'->'{o}' = 'null'::jsonb")),
                    1
                );
                seen.cleared += 1;
            }
        }
        let version = app.get(&format!("{at}/{rid}"), &inv).await.body["version"]
            .as_i64()
            .unwrap();

        // entered in error, with a reason
        let r = app
            .request(
                Method::DELETE,
                &format!("{at}/{rid}"),
                Some(&inv),
                Some(&json!({"reason": "wrong subject"})),
                &[("if-match", &format!("\"{version}\""))],
            )
            .await;
        assert_eq!(r.status, 200, "{file} {id}: {}", r.text);
        assert!(r.body["deleted_at"].is_string());
        assert_eq!(r.body["deleted_reason"], "wrong subject");
        assert_eq!(
            audit_rows(&app, "delete", rid, "AND reason = 'wrong subject'"),
            1
        );

        // a hard range refuses, naming the item, and writes nothing
        if let Some(h) = items.iter().find(|i| {
            entered(i)
                && i["check"] == "hard"
                && i["max"].is_number()
                && values.contains_key(i["id"].as_str().unwrap())
        }) {
            let hid = h["id"].as_str().unwrap();
            let mut bad = values.clone();
            bad.insert(hid.to_owned(), number(h, h["max"].as_f64().unwrap() + 1.0));
            let before = app.count("SELECT count(*) AS n FROM form_records");
            let r = app.post(&at, &inv, &body(&visit, &bad)).await;
            r.assert_problem(422, Some(&format!("values.{hid}")));
            assert_eq!(app.count("SELECT count(*) AS n FROM form_records"), before);
            seen.hard += 1;
        }

        // a soft range stores the value, flags it and opens a query on the item
        if let Some(s) = items.iter().find(|i| {
            entered(i)
                && values.contains_key(i["id"].as_str().unwrap())
                && (i["soft_max"].is_number() || (i["check"] == "soft" && i["max"].is_number()))
        }) {
            let sid = s["id"].as_str().unwrap();
            let soft_max = s["soft_max"].as_f64().or(s["max"].as_f64()).unwrap();
            let above = number(s, soft_max + 1.0);
            let mut flagged = values.clone();
            flagged.insert(sid.to_owned(), above.clone());
            let r = app.post(&at, &inv, &body(&visit, &flagged)).await;
            assert_eq!(r.status, 201, "{file} {id}.{sid}: {}", r.text);
            assert_eq!(r.body["values"][sid], above);
            assert_eq!(r.body["flags"][0]["item"], sid, "{}", r.text);
            let fid = r.body["id"].as_i64().unwrap();
            assert_eq!(
                app.count(&format!(
                    "SELECT count(*) AS n FROM queries WHERE record_type = 'form_records' AND record_id = {fid} \
                     AND field = '{sid}' AND origin = 'edit_check' AND status = 'open'"
                )),
                1,
                "{file} {id}.{sid}"
            );
            seen.soft += 1;
        }
    }
}

#[actix_web::test]
async fn every_form_of_every_study_is_entered_read_corrected_and_deleted() {
    let mut seen = Seen::default();
    let mut files: Vec<String> =
        std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/config/studies"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".toml"))
            .collect();
    files.sort();
    assert_eq!(files.len(), 5);
    for f in &files {
        run_study(f, &mut seen).await;
    }
    // the checks above ran, not just their guards
    assert!(seen.forms >= 15, "{}", seen.forms);
    assert!(seen.hard >= 5, "{}", seen.hard);
    assert!(seen.soft >= 2, "{}", seen.soft);
    assert!(seen.cleared >= 1, "{}", seen.cleared);
}

fn echo(lad: &str) -> Value {
    json!({"visit": "V1", "values": {"performed_on": DAY, "lmca_z": "1.50", "lad_z": lad, "rca_z": "-1.00",
           "dilatation": false, "aneurysm": false}})
}

#[actix_web::test]
async fn conditions_derivations_scope_and_the_present_forms() {
    let app = TestApp::spawn().await;
    app.site("FRA", "Europe/Paris");
    app.site("FRB", "Europe/Paris");
    let inv = app.token(Role::Investigator, &["FRA"]).await;
    let code = enrolled(&app, &inv, "FRA").await;
    let at = format!("/api/v1/subjects/{code}/forms/echocardiography");

    // a hidden item with a value, a derived value sent by the client: refused, nothing written
    let mut hidden = echo("1.00");
    hidden["values"]["aneurysm_size_mm"] = json!("3.0");
    app.post(&at, &inv, &hidden)
        .await
        .assert_problem(422, Some("values.aneurysm_size_mm"));
    let mut derived = echo("1.00");
    derived["values"]["max_z"] = json!("1.50");
    app.post(&at, &inv, &derived)
        .await
        .assert_problem(422, Some("values.max_z"));
    assert_eq!(app.count("SELECT count(*) AS n FROM form_records"), 0);

    // derived on the server, stored and audited
    let r = app.post(&at, &inv, &echo("2.25")).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let id = r.body["id"].as_i64().unwrap();
    assert_eq!(r.body["values"]["max_z"], "2.25");
    assert_eq!(r.body["values"]["lesion_class"], "dilatation");
    assert_eq!(r.body["definition_version"], 1);
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) AS n FROM audit_log WHERE action = 'create' AND record_id = {id} \
             AND entity_table = 'form_records' AND new_values->'values'->>'lesion_class' = 'dilatation'"
        )),
        1
    );
    // the soft range of lad_z opened its query
    assert_eq!(r.body["flags"][0]["item"], "lad_z");

    // once per visit
    let again = app.post(&at, &inv, &echo("1.00")).await;
    again.assert_problem(409, None);
    assert!(
        again.text.contains("already entered for visit V1"),
        "{}",
        again.text
    );

    // a correction recomputes the derived items and audits them with the item changed
    let r = app
        .patch(
            &format!("{at}/{id}"),
            &inv,
            1,
            &json!({"values": {"lad_z": "5.50"}, "reason": "remeasured"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["values"]["max_z"], "5.50");
    assert_eq!(r.body["values"]["lesion_class"], "medium");
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) AS n FROM audit_log WHERE action = 'update' AND record_id = {id} \
             AND entity_table = 'form_records' \
             AND old_values->'values' = '{{\"lad_z\": \"2.25\", \"max_z\": \"2.25\", \"lesion_class\": \"dilatation\"}}'::jsonb \
             AND new_values->'values' = '{{\"lad_z\": \"5.50\", \"max_z\": \"5.50\", \"lesion_class\": \"medium\"}}'::jsonb"
        )),
        1
    );
    // a correction that changes nothing writes nothing
    let audits = app.count("SELECT count(*) AS n FROM audit_log");
    let r = app
        .patch(
            &format!("{at}/{id}"),
            &inv,
            2,
            &json!({"values": {"lad_z": "5.5"}, "reason": "same"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["version"], 2);
    assert_eq!(app.count("SELECT count(*) AS n FROM audit_log"), audits);
    // stale and missing If-Match, missing reason
    app.patch(
        &format!("{at}/{id}"),
        &inv,
        1,
        &json!({"values": {"lad_z": "4.00"}, "reason": "x"}),
    )
    .await
    .assert_problem(412, None);
    app.request(
        Method::PATCH,
        &format!("{at}/{id}"),
        Some(&inv),
        Some(&json!({"values": {"lad_z": "4.00"}, "reason": "x"})),
        &[],
    )
    .await
    .assert_problem(428, None);
    app.patch(
        &format!("{at}/{id}"),
        &inv,
        2,
        &json!({"values": {"lad_z": "4.00"}}),
    )
    .await
    .assert_problem(422, Some("reason"));

    // another site's investigator sees nothing of it
    let other = app.token(Role::Investigator, &["FRB"]).await;
    app.get(&format!("{at}/{id}"), &other)
        .await
        .assert_problem(404, None);
    app.get(&at, &other).await.assert_problem(404, None);
    app.patch(
        &format!("{at}/{id}"),
        &other,
        2,
        &json!({"values": {"lad_z": "4.00"}, "reason": "x"}),
    )
    .await
    .assert_problem(404, None);

    // today's three forms are form records, served here too beside their own paths; a
    // form the study does not have is not found
    for form in ["injection", "temperature", "adverse_event"] {
        let r = app
            .get(&format!("/api/v1/subjects/{code}/forms/{form}"), &inv)
            .await;
        assert_eq!(r.status, 200, "{form}: {}", r.text);
    }
    app.get(&format!("/api/v1/subjects/{code}/forms/pain_vas"), &inv)
        .await
        .assert_problem(404, None);

    // before the consent: refused naming the dating item
    let mut early = echo("1.00");
    early["visit"] = json!("EOT");
    early["values"]["performed_on"] = json!("2026-09-30");
    app.post(&at, &inv, &early)
        .await
        .assert_problem(422, Some("values.performed_on"));
}

/// For the authorization matrix: an echocardiography record at V1 for FRA-001 (id 1) and
/// FRB-001 (id 2), inside every soft range (no query is opened).
pub async fn matrix_records(app: &TestApp) {
    for site in ["FRA", "FRB"] {
        let inv = app.token(Role::Investigator, &[site]).await;
        let r = app
            .post(
                &format!("/api/v1/subjects/{site}-001/forms/echocardiography"),
                &inv,
                &echo("1.00"),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
    }
}

/// The casebook shows a subject's form records (not those entered in error), and a
/// signature covers them: its hash changes with them, and a change invalidates it.
#[actix_web::test]
async fn the_casebook_shows_form_records_and_a_signature_covers_them() {
    let s = crate::form_exports::study().await;
    let inv = s.app.token(Role::Investigator, &["FRA", "FRB"]).await;
    let book = s
        .app
        .get(&format!("/api/v1/subjects/{}/casebook", s.fra), &inv)
        .await;
    assert_eq!(book.status, 200, "{}", book.text);
    let records = book.body["form_records"].as_array().unwrap();
    assert_eq!(records.len(), 2, "the record entered in error is left out");
    assert_eq!(records[0]["form"], "assessment");
    assert_eq!(records[0]["values"]["crp_mg_l"], "350.50");
    assert_eq!(records[1]["form"], "log");

    let sign = format!("/api/v1/subjects/{}/signatures", s.frb);
    let first = signed(&s.app, &inv, &sign).await;
    let at = format!("/api/v1/subjects/{}/forms/assessment", s.frb);
    let id = s.app.get(&at, &inv).await.body[0]["id"].as_i64().unwrap();
    let r = s
        .app
        .patch(
            &format!("{at}/{id}"),
            &inv,
            1,
            &json!({"values": {"crp_mg_l": "0.60"}, "reason": "misread"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let list = s.app.get(&sign, &inv).await;
    let sig = &list.body["items"][0];
    assert!(sig["invalidated_at"].is_string(), "{}", list.text);
    assert_eq!(
        s.app
            .count("SELECT count(*) AS n FROM audit_log WHERE action = 'signature_invalidated'"),
        1
    );
    let second = signed(&s.app, &inv, &sign).await;
    assert_ne!(first, second, "the signed content holds the form record");
}

async fn signed(app: &TestApp, token: &str, path: &str) -> String {
    let r = app
        .post(
            path,
            token,
            &json!({"password": crate::helpers::PASSWORD, "meaning": "approval"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    r.body["casebook_sha256"].as_str().unwrap().to_owned()
}
