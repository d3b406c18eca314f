//! SDTM datasets of the study definition's forms (tests/studies/sdtm.toml): findings as one
//! row per item value with exact results and units, events and interventions as one row per
//! record, visits and study days, rows joining today's VS and EX with --SEQ in date order,
//! XPT read back by pyreadstat, site filter, roles and the export's audit row.

use std::collections::HashMap;

use casebook::auth::Role;
use diesel::prelude::*;
use reqwest::Method;
use serde_json::{json, Value};

use crate::clinical::{enrolled, injection};
use crate::exports::{assert_valid_against, fetch, parse_csv, read_xpt};
use crate::helpers::TestApp;

/// The running definition's study id: every dataset names the study that runs, not the
/// protocol file of today's forms (which stays on Kawasaki here).
const STUDY: &str = "SDTMTEST";

pub struct Study {
    pub app: TestApp,
    pub sponsor: String,
    pub fra: String,
}

/// FRA-001: a day-1 injection (today's table) at 08:00 Paris, a rescue dose before it and
/// one two days later, vital signs at D1 and a temperature (today's table), labs at D1 and
/// W4, a crisis and one entered in error. FRB-001: a rescue dose (its only exposure) and labs
/// at D1 the same day.
pub async fn study() -> Study {
    let path = format!("{}/tests/studies/sdtm.toml", env!("CARGO_MANIFEST_DIR"));
    study_of(&path).await
}

