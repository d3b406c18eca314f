//! GET /api/v1/study/definition: the running study definition in the shape clients read
//! (docs/study-definitions.md), chosen by the `study` setting and checked at start.

use casebook::auth::Role;
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{test_settings, TestApp};

fn by_id<'a>(list: &'a Value, id: &str) -> &'a Value {
    list.as_array()
        .and_then(|l| l.iter().find(|x| x["id"] == id))
        .unwrap_or_else(|| panic!("no `{id}` in {list}"))
}

#[actix_web::test]
async fn the_kawasaki_definition_has_the_shape_clients_read() {
    let app = TestApp::spawn().await;
    app.site("FR01", "Europe/Paris");
    let inv = app.token(Role::Investigator, &["FR01"]).await;
    let r = app.get("/api/v1/study/definition", &inv).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let d = &r.body;
    assert_eq!(d["study"]["id"], "KD-ANAKINRA");
    assert_eq!(d["study"]["version"], "1");
    let file = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/studies/kawasaki.toml"
    ))
    .unwrap();
    use sha2::Digest;
    assert_eq!(d["sha256"], hex::encode(sha2::Sha256::digest(&file)));
    assert_eq!(
        d["schedule"],
        json!({"anchor": "first_dose", "anchor_item": "injection.administered_at"})
    );

    // visits with their windows and forms
    assert_eq!(
        by_id(&d["visits"], "V3"),
        &json!({"id": "V3", "name": "Primary endpoint (day 3, before the third injection)",
                "day": 3, "window_before": 0, "window_after": 0,
                "forms": ["injection", "disease_activity"]})
    );
    assert_eq!(by_id(&d["visits"], "UNS")["unscheduled"], true);
    assert!(by_id(&d["visits"], "UNS").get("day").is_none());

    // every form: today's three and the two new ones
    let forms: Vec<&str> = d["forms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        forms,
        [
            "injection",
            "temperature",
            "adverse_event",
            "echocardiography",
            "disease_activity"
        ]
    );
    let temperature = by_id(&d["forms"], "temperature");
    assert_eq!(temperature["repeat"], "any");
    assert_eq!(
        by_id(&temperature["items"], "celsius"),
        &json!({"id": "celsius", "label": "Temperature", "type": "decimal", "required": true,
                "unit": "°C", "decimals": 1, "min": 30, "max": 45, "check": "hard",
                "sdtm": "VSORRES", "sdtm_code": "TEMP", "sdtm_label": "Temperature"})
    );
    let method = by_id(&temperature["items"], "method");
    assert_eq!(method["type"], "choice");
    let codes: Vec<&str> = method["choices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["code"].as_str().unwrap())
        .collect();
    assert_eq!(
        codes,
        ["rectal", "axillary", "oral", "tympanic", "temporal"]
    );
    assert_eq!(
        method["choices"][0],
        json!({"code": "rectal", "label": "Rectal", "sdtm": "RECTUM"}),
        "the code's CDISC submission value"
    );
    let fever = by_id(&temperature["items"], "fever");
    assert_eq!(
        (&fever["derived"], &fever["derived_by"]),
        (&json!(true), &json!("fever"))
    );

    let ae = by_id(&d["forms"], "adverse_event");
    let criteria = by_id(&ae["items"], "seriousness_criteria");
    assert_eq!(criteria["type"], "choices");
    assert_eq!(criteria["show_if"], "serious");
    assert_eq!(
        criteria["choices"][0],
        json!({"code": "death", "label": "Results in death", "sdtm_flag": "AESDTH"}),
        "the SDTM flag the code sets"
    );
    assert_eq!(
        fever["sdtm"],
        json!([]),
        "a rule's working value: not in SDTM"
    );
    let injection = by_id(&d["forms"], "injection");
    assert_eq!(
        injection["sdtm"],
        json!({"domain": "EX", "values": {"EXDOSFRM": "INJECTION", "EXDOSFRQ": "QD",
            "EXTRT": "ANAKINRA"}, "when": "given"})
    );
    assert_eq!(
        by_id(&injection["items"], "administered_at")["sdtm"],
        json!(["EXSTDTC", "EXENDTC"])
    );
    assert!(by_id(&ae["checks"], "end_date_when_recovered")["expr"].is_string());

    let injection = by_id(&d["forms"], "injection");
    assert_eq!(injection["repeat"], "per_day");
    assert_eq!(
        by_id(&injection["items"], "expected_dose_mg")["derived_by"],
        "dose"
    );
    assert_eq!(by_id(&injection["items"], "lot_number")["max_length"], 50);

    let echo = by_id(&d["forms"], "echocardiography");
    assert_eq!(echo["repeat"], "per_visit");
    let lesion = by_id(&echo["items"], "lesion_class");
    assert_eq!(lesion["derived"], true);
    assert!(lesion["derive"].as_str().unwrap().contains("max_z"));
    assert_eq!(
        by_id(&echo["items"], "aneurysm_size_mm")["show_if"],
        "aneurysm"
    );
    let activity = by_id(&d["forms"], "disease_activity");
    let crp = by_id(&activity["items"], "crp_mg_l");
    assert_eq!(
        (&crp["unit"], &crp["soft_max"]),
        (&json!("mg/L"), &json!(300))
    );

    // the named rules and the treatment they read
    assert_eq!(by_id(&d["rules"], "fever")["threshold"], 38);
    let anakinra = by_id(&d["treatments"], "anakinra");
    assert_eq!(anakinra["dose"], "per_kg");
    assert_eq!(
        anakinra["escalation"],
        json!({"from_day": 3, "mg_per_kg": 4, "on_rule": "fever"})
    );

    // optional keys only where they apply
    let study_day = by_id(&injection["items"], "study_day");
    for key in [
        "unit",
        "choices",
        "show_if",
        "derived",
        "decimals",
        "max_length",
    ] {
        assert!(study_day.get(key).is_none(), "{key} in {study_day}");
    }

    // signed in, any role; not anonymous
    let r = app
        .request(Method::GET, "/api/v1/study/definition", None, None, &[])
        .await;
    r.assert_problem(401, None);
}

