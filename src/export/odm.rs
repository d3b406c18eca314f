//! CDISC ODM 1.3.2 (valid against the official XSD, tests/schemas/odm-1.3.2/).
//!
//! - `Study`: GlobalVariables, units, and one MetaDataVersion whose OID derives from the
//!   SHA-256 of the protocol file and of the study definition (stable across exports while
//!   neither changes):
//!   events SE.ENROLMENT (F.SUBJECT, F.CONSENT), SE.TREATMENT (F.INJECTION,
//!   F.TEMPERATURE), SE.AE (F.AE); one item group per form, repeating except IG.SUBJECT;
//!   item OIDs are fixed (IT.TEMP.CELSIUS, ...), eligibility items are IT.ELIG.<criterion>;
//!   then the forms of the study definition stored as form records ([`records`]).
//! - `AdminData`: the users who appear in the audit trail or signed (pseudonymous for
//!   sponsors: no names, no e-mail addresses), the sites as Locations, a SignatureDef per
//!   signature meaning.
//! - `ClinicalData`: a Snapshot of the current values (records marked deleted left out),
//!   or with `audit=true` a Transactional file: every audited change of every record as its
//!   own ItemGroupData (Insert / Update with the changed items / Remove), each with an
//!   AuditRecord (UserRef, LocationRef, DateTimeStamp, ReasonForChange, SourceID = audit
//!   row id). ItemGroupRepeatKey is the record id.
//! - Signatures: each SubjectData carries the subject's current casebook signature (the
//!   latest not invalidated; ODM allows one), with a SignatureDef per meaning in AdminData;
//!   the users that AuditRecords and Signatures name are listed in AdminData.

use std::io::{self, Write};

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Jsonb, Nullable, Text, Timestamptz};
use serde_json::Value;

use super::sink::Sink;
use super::subjects::{self, SubjectInfo};
use super::text::{timestamp, xml_escape};
use super::{scope_sql, stream_rows, Job, Out, Stop};
use crate::auth::policy::{pseudonym, sees_identities};

mod records;