async fn study_of(path: &str) -> Study {
    let app = TestApp::spawn_with(&[("CASEBOOK_STUDY", path)]).await;
    app.site("FRA", "Europe/Paris");
    app.site("FRB", "Europe/Paris");
    let inv = app.token(Role::Investigator, &["FRA", "FRB"]).await;
    let fra = enrolled(&app, &inv, "FRA").await;
    let frb = enrolled(&app, &inv, "FRB").await;
    let post = |path: String, body: Value| {
        let (app, inv) = (&app, &inv);
        async move {
            let r = app.post(&path, inv, &body).await;
            assert_eq!(r.status, 201, "{path}: {}", r.text);
            r.body["id"].as_i64().unwrap()
        }
    };
    let form = |code: &str, form: &str| format!("/api/v1/subjects/{code}/forms/{form}");
    post(
        format!("/api/v1/subjects/{fra}/injections"),
        injection(1, "2026-10-05T06:00:00Z", 40.0),
    )
    .await;
    post(
        format!("/api/v1/subjects/{fra}/temperatures"),
        json!({"measured_at": "2026-10-05T12:00:00Z", "celsius": 38.5, "method": "rectal"}),
    )
    .await;
    post(
        form(&fra, "dosing"),
        json!({"values": {"given_at": "2026-10-07T10:00:00Z", "drug": "ANAKINRA", "dose_mg": "10.50",
            "reason": "fever on day 3"}}),
    )
    .await;
    post(
        form(&fra, "dosing"),
        json!({"values": {"given_at": "2026-10-05T05:00:00Z", "drug": "ANAKINRA", "dose_mg": "2.25",
            "reason": "pain"}}),
    )
    .await;
    post(
        form(&fra, "vitals"),
        json!({"visit": "D1", "values": {"measured_at": "2026-10-05T09:30:00Z",
            "weight_kg": "20.5", "temp_c": "37.0"}}),
    )
    .await;
    post(
        form(&fra, "labs"),
        json!({"visit": "D1", "values": {"sampled_on": "2026-10-05", "crp_mg_l": "12.50",
            "neutrophils": "0.80", "hemolysed": false, "specimen": "SERUM"}}),
    )
    .await;
    post(
        form(&fra, "labs"),
        json!({"visit": "W4", "values": {"sampled_on": "2026-11-02", "crp_mg_l": "0.50",
            "specimen": "PLASMA"}}),
    )
    .await;
    post(
        form(&frb, "dosing"),
        json!({"values": {"given_at": "2026-10-06T10:00:00Z", "drug": "ANAKINRA", "dose_mg": "5.00"}}),
    )
    .await;
    post(
        form(&frb, "labs"),
        json!({"visit": "D1", "values": {"sampled_on": "2026-10-06", "crp_mg_l": "3.00",
            "specimen": "SERUM"}}),
    )
    .await;
    post(
        form(&fra, "crisis"),
        json!({"values": {"start_date": "2026-10-06", "end_date": "2026-10-08",
            "severity": "SEVERE", "note": "not in CE"}}),
    )
    .await;
    let wrong = post(
        form(&fra, "crisis"),
        json!({"values": {"start_date": "2026-10-07", "severity": "MILD"}}),
    )
    .await;
    let r = app
        .request(
            Method::DELETE,
            &format!("{}/{wrong}", form(&fra, "crisis")),
            Some(&inv),
            Some(&json!({"reason": "entered for the wrong subject"})),
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let sponsor = app.token(Role::Sponsor, &[]).await;
    Study { app, sponsor, fra }
}

/// The dataset's header and its rows as maps.
async fn dataset(s: &Study, path: &str) -> (Vec<String>, Vec<HashMap<String, String>>) {
    let r = fetch(&s.app, path, &s.sponsor).await;
    assert_eq!(r.status, 200, "{path}: {}", r.text());
    let rows = parse_csv(&r.text());
    let header = rows[0].clone();
    let maps = rows[1..]
        .iter()
        .map(|r| header.iter().cloned().zip(r.iter().cloned()).collect())
        .collect();
    (header, maps)
}

fn names(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

#[actix_web::test]
async fn findings_forms_give_one_row_per_item_value_with_exact_results_and_units() {
    let s = study().await;
    let (header, lb) = dataset(&s, "/api/v1/exports/sdtm/lb.csv").await;
    assert_eq!(
        header,
        names(&[
            "STUDYID", "DOMAIN", "USUBJID", "LBSEQ", "LBTESTCD", "LBTEST", "LBCAT", "LBORRES",
            "LBORRESU", "LBSTRESC", "LBSTRESN", "LBSTRESU", "LBSPEC", "VISITNUM", "VISIT",
            "VISITDY", "LBDTC", "LBDY"
        ])
    );
    let fra: Vec<_> = lb
        .iter()
        .filter(|r| r["USUBJID"] == format!("{STUDY}-{}", s.fra))
        .collect();
    let got: Vec<(&str, &str, &str, &str, &str)> = fra
        .iter()
        .map(|r| {
            (
                r["LBSEQ"].as_str(),
                r["LBTESTCD"].as_str(),
                r["LBORRES"].as_str(),
                r["LBORRESU"].as_str(),
                r["VISIT"].as_str(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("1", "CRP_MG_L", "12.50", "mg/L", "Day 1"),
            ("2", "NEUTROPH", "0.80", "10^9/L", "Day 1"),
            ("3", "HEMOLYSE", "N", "", "Day 1"),
            // no neutrophils nor haemolysis entered at W4: no rows
            ("4", "CRP_MG_L", "0.50", "mg/L", "Week 4"),
        ]
    );
    let crp = fra[0];
    assert_eq!(crp["DOMAIN"], "LB");
    assert_eq!(crp["LBTEST"], "C-reactive protein");
    assert_eq!(crp["LBCAT"], "CHEMISTRY");
    assert_eq!(crp["LBSTRESC"], "12.50");
    assert_eq!(crp["LBSTRESN"], "12.5");
    assert_eq!(crp["LBSTRESU"], "mg/L");
    assert_eq!(
        crp["LBSPEC"], "SERUM",
        "an annotated item fills its variable"
    );
    assert_eq!(crp["VISITNUM"], "1");
    assert_eq!(crp["VISITDY"], "1");
    assert_eq!(crp["LBDTC"], "2026-10-05");
    assert_eq!(crp["LBDY"], "1", "day 1 is the first dose");
    assert_eq!(fra[1]["LBSTRESN"], "0.8");
    assert_eq!(fra[2]["LBSTRESN"], "", "a boolean has no numeric result");
    let w4 = fra[3];
    assert_eq!(w4["LBSTRESC"], "0.50");
    assert_eq!(w4["LBSPEC"], "PLASMA");
    assert_eq!(w4["VISITNUM"], "2");
    assert_eq!(w4["VISITDY"], "29");
    assert_eq!(w4["LBDY"], "29");
    let frb: Vec<_> = lb
        .iter()
        .filter(|r| r["USUBJID"].ends_with("FRB-001"))
        .collect();
    assert_eq!(frb.len(), 1);
    assert_eq!(frb[0]["LBSEQ"], "1", "--SEQ counts within each subject");
    assert_eq!(frb[0]["LBORRES"], "3.00");
    assert_eq!(frb[0]["LBDY"], "1", "day 1 from the form's dose alone");

    // the site filter
    let (_, only_fra) = dataset(&s, "/api/v1/exports/sdtm/lb.csv?site=FRA").await;
    assert_eq!(only_fra.len(), 4);
    assert!(only_fra.iter().all(|r| r["USUBJID"].ends_with("FRA-001")));
}

#[actix_web::test]
async fn form_rows_join_todays_vs_and_ex_in_date_order() {
    let s = study().await;
    let (header, vs) = dataset(&s, "/api/v1/exports/sdtm/vs.csv").await;
    assert_eq!(
        header,
        names(&[
            "STUDYID", "DOMAIN", "USUBJID", "VSSEQ", "VSTESTCD", "VSTEST", "VSCAT", "VSORRES",
            "VSORRESU", "VSSTRESC", "VSSTRESN", "VSSTRESU", "VSLOC", "VISITNUM", "VISIT",
            "VISITDY", "VSDTC", "VSDY"
        ])
    );
    let got: Vec<(&str, &str, &str, &str, &str, &str)> = vs
        .iter()
        .map(|r| {
            (
                r["VSSEQ"].as_str(),
                r["VSTESTCD"].as_str(),
                r["VSORRES"].as_str(),
                r["VSORRESU"].as_str(),
                r["VSCAT"].as_str(),
                r["VSDTC"].as_str(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (
                "1",
                "WEIGHTKG",
                "20.5",
                "kg",
                "VITALS",
                "2026-10-05T11:30:00"
            ),
            ("2", "TEMP_C", "37.0", "C", "VITALS", "2026-10-05T11:30:00"),
            ("3", "TEMP", "38.5", "C", "", "2026-10-05T14:00:00"),
        ]
    );
    assert_eq!(vs[1]["VSSTRESN"], "37");
    assert_eq!(vs[1]["VISIT"], "Day 1");
    assert_eq!(vs[2]["VSLOC"], "RECTUM", "today's rows keep their values");
    assert_eq!(vs[2]["VISIT"], "");

    let (header, ex) = dataset(&s, "/api/v1/exports/sdtm/ex.csv").await;
    assert_eq!(
        header,
        names(&[
            "STUDYID", "DOMAIN", "USUBJID", "EXSEQ", "EXTRT", "EXCAT", "EXDOSE", "EXDOSU",
            "EXDOSFRM", "EXDOSFRQ", "EXROUTE", "EXLOC", "EXLOT", "EXADJ", "EXSTDTC", "EXENDTC",
            "EXSTDY", "EXENDY"
        ])
    );
    let ex: Vec<_> = ex
        .iter()
        .filter(|r| r["USUBJID"].ends_with(&s.fra))
        .collect();
    let got: Vec<(&str, &str, &str, &str, &str, &str)> = ex
        .iter()
        .map(|r| {
            (
                r["EXSEQ"].as_str(),
                r["EXCAT"].as_str(),
                r["EXDOSE"].as_str(),
                r["EXDOSU"].as_str(),
                r["EXSTDTC"].as_str(),
                r["EXSTDY"].as_str(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("1", "RESCUE", "2.25", "mg", "2026-10-05T07:00:00", "1"),
            ("2", "", "40", "mg", "2026-10-05T08:00:00", "1"),
            ("3", "RESCUE", "10.5", "mg", "2026-10-07T12:00:00", "3"),
        ]
    );
    assert_eq!(ex[0]["EXTRT"], "ANAKINRA", "the item annotated EXTRT");

    // the reference dates span today's injections and the forms' doses
    let (_, dm) = dataset(&s, "/api/v1/exports/sdtm/dm.csv").await;
    let fra = dm.iter().find(|r| r["SUBJID"] == s.fra).unwrap();
    assert_eq!(fra["RFSTDTC"], "2026-10-05T07:00:00");
    assert_eq!(fra["RFENDTC"], "2026-10-07T12:00:00");
    let frb = dm.iter().find(|r| r["SUBJID"] == "FRB-001").unwrap();
    assert_eq!(frb["RFSTDTC"], "2026-10-06T12:00:00");
    assert_eq!(frb["ACTARMCD"], "ANAKINRA", "treated through the form");
    assert_eq!(ex[1]["EXROUTE"], "SUBCUTANEOUS");
    assert_eq!(ex[1]["EXLOT"], "LOT-1");
}

#[actix_web::test]
async fn event_forms_give_one_row_per_record_and_unknown_domains_are_404() {
    let s = study().await;
    let (header, ce) = dataset(&s, "/api/v1/exports/sdtm/ce.csv").await;
    assert_eq!(
        header,
        names(&[
            "STUDYID", "DOMAIN", "USUBJID", "CESEQ", "CETERM", "CECAT", "CESEV", "CESTDTC",
            "CEENDTC", "CESTDY", "CEENDY"
        ])
    );
    assert_eq!(ce.len(), 1, "the crisis entered in error is not in SDTM");
    let c = &ce[0];
    assert_eq!(c["CESEQ"], "1");
    assert_eq!(
        c["CETERM"], "FEBRILE CRISIS",
        "the category when no item is CETERM"
    );
    assert_eq!(c["CECAT"], "FEBRILE CRISIS");
    assert_eq!(c["CESEV"], "SEVERE");
    assert!(!c.contains_key("VISITNUM"), "a log is not tied to a visit");
    assert_eq!(c["CESTDTC"], "2026-10-06");
    assert_eq!(c["CEENDTC"], "2026-10-08");
    assert_eq!(c["CESTDY"], "2");
    assert_eq!(c["CEENDY"], "4");
    assert!(!c.values().any(|v| v == "not in CE"));

    // the items without an annotation, numbered as their parent rows
    let (header, supp) = dataset(&s, "/api/v1/exports/sdtm/suppce.csv").await;
    assert_eq!(
        header,
        names(&[
            "STUDYID", "RDOMAIN", "USUBJID", "IDVAR", "IDVARVAL", "QNAM", "QLABEL", "QVAL",
            "QORIG", "QEVAL"
        ])
    );
    let got: Vec<Vec<&str>> = supp
        .iter()
        .map(|r| {
            [
                "RDOMAIN", "IDVAR", "IDVARVAL", "QNAM", "QLABEL", "QVAL", "QORIG",
            ]
            .iter()
            .map(|c| r[*c].as_str())
            .collect()
        })
        .collect();
    assert_eq!(
        got,
        [["CE", "CESEQ", "1", "NOTE", "Note", "not in CE", "CRF"]]
    );
    let (_, supp) = dataset(&s, "/api/v1/exports/sdtm/suppex.csv").await;
    let got: Vec<(&str, &str, &str)> = supp
        .iter()
        .map(|r| {
            (
                r["USUBJID"].as_str(),
                r["IDVARVAL"].as_str(),
                r["QVAL"].as_str(),
            )
        })
        .collect();
    let fra = format!("{STUDY}-{}", s.fra);
    assert_eq!(
        got,
        [
            (fra.as_str(), "1", "pain"),
            // EXSEQ 2 is today's injection
            (fra.as_str(), "3", "fever on day 3"),
        ]
    );

    for path in [
        "/api/v1/exports/sdtm/supplb.csv",
        "/api/v1/exports/sdtm/qs.csv",
        "/api/v1/exports/sdtm/cv.xpt",
        "/api/v1/exports/sdtm/l.csv",
    ] {
        let r = fetch(&s.app, path, &s.sponsor).await;
        assert_eq!(r.status, 404, "{path}");
    }
    for role in [Role::Investigator, Role::Monitor] {
        let token = s.app.token(role, &["FRA"]).await;
        let r = fetch(&s.app, "/api/v1/exports/sdtm/lb.csv", &token).await;
        assert_eq!(r.status, 403, "{role:?}");
    }
}

/// The sponsor's terms: a test code and label for C-reactive protein, a QNAM and QLABEL for
/// the crisis note, and CDISC submission values for the severity codes.
#[actix_web::test]
async fn terms_chosen_in_the_definition_reach_the_datasets_and_define_xml() {
    let base = format!("{}/tests/studies/sdtm.toml", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&base).unwrap();
    let amended =
        text.replacen(
            "  sdtm = \"LBORRES\"\n",
            "  sdtm = \"LBORRES\"\n  sdtm_code = \"CRP\"\n  sdtm_label = \"C Reactive Protein\"\n",
            1,
        )
        .replacen(
            "  id = \"note\"\n",
            "  id = \"note\"\n  sdtm_code = \"CRISNOTE\"\n  sdtm_label = \"Note on the crisis\"\n",
            1,
        )
        .replacen(
            "{ code = \"SEVERE\", label = \"Severe\" }",
            "{ code = \"SEVERE\", label = \"Severe\", sdtm = \"SEVERE/INTENSE\" }",
            1,
        ) + r#"
# a second laboratory form measuring the same test
[[forms]]
id = "bedside_crp"
name = "Bedside CRP"
repeat = "any"
dated_by = "tested_on"
sdtm = { domain = "LB", category = "POINT OF CARE" }

  [[forms.items]]
  id = "tested_on"
  label = "Tested on"
  type = "date"
  required = true

  [[forms.items]]
  id = "crp"
  label = "CRP (bedside)"
  type = "decimal"
  decimals = 0
  unit = "mg/L"
  required = true
  sdtm_code = "CRP"
  sdtm_label = "C Reactive Protein"
"#;
    // the temperature's TEMP, and these
    assert_eq!(amended.matches("sdtm_code").count(), 4);
    let path = std::env::temp_dir().join(format!("sdtm-terms-{}.toml", std::process::id()));
    std::fs::write(&path, amended).unwrap();
    let s = study_of(path.to_str().unwrap()).await;
    let inv = s.app.token(Role::Investigator, &["FRA"]).await;
    let r = s
        .app
        .post(
            &format!("/api/v1/subjects/{}/forms/bedside_crp", s.fra),
            &inv,
            &json!({"values": {"tested_on": "2026-10-06", "crp": "30"}}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);

    let (_, lb) = dataset(&s, "/api/v1/exports/sdtm/lb.csv").await;
    let fra = format!("{STUDY}-{}", s.fra);
    let codes: Vec<(&str, &str)> = lb
        .iter()
        .filter(|r| r["USUBJID"] == fra)
        .map(|r| (r["LBTESTCD"].as_str(), r["LBTEST"].as_str()))
        .collect();
    assert_eq!(
        codes,
        [
            ("CRP", "C Reactive Protein"),
            ("NEUTROPH", "Neutrophils"),
            ("HEMOLYSE", "Haemolysed sample"),
            // the bedside test the next day is the same test
            ("CRP", "C Reactive Protein"),
            ("CRP", "C Reactive Protein"),
        ]
    );
    let (_, ce) = dataset(&s, "/api/v1/exports/sdtm/ce.csv").await;
    assert_eq!(
        ce[0]["CESEV"], "SEVERE/INTENSE",
        "the submission value, not the code"
    );
    let (_, supp) = dataset(&s, "/api/v1/exports/sdtm/suppce.csv").await;
    assert_eq!(
        (supp[0]["QNAM"].as_str(), supp[0]["QLABEL"].as_str()),
        ("CRISNOTE", "Note on the crisis")
    );
    // the XPT carries the same
    let r = fetch(&s.app, "/api/v1/exports/sdtm/ce.xpt", &s.sponsor).await;
    assert_eq!(r.status, 200);
    let xpt = read_xpt(&r.body);
    let at = xpt["names"]
        .as_array()
        .unwrap()
        .iter()
        .position(|n| n == "CESEV")
        .unwrap();
    assert_eq!(
        xpt["rows"][0][at].as_str().map(str::trim_end),
        Some("SEVERE/INTENSE")
    );

    let r = fetch(&s.app, "/api/v1/exports/sdtm/define.xml", &s.sponsor).await;
    assert_eq!(r.status, 200);
    assert_valid_against(DEFINE_XSD, &r.body, "Define-XML");
    let xml = r.text();
    assert_eq!(
        xml.matches("<CodeListItem CodedValue=\"CRP\">").count(),
        1,
        "one test of two forms listed once"
    );
    assert!(xml.contains(
        "<CodeListItem CodedValue=\"CRP\">\n<Decode>\n<TranslatedText xml:lang=\"en\">C Reactive Protein</TranslatedText>"
    ));
    assert!(!xml.contains("CRP_MG_L"));

    // the definition shows the chosen terms to clients
    let r = s.app.get("/api/v1/study/definition", &s.sponsor).await;
    assert_eq!(r.status, 200);
    let labs = r.body["forms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == "labs")
        .unwrap();
    let crp = labs["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == "crp_mg_l")
        .unwrap();
    assert_eq!(crp["sdtm_code"], "CRP");
    assert_eq!(crp["sdtm_label"], "C Reactive Protein");
    let _ = std::fs::remove_file(&path);
}

/// A study's own adverse event and exposure forms: their rows carry the study's treatment,
/// dosing frequency, seriousness flags and causality terms as its definition annotates them
/// (the Kawasaki builders wrote ANAKINRA, QD and their own term maps for every study).
#[actix_web::test]
async fn another_studys_ae_and_ex_rows_come_from_its_own_annotations() {
    let base = format!("{}/tests/studies/sdtm.toml", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&base).unwrap()
        + r#"
[[forms]]
id = "safety_event"
name = "Safety event"
repeat = "any"
dated_by = "onset_date"
sdtm = { domain = "AE" }

  [[forms.items]]
  id = "term"
  label = "Event"
  type = "text"
  max_length = 100
  required = true
  sdtm = "AETERM"

  [[forms.items]]
  id = "onset_date"
  label = "Onset"
  type = "partial_date"
  required = true

  [[forms.items]]
  id = "serious"
  label = "Serious"
  type = "boolean"
  required = true
  sdtm = "AESER"

  [[forms.items]]
  id = "criteria"
  label = "Why serious"
  type = "choices"
  codelist = "why_serious"

  [[forms.items]]
  id = "causality"
  label = "Caused by the drug"
  type = "choice"
  codelist = "causality"
  required = true
  sdtm = "AEREL"

  [[forms.items]]
  id = "reported_on"
  label = "Reported to the sponsor on"
  type = "date"
  sdtm = []

[[codelists]]
id = "why_serious"
codes = [
  { code = "fatal", label = "Fatal", sdtm_flag = "AESDTH" },
  { code = "inpatient", label = "Admitted", sdtm_flag = "AESHOSP" },
]

[[codelists]]
id = "causality"
codes = [
  { code = "yes", label = "Related", sdtm = "RELATED" },
  { code = "no", label = "Not related", sdtm = "NOT RELATED" },
]

[[forms]]
id = "canakinumab"
name = "Canakinumab"
repeat = "any"
dated_by = "given_at"
sdtm = { domain = "EX", values = { EXTRT = "CANAKINUMAB", EXDOSFRQ = "Q4W" }, when = "done" }

  [[forms.items]]
  id = "given_at"
  label = "Given at"
  type = "datetime"
  required = true
  sdtm = ["EXSTDTC", "EXENDTC"]

  [[forms.items]]
  id = "done"
  label = "Given"
  type = "boolean"
  required = true

  [[forms.items]]
  id = "dose_mg"
  label = "Dose"
  type = "decimal"
  decimals = 0
  unit = "mg"
  required = true
  sdtm = "EXDOSE"
"#;
    let path = std::env::temp_dir().join(format!("sdtm-own-{}.toml", std::process::id()));
    std::fs::write(&path, text).unwrap();
    let s = study_of(path.to_str().unwrap()).await;
    let inv = s.app.token(Role::Investigator, &["FRA"]).await;
    let post = |form: &str, values: Value| {
        let (s, inv) = (&s, &inv);
        let path = format!("/api/v1/subjects/{}/forms/{form}", s.fra);
        async move {
            let r = s.app.post(&path, inv, &json!({ "values": values })).await;
            assert_eq!(r.status, 201, "{path}: {}", r.text);
        }
    };
    post(
        "safety_event",
        json!({"term": "Cellulitis", "onset_date": "2026-10-06", "serious": true,
            "criteria": ["inpatient"], "causality": "yes", "reported_on": "2026-10-07"}),
    )
    .await;
    post(
        "canakinumab",
        json!({"given_at": "2026-10-08T08:00:00Z", "done": true, "dose_mg": "150"}),
    )
    .await;
    // not given: neither an exposure row nor the end of exposure
    post(
        "canakinumab",
        json!({"given_at": "2026-10-09T08:00:00Z", "done": false, "dose_mg": "150"}),
    )
    .await;

    let (header, ae) = dataset(&s, "/api/v1/exports/sdtm/ae.csv").await;
    assert_eq!(
        header,
        names(&[
            "STUDYID", "DOMAIN", "USUBJID", "AESEQ", "AETERM", "AESER", "AESDTH", "AESHOSP",
            "AEREL", "AESTDTC", "AEENDTC", "AESTDY", "AEENDY"
        ])
    );
    assert_eq!(ae.len(), 1);
    let got: Vec<&str> = [
        "AESEQ", "AETERM", "AESER", "AESDTH", "AESHOSP", "AEREL", "AESTDTC", "AESTDY",
    ]
    .iter()
    .map(|c| ae[0][*c].as_str())
    .collect();
    assert_eq!(
        got,
        [
            "1",
            "Cellulitis",
            "Y",
            "N",
            "Y",
            "RELATED",
            "2026-10-06",
            "2"
        ]
    );
    let r = fetch(&s.app, "/api/v1/exports/sdtm/suppae.csv", &s.sponsor).await;
    assert_eq!(
        r.status, 404,
        "the report date is not in SDTM: no qualifiers"
    );

    let (_, ex) = dataset(&s, "/api/v1/exports/sdtm/ex.csv").await;
    let got: Vec<Vec<&str>> = ex
        .iter()
        .filter(|r| r["EXTRT"] != "ANAKINRA")
        .map(|r| {
            [
                "EXTRT", "EXDOSE", "EXDOSU", "EXDOSFRM", "EXDOSFRQ", "EXSTDTC", "EXENDTC",
                "EXSTDY", "EXENDY",
            ]
            .iter()
            .map(|c| r[*c].as_str())
            .collect()
        })
        .collect();
    assert_eq!(
        got,
        [[
            "CANAKINUMAB",
            "150",
            "mg",
            "",
            "Q4W",
            "2026-10-08T10:00:00",
            "2026-10-08T10:00:00",
            "4",
            "4"
        ]]
    );
    let injection = ex.iter().find(|r| r["EXDOSFRM"] == "INJECTION").unwrap();
    assert_eq!(injection["EXDOSFRQ"], "QD", "each form its own");
    let (_, dm) = dataset(&s, "/api/v1/exports/sdtm/dm.csv").await;
    let fra = dm.iter().find(|r| r["SUBJID"] == s.fra).unwrap();
    assert_eq!(fra["RFENDTC"], "2026-10-08T10:00:00");
    let _ = std::fs::remove_file(&path);
}

#[actix_web::test]
async fn form_datasets_read_back_from_xpt_equal_to_the_csv_and_are_audited() {
    let s = study().await;
    for domain in ["lb", "vs", "ex", "ce", "suppex"] {
        let csv = fetch(
            &s.app,
            &format!("/api/v1/exports/sdtm/{domain}.csv"),
            &s.sponsor,
        )
        .await;
        assert_eq!(csv.status, 200);
        let rows = parse_csv(&csv.text());
        let xpt = fetch(
            &s.app,
            &format!("/api/v1/exports/sdtm/{domain}.xpt"),
            &s.sponsor,
        )
        .await;
        assert_eq!(xpt.status, 200);
        let read = read_xpt(&xpt.body);
        assert_eq!(read["table"], domain.to_ascii_uppercase());
        assert_eq!(read["names"], json!(rows[0]), "{domain}");
        let xrows = read["rows"].as_array().unwrap();
        assert_eq!(xrows.len(), rows.len() - 1, "{domain}");
        for (x, c) in xrows.iter().zip(&rows[1..]) {
            for ((name, xv), cv) in rows[0].iter().zip(x.as_array().unwrap()).zip(c) {
                match xv {
                    Value::Null => assert_eq!(cv, "", "{domain}.{name}"),
                    Value::Number(n) => {
                        assert_eq!(n.as_f64().unwrap(), cv.parse::<f64>().unwrap(), "{name}")
                    }
                    Value::String(xs) => assert_eq!(xs.trim_end(), cv, "{domain}.{name}"),
                    other => panic!("{domain}.{name}: {other}"),
                }
            }
        }
    }
    let xpt = fetch(&s.app, "/api/v1/exports/sdtm/lb.xpt", &s.sponsor).await;
    let read = read_xpt(&xpt.body);
    let labels = read["labels"].as_array().unwrap();
    assert_eq!(labels[4], "Short Name of Test");
    assert_eq!(
        labels[12], "Specimen",
        "an annotated variable has its item's label"
    );

    let mut c = s.app.conn();
    use casebook::schema::audit_log as a;
    let rows: Vec<(String, Option<String>, Option<Value>)> = a::table
        .filter(a::action.eq("export"))
        .filter(a::entity_table.eq("LB"))
        .order(a::id)
        .select((a::entity_table, a::actor_role, a::new_values))
        .load(&mut c)
        .unwrap();
    assert_eq!(rows.len(), 3, "the CSV and the two XPT above");
    let v = rows[0].2.as_ref().unwrap();
    assert_eq!(rows[0].1.as_deref(), Some("sponsor"));
    assert_eq!(v["format"], "sdtm-csv");
    assert_eq!(v["rows"], 5);
    assert_eq!(v["completed"], true);
    assert_eq!(rows[1].2.as_ref().unwrap()["format"], "sdtm-xpt");
    assert_eq!(rows[1].2.as_ref().unwrap()["rows"], 5);
}

const DEFINE_XSD: &str = "define-2.1/cdisc-define-2.1/define2-1-0.xsd";

#[actix_web::test]
async fn define_xml_describes_every_dataset_and_is_schema_valid() {
    let s = study().await;
    let r = fetch(&s.app, "/api/v1/exports/sdtm/define.xml", &s.sponsor).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.header("content-type").starts_with("application/xml"));
    assert!(r.header("content-disposition").contains("define.xml"));
    assert_valid_against(DEFINE_XSD, &r.body, "Define-XML");
    let xml = r.text();
    for code in ["DM", "DS", "EX", "VS", "LB", "CE", "SUPPEX", "SUPPCE"] {
        assert!(
            xml.contains(&format!("<ItemGroupDef OID=\"IG.{code}\" Name=\"{code}\"")),
            "{code}"
        );
        let file = format!("{}.xpt", code.to_ascii_lowercase());
        assert!(xml.contains(&format!(
            "<def:leaf ID=\"LF.{code}\" xlink:href=\"{file}\">"
        )));
    }
    assert!(!xml.contains("IG.QS"), "no form of this study maps to QS");
    assert!(!xml.contains("IG.AE"), "nor to AE");
    assert!(xml.contains(STUDY), "names the running study");
    // the ODM export names the same study as the datasets
    let odm = fetch(&s.app, "/api/v1/exports/odm.xml", &s.sponsor).await;
    assert_eq!(odm.status, 200);
    let odm = odm.text();
    assert!(
        odm.contains(&format!("<Study OID=\"ST.{STUDY}\">")),
        "{}",
        &odm[..600.min(odm.len())]
    );
    assert!(odm.contains(&format!("<ProtocolName>{STUDY}</ProtocolName>")));
    // the variables in the order of the dataset
    let (header, _) = dataset(&s, "/api/v1/exports/sdtm/lb.csv").await;
    let lb = xml
        .split("<ItemGroupDef OID=\"IG.LB\"")
        .nth(1)
        .and_then(|g| g.split("</ItemGroupDef>").next())
        .unwrap();
    let refs: Vec<&str> = lb
        .split("ItemOID=\"IT.LB.")
        .skip(1)
        .map(|r| r.split('"').next().unwrap())
        .collect();
    assert_eq!(refs, header);
    assert!(lb.contains("<def:Class Name=\"FINDINGS\"/>"));
    assert!(xml.contains("<def:Class Name=\"EVENTS\"/>"));
    assert!(xml.contains("<def:Class Name=\"INTERVENTIONS\"/>"));
    assert!(xml.contains("<def:Class Name=\"SPECIAL PURPOSE\"/>"));
    assert!(xml.contains("<def:Class Name=\"RELATIONSHIP\"/>"));
    assert!(lb.contains(
        "<ItemRef ItemOID=\"IT.LB.LBSEQ\" OrderNumber=\"4\" Mandatory=\"Yes\" KeySequence=\"3\"/>"
    ));
    assert!(xml.contains(
        "<ItemDef OID=\"IT.LB.LBORRES\" Name=\"LBORRES\" DataType=\"text\" Length=\"20\" SASFieldName=\"LBORRES\">"
    ));
    assert!(xml.contains(
        "<ItemDef OID=\"IT.LB.LBSTRESN\" Name=\"LBSTRESN\" DataType=\"float\" Length=\"8\" SASFieldName=\"LBSTRESN\">"
    ));
    let spec = xml
        .split("<ItemDef OID=\"IT.LB.LBSPEC\"")
        .nth(1)
        .and_then(|d| d.split("</ItemDef>").next())
        .unwrap();
    assert!(spec.contains("<TranslatedText xml:lang=\"en\">Specimen</TranslatedText>"));
    assert!(spec.contains("<def:Origin Type=\"Collected\" Source=\"Investigator\"/>"));
    assert!(xml.contains("<CodeListRef CodeListOID=\"CL.LB.LBTESTCD\"/>"));
    assert!(xml.contains(
        "<CodeListItem CodedValue=\"CRP_MG_L\">\n<Decode>\n<TranslatedText xml:lang=\"en\">C-reactive protein</TranslatedText>"
    ));

    use casebook::schema::audit_log as a;
    let rows: Vec<(Option<String>, Option<Value>)> = a::table
        .filter(a::action.eq("export"))
        .filter(a::entity_table.eq("define"))
        .select((a::actor_role, a::new_values))
        .load(&mut s.app.conn())
        .unwrap();
    assert_eq!(rows.len(), 1);
    let v = rows[0].1.as_ref().unwrap();
    assert_eq!(rows[0].0.as_deref(), Some("sponsor"));
    assert_eq!(v["format"], "define-xml");
    assert_eq!(v["rows"], 8, "one per dataset");
    assert_eq!(v["completed"], true);
}

/// Each shipped study's Define-XML validates: the domains and annotations of all five.
#[actix_web::test]
async fn the_define_xml_of_every_shipped_study_is_schema_valid() {
    for file in [
        "kawasaki.toml",
        "thera.toml",
        "mkd.toml",
        "nlrp12.toml",
        "ssc-calcinosis.toml",
    ] {
        let path = format!("{}/config/studies/{file}", env!("CARGO_MANIFEST_DIR"));
        let app = TestApp::spawn_with(&[("CASEBOOK_STUDY", &path)]).await;
        let sponsor = app.token(Role::Sponsor, &[]).await;
        let r = fetch(&app, "/api/v1/exports/sdtm/define.xml", &sponsor).await;
        assert_eq!(r.status, 200, "{file}");
        assert_valid_against(DEFINE_XSD, &r.body, file);
    }
}
