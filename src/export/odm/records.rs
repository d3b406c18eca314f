//! The forms of the study definition that form records store, in the ODM file: after
//! today's forms, each visit that lists such forms is a study event `SE.V.<visit>` and the
//! forms not tied to a visit share `SE.LOGS`; a form is `F.<form>` with one repeating item
//! group `IG.<form>` (ItemGroupRepeatKey = record id, as today's forms), its items
//! `IT.<form>.<item>` with their ODM data type, units `MU.<unit>` and code lists
//! `CL.<codelist>`. Values as stored: decimals exact at the item's digits, several codes
//! separated by `;`.

use std::io;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Jsonb, Nullable, Text, Timestamptz};
use serde_json::Value;

use super::{item_data, json_text, location_oid, timestamp, user_oid, Xml};
use crate::domain::study::{Definition, Form, ItemType, Repeat};
use crate::export::subjects::SubjectInfo;
use crate::export::{stream_rows, Job, Stop};

const LOGS: &str = "SE.LOGS";

fn form_oid(form: &str) -> String {
    format!("F.{form}")
}
fn group_oid(form: &str) -> String {
    format!("IG.{form}")
}
fn item_oid(form: &str, item: &str) -> String {
    format!("IT.{form}.{item}")
}
fn codelist_oid(id: &str) -> String {
    format!("CL.{id}")
}
fn unit_oid(unit: &str) -> String {
    format!("MU.{unit}")
}

/// A study event of the definition's record forms.
struct Event<'a> {
    oid: String,
    name: &'a str,
    kind: &'static str,
    forms: Vec<&'a Form>,
}

fn events(def: &Definition) -> Vec<Event<'_>> {
    let mut out: Vec<Event<'_>> = def
        .visits
        .iter()
        .map(|v| Event {
            oid: format!("SE.V.{}", v.id),
            name: &v.name,
            kind: if v.unscheduled {
                "Unscheduled"
            } else {
                "Scheduled"
            },
            forms: v.forms.iter().filter_map(|f| def.record_form(f)).collect(),
        })
        .filter(|e| !e.forms.is_empty())
        .collect();
    let logs: Vec<&Form> = def
        .record_forms()
        .filter(|f| f.repeat != Repeat::PerVisit)
        .collect();
    if !logs.is_empty() {
        out.push(Event {
            oid: LOGS.into(),
            name: "Forms not tied to a visit",
            kind: "Common",
            forms: logs,
        });
    }
    out
}

/// The units of the record forms' items, each once, in definition order.
fn units(def: &Definition) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    for u in def
        .record_forms()
        .flat_map(|f| &f.items)
        .filter_map(|i| i.unit.as_deref())
    {
        if !out.contains(&u) {
            out.push(u);
        }
    }
    out
}

/// In BasicDefinitions, after today's units.
pub(super) fn write_units(x: &mut Xml<'_>, def: &Definition) -> io::Result<()> {
    for u in units(def) {
        x.open("MeasurementUnit", &[("OID", &unit_oid(u)), ("Name", u)])?;
        x.translated("Symbol", u)?;
        x.close("MeasurementUnit")?;
    }
    Ok(())
}

/// In Protocol, after today's events (numbered from `after` + 1).
pub(super) fn write_event_refs(x: &mut Xml<'_>, def: &Definition, after: usize) -> io::Result<()> {
    for (n, e) in events(def).iter().enumerate() {
        let order = (after + n + 1).to_string();
        x.empty(
            "StudyEventRef",
            &[
                ("StudyEventOID", &e.oid),
                ("OrderNumber", &order),
                ("Mandatory", "No"),
            ],
        )?;
    }
    Ok(())
}

pub(super) fn write_event_defs(x: &mut Xml<'_>, def: &Definition) -> io::Result<()> {
    for e in events(def) {
        x.open(
            "StudyEventDef",
            &[
                ("OID", &e.oid),
                ("Name", e.name),
                ("Repeating", "No"),
                ("Type", e.kind),
            ],
        )?;
        for (n, f) in e.forms.iter().enumerate() {
            let order = (n + 1).to_string();
            x.empty(
                "FormRef",
                &[
                    ("FormOID", &form_oid(&f.id)),
                    ("OrderNumber", &order),
                    ("Mandatory", "No"),
                ],
            )?;
        }
        x.close("StudyEventDef")?;
    }
    Ok(())
}

pub(super) fn write_form_defs(x: &mut Xml<'_>, def: &Definition) -> io::Result<()> {
    for f in def.record_forms() {
        x.open(
            "FormDef",
            &[
                ("OID", &form_oid(&f.id)),
                ("Name", &f.name),
                ("Repeating", "No"),
            ],
        )?;
        x.empty(
            "ItemGroupRef",
            &[("ItemGroupOID", &group_oid(&f.id)), ("Mandatory", "Yes")],
        )?;
        x.close("FormDef")?;
    }
    Ok(())
}

