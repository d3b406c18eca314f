//! How the forms of a study definition become SDTM rows: the domain's class (SDTM IG 3.x:
//! findings, events, interventions), which items are tests, which fill a variable of the
//! record, and the test codes. No I/O: the SDTM export (`crate::export::sdtm`) reads the
//! records and writes the rows this plan describes, for every form alike (today's injection,
//! temperature and adverse event forms too).
//!
//! - Findings (VS, LB, QS, CV, FA and any domain not listed below): one row per item value,
//!   `--TESTCD` from the item id, `--TEST` its label, `--ORRES` the value as stored. The
//!   items that are tests are those without an `sdtm` annotation and those annotated
//!   `--ORRES`; an item annotated with another variable (`LBSPEC`, `VSLOC`) fills that
//!   variable on every row of its record. The `dated_by` item dates the rows (`--DTC`).
//! - Events (AE, CE, DS, MH, DV, HO) and interventions (EX, EC, CM, PR, SU, AG, ML): one row
//!   per record; annotated items fill their variables, the topic (`--TERM`, `--TRT`) is the
//!   item annotated with it or else the form's `sdtm.values` for it, its SDTM category or
//!   name; `--STDTC` is the item annotated with it or else the `dated_by` item. A `choices`
//!   item whose codes name an `sdtm_flag` fills those Y/N variables (`AESDTH`). Other items
//!   without an annotation are supplemental qualifiers (`SUPP--`: QNAM from the item id, as
//!   test codes are).
//! - Any class: an item may fill several variables (`["EXSTDTC", "EXENDTC"]`) or none
//!   (`[]`: in no dataset); the form's `sdtm.values` fill variables with the same text on
//!   every row (`EXDOSFRQ = "QD"`), and its `sdtm.when` item leaves out the records where it
//!   is not true (an injection not given).

use super::model::{Definition, Form, Item, ItemType, Repeat};

/// The SDTM general observation class of a domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Findings,
    Events,
    Interventions,
}

/// The class of a domain code (two upper-case letters): the SDTM IG's interventions and
/// events domains by name, every other domain a findings one.
pub fn class(domain: &str) -> Class {
    match domain {
        "EX" | "EC" | "CM" | "PR" | "SU" | "AG" | "ML" => Class::Interventions,
        "AE" | "CE" | "DS" | "MH" | "DV" | "HO" => Class::Events,
        _ => Class::Findings,
    }
}

/// The topic variable of a class: one row per test, event or treatment.
pub fn topic(class: Class) -> &'static str {
    match class {
        Class::Findings => "TESTCD",
        Class::Events => "TERM",
        Class::Interventions => "TRT",
    }
}

/// The variable that dates a record's rows.
pub fn dtc(class: Class) -> &'static str {
    match class {
        Class::Findings => "DTC",
        Class::Events | Class::Interventions => "STDTC",
    }
}

/// An item that becomes one row of a findings dataset.
#[derive(Debug, Clone)]
pub struct Test<'a> {
    pub item: &'a Item,
    pub testcd: String,
    /// `--TEST` (or `QLABEL`): the label the definition chose, else the item's, cut to 40
    pub label: String,
}

impl<'a> Test<'a> {
    fn new(item: &'a Item, testcd: String) -> Self {
        let label = item.sdtm_label.clone().unwrap_or_else(|| {
            let cut: String = item.label.chars().take(40).collect();
            cut.trim_end().to_owned()
        });
        Test {
            item,
            testcd,
            label,
        }
    }
}

/// A Y/N variable that says whether a `choices` item holds one code (`AESDTH`: the
/// seriousness criteria hold `death`).
#[derive(Debug, Clone)]
pub struct Flag<'a> {
    pub var: String,
    pub item: &'a Item,
    pub code: String,
}

/// One form's share of a dataset.
#[derive(Debug, Clone)]
pub struct Source<'a> {
    pub form: &'a Form,
    /// findings only: the items that are tests, in definition order
    pub tests: Vec<Test<'a>>,
    /// items that fill a variable of the record (`EXDOSE`, `LBSPEC`), by variable name
    pub mapped: Vec<(String, &'a Item)>,
    /// events and interventions: the items without an annotation, as supplemental
    /// qualifiers (`testcd` is their QNAM)
    pub supp: Vec<Test<'a>>,
    /// the Y/N variables of `choices` items whose codes name one
    pub flags: Vec<Flag<'a>>,
    /// the variables the form fills: its `sdtm.values`, then those of its items in item
    /// order
    pub vars: Vec<String>,
}

