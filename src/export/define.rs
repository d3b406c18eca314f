//! Define-XML 2.1 for the SDTM datasets (`/exports/sdtm/{domain}.xpt`): one ItemGroupDef per
//! dataset the study exports (`sdtm::domains`) with its class, structure, keys and the XPT
//! file as its `def:leaf`; one ItemDef per variable (data type, length, label, origin); a
//! code list of the test codes of each findings dataset the definition's forms fill, decoded
//! by the items' labels. Written from the same variable lists as the datasets, so the two
//! cannot disagree. Valid against the Define-XML 2.1 schema (tests/schemas/define-2.1).

use std::io::{self, Write};

use super::odm::Xml;
use super::sdtm::{dataset_label, domains, vars};
use super::text::timestamp;
use super::xpt::{Var, VarType};
use super::{Job, Out, Stop};
use crate::domain::study::sdtm::{self as plan, Class};
use crate::domain::study::Definition;

/// The SDTM IG version the datasets follow.
const SDTMIG: &str = "3.4";

fn class_name(code: &str) -> &'static str {
    if code.starts_with("SUPP") {
        return "RELATIONSHIP";
    }
    match code {
        "DM" => "SPECIAL PURPOSE",
        "FA" => "FINDINGS ABOUT",
        other => match plan::class(other) {
            Class::Findings => "FINDINGS",
            Class::Events => "EVENTS",
            Class::Interventions => "INTERVENTIONS",
        },
    }
}

fn structure(code: &str) -> String {
    if let Some(parent) = code.strip_prefix("SUPP") {
        return format!("One record per supplemental qualifier per {parent} record");
    }
    match code {
        "DM" => "One record per subject".into(),
        other => match plan::class(other) {
            Class::Findings => "One record per test per visit per subject".into(),
            Class::Events => "One record per event per subject".into(),
            Class::Interventions => "One record per constant dosing interval per subject".into(),
        },
    }
}

/// Where a variable's values come from.
fn origin(code: &str, var: &Var, def: &Definition) -> (&'static str, &'static str) {
    let name = var.name.as_ref();
    // the forms' `sdtm.values` are assigned: only items collect
    let collected = plan::plan(def, code).is_some_and(|p| {
        p.sources
            .iter()
            .any(|s| s.item_for(name).is_some() || s.flags.iter().any(|f| f.var == name))
            || name == format!("{code}ORRES")
            || name == format!("{code}{}", plan::dtc(p.class))
    });
    if collected {
        return ("Collected", "Investigator");
    }
    let derived = name == "USUBJID"
        || name.ends_with("SEQ")
        || name.ends_with("DY") && name != "VISITDY"
        || name.ends_with("STRESC")
        || name.ends_with("STRESN");
    if derived {
        ("Derived", "Sponsor")
    } else {
        ("Assigned", "Sponsor")
    }
}

/// The ItemGroupDef OID of a dataset: Dataset-JSON's `itemGroupOID` refers to it.
pub fn item_group_oid(code: &str) -> String {
    format!("IG.{code}")
}

/// The ItemDef OID of a variable: Dataset-JSON's `itemOID` refers to it.
pub fn item_oid(code: &str, name: &str) -> String {
    format!("IT.{code}.{name}")
}

/// The MetaDataVersion OID: changes with the study definition.
pub fn metadata_version_oid(def: &Definition) -> String {
    format!("MDV.{}", def.sha256.get(..16).unwrap_or_default())
}

pub fn data_type(var: &Var) -> &'static str {
    let name = var.name.as_ref();
    match var.kind {
        VarType::Num if name.ends_with("STRESN") || name.ends_with("DOSE") => "float",
        VarType::Num => "integer",
        VarType::Char(_) if name.ends_with("DTC") => "partialDatetime",
        VarType::Char(_) => "text",
    }
}

/// The dataset's keys: the study, the subject, and the sequence number (`SUPP--`: the
/// parent record and the qualifier's name).
pub fn key_sequence(code: &str, name: &str) -> Option<u8> {
    if code.starts_with("SUPP") {
        return match name {
            "STUDYID" => Some(1),
            "RDOMAIN" => Some(2),
            "USUBJID" => Some(3),
            "IDVAR" => Some(4),
            "IDVARVAL" => Some(5),
            "QNAM" => Some(6),
            _ => None,
        };
    }
    match name {
        "STUDYID" => Some(1),
        "USUBJID" => Some(2),
        n if code != "DM" && n == format!("{code}SEQ") => Some(3),
        _ => None,
    }
}

/// A test code list's OID, when the dataset has one.
fn testcd_list(code: &str, def: &Definition, var: &str) -> Option<String> {
    let p = plan::plan(def, code)?;
    (p.class == Class::Findings && var == format!("{code}TESTCD"))
        .then(|| format!("CL.{code}.{var}"))
}

