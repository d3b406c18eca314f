//! Property tests of the parsers at the edge: the protocol file, partial dates, measured
//! values, and the JSON bodies of the clinical forms (through `api::body::parse`, the path the
//! server's extractor takes). None may panic, whatever it is given; each answers with a value
//! or with an error a person can read.
//!
//! Case counts are small so the suite stays fast; `PROPTEST_CASES=5000 cargo test --test
//! properties` searches harder.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use chrono::NaiveDate;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::TestCaseError;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use casebook::api::body::{has_nul_escape, parse as parse_body};
use casebook::api::clinical::{
    adverse_events, consents, injections, subjects, temperatures, DeleteRequest,
};
use casebook::api::monitoring::{locks, queries, signatures};
use casebook::domain::partial_date::PartialDate;
use casebook::domain::protocol::Protocol;
use casebook::domain::values::{bounded_text, BirthYearMonth, Reason, WeightKg};
use casebook::error::AppError;

const KAWASAKI: &str = include_str!("../config/protocols/kawasaki.toml");
const THERA: &str = include_str!("../config/protocols/thera.toml");

/// `cases` unless PROPTEST_CASES says otherwise; no regression files written.
fn config(cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(cases);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------------------------
// The protocol file

fn check_protocol(text: &str) -> Result<(), TestCaseError> {
    match Protocol::parse(text) {
        Ok(p) => {
            prop_assert_eq!(p.file_hash.len(), 64);
            prop_assert!(p.fever_threshold().is_finite());
        }
        Err(e) => {
            prop_assert!(!e.trim().is_empty(), "an empty error");
            prop_assert!(
                !e.contains('\n') && !e.contains('\r'),
                "a multi-line error: {:?}",
                e
            );
        }
    }
    Ok(())
}

/// Values a mutated key may take: wrong types, bounds, escapes, nesting.
const TOML_VALUES: &[&str] = &[
    "\"\"",
    "\"   \"",
    "\"a\\nb\"",
    "\"line\\r\\nbreak\"",
    "\"\\u0000\"",
    "'''\nmulti\nline'''",
    "0",
    "-1",
    "1",
    "2147483648",
    "-9223372036854775808",
    "1e309",
    "-0.0",
    "nan",
    "inf",
    "-inf",
    "29.9",
    "45.1",
    "100.1",
    "true",
    "[]",
    "[1, 2]",
    "[2, 1]",
    "[-1, 3]",
    "[1, 2, 3]",
    "[\"x\"]",
    "{}",
    "{ kind = \"fixed\" }",
    "{ kind = \"per_kg\", mg_per_kg = 0 }",
    "\"per_kg\"",
    "\"fixed\"",
    "\"exclusion\"",
    "1979-05-27T07:32:00Z",
    "[[[[[[[[[[1]]]]]]]]]]",
];

#[derive(Debug, Clone)]
enum Mutation {
    DeleteLine(Index),
    DuplicateLine(Index),
    SwapLines(Index, Index),
    ReplaceValue(Index, Index),
    ReplaceLine(Index, String),
    Insert(Index, String),
    Truncate(Index),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<Index>().prop_map(Mutation::DeleteLine),
        any::<Index>().prop_map(Mutation::DuplicateLine),
        (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Mutation::SwapLines(a, b)),
        (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Mutation::ReplaceValue(a, b)),
        (
            any::<Index>(),
            prop_oneof![
                "[a-z_\\[\\]. ]{0,24}( = .{0,16})?",
                ".{0,40}",
                Just("[[eligibility]]".to_owned()),
                Just("[dose.escalation]".to_owned()),
            ]
        )
            .prop_map(|(i, s)| Mutation::ReplaceLine(i, s)),
        (any::<Index>(), ".{0,12}").prop_map(|(i, s)| Mutation::Insert(i, s)),
        any::<Index>().prop_map(Mutation::Truncate),
    ]
}