impl Source<'_> {
    /// The item that fills `var`, if one is annotated with it.
    pub fn item_for(&self, var: &str) -> Option<&Item> {
        self.mapped.iter().find(|(v, _)| v == var).map(|(_, i)| *i)
    }

    /// The text the form gives `var` on every row (`sdtm.values`).
    pub fn constant(&self, var: &str) -> Option<&str> {
        self.form
            .sdtm
            .as_ref()
            .and_then(|s| s.values.iter().find(|(v, _)| v == var))
            .map(|(_, t)| t.as_str())
    }

    /// The variables the form gives the same text on every row, in name order.
    pub fn constants(&self) -> &[(String, String)] {
        self.form.sdtm.as_ref().map_or(&[], |s| s.values.as_slice())
    }

    /// The boolean item without which a record is not in SDTM (`sdtm.when`).
    pub fn when(&self) -> Option<&str> {
        self.form.sdtm.as_ref().and_then(|s| s.when.as_deref())
    }

    /// `--CAT`: the form's SDTM category, if it has one.
    pub fn category(&self) -> Option<&str> {
        self.form.sdtm.as_ref().and_then(|s| s.category.as_deref())
    }

    /// The topic when no item carries it: the text the form gives the topic variable, else
    /// the category, else the form's name in upper case.
    pub fn default_topic(&self) -> String {
        let given = self
            .form
            .sdtm
            .as_ref()
            .and_then(|s| self.constant(&format!("{}{}", s.domain, topic(class(&s.domain)))));
        given
            .or_else(|| self.category())
            .map(str::to_owned)
            .unwrap_or_else(|| self.form.name.to_uppercase())
    }
}

/// The forms that contribute to one domain's dataset.
#[derive(Debug, Clone)]
pub struct Plan<'a> {
    pub domain: String,
    pub class: Class,
    pub sources: Vec<Source<'a>>,
}

impl Plan<'_> {
    /// Whether the domain has a `SUPP--` dataset.
    pub fn has_supp(&self) -> bool {
        self.sources.iter().any(|s| !s.supp.is_empty())
    }

    /// Variables the forms give (`sdtm.values`), the items are annotated with, then the
    /// flags, in first-seen order (the topic among them: it has its own place).
    pub fn mapped_vars(&self) -> Vec<&str> {
        let mut vars: Vec<&str> = Vec::new();
        for s in &self.sources {
            for v in s.vars.iter().map(String::as_str) {
                if !vars.contains(&v) {
                    vars.push(v);
                }
            }
        }
        vars
    }

    /// Whether `--CAT` may hold a value: a form of the domain has a category.
    pub fn has_category(&self) -> bool {
        self.sources.iter().any(|s| s.category().is_some())
    }

    /// Whether VISITNUM, VISIT and VISITDY may hold a value: a form of the domain is entered
    /// per visit (only those records have one).
    pub fn has_visits(&self) -> bool {
        self.sources
            .iter()
            .any(|s| s.form.repeat == Repeat::PerVisit)
    }
}

