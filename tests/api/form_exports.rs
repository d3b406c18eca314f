//! `GET /api/v1/exports/{form}.csv` for the forms of the study definition that are stored as
//! form records: one row per record, every item in definition order, exact decimals, CSV
//! quoting and formula neutralising, the audit row, and who may export.

use casebook::auth::Role;
use reqwest::Method;
use serde_json::{json, Value};

use crate::clinical::enrolled;
use crate::exports::{assert_valid_odm, fetch, parse_csv, records};
use crate::helpers::TestApp;

const NOTE: &str = "Knee, \"left\", worse at night";
const FORMULA: &str = "=HYPERLINK(\"http://evil.example\",\"x\")";

pub const ASSESSMENT: &[&str] = &[
    "subject_code",
    "site_code",
    "visit",
    "id",
    "version",
    "definition_version",
    "assessed_on",
    "crp_mg_l",
    "pain_mm",
    "joint",
    "joints",
    "swollen",
    "note",
    "severe",
    "flags",
    "created_at",
    "created_by",
    "updated_at",
    "updated_by",
    "change_reason",
    "deleted_at",
    "deleted_by",
    "deleted_reason",
];

pub struct Study {
    pub app: TestApp,
    pub sponsor: String,
    pub admin: String,
    pub fra: String,
    pub frb: String,
}

/// The export test study (tests/studies/exports.toml): FRA-001 with an assessment at D1
/// (soft-flagged CRP, a note that needs quoting), two log entries (one a formula, one marked
/// entered in error); FRB-001 with an assessment whose CRP has a trailing zero.
pub async fn study() -> Study {
    let path = format!("{}/tests/studies/exports.toml", env!("CARGO_MANIFEST_DIR"));
    let app = TestApp::spawn_with(&[("CASEBOOK_STUDY", &path)]).await;
    app.site("FRA", "Europe/Paris");
    app.site("FRB", "Europe/Paris");
    let inv = app.token(Role::Investigator, &["FRA", "FRB"]).await;
    let fra = enrolled(&app, &inv, "FRA").await;
    let frb = enrolled(&app, &inv, "FRB").await;
    let post = |code: &str, form: &str, body: Value| {
        let (app, inv, path) = (&app, &inv, format!("/api/v1/subjects/{code}/forms/{form}"));
        async move {
            let r = app.post(&path, inv, &body).await;
            assert_eq!(r.status, 201, "{}", r.text);
            r.body["id"].as_i64().unwrap()
        }
    };
    post(
        &fra,
        "assessment",
        json!({"visit": "D1", "values": {"assessed_on": "2026-10-05", "crp_mg_l": "350.5",
            "pain_mm": 80, "joint": "KNEE", "joints": ["KNEE", "ANKLE"], "swollen": true,
            "note": NOTE}}),
    )
    .await;
    post(
        &frb,
        "assessment",
        json!({"visit": "D1", "values": {"assessed_on": "2026-10-06", "crp_mg_l": "0.50"}}),
    )
    .await;
    post(
        &fra,
        "log",
        json!({"values": {"noted_on": "2026-10-05", "text": FORMULA}}),
    )
    .await;
    let wrong = post(
        &fra,
        "log",
        json!({"values": {"noted_on": "2026-10-06", "text": "wrong subject"}}),
    )
    .await;
    let r = app
        .request(
            Method::DELETE,
            &format!("/api/v1/subjects/{fra}/forms/log/{wrong}"),
            Some(&inv),
            Some(&json!({"reason": "entered for the wrong subject"})),
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let sponsor = app.token(Role::Sponsor, &[]).await;
    let admin = app.token(Role::Admin, &[]).await;
    Study {
        app,
        sponsor,
        admin,
        fra,
        frb,
    }
}

#[actix_web::test]
async fn a_new_form_exports_one_row_per_record_with_its_items_exact() {
    let s = study().await;
    let r = fetch(&s.app, "/api/v1/exports/assessment.csv", &s.sponsor).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    let rows = records(&r, ASSESSMENT);
    assert_eq!(rows.len(), 2);
    let a = &rows[0];
    assert_eq!(a["subject_code"], s.fra);
    assert_eq!(a["site_code"], "FRA");
    assert_eq!(a["visit"], "D1");
    assert_eq!(a["version"], "1");
    assert_eq!(a["definition_version"], "1");
    assert_eq!(a["assessed_on"], "2026-10-05");
    // exactly at the item's digits, as stored
    assert_eq!(a["crp_mg_l"], "350.50");
    assert_eq!(a["pain_mm"], "80");
    assert_eq!(a["joint"], "KNEE");
    assert_eq!(a["joints"], "KNEE;ANKLE");
    assert_eq!(a["swollen"], "true");
    assert_eq!(a["note"], NOTE);
    assert_eq!(a["severe"], "true", "derived items are exported");
    let flags: Value = serde_json::from_str(&a["flags"]).unwrap();
    assert_eq!(flags[0]["item"], "crp_mg_l");
    assert_eq!(a["deleted_at"], "");
    let b = &rows[1];
    assert_eq!(b["subject_code"], s.frb);
    assert_eq!(b["crp_mg_l"], "0.50");
    assert_eq!(b["pain_mm"], "");
    assert_eq!(b["joints"], "");
    assert_eq!(b["severe"], "false");
    assert_eq!(b["flags"], "[]");
    // the raw text: the note quoted, its quotes doubled
    assert!(r
        .text()
        .contains(",\"Knee, \"\"left\"\", worse at night\","));

    let r = fetch(&s.app, "/api/v1/exports/assessment.csv?site=FRB", &s.admin).await;
    assert_eq!(r.status, 200);
    let rows = records(&r, ASSESSMENT);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["subject_code"], s.frb);
    let r = fetch(
        &s.app,
        "/api/v1/exports/assessment.csv?from=2026-10-06",
        &s.admin,
    )
    .await;
    assert_eq!(
        records(&r, ASSESSMENT).len(),
        1,
        "from filters on the dating item"
    );
}

