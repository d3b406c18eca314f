//! Whether a changed definition may be published over the newest published one: a change
//! that would lose or recode collected data is refused, naming each conflict; any other
//! change (new forms, items, visits and codes, labels, ranges) is accepted. Compared on the
//! published JSON (what `study_versions.definition` keeps), so an old version is read as it
//! was published, whatever the loader accepts today.

use std::collections::BTreeSet;
use std::fmt;

use serde_json::Value;

/// The part of a definition that collected data depends on: forms, their items' types and
/// their codes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Shape {
    pub forms: Vec<FormShape>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormShape {
    pub id: String,
    pub items: Vec<ItemShape>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemShape {
    pub id: String,
    /// `text`, `integer`, `decimal`, ... as the JSON names it
    pub kind: String,
    pub decimals: Option<u64>,
    pub max_length: Option<u64>,
    /// the codes a choice or choices item allows
    pub codes: Vec<String>,
}

impl Shape {
    /// From the definition's JSON (`DefinitionView`).
    pub fn from_json(v: &Value) -> Result<Self, String> {
        let forms = v["forms"]
            .as_array()
            .ok_or("the published definition has no forms")?;
        let mut out = Vec::new();
        for f in forms {
            let id = f["id"].as_str().ok_or("a published form has no id")?;
            let mut items = Vec::new();
            for i in f["items"].as_array().into_iter().flatten() {
                items.push(ItemShape {
                    id: i["id"]
                        .as_str()
                        .ok_or_else(|| format!("an item of form `{id}` has no id"))?
                        .to_owned(),
                    kind: i["type"].as_str().unwrap_or_default().to_owned(),
                    decimals: i["decimals"].as_u64(),
                    max_length: i["max_length"].as_u64(),
                    codes: i["choices"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|c| c["code"].as_str().map(str::to_owned))
                        .collect(),
                });
            }
            out.push(FormShape {
                id: id.to_owned(),
                items,
            });
        }
        Ok(Self { forms: out })
    }

    pub fn form(&self, id: &str) -> Option<&FormShape> {
        self.forms.iter().find(|f| f.id == id)
    }

    /// The (form, item) pairs of choice and choices items: whose codes a usage query reads.
    pub fn coded_items(&self) -> Vec<(String, String)> {
        self.forms
            .iter()
            .flat_map(|f| {
                f.items
                    .iter()
                    .filter(|i| !i.codes.is_empty())
                    .map(|i| (f.id.clone(), i.id.clone()))
            })
            .collect()
    }
}

impl FormShape {
    pub fn item(&self, id: &str) -> Option<&ItemShape> {
        self.items.iter().find(|i| i.id == id)
    }
}

/// What collected data holds, as the database found it.
#[derive(Debug, Clone, Default)]
pub struct Usage {
    /// forms with at least one record (entered in error included: its values stay stored)
    pub forms: BTreeSet<String>,
    /// (form, item) pairs with a value in some record
    pub items: BTreeSet<(String, String)>,
    /// (form, item, code) used by a choice or choices value
    pub codes: BTreeSet<(String, String, String)>,
}

impl Usage {
    fn form(&self, form: &str) -> bool {
        self.forms.contains(form)
    }
    fn item(&self, form: &str, item: &str) -> bool {
        self.items.contains(&(form.to_owned(), item.to_owned()))
    }
    fn code(&self, form: &str, item: &str, code: &str) -> bool {
        self.codes
            .contains(&(form.to_owned(), item.to_owned(), code.to_owned()))
    }
}

/// One change that collected data forbids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    pub form: String,
    pub item: Option<String>,
    pub message: String,
}

impl fmt::Display for Conflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.item {
            Some(i) => write!(f, "{}.{}: {}", self.form, i, self.message),
            None => write!(f, "{}: {}", self.form, self.message),
        }
    }
}

