//! Exports through HTTP against a real database: CSV per form, CDISC ODM validated against
//! the official XSD (Python lxml), SDTM datasets read back from XPT by pyreadstat, the
//! audit of every export, and who may export.

use std::path::PathBuf;
use std::process::Command;

use casebook::auth::Role;
use casebook::export::{forms, sdtm, Domain};
use diesel::prelude::*;
use reqwest::Method;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::helpers::TestApp;

const STUDY: &str = "KD-ANAKINRA";
/// A lot number and an AE term that need CSV quoting (a lot number is one line).
const ODD_LOT: &str = "LOT \"B\", 2; second part";
pub const ODD_TERM: &str = "Rash, \"maculopapular\"\nlocal";
const ODD_QUERY: &str = "Please check, \"dose\"\nagain";

/// A response read as bytes.
pub struct Raw {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

impl Raw {
    pub fn text(&self) -> String {
        String::from_utf8(self.body.clone()).expect("UTF-8 body")
    }
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }
}

pub async fn fetch(app: &TestApp, path: &str, token: &str) -> Raw {
    let resp = app
        .client
        .get(app.url(path))
        .bearer_auth(token)
        .send()
        .await
        .expect("request sent");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.bytes().await.expect("whole body").to_vec();
    Raw {
        status,
        headers,
        body,
    }
}

/// RFC 4180 parser for the assertions (quoted fields, doubled quotes, CRLF records).
pub fn parse_csv(s: &str) -> Vec<Vec<String>> {
    assert!(s.ends_with("\r\n"), "records end with CRLF: {s:?}");
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => quoted = false,
                _ => field.push(c),
            }
            continue;
        }
        match c {
            '"' => quoted = true,
            ',' => row.push(std::mem::take(&mut field)),
            '\r' => {
                assert_eq!(chars.next(), Some('\n'), "CR only before LF outside quotes");
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            _ => field.push(c),
        }
    }
    rows
}

/// Rows as maps column -> value, with the header checked against `columns`.
pub fn records(raw: &Raw, columns: &[&str]) -> Vec<std::collections::HashMap<String, String>> {
    let rows = parse_csv(&raw.text());
    assert_eq!(rows[0], columns, "header row");
    rows[1..]
        .iter()
        .map(|r| {
            assert_eq!(r.len(), columns.len(), "{r:?}");
            columns
                .iter()
                .map(|c| (*c).to_owned())
                .zip(r.iter().cloned())
                .collect()
        })
        .collect()
}

fn form_columns(form: casebook::export::Form) -> Vec<&'static str> {
    forms::header(form)
}

pub struct Seeded {
    pub app: TestApp,
    pub sponsor: String,
    pub admin: String,
}

