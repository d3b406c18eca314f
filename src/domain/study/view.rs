//! The definition as clients read it (GET /study/definition): the shape forms.md gives, from
//! which a client builds its forms and a generic test its values. Optional keys appear only
//! when they apply.

use bigdecimal::BigDecimal;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::model::*;

/// A decimal as a JSON number, written as the definition wrote it (37.5, not 37.500000001).
fn number(d: &BigDecimal) -> Value {
    let text = d.normalized().to_string();
    if let Ok(i) = text.parse::<i64>() {
        return Value::from(i);
    }
    serde_json::from_str::<serde_json::Number>(&text)
        .map(Value::Number)
        .unwrap_or(Value::String(text))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DefinitionView {
    pub study: StudyView,
    pub schedule: ScheduleView,
    pub consent: ConsentView,
    pub eligibility: Vec<CriterionView>,
    pub treatments: Vec<TreatmentView>,
    pub visits: Vec<VisitView>,
    pub forms: Vec<FormView>,
    pub rules: Vec<RuleView>,
    /// constant id -> value, as expressions read them
    #[schema(value_type = Object)]
    pub constants: serde_json::Map<String, Value>,
    /// SHA-256 of the definition file
    pub sha256: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StudyView {
    pub id: String,
    pub name: String,
    pub version: String,
    pub registry: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ScheduleView {
    /// first_dose or enrolment: day 1 is the site-local date of it
    pub anchor: String,
    /// `form.item` whose first record is day 1 (anchor first_dose)
    #[serde(skip_serializing_if = "Option::is_none")]
    pub anchor_item: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ConsentView {
    pub versions: Vec<String>,
    /// participant, representative
    pub signers: Vec<String>,
    pub assent: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CriterionView {
    pub id: String,
    /// inclusion or exclusion
    pub kind: String,
    pub text: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TreatmentView {
    pub id: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// fixed or per_kg
    pub dose: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<f64>)]
    pub mg: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<f64>)]
    pub mg_per_kg: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub escalation: Option<EscalationView>,
    pub interval_days: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_days: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_window_days: Option<[u32; 2]>,
    #[schema(value_type = f64)]
    pub tolerance_percent: Value,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub switch_from: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EscalationView {
    pub from_day: u32,
    #[schema(value_type = f64)]
    pub mg_per_kg: Value,
    pub on_rule: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VisitView {
    pub id: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub day: Option<i32>,
    pub window_before: u32,
    pub window_after: u32,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub unscheduled: bool,
    pub forms: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FormView {
    pub id: String,
    pub name: String,
    /// per_visit, per_day or any
    pub repeat: String,
    /// the item that dates a record
    pub dated_by: String,
    /// records accepted after the subject's consent withdrawal (safety reports)
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub after_withdrawal: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sdtm: Option<SdtmView>,
    pub items: Vec<ItemView>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<CheckView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SdtmView {
    pub domain: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// variables every row of the form carries as they are
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub values: std::collections::BTreeMap<String, String>,
    /// the boolean item without which a record is not in SDTM
    #[serde(skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
}

/// An item's SDTM variables as the definition writes them: one name, or a list (`[]`: the
/// item is in no dataset).
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum ItemSdtmView {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ChoiceView {
    pub code: String,
    pub label: String,
    /// the CDISC submission value SDTM datasets carry for this code
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sdtm: Option<String>,
    /// the SDTM Y/N variable that says whether this code was chosen
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sdtm_flag: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ItemView {
    pub id: String,
    pub label: String,
    /// text integer decimal boolean date partial_date datetime time choice choices
    #[serde(rename = "type")]
    pub kind: String,
    pub required: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_length: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decimals: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<f64>)]
    pub min: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<f64>)]
    pub max: Option<Value>,
    /// hard (422) or soft (stored, flagged, a query opened), for min and max
    #[serde(skip_serializing_if = "Option::is_none")]
    pub check: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub range_message: Option<String>,
    /// a soft range inside the hard one
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<f64>)]
    pub soft_min: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<f64>)]
    pub soft_max: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub soft_message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub codelist: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub choices: Option<Vec<ChoiceView>>,
    /// CEL: the item is shown (and may hold a value) only when this holds
    #[serde(skip_serializing_if = "Option::is_none")]
    pub show_if: Option<String>,
    /// computed on the server, never sent by a client
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub derived: bool,
    /// CEL: how it is computed
    #[serde(skip_serializing_if = "Option::is_none")]
    pub derive: Option<String>,
    /// the named rule that computes it
    #[serde(skip_serializing_if = "Option::is_none")]
    pub derived_by: Option<String>,
    /// the date item this one must not precede
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_before: Option<String>,
    /// the SDTM variable the item fills, or a list of them as the definition writes it
    /// (empty: not in SDTM)
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sdtm: Option<ItemSdtmView>,
    /// the SDTM test code or QNAM the definition chose
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sdtm_code: Option<String>,
    /// the SDTM --TEST or QLABEL the definition chose
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sdtm_label: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub help: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CheckView {
    pub id: String,
    /// CEL: must hold
    pub expr: String,
    pub message: String,
    pub items: Vec<String>,
    pub check: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RuleView {
    pub id: String,
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub form: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub treatment: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fever_rule: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<f64>)]
    pub threshold: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hours: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until_day: Option<u32>,
    /// role -> item id
    #[schema(value_type = Object)]
    pub items: serde_json::Map<String, Value>,
}