/// Where an item's snapshot value comes from, as SQL over the form's table `x`.
#[derive(Debug, Clone, Copy)]
enum Src {
    /// an expression of type text
    Text(&'static str),
    /// a timestamptz column, rendered ISO 8601 UTC with `Z`
    Ts(&'static str),
}

#[derive(Debug, Clone, Copy)]
pub struct Item {
    pub oid: &'static str,
    /// the field name in the API (and in audit values)
    pub field: &'static str,
    pub label: &'static str,
    pub data_type: &'static str,
    digits: Option<u8>,
    unit: Option<&'static str>,
    codelist: Option<&'static str>,
    src: Src,
}

const fn item(
    oid: &'static str,
    field: &'static str,
    label: &'static str,
    data_type: &'static str,
    src: Src,
) -> Item {
    Item {
        oid,
        field,
        label,
        data_type,
        digits: None,
        unit: None,
        codelist: None,
        src,
    }
}

const fn with_unit(mut i: Item, unit: &'static str, digits: u8) -> Item {
    i.unit = Some(unit);
    i.digits = Some(digits);
    i
}

const fn coded(mut i: Item, codelist: &'static str) -> Item {
    i.codelist = Some(codelist);
    i
}

pub struct FormSpec {
    pub event: &'static str,
    pub form: &'static str,
    pub group: &'static str,
    pub name: &'static str,
    /// the legacy table: the audit trail's entity of its rows before a move
    pub table: &'static str,
    /// the form whose form records hold its rows now (a moved legacy form)
    pub records_of: Option<&'static str>,
    pub domain: &'static str,
    pub repeating: bool,
    pub items: &'static [Item],
}

const SUBJECT_ITEMS: &[Item] = &[
    item(
        "IT.SUBJ.STATUS",
        "status",
        "Subject status",
        "text",
        Src::Text("x.status"),
    ),
    coded(
        item("IT.SUBJ.SEX", "sex", "Sex", "text", Src::Text("x.sex")),
        "CL.SEX",
    ),
    item(
        "IT.SUBJ.BIRTH_YM",
        "birth_year_month",
        "Year and month of birth",
        "partialDate",
        Src::Text("x.birth_year_month"),
    ),
    with_unit(
        item(
            "IT.SUBJ.WEIGHT",
            "weight_kg",
            "Weight at enrolment",
            "float",
            Src::Text("x.weight_kg::text"),
        ),
        "MU.KG",
        2,
    ),
];

const CONSENT_ITEMS: &[Item] = &[
    item(
        "IT.CONS.FORM_VERSION",
        "form_version",
        "Consent form version",
        "text",
        Src::Text("x.form_version"),
    ),
    item(
        "IT.CONS.SIGNED_ON",
        "signed_on",
        "Date signed",
        "date",
        Src::Text("x.signed_on::text"),
    ),
    coded(
        item(
            "IT.CONS.SIGNER",
            "signer",
            "Signed by",
            "text",
            Src::Text("x.signer"),
        ),
        "CL.SIGNER",
    ),
    item(
        "IT.CONS.REP_RELATIONSHIP",
        "representative_relationship",
        "Relationship of the legal representative",
        "text",
        Src::Text("x.representative_relationship"),
    ),
    item(
        "IT.CONS.ASSENT",
        "assent",
        "Child's assent",
        "boolean",
        Src::Text("x.assent::text"),
    ),
    item(
        "IT.CONS.OBTAINED_BY",
        "obtained_by",
        "Obtained by (user id)",
        "integer",
        Src::Text("x.obtained_by::text"),
    ),
    item(
        "IT.CONS.WITHDRAWN_ON",
        "withdrawn_on",
        "Date of withdrawal",
        "date",
        Src::Text("x.withdrawn_on::text"),
    ),
    coded(
        item(
            "IT.CONS.WITHDRAWAL_SCOPE",
            "withdrawal_scope",
            "Scope of withdrawal",
            "text",
            Src::Text("x.withdrawal_scope"),
        ),
        "CL.WITHDRAWAL_SCOPE",
    ),
    item(
        "IT.CONS.WITHDRAWAL_REASON",
        "withdrawal_reason",
        "Reason for withdrawal",
        "text",
        Src::Text("x.withdrawal_reason"),
    ),
];

const INJECTION_ITEMS: &[Item] = &[
    item(
        "IT.INJ.STUDY_DAY",
        "study_day",
        "Study day",
        "integer",
        Src::Text("x.\"values\" ->> 'study_day'"),
    ),
    item(
        "IT.INJ.ADMINISTERED_AT",
        "administered_at",
        "Date and time of administration",
        "datetime",
        Src::Ts("(x.\"values\" ->> 'administered_at')::timestamptz"),
    ),
    with_unit(
        item(
            "IT.INJ.DOSE",
            "dose_mg",
            "Dose given",
            "float",
            Src::Text("x.\"values\" ->> 'dose_mg'"),
        ),
        "MU.MG",
        2,
    ),
    with_unit(
        item(
            "IT.INJ.WEIGHT",
            "weight_kg",
            "Weight used for the dose",
            "float",
            Src::Text("x.\"values\" ->> 'weight_kg'"),
        ),
        "MU.KG",
        2,
    ),
    item(
        "IT.INJ.ROUTE",
        "route",
        "Route",
        "text",
        Src::Text("x.\"values\" ->> 'route'"),
    ),
    coded(
        item(
            "IT.INJ.SITE",
            "injection_site",
            "Injection site",
            "text",
            Src::Text("x.\"values\" ->> 'injection_site'"),
        ),
        "CL.INJ_SITE",
    ),
    item(
        "IT.INJ.LOT",
        "lot_number",
        "Lot number",
        "text",
        Src::Text("x.\"values\" ->> 'lot_number'"),
    ),
    item(
        "IT.INJ.GIVEN",
        "given",
        "Given",
        "boolean",
        Src::Text("x.\"values\" ->> 'given'"),
    ),
    item(
        "IT.INJ.NOT_GIVEN_REASON",
        "not_given_reason",
        "Reason not given",
        "text",
        Src::Text("x.\"values\" ->> 'not_given_reason'"),
    ),
    with_unit(
        item(
            "IT.INJ.EXPECTED_DOSE",
            "expected_dose_mg",
            "Dose expected by the protocol",
            "float",
            Src::Text("x.\"values\" ->> 'expected_dose_mg'"),
        ),
        "MU.MG",
        2,
    ),
    item(
        "IT.INJ.DEVIATION",
        "protocol_deviation",
        "Protocol deviation",
        "boolean",
        Src::Text("x.\"values\" ->> 'protocol_deviation'"),
    ),
    item(
        "IT.INJ.DEVIATION_REASON",
        "deviation_reason",
        "Deviation",
        "text",
        Src::Text("x.\"values\" ->> 'deviation_reason'"),
    ),
];

const TEMPERATURE_ITEMS: &[Item] = &[
    item(
        "IT.TEMP.MEASURED_AT",
        "measured_at",
        "Date and time of measurement",
        "datetime",
        Src::Ts("(x.\"values\" ->> 'measured_at')::timestamptz"),
    ),
    with_unit(
        item(
            "IT.TEMP.CELSIUS",
            "celsius",
            "Body temperature",
            "float",
            Src::Text("x.\"values\" ->> 'celsius'"),
        ),
        "MU.C",
        1,
    ),
    coded(
        item(
            "IT.TEMP.METHOD",
            "method",
            "Method of measurement",
            "text",
            Src::Text("x.\"values\" ->> 'method'"),
        ),
        "CL.TEMP_METHOD",
    ),
    item(
        "IT.TEMP.FEVER",
        "fever",
        "Above the protocol's fever threshold",
        "boolean",
        Src::Text("x.\"values\" ->> 'fever'"),
    ),
];

const AE_ITEMS: &[Item] = &[
    item(
        "IT.AE.TERM",
        "term",
        "Adverse event, as reported",
        "text",
        Src::Text("x.\"values\" ->> 'term'"),
    ),
    item(
        "IT.AE.MEDDRA_CODE",
        "meddra_code",
        "MedDRA preferred term code",
        "text",
        Src::Text("x.\"values\" ->> 'meddra_code'"),
    ),
    item(
        "IT.AE.MEDDRA_TERM",
        "meddra_term",
        "MedDRA preferred term",
        "text",
        Src::Text("x.\"values\" ->> 'meddra_term'"),
    ),
    item(
        "IT.AE.ONSET",
        "onset_date",
        "Onset date",
        "partialDate",
        Src::Text("x.\"values\" ->> 'onset_date'"),
    ),
    item(
        "IT.AE.END",
        "end_date",
        "End date",
        "partialDate",
        Src::Text("x.\"values\" ->> 'end_date'"),
    ),
    item(
        "IT.AE.GRADE",
        "grade",
        "CTCAE grade",
        "integer",
        Src::Text("x.\"values\" ->> 'grade'"),
    ),
    item(
        "IT.AE.SERIOUS",
        "serious",
        "Serious",
        "boolean",
        Src::Text("x.\"values\" ->> 'serious'"),
    ),
    item(
        "IT.AE.SERIOUSNESS",
        "seriousness_criteria",
        "Seriousness criteria (separated by ;)",
        "text",
        Src::Text(
            "array_to_string(ARRAY(SELECT jsonb_array_elements_text(\
             coalesce(x.\"values\" -> 'seriousness_criteria', '[]'::jsonb))), ';')",
        ),
    ),
    coded(
        item(
            "IT.AE.RELATIONSHIP",
            "relationship",
            "Relationship to anakinra",
            "text",
            Src::Text("x.\"values\" ->> 'relationship'"),
        ),
        "CL.AE_REL",
    ),
    coded(
        item(
            "IT.AE.ACTION",
            "action_taken",
            "Action taken",
            "text",
            Src::Text("x.\"values\" ->> 'action_taken'"),
        ),
        "CL.AE_ACN",
    ),
    coded(
        item(
            "IT.AE.OUTCOME",
            "outcome",
            "Outcome",
            "text",
            Src::Text("x.\"values\" ->> 'outcome'"),
        ),
        "CL.AE_OUT",
    ),
    item(
        "IT.AE.AWARENESS_DATE",
        "awareness_date",
        "Date the site learnt of it",
        "date",
        Src::Text("x.\"values\" ->> 'awareness_date'"),
    ),
];

pub const FORMS: [FormSpec; 5] = [
    FormSpec {
        event: "SE.ENROLMENT",
        form: "F.SUBJECT",
        group: "IG.SUBJECT",
        name: "Subject",
        table: "subjects",
        records_of: None,
        domain: "DM",
        repeating: false,
        items: SUBJECT_ITEMS,
    },
    FormSpec {
        event: "SE.ENROLMENT",
        form: "F.CONSENT",
        group: "IG.CONSENT",
        name: "Informed consent",
        table: "consents",
        records_of: None,
        domain: "DS",
        repeating: true,
        items: CONSENT_ITEMS,
    },
    FormSpec {
        event: "SE.TREATMENT",
        form: "F.INJECTION",
        group: "IG.INJECTION",
        name: "Injection",
        table: "injections",
        records_of: Some("injection"),
        domain: "EX",
        repeating: true,
        items: INJECTION_ITEMS,
    },
    FormSpec {
        event: "SE.TREATMENT",
        form: "F.TEMPERATURE",
        group: "IG.TEMPERATURE",
        name: "Temperature",
        table: "temperatures",
        records_of: Some("temperature"),
        domain: "VS",
        repeating: true,
        items: TEMPERATURE_ITEMS,
    },
    FormSpec {
        event: "SE.AE",
        form: "F.AE",
        group: "IG.AE",
        name: "Adverse event",
        table: "adverse_events",
        records_of: Some("adverse_event"),
        domain: "AE",
        repeating: true,
        items: AE_ITEMS,
    },
];

/// (OID, name, type) of the study events, in order.
const EVENTS: [(&str, &str, &str); 3] = [
    ("SE.ENROLMENT", "Enrolment", "Scheduled"),
    ("SE.TREATMENT", "Treatment", "Scheduled"),
    ("SE.AE", "Adverse events", "Common"),
];

const UNITS: [(&str, &str); 3] = [("MU.KG", "kg"), ("MU.MG", "mg"), ("MU.C", "C")];

/// Minimal streaming XML: the caller keeps the element order of the schema.
pub(super) struct Xml<'a> {
    pub(super) w: &'a mut Sink,
}

impl Xml<'_> {
    fn start(&mut self, tag: &str, attrs: &[(&str, &str)]) -> io::Result<()> {
        self.w.write_all(b"<")?;
        self.w.write_all(tag.as_bytes())?;
        for (k, v) in attrs {
            self.w.write_all(b" ")?;
            self.w.write_all(k.as_bytes())?;
            self.w.write_all(b"=\"")?;
            xml_escape(self.w, v)?;
            self.w.write_all(b"\"")?;
        }
        Ok(())
    }
    pub(super) fn open(&mut self, tag: &str, attrs: &[(&str, &str)]) -> io::Result<()> {
        self.start(tag, attrs)?;
        self.w.write_all(b">\n")
    }
    pub(super) fn empty(&mut self, tag: &str, attrs: &[(&str, &str)]) -> io::Result<()> {
        self.start(tag, attrs)?;
        self.w.write_all(b"/>\n")
    }
    pub(super) fn close(&mut self, tag: &str) -> io::Result<()> {
        self.w.write_all(b"</")?;
        self.w.write_all(tag.as_bytes())?;
        self.w.write_all(b">\n")
    }
    pub(super) fn text(&mut self, tag: &str, attrs: &[(&str, &str)], text: &str) -> io::Result<()> {
        self.start(tag, attrs)?;
        self.w.write_all(b">")?;
        xml_escape(self.w, text)?;
        self.close(tag)
    }
    /// `<Description><TranslatedText xml:lang="en">…</TranslatedText></Description>`
    pub(super) fn translated(&mut self, tag: &str, text: &str) -> io::Result<()> {
        self.open(tag, &[])?;
        self.text("TranslatedText", &[("xml:lang", "en")], text)?;
        self.close(tag)
    }
}

