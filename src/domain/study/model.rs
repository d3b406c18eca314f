//! The checked definition of a study: CDISC ODM 1.3.2's MetaDataVersion (study events as
//! visits, forms, items with data types, units, range checks, code lists, conditions and
//! methods as expressions) plus what ODM lacks: visit windows, consent gating, named rules.
//! Once a `Definition` exists every reference in it resolves and every expression type-checks.

use std::sync::Arc;

use bigdecimal::BigDecimal;
use serde::Serialize;

use super::expr::Ty;
use crate::domain::protocol::CriterionKind;

#[derive(Debug, Clone)]
pub struct Definition {
    pub study: StudyInfo,
    pub schedule: Schedule,
    pub consent: Consent,
    pub eligibility: Vec<Criterion>,
    pub constants: Vec<Constant>,
    pub treatments: Vec<Treatment>,
    pub visits: Vec<Visit>,
    pub forms: Vec<Form>,
    pub codelists: Vec<CodeList>,
    pub rules: Vec<Rule>,
    /// SHA-256 of the file's text: what publication (a later step) records and audits.
    pub sha256: String,
}

impl Definition {
    pub fn form(&self, id: &str) -> Option<&Form> {
        self.forms.iter().find(|f| f.id == id)
    }
    pub fn codelist(&self, id: &str) -> Option<&CodeList> {
        self.codelists.iter().find(|c| c.id == id)
    }
    pub fn visit(&self, id: &str) -> Option<&Visit> {
        self.visits.iter().find(|v| v.id == id)
    }
    /// A form with the generic shape everywhere: not one of today's three, which keep
    /// their legacy bodies and exports. What the generic exports and ODM read.
    pub fn record_form(&self, id: &str) -> Option<&Form> {
        self.record_forms().find(|f| f.id == id)
    }
    pub fn record_forms(&self) -> impl Iterator<Item = &Form> {
        self.forms
            .iter()
            .filter(|f| super::moved_form(&f.id).is_none())
    }
}