pub(super) fn write_group_defs(x: &mut Xml<'_>, def: &Definition) -> io::Result<()> {
    for f in def.record_forms() {
        let mut attrs = vec![
            ("OID", group_oid(&f.id)),
            ("Name", f.name.clone()),
            ("Repeating", "Yes".into()),
        ];
        if let Some(s) = &f.sdtm {
            attrs.push(("Domain", s.domain.clone()));
        }
        let attrs: Vec<(&str, &str)> = attrs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        x.open("ItemGroupDef", &attrs)?;
        for (n, i) in f.items.iter().enumerate() {
            let order = (n + 1).to_string();
            x.empty(
                "ItemRef",
                &[
                    ("ItemOID", &item_oid(&f.id, &i.id)),
                    ("OrderNumber", &order),
                    ("Mandatory", if i.required { "Yes" } else { "No" }),
                ],
            )?;
        }
        x.close("ItemGroupDef")?;
    }
    Ok(())
}

/// ODM 1.3.2 data type of an item. Several codes have none in ODM: text, the codes
/// separated by `;`.
fn data_type(t: &ItemType) -> &'static str {
    match t {
        ItemType::Text { .. } | ItemType::Choice { .. } | ItemType::Choices { .. } => "text",
        ItemType::Integer => "integer",
        ItemType::Decimal { .. } => "float",
        ItemType::Boolean => "boolean",
        ItemType::Date => "date",
        ItemType::PartialDate => "partialDate",
        ItemType::DateTime => "datetime",
        ItemType::Time => "time",
    }
}

pub(super) fn write_item_defs(x: &mut Xml<'_>, def: &Definition) -> io::Result<()> {
    for f in def.record_forms() {
        for i in &f.items {
            let oid = item_oid(&f.id, &i.id);
            let mut attrs = vec![
                ("OID", oid.as_str()),
                ("Name", i.id.as_str()),
                ("DataType", data_type(&i.kind)),
            ];
            let length = match &i.kind {
                ItemType::Text { max_length } => Some(max_length.to_string()),
                _ => None,
            };
            let digits = match &i.kind {
                ItemType::Decimal { decimals } => Some(decimals.to_string()),
                _ => None,
            };
            if let Some(l) = &length {
                attrs.push(("Length", l));
            }
            if let Some(d) = &digits {
                attrs.push(("SignificantDigits", d));
            }
            x.open("ItemDef", &attrs)?;
            let label = match &i.kind {
                ItemType::Choices { codelist } => format!(
                    "{} (codes of {} separated by ;)",
                    i.label,
                    codelist_oid(codelist)
                ),
                _ => i.label.clone(),
            };
            x.translated("Description", &label)?;
            if let Some(u) = &i.unit {
                x.empty(
                    "MeasurementUnitRef",
                    &[("MeasurementUnitOID", &unit_oid(u))],
                )?;
            }
            if let ItemType::Choice { codelist } = &i.kind {
                x.empty("CodeListRef", &[("CodeListOID", &codelist_oid(codelist))])?;
            }
            x.close("ItemDef")?;
        }
    }
    Ok(())
}

/// The code lists the record forms' items use.
pub(super) fn write_codelists(x: &mut Xml<'_>, def: &Definition) -> io::Result<()> {
    let used: Vec<&str> = def
        .record_forms()
        .flat_map(|f| &f.items)
        .filter_map(|i| i.kind.codelist())
        .collect();
    for c in def
        .codelists
        .iter()
        .filter(|c| used.contains(&c.id.as_str()))
    {
        x.open(
            "CodeList",
            &[
                ("OID", &codelist_oid(&c.id)),
                ("Name", c.name.as_deref().unwrap_or(&c.id)),
                ("DataType", "text"),
            ],
        )?;
        for code in &c.codes {
            x.open("CodeListItem", &[("CodedValue", &code.code)])?;
            x.translated("Decode", &code.label)?;
            x.close("CodeListItem")?;
        }
        x.close("CodeList")?;
    }
    Ok(())
}

/// A stored value as ODM text: a time of day with its seconds, as ODM's `time` has them.
fn value_text(kind: &ItemType, v: &Value) -> Option<String> {
    let s = json_text(v)?;
    match kind {
        ItemType::Time if s.len() == 5 => Some(format!("{s}:00")),
        _ => Some(s),
    }
}