fn study_oid(job: &Job) -> String {
    format!("ST.{}", job.study.study.id)
}

/// The MetaDataVersion describes the protocol file's forms and the study definition's: its
/// OID changes when either file does, so that two exports share an OID only when they share
/// their metadata.
fn mdv_oid(job: &Job) -> String {
    use sha2::Digest;
    let both = sha2::Sha256::new()
        .chain_update(job.protocol.file_hash.as_bytes())
        .chain_update(b"\n")
        .chain_update(job.study.sha256.as_bytes())
        .finalize();
    format!("MDV.{}", hex::encode(&both[..6]))
}

fn codelists(job: &Job) -> Vec<(&'static str, &'static str, Vec<String>)> {
    let own = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    vec![
        ("CL.SEX", "Sex", own(&["female", "male"])),
        (
            "CL.SIGNER",
            "Consent signer",
            own(&["participant", "legal_representative"]),
        ),
        (
            "CL.WITHDRAWAL_SCOPE",
            "Scope of withdrawal",
            own(&["all", "treatment", "follow_up"]),
        ),
        (
            "CL.INJ_SITE",
            "Injection sites",
            job.protocol.file.injection_sites.clone(),
        ),
        (
            "CL.TEMP_METHOD",
            "Temperature methods",
            job.protocol.file.temperature_methods.clone(),
        ),
        (
            "CL.AE_REL",
            "Relationship",
            own(&[
                "not_related",
                "unlikely",
                "possible",
                "probable",
                "definite",
            ]),
        ),
        (
            "CL.AE_ACN",
            "Action taken",
            own(&[
                "none",
                "dose_reduced",
                "interrupted",
                "withdrawn",
                "not_applicable",
            ]),
        ),
        (
            "CL.AE_OUT",
            "Outcome",
            own(&[
                "recovered",
                "recovering",
                "not_recovered",
                "recovered_with_sequelae",
                "fatal",
                "unknown",
            ]),
        ),
    ]
}