/// Whether an item's `sdtm` annotation is a variable name XPT v5 can carry (1-8 upper-case
/// letters, digits or `_`, starting with a letter): checked when the definition loads.
pub fn is_variable_name(s: &str) -> bool {
    (1..=8).contains(&s.len())
        && s.starts_with(|c: char| c.is_ascii_uppercase())
        && s.chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

/// The test code of an item id: upper case; when longer than 8, without its `_`; cut to 8.
fn base_testcd(id: &str) -> String {
    let up = id.to_ascii_uppercase();
    let short = if up.len() > 8 {
        up.replace('_', "")
    } else {
        up
    };
    short.chars().take(8).collect()
}

/// A test code unused in `taken`: the base code, else its first characters and a number.
fn unique_testcd(id: &str, taken: &[String]) -> String {
    let base = base_testcd(id);
    if !taken.contains(&base) {
        return base;
    }
    (2..)
        .map(|n| {
            let n = n.to_string();
            let keep = 8usize.saturating_sub(n.len()).min(base.len());
            format!("{}{n}", &base[..keep])
        })
        .find(|c| !taken.contains(c))
        .unwrap_or(base)
}

/// The plan of every domain the definition's form records reach, in the order the forms
/// first name them.
pub fn plans(def: &Definition) -> Vec<Plan<'_>> {
    let mut plans: Vec<Plan<'_>> = Vec::new();
    for form in &def.forms {
        // DM is built from the subjects themselves
        let Some(sdtm) = form.sdtm.as_ref().filter(|s| s.domain != "DM") else {
            continue;
        };
        let at = match plans.iter().position(|p| p.domain == sdtm.domain) {
            Some(at) => at,
            None => {
                plans.push(Plan {
                    domain: sdtm.domain.clone(),
                    class: class(&sdtm.domain),
                    sources: Vec::new(),
                });
                plans.len() - 1
            }
        };
        let plan = &mut plans[at];
        let orres = format!("{}ORRES", plan.domain);
        // codes the definition chose for this domain are never given to another item; the
        // same chosen code in two forms is the same test
        let chosen = chosen_codes(def, &plan.domain);
        let mut taken: Vec<String> = plan
            .sources
            .iter()
            .flat_map(|s| s.tests.iter().map(|t| t.testcd.clone()))
            .chain(chosen.iter().cloned())
            .collect();
        let mut qnams: Vec<String> = plan
            .sources
            .iter()
            .flat_map(|s| s.supp.iter().map(|t| t.testcd.clone()))
            .chain(chosen.iter().cloned())
            .collect();
        let mut source = Source {
            form,
            tests: Vec::new(),
            mapped: Vec::new(),
            supp: Vec::new(),
            flags: Vec::new(),
            vars: sdtm.values.iter().map(|(v, _)| v.clone()).collect(),
        };
        for item in &form.items {
            // the dating item is --DTC (or --STDTC) and the `when` item chooses the records,
            // unless annotated otherwise
            let dates = item.id == form.dated_by || Some(&item.id) == sdtm.when.as_ref();
            let vars = item.sdtm.as_deref();
            match vars {
                Some(vars) => {
                    for v in vars.iter().filter(|v| **v != orres || dates) {
                        source.mapped.push((v.clone(), item));
                        source.vars.push(v.clone());
                    }
                    if dates || plan.class != Class::Findings || !vars.contains(&orres) {
                        continue;
                    }
                }
                None if dates => continue,
                None => {
                    let flags = flags(def, item);
                    if !flags.is_empty() {
                        source.vars.extend(flags.iter().map(|f| f.var.clone()));
                        source.flags.extend(flags);
                        continue;
                    }
                    if plan.class != Class::Findings {
                        let qnam = item
                            .sdtm_code
                            .clone()
                            .unwrap_or_else(|| unique_testcd(&item.id, &qnams));
                        qnams.push(qnam.clone());
                        source.supp.push(Test::new(item, qnam));
                        continue;
                    }
                }
            }
            let testcd = item
                .sdtm_code
                .clone()
                .unwrap_or_else(|| unique_testcd(&item.id, &taken));
            taken.push(testcd.clone());
            source.tests.push(Test::new(item, testcd));
        }
        plan.sources.push(source);
    }
    plans
}

/// The Y/N variables a `choices` item fills: those its code list's codes name.
fn flags<'a>(def: &'a Definition, item: &'a Item) -> Vec<Flag<'a>> {
    let ItemType::Choices { codelist } = &item.kind else {
        return Vec::new();
    };
    def.codelist(codelist)
        .iter()
        .flat_map(|l| l.codes.iter())
        .filter_map(|c| {
            Some(Flag {
                var: c.sdtm_flag.clone()?,
                item,
                code: c.code.clone(),
            })
        })
        .collect()
}

/// The test codes and QNAMs the definition chooses (`sdtm_code`) for a domain's items.
fn chosen_codes(def: &Definition, domain: &str) -> Vec<String> {
    def.forms
        .iter()
        .filter(|f| f.sdtm.as_ref().is_some_and(|s| s.domain == domain))
        .flat_map(|f| f.items.iter().filter_map(|i| i.sdtm_code.clone()))
        .collect()
}