/// Every change from `old` to `new` that would lose or recode data `usage` says exists.
pub fn conflicts(old: &Shape, new: &Shape, usage: &Usage) -> Vec<Conflict> {
    let mut out = Vec::new();
    let mut push = |form: &str, item: Option<&str>, message: String| {
        out.push(Conflict {
            form: form.to_owned(),
            item: item.map(str::to_owned),
            message,
        })
    };
    for of in &old.forms {
        let Some(nf) = new.form(&of.id) else {
            if usage.form(&of.id) {
                push(
                    &of.id,
                    None,
                    "the form holds records and cannot be removed".into(),
                );
            }
            continue;
        };
        for oi in &of.items {
            if !usage.item(&of.id, &oi.id) {
                continue;
            }
            let Some(ni) = nf.item(&oi.id) else {
                push(
                    &of.id,
                    Some(&oi.id),
                    "the item holds data and cannot be removed".into(),
                );
                continue;
            };
            if ni.kind != oi.kind {
                push(
                    &of.id,
                    Some(&oi.id),
                    format!(
                        "the item holds data: its type cannot change from {} to {}",
                        oi.kind, ni.kind
                    ),
                );
                continue;
            }
            if let (Some(o), Some(n)) = (oi.decimals, ni.decimals) {
                if n < o {
                    push(
                        &of.id,
                        Some(&oi.id),
                        format!("the item holds data: fewer digits after the point ({o} to {n}) would round it"),
                    );
                }
            }
            if let (Some(o), Some(n)) = (oi.max_length, ni.max_length) {
                if n < o {
                    push(
                        &of.id,
                        Some(&oi.id),
                        format!("the item holds data: a shorter maximum length ({o} to {n}) would cut it"),
                    );
                }
            }
            for code in &oi.codes {
                if !ni.codes.contains(code) && usage.code(&of.id, &oi.id, code) {
                    push(
                        &of.id,
                        Some(&oi.id),
                        format!("the code `{code}` is used: it cannot be removed or recoded"),
                    );
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn shape(v: Value) -> Shape {
        Shape::from_json(&v).unwrap_or_else(|e| panic!("{e}"))
    }

    fn base() -> Value {
        json!({"forms": [
            {"id": "labs", "items": [
                {"id": "crp", "type": "decimal", "decimals": 1},
                {"id": "note", "type": "text", "max_length": 200},
                {"id": "site", "type": "choice", "choices": [{"code": "KNEE", "label": "Knee"}, {"code": "MCP", "label": "MCP"}]},
                {"id": "unused", "type": "integer"}]},
            {"id": "echo", "items": [{"id": "z", "type": "decimal", "decimals": 2}]}]})
    }

    fn usage() -> Usage {
        let mut u = Usage::default();
        u.forms.insert("labs".into());
        for i in ["crp", "note", "site"] {
            u.items.insert(("labs".into(), i.into()));
        }
        u.codes
            .insert(("labs".into(), "site".into(), "KNEE".into()));
        u
    }

    fn edit(f: impl FnOnce(&mut Value)) -> Shape {
        let mut v = base();
        f(&mut v);
        shape(v)
    }

    fn messages(c: &[Conflict]) -> Vec<String> {
        c.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn the_same_definition_has_no_conflict() {
        assert!(conflicts(&shape(base()), &shape(base()), &usage()).is_empty());
    }

    #[test]
    fn safe_changes_are_accepted() {
        let new = edit(|v| {
            let labs = &mut v["forms"][0];
            labs["items"][0]["decimals"] = json!(2); // more digits: nothing rounded
            labs["items"][1]["max_length"] = json!(400);
            labs["items"][2]["choices"][0]["label"] = json!("Knee joint");
            labs["items"][2]["choices"]
                .as_array_mut()
                .expect("a list")
                .push(json!({"code": "ANKLE", "label": "Ankle"}));
            labs["items"]
                .as_array_mut()
                .expect("a list")
                .push(json!({"id": "il6", "type": "decimal", "decimals": 1}));
            // an item and a code nobody used, and a form without records, may go
            labs["items"].as_array_mut().expect("a list").remove(3);
            labs["items"][2]["choices"]
                .as_array_mut()
                .expect("a list")
                .remove(1);
            v["forms"].as_array_mut().expect("a list").remove(1);
            v["forms"]
                .as_array_mut()
                .expect("a list")
                .push(json!({"id": "vas", "items": []}));
        });
        assert_eq!(
            messages(&conflicts(&shape(base()), &new, &usage())),
            Vec::<String>::new()
        );
    }

    #[test]
    fn a_form_with_records_cannot_be_removed() {
        let new = edit(|v| {
            v["forms"].as_array_mut().expect("a list").remove(0);
        });
        assert_eq!(
            messages(&conflicts(&shape(base()), &new, &usage())),
            ["labs: the form holds records and cannot be removed"]
        );
    }

    #[test]
    fn each_conflict_is_named() {
        let new = edit(|v| {
            let items = v["forms"][0]["items"].as_array_mut().expect("a list");
            items[0]["type"] = json!("integer");
            items[1]["max_length"] = json!(100);
            items[2]["choices"]
                .as_array_mut()
                .expect("a list")
                .remove(0);
            items.remove(3); // unused: fine
        });
        assert_eq!(
            messages(&conflicts(&shape(base()), &new, &usage())),
            [
                "labs.crp: the item holds data: its type cannot change from decimal to integer",
                "labs.note: the item holds data: a shorter maximum length (200 to 100) would cut it",
                "labs.site: the code `KNEE` is used: it cannot be removed or recoded",
            ]
        );
    }

    #[test]
    fn removing_an_item_or_rounding_it_is_refused() {
        let new = edit(|v| {
            let items = v["forms"][0]["items"].as_array_mut().expect("a list");
            items[0]["decimals"] = json!(0);
            items.remove(1);
        });
        assert_eq!(
            messages(&conflicts(&shape(base()), &new, &usage())),
            [
                "labs.crp: the item holds data: fewer digits after the point (1 to 0) would round it",
                "labs.note: the item holds data and cannot be removed",
            ]
        );
    }

    #[test]
    fn a_type_change_of_an_empty_item_is_accepted() {
        let new = edit(|v| v["forms"][0]["items"][3]["type"] = json!("decimal"));
        assert!(conflicts(&shape(base()), &new, &usage()).is_empty());
    }

    #[test]
    fn the_published_json_of_a_study_reads_as_its_shape() {
        let text = include_str!("../../../config/studies/kawasaki.toml");
        let d = super::super::parse("kawasaki", text).unwrap_or_else(|e| panic!("{e:?}"));
        let json = serde_json::to_value(super::super::view::DefinitionView::of(&d))
            .unwrap_or_else(|e| panic!("{e}"));
        let s = Shape::from_json(&json).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.forms.len(), d.forms.len());
        let temp = s.form("temperature").expect("temperature");
        assert_eq!(temp.item("celsius").expect("celsius").decimals, Some(1));
        assert!(temp
            .item("method")
            .expect("method")
            .codes
            .contains(&"rectal".to_owned()));
        // every form, item and code holding data
        let mut all = Usage::default();
        for f in &s.forms {
            all.forms.insert(f.id.clone());
            for i in &f.items {
                all.items.insert((f.id.clone(), i.id.clone()));
                for c in &i.codes {
                    all.codes.insert((f.id.clone(), i.id.clone(), c.clone()));
                }
            }
        }
        assert!(conflicts(&s, &s, &all).is_empty());
    }
}
