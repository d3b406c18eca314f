//! The definition file as written: every value that an error may point at keeps its place in
//! the file (`Spanned`), and nothing is checked beyond its TOML shape. `build` turns it into
//! the checked model. Plain structs only: serde's tagged and untagged enums buffer their
//! content and lose the spans.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

pub type S<T> = Spanned<T>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    pub study: S<Study>,
    pub schedule: Option<S<Schedule>>,
    pub consent: Option<S<Consent>>,
    #[serde(default)]
    pub eligibility: Vec<Criterion>,
    #[serde(default)]
    pub constants: BTreeMap<String, S<toml::Value>>,
    #[serde(default)]
    pub treatments: Vec<Treatment>,
    #[serde(default)]
    pub visits: Vec<Visit>,
    #[serde(default)]
    pub forms: Vec<Form>,
    #[serde(default)]
    pub codelists: Vec<CodeList>,
    #[serde(default)]
    pub rules: Vec<Rule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Study {
    pub id: S<String>,
    pub name: S<String>,
    pub version: Option<S<String>>,
    #[serde(default)]
    pub registry: Vec<String>,
    pub description: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    pub anchor: S<String>,
    pub anchor_item: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Consent {
    pub versions: S<Vec<String>>,
    pub signers: Option<S<Vec<S<String>>>>,
    #[serde(default)]
    pub assent: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Criterion {
    pub id: S<String>,
    pub kind: S<String>,
    pub text: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Treatment {
    pub id: S<String>,
    pub name: String,
    pub route: Option<String>,
    pub dose: S<Dose>,
    pub interval_days: Option<S<i64>>,
    pub max_days: Option<S<i64>>,
    pub start_window_days: Option<S<Vec<i64>>>,
    pub tolerance_percent: Option<S<toml::Value>>,
    #[serde(default)]
    pub switch_from: Vec<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dose {
    pub kind: S<String>,
    pub mg: Option<S<toml::Value>>,
    pub mg_per_kg: Option<S<toml::Value>>,
    pub escalation: Option<S<Escalation>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Escalation {
    pub from_day: S<i64>,
    pub mg_per_kg: S<toml::Value>,
    pub on_rule: S<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Visit {
    pub id: S<String>,
    pub name: String,
    pub day: Option<S<i64>>,
    pub window: Option<S<Vec<i64>>>,
    #[serde(default)]
    pub unscheduled: bool,
    pub forms: S<Vec<S<String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Form {
    pub id: S<String>,
    pub name: String,
    pub repeat: S<String>,
    pub dated_by: Option<S<String>>,
    /// records are accepted after the subject's consent withdrawal (safety reports)
    #[serde(default)]
    pub after_withdrawal: bool,
    pub sdtm: Option<S<Sdtm>>,
    #[serde(default)]
    pub items: Vec<Item>,
    #[serde(default)]
    pub checks: Vec<Check>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sdtm {
    pub domain: S<String>,
    pub category: Option<String>,
    /// variables every row of the form carries as they are (`EXDOSFRM = "INJECTION"`)
    #[serde(default)]
    pub values: Option<S<toml::Table>>,
    /// a boolean item: the form's records where it is not true are not in SDTM
    pub when: Option<S<String>>,
}

/// An item's `sdtm`: one variable, or a list of them (none: not in SDTM).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Vars {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Item {
    pub id: S<String>,
    pub label: String,
    #[serde(rename = "type")]
    pub kind: S<String>,
    #[serde(default)]
    pub required: bool,
    pub unit: Option<S<String>>,
    pub max_length: Option<S<i64>>,
    pub decimals: Option<S<i64>>,
    pub codelist: Option<S<String>>,
    pub range: Option<S<Range>>,
    pub soft_range: Option<S<Range>>,
    pub show_if: Option<S<String>>,
    pub derive: Option<S<String>>,
    pub not_before: Option<S<String>>,
    pub sdtm: Option<S<Vars>>,
    pub sdtm_code: Option<S<String>>,
    pub sdtm_label: Option<S<String>>,
    pub help: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Range {
    pub min: Option<S<toml::Value>>,
    pub max: Option<S<toml::Value>>,
    pub check: Option<S<String>>,
    pub message: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Check {
    pub id: S<String>,
    pub expr: S<String>,
    pub message: String,
    pub items: S<Vec<S<String>>>,
    pub check: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodeList {
    pub id: S<String>,
    pub name: Option<String>,
    pub codes: S<Vec<Code>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Code {
    pub code: S<String>,
    pub label: String,
    /// the CDISC submission value SDTM datasets carry for this code (`SUBCUTANEOUS`)
    pub sdtm: Option<S<String>>,
    /// the SDTM Y/N variable that says whether this code was chosen (`AESDTH`)
    pub sdtm_flag: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub id: S<String>,
    pub kind: S<String>,
    pub form: Option<S<String>>,
    pub treatment: Option<S<String>>,
    pub fever_rule: Option<S<String>>,
    pub threshold: Option<S<toml::Value>>,
    pub hours: Option<S<i64>>,
    pub until_day: Option<S<i64>>,
    #[serde(default)]
    pub items: BTreeMap<String, S<String>>,
}