fn eligibility_oid(criterion: &str) -> String {
    format!("IT.ELIG.{criterion}")
}

fn write_item_def(x: &mut Xml<'_>, i: &Item) -> io::Result<()> {
    let digits = i.digits.map(|d| d.to_string());
    let mut attrs = vec![("OID", i.oid), ("Name", i.field), ("DataType", i.data_type)];
    if let Some(d) = &digits {
        attrs.push(("SignificantDigits", d));
    }
    x.open("ItemDef", &attrs)?;
    x.translated("Description", i.label)?;
    if let Some(u) = i.unit {
        x.empty("MeasurementUnitRef", &[("MeasurementUnitOID", u)])?;
    }
    if let Some(c) = i.codelist {
        x.empty("CodeListRef", &[("CodeListOID", c)])?;
    }
    x.close("ItemDef")
}

fn write_study(x: &mut Xml<'_>, job: &Job) -> io::Result<()> {
    let p = &job.protocol;
    // the study is the running definition's; the protocol file still describes today's forms
    let study = &job.study.study;
    let study_name = if study.name.trim().is_empty() {
        study.id.as_str()
    } else {
        study.name.as_str()
    };
    let protocol_note = format!(
        "Protocol {}, study definition SHA-256 {}, protocol file SHA-256 {}",
        study.id, job.study.sha256, p.file_hash
    );
    x.open("Study", &[("OID", &study_oid(job))])?;
    x.open("GlobalVariables", &[])?;
    x.text("StudyName", &[], study_name)?;
    x.text(
        "StudyDescription",
        &[],
        &format!("{}. {protocol_note}", study.name),
    )?;
    x.text("ProtocolName", &[], &study.id)?;
    x.close("GlobalVariables")?;
    x.open("BasicDefinitions", &[])?;
    for (oid, name) in UNITS {
        x.open("MeasurementUnit", &[("OID", oid), ("Name", name)])?;
        x.translated("Symbol", name)?;
        x.close("MeasurementUnit")?;
    }
    records::write_units(x, &job.study)?;
    x.close("BasicDefinitions")?;
    let mdv_name = format!(
        "{} protocol {}",
        study.id,
        p.file_hash.get(..8).unwrap_or_default()
    );
    x.open(
        "MetaDataVersion",
        &[
            ("OID", &mdv_oid(job)),
            ("Name", &mdv_name),
            ("Description", &protocol_note),
        ],
    )?;
    x.open("Protocol", &[])?;
    x.translated("Description", &protocol_note)?;
    for (n, (oid, _, _)) in EVENTS.iter().enumerate() {
        let order = (n + 1).to_string();
        x.empty(
            "StudyEventRef",
            &[
                ("StudyEventOID", oid),
                ("OrderNumber", &order),
                ("Mandatory", "No"),
            ],
        )?;
    }
    records::write_event_refs(x, &job.study, EVENTS.len())?;
    x.close("Protocol")?;
    for (oid, name, kind) in EVENTS {
        x.open(
            "StudyEventDef",
            &[
                ("OID", oid),
                ("Name", name),
                ("Repeating", "No"),
                ("Type", kind),
            ],
        )?;
        for (n, f) in FORMS.iter().filter(|f| f.event == oid).enumerate() {
            let order = (n + 1).to_string();
            x.empty(
                "FormRef",
                &[
                    ("FormOID", f.form),
                    ("OrderNumber", &order),
                    ("Mandatory", "No"),
                ],
            )?;
        }
        x.close("StudyEventDef")?;
    }
    records::write_event_defs(x, &job.study)?;
    for f in &FORMS {
        x.open(
            "FormDef",
            &[("OID", f.form), ("Name", f.name), ("Repeating", "No")],
        )?;
        x.empty(
            "ItemGroupRef",
            &[("ItemGroupOID", f.group), ("Mandatory", "No")],
        )?;
        x.close("FormDef")?;
    }
    records::write_form_defs(x, &job.study)?;
    for f in &FORMS {
        x.open(
            "ItemGroupDef",
            &[
                ("OID", f.group),
                ("Name", f.name),
                ("Repeating", if f.repeating { "Yes" } else { "No" }),
                ("Domain", f.domain),
            ],
        )?;
        let mut n = 0;
        let mut item_ref = |x: &mut Xml<'_>, oid: &str| -> io::Result<()> {
            n += 1;
            let order = n.to_string();
            x.empty(
                "ItemRef",
                &[
                    ("ItemOID", oid),
                    ("OrderNumber", &order),
                    ("Mandatory", "No"),
                ],
            )
        };
        for i in f.items {
            item_ref(x, i.oid)?;
        }
        if f.table == "subjects" {
            for c in &p.file.eligibility {
                item_ref(x, &eligibility_oid(&c.id))?;
            }
        }
        x.close("ItemGroupDef")?;
    }
    records::write_group_defs(x, &job.study)?;
    for f in &FORMS {
        for i in f.items {
            write_item_def(x, i)?;
        }
        if f.table == "subjects" {
            for c in &p.file.eligibility {
                let oid = eligibility_oid(&c.id);
                let kind = match c.kind {
                    crate::domain::protocol::CriterionKind::Inclusion => "Inclusion",
                    crate::domain::protocol::CriterionKind::Exclusion => "Exclusion",
                };
                x.open(
                    "ItemDef",
                    &[("OID", &oid), ("Name", &c.id), ("DataType", "boolean")],
                )?;
                x.translated(
                    "Description",
                    &format!("{kind} criterion {}: {}", c.id, c.text),
                )?;
                x.close("ItemDef")?;
            }
        }
    }
    records::write_item_defs(x, &job.study)?;
    for (oid, name, values) in codelists(job) {
        if values.is_empty() {
            continue;
        }
        x.open(
            "CodeList",
            &[("OID", oid), ("Name", name), ("DataType", "text")],
        )?;
        for v in &values {
            x.open("CodeListItem", &[("CodedValue", v)])?;
            x.translated("Decode", &v.replace('_', " "))?;
            x.close("CodeListItem")?;
        }
        x.close("CodeList")?;
    }
    records::write_codelists(x, &job.study)?;
    x.close("MetaDataVersion")?;
    x.close("Study")
}

