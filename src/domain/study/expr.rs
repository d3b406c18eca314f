//! Expressions in CEL (the `cel` crate): parsed, and type-checked here, when a definition is
//! loaded. The crate parses and evaluates but has no checker, so this walks its syntax tree:
//! every name must be an item of the form or a constant, and each operator must apply to its
//! operands' types (CEL has no implicit conversion: `weight_kg * 2` is an error at run time,
//! so it is one here, at load, with the fix in the message).

use std::collections::{BTreeSet, HashMap};

use cel::common::ast::{operators as op, EntryExpr, Expr, LiteralValue};
use cel::IdedExpr;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ty {
    Int,
    Double,
    Bool,
    String,
    Timestamp,
    Duration,
    Null,
    List(Box<Ty>),
    Map,
    /// unknown until run time (a map's value, an empty list's element)
    Dyn,
}

impl std::fmt::Display for Ty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ty::Int => write!(f, "int"),
            Ty::Double => write!(f, "double"),
            Ty::Bool => write!(f, "bool"),
            Ty::String => write!(f, "string"),
            Ty::Timestamp => write!(f, "timestamp"),
            Ty::Duration => write!(f, "duration"),
            Ty::Null => write!(f, "null"),
            Ty::List(t) => write!(f, "list({t})"),
            Ty::Map => write!(f, "map"),
            Ty::Dyn => write!(f, "dyn"),
        }
    }
}

impl Ty {
    fn numeric(&self) -> bool {
        matches!(self, Ty::Int | Ty::Double | Ty::Dyn)
    }
    /// Whether values of the two types can be equal (CEL compares int and double by value).
    fn comparable(&self, other: &Ty) -> bool {
        match (self, other) {
            (Ty::Dyn, _) | (_, Ty::Dyn) | (Ty::Null, _) | (_, Ty::Null) => true,
            (a, b) if a.numeric() && b.numeric() => true,
            (Ty::List(a), Ty::List(b)) => a.comparable(b),
            (a, b) => a == b,
        }
    }
    fn unify(&self, other: &Ty) -> Option<Ty> {
        match (self, other) {
            (a, b) if a == b => Some(a.clone()),
            (Ty::Null, t) | (t, Ty::Null) => Some(t.clone()),
            (Ty::Dyn, _) | (_, Ty::Dyn) => Some(Ty::Dyn),
            (Ty::List(a), Ty::List(b)) => a.unify(b).map(|t| Ty::List(Box::new(t))),
            _ => None,
        }
    }
    /// Can an expression of type `self` give a value of type `want`?
    pub fn fits(&self, want: &Ty) -> bool {
        match (self, want) {
            (Ty::Dyn, _) | (Ty::Null, _) => true,
            (Ty::List(a), Ty::List(b)) => a.fits(b),
            (a, b) => a == b,
        }
    }
}

/// A checked expression: its type and the names it reads.
pub struct Checked {
    pub ty: Ty,
    pub reads: Vec<String>,
    /// compiled once here, run for every record
    pub program: cel::Program,
}

struct Checker<'a> {
    names: &'a HashMap<String, Ty>,
    codes: &'a HashMap<String, Vec<String>>,
    locals: Vec<(String, Ty)>,
    reads: BTreeSet<String>,
}

/// Parses `source` and checks it against the names in scope.
pub fn check(source: &str, names: &HashMap<String, Ty>) -> Result<Checked, String> {
    check_coded(source, names, &HashMap::new(), None)
}

/// As `check`, and: a text literal compared with a choice item (`reason == 'other'`,
/// `'death' in criteria`) must be one of its codes (`codes`: item -> its code list), and,
/// for the derivation of a choice item, each text the expression can give must be one of
/// `result_codes`. A misspelt code would otherwise make a condition silently never true.
pub fn check_coded(
    source: &str,
    names: &HashMap<String, Ty>,
    codes: &HashMap<String, Vec<String>>,
    result_codes: Option<&[String]>,
) -> Result<Checked, String> {
    let program = cel::Program::compile(source).map_err(|e| {
        let first = e
            .errors
            .first()
            .map(|p| format!("{} (column {})", p.msg, p.pos.1 + 1))
            .unwrap_or_else(|| e.to_string());
        format!("cannot parse the expression `{source}`: {first}")
    })?;
    let mut c = Checker {
        names,
        codes,
        locals: Vec::new(),
        reads: BTreeSet::new(),
    };
    let ty = c
        .ty(program.expression())
        .map_err(|e| format!("in `{source}`: {e}"))?;
    if let Some(allowed) = result_codes {
        let mut results = Vec::new();
        outcomes(program.expression(), &mut results);
        for r in results {
            if let Some(code) = text_literal(r) {
                if !allowed.iter().any(|a| a == code) {
                    return Err(format!(
                        "in `{source}`: `{code}` is not a code of the item's code list ({})",
                        allowed.join(", ")
                    ));
                }
            }
        }
    }
    Ok(Checked {
        ty,
        reads: c.reads.into_iter().collect(),
        program,
    })
}

