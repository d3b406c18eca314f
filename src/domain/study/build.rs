//! From the file as written to the checked model. Every error is collected (not only the
//! first) and names the file and the line of the value at fault.

use std::collections::{HashMap, HashSet};
use std::ops::Range as Span;
use std::str::FromStr;
use std::sync::Arc;

use bigdecimal::BigDecimal;
use sha2::{Digest, Sha256};

use super::expr::{self, Ty};
use super::model::*;
use super::raw::{self, S};
use crate::domain::protocol::CriterionKind;

/// One thing wrong with a definition, at a line of its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefinitionError {
    pub file: String,
    /// 1-based; none when the file as a whole is at fault
    pub line: Option<usize>,
    pub message: String,
}

impl std::fmt::Display for DefinitionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}: {}", self.file, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

/// CEL's reserved words cannot name an item: an expression could not read it.
const RESERVED: &[&str] = &[
    "true",
    "false",
    "null",
    "in",
    "as",
    "break",
    "const",
    "continue",
    "else",
    "for",
    "function",
    "if",
    "import",
    "let",
    "loop",
    "package",
    "namespace",
    "return",
    "var",
    "void",
    "while",
];

/// Parses and checks a definition; `file` names it in the errors.
pub fn parse(file: &str, text: &str) -> Result<Definition, Vec<DefinitionError>> {
    let mut b = Builder {
        file: file.to_owned(),
        text,
        errors: Vec::new(),
    };
    let raw: raw::File = match toml::from_str(text) {
        Ok(r) => r,
        Err(e) => {
            let line = e.span().map(|s| b.line(s.start));
            let one_line = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
            let mut message = one_line(e.message());
            if message.is_empty() {
                // toml has no words for some characters (a vertical tab in a comment)
                let column = e
                    .span()
                    .and_then(|s| {
                        let before = text.get(..s.start)?;
                        Some(s.start - before.rfind('\n').map_or(0, |n| n + 1) + 1)
                    })
                    .unwrap_or(1);
                message = format!("not valid TOML at column {column} (a control character?)");
            }
            return Err(vec![DefinitionError {
                file: file.to_owned(),
                line,
                message,
            }]);
        }
    };
    let def = b.definition(raw);
    if b.errors.is_empty() {
        Ok(def)
    } else {
        b.errors.sort_by_key(|e| e.line);
        Err(b.errors)
    }
}

/// What an expression of a form sees: its items and the constants, and the codes of its
/// choice items.
struct ExprScope {
    names: HashMap<String, Ty>,
    codes: HashMap<String, Vec<String>>,
}

struct Builder<'a> {
    file: String,
    text: &'a str,
    errors: Vec<DefinitionError>,
}

fn ident_ok(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && s.len() <= 32
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !RESERVED.contains(&s)
}

fn code_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// Type names in messages, as a data manager writes them.
fn item_type_names() -> &'static str {
    "text, integer, decimal, boolean, date, partial_date, datetime, time, choice, choices"
}