/// FRA-001 and FRB-001 (consent, day-1 injection at 06:00Z, temperature 38.5 at 12:00Z),
/// plus for FRA-001: a day-2 injection with an odd lot number, a temperature marked deleted,
/// and a serious adverse event with an odd term and a partial end date.
pub async fn seeded() -> Seeded {
    let app = TestApp::spawn().await;
    app.site("FRA", "Europe/Paris");
    app.site("FRB", "Europe/Paris");
    crate::clinical::matrix_fixture(&app).await;
    let inv = app.token(Role::Investigator, &["FRA"]).await;
    let mut day2 = crate::clinical::injection(2, "2026-10-06T06:00:00Z", 40.0);
    day2["lot_number"] = json!(ODD_LOT);
    let r = app
        .post("/api/v1/subjects/FRA-001/injections", &inv, &day2)
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let r = app
        .post(
            "/api/v1/subjects/FRA-001/temperatures",
            &inv,
            &json!({"measured_at": "2026-10-06T12:00:00Z", "celsius": 37.2, "method": "axillary"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let id = r.body["id"].as_i64().unwrap();
    let r = app
        .request(
            Method::DELETE,
            &format!("/api/v1/subjects/FRA-001/temperatures/{id}"),
            Some(&inv),
            Some(&json!({"reason": "wrong patient"})),
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    // the adverse event straight into its form records (arrange step)
    let mut c = app.conn();
    diesel::sql_query(
        "INSERT INTO form_records (site_id, subject_id, form_id, study_version_id, \"values\", \
           created_by, updated_by) \
         SELECT s.site_id, s.id, 'adverse_event', (SELECT max(id) FROM study_versions), \
           jsonb_build_object('term', $1::text, 'meddra_code', '10037844', \
             'meddra_term', 'Rash maculo-papular', 'onset_date', '2026-10-06', \
             'end_date', '2026-10', 'grade', 2, 'serious', true, \
             'seriousness_criteria', '[\"hospitalisation\"]'::jsonb, 'relationship', 'possible', \
             'action_taken', 'none', 'outcome', 'recovering', 'awareness_date', '2026-10-07'), \
           (SELECT min(id) FROM users), (SELECT min(id) FROM users) \
         FROM subjects s WHERE s.subject_code = 'FRA-001'",
    )
    .bind::<diesel::sql_types::Text, _>(ODD_TERM)
    .execute(&mut c)
    .expect("insert adverse event");
    // a data query with two messages, and a casebook signature (arrange step)
    diesel::sql_query(
        "WITH q AS (INSERT INTO queries (site_id, subject_id, record_type, record_id, field, \
           status, origin, created_by) \
           SELECT s.site_id, s.id, 'form_records', 1, 'dose_mg', 'answered', 'manual', \
             (SELECT min(id) FROM users) FROM subjects s WHERE s.subject_code = 'FRA-001' \
           RETURNING id) \
         INSERT INTO query_messages (query_id, kind, text, author_id) \
         SELECT q.id, m.kind, m.text, (SELECT min(id) FROM users) FROM q, \
           (VALUES (1, 'open', $1), (2, 'answer', 'checked')) m(n, kind, text) ORDER BY m.n",
    )
    .bind::<diesel::sql_types::Text, _>(ODD_QUERY)
    .execute(&mut c)
    .expect("insert query");
    diesel::sql_query(
        "INSERT INTO signatures (site_id, subject_id, signer_id, printed_name, meaning, \
           casebook_sha256) \
         SELECT s.site_id, s.id, (SELECT min(id) FROM users), 'Dr Printed Name', \
           'I approve this casebook', repeat('a', 64) \
         FROM subjects s WHERE s.subject_code = 'FRA-001'",
    )
    .execute(&mut c)
    .expect("insert signature");
    let sponsor = app.token(Role::Sponsor, &[]).await;
    let admin = app.token(Role::Admin, &[]).await;
    Seeded {
        app,
        sponsor,
        admin,
    }
}

#[actix_web::test]
async fn every_form_exports_as_csv_with_its_documented_columns() {
    let s = seeded().await;
    let study = s.app.get("/api/v1/study", &s.sponsor).await;
    use casebook::export::Form;
    for (form, rows) in [
        (Form::Subjects, 2),
        (Form::Consents, 2),
        (Form::Injections, 3),
        (Form::Temperatures, 2),
        (Form::AdverseEvents, 3),
        (
            Form::Queries,
            s.app.count("SELECT count(*) AS n FROM queries") as usize,
        ),
    ] {
        let name = form.table();
        let r = fetch(&s.app, &format!("/api/v1/exports/{name}.csv"), &s.sponsor).await;
        assert_eq!(r.status, 200, "{name}: {}", r.text());
        assert!(r.header("content-type").starts_with("text/csv"), "{name}");
        assert!(
            r.header("content-disposition")
                .contains(&format!("{STUDY}_{name}_")),
            "{}",
            r.header("content-disposition")
        );
        assert_eq!(r.header("x-casebook-protocol"), STUDY);
        assert_eq!(
            r.header("x-casebook-protocol-hash"),
            study.body["file_hash"].as_str().unwrap()
        );
        let recs = records(&r, &form_columns(form));
        assert_eq!(recs.len(), rows, "{name}: {}", r.text());
    }
    let r = fetch(&s.app, "/api/v1/exports/queries.csv", &s.sponsor).await;
    let recs = records(&r, &form_columns(Form::Queries));
    let q = recs.iter().find(|r| r["opened_text"] == ODD_QUERY).unwrap();
    assert_eq!(q["messages"], "2");
    assert_eq!(q["last_message_kind"], "answer");
    assert_eq!(q["status"], "answered");
    assert_eq!(q["field"], "dose_mg");
    assert_eq!(q["subject_code"], "FRA-001");
    let r = fetch(&s.app, "/api/v1/exports/nonsense.csv", &s.admin).await;
    assert_eq!(r.status, 404);
}

#[actix_web::test]
async fn the_openapi_description_documents_every_column() {
    let s = seeded().await;
    let doc = s
        .app
        .request(Method::GET, "/api/v1/openapi.json", None, None, &[])
        .await;
    let op = &doc.body["paths"]["/api/v1/exports/{form}.csv"]["get"];
    let text = format!("{} {}", op["summary"], op["description"]).replace("\\n", " ");
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    use casebook::export::Form;
    for form in [
        Form::Subjects,
        Form::Consents,
        Form::Injections,
        Form::Temperatures,
        Form::AdverseEvents,
        Form::Queries,
    ] {
        let listed = format!("{}: {}", form.table(), forms::columns(form).join(", "));
        assert!(text.contains(&listed), "missing `{listed}` in {text}");
    }
    assert!(text.contains(&forms::BOOKKEEPING.join(", ")));
}

#[actix_web::test]
async fn csv_quotes_commas_quotes_and_newlines_and_matches_the_api() {
    let s = seeded().await;
    let r = fetch(&s.app, "/api/v1/exports/injections.csv", &s.sponsor).await;
    let text = r.text();
    assert!(text.contains("\"LOT \"\"B\"\", 2; second part\""), "{text}");
    let recs = records(&r, &form_columns(casebook::export::Form::Injections));
    let odd = recs.iter().find(|r| r["study_day"] == "2").unwrap();
    assert_eq!(odd["lot_number"], ODD_LOT);

    // field by field against what the API shows
    let api = s
        .app
        .get("/api/v1/subjects/FRA-001/injections", &s.sponsor)
        .await;
    for inj in api.body.as_array().unwrap() {
        let id = inj["id"].as_i64().unwrap().to_string();
        let row = recs.iter().find(|r| r["id"] == id).unwrap();
        assert_eq!(row["subject_code"], "FRA-001");
        assert_eq!(row["site_code"], "FRA");
        for f in [
            "lot_number",
            "injection_site",
            "route",
            "administered_at",
            "created_at",
        ] {
            assert_eq!(row[f], inj[f].as_str().unwrap(), "{f}");
        }
        for f in ["dose_mg", "weight_kg", "expected_dose_mg"] {
            assert_eq!(
                row[f].parse::<f64>().unwrap(),
                inj[f].as_f64().unwrap(),
                "{f}"
            );
        }
        for f in ["study_day", "version", "created_by", "updated_by"] {
            assert_eq!(row[f], inj[f].to_string(), "{f}");
        }
        for f in ["given", "protocol_deviation"] {
            assert_eq!(row[f], inj[f].to_string(), "{f}");
        }
    }

    let r = fetch(&s.app, "/api/v1/exports/adverse_events.csv", &s.admin).await;
    let recs = records(&r, &form_columns(casebook::export::Form::AdverseEvents));
    let odd = recs.iter().find(|r| r["term"] == ODD_TERM).unwrap();
    assert_eq!(odd["end_date"], "2026-10");
    assert_eq!(odd["seriousness_criteria"], "hospitalisation");
    assert_eq!(odd["serious"], "true");
    assert_eq!(odd["awareness_date"], "2026-10-07");
}

#[actix_web::test]
async fn deleted_records_only_with_include_deleted() {
    let s = seeded().await;
    let cols = form_columns(casebook::export::Form::Temperatures);
    let r = fetch(&s.app, "/api/v1/exports/temperatures.csv", &s.sponsor).await;
    let recs = records(&r, &cols);
    assert_eq!(recs.len(), 2);
    assert!(recs.iter().all(|r| r["deleted_at"].is_empty()));
    let r = fetch(
        &s.app,
        "/api/v1/exports/temperatures.csv?include_deleted=true",
        &s.sponsor,
    )
    .await;
    let recs = records(&r, &cols);
    assert_eq!(recs.len(), 3);
    let deleted: Vec<_> = recs
        .iter()
        .filter(|r| !r["deleted_at"].is_empty())
        .collect();
    assert_eq!(deleted.len(), 1);
    assert_eq!(deleted[0]["deleted_reason"], "wrong patient");
    assert_eq!(deleted[0]["celsius"], "37.2");
    assert_eq!(deleted[0]["method"], "axillary");
    assert!(deleted[0]["deleted_at"].ends_with('Z'));
}

#[actix_web::test]
async fn site_and_date_filters_and_unknown_parameters() {
    let s = seeded().await;
    let cols = form_columns(casebook::export::Form::Temperatures);
    let r = fetch(
        &s.app,
        "/api/v1/exports/temperatures.csv?site=FRB",
        &s.sponsor,
    )
    .await;
    let recs = records(&r, &cols);
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0]["subject_code"], "FRB-001");
    assert_eq!(recs[0]["measured_at"], "2026-10-05T12:00:00Z");

    let path =
        "/api/v1/exports/temperatures.csv?include_deleted=true&from=2026-10-06&to=2026-10-06";
    let recs = records(&fetch(&s.app, path, &s.sponsor).await, &cols);
    assert_eq!(recs.len(), 1, "only the measurement of 2026-10-06");
    let path = "/api/v1/exports/temperatures.csv?to=2026-10-05";
    assert_eq!(
        records(&fetch(&s.app, path, &s.sponsor).await, &cols).len(),
        2
    );
    let path = "/api/v1/exports/consents.csv?from=2026-10-02";
    let cols = form_columns(casebook::export::Form::Consents);
    assert_eq!(
        records(&fetch(&s.app, path, &s.sponsor).await, &cols).len(),
        0
    );

    let r = s
        .app
        .get("/api/v1/exports/temperatures.csv?sites=FRA", &s.sponsor)
        .await;
    r.assert_problem(422, Some("sites"));
    let r = s
        .app
        .get("/api/v1/exports/odm.xml?include_deleted=true", &s.sponsor)
        .await;
    r.assert_problem(422, Some("include_deleted"));
    let r = s
        .app
        .get("/api/v1/exports/temperatures.csv?site=NOPE", &s.sponsor)
        .await;
    r.assert_problem(422, Some("site"));
    let r = s
        .app
        .get(
            "/api/v1/exports/temperatures.csv?from=2026-10-06&to=2026-10-05",
            &s.sponsor,
        )
        .await;
    r.assert_problem(422, Some("to"));
    assert_eq!(
        s.app
            .count("SELECT count(*) AS n FROM audit_log WHERE action = 'export'"),
        4,
        "refused exports are not audited, served ones are"
    );
}

#[actix_web::test]
async fn monitors_and_investigators_may_not_export() {
    let s = seeded().await;
    let monitor = s.app.token(Role::Monitor, &["FRA"]).await;
    let inv = s.app.token(Role::Investigator, &["FRA"]).await;
    for path in [
        "/api/v1/exports/temperatures.csv",
        "/api/v1/exports/odm.xml?audit=true",
        "/api/v1/exports/sdtm/vs.csv",
        "/api/v1/exports/sdtm/ae.xpt",
    ] {
        for token in [&monitor, &inv] {
            s.app.get(path, token).await.assert_problem(403, None);
        }
        assert_eq!(fetch(&s.app, path, &s.admin).await.status, 200, "{path}");
    }
}

#[actix_web::test]
async fn an_export_leaves_one_audit_row_with_its_row_count_and_hash() {
    let s = seeded().await;
    let r = fetch(
        &s.app,
        "/api/v1/exports/temperatures.csv?site=FRA&include_deleted=true",
        &s.sponsor,
    )
    .await;
    assert_eq!(r.status, 200);
    let mut c = s.app.conn();
    let rows: Vec<(String, Option<String>, Option<Value>)> = casebook::schema::audit_log::table
        .filter(casebook::schema::audit_log::action.eq("export"))
        .select((
            casebook::schema::audit_log::entity_table,
            casebook::schema::audit_log::actor_role,
            casebook::schema::audit_log::new_values,
        ))
        .load(&mut c)
        .unwrap();
    assert_eq!(rows.len(), 1);
    let (entity, role, values) = &rows[0];
    assert_eq!(entity, "temperatures");
    assert_eq!(role.as_deref(), Some("sponsor"));
    let v = values.as_ref().unwrap();
    assert_eq!(v["format"], "csv");
    assert_eq!(v["rows"], 2);
    assert_eq!(v["completed"], true);
    assert_eq!(v["filters"]["site"], "FRA");
    assert_eq!(v["filters"]["include_deleted"], true);
    assert_eq!(v["protocol"]["id"], STUDY);
    assert_eq!(
        v["protocol"]["file_hash"],
        r.header("x-casebook-protocol-hash")
    );
    assert_eq!(v["bytes"], r.body.len());
    assert_eq!(v["sha256"], hex::encode(Sha256::digest(&r.body)));
}

// ---------------------------------------------------------------- Python-based readers

/// A Python that can import `module`: $CASEBOOK_PYTHON, the project's .venv, or python3.
/// Fails the test (never skips it) when there is none.
pub fn python_with(module: &str) -> String {
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    let mut candidates = Vec::new();
    if let Ok(p) = std::env::var("CASEBOOK_PYTHON") {
        candidates.push(p);
    }
    candidates.push(venv.to_string_lossy().into_owned());
    candidates.push("python3".into());
    for py in &candidates {
        let ok = Command::new(py)
            .args(["-c", &format!("import {module}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return py.clone();
        }
    }
    panic!(
        "this test needs Python with `{module}`: run scripts/test.sh (it sets up .venv), or \
         `python3 -m venv .venv && .venv/bin/pip install lxml pyreadstat jsonschema`, or point \
         CASEBOOK_PYTHON at such a python (tried: {candidates:?})"
    );
}

pub fn temp_file(ext: &str, bytes: &[u8]) -> PathBuf {
    let p = std::env::temp_dir().join(format!(
        "casebook-export-{}.{ext}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::write(&p, bytes).expect("write temp file");
    p
}

const VALIDATE_ODM: &str = r#"
import sys
from lxml import etree
schema = etree.XMLSchema(etree.parse(sys.argv[1]))
doc = etree.parse(sys.argv[2])
if not schema.validate(doc):
    for e in schema.error_log:
        print(e)
    sys.exit(1)
print("valid")
"#;

/// Validates against tests/schemas/odm-1.3.2/ODM1-3-2.xsd; panics with lxml's errors.
pub fn assert_valid_odm(xml: &[u8]) {
    assert_valid_against("odm-1.3.2/ODM1-3-2.xsd", xml, "ODM");
}

/// Validates against `tests/schemas/<xsd>`; panics with lxml's errors.
pub fn assert_valid_against(xsd: &str, xml: &[u8], what: &str) {
    let py = python_with("lxml");
    let xsd = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/schemas")
        .join(xsd);
    let file = temp_file("xml", xml);
    let out = Command::new(&py)
        .args(["-c", VALIDATE_ODM])
        .arg(&xsd)
        .arg(&file)
        .output()
        .expect("run python");
    let _ = std::fs::remove_file(&file);
    assert!(
        out.status.success(),
        "{what} does not validate:\n{}{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(xml)
            .chars()
            .take(3000)
            .collect::<String>()
    );
}

#[actix_web::test]
async fn odm_validates_against_the_official_schema_with_and_without_audit() {
    let s = seeded().await;
    let r = fetch(&s.app, "/api/v1/exports/odm.xml", &s.sponsor).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.header("content-type").starts_with("application/xml"));
    assert_valid_odm(&r.body);
    let xml = r.text();
    assert!(xml.contains("FileType=\"Snapshot\""));
    assert!(xml.contains(&format!("<ProtocolName>{STUDY}</ProtocolName>")));
    assert!(xml.contains("<SubjectData SubjectKey=\"FRA-001\">"));
    assert!(xml.contains("<ItemData ItemOID=\"IT.TEMP.CELSIUS\" Value=\"38.5\"/>"));
    assert!(xml
        .contains("<ItemData ItemOID=\"IT.INJ.ADMINISTERED_AT\" Value=\"2026-10-05T06:00:00Z\"/>"));
    assert!(xml.contains("ItemGroupRepeatKey="));
    assert!(xml.contains("IT.ELIG.INC-KD"));
    // the odd values survive XML escaping
    assert!(
        xml.contains("Value=\"LOT &quot;B&quot;, 2; second part\""),
        "lot"
    );
    assert!(
        xml.contains("Value=\"Rash, &quot;maculopapular&quot;&#10;local\""),
        "term"
    );
    assert!(
        !xml.contains("37.2"),
        "the deleted temperature is not in a snapshot"
    );
    assert_eq!(xml.matches("<AuditRecord").count(), 0);
    // the casebook signature, without the printed name for a sponsor
    assert_eq!(xml.matches("<Signature>").count(), 1);
    assert!(xml.contains("<Meaning>I approve this casebook</Meaning>"));
    assert!(!xml.contains("Dr Printed Name"));

    let r = fetch(&s.app, "/api/v1/exports/odm.xml?audit=true", &s.sponsor).await;
    assert_eq!(r.status, 200);
    assert_valid_odm(&r.body);
    let xml = r.text();
    assert!(xml.contains("FileType=\"Transactional\""));
    assert!(
        xml.contains("TransactionType=\"Remove\""),
        "the deletion is a transaction"
    );
    assert!(xml.contains("<ReasonForChange>wrong patient</ReasonForChange>"));
    // sponsors see pseudonymous users only
    assert!(xml.contains("<User OID=\"USR."));
    assert!(
        !xml.contains("@test.casebook"),
        "no e-mail addresses for sponsors"
    );
    assert!(!xml.contains("Test User"), "no names for sponsors");

    let r = fetch(
        &s.app,
        "/api/v1/exports/odm.xml?audit=true&site=FRB",
        &s.admin,
    )
    .await;
    assert_valid_odm(&r.body);
    let xml = r.text();
    assert!(
        xml.contains("@test.casebook"),
        "admins see who changed what"
    );
    assert!(xml.contains("Granularity=\"SingleSite\""));
    assert!(!xml.contains("SubjectKey=\"FRA-001\""));
}

#[actix_web::test]
async fn odm_has_an_audit_record_for_every_change_of_a_record() {
    let s = seeded().await;
    // a correction, so that records have more than one change
    let inv = s.app.token(Role::Investigator, &["FRA"]).await;
    let r = s
        .app
        .patch(
            "/api/v1/subjects/FRA-001/temperatures/2",
            &inv,
            1,
            &json!({"celsius": 38.1, "reason": "misread"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let changes = s.app.count(
        "SELECT count(*) AS n FROM audit_log WHERE subject_id IS NOT NULL AND (entity_table IN \
         ('subjects', 'consents', 'injections', 'temperatures', 'adverse_events') \
         OR (entity_table = 'form_records' AND action <> 'migrate'))",
    );
    let r = fetch(&s.app, "/api/v1/exports/odm.xml?audit=true", &s.admin).await;
    assert_valid_odm(&r.body);
    let xml = r.text();
    assert_eq!(xml.matches("<AuditRecord").count() as i64, changes);
    assert!(xml.contains("<ReasonForChange>misread</ReasonForChange>"));
    assert!(xml.contains("TransactionType=\"Update\""));
    assert!(xml.contains("<ItemData ItemOID=\"IT.TEMP.CELSIUS\" Value=\"38.1\"/>"));
    // the export itself is audited with the number of item groups
    let n: Value = diesel::sql_query(
        "SELECT new_values FROM audit_log WHERE action = 'export' AND entity_table = 'odm'",
    )
    .get_result::<NewValues>(&mut s.app.conn())
    .unwrap()
    .new_values;
    assert_eq!(n["rows"].as_i64().unwrap(), changes);
}

#[derive(QueryableByName)]
struct NewValues {
    #[diesel(sql_type = diesel::sql_types::Jsonb)]
    new_values: Value,
}

const READ_XPT: &str = r#"
import sys, json, math
import pyreadstat
data, meta = pyreadstat.read_xport(sys.argv[1], output_format="dict")
columns = [data[name] for name in meta.column_names]
rows = []
for i in range(meta.number_rows):
    row = []
    for col in columns:
        v = col[i]
        if isinstance(v, str):
            row.append(v)
        elif v is None:
            row.append(None)
        else:
            v = float(v)
            row.append(None if math.isnan(v) else v)
    rows.append(row)
print(json.dumps({"names": list(meta.column_names), "labels": list(meta.column_labels),
                  "table": meta.table_name, "file_label": meta.file_label, "rows": rows}))
"#;

pub fn read_xpt(bytes: &[u8]) -> Value {
    let py = python_with("pyreadstat");
    let file = temp_file("xpt", bytes);
    let out = Command::new(&py)
        .args(["-c", READ_XPT])
        .arg(&file)
        .output()
        .expect("run python");
    let _ = std::fs::remove_file(&file);
    assert!(
        out.status.success(),
        "pyreadstat could not read the XPT: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON from the reader")
}

#[actix_web::test]
async fn xpt_reads_back_with_the_same_names_labels_and_values_as_the_csv() {
    let s = seeded().await;
    for domain in ["dm", "ds", "ex", "vs", "ae"] {
        let csv = fetch(
            &s.app,
            &format!("/api/v1/exports/sdtm/{domain}.csv"),
            &s.sponsor,
        )
        .await;
        assert_eq!(csv.status, 200, "{}", csv.text());
        let rows = parse_csv(&csv.text());
        let xpt = fetch(
            &s.app,
            &format!("/api/v1/exports/sdtm/{domain}.xpt"),
            &s.sponsor,
        )
        .await;
        assert_eq!(xpt.status, 200);
        assert_eq!(xpt.body.len() % 80, 0, "{domain}: 80-byte records");
        assert!(xpt
            .header("content-disposition")
            .contains(&format!("{domain}.xpt")));
        let read = read_xpt(&xpt.body);
        let code = domain.to_ascii_uppercase();
        assert_eq!(read["table"], code.as_str());
        let def = casebook::services::study::load(&PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/config/studies/kawasaki.toml"
        )))
        .unwrap();
        let vars = sdtm::vars(&Domain::parse(domain).unwrap(), STUDY, &def);
        let names: Vec<&str> = vars.iter().map(|v| v.name.as_ref()).collect();
        let labels: Vec<&str> = vars.iter().map(|v| v.label.as_ref()).collect();
        assert_eq!(read["names"], json!(names), "{domain}");
        assert_eq!(read["labels"], json!(labels), "{domain}");
        assert_eq!(rows[0], names, "{domain}: the CSV has the same variables");
        let xrows = read["rows"].as_array().unwrap();
        assert_eq!(xrows.len(), rows.len() - 1, "{domain}: same number of rows");
        assert!(!xrows.is_empty(), "{domain}: the fixture has rows");
        for (x, c) in xrows.iter().zip(&rows[1..]) {
            for ((name, xv), cv) in names.iter().zip(x.as_array().unwrap()).zip(c) {
                match xv {
                    Value::Null => assert_eq!(cv, "", "{domain}.{name}"),
                    Value::Number(n) => {
                        assert_eq!(
                            n.as_f64().unwrap(),
                            cv.parse::<f64>().unwrap(),
                            "{domain}.{name}"
                        )
                    }
                    // XPT pads character values with blanks; readers strip them
                    Value::String(xs) => {
                        assert_eq!(xs.trim_end(), cv.trim_end(), "{domain}.{name}")
                    }
                    other => panic!("{domain}.{name}: {other}"),
                }
            }
        }
    }
}

#[actix_web::test]
async fn sdtm_derives_usubjid_study_days_and_the_controlled_terms() {
    let s = seeded().await;
    let get = |d: &'static str| {
        let app = &s.app;
        let token = s.sponsor.clone();
        async move {
            let r = fetch(app, &format!("/api/v1/exports/sdtm/{d}.csv"), &token).await;
            let rows = parse_csv(&r.text());
            let header = rows[0].clone();
            rows[1..]
                .iter()
                .map(|r| {
                    header
                        .iter()
                        .cloned()
                        .zip(r.iter().cloned())
                        .collect::<std::collections::HashMap<_, _>>()
                })
                .collect::<Vec<_>>()
        }
    };
    let dm = get("dm").await;
    assert_eq!(dm.len(), 2);
    let fra = dm.iter().find(|r| r["SUBJID"] == "FRA-001").unwrap();
    assert_eq!(fra["USUBJID"], format!("{STUDY}-FRA-001"));
    // 06:00Z is 08:00 in Paris in October (CEST)
    assert_eq!(fra["RFSTDTC"], "2026-10-05T08:00:00");
    assert_eq!(fra["RFENDTC"], "2026-10-06T08:00:00");
    assert_eq!(fra["RFICDTC"], "2026-10-01");
    assert_eq!(fra["SEX"], "F");
    assert_eq!(fra["AGE"], "3");
    assert_eq!(fra["SITEID"], "FRA");

    let ds = get("ds").await;
    let consent = ds
        .iter()
        .find(|r| r["USUBJID"].ends_with("FRA-001"))
        .unwrap();
    assert_eq!(consent["DSDECOD"], "INFORMED CONSENT OBTAINED");
    assert_eq!(consent["DSSTDTC"], "2026-10-01");
    assert_eq!(consent["DSSTDY"], "-4", "no day 0: four days before day 1");

    let ex = get("ex").await;
    let fra_ex: Vec<_> = ex
        .iter()
        .filter(|r| r["USUBJID"].ends_with("FRA-001"))
        .collect();
    assert_eq!(fra_ex.len(), 2);
    assert_eq!(fra_ex[0]["EXSEQ"], "1");
    assert_eq!(fra_ex[1]["EXSEQ"], "2");
    assert_eq!(fra_ex[1]["EXSTDY"], "2");
    assert_eq!(fra_ex[1]["EXLOT"], ODD_LOT);
    assert_eq!(fra_ex[0]["EXDOSE"], "40");
    assert_eq!(fra_ex[0]["EXROUTE"], "SUBCUTANEOUS");
    assert_eq!(fra_ex[0]["EXLOC"], "THIGH");

    let vs = get("vs").await;
    assert_eq!(vs.len(), 2, "the deleted temperature is not in SDTM");
    let v = &vs[0];
    assert_eq!(v["VSTESTCD"], "TEMP");
    assert_eq!(v["VSORRES"], "38.5");
    assert_eq!(v["VSORRESU"], "C");
    assert_eq!(v["VSSTRESN"], "38.5");
    assert_eq!(v["VSLOC"], "RECTUM");
    assert_eq!(v["VSDTC"], "2026-10-05T14:00:00");
    assert_eq!(v["VSDY"], "1");

    let ae = get("ae").await;
    assert_eq!(
        ae.len(),
        3,
        "one event each from the matrix fixture, and ours"
    );
    let a = ae.iter().find(|r| r["AETERM"] == ODD_TERM).unwrap();
    assert_eq!(a["AETERM"], ODD_TERM);
    assert_eq!(a["AEDECOD"], "Rash maculo-papular");
    // the form collects the lowest level term's code, and the definition says so
    assert_eq!(a["AELLTCD"], "10037844");
    assert!(!a.contains_key("AEPTCD"));
    assert_eq!(a["AESTDTC"], "2026-10-06");
    assert_eq!(a["AEENDTC"], "2026-10", "partial dates stay partial");
    assert_eq!(a["AESTDY"], "2");
    assert_eq!(a["AEENDY"], "");
    assert_eq!(a["AETOXGR"], "2");
    assert_eq!(a["AESER"], "Y");
    assert_eq!(a["AESHOSP"], "Y");
    assert_eq!(a["AESDTH"], "N");
    assert_eq!(a["AEREL"], "POSSIBLY RELATED");
    assert_eq!(a["AEACN"], "DOSE NOT CHANGED");
    assert_eq!(a["AEOUT"], "RECOVERING/RESOLVING");
}

/// A client that leaves mid-export stops the work, and the export is audited as not
/// completed with the rows written so far; while exports run, further ones wait (429).
#[actix_web::test]
async fn clients_that_leave_stop_the_export_which_is_audited_as_incomplete() {
    let s = seeded().await;
    let mut c = s.app.conn();
    diesel::sql_query(
        "INSERT INTO form_records (site_id, subject_id, form_id, study_version_id, \"values\", \
           created_by, updated_by) \
         SELECT s.site_id, s.id, 'temperature', (SELECT max(id) FROM study_versions), \
           jsonb_build_object('measured_at', to_char((timestamptz '2026-10-05 00:00Z' \
             + g * interval '1 second') AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), \
             'celsius', '37.0', 'method', 'rectal', 'fever', false), 1, 1 \
         FROM subjects s, generate_series(1, 200000) g WHERE s.subject_code = 'FRA-001'",
    )
    .execute(&mut c)
    .unwrap();
    // a fresh connection: the insert above may outlast the server's keep-alive
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    // exports hold a connection while they stream: a quarter of the pool at most
    let limit = (s.app.settings.database.pool_max_size / 4).max(1) as usize;
    let started = std::time::Instant::now();
    let mut held = Vec::new();
    for _ in 0..limit {
        let mut resp = client
            .get(s.app.url("/api/v1/exports/temperatures.csv"))
            .bearer_auth(&s.sponsor)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert!(resp.chunk().await.unwrap().is_some());
        held.push(resp);
    }
    let busy = client
        .get(s.app.url("/api/v1/exports/sdtm/vs.csv"))
        .bearer_auth(&s.sponsor)
        .send()
        .await
        .unwrap();
    assert_eq!(busy.status(), 429);
    assert!(busy.headers().contains_key("retry-after"));
    // the clients leave without reading the rest
    drop(held);
    let mut audited = Vec::new();
    for _ in 0..200 {
        audited = casebook::schema::audit_log::table
            .filter(casebook::schema::audit_log::action.eq("export"))
            .select(casebook::schema::audit_log::new_values)
            .load::<Option<Value>>(&mut c)
            .unwrap();
        if audited.len() == limit {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(audited.len(), limit, "every interrupted export is audited");
    // the export slots are released just after those commits
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    for v in audited {
        let v = v.unwrap();
        assert_eq!(v["completed"], false, "{v}");
        assert_eq!(v["ending"], "client disconnected", "{v}");
        let rows = v["rows"].as_i64().unwrap();
        assert!(rows > 0 && rows < 200_002, "{v}");
        eprintln!(
            "interrupted after {rows} rows, {} ms",
            started.elapsed().as_millis()
        );
    }

    // the whole export, for a rough rate
    let started = std::time::Instant::now();
    let body = client
        .get(s.app.url("/api/v1/exports/temperatures.csv"))
        .bearer_auth(&s.sponsor)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let ms = started.elapsed().as_millis().max(1);
    let n = body.iter().filter(|b| **b == b'\n').count() - 1;
    assert_eq!(n, 200_002);
    eprintln!(
        "200,002 temperature rows, {} bytes in {ms} ms ({} rows/s)",
        body.len(),
        n as u128 * 1000 / ms
    );
}

/// Runs `casebook export` (the built binary) on the test database; returns the files it
/// wrote, by name.
pub fn cli_export(s: &Seeded, dir: &std::path::Path, args: &[&str]) -> Vec<(String, Vec<u8>)> {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(env!("CARGO_BIN_EXE_casebook"))
        .arg("export")
        .args(args)
        .arg("--out")
        .arg(dir)
        .current_dir(&manifest)
        .env("DATABASE_URL", &s.app.db.url)
        .env("CASEBOOK_ENV", "test")
        .env("CASEBOOK_CONFIG_DIR", manifest.join("config"))
        .env(
            "CASEBOOK_PROTOCOL",
            manifest.join("config/protocols/kawasaki.toml"),
        )
        .env("RUST_LOG", "warn")
        .output()
        .expect("run casebook export");
    assert!(
        out.status.success(),
        "casebook export {args:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .expect("out dir")
        .map(|e| {
            let e = e.expect("dir entry");
            let name = e.file_name().to_string_lossy().into_owned();
            (name, std::fs::read(e.path()).expect("read export file"))
        })
        .collect();
    files.sort();
    files
}

#[actix_web::test]
async fn the_command_line_exports_files_equal_to_the_api_and_audits_them() {
    let s = seeded().await;
    /// Removes the output directory, also when an assertion fails.
    struct TempDir(PathBuf);
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let base = TempDir(std::env::temp_dir().join(format!("casebook_cli_{}", s.app.db.name)));
    let (csv_dir, odm_dir, xpt_dir) = (base.0.join("csv"), base.0.join("odm"), base.0.join("xpt"));
    let files = cli_export(&s, &csv_dir, &["--format", "csv"]);
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    // today's six, and Kawasaki's echocardiography and disease activity
    assert_eq!(names.len(), 8, "one file per form: {names:?}");
    let (_, echo) = files
        .iter()
        .find(|(n, _)| n.starts_with(&format!("{STUDY}_echocardiography_")))
        .unwrap_or_else(|| panic!("no echocardiography file in {names:?}"));
    let api = fetch(&s.app, "/api/v1/exports/echocardiography.csv", &s.sponsor).await;
    assert_eq!(String::from_utf8_lossy(echo), api.text());
    use casebook::export::Form;
    for form in [
        Form::Subjects,
        Form::Consents,
        Form::Injections,
        Form::Temperatures,
        Form::AdverseEvents,
        Form::Queries,
    ] {
        let prefix = format!("{STUDY}_{}_", form.table());
        let (_, body) = files
            .iter()
            .find(|(n, _)| n.starts_with(&prefix) && n.ends_with(".csv"))
            .unwrap_or_else(|| panic!("no {prefix}*.csv in {names:?}"));
        // the same bytes as the API's export of that form
        let api = fetch(
            &s.app,
            &format!("/api/v1/exports/{}.csv", form.table()),
            &s.sponsor,
        )
        .await;
        assert_eq!(api.status, 200);
        assert_eq!(
            String::from_utf8_lossy(body),
            api.text(),
            "{}",
            form.table()
        );
    }
    // the temperature rows are those the API shows (the deleted one left out)
    let (_, temps) = files
        .iter()
        .find(|(n, _)| n.contains("_temperatures_"))
        .unwrap();
    let raw = Raw {
        status: 200,
        headers: Default::default(),
        body: temps.clone(),
    };
    let recs = records(&raw, &form_columns(Form::Temperatures));
    let mut shown = Vec::new();
    for subject in ["FRA-001", "FRB-001"] {
        let api = s
            .app
            .get(
                &format!("/api/v1/subjects/{subject}/temperatures"),
                &s.sponsor,
            )
            .await;
        assert_eq!(api.status, 200, "{}", api.text);
        for t in api.body.as_array().unwrap() {
            let id = t["id"].as_i64().unwrap().to_string();
            if !t["deleted_at"].is_null() {
                assert!(recs.iter().all(|r| r["id"] != id), "deleted {id} exported");
                continue;
            }
            let row = recs
                .iter()
                .find(|r| r["id"] == id)
                .unwrap_or_else(|| panic!("temperature {id} not exported"));
            assert_eq!(row["subject_code"], subject);
            assert_eq!(row["measured_at"], t["measured_at"].as_str().unwrap());
            assert_eq!(row["method"], t["method"].as_str().unwrap());
            assert_eq!(
                row["celsius"].parse::<f64>().unwrap(),
                t["celsius"].as_f64().unwrap()
            );
            shown.push(id);
        }
    }
    assert_eq!(recs.len(), shown.len(), "exactly the rows the API shows");

    // ODM: one file; SDTM: one file per domain, with the site filter
    let odm = cli_export(&s, &odm_dir, &["--format", "odm"]);
    assert_eq!(
        odm.len(),
        1,
        "{:?}",
        odm.iter().map(|f| &f.0).collect::<Vec<_>>()
    );
    assert!(odm[0].0.starts_with(&format!("{STUDY}_odm_")) && odm[0].0.ends_with(".xml"));
    assert!(String::from_utf8_lossy(&odm[0].1).contains("<SubjectData SubjectKey=\"FRA-001\""));
    let xpt = cli_export(&s, &xpt_dir, &["--format", "sdtm-xpt", "--site", "FRA"]);
    let names: Vec<&str> = xpt.iter().map(|(n, _)| n.as_str()).collect();
    // today's five, the domains of Kawasaki's echocardiography and disease activity, and
    // the Define-XML that describes them
    assert_eq!(
        names,
        [
            "ae.xpt",
            "cv.xpt",
            "define.xml",
            "dm.xpt",
            "ds.xpt",
            "ex.xpt",
            "fa.xpt",
            "vs.xpt"
        ]
    );
    let define = &xpt.iter().find(|(n, _)| n == "define.xml").unwrap().1;
    assert_valid_against(
        "define-2.1/cdisc-define-2.1/define2-1-0.xsd",
        define,
        "Define-XML",
    );

    // every file audited as the system, with the protocol and the file's SHA-256
    let study = s.app.get("/api/v1/study", &s.sponsor).await;
    let hash = study.body["file_hash"].as_str().unwrap().to_owned();
    use casebook::schema::audit_log as a;
    let rows: Vec<(String, Option<i64>, Option<Value>)> = a::table
        .filter(a::action.eq("export"))
        .filter(a::actor_role.eq("system:cli"))
        .select((a::entity_table, a::actor_id, a::new_values))
        .order(a::id)
        .load(&mut s.app.conn())
        .expect("audit rows");
    assert_eq!(rows.len(), 8 + 1 + 8, "{rows:?}");
    let all: Vec<&(String, Vec<u8>)> = files.iter().chain(&odm).chain(&xpt).collect();
    for (entity, actor, values) in &rows {
        assert_eq!(*actor, None, "no user for {entity}");
        let v = values.as_ref().unwrap();
        assert_eq!(v["completed"], true, "{v}");
        assert_eq!(v["protocol"]["id"], STUDY, "{v}");
        assert_eq!(v["protocol"]["file_hash"], hash.as_str(), "{v}");
        let sha = v["sha256"].as_str().unwrap();
        assert!(
            all.iter()
                .any(|(_, body)| hex::encode(Sha256::digest(body)) == sha),
            "{entity}: no file with SHA-256 {sha}"
        );
    }
    let temps_audit = rows
        .iter()
        .find(|(e, _, _)| e == "temperatures")
        .and_then(|(_, _, v)| v.clone())
        .unwrap();
    assert_eq!(temps_audit["rows"], recs.len());
    assert_eq!(temps_audit["format"], "csv");
    let vs_audit = rows
        .iter()
        .find(|(e, _, _)| e == "VS")
        .and_then(|(_, _, v)| v.clone())
        .unwrap();
    assert_eq!(vs_audit["filters"]["site"], "FRA");
}