type R = Result<Ty, String>;

fn text_literal(e: &IdedExpr) -> Option<&str> {
    match &e.expr {
        Expr::Literal(LiteralValue::String(s)) => Some(s.inner()),
        _ => None,
    }
}

/// The expressions whose value can be the result: the branches of `? :`, recursively.
fn outcomes<'e>(e: &'e IdedExpr, out: &mut Vec<&'e IdedExpr>) {
    match &e.expr {
        Expr::Call(c) if c.func_name == op::CONDITIONAL && c.args.len() == 3 => {
            outcomes(&c.args[1], out);
            outcomes(&c.args[2], out);
        }
        _ => out.push(e),
    }
}

impl Checker<'_> {
    fn ty(&mut self, e: &IdedExpr) -> R {
        match &e.expr {
            Expr::Unspecified => Err("an empty expression".into()),
            Expr::Literal(l) => match l {
                LiteralValue::Boolean(_) => Ok(Ty::Bool),
                LiteralValue::Int(_) | LiteralValue::UInt(_) => Ok(Ty::Int),
                LiteralValue::Double(_) => Ok(Ty::Double),
                LiteralValue::String(_) => Ok(Ty::String),
                LiteralValue::Null => Ok(Ty::Null),
                LiteralValue::Bytes(_) => Err("bytes are not used in a study".into()),
            },
            Expr::Ident(name) => self.name(name),
            Expr::Select(s) => {
                if s.test {
                    return Err("has() does not apply to items: compare the item with null".into());
                }
                match self.ty(&s.operand)? {
                    Ty::Map | Ty::Dyn => Ok(Ty::Dyn),
                    t => Err(format!("`.{}` selects a field of a {t}", s.field)),
                }
            }
            Expr::List(l) => {
                let mut elem = Ty::Dyn;
                for (i, x) in l.elements.iter().enumerate() {
                    let t = self.ty(x)?;
                    elem = if i == 0 {
                        t
                    } else {
                        elem.unify(&t)
                            .ok_or_else(|| format!("a list mixes {elem} and {t}"))?
                    };
                }
                Ok(Ty::List(Box::new(elem)))
            }
            Expr::Map(m) => {
                for entry in &m.entries {
                    if let EntryExpr::MapEntry(me) = &entry.expr {
                        self.ty(&me.key)?;
                        self.ty(&me.value)?;
                    }
                }
                Ok(Ty::Map)
            }
            Expr::Struct(_) => Err("messages (structs) are not used in a study".into()),
            Expr::Comprehension(c) => {
                let elem = match self.ty(&c.iter_range)? {
                    Ty::List(t) => *t,
                    Ty::Map | Ty::Dyn => Ty::Dyn,
                    t => return Err(format!("a macro iterates over a list, not a {t}")),
                };
                let accu = self.ty(&c.accu_init)?;
                let depth = self.locals.len();
                self.locals.push((c.iter_var.clone(), elem));
                if let Some(v2) = &c.iter_var2 {
                    self.locals.push((v2.clone(), Ty::Dyn));
                }
                self.locals.push((c.accu_var.clone(), accu));
                let out = (|| {
                    self.ty(&c.loop_cond)?;
                    self.ty(&c.loop_step)?;
                    self.ty(&c.result)
                })();
                self.locals.truncate(depth);
                out
            }
            Expr::Call(call) => {
                let target = match &call.target {
                    Some(t) => Some(self.ty(t)?),
                    None => None,
                };
                let mut args = Vec::with_capacity(call.args.len());
                for a in &call.args {
                    args.push(self.ty(a)?);
                }
                self.codes_compared(&call.func_name, &call.args)?;
                if call.func_name == "matches" {
                    if let Some(pattern) = call.args.last().and_then(text_literal) {
                        valid_pattern(pattern)?;
                    }
                }
                self.call(&call.func_name, target, &args)
            }
        }
    }

    /// The code list of a choice item named by `e` (not of a macro's variable).
    fn coded<'e>(&'e self, e: &'e IdedExpr) -> Option<(&'e str, &'e [String])> {
        match &e.expr {
            Expr::Ident(n) if !self.locals.iter().any(|(l, _)| l == n) => {
                self.codes.get(n).map(|c| (n.as_str(), c.as_slice()))
            }
            _ => None,
        }
    }

    fn codes_compared(&self, f: &str, args: &[IdedExpr]) -> Result<(), String> {
        let known = |item: &str, codes: &[String], lit: &str| -> Result<(), String> {
            if codes.iter().any(|c| c == lit) {
                Ok(())
            } else {
                Err(format!(
                    "`{lit}` is not a code of `{item}` (its codes: {})",
                    codes.join(", ")
                ))
            }
        };
        match (f, args) {
            (op::EQUALS | op::NOT_EQUALS, [a, b]) => {
                for (x, y) in [(a, b), (b, a)] {
                    if let (Some((item, codes)), Some(lit)) = (self.coded(x), text_literal(y)) {
                        known(item, codes, lit)?;
                    }
                }
                Ok(())
            }
            (op::IN, [x, list]) => {
                if let (Some(lit), Some((item, codes))) = (text_literal(x), self.coded(list)) {
                    known(item, codes, lit)?;
                }
                if let (Some((item, codes)), Expr::List(l)) = (self.coded(x), &list.expr) {
                    for lit in l.elements.iter().filter_map(text_literal) {
                        known(item, codes, lit)?;
                    }
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn name(&mut self, name: &str) -> R {
        if let Some((_, t)) = self.locals.iter().rev().find(|(n, _)| n == name) {
            return Ok(t.clone());
        }
        match self.names.get(name) {
            Some(t) => {
                self.reads.insert(name.to_owned());
                Ok(t.clone())
            }
            None => Err(format!("unknown item or constant `{name}`")),
        }
    }

    fn call(&mut self, f: &str, target: Option<Ty>, a: &[Ty]) -> R {
        let bad = |what: &str| -> R { Err(what.to_owned()) };
        let arith = |name: &str, a: &Ty, b: &Ty| -> R {
            match (a, b) {
                (Ty::Dyn, t) | (t, Ty::Dyn) => Ok(t.clone()),
                (Ty::Int, Ty::Int) => Ok(Ty::Int),
                (Ty::Double, Ty::Double) => Ok(Ty::Double),
                (Ty::Int, Ty::Double) | (Ty::Double, Ty::Int) => Err(format!(
                    "`{name}` of an int and a double: CEL does not convert; write the number with a point (2.0) or use double()"
                )),
                (x, y) => Err(format!("`{name}` does not apply to {x} and {y}")),
            }
        };
        match (f, target.as_ref(), a) {
            (op::LOGICAL_AND | op::LOGICAL_OR, None, [x, y]) => {
                for t in [x, y] {
                    if !t.fits(&Ty::Bool) {
                        return bad(&format!("`&&` and `||` take bools, not {t}"));
                    }
                }
                Ok(Ty::Bool)
            }
            (op::LOGICAL_NOT | op::NOT_STRICTLY_FALSE, None, [x]) => {
                if x.fits(&Ty::Bool) {
                    Ok(Ty::Bool)
                } else {
                    bad(&format!("`!` takes a bool, not {x}"))
                }
            }
            (op::CONDITIONAL, None, [c, x, y]) => {
                if !c.fits(&Ty::Bool) {
                    return bad(&format!("the condition of `? :` is a {c}, not a bool"));
                }
                x.unify(y)
                    .ok_or_else(|| format!("the branches of `? :` are {x} and {y}"))
            }
            (op::NEGATE, None, [x]) => match x {
                Ty::Int | Ty::Double | Ty::Duration | Ty::Dyn => Ok(x.clone()),
                t => bad(&format!("`-` does not apply to {t}")),
            },
            (op::ADD, None, [x, y]) => match (x, y) {
                (Ty::String, Ty::String) => Ok(Ty::String),
                (Ty::List(_), Ty::List(_)) => x
                    .unify(y)
                    .ok_or_else(|| format!("`+` of lists of {x} and {y}")),
                (Ty::Timestamp, Ty::Duration) | (Ty::Duration, Ty::Timestamp) => Ok(Ty::Timestamp),
                (Ty::Duration, Ty::Duration) => Ok(Ty::Duration),
                _ => arith("+", x, y),
            },
            (op::SUBSTRACT, None, [x, y]) => match (x, y) {
                (Ty::Timestamp, Ty::Timestamp) => Ok(Ty::Duration),
                (Ty::Timestamp, Ty::Duration) => Ok(Ty::Timestamp),
                (Ty::Duration, Ty::Duration) => Ok(Ty::Duration),
                _ => arith("-", x, y),
            },
            (op::MULTIPLY, None, [x, y]) => arith("*", x, y),
            (op::DIVIDE, None, [x, y]) => arith("/", x, y),
            (op::MODULO, None, [x, y]) => match arith("%", x, y)? {
                Ty::Double => bad("`%` applies to ints only"),
                t => Ok(t),
            },
            (op::LESS | op::LESS_EQUALS | op::GREATER | op::GREATER_EQUALS, None, [x, y]) => {
                let ordered = match (x, y) {
                    (a, b) if a.numeric() && b.numeric() => true,
                    (Ty::Dyn, _) | (_, Ty::Dyn) => true,
                    (Ty::String, Ty::String)
                    | (Ty::Timestamp, Ty::Timestamp)
                    | (Ty::Duration, Ty::Duration)
                    | (Ty::Bool, Ty::Bool) => true,
                    _ => false,
                };
                if ordered {
                    Ok(Ty::Bool)
                } else {
                    bad(&format!("cannot order {x} and {y}"))
                }
            }
            (op::EQUALS | op::NOT_EQUALS, None, [x, y]) => {
                if x.comparable(y) {
                    Ok(Ty::Bool)
                } else {
                    bad(&format!("compares a {x} with a {y}: never equal"))
                }
            }
            (op::IN, None, [x, y]) => match y {
                Ty::List(t) if x.comparable(t) => Ok(Ty::Bool),
                Ty::List(t) => bad(&format!("looks for a {x} in a list of {t}")),
                Ty::Map | Ty::Dyn => Ok(Ty::Bool),
                t => bad(&format!("`in` needs a list, not a {t}")),
            },
            (op::INDEX, None, [x, i]) => match x {
                Ty::List(t) if i.fits(&Ty::Int) => Ok((**t).clone()),
                Ty::List(_) => bad(&format!("a list index is an int, not a {i}")),
                Ty::Map | Ty::Dyn => Ok(Ty::Dyn),
                t => bad(&format!("cannot index a {t}")),
            },
            ("size", None, [x]) | ("size", Some(x), []) => match x {
                Ty::String | Ty::List(_) | Ty::Map | Ty::Dyn => Ok(Ty::Int),
                t => bad(&format!("size() of a {t}")),
            },
            ("int", None, [x]) => match x {
                Ty::Int | Ty::Double | Ty::String | Ty::Timestamp | Ty::Dyn => Ok(Ty::Int),
                t => bad(&format!("int() of a {t}")),
            },
            ("double", None, [x]) => match x {
                Ty::Int | Ty::Double | Ty::String | Ty::Dyn => Ok(Ty::Double),
                t => bad(&format!("double() of a {t}")),
            },
            ("string", None, [_]) => Ok(Ty::String),
            ("matches", None, [Ty::String | Ty::Dyn, Ty::String | Ty::Dyn]) => Ok(Ty::Bool),
            ("timestamp", None, [Ty::String | Ty::Dyn]) => Ok(Ty::Timestamp),
            ("duration", None, [Ty::String | Ty::Dyn]) => Ok(Ty::Duration),
            (
                "contains" | "startsWith" | "endsWith" | "matches",
                Some(Ty::String | Ty::Dyn),
                [Ty::String | Ty::Dyn],
            ) => Ok(Ty::Bool),
            (
                "getFullYear" | "getMonth" | "getDate" | "getDayOfMonth" | "getDayOfWeek"
                | "getDayOfYear",
                Some(Ty::Timestamp | Ty::Dyn),
                [] | [Ty::String],
            ) => Ok(Ty::Int),
            (
                "getHours" | "getMinutes" | "getSeconds",
                Some(Ty::Timestamp | Ty::Duration | Ty::Dyn),
                [] | [Ty::String],
            ) => Ok(Ty::Int),
            _ => {
                let known = [
                    "size",
                    "int",
                    "double",
                    "string",
                    "timestamp",
                    "duration",
                    "contains",
                    "startsWith",
                    "endsWith",
                    "matches",
                    "getFullYear",
                    "getMonth",
                    "getDate",
                    "getDayOfMonth",
                    "getDayOfWeek",
                    "getDayOfYear",
                    "getHours",
                    "getMinutes",
                    "getSeconds",
                ];
                let shown = f.trim_matches('_').replace('_', " ");
                if known.contains(&f) {
                    let on = target.map(|t| format!(" on a {t}")).unwrap_or_default();
                    let with: Vec<String> = a.iter().map(Ty::to_string).collect();
                    bad(&format!("`{f}`{on} does not take ({})", with.join(", ")))
                } else if f.starts_with('_') || f.starts_with('@') {
                    bad(&format!("`{shown}` does not apply here"))
                } else {
                    bad(&format!("unknown function `{f}`"))
                }
            }
        }
    }
}

/// A regular expression given to `matches` as a literal compiles, or the definition does not
/// load (the crate's own engine compiles it, as it will when the expression runs).
fn valid_pattern(pattern: &str) -> Result<(), String> {
    let mut ctx = cel::Context::default();
    ctx.add_variable_from_value("pattern", pattern.to_owned());
    match cel::Program::compile("''.matches(pattern)").map(|p| p.execute(&ctx)) {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!(
            "the regular expression `{pattern}` does not compile: {e}"
        )),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> HashMap<String, Ty> {
        [
            ("celsius", Ty::Double),
            ("grade", Ty::Int),
            ("serious", Ty::Bool),
            ("outcome", Ty::String),
            ("criteria", Ty::List(Box::new(Ty::String))),
            ("measured_at", Ty::Timestamp),
            ("end_date", Ty::String),
            ("threshold", Ty::Double),
        ]
        .into_iter()
        .map(|(n, t)| (n.to_owned(), t))
        .collect()
    }

    fn ty(s: &str) -> Result<Ty, String> {
        check(s, &names()).map(|c| c.ty)
    }

    fn err(s: &str) -> String {
        ty(s).err().unwrap_or_default()
    }

    #[test]
    fn well_typed_expressions() {
        assert_eq!(ty("celsius > threshold"), Ok(Ty::Bool));
        assert_eq!(ty("celsius > 38"), Ok(Ty::Bool), "comparison mixes numbers");
        assert_eq!(ty("(grade == 5) == (outcome == 'fatal')"), Ok(Ty::Bool));
        assert_eq!(
            ty("serious ? size(criteria) > 0 : criteria == []"),
            Ok(Ty::Bool)
        );
        assert_eq!(ty("'death' in criteria"), Ok(Ty::Bool));
        assert_eq!(
            ty("criteria.all(c, c != 'death') || grade == 5"),
            Ok(Ty::Bool)
        );
        assert_eq!(ty("celsius * 2.0 + 1.5"), Ok(Ty::Double));
        assert_eq!(ty("grade * 2 - 1"), Ok(Ty::Int));
        assert_eq!(
            ty("outcome in ['recovered', 'fatal'] ? end_date != null : true"),
            Ok(Ty::Bool)
        );
        assert_eq!(ty("measured_at.getHours() < 12"), Ok(Ty::Bool));
        let c = check("celsius > threshold && serious", &names()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.reads, vec!["celsius", "serious", "threshold"]);
    }

    #[test]
    fn unknown_names_and_functions_are_errors() {
        let e = err("celsuis > 38.0");
        assert!(e.contains("unknown item or constant `celsuis`"), "{e}");
        let e = err("frobnicate(grade)");
        assert!(e.contains("unknown function `frobnicate`"), "{e}");
        let e = err("vitals.celsius > 38.0");
        assert!(e.contains("`vitals`"), "{e}");
        // a comprehension's variable is local to it
        let e = err("criteria.all(c, c != '') && c == ''");
        assert!(e.contains("`c`"), "{e}");
    }

    #[test]
    fn type_errors_are_caught_at_load() {
        let e = err("celsius * 2");
        assert!(e.contains("write the number with a point"), "{e}");
        assert!(err("grade == 'five'").contains("never equal"));
        assert!(err("serious && grade").contains("take bools"));
        assert!(err("grade in criteria").contains("list of string"));
        assert!(err("size(grade) > 1").contains("size()"));
    }

    #[test]
    fn codes_compared_with_choice_items_must_exist() {
        let codes: HashMap<String, Vec<String>> = [
            ("outcome", vec!["recovered", "fatal"]),
            ("criteria", vec!["death", "hospitalisation"]),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.into_iter().map(str::to_owned).collect()))
        .collect();
        let coded = |s: &str| check_coded(s, &names(), &codes, None).map(|c| c.ty);
        assert_eq!(
            coded("outcome == 'fatal' || 'death' in criteria"),
            Ok(Ty::Bool)
        );
        assert_eq!(coded("outcome in ['recovered', 'fatal']"), Ok(Ty::Bool));
        let e = coded("outcome == 'fatl'").err().unwrap_or_default();
        assert!(
            e.contains("`fatl` is not a code of `outcome` (its codes: recovered, fatal)"),
            "{e}"
        );
        assert!(coded("'fatal' != outcome && 'deaht' in criteria").is_err());
        assert!(coded("outcome in ['recovered', 'recoverd']").is_err());
        // a macro's variable is not the item
        assert_eq!(coded("criteria.all(outcome, outcome != 'x')"), Ok(Ty::Bool));
        // what a derived choice can give
        let allowed = ["low".to_owned(), "high".to_owned()];
        let derived = |s: &str| check_coded(s, &names(), &codes, Some(&allowed)).map(|c| c.ty);
        assert_eq!(
            derived("grade > 2 ? 'high' : (grade > 0 ? 'low' : null)"),
            Ok(Ty::String)
        );
        let e = derived("grade > 2 ? 'hihg' : 'low'")
            .err()
            .unwrap_or_default();
        assert!(
            e.contains("`hihg` is not a code of the item's code list"),
            "{e}"
        );
    }

    #[test]
    fn a_regular_expression_must_compile() {
        assert_eq!(ty("outcome.matches('^[0-9]{8}$')"), Ok(Ty::Bool));
        let e = err("outcome.matches('^[0-9]{8')");
        assert!(e.contains("does not compile"), "{e}");
    }

    #[test]
    fn broken_expressions_do_not_parse() {
        let e = err("celsius > ");
        assert!(e.starts_with("cannot parse the expression"), "{e}");
        assert!(ty("(grade == 5").is_err());
    }

    /// What the checker accepts, the interpreter runs: each function the checker knows is
    /// evaluated once by the crate (an upgrade that dropped one would fail here).
    #[test]
    fn the_interpreter_runs_what_the_checker_accepts() {
        let empty = HashMap::new();
        for s in [
            "size('ab') == 2",
            "size([1, 2]) == 2",
            "'ab'.size() == 2",
            "int(2.5) == 2",
            "double(2) == 2.0",
            "string(2) == '2'",
            "'abc'.contains('b') && 'abc'.startsWith('a') && 'abc'.endsWith('c')",
            "'10012345'.matches('^[0-9]{8}$') && !matches('1001234x', '^[0-9]{8}$')",
            "timestamp('2026-11-05T10:30:00Z').getHours() == 10",
            "timestamp('2026-11-05T10:30:00Z').getFullYear() == 2026",
            "timestamp('2026-11-05T10:30:00Z') - timestamp('2026-11-04T10:30:00Z') == duration('24h')",
            "(timestamp('2026-11-07T00:00:00Z') - timestamp('2026-11-05T00:00:00Z')).getHours() / 24 == 2",
            "[1, 2].all(x, x > 0) && [1, 2].exists(x, x == 2)",
            "2 in [1, 2] && !(3 in [1, 2])",
            "1 < 1.5 && 2.0 == 2",
        ] {
            assert_eq!(check(s, &empty).map(|c| c.ty), Ok(Ty::Bool), "{s}");
            let program = cel::Program::compile(s).unwrap_or_else(|e| panic!("{s}: {e}"));
            let got = program.execute(&cel::Context::default());
            assert_eq!(got, Ok(cel::Value::Bool(true)), "{s}");
        }
        // and what it refuses, the interpreter refuses too
        let program = cel::Program::compile("2.0 * 2 == 4.0").unwrap_or_else(|e| panic!("{e}"));
        assert!(program.execute(&cel::Context::default()).is_err());
    }
}