#[actix_web::test]
async fn formulas_are_neutralised_and_deleted_records_only_on_request() {
    let s = study().await;
    let r = fetch(&s.app, "/api/v1/exports/log.csv", &s.sponsor).await;
    assert_eq!(r.status, 200);
    let rows = parse_csv(&r.text());
    assert_eq!(rows[0][6..8], ["noted_on", "text"]);
    assert_eq!(rows.len(), 2, "the record entered in error is left out");
    assert_eq!(rows[1][7], format!("'{FORMULA}"));
    let r = fetch(
        &s.app,
        "/api/v1/exports/log.csv?include_deleted=true",
        &s.sponsor,
    )
    .await;
    let rows = parse_csv(&r.text());
    assert_eq!(rows.len(), 3);
    let deleted_reason = rows[0].iter().position(|c| c == "deleted_reason").unwrap();
    assert_eq!(rows[2][deleted_reason], "entered for the wrong subject");
}

#[actix_web::test]
async fn a_form_export_is_audited_with_its_form_rows_and_hash() {
    let s = study().await;
    let r = fetch(&s.app, "/api/v1/exports/assessment.csv", &s.sponsor).await;
    assert_eq!(r.status, 200);
    use sha2::{Digest, Sha256};
    let sha = hex::encode(Sha256::digest(&r.body));
    assert_eq!(
        s.app.count(&format!(
            "SELECT count(*) AS n FROM audit_log WHERE action = 'export' \
             AND entity_table = 'form_records' AND actor_role = 'sponsor' \
             AND new_values->>'form' = 'assessment' AND new_values->>'format' = 'csv' \
             AND (new_values->>'rows')::int = 2 AND new_values->>'sha256' = '{sha}' \
             AND (new_values->>'completed')::bool"
        )),
        1
    );
}

#[actix_web::test]
async fn only_sponsors_and_admins_export_and_unknown_forms_are_404() {
    let s = study().await;
    let monitor = s.app.token(Role::Monitor, &["FRA"]).await;
    let inv = s.app.token(Role::Investigator, &["FRA"]).await;
    for token in [&monitor, &inv] {
        s.app
            .get("/api/v1/exports/assessment.csv", token)
            .await
            .assert_problem(403, None);
    }
    for token in [&s.sponsor, &s.admin] {
        assert_eq!(
            fetch(&s.app, "/api/v1/exports/log.csv", token).await.status,
            200
        );
    }
    for form in ["nosuch", "injection", "temperature", "adverse_event"] {
        s.app
            .get(&format!("/api/v1/exports/{form}.csv"), &s.sponsor)
            .await
            .assert_problem(404, None);
    }
    assert_eq!(
        s.app.count(
            "SELECT count(*) AS n FROM audit_log WHERE action = 'export' \
             AND entity_table = 'form_records'"
        ),
        2,
        "refused exports are not audited"
    );
}

#[actix_web::test]
async fn todays_three_forms_keep_their_own_exports() {
    // Kawasaki: injection, temperature and adverse_event stay in their tables
    let app = TestApp::spawn().await;
    let sponsor = app.token(Role::Sponsor, &[]).await;
    for form in ["injection", "temperature", "adverse_event"] {
        app.get(&format!("/api/v1/exports/{form}.csv"), &sponsor)
            .await
            .assert_problem(404, None);
    }
    let r = fetch(&app, "/api/v1/exports/echocardiography.csv", &sponsor).await;
    assert_eq!(r.status, 200);
    let rows = parse_csv(&r.text());
    assert_eq!(rows.len(), 1, "a header and no record");
    assert_eq!(rows[0][6], "performed_on");
    assert_eq!(
        fetch(&app, "/api/v1/exports/injections.csv", &sponsor)
            .await
            .status,
        200
    );
    let doc = app
        .request(Method::GET, "/api/v1/openapi.json", None, None, &[])
        .await;
    let op = &doc.body["paths"]["/api/v1/exports/{form}.csv"]["get"];
    let text = format!("{}", op["description"]).replace("\\n", " ");
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let place = casebook::export::records::PLACE.join(", ");
    assert!(text.contains(&place), "missing `{place}` in {text}");
}