#[derive(Queryable)]
struct SiteRow {
    code: String,
    name: String,
    created_at: DateTime<Utc>,
}

#[derive(Queryable)]
struct UserRow {
    id: i64,
    name: String,
    email: String,
    role: String,
    sites: Vec<String>,
}

fn location_oid(site_code: &str) -> String {
    format!("LOC.{site_code}")
}

fn user_oid(id: Option<i64>) -> String {
    match id {
        Some(id) => format!("USR.{id}"),
        None => "USR.SYSTEM".into(),
    }
}

fn write_admin(conn: &mut PgConnection, x: &mut Xml<'_>, job: &Job) -> Result<(), Stop> {
    x.open("AdminData", &[("StudyOID", &study_oid(job))])?;
    if job.filters.audit {
        x.open("User", &[("OID", "USR.SYSTEM"), ("UserType", "Other")])?;
        x.text("DisplayName", &[], "Casebook (automatic processing)")?;
        x.close("User")?;
    }
    // the users that AuditRecords and Signatures refer to
    let pseudonymous = !sees_identities(job.role);
    let sql = "u.id, u.name, u.email, u.role, \
               ARRAY(SELECT st.code FROM user_sites us JOIN sites st ON st.id = us.site_id \
                     WHERE us.user_id = u.id ORDER BY st.code) \
               FROM users u WHERE EXISTS (SELECT 1 FROM audit_log a WHERE a.actor_id = u.id) \
                  OR EXISTS (SELECT 1 FROM signatures g WHERE g.signer_id = u.id) \
               ORDER BY u.id";
    {
        stream_rows::<(BigInt, Text, Text, Text, Array<Text>), UserRow>(conn, sql, |u| {
            let kind = match u.role.as_str() {
                "investigator" => "Investigator",
                "sponsor" => "Sponsor",
                _ => "Other",
            };
            x.open(
                "User",
                &[("OID", &user_oid(Some(u.id))), ("UserType", kind)],
            )?;
            if pseudonymous {
                x.text(
                    "DisplayName",
                    &[],
                    &format!("{} ({})", pseudonym(u.id), u.role),
                )?;
            } else {
                x.text("LoginName", &[], &u.email)?;
                x.text("DisplayName", &[], &u.name)?;
                x.text("FullName", &[], &u.name)?;
                x.text("Email", &[], &u.email)?;
            }
            for s in &u.sites {
                x.empty("LocationRef", &[("LocationOID", &location_oid(s))])?;
            }
            x.close("User")?;
            Ok(())
        })?;
    }
    let study = study_oid(job);
    let mdv = mdv_oid(job);
    let sql = format!(
        "st.code, st.name, st.created_at FROM sites st WHERE true{} ORDER BY st.code",
        scope_sql(&job.scope, "st.id")
    );
    stream_rows::<(Text, Text, Timestamptz), SiteRow>(conn, &sql, |s| {
        let name = if s.name.trim().is_empty() {
            &s.code
        } else {
            &s.name
        };
        x.open(
            "Location",
            &[
                ("OID", &location_oid(&s.code)),
                ("Name", name),
                ("LocationType", "Site"),
            ],
        )?;
        let effective = s.created_at.format("%Y-%m-%d").to_string();
        x.empty(
            "MetaDataVersionRef",
            &[
                ("StudyOID", &study),
                ("MetaDataVersionOID", &mdv),
                ("EffectiveDate", &effective),
            ],
        )?;
        x.close("Location")?;
        Ok(())
    })?;
    let sql = format!(
        "DISTINCT g.meaning FROM signatures g WHERE g.invalidated_at IS NULL{} ORDER BY g.meaning",
        scope_sql(&job.scope, "g.site_id")
    );
    stream_rows::<Text, String>(conn, &sql, |meaning| {
        x.open(
            "SignatureDef",
            &[
                ("OID", &signature_def_oid(&meaning)),
                ("Methodology", "Electronic"),
            ],
        )?;
        x.text("Meaning", &[], &meaning)?;
        x.text(
            "LegalReason",
            &[],
            "Electronic signature of the subject's casebook (21 CFR Part 11)",
        )?;
        x.close("SignatureDef")?;
        Ok(())
    })?;
    x.close("AdminData")?;
    Ok(())
}