fn apply(text: &str, mutations: &[Mutation]) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    for m in mutations {
        if lines.is_empty() {
            lines.push(String::new());
        }
        match m {
            Mutation::DeleteLine(i) => {
                lines.remove(i.index(lines.len()));
            }
            Mutation::DuplicateLine(i) => {
                let at = i.index(lines.len());
                lines.insert(at, lines[at].clone());
            }
            Mutation::SwapLines(a, b) => {
                let (a, b) = (a.index(lines.len()), b.index(lines.len()));
                lines.swap(a, b);
            }
            Mutation::ReplaceValue(line, value) => {
                // the value of one `key = value` line
                let keyed: Vec<usize> = (0..lines.len())
                    .filter(|&n| lines[n].contains(" = "))
                    .collect();
                if !keyed.is_empty() {
                    let n = keyed[line.index(keyed.len())];
                    let key = lines[n].split(" = ").next().unwrap_or_default().to_owned();
                    lines[n] = format!("{key} = {}", value.get(TOML_VALUES));
                }
            }
            Mutation::ReplaceLine(i, s) => {
                let at = i.index(lines.len());
                lines[at] = s.clone();
            }
            Mutation::Insert(i, s) => {
                let at = i.index(lines.len());
                let line = &lines[at];
                let cut = line
                    .char_indices()
                    .map(|(n, _)| n)
                    .nth(i.index(line.chars().count() + 1))
                    .unwrap_or(line.len());
                lines[at] = format!("{}{s}{}", &line[..cut], &line[cut..]);
            }
            Mutation::Truncate(i) => {
                let at = i.index(lines.len() + 1);
                lines.truncate(at);
            }
        }
    }
    lines.join("\n")
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn protocol_parse_never_panics_on_any_text(text in ".{0,400}") {
        check_protocol(&text)?;
    }

    #[test]
    fn protocol_parse_never_panics_on_toml_like_text(
        text in "([a-z_]{1,12} = (\"[^\"\\\\]{0,8}\"|-?[0-9]{1,4}(\\.[0-9])?|\\[\\]|true)\n|\\[[a-z.]{1,10}\\]\n|\\[\\[eligibility\\]\\]\n){0,20}"
    ) {
        check_protocol(&text)?;
    }

    #[test]
    fn protocol_parse_never_panics_on_mutated_shipped_files(
        thera in any::<bool>(),
        mutations in prop::collection::vec(mutation(), 1..5),
    ) {
        let text = apply(if thera { THERA } else { KAWASAKI }, &mutations);
        check_protocol(&text)?;
    }
}

#[test]
fn shipped_protocols_parse() {
    for text in [KAWASAKI, THERA] {
        assert!(Protocol::parse(text).is_ok());
    }
}

#[test]
fn a_repeated_criterion_id_with_a_line_break_is_a_one_line_error() {
    let criterion = "\n[[eligibility]]\nid = \"A\\nB\"\nkind = \"inclusion\"\ntext = \"x\"\n";
    let text = format!("{THERA}\n{criterion}{criterion}");
    let err = Protocol::parse(&text).expect_err("a repeated id is refused");
    assert!(!err.contains('\n'), "{err:?}");
}

#[test]
fn deeply_nested_protocol_values_are_an_error_not_a_crash() {
    for depth in [100, 10_000] {
        let text = format!("{THERA}\nx = {}1{}", "[".repeat(depth), "]".repeat(depth));
        let err = Protocol::parse(&text).expect_err("nested junk is refused");
        assert!(!err.contains('\n'), "{err:?}");
        let text = format!("{THERA}\nx = {}1{}", "{a=".repeat(depth), "}".repeat(depth));
        assert!(Protocol::parse(&text).is_err());
    }
}

// ---------------------------------------------------------------------------------------------
// Partial dates and measured values