/// The plan of one domain, if a form of the definition maps to it.
pub fn plan<'a>(def: &'a Definition, domain: &str) -> Option<Plan<'a>> {
    plans(def).into_iter().find(|p| p.domain == domain)
}

/// SDTM's unit for a definition's unit (CDISC UNIT terms are ASCII: `C`, not `°C`).
pub fn unit(u: &str) -> &str {
    match u {
        "°C" => "C",
        "°F" => "F",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STUDY: &str = r#"
[study]
id = "S"
name = "S"

[consent]
versions = ["1"]
signers = ["participant"]

[schedule]
anchor = "enrolment"

[[visits]]
id = "D1"
name = "Day 1"
day = 1
forms = ["echo", "labs"]

[[forms]]
id = "echo"
name = "Echo"
repeat = "per_visit"
dated_by = "performed_on"
sdtm = { domain = "CV", category = "CORONARY ARTERIES" }

  [[forms.items]]
  id = "performed_on"
  label = "Date"
  type = "date"
  required = true

  [[forms.items]]
  id = "aneurysm"
  label = "Aneurysm"
  type = "boolean"

  [[forms.items]]
  id = "aneurysm_size_mm"
  label = "Size"
  type = "decimal"
  decimals = 1
  unit = "mm"
  sdtm = "CVORRES"

  [[forms.items]]
  id = "method"
  label = "Method"
  type = "text"
  max_length = 20
  sdtm = "CVMETHOD"

[[forms]]
id = "labs"
name = "Labs"
repeat = "per_visit"
dated_by = "sampled_on"
sdtm = { domain = "CV" }

  [[forms.items]]
  id = "sampled_on"
  label = "Date"
  type = "date"
  required = true

  [[forms.items]]
  id = "aneurysm"
  label = "Aneurysm again"
  type = "boolean"

[[forms]]
id = "crisis"
name = "Crisis"
repeat = "any"
dated_by = "start_date"
sdtm = { domain = "CE" }

  [[forms.items]]
  id = "start_date"
  label = "Start"
  type = "date"
  required = true

  [[forms.items]]
  id = "end_date"
  label = "End"
  type = "date"
  sdtm = "CEENDTC"

  [[forms.items]]
  id = "score"
  label = "Score"
  type = "integer"

[[forms]]
id = "plain"
name = "Plain"
repeat = "any"
dated_by = "on"

  [[forms.items]]
  id = "on"
  label = "Date"
  type = "date"
  required = true
"#;

    fn def() -> Definition {
        super::super::parse("s.toml", STUDY).unwrap_or_else(|e| panic!("{e:?}"))
    }

    #[test]
    fn classes_follow_the_sdtm_ig() {
        assert_eq!(class("EX"), Class::Interventions);
        assert_eq!(class("CM"), Class::Interventions);
        assert_eq!(class("AE"), Class::Events);
        assert_eq!(class("DS"), Class::Events);
        assert_eq!(class("CE"), Class::Events);
        for d in ["VS", "LB", "QS", "CV", "FA"] {
            assert_eq!(class(d), Class::Findings, "{d}");
        }
    }

    #[test]
    fn findings_rows_are_the_items_not_annotated_elsewhere_with_unique_test_codes() {
        let d = def();
        let plans = plans(&d);
        let domains: Vec<&str> = plans.iter().map(|p| p.domain.as_str()).collect();
        assert_eq!(domains, ["CV", "CE"], "forms without sdtm are not in SDTM");
        let cv = &plans[0];
        assert_eq!(cv.sources.len(), 2);
        let codes: Vec<&str> = cv.sources[0]
            .tests
            .iter()
            .map(|t| t.testcd.as_str())
            .collect();
        assert_eq!(codes, ["ANEURYSM", "ANEURYS2"], "the dating item is --DTC");
        assert_eq!(
            cv.sources[1].tests[0].testcd, "ANEURYS3",
            "unique in the domain"
        );
        assert_eq!(cv.mapped_vars(), ["CVMETHOD"]);
        assert_eq!(
            cv.sources[0].item_for("CVMETHOD").map(|i| i.id.as_str()),
            Some("method")
        );
        assert_eq!(cv.sources[0].default_topic(), "CORONARY ARTERIES");
        assert_eq!(cv.sources[1].category(), None);
    }

    #[test]
    fn events_carry_annotated_items_and_the_others_as_supplemental_qualifiers() {
        let d = def();
        let ce = plan(&d, "CE").unwrap_or_else(|| panic!("CE"));
        assert_eq!(ce.class, Class::Events);
        assert!(ce.sources[0].tests.is_empty());
        assert_eq!(ce.mapped_vars(), ["CEENDTC"]);
        let supp: Vec<&str> = ce.sources[0]
            .supp
            .iter()
            .map(|t| t.testcd.as_str())
            .collect();
        assert_eq!(supp, ["SCORE"]);
        assert!(ce.has_supp());
        assert!(!plans(&d)[0].has_supp(), "findings have none");
        assert_eq!(ce.sources[0].default_topic(), "CRISIS");
        assert!(plan(&d, "LB").is_none());
    }

    /// An exposure form and an adverse event form annotated as Kawasaki's are.
    const MORE: &str = r#"
[[forms]]
id = "shot"
name = "Shot"
repeat = "any"
dated_by = "at"
sdtm = { domain = "EX", values = { EXTRT = "DRUG", EXDOSFRQ = "QD" }, when = "given" }

  [[forms.items]]
  id = "at"
  label = "At"
  type = "datetime"
  required = true
  sdtm = ["EXSTDTC", "EXENDTC"]

  [[forms.items]]
  id = "given"
  label = "Given"
  type = "boolean"
  required = true

  [[forms.items]]
  id = "expected"
  label = "Expected dose"
  type = "decimal"
  decimals = 1
  sdtm = []

  [[forms.items]]
  id = "lot"
  label = "Lot"
  type = "text"
  max_length = 10

[[forms]]
id = "event"
name = "Event"
repeat = "any"
dated_by = "onset"
sdtm = { domain = "AE" }

  [[forms.items]]
  id = "onset"
  label = "Onset"
  type = "partial_date"
  required = true

  [[forms.items]]
  id = "serious"
  label = "Serious"
  type = "boolean"
  sdtm = "AESER"

  [[forms.items]]
  id = "criteria"
  label = "Criteria"
  type = "choices"
  codelist = "criteria"

  [[forms.items]]
  id = "outcome"
  label = "Outcome"
  type = "choice"
  codelist = "criteria"
  sdtm = "AEOUT"

[[codelists]]
id = "criteria"
codes = [
  { code = "death", label = "Death", sdtm = "FATAL", sdtm_flag = "AESDTH" },
  { code = "other", label = "Other" },
  { code = "hospital", label = "Hospital", sdtm_flag = "AESHOSP" },
]
"#;

    #[test]
    fn forms_give_variables_their_text_choose_their_records_and_flag_their_codes() {
        let text = STUDY.to_owned() + MORE;
        let d = super::super::parse("s.toml", &text).unwrap_or_else(|e| panic!("{e:?}"));
        let ex = plan(&d, "EX").unwrap_or_else(|| panic!("EX"));
        let shot = &ex.sources[0];
        assert_eq!(shot.default_topic(), "DRUG", "the form's EXTRT");
        assert_eq!(shot.constant("EXDOSFRQ"), Some("QD"));
        assert_eq!(shot.when(), Some("given"));
        assert_eq!(
            ex.mapped_vars(),
            ["EXDOSFRQ", "EXTRT", "EXSTDTC", "EXENDTC"],
            "the form's values in name order, then its items'"
        );
        assert_eq!(shot.item_for("EXENDTC").map(|i| i.id.as_str()), Some("at"));
        let supp: Vec<&str> = shot.supp.iter().map(|t| t.testcd.as_str()).collect();
        assert_eq!(
            supp,
            ["LOT"],
            "`given` chooses the records, `expected` is not in SDTM"
        );
        assert!(!ex.has_category() && !ex.has_visits());

        let ae = plan(&d, "AE").unwrap_or_else(|| panic!("AE"));
        let flags: Vec<(&str, &str)> = ae.sources[0]
            .flags
            .iter()
            .map(|f| (f.var.as_str(), f.code.as_str()))
            .collect();
        assert_eq!(flags, [("AESDTH", "death"), ("AESHOSP", "hospital")]);
        assert_eq!(
            ae.mapped_vars(),
            ["AESER", "AESDTH", "AESHOSP", "AEOUT"],
            "flags where their item is"
        );
        assert!(!ae.has_supp(), "the flagged item is no qualifier");
        // the echo form is entered per visit
        assert!(plan(&d, "CV").is_some_and(|p| p.has_visits() && p.has_category()));
    }

    #[test]
    fn the_forms_sdtm_values_when_and_variable_lists_are_checked_at_load() {
        let base = STUDY.to_owned() + MORE;
        let cases = [
            (
                "when = \"given\"",
                "when = \"lot\"",
                "sdtm.when `lot`: a boolean item of form `shot`",
            ),
            (
                "EXDOSFRQ = \"QD\"",
                "exdosfrq = \"QD\"",
                "sdtm.values `exdosfrq`: an SDTM variable name",
            ),
            (
                "EXDOSFRQ = \"QD\"",
                "EXDOSFRQ = \" QD\"",
                "sdtm.values `EXDOSFRQ`: text of 1 to 200",
            ),
            (
                "sdtm = [\"EXSTDTC\", \"EXENDTC\"]",
                "sdtm = [\"EXSTDTC\", \"exendtc\"]",
                "sdtm `exendtc`: an SDTM variable name",
            ),
            (
                "sdtm = [\"EXSTDTC\", \"EXENDTC\"]",
                "sdtm = [\"EXSTDTC\", \"EXSTDTC\"]",
                "sdtm `EXSTDTC`: named twice",
            ),
            (
                "sdtm_flag = \"AESHOSP\"",
                "sdtm_flag = \"aeshosp\"",
                "sdtm_flag `aeshosp` of code `hospital`: an SDTM variable name",
            ),
            (
                "  sdtm = []\n",
                "  sdtm = []\n  sdtm_code = \"EXPECTED\"\n",
                "sdtm_code: `expected` is not in SDTM",
            ),
        ];
        for (from, to, error) in cases {
            let text = base.replacen(from, to, 1);
            assert_ne!(text, base, "{from}");
            let errors = load_errors(&text);
            assert!(errors.iter().any(|e| e.contains(error)), "{to}: {errors:?}");
        }
        assert!(load_errors(&base).is_empty());
    }

    fn load_errors(text: &str) -> Vec<String> {
        match super::super::parse("s.toml", text) {
            Ok(_) => Vec::new(),
            Err(e) => e.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn a_chosen_test_code_is_the_same_test_in_every_form_and_never_derived_for_another() {
        // `aneurysm` of labs is chosen ANEURYSM: the echo form's `aneurysm`, which would
        // derive it, takes the next free code
        let text = STUDY.replacen(
            "  label = \"Aneurysm again\"\n",
            "  label = \"Aneurysm again\"\n  sdtm_code = \"ANEURYSM\"\n  sdtm_label = \"Coronary aneurysm\"\n",
            1,
        );
        let d = super::super::parse("s.toml", &text).unwrap_or_else(|e| panic!("{e:?}"));
        let cv = plan(&d, "CV").unwrap_or_else(|| panic!("CV"));
        let codes = |i: usize| -> Vec<(&str, &str)> {
            cv.sources[i]
                .tests
                .iter()
                .map(|t| (t.testcd.as_str(), t.label.as_str()))
                .collect()
        };
        assert_eq!(codes(0), [("ANEURYS2", "Aneurysm"), ("ANEURYS3", "Size")]);
        assert_eq!(codes(1), [("ANEURYSM", "Coronary aneurysm")]);
    }

    #[test]
    fn chosen_codes_and_submission_values_are_checked_at_load_naming_their_line() {
        let line_of = |text: &str, needle: &str| {
            text[..text.find(needle).unwrap_or(0)].matches('\n').count() + 1
        };
        let cases = [
            // (after this line, insert, the error's start)
            (
                "  label = \"Aneurysm\"\n",
                "  sdtm_code = \"aneurysm\"\n",
                "sdtm_code `aneurysm`: 1 to 8 upper case",
            ),
            (
                "  label = \"Method\"\n",
                "  sdtm_code = \"METH\"\n",
                "sdtm_code: `method` fills `CVMETHOD`",
            ),
            ("  label = \"Size\"\n", "  sdtm_code = \"SIZE\"\n", ""),
            (
                "  id = \"performed_on\"\n",
                "  sdtm_code = \"PERFORME\"\n",
                "sdtm_code: `performed_on` dates the form's rows",
            ),
            (
                "  label = \"Score\"\n",
                "  sdtm_label = \"A label longer than forty characters, which SDTM cuts\"\n",
                "sdtm_label: 1 to 40 characters",
            ),
        ];
        for (after, insert, error) in cases {
            let text = STUDY.replacen(after, &format!("{after}{insert}"), 1);
            assert_ne!(text, STUDY, "{after}");
            let errors = load_errors(&text);
            if error.is_empty() {
                assert!(errors.is_empty(), "{insert}: {errors:?}");
                continue;
            }
            let line = line_of(&text, insert.trim_start());
            assert!(
                errors
                    .iter()
                    .any(|e| e.starts_with(&format!("s.toml:{line}: {error}"))),
                "{insert}: {errors:?}"
            );
        }
        // `on` is in a form without SDTM: the domain is named first
        let text = STUDY.replacen(
            "  id = \"on\"\n",
            "  id = \"on\"\n  sdtm_label = \"Date\"\n",
            1,
        );
        assert!(load_errors(&text)
            .iter()
            .any(|e| e.contains("sdtm_label: the form maps to no SDTM domain")));
        // twice in one form
        let text = STUDY
            .replacen(
                "  label = \"Aneurysm\"\n",
                "  label = \"Aneurysm\"\n  sdtm_code = \"ANEU\"\n",
                1,
            )
            .replacen(
                "  label = \"Size\"\n",
                "  label = \"Size\"\n  sdtm_code = \"ANEU\"\n",
                1,
            );
        assert!(
            load_errors(&text)
                .iter()
                .any(|e| e.contains("sdtm_code `ANEU`: already the code of `aneurysm`")),
            "{:?}",
            load_errors(&text)
        );
        // a submission value must be printable ASCII
        let text = STUDY.to_owned()
            + "\n[[codelists]]\nid = \"sev\"\ncodes = [{ code = \"mild\", label = \"Mild\", sdtm = \"LÉGER\" }]\n";
        let line = text.matches('\n').count();
        assert!(
            load_errors(&text)
                .iter()
                .any(|e| e.starts_with(&format!("s.toml:{line}: sdtm `LÉGER` of code `mild`"))),
            "{:?}",
            load_errors(&text)
        );
    }

    #[test]
    fn test_codes_fit_eight_characters() {
        assert_eq!(base_testcd("crp_mg_l"), "CRP_MG_L");
        assert_eq!(base_testcd("lmca_z"), "LMCA_Z");
        assert_eq!(base_testcd("mevalonic_aciduria"), "MEVALONI");
        let taken = ["MEVALONI".to_owned()];
        assert_eq!(unique_testcd("mevalonic_aciduria", &taken), "MEVALON2");
    }

    #[test]
    fn an_annotation_that_is_no_variable_name_is_a_load_error_naming_its_line() {
        for bad in ["cv_method", "CVMETHODS", "1CV", ""] {
            let text = STUDY.replacen("\"CVMETHOD\"", &format!("\"{bad}\""), 1);
            let line = text[..text.find(&format!("sdtm = \"{bad}\"")).unwrap_or(0)]
                .matches('\n')
                .count()
                + 1;
            let errors: Vec<String> = match super::super::parse("s.toml", &text) {
                Ok(_) => Vec::new(),
                Err(e) => e.iter().map(ToString::to_string).collect(),
            };
            assert!(
                errors.iter().any(|e| e.starts_with(&format!(
                    "s.toml:{line}: sdtm `{bad}`: an SDTM variable name"
                ))),
                "{bad}: {errors:?}"
            );
        }
        assert!(is_variable_name("VISITDY"));
        assert_eq!(unit("°C"), "C");
        assert_eq!(unit("mg/L"), "mg/L");
    }
}