/// A SignatureDef per meaning, with an OID stable across exports.
fn signature_def_oid(meaning: &str) -> String {
    use sha2::{Digest, Sha256};
    let h = hex::encode(Sha256::digest(meaning.as_bytes()));
    format!("SD.{}", h.get(..12).unwrap_or_default())
}

#[derive(Queryable)]
struct SignatureRow {
    signer_id: i64,
    site_code: String,
    signed_at: DateTime<Utc>,
    meaning: String,
}

/// The subject's current signature (the latest not invalidated): ODM carries one.
fn write_signature(conn: &mut PgConnection, x: &mut Xml<'_>, subject_id: i64) -> Result<(), Stop> {
    let sql = format!(
        "g.signer_id, st.code, g.signed_at, g.meaning FROM signatures g \
         JOIN sites st ON st.id = g.site_id \
         WHERE g.subject_id = {subject_id} AND g.invalidated_at IS NULL \
         ORDER BY g.signed_at DESC, g.id DESC LIMIT 1"
    );
    stream_rows::<(BigInt, Text, Timestamptz, Text), SignatureRow>(conn, &sql, |g| {
        x.open("Signature", &[])?;
        x.empty("UserRef", &[("UserOID", &user_oid(Some(g.signer_id)))])?;
        x.empty(
            "LocationRef",
            &[("LocationOID", &location_oid(&g.site_code))],
        )?;
        x.empty(
            "SignatureRef",
            &[("SignatureOID", &signature_def_oid(&g.meaning))],
        )?;
        x.text("DateTimeStamp", &[], &timestamp(g.signed_at))?;
        x.close("Signature")?;
        Ok(())
    })?;
    Ok(())
}

/// Opens and closes StudyEventData and FormData as item groups arrive in schema order.
#[derive(Default)]
struct Nest {
    event: Option<&'static str>,
    form: Option<&'static str>,
}

impl Nest {
    fn enter(&mut self, x: &mut Xml<'_>, f: &FormSpec) -> io::Result<()> {
        if self.form == Some(f.form) {
            return Ok(());
        }
        if self.form.take().is_some() {
            x.close("FormData")?;
        }
        if self.event != Some(f.event) {
            if self.event.take().is_some() {
                x.close("StudyEventData")?;
            }
            x.open("StudyEventData", &[("StudyEventOID", f.event)])?;
            self.event = Some(f.event);
        }
        x.open("FormData", &[("FormOID", f.form)])?;
        self.form = Some(f.form);
        Ok(())
    }

    fn finish(&mut self, x: &mut Xml<'_>) -> io::Result<()> {
        if self.form.take().is_some() {
            x.close("FormData")?;
        }
        if self.event.take().is_some() {
            x.close("StudyEventData")?;
        }
        Ok(())
    }
}

fn ts_sql(col: &str) -> String {
    format!(
        "CASE WHEN date_trunc('second', {col}) = {col} \
              THEN to_char({col} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') \
              ELSE to_char({col} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') END"
    )
}

fn snapshot_sql(f: &FormSpec, subject_id: i64) -> String {
    let values: Vec<String> = f
        .items
        .iter()
        .map(|i| match i.src {
            Src::Text(e) => e.to_owned(),
            Src::Ts(c) => ts_sql(c),
        })
        .collect();
    let from = match f.records_of {
        Some(form) => format!("form_records x WHERE x.form_id = '{form}' AND"),
        None => format!("{} x WHERE", f.table),
    };
    format!(
        "x.id, ARRAY[{}]::text[] FROM {from} x.subject_id = {subject_id} \
         AND x.deleted_at IS NULL ORDER BY x.id",
        values.join(", "),
    )
}