/// What the engine's value check of Kawasaki's `form` says of `item` alone (the form's other
/// items missing), if it names it.
fn item_error(form: &str, item: &str, v: Value) -> Option<String> {
    static KAWASAKI: std::sync::OnceLock<casebook::domain::study::Definition> =
        std::sync::OnceLock::new();
    let def = KAWASAKI.get_or_init(|| {
        casebook::services::study::load(std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/config/studies/kawasaki.toml"
        )))
        .expect("Kawasaki's definition")
    });
    let mut values = serde_json::Map::new();
    values.insert(item.to_owned(), v);
    let field = format!("values.{item}");
    casebook::domain::study::values::check(def, def.form(form).expect("form"), &values)
        .err()?
        .into_iter()
        .find(|e| e.field == field)
        .map(|e| e.message)
}

fn today() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 22).unwrap()
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn partial_date_parse_never_panics(s in ".{0,16}") {
        if let Some(d) = PartialDate::parse(&s) {
            prop_assert!(d.year >= 1900);
            prop_assert!(d.month.is_some() || d.day.is_none());
        }
    }

    #[test]
    fn partial_dates_parse_at_their_precision_and_compare_consistently(
        a in "[0-9]{4}(-[0-9]{2}(-[0-9]{2})?)?",
        b in "[0-9]{4}(-[0-9]{2}(-[0-9]{2})?)?",
        day in 0u32..80_000,
    ) {
        let parsed = PartialDate::parse(&a);
        // Valid exactly when the digits make a date at the precision given.
        let parts: Vec<u32> = a.split('-').map(|p| p.parse().unwrap()).collect();
        let valid = parts[0] >= 1900
            && parts.get(1).is_none_or(|m| (1..=12).contains(m))
            && match parts.as_slice() {
                [y, m, d] => NaiveDate::from_ymd_opt(*y as i32, *m, *d).is_some(),
                _ => true,
            };
        prop_assert_eq!(parsed.is_some(), valid, "{}", a);
        if let (Some(x), Some(y)) = (parsed, PartialDate::parse(&b)) {
            prop_assert_eq!(x.cmp_partial(&y), y.cmp_partial(&x).reverse());
            prop_assert_eq!(x.cmp_partial(&x), std::cmp::Ordering::Equal);
            let full = NaiveDate::from_ymd_opt(1900, 1, 1).unwrap() + chrono::Days::new(day.into());
            let _ = x.cmp_date(full);
        }
    }

    #[test]
    fn measured_values_never_panic_and_stay_in_range(
        v in prop_oneof![any::<f64>(), 20.0f64..55.0, (200i64..550).prop_map(|t| t as f64 / 10.0)],
    ) {
        // JSON has no NaN or infinity: a body cannot carry them
        if let Some(n) = serde_json::Number::from_f64(v) {
            if item_error("temperature", "celsius", Value::Number(n.clone())).is_none() {
                prop_assert!((30.0..=45.0).contains(&v), "{}", v);
            }
            let _ = item_error("injection", "dose_mg", Value::Number(n));
        }
        if let Ok(w) = WeightKg::parse("weight_kg", v) {
            prop_assert!(w.value().is_finite() && (0.5..=300.0).contains(&w.value()));
        }
        for bits in [v.to_bits().wrapping_add(1), v.to_bits().wrapping_sub(1)] {
            let near = f64::from_bits(bits);
            let _ = WeightKg::parse("w", near);
            if let Some(n) = serde_json::Number::from_f64(near) {
                let _ = item_error("temperature", "celsius", Value::Number(n));
            }
        }
    }

    #[test]
    fn values_entered_with_their_decimals_are_accepted(
        tenths in 300i64..=450,
        hundredths in 50i64..=30_000,
        dose in 0i64..=1_000_000,
    ) {
        let c = item_error("temperature", "celsius", json!(tenths as f64 / 10.0));
        prop_assert!(c.is_none(), "{} tenths: {:?}", tenths, c);
        let w = WeightKg::parse("weight_kg", hundredths as f64 / 100.0);
        prop_assert!(w.is_ok(), "{} hundredths: {:?}", hundredths, w);
        let d = item_error("injection", "dose_mg", json!(dose as f64 / 100.0));
        prop_assert!(d.is_none(), "{} hundredths: {:?}", dose, d);
        // one decimal too many is refused
        let c = item_error("temperature", "celsius", json!(tenths as f64 / 10.0 + 0.05));
        prop_assert!(c.is_some(), "{} tenths and a half", tenths);
    }

    #[test]
    fn text_fields_never_panic(s in "\\PC{0,40}|.{0,1100}") {
        let _ = BirthYearMonth::parse("birth_year_month", &s, today());
        let _ = Reason::parse("reason", Some(&s));
        let _ = bounded_text("term", &s, 200);
    }
}

