//! Studies as data: a study's definition (visits, forms, items, code lists, checks,
//! derivations, named rules) read from its TOML file and checked before anything runs. No I/O
//! here: the caller reads the file and passes its text. The format is in
//! docs/study-definitions.md.

mod build;
pub mod compat;
pub mod expr;
pub mod model;
mod raw;
pub mod records;
pub mod rules;
pub mod schedule;
pub mod sdtm;
pub mod values;
pub mod view;

pub use build::{parse, DefinitionError};
pub use model::*;

/// One of today's three forms, whose records are form records now
/// (docs/engine-migration.md): they keep their own paths under `/subjects/{code}/`, answer
/// their legacy bodies there, and keep their legacy exports (CSV, ODM OIDs, SDTM); the
/// generic exports leave them out (`Definition::record_forms`).
#[derive(Debug, Clone, Copy)]
pub struct MovedForm {
    pub form: &'static str,
    /// its old table: the record type queries and verifications still accept and answer
    /// for its records, and the `entity` of its rows in `legacy_record_ids`
    pub entity: &'static str,
    /// what one record is called in messages ("This temperature is ...")
    pub noun: &'static str,
}

pub const MOVED_FORMS: [MovedForm; 3] = [
    MovedForm {
        form: "injection",
        entity: "injections",
        noun: "injection",
    },
    MovedForm {
        form: "temperature",
        entity: "temperatures",
        noun: "temperature",
    },
    MovedForm {
        form: "adverse_event",
        entity: "adverse_events",
        noun: "adverse event",
    },
];

pub fn moved_form(form: &str) -> Option<&'static MovedForm> {
    MOVED_FORMS.iter().find(|m| m.form == form)
}

pub fn moved_entity(entity: &str) -> Option<&'static MovedForm> {
    MOVED_FORMS.iter().find(|m| m.entity == entity)
}