fn name<T: Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

impl DefinitionView {
    pub fn of(d: &Definition) -> Self {
        Self {
            study: StudyView {
                id: d.study.id.clone(),
                name: d.study.name.clone(),
                version: d.study.version.clone(),
                registry: d.study.registry.clone(),
                description: d.study.description.clone(),
            },
            schedule: ScheduleView {
                anchor: name(&d.schedule.anchor),
                anchor_item: d
                    .schedule
                    .anchor_item
                    .as_ref()
                    .map(|a| format!("{}.{}", a.form, a.item)),
            },
            consent: ConsentView {
                versions: d.consent.versions.clone(),
                signers: d.consent.signers.iter().map(name).collect(),
                assent: d.consent.assent,
            },
            eligibility: d
                .eligibility
                .iter()
                .map(|c| CriterionView {
                    id: c.id.clone(),
                    kind: name(&c.kind),
                    text: c.text.clone(),
                })
                .collect(),
            treatments: d.treatments.iter().map(treatment).collect(),
            visits: d
                .visits
                .iter()
                .map(|v| VisitView {
                    id: v.id.clone(),
                    name: v.name.clone(),
                    day: v.day,
                    window_before: v.window_before,
                    window_after: v.window_after,
                    unscheduled: v.unscheduled,
                    forms: v.forms.clone(),
                })
                .collect(),
            forms: d.forms.iter().map(|f| form(d, f)).collect(),
            rules: d.rules.iter().map(rule).collect(),
            constants: d
                .constants
                .iter()
                .map(|c| {
                    let v = match &c.value {
                        ConstantValue::Number(n) => number(n),
                        ConstantValue::Integer(i) => Value::from(*i),
                        ConstantValue::Bool(b) => Value::from(*b),
                        ConstantValue::Text(t) => Value::from(t.clone()),
                    };
                    (c.id.clone(), v)
                })
                .collect(),
            sha256: d.sha256.clone(),
        }
    }
}

fn treatment(t: &Treatment) -> TreatmentView {
    let (dose, mg, mg_per_kg, escalation) = match &t.dose {
        Dose::Fixed { mg } => ("fixed", Some(number(mg)), None, None),
        Dose::PerKg {
            mg_per_kg,
            escalation,
        } => (
            "per_kg",
            None,
            Some(number(mg_per_kg)),
            escalation.as_ref().map(|e| EscalationView {
                from_day: e.from_day,
                mg_per_kg: number(&e.mg_per_kg),
                on_rule: e.on_rule.clone(),
            }),
        ),
    };
    TreatmentView {
        id: t.id.clone(),
        name: t.name.clone(),
        route: t.route.clone(),
        dose: dose.into(),
        mg,
        mg_per_kg,
        escalation,
        interval_days: t.interval_days,
        max_days: t.max_days,
        start_window_days: t.start_window_days.map(|(a, b)| [a, b]),
        tolerance_percent: number(&t.tolerance_percent),
        switch_from: t.switch_from.clone(),
    }
}