// ---------------------------------------------------------------------------------------------
// Request bodies

/// A body answers with a value, a 400 (malformed JSON) or a 422 naming its fields: never
/// anything else, never a panic.
fn check_body<T: DeserializeOwned>(raw: &[u8]) -> Result<(), TestCaseError> {
    match parse_body::<T>(raw) {
        Ok(_) => {}
        Err(AppError::BadRequest(msg)) => prop_assert!(!msg.is_empty()),
        Err(AppError::Validation(errors)) => {
            prop_assert!(!errors.is_empty());
            for e in &errors {
                prop_assert!(!e.field.is_empty() && !e.message.is_empty(), "{:?}", e);
            }
        }
        Err(other) => prop_assert!(false, "{:?} for {:?}", other, String::from_utf8_lossy(raw)),
    }
    Ok(())
}

fn check_all_bodies(raw: &[u8]) -> Result<(), TestCaseError> {
    check_body::<subjects::NewSubject>(raw)?;
    check_body::<subjects::SubjectChange>(raw)?;
    check_body::<consents::NewConsent>(raw)?;
    check_body::<consents::Withdrawal>(raw)?;
    check_body::<injections::NewInjection>(raw)?;
    check_body::<injections::InjectionChange>(raw)?;
    check_body::<temperatures::NewTemperature>(raw)?;
    check_body::<temperatures::TemperatureChange>(raw)?;
    check_body::<adverse_events::NewAdverseEvent>(raw)?;
    check_body::<adverse_events::AdverseEventChange>(raw)?;
    check_body::<DeleteRequest>(raw)?;
    check_body::<queries::NewQuery>(raw)?;
    check_body::<queries::QueryStep>(raw)?;
    check_body::<locks::NewLock>(raw)?;
    check_body::<locks::Unlock>(raw)?;
    check_body::<signatures::SignRequest>(raw)?;
    check_body::<Value>(raw)?;
    Ok(())
}

/// Valid bodies of the clinical forms, as the API tests send them.
fn valid_bodies() -> Vec<(&'static str, Value)> {
    vec![
        (
            "subject",
            json!({"site_code": "FR01", "sex": "female", "birth_year_month": "2023-04", "weight_kg": 20.0,
                   "eligibility": {"INC-KD": true, "EXC-ANAKINRA": false}}),
        ),
        (
            "subject_change",
            json!({"sex": "male", "birth_year_month": "2023-05", "weight_kg": 21.5, "status": "completed", "reason": "typo"}),
        ),
        (
            "consent",
            json!({"form_version": "2.0", "signed_on": "2026-10-01", "signer": "legal_representative",
                   "representative_relationship": "mother", "assent": false}),
        ),
        (
            "withdrawal",
            json!({"withdrawn_on": "2026-10-09", "scope": "follow_up", "reason": "moved away"}),
        ),
        (
            "injection",
            json!({"study_day": 1, "administered_at": "2026-10-05T06:00:00Z", "dose_mg": 40.0, "weight_kg": 20.0,
                   "route": "subcutaneous", "injection_site": "thigh", "lot_number": "LOT-1", "given": true}),
        ),
        (
            "injection_change",
            json!({"dose_mg": 41.0, "given": false, "not_given_reason": "refused", "reason": "corrected"}),
        ),
        (
            "temperature",
            json!({"measured_at": "2026-10-05T12:00:00Z", "celsius": 38.5, "method": "rectal"}),
        ),
        (
            "temperature_change",
            json!({"celsius": 38.6, "reason": "transcription"}),
        ),
        (
            "adverse_event",
            json!({"term": "Bacterial pneumonia", "meddra_code": "10060946", "meddra_term": "Pneumonia bacterial",
                   "onset_date": "2026-10", "grade": 3, "serious": true, "seriousness_criteria": ["hospitalisation"],
                   "relationship": "possible", "action_taken": "interrupted", "outcome": "recovering",
                   "awareness_date": "2026-10-08"}),
        ),
        (
            "adverse_event_change",
            json!({"grade": 2, "end_date": "2026-10-20", "outcome": "recovered", "reason": "follow-up"}),
        ),
        ("delete", json!({"reason": "entered in error"})),
    ]
}