#[actix_web::test]
async fn the_study_setting_chooses_the_definition() {
    let thera = concat!(env!("CARGO_MANIFEST_DIR"), "/config/studies/thera.toml");
    let app = TestApp::spawn_with(&[("CASEBOOK_STUDY", thera)]).await;
    let sponsor = app.token(Role::Sponsor, &[]).await;
    let r = app.get("/api/v1/study/definition", &sponsor).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["study"]["id"], "THERA");
    let vas = by_id(&r.body["forms"], "pain_vas");
    assert_eq!(
        by_id(&vas["items"], "pain_mm"),
        &json!({"id": "pain_mm", "label": "Pain over the last 48 hours (0 = no pain, 100 = worst imaginable)",
                "type": "integer", "required": true, "unit": "mm", "min": 0, "max": 100,
                "check": "hard", "sdtm": "QSORRES"})
    );
    let visits: Vec<&str> = r.body["visits"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["forms"].as_array().unwrap().contains(&json!("pain_vas")))
        .map(|v| v["id"].as_str().unwrap())
        .collect();
    assert_eq!(visits, ["INC", "D1", "D2", "D3", "D4", "D5", "FU"]);
}

#[actix_web::test]
async fn the_server_refuses_to_start_on_a_broken_definition() {
    let dir = std::env::temp_dir().join(format!("casebook-broken-study-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/studies/kawasaki.toml"
    ))
    .unwrap()
    .replacen(
        "derive = \"lmca_z >= lad_z",
        "derive = \"lmca_z >= lda_z",
        1,
    );
    let file = dir.join("kawasaki.toml");
    std::fs::write(&file, &text).unwrap();
    let line = text[..text.find("lda_z").unwrap()].matches('\n').count() + 1;
    let settings = test_settings(
        "postgres://postgres@127.0.0.1:5432/unused",
        &[("CASEBOOK_STUDY", file.to_str().unwrap())],
    );
    let err = match casebook::state::AppState::new(settings) {
        Ok(_) => panic!("started on a broken definition"),
        Err(e) => e,
    };
    assert!(
        err.starts_with("CASEBOOK_STUDY: the study definition has 1 error(s):"),
        "{err}"
    );
    assert!(
        err.contains(&format!("{}:{line}: derive of `max_z`", file.display())),
        "{err}"
    );
    assert!(err.contains("unknown item or constant `lda_z`"), "{err}");
}