/// One line per form: what `casebook study check` prints for a clean file.
pub fn summary(d: &Definition) -> String {
    let items: usize = d.forms.iter().map(|f| f.items.len()).sum();
    format!(
        "{} \"{}\" version {}: {} visits, {} forms, {} items, {} code lists, {} rules; sha256 {}",
        d.study.id,
        d.study.name,
        d.study.version,
        d.visits.len(),
        d.forms.len(),
        items,
        d.codelists.len(),
        d.rules.len(),
        d.sha256
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small study touching every part of the format; each test breaks one thing in it.
    const BASE: &str = r#"
[study]
id = "DEMO"
name = "Demo"
version = "3"

[consent]
versions = ["1.0"]
signers = ["participant", "representative"]

[schedule]
anchor = "first_dose"
anchor_item = "dosing.given_at"

[constants]
fever_threshold_celsius = 38.0

[[treatments]]
id = "anakinra"
name = "Anakinra"
dose = { kind = "per_kg", mg_per_kg = 2.0, escalation = { from_day = 3, mg_per_kg = 4.0, on_rule = "fever" } }
max_days = 15

[[visits]]
id = "D1"
name = "Day 1"
day = 1
window = [0, 1]
forms = ["dosing", "vas"]

[[forms]]
id = "dosing"
name = "Dosing"
repeat = "per_day"
dated_by = "given_at"

  [[forms.items]]
  id = "day"
  label = "Study day"
  type = "integer"
  required = true

  [[forms.items]]
  id = "given_at"
  label = "Given at"
  type = "datetime"
  required = true

  [[forms.items]]
  id = "dose_mg"
  label = "Dose"
  type = "decimal"
  decimals = 2
  unit = "mg"
  range = { min = 0, max = 10000 }
  required = true

  [[forms.items]]
  id = "weight_kg"
  label = "Weight"
  type = "decimal"
  decimals = 2
  unit = "kg"
  range = { min = 0.5, max = 300 }
  soft_range = { min = 3, max = 60, message = "unusual for a child" }

  [[forms.items]]
  id = "site"
  label = "Injection site"
  type = "choice"
  codelist = "sites"

  [[forms.items]]
  id = "expected_mg"
  label = "Expected dose"
  type = "decimal"
  decimals = 2

[[forms]]
id = "vas"
name = "Pain"
repeat = "per_visit"
dated_by = "assessed_on"

  [[forms.items]]
  id = "assessed_on"
  label = "Date"
  type = "date"
  required = true

  [[forms.items]]
  id = "pain_mm"
  label = "Pain"
  type = "integer"
  unit = "mm"
  range = { min = 0, max = 100, check = "hard" }
  required = true

  [[forms.items]]
  id = "severe"
  label = "Severe"
  type = "boolean"
  derive = "pain_mm > 70"

  [[forms.items]]
  id = "comment"
  label = "Why severe"
  type = "text"
  max_length = 200
  show_if = "severe"

  [[forms.checks]]
  id = "comment_when_severe"
  expr = "!severe || comment != null"
  message = "say why"
  items = ["comment"]
  check = "soft"

[[forms]]
id = "temp"
name = "Temperature"
repeat = "any"
dated_by = "measured_at"

  [[forms.items]]
  id = "measured_at"
  label = "Measured at"
  type = "datetime"
  required = true

  [[forms.items]]
  id = "celsius"
  label = "Temperature"
  type = "decimal"
  decimals = 1
  unit = "°C"
  range = { min = 30.0, max = 45.0 }
  required = true

  [[forms.items]]
  id = "fever"
  label = "Fever"
  type = "boolean"

[[codelists]]
id = "sites"
codes = [{ code = "abdomen", label = "Abdomen" }, { code = "thigh", label = "Thigh" }]

[[rules]]
id = "dose_rule"
kind = "dose"
form = "dosing"
treatment = "anakinra"
items = { day = "day", at = "given_at", dose = "dose_mg", weight = "weight_kg", expected = "expected_mg" }

[[rules]]
id = "fever"
kind = "fever"
form = "temp"
threshold = 38.0
items = { temperature = "celsius", at = "measured_at", flag = "fever" }

[[rules]]
id = "endpoints"
kind = "fever_endpoints"
fever_rule = "fever"
hours = 48
until_day = 3
"#;

    fn errors(text: &str) -> Vec<String> {
        match parse("demo.toml", text) {
            Ok(_) => Vec::new(),
            Err(e) => e.iter().map(ToString::to_string).collect(),
        }
    }

    fn line_of(text: &str, needle: &str) -> usize {
        let at = text
            .find(needle)
            .unwrap_or_else(|| panic!("{needle} not in the text"));
        text[..at].matches('\n').count() + 1
    }

    /// Replaces `from` (which must occur) and returns the errors of the result.
    fn broken(from: &str, to: &str) -> (String, Vec<String>) {
        assert!(BASE.contains(from), "{from}");
        let text = BASE.replacen(from, to, 1);
        let e = errors(&text);
        (text, e)
    }

    #[test]
    fn the_base_loads_with_its_model() {
        let d = parse("demo.toml", BASE).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(d.study.version, "3");
        let vas = d.form("vas").unwrap_or_else(|| panic!("vas"));
        assert_eq!(vas.repeat, Repeat::PerVisit);
        let severe = vas.item("severe").unwrap_or_else(|| panic!("severe"));
        assert!(severe.derived());
        assert_eq!(
            severe.derive.as_ref().map(|e| e.reads.clone()),
            Some(vec!["pain_mm".to_owned()])
        );
        let dosing = d.form("dosing").unwrap_or_else(|| panic!("dosing"));
        assert_eq!(
            dosing
                .item("expected_mg")
                .and_then(|i| i.derived_by.clone())
                .as_deref(),
            Some("dose_rule")
        );
        let w = dosing.item("weight_kg").unwrap_or_else(|| panic!("weight"));
        assert_eq!(
            w.range
                .as_ref()
                .and_then(|r| r.min.clone())
                .map(|m| m.to_string())
                .as_deref(),
            Some("0.5")
        );
        assert_eq!(w.soft_range.as_ref().map(|r| r.check), Some(Severity::Soft));
        assert_eq!(
            d.schedule.anchor_item,
            Some(ItemRef {
                form: "dosing".into(),
                item: "given_at".into()
            })
        );
        assert!(summary(&d).starts_with("DEMO \"Demo\" version 3: 1 visits, 3 forms, 13 items"));
    }

    #[test]
    fn a_duplicate_id_names_its_line() {
        let (text, e) = broken("id = \"severe\"", "id = \"pain_mm\"");
        let line = line_of(&text, "id = \"pain_mm\"\n  label = \"Severe\"");
        assert!(
            e.contains(&format!("demo.toml:{line}: duplicate item id `pain_mm`")),
            "{e:?}"
        );
        let (_, e) = broken("id = \"temp\"", "id = \"vas\"");
        assert!(
            e.iter().any(|m| m.contains("duplicate form id `vas`")),
            "{e:?}"
        );
        let (_, e) = broken("code = \"thigh\"", "code = \"abdomen\"");
        assert!(
            e.iter()
                .any(|m| m.contains("duplicate code `abdomen` in code list `sites`")),
            "{e:?}"
        );
    }

    #[test]
    fn not_before_orders_two_dates_of_the_form_and_names_its_line_when_it_cannot() {
        let ok = parse(
            "kawasaki.toml",
            include_str!("../../../config/studies/kawasaki.toml"),
        )
        .unwrap_or_else(|e| panic!("{e:?}"));
        let ae = ok.form("adverse_event").unwrap_or_else(|| panic!("ae"));
        assert!(ae.after_withdrawal);
        assert_eq!(
            ae.item("end_date").and_then(|i| i.not_before.as_deref()),
            Some("onset_date")
        );
        assert!(!ok
            .form("echocardiography")
            .is_some_and(|f| f.after_withdrawal));

        let on = |item: &str, other: &str| {
            let from = format!("  id = \"{item}\"\n");
            let to = format!("{from}  not_before = \"{other}\"\n");
            let (text, e) = broken(&from, &to);
            (line_of(&text, &format!("not_before = \"{other}\"")), e)
        };
        let (line, e) = on("assessed_on", "performed_on");
        assert_eq!(
            e,
            vec![format!(
                "demo.toml:{line}: not_before of `assessed_on`: form `vas` has no item `performed_on`"
            )]
        );
        let (line, e) = on("assessed_on", "pain_mm");
        assert_eq!(
            e,
            vec![format!("demo.toml:{line}: not_before of `assessed_on`: `pain_mm` is of type integer, not date or partial_date")]
        );
        let (line, e) = on("pain_mm", "assessed_on");
        assert_eq!(
            e,
            vec![format!("demo.toml:{line}: not_before of `pain_mm`: `pain_mm` is of type integer; not_before goes on date and partial_date items")]
        );
        let (_, e) = on("assessed_on", "assessed_on");
        assert!(
            e[0].ends_with("not_before of `assessed_on` names `assessed_on` itself"),
            "{e:?}"
        );
    }

    #[test]
    fn an_unknown_item_in_an_expression_names_its_line() {
        let (text, e) = broken("derive = \"pain_mm > 70\"", "derive = \"pian_mm > 70\"");
        let line = line_of(&text, "pian_mm");
        assert_eq!(e, vec![format!("demo.toml:{line}: derive of `severe`: in `pian_mm > 70`: unknown item or constant `pian_mm`")]);
        // an item of another form is not in scope either
        let (_, e) = broken(
            "show_if = \"severe\"",
            "show_if = \"celsius > fever_threshold_celsius\"",
        );
        assert!(
            e.iter()
                .any(|m| m.contains("unknown item or constant `celsius`")),
            "{e:?}"
        );
    }

    #[test]
    fn a_broken_expression_names_its_line() {
        let (text, e) = broken(
            "expr = \"!severe || comment != null\"",
            "expr = \"!severe || (comment != null\"",
        );
        let line = line_of(&text, "expr = \"!severe");
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].starts_with(&format!(
                "demo.toml:{line}: check `comment_when_severe`: cannot parse"
            )),
            "{e:?}"
        );
    }

    #[test]
    fn expressions_are_type_checked() {
        let (_, e) = broken("show_if = \"severe\"", "show_if = \"pain_mm\"");
        assert!(
            e.iter()
                .any(|m| m.contains("show_if of `comment` `pain_mm` gives a int, not a bool")),
            "{e:?}"
        );
        let (_, e) = broken("derive = \"pain_mm > 70\"", "derive = \"pain_mm * 1.5\"");
        assert!(
            e.iter()
                .any(|m| m.contains("write the number with a point")),
            "{e:?}"
        );
        let (_, e) = broken("derive = \"pain_mm > 70\"", "derive = \"severe\"");
        assert!(e.iter().any(|m| m.contains("depends on itself")), "{e:?}");
    }

    #[test]
    fn a_misspelt_code_in_an_expression_names_its_line() {
        let (text, e) = broken(
            "  label = \"Expected dose\"\n",
            "  label = \"Expected dose\"\n  show_if = \"site != 'tigh'\"\n",
        );
        let line = line_of(&text, "'tigh'");
        assert_eq!(
            e,
            vec![format!("demo.toml:{line}: show_if of `expected_mg`: in `site != 'tigh'`: `tigh` is not a code of `site` (its codes: abdomen, thigh)")]
        );
    }

    #[test]
    fn a_missing_code_list_names_its_line() {
        let (text, e) = broken("codelist = \"sites\"", "codelist = \"injection_sites\"");
        let line = line_of(&text, "codelist = \"injection_sites\"");
        assert_eq!(
            e,
            vec![format!(
                "demo.toml:{line}: code list `injection_sites` is referenced but not defined"
            )]
        );
    }

    #[test]
    fn unknown_forms_rules_and_types_are_errors() {
        let (text, e) = broken(
            "forms = [\"dosing\", \"vas\"]",
            "forms = [\"dosing\", \"vas\", \"echo\"]",
        );
        let line = line_of(&text, "\"echo\"");
        assert!(
            e.contains(&format!(
                "demo.toml:{line}: visit `D1`: unknown form `echo`"
            )),
            "{e:?}"
        );
        let (_, e) = broken("type = \"boolean\"\n  derive", "type = \"bool\"\n  derive");
        assert!(
            e.iter()
                .any(|m| m.contains("type `bool`: one of text, integer")),
            "{e:?}"
        );
        let (_, e) = broken("on_rule = \"fever\"", "on_rule = \"fevre\"");
        assert!(
            e.iter().any(|m| m.contains("escalation.on_rule `fevre`")),
            "{e:?}"
        );
        let (text, e) = broken(
            "  codelist = \"sites\"",
            "  codelist = \"sites\"\n  show_if = \"expected_mg > 0.0\"",
        );
        let line = line_of(&text, "show_if = \"expected_mg");
        assert!(
            e.contains(&format!(
                "demo.toml:{line}: show_if of `site`: reads `expected_mg`, which rule `dose_rule` computes after the expressions run"
            )),
            "{e:?}"
        );
        let (_, e) = broken("weight = \"weight_kg\", ", "");
        assert!(
            e.iter()
                .any(|m| m.contains("dosed per kg: items.weight is needed")),
            "{e:?}"
        );
        let (_, e) = broken("flag = \"fever\"", "flag = \"celsius\"");
        assert!(
            e.iter()
                .any(|m| m.contains("`celsius` is an item of type decimal, the rule needs boolean")),
            "{e:?}"
        );
        let (_, e) = broken("forms = [\"dosing\", \"vas\"]", "forms = [\"dosing\"]");
        assert!(
            e.iter()
                .any(|m| m.contains("form `vas` is entered per visit, but no visit lists it")),
            "{e:?}"
        );
    }

    #[test]
    fn the_fever_endpoints_window_is_checked_with_its_line() {
        let d = parse("demo.toml", BASE).unwrap_or_else(|e| panic!("{e:?}"));
        let r = d
            .rules
            .iter()
            .find(|r| r.kind == RuleKind::FeverEndpoints)
            .unwrap_or_else(|| panic!("the rule"));
        assert_eq!((r.hours, r.until_day), (Some(48), Some(3)));

        for bad in ["until_day = 0", "until_day = 367", "until_day = -1"] {
            let (text, e) = broken("until_day = 3", bad);
            let line = line_of(&text, bad);
            assert_eq!(
                e,
                vec![format!(
                    "demo.toml:{line}: until_day: a study day, 1 to 366"
                )],
                "{bad}"
            );
        }
        let (text, e) = broken("until_day = 3", "until_day = 2");
        let line = line_of(&text, "until_day = 2");
        assert_eq!(
            e,
            vec![format!("demo.toml:{line}: until_day: the window from 48 h after the first dose would be closed by the end of study day 2")]
        );
        let (text, e) = broken("until_day = 3\n", "");
        let line = line_of(&text, "id = \"endpoints\"");
        assert_eq!(
            e,
            vec![format!(
                "demo.toml:{line}: rule `endpoints`: a fever_endpoints rule needs until_day"
            )]
        );
        let twice = "[[rules]]\nid = \"again\"\nkind = \"fever_endpoints\"\nfever_rule = \"fever\"\nhours = 24\nuntil_day = 2\n";
        let (text, e) = broken(
            "[[rules]]\nid = \"endpoints\"",
            &format!("{twice}\n[[rules]]\nid = \"endpoints\""),
        );
        let line = line_of(&text, "id = \"endpoints\"");
        assert_eq!(
            e,
            vec![format!(
                "demo.toml:{line}: rule `endpoints`: a study has one fever_endpoints rule"
            )]
        );
        let (text, e) = broken("kind = \"dose\"", "kind = \"study_day\"");
        let line = line_of(&text, "id = \"endpoints\"");
        assert!(
            e.contains(&format!("demo.toml:{line}: rule `endpoints`: a fever_endpoints rule counts from the first dose: the study needs a dose rule")),
            "{e:?}"
        );
    }

    #[test]
    fn ranges_and_options_fit_their_items() {
        let (_, e) = broken(
            "range = { min = 0, max = 100, check = \"hard\" }",
            "range = { min = 0.5, max = 100, check = \"hard\" }",
        );
        assert!(
            e.iter()
                .any(|m| m.contains("min `0.5` has more digits after the point than the item (0)")),
            "{e:?}"
        );
        let (_, e) = broken(
            "range = { min = 0, max = 100, check = \"hard\" }",
            "range = { min = 100, max = 0 }",
        );
        assert!(
            e.iter().any(|m| m.contains("min 100 is above max 0")),
            "{e:?}"
        );
        let (_, e) = broken("max_length = 200", "decimals = 2");
        assert!(
            e.iter().any(|m| m.contains("a text item needs max_length")),
            "{e:?}"
        );
        assert!(
            e.iter()
                .any(|m| m.contains("decimals applies to decimal items, not text")),
            "{e:?}"
        );
    }

    #[test]
    fn every_error_is_reported_not_only_the_first() {
        let text = BASE
            .replacen("codelist = \"sites\"", "codelist = \"nope\"", 1)
            .replacen("derive = \"pain_mm > 70\"", "derive = \"pian_mm > 70\"", 1)
            .replacen("code = \"thigh\"", "code = \"abdomen\"", 1);
        let e = errors(&text);
        assert_eq!(e.len(), 3, "{e:?}");
        // in the order of the file
        let lines: Vec<usize> = e
            .iter()
            .filter_map(|m| m.split(':').nth(1).and_then(|l| l.parse().ok()))
            .collect();
        let mut sorted = lines.clone();
        sorted.sort_unstable();
        assert_eq!(lines, sorted);
    }

    /// Found by tests/properties.rs: toml gives no message for some control characters.
    #[test]
    fn a_control_character_is_an_error_with_words() {
        let e = errors(&format!("{BASE}\n#\u{b} a comment\n"));
        let line = BASE.lines().count() + 2;
        assert_eq!(
            e,
            vec![format!(
                "demo.toml:{line}: not valid TOML at column 2 (a control character?)"
            )]
        );
    }

    #[test]
    fn a_toml_error_names_its_line() {
        let (text, e) = broken("repeat = \"any\"", "repeat = any");
        let line = line_of(&text, "repeat = any");
        assert_eq!(e.len(), 1);
        assert!(e[0].starts_with(&format!("demo.toml:{line}: ")), "{e:?}");
        let (text, e) = broken("label = \"Fever\"", "label = \"Fever\"\n  colour = \"red\"");
        let line = line_of(&text, "colour");
        assert!(
            e[0].starts_with(&format!("demo.toml:{line}: unknown field `colour`")),
            "{e:?}"
        );
    }

    #[test]
    fn the_view_has_the_shape_clients_read() {
        let d = parse("demo.toml", BASE).unwrap_or_else(|e| panic!("{e:?}"));
        let v = serde_json::to_value(view::DefinitionView::of(&d)).unwrap_or_default();
        assert_eq!(v["study"]["id"], "DEMO");
        assert_eq!(v["visits"][0]["window_after"], 1);
        let weight = &v["forms"][0]["items"][3];
        assert_eq!(weight["id"], "weight_kg");
        assert_eq!(weight["min"], serde_json::json!(0.5));
        assert_eq!(weight["check"], "hard");
        assert_eq!(weight["soft_max"], 60);
        assert_eq!(v["forms"][0]["items"][4]["choices"][1]["code"], "thigh");
        assert_eq!(v["forms"][0]["items"][5]["derived"], true);
        // optional keys appear only when they apply
        assert!(v["forms"][0]["items"][0].get("unit").is_none());
        assert!(v["forms"][0]["items"][0].get("derived").is_none());
        assert_eq!(v["forms"][1]["items"][3]["show_if"], "severe");
    }
}