/// The field names of the forms and plausible values, so generated bodies get past the first
/// unknown field now and then.
const KEYS: &[&str] = &[
    "site_code",
    "sex",
    "birth_year_month",
    "weight_kg",
    "eligibility",
    "status",
    "reason",
    "form_version",
    "signed_on",
    "signer",
    "representative_relationship",
    "assent",
    "withdrawn_on",
    "scope",
    "study_day",
    "administered_at",
    "dose_mg",
    "route",
    "injection_site",
    "lot_number",
    "given",
    "not_given_reason",
    "measured_at",
    "celsius",
    "method",
    "term",
    "meddra_code",
    "meddra_term",
    "onset_date",
    "end_date",
    "grade",
    "serious",
    "seriousness_criteria",
    "relationship",
    "action_taken",
    "outcome",
    "awareness_date",
    "record_type",
    "record_id",
    "text",
    "password",
    "subject_code",
    "INC-KD",
];
const STRINGS: &[&str] = &[
    "",
    "FR01",
    "female",
    "male",
    "2023-04",
    "2026-10-01",
    "2026-10",
    "2026",
    "2026-02-30",
    "2026-10-05T06:00:00Z",
    "2026-10-05T06:00:00+25:00",
    "9999-12-31T23:59:59Z",
    "legal_representative",
    "participant",
    "all",
    "treatment",
    "follow_up",
    "thigh",
    "subcutaneous",
    "rectal",
    "hospitalisation",
    "possible",
    "none",
    "recovering",
    "10060946",
    "\u{0}",
    "\u{feff}",
    "\u{1F600}",
    "a\\b",
    "NaN",
    "1e999",
];

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<i16>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f)
            .map(Value::Number)),
        (-1000i64..100_000).prop_map(|n| json!(n as f64 / 100.0)),
        any::<Index>().prop_map(|i| Value::String((*i.get(STRINGS)).to_owned())),
        "\\PC{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(json_key(), inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn json_key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => any::<Index>().prop_map(|i| (*i.get(KEYS)).to_owned()),
        1 => "\\PC{0,8}",
    ]
}