/// Where a record goes: its event's and its form's positions in [`events`].
fn place(events: &[Event<'_>], form: &str, visit: Option<&str>) -> Option<(usize, usize)> {
    let oid = match visit {
        Some(v) => format!("SE.V.{v}"),
        None => LOGS.to_owned(),
    };
    let e = events.iter().position(|e| e.oid == oid)?;
    let f = events[e].forms.iter().position(|f| f.id == form)?;
    Some((e, f))
}

/// A change of a record in a Transactional file, or its current values in a Snapshot.
#[derive(Queryable)]
struct Entry {
    record_id: i64,
    form_id: String,
    visit_id: Option<String>,
    values: Option<Value>,
    audit: Change,
}

/// The audit row of a change (all empty in a Snapshot).
#[derive(Queryable)]
struct Change {
    id: Option<i64>,
    action: Option<String>,
    actor: Option<i64>,
    at: Option<DateTime<Utc>>,
    reason: Option<String>,
    site: Option<String>,
}

fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The subject's form records (current values, those entered in error left out), or with
/// `audit` every audited change of them, as ItemGroupData in their events and forms.
pub(super) fn write_subject(
    conn: &mut PgConnection,
    x: &mut Xml<'_>,
    job: &Job,
    s: &SubjectInfo,
    rows: &mut u64,
) -> Result<(), Stop> {
    let def = &job.study;
    let study = literal(&def.study.id);
    let sql = if job.filters.audit {
        format!(
            "r.id, r.form_id, r.visit_id, a.new_values->'values', a.id, a.action, a.actor_id, \
             a.occurred_at, a.reason, st.code \
             FROM audit_log a JOIN form_records r ON r.id = a.record_id \
             JOIN study_versions sv ON sv.id = r.study_version_id \
             LEFT JOIN sites st ON st.id = a.site_id \
             WHERE a.entity_table = 'form_records' AND a.action IN ('create', 'update', 'delete') \
             AND r.subject_id = {id} AND sv.study_id = {study} ORDER BY r.id, a.id",
            id = s.id
        )
    } else {
        format!(
            "r.id, r.form_id, r.visit_id, r.values, NULL::int8, NULL::text, NULL::int8, \
             NULL::timestamptz, NULL::text, NULL::text \
             FROM form_records r JOIN study_versions sv ON sv.id = r.study_version_id \
             WHERE r.subject_id = {id} AND r.deleted_at IS NULL AND sv.study_id = {study} \
             ORDER BY r.id",
            id = s.id
        )
    };
    let events = events(def);
    let mut entries: Vec<((usize, usize), Entry)> = Vec::new();
    stream_rows::<
        (
            BigInt,
            Text,
            Nullable<Text>,
            Nullable<Jsonb>,
            (
                Nullable<BigInt>,
                Nullable<Text>,
                Nullable<BigInt>,
                Nullable<Timestamptz>,
                Nullable<Text>,
                Nullable<Text>,
            ),
        ),
        Entry,
    >(conn, &sql, |e| {
        // a form no longer in the definition has no ItemDefs to refer to
        if let Some(p) = place(&events, &e.form_id, e.visit_id.as_deref()) {
            entries.push((p, e));
        }
        Ok(())
    })?;
    // grouped by event then form; stable: records and changes keep their order
    entries.sort_by_key(|(p, _)| *p);
    let mut open: Option<(usize, usize)> = None;
    for ((ev, fo), e) in &entries {
        let event = &events[*ev];
        let form = event.forms[*fo];
        if open.map(|(oe, _)| oe) != Some(*ev) {
            if open.is_some() {
                x.close("FormData")?;
                x.close("StudyEventData")?;
            }
            x.open("StudyEventData", &[("StudyEventOID", &event.oid)])?;
            x.open("FormData", &[("FormOID", &form_oid(&form.id))])?;
        } else if open != Some((*ev, *fo)) {
            x.close("FormData")?;
            x.open("FormData", &[("FormOID", &form_oid(&form.id))])?;
        }
        open = Some((*ev, *fo));
        write_group(x, s, form, e)?;
        *rows += 1;
    }
    if open.is_some() {
        x.close("FormData")?;
        x.close("StudyEventData")?;
    }
    Ok(())
}

fn write_group(x: &mut Xml<'_>, s: &SubjectInfo, form: &Form, e: &Entry) -> io::Result<()> {
    let key = e.record_id.to_string();
    let group = group_oid(&form.id);
    let Change {
        id: audit_id,
        action,
        actor,
        at,
        reason,
        site,
    } = &e.audit;
    let mut attrs = vec![
        ("ItemGroupOID", group.as_str()),
        ("ItemGroupRepeatKey", key.as_str()),
    ];
    let tx = action.as_deref().map(|a| match a {
        "create" => "Insert",
        "delete" => "Remove",
        _ => "Update",
    });
    if let Some(t) = tx {
        attrs.push(("TransactionType", t));
    }
    x.open("ItemGroupData", &attrs)?;
    if let (Some(audit_id), Some(at)) = (audit_id, at) {
        x.open("AuditRecord", &[("EditPoint", "DataManagement")])?;
        x.empty("UserRef", &[("UserOID", &user_oid(*actor))])?;
        let site = site.as_deref().unwrap_or(&s.site_code);
        x.empty("LocationRef", &[("LocationOID", &location_oid(site))])?;
        x.text("DateTimeStamp", &[], &timestamp(*at))?;
        if let Some(r) = reason.as_deref().filter(|r| !r.is_empty()) {
            x.text("ReasonForChange", &[], r)?;
        }
        x.text("SourceID", &[], &format!("audit_log:{audit_id}"))?;
        x.close("AuditRecord")?;
    }
    if tx != Some("Remove") {
        if let Some(Value::Object(values)) = &e.values {
            for i in &form.items {
                if let Some(v) = values.get(&i.id) {
                    let text = value_text(&i.kind, v);
                    // a snapshot leaves out what has no value; a change names what it cleared
                    if text.is_some() || tx.is_some() {
                        item_data(x, &item_oid(&form.id, &i.id), text.as_deref())?;
                    }
                }
            }
        }
    }
    x.close("ItemGroupData")
}