#[actix_web::test]
async fn odm_carries_the_forms_of_the_definition_and_their_records() {
    let s = study().await;
    let inv = s.app.token(Role::Investigator, &["FRB"]).await;
    let at = format!("/api/v1/subjects/{}/forms/assessment", s.frb);
    let id = s.app.get(&at, &inv).await.body[0]["id"].as_i64().unwrap();
    let r = s
        .app
        .patch(
            &format!("{at}/{id}"),
            &inv,
            1,
            &json!({"values": {"crp_mg_l": "1.20"}, "reason": "misread"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);

    let r = fetch(&s.app, "/api/v1/exports/odm.xml", &s.sponsor).await;
    assert_eq!(r.status, 200);
    assert_valid_odm(&r.body);
    let xml = r.text();
    // today's forms are still there, unchanged
    assert!(xml.contains("<FormDef OID=\"F.TEMPERATURE\" Name=\"Temperature\" Repeating=\"No\">"));
    // the definition's forms, items, units and code lists
    assert!(
        xml.contains("<StudyEventDef OID=\"SE.V.D1\" Name=\"Day 1\""),
        "{xml}"
    );
    assert!(xml.contains("<FormRef FormOID=\"F.assessment\""));
    assert!(xml.contains("<FormDef OID=\"F.assessment\" Name=\"Assessment\""));
    assert!(xml.contains("<ItemGroupDef OID=\"IG.assessment\""));
    assert!(xml.contains(
        "<ItemDef OID=\"IT.assessment.crp_mg_l\" Name=\"crp_mg_l\" DataType=\"float\" SignificantDigits=\"2\">"
    ));
    assert!(xml.contains(
        "<ItemDef OID=\"IT.assessment.assessed_on\" Name=\"assessed_on\" DataType=\"date\">"
    ));
    assert!(xml.contains(
        "<ItemDef OID=\"IT.assessment.note\" Name=\"note\" DataType=\"text\" Length=\"200\">"
    ));
    assert!(xml.contains("<MeasurementUnitRef MeasurementUnitOID=\"MU.mg/L\"/>"));
    assert!(xml.contains("<MeasurementUnit OID=\"MU.mg/L\" Name=\"mg/L\">"));
    assert!(xml.contains("<CodeListRef CodeListOID=\"CL.joint\"/>"));
    assert!(xml.contains("<CodeList OID=\"CL.joint\" Name=\"Joints\" DataType=\"text\">"));
    assert!(xml.contains("<CodeListItem CodedValue=\"KNEE\">"));
    // the records, exact, in their visit; the one entered in error left out
    assert!(xml.contains("<StudyEventData StudyEventOID=\"SE.V.D1\">"));
    assert!(xml.contains("<ItemData ItemOID=\"IT.assessment.crp_mg_l\" Value=\"350.50\"/>"));
    assert!(xml.contains("<ItemData ItemOID=\"IT.assessment.crp_mg_l\" Value=\"1.20\"/>"));
    assert!(xml.contains("<ItemData ItemOID=\"IT.assessment.joints\" Value=\"KNEE;ANKLE\"/>"));
    assert!(xml.contains("Value=\"Knee, &quot;left&quot;, worse at night\""));
    assert!(xml.contains(&format!("Value=\"{}\"", FORMULA.replace('"', "&quot;"))));
    assert!(!xml.contains("wrong subject"));

    let r = fetch(&s.app, "/api/v1/exports/odm.xml?audit=true", &s.admin).await;
    assert_eq!(r.status, 200);
    assert_valid_odm(&r.body);
    let xml = r.text();
    assert!(
        xml.contains("wrong subject"),
        "its creation is a transaction"
    );
    assert!(xml.contains("<ReasonForChange>entered for the wrong subject</ReasonForChange>"));
    assert!(xml.contains("<ReasonForChange>misread</ReasonForChange>"));
    let update = xml
        .split("<ItemGroupData ")
        .find(|g| g.contains("<ReasonForChange>misread</ReasonForChange>"))
        .unwrap();
    assert!(update.contains("TransactionType=\"Update\""));
    assert!(update.contains("<ItemData ItemOID=\"IT.assessment.crp_mg_l\" Value=\"1.20\"/>"));
    assert!(
        !update.contains("IT.assessment.assessed_on"),
        "only the items changed"
    );
}