#[derive(Debug, Clone)]
pub struct StudyInfo {
    pub id: String,
    pub name: String,
    /// The version the file declares (an amendment number); records will keep the version
    /// they were entered under once definitions are published.
    pub version: String,
    pub registry: Vec<String>,
    pub description: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Anchor {
    /// Day 1 is the site-local date of the first dose.
    FirstDose,
    /// Day 1 is the site-local date of enrolment.
    Enrolment,
}

#[derive(Debug, Clone)]
pub struct Schedule {
    pub anchor: Anchor,
    /// For `FirstDose`: the form and date/datetime item whose first record is day 1.
    pub anchor_item: Option<ItemRef>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ItemRef {
    pub form: String,
    pub item: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Signer {
    Participant,
    Representative,
}

#[derive(Debug, Clone)]
pub struct Consent {
    pub versions: Vec<String>,
    pub signers: Vec<Signer>,
    /// the participant's assent is recorded besides a representative's consent
    pub assent: bool,
}

#[derive(Debug, Clone)]
pub struct Criterion {
    pub id: String,
    pub kind: CriterionKind,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ConstantValue {
    Number(BigDecimal),
    Integer(i64),
    Bool(bool),
    Text(String),
}

/// A named value expressions may read (a fever threshold), so a number lives in one place.
#[derive(Debug, Clone)]
pub struct Constant {
    pub id: String,
    pub value: ConstantValue,
}

#[derive(Debug, Clone)]
pub struct Treatment {
    pub id: String,
    pub name: String,
    pub route: Option<String>,
    pub dose: Dose,
    /// 1: daily; 56: every 8 weeks
    pub interval_days: u32,
    pub max_days: Option<u32>,
    /// day of illness on which treatment may start
    pub start_window_days: Option<(u32, u32)>,
    /// a dose further than this from the rule's is a protocol deviation
    pub tolerance_percent: BigDecimal,
    /// treatments a subject may switch from to this one
    pub switch_from: Vec<String>,
}

#[derive(Debug, Clone)]
pub enum Dose {
    Fixed {
        mg: BigDecimal,
    },
    PerKg {
        mg_per_kg: BigDecimal,
        escalation: Option<Escalation>,
    },
}

/// From `from_day`, when the fever rule `on_rule` finds fever on that day before the dose,
/// the dose becomes `mg_per_kg`.
#[derive(Debug, Clone)]
pub struct Escalation {
    pub from_day: u32,
    pub mg_per_kg: BigDecimal,
    pub on_rule: String,
}

#[derive(Debug, Clone)]
pub struct Visit {
    pub id: String,
    pub name: String,
    /// study day relative to the anchor; none for an unscheduled visit
    pub day: Option<i32>,
    pub window_before: u32,
    pub window_after: u32,
    pub unscheduled: bool,
    pub forms: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Repeat {
    /// once per visit that lists the form
    PerVisit,
    /// once per study day
    PerDay,
    /// any number of times: logs
    Any,
}

#[derive(Debug, Clone)]
pub struct Form {
    pub id: String,
    pub name: String,
    pub repeat: Repeat,
    /// the item that dates a record: consent and visit windows are checked on it
    pub dated_by: String,
    /// records are accepted after the subject's consent withdrawal: a safety report (an
    /// adverse event) must still reach the sponsor; every other form is refused then
    pub after_withdrawal: bool,
    pub sdtm: Option<Sdtm>,
    pub items: Vec<Item>,
    pub checks: Vec<FormCheck>,
}

impl Form {
    pub fn item(&self, id: &str) -> Option<&Item> {
        self.items.iter().find(|i| i.id == id)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Sdtm {
    pub domain: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// variables every row of the form carries as they are (`EXDOSFRM`, `INJECTION`), in
    /// name order
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<(String, String)>,
    /// a boolean item: the records where it is not true are not in SDTM (an injection not
    /// given)
    #[serde(skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemType {
    Text {
        max_length: u32,
    },
    Integer,
    /// digits after the point, kept exactly
    Decimal {
        decimals: u32,
    },
    Boolean,
    Date,
    /// `2026`, `2026-11` or `2026-11-05`
    PartialDate,
    DateTime,
    Time,
    Choice {
        codelist: String,
    },
    Choices {
        codelist: String,
    },
}

impl ItemType {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Text { .. } => "text",
            Self::Integer => "integer",
            Self::Decimal { .. } => "decimal",
            Self::Boolean => "boolean",
            Self::Date => "date",
            Self::PartialDate => "partial_date",
            Self::DateTime => "datetime",
            Self::Time => "time",
            Self::Choice { .. } => "choice",
            Self::Choices { .. } => "choices",
        }
    }

    /// The type an expression sees. Dates and times are timestamps; partial dates and
    /// times of day stay text (ISO 8601 text orders as the dates do).
    pub fn expr_type(&self) -> Ty {
        match self {
            Self::Text { .. } | Self::Choice { .. } | Self::PartialDate | Self::Time => Ty::String,
            Self::Integer => Ty::Int,
            Self::Decimal { .. } => Ty::Double,
            Self::Boolean => Ty::Bool,
            Self::Date | Self::DateTime => Ty::Timestamp,
            Self::Choices { .. } => Ty::List(Box::new(Ty::String)),
        }
    }

    pub fn codelist(&self) -> Option<&str> {
        match self {
            Self::Choice { codelist } | Self::Choices { codelist } => Some(codelist),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// refused with 422 naming the item
    Hard,
    /// stored, flagged, and a query opened
    Soft,
}

#[derive(Debug, Clone)]
pub struct Range {
    pub min: Option<BigDecimal>,
    pub max: Option<BigDecimal>,
    pub check: Severity,
    pub message: Option<String>,
}

/// An expression in CEL, parsed and type-checked at load.
#[derive(Clone)]
pub struct Expr {
    pub source: String,
    /// the items and constants it reads
    pub reads: Vec<String>,
    /// compiled at load: a record's checks run it without parsing it again
    pub program: Arc<cel::Program>,
}

impl std::fmt::Debug for Expr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Expr")
            .field("source", &self.source)
            .field("reads", &self.reads)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone)]
pub struct Item {
    pub id: String,
    pub label: String,
    pub kind: ItemType,
    pub required: bool,
    pub unit: Option<String>,
    pub range: Option<Range>,
    pub soft_range: Option<Range>,
    /// shown (and so allowed a value) only when true
    pub show_if: Option<Expr>,
    /// computed on the server on every write
    pub derive: Option<Expr>,
    /// the named rule that computes it, when a rule does
    pub derived_by: Option<String>,
    /// a date or partial date item of the form this one must not precede (an event's end,
    /// its onset)
    pub not_before: Option<String>,
    /// the SDTM variables it fills (`VSORRES`, `EXDOSE`; an injection's time both
    /// `EXSTDTC` and `EXENDTC`); `Some(vec![])`: the item is not in SDTM
    pub sdtm: Option<Vec<String>>,
    /// its SDTM test code (`--TESTCD`) or, in an events or interventions domain, its
    /// supplemental qualifier's QNAM, when the definition chooses one (`CRP`)
    pub sdtm_code: Option<String>,
    /// `--TEST` or `QLABEL` when the definition chooses one (at most 40 characters)
    pub sdtm_label: Option<String>,
    pub help: Option<String>,
}

impl Item {
    pub fn derived(&self) -> bool {
        self.derive.is_some() || self.derived_by.is_some()
    }
}

/// An edit check across items: `expr` must hold.
#[derive(Debug, Clone)]
pub struct FormCheck {
    pub id: String,
    pub expr: Expr,
    pub message: String,
    /// the items an error names (`values.<item>`)
    pub items: Vec<String>,
    pub check: Severity,
}

#[derive(Debug, Clone, Serialize)]
pub struct Code {
    pub code: String,
    pub label: String,
    /// the CDISC submission value SDTM datasets carry instead of the code
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sdtm: Option<String>,
    /// the SDTM Y/N variable that says whether a `choices` item holds this code (`AESDTH`)
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sdtm_flag: Option<String>,
}

impl CodeList {
    /// What SDTM datasets carry for `code`: its submission value, else the code itself.
    pub fn submission<'a>(&'a self, code: &'a str) -> &'a str {
        self.codes
            .iter()
            .find(|c| c.code == code)
            .and_then(|c| c.sdtm.as_deref())
            .unwrap_or(code)
    }
}

#[derive(Debug, Clone)]
pub struct CodeList {
    pub id: String,
    pub name: Option<String>,
    pub codes: Vec<Code>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleKind {
    /// the dose a treatment's rule expects, and a deviation when the dose differs
    Dose,
    /// the study day of a record from the anchor, checked against the one entered
    StudyDay,
    /// fever from a temperature and a threshold
    Fever,
    /// fever-free from N hours after the first dose to a study day's dose, and fever days
    /// (`domain::endpoints`)
    FeverEndpoints,
    /// a serious adverse event alerts the sponsor's safety desk
    SaeAlert,
}

/// Logic that stays in Rust (src/domain, unit-tested), bound by the definition to the items
/// it reads and writes.
#[derive(Debug, Clone)]
pub struct Rule {
    pub id: String,
    pub kind: RuleKind,
    pub form: Option<String>,
    pub treatment: Option<String>,
    pub fever_rule: Option<String>,
    pub threshold: Option<BigDecimal>,
    pub hours: Option<u32>,
    /// `fever_endpoints`: the study day whose dose (else its end) closes the window
    pub until_day: Option<u32>,
    /// role -> item id of `form`
    pub items: Vec<(String, String)>,
}

impl Rule {
    pub fn item(&self, role: &str) -> Option<&str> {
        self.items
            .iter()
            .find(|(r, _)| r == role)
            .map(|(_, i)| i.as_str())
    }
}