fn form(d: &Definition, f: &Form) -> FormView {
    FormView {
        id: f.id.clone(),
        name: f.name.clone(),
        repeat: name(&f.repeat),
        dated_by: f.dated_by.clone(),
        after_withdrawal: f.after_withdrawal,
        sdtm: f.sdtm.as_ref().map(|s| SdtmView {
            domain: s.domain.clone(),
            category: s.category.clone(),
            values: s.values.iter().cloned().collect(),
            when: s.when.clone(),
        }),
        items: f.items.iter().map(|i| item(d, i)).collect(),
        checks: f
            .checks
            .iter()
            .map(|c| CheckView {
                id: c.id.clone(),
                expr: c.expr.source.clone(),
                message: c.message.clone(),
                items: c.items.clone(),
                check: name(&c.check),
            })
            .collect(),
    }
}

fn item(d: &Definition, i: &Item) -> ItemView {
    let (max_length, decimals) = match &i.kind {
        ItemType::Text { max_length } => (Some(*max_length), None),
        ItemType::Decimal { decimals } => (None, Some(*decimals)),
        _ => (None, None),
    };
    let codelist = i.kind.codelist().map(str::to_owned);
    let choices = codelist.as_deref().and_then(|c| d.codelist(c)).map(|c| {
        c.codes
            .iter()
            .map(|code| ChoiceView {
                code: code.code.clone(),
                label: code.label.clone(),
                sdtm: code.sdtm.clone(),
                sdtm_flag: code.sdtm_flag.clone(),
            })
            .collect()
    });
    let r = i.range.as_ref();
    let s = i.soft_range.as_ref();
    // a soft range alone is the item's only range: it takes min and max
    let (r, s) = match (r, s) {
        (None, Some(s)) => (Some(s), None),
        other => other,
    };
    ItemView {
        id: i.id.clone(),
        label: i.label.clone(),
        kind: i.kind.name().into(),
        required: i.required,
        unit: i.unit.clone(),
        max_length,
        decimals,
        min: r.and_then(|r| r.min.as_ref()).map(number),
        max: r.and_then(|r| r.max.as_ref()).map(number),
        check: r.map(|r| name(&r.check)),
        range_message: r.and_then(|r| r.message.clone()),
        soft_min: s.and_then(|s| s.min.as_ref()).map(number),
        soft_max: s.and_then(|s| s.max.as_ref()).map(number),
        soft_message: s.and_then(|s| s.message.clone()),
        codelist,
        choices,
        show_if: i.show_if.as_ref().map(|e| e.source.clone()),
        derived: i.derived(),
        derive: i.derive.as_ref().map(|e| e.source.clone()),
        derived_by: i.derived_by.clone(),
        not_before: i.not_before.clone(),
        sdtm: i.sdtm.as_ref().map(|v| match v.as_slice() {
            [one] => ItemSdtmView::One(one.clone()),
            many => ItemSdtmView::Many(many.to_vec()),
        }),
        sdtm_code: i.sdtm_code.clone(),
        sdtm_label: i.sdtm_label.clone(),
        help: i.help.clone(),
    }
}

fn rule(r: &Rule) -> RuleView {
    RuleView {
        id: r.id.clone(),
        kind: name(&r.kind),
        form: r.form.clone(),
        treatment: r.treatment.clone(),
        fever_rule: r.fever_rule.clone(),
        threshold: r.threshold.as_ref().map(number),
        hours: r.hours,
        until_day: r.until_day,
        items: r
            .items
            .iter()
            .map(|(role, item)| (role.clone(), Value::from(item.clone())))
            .collect(),
    }
}