pub fn write(job: &Job, out: &mut Out) -> Result<(), Stop> {
    let def: &Definition = &job.study;
    let study = def.study.id.as_str();
    let created = timestamp(job.started);
    let file_oid = format!(
        "CASEBOOK.DEFINE.{study}.{}",
        job.started.format("%Y%m%dT%H%M%S%.6fZ")
    );
    let datasets: Vec<(String, Vec<Var>)> = domains(def)
        .iter()
        .map(|d| (d.code().to_owned(), vars(d, study, def)))
        .collect();
    let mut x = Xml { w: &mut out.sink };
    x.w.write_all(b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n")?;
    x.open(
        "ODM",
        &[
            ("xmlns", "http://www.cdisc.org/ns/odm/v1.3"),
            ("xmlns:def", "http://www.cdisc.org/ns/def/v2.1"),
            ("xmlns:xlink", "http://www.w3.org/1999/xlink"),
            ("FileType", "Snapshot"),
            ("FileOID", &file_oid),
            ("CreationDateTime", &created),
            ("ODMVersion", "1.3.2"),
            ("Originator", "Casebook"),
            ("SourceSystem", "Casebook"),
            ("SourceSystemVersion", env!("CARGO_PKG_VERSION")),
            // SDTM-style datasets of a running study, not a submission package
            ("def:Context", "Other"),
        ],
    )?;
    x.open("Study", &[("OID", study)])?;
    x.open("GlobalVariables", &[])?;
    x.text("StudyName", &[], study)?;
    x.text("StudyDescription", &[], &def.study.name)?;
    x.text("ProtocolName", &[], study)?;
    x.close("GlobalVariables")?;
    let mdv = metadata_version_oid(def);
    x.open(
        "MetaDataVersion",
        &[
            ("OID", &mdv),
            (
                "Name",
                &format!(
                    "{} version {} SDTM datasets",
                    def.study.id, def.study.version
                ),
            ),
            (
                "Description",
                &format!("From the study definition with SHA-256 {}", def.sha256),
            ),
            ("def:DefineVersion", "2.1.0"),
        ],
    )?;
    x.open("def:Standards", &[])?;
    x.empty(
        "def:Standard",
        &[
            ("OID", "STD.SDTMIG"),
            ("Name", "SDTMIG"),
            ("Type", "IG"),
            ("Version", SDTMIG),
            ("Status", "Final"),
        ],
    )?;
    x.close("def:Standards")?;
    for (code, vars) in &datasets {
        item_group(&mut x, code, vars)?;
    }
    for (code, vars) in &datasets {
        for v in vars {
            item_def(&mut x, code, v, def)?;
        }
    }
    for p in plan::plans(def)
        .iter()
        .filter(|p| p.class == Class::Findings)
    {
        let var = format!("{}TESTCD", p.domain);
        x.open(
            "CodeList",
            &[
                ("OID", &format!("CL.{}.{var}", p.domain)),
                ("Name", &format!("{} test codes", p.domain)),
                ("DataType", "text"),
            ],
        )?;
        let mut listed = std::collections::HashSet::new();
        // a chosen code shared by two forms is one test: listed once
        for t in p
            .sources
            .iter()
            .flat_map(|s| s.tests.iter())
            .filter(|t| listed.insert(t.testcd.as_str()))
        {
            x.open("CodeListItem", &[("CodedValue", &t.testcd)])?;
            x.translated("Decode", &t.label)?;
            x.close("CodeListItem")?;
        }
        x.close("CodeList")?;
    }
    x.close("MetaDataVersion")?;
    x.close("Study")?;
    x.close("ODM")?;
    out.rows = datasets.len() as u64;
    Ok(())
}

fn item_group(x: &mut Xml<'_>, code: &str, vars: &[Var]) -> io::Result<()> {
    let leaf = format!("LF.{code}");
    x.open(
        "ItemGroupDef",
        &[
            ("OID", &item_group_oid(code)),
            ("Name", code),
            ("Repeating", if code == "DM" { "No" } else { "Yes" }),
            ("IsReferenceData", "No"),
            ("SASDatasetName", code),
            ("Domain", code),
            ("Purpose", "Tabulation"),
            ("def:Structure", &structure(code)),
            ("def:StandardOID", "STD.SDTMIG"),
            ("def:ArchiveLocationID", &leaf),
        ],
    )?;
    x.translated("Description", &dataset_label(code))?;
    for (n, v) in vars.iter().enumerate() {
        let oid = item_oid(code, &v.name);
        let order = (n + 1).to_string();
        let key = key_sequence(code, &v.name).map(|k| k.to_string());
        let mandatory = if n < 3 || key.is_some() { "Yes" } else { "No" };
        let mut attrs = vec![
            ("ItemOID", oid.as_str()),
            ("OrderNumber", order.as_str()),
            ("Mandatory", mandatory),
        ];
        if let Some(k) = &key {
            attrs.push(("KeySequence", k));
        }
        x.empty("ItemRef", &attrs)?;
    }
    x.empty("def:Class", &[("Name", class_name(code))])?;
    let file = format!("{}.xpt", code.to_ascii_lowercase());
    x.open("def:leaf", &[("ID", &leaf), ("xlink:href", &file)])?;
    x.text("def:title", &[], &file)?;
    x.close("def:leaf")?;
    x.close("ItemGroupDef")
}

fn item_def(x: &mut Xml<'_>, code: &str, v: &Var, def: &Definition) -> io::Result<()> {
    let oid = item_oid(code, &v.name);
    let data_type = data_type(v);
    // Define-XML gives a length to text and numbers only
    let length = match v.kind {
        VarType::Char(n) => n.to_string(),
        VarType::Num => "8".to_owned(),
    };
    let mut attrs = vec![
        ("OID", oid.as_str()),
        ("Name", v.name.as_ref()),
        ("DataType", data_type),
    ];
    if data_type != "partialDatetime" {
        attrs.push(("Length", &length));
    }
    attrs.push(("SASFieldName", v.name.as_ref()));
    x.open("ItemDef", &attrs)?;
    x.translated("Description", &v.label)?;
    if let Some(cl) = testcd_list(code, def, &v.name) {
        x.empty("CodeListRef", &[("CodeListOID", &cl)])?;
    }
    let (kind, source) = origin(code, v, def);
    x.empty("def:Origin", &[("Type", kind), ("Source", source)])?;
    x.close("ItemDef")
}