/// What a named rule reads and writes: (role, item types allowed, required, written).
type RoleSpec = (&'static str, &'static [&'static str], bool, bool);

fn roles(kind: RuleKind) -> &'static [RoleSpec] {
    match kind {
        RuleKind::Dose => &[
            ("day", &["integer"], true, false),
            ("at", &["datetime"], true, false),
            ("dose", &["decimal"], true, false),
            ("weight", &["decimal"], false, false),
            ("given", &["boolean"], false, false),
            ("expected", &["decimal"], false, true),
            ("deviation", &["boolean"], false, true),
            ("deviation_reason", &["text"], false, true),
        ],
        RuleKind::StudyDay => &[
            ("day", &["integer"], true, false),
            ("at", &["date", "datetime"], true, false),
        ],
        RuleKind::Fever => &[
            ("temperature", &["decimal"], true, false),
            ("at", &["datetime"], true, false),
            ("flag", &["boolean"], true, true),
        ],
        RuleKind::FeverEndpoints => &[],
        // the event fields of the alert (crate::domain::sae::EVENT_FIELDS)
        RuleKind::SaeAlert => &[
            ("serious", &["boolean"], true, false),
            ("term", &["text"], false, false),
            ("meddra_code", &["text"], false, false),
            ("grade", &["integer"], false, false),
            ("seriousness_criteria", &["choices"], false, false),
            ("relationship", &["choice"], false, false),
            ("outcome", &["choice"], false, false),
            ("onset_date", &["date", "partial_date"], false, false),
            ("awareness_date", &["date"], false, false),
        ],
    }
}

impl Builder<'_> {
    /// Expressions run before the named rules (which need the checked values): one that
    /// reads what a rule computes would always see it empty.
    fn no_expression_reads_a_rule(&mut self, raw: &[raw::Form], forms: &[Form]) {
        for rf in raw {
            let Some(f) = forms.iter().find(|f| f.id == *rf.id.get_ref()) else {
                continue;
            };
            let mut found = Vec::new();
            let ruled = |e: &Expr| {
                e.reads.iter().find_map(|r| {
                    let rule = f.item(r)?.derived_by.as_deref()?;
                    Some(format!(
                        "reads `{r}`, which rule `{rule}` computes after the expressions run"
                    ))
                })
            };
            for ri in &rf.items {
                let Some(i) = f.item(ri.id.get_ref()) else {
                    continue;
                };
                for (e, raw_e, what) in [
                    (&i.show_if, &ri.show_if, "show_if"),
                    (&i.derive, &ri.derive, "derive"),
                ] {
                    if let (Some(m), Some(span)) = (e.as_ref().and_then(ruled), raw_e) {
                        found.push((span.span(), format!("{what} of `{}`: {m}", i.id)));
                    }
                }
            }
            for rc in &rf.checks {
                let Some(c) = f.checks.iter().find(|c| c.id == *rc.id.get_ref()) else {
                    continue;
                };
                if let Some(m) = ruled(&c.expr) {
                    found.push((rc.expr.span(), format!("check `{}`: {m}", c.id)));
                }
            }
            for (span, m) in found {
                self.err(span, m);
            }
        }
    }

    fn line(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|&&c| c == b'\n')
            .count()
            + 1
    }

    fn err(&mut self, span: Span<usize>, message: impl Into<String>) {
        let line = Some(self.line(span.start));
        // one error, one line: an expression written over several lines is quoted on one
        let message: String = message.into();
        self.errors.push(DefinitionError {
            file: self.file.clone(),
            line,
            message: message.split_whitespace().collect::<Vec<_>>().join(" "),
        });
    }

    /// The id if it is well formed and not seen before in `seen`.
    fn id(&mut self, id: &S<String>, what: &str, seen: &mut HashSet<String>) -> String {
        let s = id.get_ref().clone();
        if !ident_ok(&s) {
            self.err(
                id.span(),
                format!("{what} id `{s}`: lower case letters, digits and _, starting with a letter, at most 32, not a CEL keyword"),
            );
        } else if !seen.insert(s.clone()) {
            self.err(id.span(), format!("duplicate {what} id `{s}`"));
        }
        s
    }

    fn decimal(&mut self, v: &S<toml::Value>, what: &str) -> Option<BigDecimal> {
        let parsed = match v.get_ref() {
            toml::Value::Integer(i) => Some(BigDecimal::from(*i)),
            // f64's Display is the shortest text that reads back as the same number: 37.5
            // stays 37.5
            toml::Value::Float(f) if f.is_finite() => BigDecimal::from_str(&f.to_string()).ok(),
            toml::Value::String(s) => BigDecimal::from_str(s.trim()).ok(),
            _ => None,
        };
        if parsed.is_none() {
            self.err(v.span(), format!("{what}: must be a number"));
        }
        parsed
    }

    fn positive(&mut self, v: &S<toml::Value>, what: &str) -> Option<BigDecimal> {
        let d = self.decimal(v, what)?;
        if d <= 0 {
            self.err(v.span(), format!("{what}: must be positive"));
            return None;
        }
        Some(d)
    }

    fn severity(&mut self, s: Option<&S<String>>) -> Severity {
        match s.map(|s| (s.get_ref().as_str(), s.span())) {
            None | Some(("hard", _)) => Severity::Hard,
            Some(("soft", _)) => Severity::Soft,
            Some((other, span)) => {
                self.err(span, format!("check `{other}`: must be hard or soft"));
                Severity::Hard
            }
        }
    }

    fn expression(
        &mut self,
        src: &S<String>,
        scope: &ExprScope,
        want: &Ty,
        result_codes: Option<&[String]>,
        what: &str,
    ) -> Option<Expr> {
        match expr::check_coded(src.get_ref(), &scope.names, &scope.codes, result_codes) {
            Ok(c) if c.ty.fits(want) || (*want == Ty::Double && c.ty == Ty::Int) => Some(Expr {
                source: src.get_ref().clone(),
                reads: c.reads,
                program: Arc::new(c.program),
            }),
            Ok(c) => {
                self.err(
                    src.span(),
                    format!("{what} `{}` gives a {}, not a {want}", src.get_ref(), c.ty),
                );
                None
            }
            Err(e) => {
                self.err(src.span(), format!("{what}: {e}"));
                None
            }
        }
    }

    fn definition(&mut self, raw: raw::File) -> Definition {
        let sha256 = hex::encode(Sha256::digest(self.text.as_bytes()));
        let study = self.study(&raw.study);
        let codelists = self.codelists(&raw.codelists);
        let constants = self.constants(&raw.constants);
        let mut forms = self.forms(&raw.forms, &codelists, &constants);
        let visits = self.visits(&raw.visits, &forms, &raw.forms);
        let schedule = self.schedule(raw.schedule.as_ref(), &forms);
        let consent = self.consent(raw.consent.as_ref());
        let eligibility = self.eligibility(&raw.eligibility);
        let treatments = self.treatments(&raw.treatments);
        let rules = self.rules(&raw.rules, &mut forms, &treatments);
        self.no_expression_reads_a_rule(&raw.forms, &forms);
        // escalation names a fever rule, known only now
        for (t, rt) in treatments.iter().zip(&raw.treatments) {
            if let (
                Dose::PerKg {
                    escalation: Some(e),
                    ..
                },
                Some(re),
            ) = (&t.dose, rt.dose.get_ref().escalation.as_ref())
            {
                let ok = rules
                    .iter()
                    .any(|r| r.id == e.on_rule && r.kind == RuleKind::Fever);
                if !ok {
                    self.err(
                        re.get_ref().on_rule.span(),
                        format!(
                            "escalation.on_rule `{}`: no fever rule has this id",
                            e.on_rule
                        ),
                    );
                }
            }
        }
        Definition {
            study,
            schedule,
            consent,
            eligibility,
            constants,
            treatments,
            visits,
            forms,
            codelists,
            rules,
            sha256,
        }
    }

    fn study(&mut self, s: &S<raw::Study>) -> StudyInfo {
        let r = s.get_ref();
        let id = r.id.get_ref().trim().to_owned();
        if id.is_empty()
            || !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            self.err(
                r.id.span(),
                "study.id: letters, digits, - and _ (it becomes the ODM study OID)",
            );
        }
        if r.name.get_ref().trim().is_empty() {
            self.err(r.name.span(), "study.name: must not be empty");
        }
        let version = match &r.version {
            Some(v) if v.get_ref().trim().is_empty() => {
                self.err(v.span(), "study.version: must not be empty");
                String::new()
            }
            Some(v) => v.get_ref().trim().to_owned(),
            None => "1".into(),
        };
        StudyInfo {
            id,
            name: r.name.get_ref().trim().to_owned(),
            version,
            registry: r.registry.clone(),
            description: r.description.clone(),
        }
    }

    fn codelists(&mut self, raw: &[raw::CodeList]) -> Vec<CodeList> {
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for c in raw {
            let id = self.id(&c.id, "code list", &mut seen);
            if c.codes.get_ref().is_empty() {
                self.err(c.codes.span(), format!("code list `{id}`: no codes"));
            }
            let mut codes = Vec::new();
            let mut seen_codes = HashSet::new();
            for code in c.codes.get_ref() {
                let s = code.code.get_ref();
                if !code_ok(s) {
                    self.err(
                        code.code.span(),
                        format!("code `{s}` of `{id}`: letters, digits, _, - and ., at most 64"),
                    );
                } else if !seen_codes.insert(s.clone()) {
                    self.err(
                        code.code.span(),
                        format!("duplicate code `{s}` in code list `{id}`"),
                    );
                }
                if let Some(v) = &code.sdtm {
                    let t = v.get_ref();
                    if t.is_empty()
                        || t.len() > 200
                        || !t.chars().all(|c| c.is_ascii_graphic() || c == ' ')
                        || t.trim() != t
                    {
                        self.err(
                            v.span(),
                            format!(
                                "sdtm `{t}` of code `{s}`: a CDISC submission value, 1 to 200 \
                                 printable ASCII characters (SUBCUTANEOUS)"
                            ),
                        );
                    }
                }
                codes.push(Code {
                    code: s.clone(),
                    label: code.label.clone(),
                    sdtm: code.sdtm.as_ref().map(|v| v.get_ref().clone()),
                    sdtm_flag: code.sdtm_flag.as_ref().map(|v| {
                        if !super::sdtm::is_variable_name(v.get_ref()) {
                            self.err(
                                v.span(),
                                format!(
                                    "sdtm_flag `{}` of code `{s}`: an SDTM variable name (AESDTH)",
                                    v.get_ref()
                                ),
                            );
                        }
                        v.get_ref().clone()
                    }),
                });
            }
            out.push(CodeList {
                id,
                name: c.name.clone(),
                codes,
            });
        }
        out
    }

    fn constants(
        &mut self,
        raw: &std::collections::BTreeMap<String, S<toml::Value>>,
    ) -> Vec<Constant> {
        let mut out = Vec::new();
        for (id, v) in raw {
            if !ident_ok(id) {
                self.err(
                    v.span(),
                    format!(
                        "constant `{id}`: lower case letters, digits and _, starting with a letter"
                    ),
                );
            }
            let value = match v.get_ref() {
                toml::Value::Integer(i) => ConstantValue::Integer(*i),
                toml::Value::Float(_) => match self.decimal(v, &format!("constant `{id}`")) {
                    Some(d) => ConstantValue::Number(d),
                    None => continue,
                },
                toml::Value::Boolean(b) => ConstantValue::Bool(*b),
                toml::Value::String(s) => ConstantValue::Text(s.clone()),
                _ => {
                    self.err(
                        v.span(),
                        format!("constant `{id}`: a number, a boolean or a text"),
                    );
                    continue;
                }
            };
            out.push(Constant {
                id: id.clone(),
                value,
            });
        }
        out
    }

    fn item_type(&mut self, i: &raw::Item, codelists: &[CodeList]) -> Option<ItemType> {
        let name = i.kind.get_ref().as_str();
        let kind = match name {
            "text" => {
                let max = match &i.max_length {
                    Some(m) if (1..=4000).contains(m.get_ref()) => *m.get_ref() as u32,
                    Some(m) => {
                        self.err(m.span(), "max_length: 1 to 4000 characters");
                        1
                    }
                    None => {
                        self.err(
                            i.kind.span(),
                            format!("item `{}`: a text item needs max_length", i.id.get_ref()),
                        );
                        1
                    }
                };
                ItemType::Text { max_length: max }
            }
            "integer" => ItemType::Integer,
            "decimal" => {
                let d = match &i.decimals {
                    Some(d) if (0..=9).contains(d.get_ref()) => *d.get_ref() as u32,
                    Some(d) => {
                        self.err(d.span(), "decimals: 0 to 9 digits after the point");
                        0
                    }
                    None => {
                        self.err(
                            i.kind.span(),
                            format!(
                                "item `{}`: a decimal item needs decimals (digits after the point)",
                                i.id.get_ref()
                            ),
                        );
                        0
                    }
                };
                ItemType::Decimal { decimals: d }
            }
            "boolean" => ItemType::Boolean,
            "date" => ItemType::Date,
            "partial_date" => ItemType::PartialDate,
            "datetime" => ItemType::DateTime,
            "time" => ItemType::Time,
            "choice" | "choices" => {
                let codelist = match &i.codelist {
                    Some(c) => {
                        if codelists.iter().all(|l| l.id != *c.get_ref()) {
                            self.err(
                                c.span(),
                                format!(
                                    "code list `{}` is referenced but not defined",
                                    c.get_ref()
                                ),
                            );
                        }
                        c.get_ref().clone()
                    }
                    None => {
                        self.err(
                            i.kind.span(),
                            format!("item `{}`: a {name} item needs a codelist", i.id.get_ref()),
                        );
                        String::new()
                    }
                };
                if name == "choice" {
                    ItemType::Choice { codelist }
                } else {
                    ItemType::Choices { codelist }
                }
            }
            other => {
                self.err(
                    i.kind.span(),
                    format!("type `{other}`: one of {}", item_type_names()),
                );
                return None;
            }
        };
        // options that do not apply to the type are mistakes, not decoration
        let numeric = matches!(kind, ItemType::Integer | ItemType::Decimal { .. });
        if let (Some(m), false) = (&i.max_length, name == "text") {
            self.err(
                m.span(),
                format!("max_length applies to text items, not {name}"),
            );
        }
        if let (Some(d), false) = (&i.decimals, name == "decimal") {
            self.err(
                d.span(),
                format!("decimals applies to decimal items, not {name}"),
            );
        }
        if let (Some(c), None) = (&i.codelist, kind.codelist()) {
            self.err(
                c.span(),
                format!("codelist applies to choice and choices items, not {name}"),
            );
        }
        if let (Some(u), false) = (&i.unit, numeric) {
            self.err(
                u.span(),
                format!("unit applies to integer and decimal items, not {name}"),
            );
        }
        for r in [&i.range, &i.soft_range].into_iter().flatten() {
            if !numeric {
                self.err(
                    r.span(),
                    format!("a range applies to integer and decimal items, not {name}"),
                );
            }
        }
        Some(kind)
    }

    fn range(&mut self, r: &S<raw::Range>, kind: &ItemType, soft: bool) -> Option<Range> {
        let rr = r.get_ref();
        let places = match kind {
            ItemType::Integer => 0,
            ItemType::Decimal { decimals } => i64::from(*decimals),
            _ => return None,
        };
        let mut bound = |b: &Option<S<toml::Value>>, name: &str| -> Option<BigDecimal> {
            let v = b.as_ref()?;
            let d = self.decimal(v, name)?;
            // a bound keeps the digits it was written with (`30.0`, which TOML reads as a
            // float and f64 prints as `30`): a range's message shows it as the file does
            let written = self
                .text
                .get(v.span())
                .and_then(|t| BigDecimal::from_str(&t.trim().replace('_', "")).ok())
                .filter(|w| *w == d);
            let d = written.unwrap_or(d);
            if d.normalized().fractional_digit_count() > places {
                self.err(
                    v.span(),
                    format!(
                        "{name} `{d}` has more digits after the point than the item ({places})"
                    ),
                );
            }
            Some(d)
        };
        let min = bound(&rr.min, "min");
        let max = bound(&rr.max, "max");
        if rr.min.is_none() && rr.max.is_none() {
            self.err(r.span(), "a range needs min, max or both");
        }
        if let (Some(a), Some(b)) = (&min, &max) {
            if a > b {
                self.err(r.span(), format!("range: min {a} is above max {b}"));
            }
        }
        let check = if soft {
            if let Some(c) = &rr.check {
                if c.get_ref() != "soft" {
                    self.err(
                        c.span(),
                        "soft_range is always soft: drop check or use range",
                    );
                }
            }
            Severity::Soft
        } else {
            self.severity(rr.check.as_ref())
        };
        Some(Range {
            min,
            max,
            check,
            message: rr.message.clone(),
        })
    }

    fn forms(
        &mut self,
        raw: &[raw::Form],
        codelists: &[CodeList],
        constants: &[Constant],
    ) -> Vec<Form> {
        let constant_types: HashMap<String, Ty> = constants
            .iter()
            .map(|c| {
                let t = match &c.value {
                    ConstantValue::Number(_) => Ty::Double,
                    ConstantValue::Integer(_) => Ty::Int,
                    ConstantValue::Bool(_) => Ty::Bool,
                    ConstantValue::Text(_) => Ty::String,
                };
                (c.id.clone(), t)
            })
            .collect();
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for f in raw {
            let id = self.id(&f.id, "form", &mut seen);
            let repeat = match f.repeat.get_ref().as_str() {
                "per_visit" => Repeat::PerVisit,
                "per_day" => Repeat::PerDay,
                "any" => Repeat::Any,
                other => {
                    self.err(
                        f.repeat.span(),
                        format!("repeat `{other}`: one of per_visit, per_day, any"),
                    );
                    Repeat::Any
                }
            };
            if f.items.is_empty() {
                self.err(f.id.span(), format!("form `{id}` has no items"));
            }
            let mut item_ids = HashSet::new();
            let mut items = Vec::new();
            for i in &f.items {
                let iid = self.id(&i.id, "item", &mut item_ids);
                if constant_types.contains_key(&iid) {
                    self.err(i.id.span(), format!("item `{iid}` has the name of a constant: expressions could not tell them apart"));
                }
                let Some(kind) = self.item_type(i, codelists) else {
                    continue;
                };
                let range = i.range.as_ref().and_then(|r| self.range(r, &kind, false));
                let soft_range = i
                    .soft_range
                    .as_ref()
                    .and_then(|r| self.range(r, &kind, true));
                if let (Some(r), Some(s)) = (&range, &i.soft_range) {
                    if r.check == Severity::Soft {
                        self.err(
                            s.span(),
                            "soft_range goes with a hard range; this range is already soft",
                        );
                    }
                }
                if let Some(u) = &i.unit {
                    if u.get_ref().trim().is_empty() {
                        self.err(u.span(), "unit: must not be empty");
                    }
                }
                let sdtm = i.sdtm.as_ref().map(|v| {
                    let vars = match v.get_ref() {
                        raw::Vars::One(one) => vec![one.clone()],
                        raw::Vars::Many(many) => many.clone(),
                    };
                    for var in &vars {
                        if !super::sdtm::is_variable_name(var) {
                            self.err(
                                v.span(),
                                format!(
                                    "sdtm `{var}`: an SDTM variable name (1 to 8 upper case \
                                     letters, digits or `_`, starting with a letter: VSORRES, \
                                     EXDOSE)"
                                ),
                            );
                        } else if vars.iter().filter(|w| *w == var).count() > 1 {
                            self.err(v.span(), format!("sdtm `{var}`: named twice"));
                        }
                    }
                    vars
                });
                items.push(Item {
                    id: iid,
                    label: i.label.clone(),
                    kind,
                    required: i.required,
                    unit: i.unit.as_ref().map(|u| u.get_ref().clone()),
                    range,
                    soft_range,
                    show_if: None,
                    derive: None,
                    derived_by: None,
                    not_before: None,
                    sdtm,
                    sdtm_code: i.sdtm_code.as_ref().map(|s| s.get_ref().clone()),
                    sdtm_label: i.sdtm_label.as_ref().map(|s| s.get_ref().clone()),
                    help: i.help.clone(),
                });
            }
            // expressions see every item of the form and the constants
            let mut scope = ExprScope {
                names: constant_types.clone(),
                codes: HashMap::new(),
            };
            for it in &items {
                scope.names.insert(it.id.clone(), it.kind.expr_type());
                if let Some(list) = it
                    .kind
                    .codelist()
                    .and_then(|c| codelists.iter().find(|l| l.id == c))
                {
                    scope.codes.insert(
                        it.id.clone(),
                        list.codes.iter().map(|c| c.code.clone()).collect(),
                    );
                }
            }
            for ri in &f.items {
                let Some(pos) = items.iter().position(|it| it.id == *ri.id.get_ref()) else {
                    continue;
                };
                let want = items[pos].kind.expr_type();
                let iid = items[pos].id.clone();
                if let Some(src) = &ri.show_if {
                    let e = self.expression(
                        src,
                        &scope,
                        &Ty::Bool,
                        None,
                        &format!("show_if of `{iid}`"),
                    );
                    if let Some(e) = &e {
                        if e.reads.contains(&iid) {
                            self.err(
                                src.span(),
                                format!("show_if of `{iid}` reads `{iid}` itself"),
                            );
                        }
                    }
                    items[pos].show_if = e;
                }
                if let Some(src) = &ri.derive {
                    if ri.required {
                        self.err(
                            src.span(),
                            format!("`{iid}` is derived, never entered: drop required"),
                        );
                    }
                    let result_codes = scope.codes.get(&iid).cloned();
                    let e = self.expression(
                        src,
                        &scope,
                        &want,
                        result_codes.as_deref(),
                        &format!("derive of `{iid}`"),
                    );
                    items[pos].derive = e;
                }
            }
            self.derivation_cycles(&items, f);
            self.date_order(&id, &mut items, f);
            let dated_by = match &f.dated_by {
                None => {
                    self.err(f.id.span(), format!("form `{id}`: dated_by names the date or datetime item that dates a record (consent and visit windows are checked on it)"));
                    String::new()
                }
                Some(d) => {
                    match items.iter().find(|it| it.id == *d.get_ref()) {
                        None => self.err(d.span(), format!("dated_by: form `{id}` has no item `{}`", d.get_ref())),
                        Some(it) if !matches!(it.kind, ItemType::Date | ItemType::DateTime | ItemType::PartialDate) => {
                            self.err(d.span(), format!("dated_by: `{}` is an item of type {}, not a date, partial_date or datetime", it.id, it.kind.name()))
                        }
                        Some(it) if !it.required || it.derived() || it.show_if.is_some() => {
                            self.err(d.span(), format!("dated_by: `{}` must be required, entered and always shown", it.id))
                        }
                        Some(_) => {}
                    }
                    d.get_ref().clone()
                }
            };
            let mut check_ids = HashSet::new();
            let mut checks = Vec::new();
            for c in &f.checks {
                let cid = self.id(&c.id, "check", &mut check_ids);
                let e =
                    self.expression(&c.expr, &scope, &Ty::Bool, None, &format!("check `{cid}`"));
                if c.items.get_ref().is_empty() {
                    self.err(
                        c.items.span(),
                        format!(
                            "check `{cid}`: items names at least one item (the error names them)"
                        ),
                    );
                }
                for it in c.items.get_ref() {
                    if items.iter().all(|x| x.id != *it.get_ref()) {
                        self.err(
                            it.span(),
                            format!("check `{cid}`: form `{id}` has no item `{}`", it.get_ref()),
                        );
                    }
                }
                let check = self.severity(c.check.as_ref());
                if let Some(expr) = e {
                    checks.push(FormCheck {
                        id: cid,
                        expr,
                        message: c.message.clone(),
                        items: c
                            .items
                            .get_ref()
                            .iter()
                            .map(|s| s.get_ref().clone())
                            .collect(),
                        check,
                    });
                }
            }
            let sdtm = f.sdtm.as_ref().map(|s| {
                let d = s.get_ref();
                let dom = d.domain.get_ref();
                if dom.len() != 2 || !dom.chars().all(|c| c.is_ascii_uppercase()) {
                    self.err(
                        d.domain.span(),
                        format!("sdtm.domain `{dom}`: two upper case letters (VS, EX, AE, QS, LB)"),
                    );
                }
                Sdtm {
                    domain: dom.clone(),
                    category: d.category.clone(),
                    values: self.sdtm_values(d.values.as_ref()),
                    when: d.when.as_ref().map(|w| {
                        let item = w.get_ref();
                        if !items
                            .iter()
                            .any(|i| i.id == *item && i.kind == ItemType::Boolean)
                        {
                            self.err(
                                w.span(),
                                format!("sdtm.when `{item}`: a boolean item of form `{id}`"),
                            );
                        }
                        item.clone()
                    }),
                }
            });
            self.sdtm_codes(f, sdtm.as_ref(), &dated_by);
            out.push(Form {
                id,
                name: f.name.clone(),
                repeat,
                dated_by,
                after_withdrawal: f.after_withdrawal,
                sdtm,
                items,
                checks,
            });
        }
        out
    }

    /// A form's `sdtm.values`: variable names and their text, as SDTM carries it.
    fn sdtm_values(&mut self, values: Option<&S<toml::Table>>) -> Vec<(String, String)> {
        let Some(values) = values else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (var, v) in values.get_ref() {
            let text = v.as_str().unwrap_or_default();
            if !super::sdtm::is_variable_name(var) {
                self.err(
                    values.span(),
                    format!(
                        "sdtm.values `{var}`: an SDTM variable name (1 to 8 upper case letters, \
                         digits or `_`, starting with a letter: EXDOSFRM)"
                    ),
                );
            } else if text.is_empty()
                || text.len() > 200
                || text.trim() != text
                || !text.chars().all(|c| c.is_ascii_graphic() || c == ' ')
            {
                self.err(
                    values.span(),
                    format!(
                        "sdtm.values `{var}`: text of 1 to 200 printable ASCII characters \
                         (INJECTION)"
                    ),
                );
            } else {
                out.push((var.clone(), text.to_owned()));
            }
        }
        out
    }

    /// `sdtm_code` and `sdtm_label`: a test code (or a supplemental qualifier's QNAM) and its
    /// label chosen in the definition, for an item that becomes a test or a qualifier.
    fn sdtm_codes(&mut self, raw: &raw::Form, sdtm: Option<&Sdtm>, dated_by: &str) {
        let mut seen: HashMap<String, String> = HashMap::new();
        for ri in &raw.items {
            if let Some(l) = &ri.sdtm_label {
                let n = l.get_ref().chars().count();
                if n == 0 || n > 40 || l.get_ref().trim() != l.get_ref() {
                    self.err(
                        l.span(),
                        "sdtm_label: 1 to 40 characters without leading or trailing spaces \
                         (SDTM's --TEST and QLABEL)",
                    );
                }
            }
            let Some(c) = &ri.sdtm_code else {
                if let (Some(l), None) = (&ri.sdtm_label, &ri.sdtm_code) {
                    if sdtm.is_none() {
                        self.err(l.span(), "sdtm_label: the form maps to no SDTM domain");
                    }
                }
                continue;
            };
            let code = c.get_ref();
            let item = ri.id.get_ref();
            let Some(domain) = sdtm.map(|s| s.domain.as_str()) else {
                self.err(c.span(), "sdtm_code: the form maps to no SDTM domain");
                continue;
            };
            let orres = format!("{domain}ORRES");
            let vars: Vec<&str> = match ri.sdtm.as_ref().map(S::get_ref) {
                None => Vec::new(),
                Some(raw::Vars::One(one)) => vec![one.as_str()],
                Some(raw::Vars::Many(many)) => many.iter().map(String::as_str).collect(),
            };
            let fills = match vars.iter().find(|v| **v != orres) {
                Some(v) => Some(format!("fills `{v}`")),
                None if ri.sdtm.is_some() && vars.is_empty() => Some("is not in SDTM".into()),
                None => None,
            };
            if !super::sdtm::is_variable_name(code) {
                self.err(
                    c.span(),
                    format!(
                        "sdtm_code `{code}`: 1 to 8 upper case letters, digits or `_`, \
                         starting with a letter (CRP, TEMP)"
                    ),
                );
            } else if item == dated_by {
                self.err(
                    c.span(),
                    format!("sdtm_code: `{item}` dates the form's rows; it is no test"),
                );
            } else if let Some(fills) = fills {
                self.err(
                    c.span(),
                    format!("sdtm_code: `{item}` {fills}; it is no test nor qualifier"),
                );
            } else if let Some(other) = seen.insert(code.clone(), item.clone()) {
                self.err(
                    c.span(),
                    format!("sdtm_code `{code}`: already the code of `{other}` in this form"),
                );
            }
        }
    }

    /// `not_before` orders two date or partial date items of one form.
    fn date_order(&mut self, form: &str, items: &mut [Item], raw: &raw::Form) {
        let dated = |k: &ItemType| matches!(k, ItemType::Date | ItemType::PartialDate);
        for ri in &raw.items {
            let Some(nb) = &ri.not_before else {
                continue;
            };
            let Some(pos) = items.iter().position(|it| it.id == *ri.id.get_ref()) else {
                continue;
            };
            let iid = items[pos].id.clone();
            let other = nb.get_ref();
            if !dated(&items[pos].kind) {
                self.err(
                    nb.span(),
                    format!(
                        "not_before of `{iid}`: `{iid}` is of type {}; not_before goes on date and partial_date items",
                        items[pos].kind.name()
                    ),
                );
                continue;
            }
            match items.iter().find(|it| it.id == *other) {
                None => self.err(
                    nb.span(),
                    format!("not_before of `{iid}`: form `{form}` has no item `{other}`"),
                ),
                Some(o) if o.id == iid => self.err(
                    nb.span(),
                    format!("not_before of `{iid}` names `{iid}` itself"),
                ),
                Some(o) if !dated(&o.kind) => self.err(
                    nb.span(),
                    format!(
                        "not_before of `{iid}`: `{other}` is of type {}, not date or partial_date",
                        o.kind.name()
                    ),
                ),
                Some(_) => items[pos].not_before = Some(other.clone()),
            }
        }
    }

    /// A derived item that needs itself, through others, could never be computed.
    fn derivation_cycles(&mut self, items: &[Item], raw: &raw::Form) {
        let deps: HashMap<&str, Vec<&str>> = items
            .iter()
            .filter_map(|i| {
                let e = i.derive.as_ref()?;
                Some((i.id.as_str(), e.reads.iter().map(String::as_str).collect()))
            })
            .collect();
        for start in deps.keys() {
            let mut stack: Vec<&str> = deps[start].clone();
            let mut seen = HashSet::new();
            while let Some(n) = stack.pop() {
                if n == *start {
                    if let Some(ri) = raw.items.iter().find(|i| i.id.get_ref() == start) {
                        if let Some(src) = &ri.derive {
                            self.err(src.span(), format!("derive of `{start}` depends on itself"));
                        }
                    }
                    break;
                }
                if seen.insert(n) {
                    if let Some(next) = deps.get(n) {
                        stack.extend(next.iter().copied());
                    }
                }
            }
        }
    }

    fn visits(
        &mut self,
        raw: &[raw::Visit],
        forms: &[Form],
        raw_forms: &[raw::Form],
    ) -> Vec<Visit> {
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for v in raw {
            let id = v.id.get_ref().clone();
            if id.is_empty()
                || id.len() > 20
                || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                self.err(
                    v.id.span(),
                    format!("visit id `{id}`: letters, digits and _, at most 20"),
                );
            } else if !seen.insert(id.clone()) {
                self.err(v.id.span(), format!("duplicate visit id `{id}`"));
            }
            let day = match (&v.day, v.unscheduled) {
                (Some(d), true) => {
                    self.err(
                        d.span(),
                        format!("visit `{id}` is unscheduled: it has no day"),
                    );
                    None
                }
                (None, false) => {
                    self.err(v.id.span(), format!("visit `{id}`: day (relative to the anchor) is missing; or say unscheduled = true"));
                    None
                }
                (Some(d), false) => match i32::try_from(*d.get_ref()) {
                    Ok(x) if x.abs() <= 3660 => Some(x),
                    _ => {
                        self.err(d.span(), "day: within 10 years of the anchor");
                        None
                    }
                },
                (None, true) => None,
            };
            let (before, after) = match (&v.window, v.unscheduled) {
                (Some(w), true) => {
                    self.err(
                        w.span(),
                        format!("visit `{id}` is unscheduled: it has no window"),
                    );
                    (0, 0)
                }
                (Some(w), false) => match w.get_ref().as_slice() {
                    [a, b] if (0..=366).contains(a) && (0..=366).contains(b) => {
                        (*a as u32, *b as u32)
                    }
                    _ => {
                        self.err(w.span(), "window: [days before, days after], each 0 to 366");
                        (0, 0)
                    }
                },
                (None, _) => (0, 0),
            };
            let mut listed = HashSet::new();
            if v.forms.get_ref().is_empty() {
                self.err(v.forms.span(), format!("visit `{id}` lists no forms"));
            }
            for f in v.forms.get_ref() {
                if forms.iter().all(|x| x.id != *f.get_ref()) {
                    self.err(
                        f.span(),
                        format!("visit `{id}`: unknown form `{}`", f.get_ref()),
                    );
                } else if !listed.insert(f.get_ref().clone()) {
                    self.err(
                        f.span(),
                        format!("visit `{id}` lists form `{}` twice", f.get_ref()),
                    );
                }
            }
            out.push(Visit {
                id,
                name: v.name.clone(),
                day,
                window_before: before,
                window_after: after,
                unscheduled: v.unscheduled,
                forms: v
                    .forms
                    .get_ref()
                    .iter()
                    .map(|f| f.get_ref().clone())
                    .collect(),
            });
        }
        for (f, rf) in forms.iter().zip(raw_forms) {
            if f.repeat == Repeat::PerVisit && out.iter().all(|v| !v.forms.contains(&f.id)) {
                self.err(
                    rf.repeat.span(),
                    format!(
                        "form `{}` is entered per visit, but no visit lists it",
                        f.id
                    ),
                );
            }
        }
        out
    }

    fn schedule(&mut self, raw: Option<&S<raw::Schedule>>, forms: &[Form]) -> Schedule {
        let Some(s) = raw else {
            return Schedule {
                anchor: Anchor::Enrolment,
                anchor_item: None,
            };
        };
        let r = s.get_ref();
        let anchor = match r.anchor.get_ref().as_str() {
            "first_dose" => Anchor::FirstDose,
            "enrolment" => Anchor::Enrolment,
            other => {
                self.err(
                    r.anchor.span(),
                    format!("anchor `{other}`: first_dose or enrolment"),
                );
                Anchor::Enrolment
            }
        };
        let anchor_item = match (&r.anchor_item, anchor) {
            (None, Anchor::FirstDose) => {
                self.err(
                    r.anchor.span(),
                    "anchor first_dose: anchor_item names the dose's date (`form.item`)",
                );
                None
            }
            (Some(a), Anchor::Enrolment) => {
                self.err(a.span(), "anchor_item goes with anchor = \"first_dose\"");
                None
            }
            (Some(a), Anchor::FirstDose) => {
                let text = a.get_ref();
                let found = text.split_once('.').and_then(|(f, i)| {
                    let form = forms.iter().find(|x| x.id == f)?;
                    let item = form.item(i)?;
                    Some((form, item))
                });
                match found {
                    Some((f, i)) if matches!(i.kind, ItemType::Date | ItemType::DateTime) => {
                        Some(ItemRef {
                            form: f.id.clone(),
                            item: i.id.clone(),
                        })
                    }
                    Some((_, i)) => {
                        self.err(
                            a.span(),
                            format!(
                                "anchor_item `{text}` is an item of type {}, not a date or datetime",
                                i.kind.name()
                            ),
                        );
                        None
                    }
                    None => {
                        self.err(a.span(), format!("anchor_item `{text}`: no such form.item"));
                        None
                    }
                }
            }
            (None, Anchor::Enrolment) => None,
        };
        Schedule {
            anchor,
            anchor_item,
        }
    }

    fn consent(&mut self, raw: Option<&S<raw::Consent>>) -> Consent {
        let Some(c) = raw else {
            self.errors.push(DefinitionError {
                file: self.file.clone(),
                line: None,
                message: "[consent] is missing: the consent versions in force".into(),
            });
            return Consent {
                versions: Vec::new(),
                signers: vec![Signer::Participant],
                assent: false,
            };
        };
        let r = c.get_ref();
        if r.versions.get_ref().is_empty()
            || r.versions.get_ref().iter().any(|v| v.trim().is_empty())
        {
            self.err(
                r.versions.span(),
                "consent.versions: at least one version, none empty",
            );
        }
        let mut signers = Vec::new();
        match &r.signers {
            None => signers.push(Signer::Participant),
            Some(list) => {
                for s in list.get_ref() {
                    match s.get_ref().as_str() {
                        "participant" => signers.push(Signer::Participant),
                        "representative" => signers.push(Signer::Representative),
                        other => self.err(
                            s.span(),
                            format!("signer `{other}`: participant or representative"),
                        ),
                    }
                }
                if list.get_ref().is_empty() {
                    self.err(list.span(), "consent.signers: at least one");
                }
            }
        }
        Consent {
            versions: r.versions.get_ref().clone(),
            signers,
            assent: r.assent,
        }
    }

    fn eligibility(&mut self, raw: &[raw::Criterion]) -> Vec<Criterion> {
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for c in raw {
            let id = c.id.get_ref().clone();
            if id.trim().is_empty() || !seen.insert(id.clone()) {
                self.err(
                    c.id.span(),
                    format!("eligibility id `{id}` is empty or repeated"),
                );
            }
            let kind = match c.kind.get_ref().as_str() {
                "inclusion" => CriterionKind::Inclusion,
                "exclusion" => CriterionKind::Exclusion,
                other => {
                    self.err(
                        c.kind.span(),
                        format!("kind `{other}`: inclusion or exclusion"),
                    );
                    continue;
                }
            };
            out.push(Criterion {
                id,
                kind,
                text: c.text.clone(),
            });
        }
        out
    }

    fn treatments(&mut self, raw: &[raw::Treatment]) -> Vec<Treatment> {
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for t in raw {
            let id = self.id(&t.id, "treatment", &mut seen);
            let d = t.dose.get_ref();
            let kind = d.kind.get_ref().as_str();
            let dose = match kind {
                "fixed" => {
                    if d.mg_per_kg.is_some() || d.escalation.is_some() {
                        self.err(
                            t.dose.span(),
                            "a fixed dose has mg only (no mg_per_kg, no escalation)",
                        );
                    }
                    let mg = match &d.mg {
                        Some(v) => self.positive(v, "dose.mg"),
                        None => {
                            self.err(d.kind.span(), "a fixed dose needs mg");
                            None
                        }
                    };
                    Dose::Fixed {
                        mg: mg.unwrap_or_default(),
                    }
                }
                "per_kg" => {
                    if d.mg.is_some() {
                        self.err(t.dose.span(), "a per_kg dose has mg_per_kg, not mg");
                    }
                    let mg_per_kg = match &d.mg_per_kg {
                        Some(v) => self.positive(v, "dose.mg_per_kg"),
                        None => {
                            self.err(d.kind.span(), "a per_kg dose needs mg_per_kg");
                            None
                        }
                    };
                    let escalation = d.escalation.as_ref().map(|e| {
                        let e = e.get_ref();
                        let from_day = *e.from_day.get_ref();
                        if !(1..=366).contains(&from_day) {
                            self.err(e.from_day.span(), "escalation.from_day: 1 to 366");
                        }
                        Escalation {
                            from_day: from_day.clamp(1, 366) as u32,
                            mg_per_kg: self
                                .positive(&e.mg_per_kg, "escalation.mg_per_kg")
                                .unwrap_or_default(),
                            on_rule: e.on_rule.get_ref().clone(),
                        }
                    });
                    Dose::PerKg {
                        mg_per_kg: mg_per_kg.unwrap_or_default(),
                        escalation,
                    }
                }
                other => {
                    self.err(
                        d.kind.span(),
                        format!("dose kind `{other}`: fixed or per_kg"),
                    );
                    Dose::Fixed {
                        mg: BigDecimal::default(),
                    }
                }
            };
            let interval_days = match &t.interval_days {
                None => 1,
                Some(v) if (1..=366).contains(v.get_ref()) => *v.get_ref() as u32,
                Some(v) => {
                    self.err(v.span(), "interval_days: 1 (daily) to 366");
                    1
                }
            };
            let max_days = match &t.max_days {
                None => None,
                Some(v) if (1..=3660).contains(v.get_ref()) => Some(*v.get_ref() as u32),
                Some(v) => {
                    self.err(v.span(), "max_days: at least 1");
                    None
                }
            };
            let start_window_days = match &t.start_window_days {
                None => None,
                Some(w) => match w.get_ref().as_slice() {
                    [a, b] if 0 <= *a && a <= b && *b <= 3660 => Some((*a as u32, *b as u32)),
                    _ => {
                        self.err(
                            w.span(),
                            "start_window_days: [first, last] with 0 <= first <= last",
                        );
                        None
                    }
                },
            };
            let tolerance_percent = match &t.tolerance_percent {
                None => BigDecimal::from(10),
                Some(v) => match self.decimal(v, "tolerance_percent") {
                    Some(d) if (BigDecimal::from(0)..=BigDecimal::from(100)).contains(&d) => d,
                    Some(_) => {
                        self.err(v.span(), "tolerance_percent: 0 to 100");
                        BigDecimal::from(10)
                    }
                    None => BigDecimal::from(10),
                },
            };
            out.push(Treatment {
                id,
                name: t.name.clone(),
                route: t.route.clone(),
                dose,
                interval_days,
                max_days,
                start_window_days,
                tolerance_percent,
                switch_from: t.switch_from.iter().map(|s| s.get_ref().clone()).collect(),
            });
        }
        for (t, rt) in out.iter().zip(raw) {
            for s in &rt.switch_from {
                if *s.get_ref() == t.id || out.iter().all(|o| o.id != *s.get_ref()) {
                    self.err(
                        s.span(),
                        format!(
                            "switch_from `{}`: another treatment of this study",
                            s.get_ref()
                        ),
                    );
                }
            }
        }
        out
    }

    fn rules(
        &mut self,
        raw: &[raw::Rule],
        forms: &mut [Form],
        treatments: &[Treatment],
    ) -> Vec<Rule> {
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        // fever_endpoints names a fever rule, which may come after it
        let fever_rules: HashSet<&str> = raw
            .iter()
            .filter(|r| r.kind.get_ref() == "fever")
            .map(|r| r.id.get_ref().as_str())
            .collect();
        for r in raw {
            let id = self.id(&r.id, "rule", &mut seen);
            let kind = match r.kind.get_ref().as_str() {
                "dose" => RuleKind::Dose,
                "study_day" => RuleKind::StudyDay,
                "fever" => RuleKind::Fever,
                "fever_endpoints" => RuleKind::FeverEndpoints,
                "sae_alert" => RuleKind::SaeAlert,
                other => {
                    self.err(r.kind.span(), format!("rule kind `{other}`: one of dose, study_day, fever, fever_endpoints, sae_alert"));
                    continue;
                }
            };
            let here = r.id.span();
            // parameters: each kind takes its own, and nothing else
            let takes = |p: &str| match kind {
                RuleKind::Dose => p == "treatment",
                RuleKind::Fever => p == "threshold",
                RuleKind::FeverEndpoints => matches!(p, "fever_rule" | "hours" | "until_day"),
                _ => false,
            };
            for (p, span) in [
                ("treatment", r.treatment.as_ref().map(|s| s.span())),
                ("fever_rule", r.fever_rule.as_ref().map(|s| s.span())),
                ("threshold", r.threshold.as_ref().map(|s| s.span())),
                ("hours", r.hours.as_ref().map(|s| s.span())),
                ("until_day", r.until_day.as_ref().map(|s| s.span())),
            ] {
                match (span, takes(p)) {
                    (Some(span), false) => {
                        self.err(span, format!("a {} rule takes no {p}", r.kind.get_ref()))
                    }
                    (None, true) => self.err(
                        here.clone(),
                        format!("rule `{id}`: a {} rule needs {p}", r.kind.get_ref()),
                    ),
                    _ => {}
                }
            }
            let treatment = r.treatment.as_ref().and_then(|t| {
                match treatments.iter().find(|x| x.id == *t.get_ref()) {
                    Some(x) => Some(x),
                    None => {
                        self.err(
                            t.span(),
                            format!("treatment `{}` is not defined", t.get_ref()),
                        );
                        None
                    }
                }
            });
            if let Some(f) = &r.fever_rule {
                if !fever_rules.contains(f.get_ref().as_str()) {
                    self.err(
                        f.span(),
                        format!("fever_rule `{}`: no fever rule has this id", f.get_ref()),
                    );
                }
            }
            let threshold = r
                .threshold
                .as_ref()
                .and_then(|t| self.positive(t, "threshold"));
            let hours = r
                .hours
                .as_ref()
                .and_then(|h| match u32::try_from(*h.get_ref()) {
                    Ok(x) if (1..=24 * 366).contains(&x) => Some(x),
                    _ => {
                        self.err(h.span(), "hours: at least 1");
                        None
                    }
                });
            let until_day = r.until_day.as_ref().and_then(|d| {
                let day = u32::try_from(*d.get_ref()).ok().filter(|x| (1..=366).contains(x));
                match (day, hours) {
                    (None, _) => {
                        self.err(d.span(), "until_day: a study day, 1 to 366");
                        None
                    }
                    // the window opens `hours` after the first dose and closes with day
                    // `until_day` at the latest: it would never hold a measurement
                    (Some(day), Some(h)) if h >= day * 24 => {
                        self.err(
                            d.span(),
                            format!("until_day: the window from {h} h after the first dose would be closed by the end of study day {day}"),
                        );
                        None
                    }
                    (day, _) => day,
                }
            });
            if kind == RuleKind::FeverEndpoints {
                if raw.iter().any(|o| {
                    o.kind.get_ref() == "fever_endpoints" && o.id.span().start < here.start
                }) {
                    self.err(
                        here.clone(),
                        format!("rule `{id}`: a study has one fever_endpoints rule"),
                    );
                }
                if !raw.iter().any(|o| o.kind.get_ref() == "dose") {
                    self.err(
                        here.clone(),
                        format!("rule `{id}`: a fever_endpoints rule counts from the first dose: the study needs a dose rule"),
                    );
                }
            }
            let specs = roles(kind);
            let form_index = match (&r.form, specs.is_empty()) {
                (Some(f), true) => {
                    self.err(
                        f.span(),
                        format!("a {} rule reads no form", r.kind.get_ref()),
                    );
                    None
                }
                (None, false) => {
                    self.err(
                        here.clone(),
                        format!("rule `{id}`: form names the form whose items it reads"),
                    );
                    None
                }
                (Some(f), false) => {
                    let pos = forms.iter().position(|x| x.id == *f.get_ref());
                    if pos.is_none() {
                        self.err(
                            f.span(),
                            format!("rule `{id}`: unknown form `{}`", f.get_ref()),
                        );
                    }
                    pos
                }
                (None, true) => None,
            };
            let mut items = Vec::new();
            for (role, item) in &r.items {
                let Some(spec) = specs.iter().find(|s| s.0 == role) else {
                    let known: Vec<&str> = specs.iter().map(|s| s.0).collect();
                    self.err(
                        item.span(),
                        format!(
                            "a {} rule has no role `{role}` (its roles: {})",
                            r.kind.get_ref(),
                            known.join(", ")
                        ),
                    );
                    continue;
                };
                items.push((role.clone(), item.get_ref().clone()));
                let Some(fi) = form_index else { continue };
                let form_id = forms[fi].id.clone();
                let Some(pos) = forms[fi].items.iter().position(|x| x.id == *item.get_ref()) else {
                    self.err(
                        item.span(),
                        format!(
                            "rule `{id}`, {role}: form `{form_id}` has no item `{}`",
                            item.get_ref()
                        ),
                    );
                    continue;
                };
                let it = &forms[fi].items[pos];
                if !spec.1.contains(&it.kind.name()) {
                    self.err(
                        item.span(),
                        format!(
                            "rule `{id}`, {role}: `{}` is an item of type {}, the rule needs {}",
                            it.id,
                            it.kind.name(),
                            spec.1.join(" or ")
                        ),
                    );
                }
                if spec.3 {
                    if it.required || it.derive.is_some() || it.derived_by.is_some() {
                        self.err(item.span(), format!("rule `{id}` computes `{}`: it cannot also be required, derived by an expression or by another rule", it.id));
                    }
                    forms[fi].items[pos].derived_by = Some(id.clone());
                }
            }
            for spec in specs.iter().filter(|s| s.2) {
                if !r.items.contains_key(spec.0) {
                    self.err(
                        here.clone(),
                        format!("rule `{id}`: items.{} is missing", spec.0),
                    );
                }
            }
            if let Some(t) = treatment {
                let per_kg = matches!(t.dose, Dose::PerKg { .. });
                if per_kg && !r.items.contains_key("weight") {
                    self.err(
                        here.clone(),
                        format!(
                            "rule `{id}`: treatment `{}` is dosed per kg: items.weight is needed",
                            t.id
                        ),
                    );
                }
            }
            out.push(Rule {
                id,
                kind,
                form: r.form.as_ref().map(|f| f.get_ref().clone()),
                treatment: r.treatment.as_ref().map(|t| t.get_ref().clone()),
                fever_rule: r.fever_rule.as_ref().map(|t| t.get_ref().clone()),
                threshold,
                hours,
                until_day,
                items,
            });
        }
        out
    }
}