fn group_start(
    x: &mut Xml<'_>,
    f: &FormSpec,
    key: Option<&str>,
    tx: Option<&str>,
) -> io::Result<()> {
    let mut attrs = vec![("ItemGroupOID", f.group)];
    if f.repeating {
        if let Some(k) = key {
            attrs.push(("ItemGroupRepeatKey", k));
        }
    }
    if let Some(t) = tx {
        attrs.push(("TransactionType", t));
    }
    x.open("ItemGroupData", &attrs)
}

fn item_data(x: &mut Xml<'_>, oid: &str, value: Option<&str>) -> io::Result<()> {
    match value {
        Some(v) => x.empty("ItemData", &[("ItemOID", oid), ("Value", v)]),
        None => x.empty("ItemData", &[("ItemOID", oid), ("IsNull", "Yes")]),
    }
}

fn subject_snapshot(x: &mut Xml<'_>, job: &Job, s: &SubjectInfo) -> io::Result<()> {
    let f = &FORMS[0];
    group_start(x, f, None, None)?;
    let values = [
        s.status.as_str(),
        s.sex.as_str(),
        s.birth_year_month.as_str(),
        s.weight_kg.as_str(),
    ];
    for (i, v) in f.items.iter().zip(values) {
        item_data(x, i.oid, Some(v))?;
    }
    for c in &job.protocol.file.eligibility {
        if let Some(v) = s.eligibility.get(&c.id).and_then(Value::as_bool) {
            item_data(
                x,
                &eligibility_oid(&c.id),
                Some(if v { "true" } else { "false" }),
            )?;
        }
    }
    x.close("ItemGroupData")
}

#[derive(Queryable)]
struct SnapshotRow {
    id: i64,
    values: Vec<Option<String>>,
}

fn snapshot(
    conn: &mut PgConnection,
    x: &mut Xml<'_>,
    job: &Job,
    s: &SubjectInfo,
    rows: &mut u64,
) -> Result<(), Stop> {
    let mut nest = Nest::default();
    nest.enter(x, &FORMS[0])?;
    subject_snapshot(x, job, s)?;
    *rows += 1;
    for f in &FORMS[1..] {
        stream_rows::<(BigInt, Array<Nullable<Text>>), SnapshotRow>(
            conn,
            &snapshot_sql(f, s.id),
            |r| {
                nest.enter(x, f)?;
                group_start(x, f, Some(&r.id.to_string()), None)?;
                for (i, v) in f.items.iter().zip(&r.values) {
                    if let Some(v) = v {
                        item_data(x, i.oid, Some(v))?;
                    }
                }
                x.close("ItemGroupData")?;
                *rows += 1;
                Ok(())
            },
        )?;
    }
    nest.finish(x)?;
    Ok(())
}

#[derive(Queryable)]
struct AuditRow {
    id: i64,
    entity: String,
    record_id: Option<i64>,
    action: String,
    actor_id: Option<i64>,
    occurred_at: DateTime<Utc>,
    reason: Option<String>,
    site_code: Option<String>,
    new_values: Option<Value>,
}

/// An audit value as ODM text; `None` for null.
fn json_text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::Array(a) => Some(a.iter().filter_map(json_text).collect::<Vec<_>>().join(";")),
        Value::Object(_) => Some(v.to_string()),
    }
}

fn audit_group(
    x: &mut Xml<'_>,
    job: &Job,
    s: &SubjectInfo,
    f: &FormSpec,
    a: &AuditRow,
) -> io::Result<()> {
    let tx = match a.action.as_str() {
        "create" => "Insert",
        "delete" => "Remove",
        _ => "Update",
    };
    let key = a.record_id.map(|r| r.to_string());
    group_start(x, f, key.as_deref(), Some(tx))?;
    x.open("AuditRecord", &[("EditPoint", "DataManagement")])?;
    x.empty("UserRef", &[("UserOID", &user_oid(a.actor_id))])?;
    let site = a.site_code.as_deref().unwrap_or(&s.site_code);
    x.empty("LocationRef", &[("LocationOID", &location_oid(site))])?;
    x.text("DateTimeStamp", &[], &timestamp(a.occurred_at))?;
    if let Some(r) = a.reason.as_deref().filter(|r| !r.is_empty()) {
        x.text("ReasonForChange", &[], r)?;
    }
    x.text("SourceID", &[], &format!("audit_log:{}", a.id))?;
    x.close("AuditRecord")?;
    if tx != "Remove" {
        if let Some(Value::Object(values)) = &a.new_values {
            for i in f.items {
                match values.get(i.field) {
                    Some(v) => item_data(x, i.oid, json_text(v).as_deref())?,
                    // a withdrawal records its reason as the reason for the change
                    None if i.field == "withdrawal_reason"
                        && values.contains_key("withdrawn_on") =>
                    {
                        item_data(x, i.oid, a.reason.as_deref())?
                    }
                    None => {}
                }
            }
            if f.table == "subjects" {
                if let Some(Value::Object(elig)) = values.get("eligibility") {
                    for c in &job.protocol.file.eligibility {
                        if let Some(v) = elig.get(&c.id) {
                            item_data(x, &eligibility_oid(&c.id), json_text(v).as_deref())?;
                        }
                    }
                }
            }
        }
    }
    x.close("ItemGroupData")
}