/// A valid body with one field replaced (or removed, or one added).
fn mutated_body() -> impl Strategy<Value = Vec<u8>> {
    (
        any::<Index>(),
        any::<Index>(),
        prop::option::of(json_value()),
        any::<bool>(),
    )
        .prop_map(|(body, field, value, add)| {
            let bodies = valid_bodies();
            let mut v = bodies[body.index(bodies.len())].1.clone();
            let map = v.as_object_mut().unwrap();
            let keys: Vec<String> = map.keys().cloned().collect();
            let key = if add {
                (*field.get(KEYS)).to_owned()
            } else {
                keys[field.index(keys.len())].clone()
            };
            match value {
                Some(value) => map.insert(key, value),
                None => map.remove(&key),
            };
            serde_json::to_vec(&v).unwrap()
        })
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn bodies_from_any_json_never_panic(v in json_value()) {
        check_all_bodies(&serde_json::to_vec(&v).unwrap())?;
    }

    #[test]
    fn bodies_from_mutated_forms_never_panic(raw in mutated_body()) {
        check_all_bodies(&raw)?;
    }

    #[test]
    fn bodies_from_any_bytes_never_panic(raw in prop::collection::vec(any::<u8>(), 0..200)) {
        check_all_bodies(&raw)?;
    }

    #[test]
    fn bodies_from_json_like_text_never_panic(
        text in "[\\[\\]{}\",:0-9a-z_\\\\. -]{0,80}",
    ) {
        check_all_bodies(text.as_bytes())?;
    }

    #[test]
    fn a_nul_escape_is_found_exactly_when_a_string_holds_nul(s in "\\PC{0,20}|[\\\\u0\"]{0,12}", nul in any::<bool>()) {
        let s = if nul { format!("{s}\u{0}") } else { s };
        let raw = serde_json::to_vec(&json!({ "reason": s })).unwrap();
        prop_assert_eq!(has_nul_escape(&raw), s.contains('\u{0}'));
    }
}

#[test]
fn valid_bodies_parse() {
    for (name, v) in valid_bodies() {
        let raw = serde_json::to_vec(&v).unwrap();
        let ok = match name {
            "subject" => parse_body::<subjects::NewSubject>(&raw).is_ok(),
            "subject_change" => parse_body::<subjects::SubjectChange>(&raw).is_ok(),
            "consent" => parse_body::<consents::NewConsent>(&raw).is_ok(),
            "withdrawal" => parse_body::<consents::Withdrawal>(&raw).is_ok(),
            "injection" => parse_body::<injections::NewInjection>(&raw).is_ok(),
            "injection_change" => parse_body::<injections::InjectionChange>(&raw).is_ok(),
            "temperature" => parse_body::<temperatures::NewTemperature>(&raw).is_ok(),
            "temperature_change" => parse_body::<temperatures::TemperatureChange>(&raw).is_ok(),
            "adverse_event" => parse_body::<adverse_events::NewAdverseEvent>(&raw).is_ok(),
            "adverse_event_change" => {
                parse_body::<adverse_events::AdverseEventChange>(&raw).is_ok()
            }
            "delete" => parse_body::<DeleteRequest>(&raw).is_ok(),
            other => panic!("no parser for {other}"),
        };
        assert!(ok, "{name}: {v}");
    }
}

