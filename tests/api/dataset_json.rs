//! Dataset-JSON v1.1 (`/exports/sdtm/{domain}.json`): every dataset of the five shipped
//! studies valid against CDISC's JSON Schema, with the CSV's rows value for value and
//! Define-XML's OIDs, types, lengths and keys; text exactly as stored; the audit row with
//! the body's SHA-256; the site filter; roles; unknown domains; the command line.

use std::collections::HashMap;
use std::process::Command;

use casebook::auth::Role;
use casebook::export::text::formula_like;
use diesel::prelude::*;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::exports::{cli_export, fetch, parse_csv, python_with, seeded, temp_file, ODD_TERM};
use crate::helpers::TestApp;

const SCHEMA: &str = "tests/schemas/dataset-json-1.1/dataset.schema.json";

const VALIDATE: &str = r#"
import json, sys, jsonschema
schema = json.load(open(sys.argv[1]))
V = jsonschema.validators.validator_for(schema)
V.check_schema(schema)
v = V(schema, format_checker=V.FORMAT_CHECKER)
bad = 0
for f in sys.argv[2:]:
    for e in v.iter_errors(json.load(open(f))):
        print(f, e.json_path, e.message)
        bad += 1
sys.exit(1 if bad else 0)
"#;

/// Validates the files against the Dataset-JSON 1.1 JSON Schema, in one Python run.
fn assert_schema_valid(files: &[(String, Vec<u8>)]) {
    let py = python_with("jsonschema");
    let paths: Vec<_> = files.iter().map(|(_, b)| temp_file("json", b)).collect();
    let out = Command::new(&py)
        .args(["-c", VALIDATE])
        .arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(SCHEMA))
        .args(&paths)
        .output()
        .expect("run python");
    for p in &paths {
        let _ = std::fs::remove_file(p);
    }
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    assert!(
        out.status.success(),
        "not valid Dataset-JSON 1.1 ({names:?}):\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What define.xml says of one dataset.
struct Group {
    label: String,
    /// ItemRef ItemOIDs in order, with their KeySequence
    refs: Vec<(String, Option<u64>)>,
}

/// What define.xml says of the datasets and variables (the parts Dataset-JSON repeats).
struct Define {
    study_oid: String,
    mdv_oid: String,
    groups: HashMap<String, Group>,
    /// ItemDef OID -> (Name, DataType, Length, label)
    items: HashMap<String, (String, String, Option<u64>, String)>,
}

fn attr(tag: &str, name: &str) -> Option<String> {
    let at = tag.find(&format!(" {name}=\""))? + name.len() + 3;
    Some(tag[at..].split('"').next()?.to_owned())
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

fn translated(block: &str) -> String {
    let text = block
        .split("<TranslatedText xml:lang=\"en\">")
        .nth(1)
        .and_then(|t| t.split("</TranslatedText>").next())
        .unwrap_or_default();
    unescape(text)
}

fn parse_define(xml: &str) -> Define {
    // the attributes of the tag `s` starts in, with a space before the first
    let tag_of = |s: &str| format!(" {}", s.split('>').next().unwrap_or_default());
    let study_oid = attr(&tag_of(xml.split("<Study ").nth(1).unwrap()), "OID").unwrap();
    let mdv_oid = attr(
        &tag_of(xml.split("<MetaDataVersion ").nth(1).unwrap()),
        "OID",
    )
    .unwrap();
    let mut groups = HashMap::new();
    for g in xml.split("<ItemGroupDef ").skip(1) {
        let g = g.split("</ItemGroupDef>").next().unwrap();
        let oid = attr(&tag_of(g), "OID").unwrap();
        let refs = g
            .split("<ItemRef ")
            .skip(1)
            .map(|r| {
                let t = tag_of(r);
                (
                    attr(&t, "ItemOID").unwrap(),
                    attr(&t, "KeySequence").map(|k| k.parse().unwrap()),
                )
            })
            .collect();
        let label = translated(g);
        groups.insert(oid, Group { label, refs });
    }
    let mut items = HashMap::new();
    for d in xml.split("<ItemDef ").skip(1) {
        let d = d.split("</ItemDef>").next().unwrap();
        let t = tag_of(d);
        items.insert(
            attr(&t, "OID").unwrap(),
            (
                attr(&t, "Name").unwrap(),
                attr(&t, "DataType").unwrap(),
                attr(&t, "Length").map(|l| l.parse().unwrap()),
                translated(d),
            ),
        );
    }
    Define {
        study_oid,
        mdv_oid,
        groups,
        items,
    }
}

/// The dataset's Dataset-JSON says what define.xml says of it, and holds the CSV's rows
/// value for value (text exactly as stored: the CSV guards formula-like text with `'`).
/// Returns the number of rows.
fn assert_json_matches(code: &str, json: &Value, csv: &str, define: &Define) -> usize {
    let csv = parse_csv(csv);
    let (header, rows) = (&csv[0], &csv[1..]);
    assert_eq!(json["datasetJSONVersion"], "1.1.0");
    assert_eq!(json["name"], code);
    assert_eq!(json["studyOID"], define.study_oid.as_str(), "{code}");
    assert_eq!(
        json["metaDataVersionOID"],
        define.mdv_oid.as_str(),
        "{code}"
    );
    assert_eq!(json["metaDataRef"], "define.xml");
    let ig = json["itemGroupOID"].as_str().unwrap();
    let group = define
        .groups
        .get(ig)
        .unwrap_or_else(|| panic!("{code}: {ig} is no ItemGroupDef of define.xml"));
    assert_eq!(ig, format!("IG.{code}"));
    assert_eq!(json["label"], group.label.as_str(), "{code}");
    let columns = json["columns"].as_array().unwrap();
    let names: Vec<&str> = columns
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, *header, "{code}: the CSV's variables, in order");
    assert_eq!(columns.len(), group.refs.len(), "{code}");
    for (c, (item_ref, key)) in columns.iter().zip(&group.refs) {
        let oid = c["itemOID"].as_str().unwrap();
        assert_eq!(oid, item_ref, "{code}: the ItemRef in that place");
        let (name, data_type, length, label) = define
            .items
            .get(oid)
            .unwrap_or_else(|| panic!("{code}: {oid} is no ItemDef of define.xml"));
        assert_eq!(c["name"], name.as_str());
        assert_eq!(c["label"], label.as_str(), "{oid}");
        let want: &[&str] = match data_type.as_str() {
            "text" => &["string"],
            "integer" => &["integer"],
            "float" => &["float"],
            "partialDatetime" => &["date", "datetime"],
            other => panic!("{oid}: {other}"),
        };
        assert!(
            want.contains(&c["dataType"].as_str().unwrap()),
            "{oid}: {c}"
        );
        if data_type == "text" {
            assert_eq!(c["length"].as_u64(), *length, "{oid}");
        } else {
            assert!(c.get("length").is_none(), "{oid}: no text length");
        }
        assert_eq!(c["keySequence"].as_u64(), *key, "{oid}");
    }
    let jrows = json["rows"].as_array().unwrap();
    assert_eq!(
        json["records"].as_u64().unwrap() as usize,
        jrows.len(),
        "{code}"
    );
    assert_eq!(jrows.len(), rows.len(), "{code}: the CSV's rows");
    for (j, c) in jrows.iter().zip(rows) {
        let j = j.as_array().unwrap();
        assert_eq!(j.len(), header.len(), "{code}");
        for (((col, jv), cv), name) in columns.iter().zip(j).zip(c).zip(header) {
            let at = format!("{code}.{name}");
            match (col["dataType"].as_str().unwrap(), jv) {
                ("integer" | "float", Value::Null) => assert_eq!(cv, "", "{at}"),
                ("integer", Value::Number(n)) => {
                    assert!(n.is_i64(), "{at}: {n} is an integer");
                    assert_eq!(n.as_i64().unwrap().to_string(), *cv, "{at}");
                }
                ("float", Value::Number(n)) => {
                    assert_eq!(n.as_f64().unwrap(), cv.parse::<f64>().unwrap(), "{at}")
                }
                (_, Value::String(s)) if formula_like(s) => {
                    assert_eq!(*cv, format!("'{s}"), "{at}")
                }
                ("string" | "date" | "datetime", Value::String(s)) => assert_eq!(s, cv, "{at}"),
                (t, v) => panic!("{at}: {v} in a {t} column"),
            }
        }
    }
    rows.len()
}

async fn get_ok(app: &TestApp, path: &str, token: &str) -> crate::exports::Raw {
    let r = fetch(app, path, token).await;
    assert_eq!(r.status, 200, "{path}: {}", r.text());
    r
}

/// Every dataset of each shipped study, filled by `casebook seed-demo` (every form of the
/// study at three sites).
#[actix_web::test]
async fn every_dataset_of_the_five_studies_is_valid_dataset_json_equal_to_the_csv() {
    for file in [
        "kawasaki.toml",
        "thera.toml",
        "mkd.toml",
        "nlrp12.toml",
        "ssc-calcinosis.toml",
    ] {
        let path = format!("{}/config/studies/{file}", env!("CARGO_MANIFEST_DIR"));
        let app = TestApp::spawn_with(&[("CASEBOOK_STUDY", &path)]).await;
        let seeded = crate::seed::seed_demo(&app, &path, "test");
        assert!(seeded.status.success(), "{file}: {seeded:?}");
        let sponsor = app.token(Role::Sponsor, &[]).await;
        let define = get_ok(&app, "/api/v1/exports/sdtm/define.xml", &sponsor).await;
        let define = parse_define(&define.text());
        let mut codes: Vec<&str> = define
            .groups
            .keys()
            .map(|g| g.strip_prefix("IG.").unwrap())
            .collect();
        codes.sort();
        assert!(codes.len() >= 5, "{file}: {codes:?}");
        let mut files = Vec::new();
        let mut empty = Vec::new();
        for code in codes {
            let lower = code.to_ascii_lowercase();
            let csv = get_ok(&app, &format!("/api/v1/exports/sdtm/{lower}.csv"), &sponsor).await;
            let json = get_ok(
                &app,
                &format!("/api/v1/exports/sdtm/{lower}.json"),
                &sponsor,
            )
            .await;
            assert!(json.header("content-type").starts_with("application/json"));
            assert!(json
                .header("content-disposition")
                .contains(&format!("{lower}.json")));
            let value: Value = serde_json::from_slice(&json.body).expect("JSON");
            let n = assert_json_matches(code, &value, &csv.text(), &define);
            empty.extend((n == 0).then_some(code));
            files.push((format!("{file}:{code}"), json.body));
        }
        // today's VS is served in every study; those without a temperature form leave it empty
        assert!(
            empty.iter().all(|c| *c == "VS"),
            "{file}: datasets without rows: {empty:?}"
        );
        assert_schema_valid(&files);
    }
}

/// Today's datasets with text a CSV must quote or guard, and the form datasets of the SDTM
/// test study (findings, events, interventions, SUPP--).
#[actix_web::test]
async fn text_travels_exactly_as_stored_and_form_datasets_equal_their_csv() {
    let s = seeded().await;
    // an AE term a spreadsheet would run: the CSV guards it, Dataset-JSON carries it
    let formula = "=HYPERLINK(\"http://x\",\"rash\")";
    diesel::sql_query("UPDATE adverse_events SET term = $1 WHERE term = $2")
        .bind::<diesel::sql_types::Text, _>(formula)
        .bind::<diesel::sql_types::Text, _>(ODD_TERM)
        .execute(&mut s.app.conn())
        .expect("arrange the AE term");
    let define = get_ok(&s.app, "/api/v1/exports/sdtm/define.xml", &s.sponsor).await;
    let define = parse_define(&define.text());
    let mut files = Vec::new();
    for code in ["DM", "DS", "EX", "VS", "AE"] {
        let lower = code.to_ascii_lowercase();
        let csv = get_ok(
            &s.app,
            &format!("/api/v1/exports/sdtm/{lower}.csv"),
            &s.sponsor,
        )
        .await;
        let json = get_ok(
            &s.app,
            &format!("/api/v1/exports/sdtm/{lower}.json"),
            &s.sponsor,
        )
        .await;
        let value: Value = serde_json::from_slice(&json.body).unwrap();
        assert!(assert_json_matches(code, &value, &csv.text(), &define) > 0);
        if code == "AE" {
            let terms: Vec<&Value> = value["rows"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| &r[4])
                .collect();
            assert!(terms.contains(&&Value::from(formula)), "{terms:?}");
            assert!(csv.text().contains("'=HYPERLINK("), "the CSV guards it");
        }
        if code == "EX" {
            assert!(json.text().contains(r#""LOT \"B\", 2; second part""#));
        }
        files.push((code.to_owned(), json.body));
    }
    assert_schema_valid(&files);

    let s = crate::sdtm::study().await;
    let define = get_ok(&s.app, "/api/v1/exports/sdtm/define.xml", &s.sponsor).await;
    let define = parse_define(&define.text());
    let mut files = Vec::new();
    for code in ["LB", "VS", "EX", "CE", "SUPPEX", "SUPPCE", "DS"] {
        let lower = code.to_ascii_lowercase();
        let csv = get_ok(
            &s.app,
            &format!("/api/v1/exports/sdtm/{lower}.csv"),
            &s.sponsor,
        )
        .await;
        let json = get_ok(
            &s.app,
            &format!("/api/v1/exports/sdtm/{lower}.json"),
            &s.sponsor,
        )
        .await;
        let value: Value = serde_json::from_slice(&json.body).unwrap();
        let n = assert_json_matches(code, &value, &csv.text(), &define);
        if code == "LB" {
            assert_eq!(n, 5);
            // LBORRES as stored, LBSTRESN a number
            let at = |name: &str| {
                value["columns"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .position(|c| c["name"] == name)
                    .unwrap()
            };
            let rows = value["rows"].as_array().unwrap();
            assert!(rows.iter().any(|r| r[at("LBSTRESN")].is_f64()), "{rows:?}");
            assert!(rows.iter().all(|r| r[at("LBORRES")].is_string()));
            assert!(rows.iter().all(|r| r[at("LBSEQ")].is_u64()));
        }
        files.push((code.to_owned(), json.body));
    }
    assert_schema_valid(&files);
}

#[actix_web::test]
async fn dataset_json_is_audited_filtered_by_site_and_refused_as_the_csv_is() {
    let s = crate::sdtm::study().await;
    let r = get_ok(&s.app, "/api/v1/exports/sdtm/lb.json", &s.sponsor).await;
    let json: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(json["records"], 5);

    use casebook::schema::audit_log as a;
    let rows: Vec<(String, Option<String>, Option<Value>)> = a::table
        .filter(a::action.eq("export"))
        .order(a::id)
        .select((a::entity_table, a::actor_role, a::new_values))
        .load(&mut s.app.conn())
        .unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    let (entity, role, v) = &rows[0];
    let v = v.as_ref().unwrap();
    assert_eq!(entity, "LB");
    assert_eq!(role.as_deref(), Some("sponsor"));
    assert_eq!(v["format"], "sdtm-json");
    assert_eq!(v["rows"], 5);
    assert_eq!(v["bytes"], r.body.len());
    assert_eq!(v["sha256"], hex::encode(Sha256::digest(&r.body)));
    assert_eq!(v["completed"], true);

    // the sponsor sees the subjects as the CSV shows them
    let usubjid = |rows: &Value| -> Vec<String> {
        rows.as_array()
            .unwrap()
            .iter()
            .map(|r| r[2].as_str().unwrap().to_owned())
            .collect()
    };
    let dm = get_ok(&s.app, "/api/v1/exports/sdtm/dm.json", &s.sponsor).await;
    let dm: Value = serde_json::from_slice(&dm.body).unwrap();
    let csv = get_ok(&s.app, "/api/v1/exports/sdtm/dm.csv", &s.sponsor).await;
    let csv: Vec<String> = parse_csv(&csv.text())[1..]
        .iter()
        .map(|r| r[2].clone())
        .collect();
    assert_eq!(usubjid(&dm["rows"]), csv);
    assert_eq!(csv, ["SDTMTEST-FRA-001", "SDTMTEST-FRB-001"]);
    assert!(csv[0].ends_with(&s.fra));

    // the site filter
    let fra = get_ok(&s.app, "/api/v1/exports/sdtm/lb.json?site=FRA", &s.sponsor).await;
    let fra: Value = serde_json::from_slice(&fra.body).unwrap();
    assert_eq!(fra["records"], 4);
    let subjects = usubjid(&fra["rows"]);
    assert_eq!(subjects.len(), 4);
    assert!(
        subjects.iter().all(|u| u.ends_with("FRA-001")),
        "{subjects:?}"
    );
    let csv = get_ok(&s.app, "/api/v1/exports/sdtm/lb.csv?site=FRA", &s.sponsor).await;
    let define = get_ok(&s.app, "/api/v1/exports/sdtm/define.xml", &s.sponsor).await;
    assert_json_matches("LB", &fra, &csv.text(), &parse_define(&define.text()));

    // refused as the CSV is, and not audited
    let before = s
        .app
        .count("SELECT count(*) AS n FROM audit_log WHERE action = 'export'");
    s.app
        .get("/api/v1/exports/sdtm/lb.json?site=NOPE", &s.sponsor)
        .await
        .assert_problem(422, Some("site"));
    s.app
        .get("/api/v1/exports/sdtm/lb.json?subject=FRA-001", &s.sponsor)
        .await
        .assert_problem(422, None);
    for unknown in ["zz", "qs", "suppvs", "lbx", "define"] {
        let r = s
            .app
            .get(&format!("/api/v1/exports/sdtm/{unknown}.json"), &s.sponsor)
            .await;
        r.assert_problem(404, None);
    }
    let monitor = s.app.token(Role::Monitor, &["FRA"]).await;
    let inv = s.app.token(Role::Investigator, &["FRA"]).await;
    for token in [&monitor, &inv] {
        s.app
            .get("/api/v1/exports/sdtm/lb.json", token)
            .await
            .assert_problem(403, None);
    }
    assert_eq!(
        s.app
            .count("SELECT count(*) AS n FROM audit_log WHERE action = 'export'"),
        before
    );
}

/// Rows beyond 1 MiB wait in a temporary file before they are sent: the file still holds
/// every row, in order, after the metadata that counts them.
#[actix_web::test]
async fn a_dataset_larger_than_the_memory_buffer_arrives_whole() {
    let s = seeded().await;
    let added = diesel::sql_query(
        "INSERT INTO form_records (site_id, subject_id, form_id, study_version_id, \"values\", \
           created_by, updated_by) \
         SELECT s.site_id, s.id, 'temperature', (SELECT max(id) FROM study_versions), \
           jsonb_build_object('measured_at', to_char((timestamptz '2026-10-07 00:00Z' \
             + g * interval '1 minute') AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), \
             'celsius', to_char(36.0 + (g % 40) / 10.0, 'FM990.0'), 'method', 'oral', \
             'fever', false), (SELECT min(id) FROM users), (SELECT min(id) FROM users) \
         FROM subjects s, generate_series(1, 6000) g",
    )
    .execute(&mut s.app.conn())
    .expect("arrange temperatures");
    assert_eq!(added, 12_000);
    let csv = get_ok(&s.app, "/api/v1/exports/sdtm/vs.csv", &s.sponsor).await;
    let json = get_ok(&s.app, "/api/v1/exports/sdtm/vs.json", &s.sponsor).await;
    assert!(json.body.len() > 1024 * 1024, "{} bytes", json.body.len());
    let value: Value = serde_json::from_slice(&json.body).expect("whole JSON");
    let define = get_ok(&s.app, "/api/v1/exports/sdtm/define.xml", &s.sponsor).await;
    let n = assert_json_matches("VS", &value, &csv.text(), &parse_define(&define.text()));
    assert!(n > 12_000, "{n}");
    assert_schema_valid(&[("vs.json".to_owned(), json.body)]);
}

#[actix_web::test]
async fn the_openapi_document_lists_the_dataset_json_path() {
    let app = TestApp::spawn().await;
    let r = app
        .request(
            reqwest::Method::GET,
            "/api/v1/openapi.json",
            None,
            None,
            &[],
        )
        .await;
    let get = &r.body["paths"]["/api/v1/exports/sdtm/{domain}.json"]["get"];
    assert!(
        get["responses"]["200"]["content"]["application/json"].is_object(),
        "{get}"
    );
    assert!(get["summary"]
        .as_str()
        .unwrap()
        .contains("Dataset-JSON v1.1"));
}

/// `casebook export --format sdtm-json` writes the API's datasets and their define.xml.
#[actix_web::test]
async fn the_command_line_writes_dataset_json_with_its_define_xml() {
    let s = seeded().await;
    let dir = std::env::temp_dir().join(format!("casebook-djson-{}", uuid::Uuid::new_v4()));
    let files = cli_export(&s, &dir, &["--format", "sdtm-json", "--site", "FRA"]);
    let _ = std::fs::remove_dir_all(&dir);
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "ae.json",
            "cv.json",
            "define.xml",
            "dm.json",
            "ds.json",
            "ex.json",
            "fa.json",
            "vs.json"
        ]
    );
    let define = parse_define(&String::from_utf8_lossy(&files[2].1));
    let mut jsons = Vec::new();
    for (name, body) in &files {
        let Some(lower) = name.strip_suffix(".json") else {
            continue;
        };
        let value: Value = serde_json::from_slice(body).unwrap();
        let api = get_ok(
            &s.app,
            &format!("/api/v1/exports/sdtm/{lower}.csv?site=FRA"),
            &s.sponsor,
        )
        .await;
        assert_json_matches(&lower.to_ascii_uppercase(), &value, &api.text(), &define);
        jsons.push((name.clone(), body.clone()));
    }
    assert_schema_valid(&jsons);
    let formats: Vec<Option<Value>> = {
        use casebook::schema::audit_log as a;
        a::table
            .filter(a::action.eq("export"))
            .filter(a::actor_role.eq("system:cli"))
            .select(a::new_values)
            .load(&mut s.app.conn())
            .unwrap()
    };
    let json_rows = formats
        .iter()
        .filter(|v| v.as_ref().unwrap()["format"] == "sdtm-json")
        .count();
    assert_eq!(json_rows, 7, "one audit row per dataset");
}