fn transactions(
    conn: &mut PgConnection,
    x: &mut Xml<'_>,
    job: &Job,
    s: &SubjectInfo,
    rows: &mut u64,
) -> Result<(), Stop> {
    // a moved legacy form's rows: its legacy audit rows under the new id (through
    // legacy_record_ids), then the form records' own; the migration's rows are not changes
    let moved: Vec<&FormSpec> = FORMS.iter().filter(|f| f.records_of.is_some()).collect();
    let entity = moved.iter().fold("a.entity_table".to_owned(), |e, f| {
        format!(
            "CASE WHEN r.form_id = '{}' THEN '{}' ELSE {e} END",
            f.records_of.unwrap_or_default(),
            f.table
        )
    });
    let forms: Vec<String> = moved
        .iter()
        .map(|f| format!("'{}'", f.records_of.unwrap_or_default()))
        .collect();
    let order: String = FORMS
        .iter()
        .enumerate()
        .map(|(n, f)| format!(" WHEN '{}' THEN {}", f.table, n + 1))
        .collect();
    let sql = format!(
        "a.id, {entity} AS entity, coalesce(m.new_id, a.record_id) AS record, a.action, \
         a.actor_id, a.occurred_at, a.reason, st.code, \
         CASE WHEN r.id IS NOT NULL THEN a.new_values -> 'values' ELSE a.new_values END \
         FROM audit_log a LEFT JOIN sites st ON st.id = a.site_id \
         LEFT JOIN legacy_record_ids m ON m.entity = a.entity_table AND m.old_id = a.record_id \
         LEFT JOIN form_records r ON a.entity_table = 'form_records' AND r.id = a.record_id \
              AND r.form_id IN ({forms}) \
         WHERE a.subject_id = {} AND a.action <> 'migrate' \
           AND (a.entity_table IN ({tables}) OR r.id IS NOT NULL) \
         ORDER BY CASE {entity}{order} END, record, a.id",
        s.id,
        forms = if forms.is_empty() {
            "NULL".to_owned()
        } else {
            forms.join(", ")
        },
        tables = FORMS
            .iter()
            .map(|f| format!("'{}'", f.table))
            .collect::<Vec<_>>()
            .join(", "),
    );
    let mut nest = Nest::default();
    stream_rows::<
        (
            BigInt,
            Text,
            Nullable<BigInt>,
            Text,
            Nullable<BigInt>,
            Timestamptz,
            Nullable<Text>,
            Nullable<Text>,
            Nullable<Jsonb>,
        ),
        AuditRow,
    >(conn, &sql, |a| {
        let Some(f) = FORMS.iter().find(|f| f.table == a.entity) else {
            return Ok(());
        };
        nest.enter(x, f)?;
        audit_group(x, job, s, f, &a)?;
        *rows += 1;
        Ok(())
    })?;
    nest.finish(x)?;
    Ok(())
}

pub fn write(conn: &mut PgConnection, job: &Job, out: &mut Out) -> Result<(), Stop> {
    let created = timestamp(job.started);
    let file_oid = format!(
        "CASEBOOK.{}.{}",
        job.study.study.id,
        job.started.format("%Y%m%dT%H%M%S%.6fZ")
    );
    let description = format!(
        "Casebook export of study {} (study definition SHA-256 {}, protocol file SHA-256 {})",
        job.study.study.id, job.study.sha256, job.protocol.file_hash
    );
    let granularity = if job.filters.site_id.is_some() {
        "SingleSite"
    } else {
        "All"
    };
    {
        let mut x = Xml { w: &mut out.sink };
        x.w.write_all(b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n")?;
        x.open(
            "ODM",
            &[
                ("xmlns", "http://www.cdisc.org/ns/odm/v1.3"),
                ("Description", &description),
                (
                    "FileType",
                    if job.filters.audit {
                        "Transactional"
                    } else {
                        "Snapshot"
                    },
                ),
                ("Granularity", granularity),
                ("FileOID", &file_oid),
                ("CreationDateTime", &created),
                ("AsOfDateTime", &created),
                ("ODMVersion", "1.3.2"),
                ("Originator", "Casebook"),
                ("SourceSystem", "Casebook"),
                ("SourceSystemVersion", env!("CARGO_PKG_VERSION")),
            ],
        )?;
        write_study(&mut x, job)?;
        write_admin(conn, &mut x, job)?;
        x.open(
            "ClinicalData",
            &[
                ("StudyOID", &study_oid(job)),
                ("MetaDataVersionOID", &mdv_oid(job)),
            ],
        )?;
    }
    subjects::for_each_batch(conn, job, out, |conn, batch, out| {
        for s in batch {
            out.check()?;
            let mut rows = 0;
            {
                let mut x = Xml { w: &mut out.sink };
                x.open("SubjectData", &[("SubjectKey", &s.code)])?;
                write_signature(conn, &mut x, s.id)?;
                x.empty("SiteRef", &[("LocationOID", &location_oid(&s.site_code))])?;
                if job.filters.audit {
                    transactions(conn, &mut x, job, s, &mut rows)?;
                } else {
                    snapshot(conn, &mut x, job, s, &mut rows)?;
                }
                records::write_subject(conn, &mut x, job, s, &mut rows)?;
                x.close("SubjectData")?;
            }
            out.rows += rows;
        }
        Ok(())
    })?;
    let mut x = Xml { w: &mut out.sink };
    x.close("ClinicalData")?;
    x.close("ODM")?;
    Ok(())
}