#[test]
fn malformed_and_trailing_json_is_a_400_and_a_bad_field_a_422() {
    for raw in [
        &b"{"[..],
        b"",
        b"{\"reason\": \"x\"} {}",
        b"{\"reason\": \"x\"} trailing",
        b"\xff",
    ] {
        assert!(
            matches!(
                parse_body::<DeleteRequest>(raw),
                Err(AppError::BadRequest(_))
            ),
            "{:?}",
            String::from_utf8_lossy(raw)
        );
    }
    assert!(matches!(
        parse_body::<Value>(b"{} {}"),
        Err(AppError::BadRequest(_))
    ));
    match parse_body::<DeleteRequest>(br#"{"": null}"#) {
        Err(AppError::Validation(e)) => assert_eq!(e[0].field, "body"),
        other => panic!("{other:?}"),
    }
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    assert!(matches!(
        parse_body::<Value>(deep.as_bytes()),
        Err(AppError::BadRequest(_))
    ));
    match parse_body::<temperatures::NewTemperature>(
        br#"{"measured_at": "2026-10-05T12:00:00Z", "celsius": "hot", "method": "rectal"}"#,
    ) {
        Err(AppError::Validation(e)) => assert_eq!(e[0].field, "celsius"),
        other => panic!("{other:?}"),
    }
    match parse_body::<DeleteRequest>(br#"{"reason": "a\u0000b"}"#) {
        Err(AppError::Validation(e)) => assert_eq!(e[0].field, "body"),
        other => panic!("{other:?}"),
    }
    assert!(parse_body::<DeleteRequest>(br#"{"reason": "a\\u0000b"}"#).is_ok());
}

#[test]
fn eligibility_checklists_never_panic() {
    let protocol = Protocol::parse(KAWASAKI).unwrap();
    let mut runner = proptest::test_runner::TestRunner::new(config(128));
    runner
        .run(
            &prop::collection::btree_map(json_key(), any::<bool>(), 0..10),
            |answers: BTreeMap<String, bool>| {
                let _ = subjects::check_eligibility(&protocol, &answers);
                Ok(())
            },
        )
        .unwrap();
}

// ---------------------------------------------------------------------------------------------
// Study definitions (config/studies): the loader never panics; an error is one line at a line
// of the file.

const STUDIES: [(&str, &str); 5] = [
    (
        "kawasaki.toml",
        include_str!("../config/studies/kawasaki.toml"),
    ),
    ("thera.toml", include_str!("../config/studies/thera.toml")),
    ("mkd.toml", include_str!("../config/studies/mkd.toml")),
    ("nlrp12.toml", include_str!("../config/studies/nlrp12.toml")),
    (
        "ssc-calcinosis.toml",
        include_str!("../config/studies/ssc-calcinosis.toml"),
    ),
];

fn check_study(text: &str) -> Result<(), TestCaseError> {
    match casebook::domain::study::parse("s.toml", text) {
        Ok(d) => prop_assert_eq!(d.sha256.len(), 64),
        Err(errors) => {
            prop_assert!(!errors.is_empty());
            let lines = text.lines().count() + 1;
            for e in errors {
                let shown = e.to_string();
                prop_assert!(shown.starts_with("s.toml:"), "{}", shown);
                prop_assert!(!e.message.trim().is_empty(), "an empty error");
                prop_assert!(!shown.contains('\n'), "a multi-line error: {:?}", shown);
                if let Some(line) = e.line {
                    prop_assert!((1..=lines).contains(&line), "line {} of {}", line, lines);
                }
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(128))]

    #[test]
    fn study_parse_never_panics_on_mutated_shipped_definitions(
        which in 0..STUDIES.len(),
        mutations in prop::collection::vec(mutation(), 1..5),
    ) {
        let text = apply(STUDIES[which].1, &mutations);
        check_study(&text)?;
    }

    /// Expressions are where a typo is likeliest: garble one and the loader still answers.
    #[test]
    fn study_parse_never_panics_on_garbled_expressions(
        which in 0..STUDIES.len(),
        pick in any::<Index>(),
        cut in any::<Index>(),
        insert in "[a-z_ ()\\[\\]'.,!?:<>=&|+*/%-]{0,6}",
    ) {
        let text = STUDIES[which].1;
        let spots: Vec<(usize, usize)> = text
            .match_indices("expr = \"")
            .chain(text.match_indices("show_if = \""))
            .chain(text.match_indices("derive = \""))
            .map(|(at, key)| {
                let start = at + key.len();
                let end = start + text[start..].find('"').unwrap_or(0);
                (start, end)
            })
            .collect();
        prop_assume!(!spots.is_empty());
        let (start, end) = spots[pick.index(spots.len())];
        let body = &text[start..end];
        let at = start + body.char_indices().map(|(i, _)| i).nth(cut.index(body.chars().count().max(1))).unwrap_or(0);
        let garbled = format!("{}{}{}", &text[..at], insert.replace('"', ""), &text[at..]);
        check_study(&garbled)?;
    }
}

#[test]
fn shipped_studies_parse() {
    for (name, text) in STUDIES {
        let d = casebook::domain::study::parse(name, text);
        assert!(d.is_ok(), "{name}: {:?}", d.err());
    }
}
