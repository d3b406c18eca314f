//! `casebook seed-demo`: the demo trial, so that a fresh `make run` shows a study with data.
//! Sites FR01-FR04, one account per role, and at FR01-FR03 two subjects each with a
//! consent and records of every form of the running study, entered through the functions
//! the API's handlers call (checks, flags, automatic queries, audit rows and all). Dates
//! count back from today at the site, so the data looks current; every value comes from a
//! fixed seed, so two databases seeded the same day hold the same data. Running it again
//! adds nothing: a site that has subjects is left as it is.

use std::collections::BTreeMap;

use bigdecimal::ToPrimitive;
use chrono::{Datelike, Days, NaiveDate, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use diesel::prelude::*;
use serde_json::{json, Map, Value};

use crate::api::clinical::{consents, find_subject, subjects, SubjectRef};
use crate::audit::{Actor, RequestMeta};
use crate::auth::{Caller, Role, Scope};
use crate::domain::dosing::{check_dose, Regimen};
use crate::domain::protocol::{CriterionKind, Protocol};
use crate::domain::study::model::{Item, ItemType, Repeat, Signer};
use crate::domain::study::values::check;
use crate::domain::study::{moved_form, Definition, Form, RuleKind};
use crate::domain::time::local_date;
use crate::error::{AppError, AppResult};
use crate::schema::{subjects as s, users as u};
use crate::services::form_records;
use crate::services::users::{create_user, ensure_site, NewUser};

/// The demo accounts' password: printed, since the demo is for trying Casebook out.
pub const PASSWORD: &str = "demo password for casebook";

pub const SITES: [(&str, &str); 4] = [
    ("FR01", "Hôpital Necker-Enfants malades, Paris"),
    ("FR02", "Hôpital Robert-Debré, Paris"),
    ("FR03", "CHU de Lyon"),
    ("FR04", "CHU de Bordeaux"),
];
const TIME_ZONE: &str = "Europe/Paris";

/// The sites with subjects (FR04 stays empty: a site that has not enrolled yet).
const ENROLLING: [&str; 3] = ["FR01", "FR02", "FR03"];
const SUBJECTS_PER_SITE: usize = 2;

pub struct Account {
    pub email: &'static str,
    pub name: &'static str,
    pub role: Role,
    pub sites: &'static [&'static str],
}

pub const ACCOUNTS: [Account; 7] = [
    Account {
        email: "admin@casebook.test",
        name: "Ada Admin",
        role: Role::Admin,
        sites: &[],
    },
    Account {
        email: "investigator.fr01@casebook.test",
        name: "Irène Investigator (FR01)",
        role: Role::Investigator,
        sites: &["FR01"],
    },
    Account {
        email: "investigator.fr02@casebook.test",
        name: "Ivan Investigator (FR02)",
        role: Role::Investigator,
        sites: &["FR02"],
    },
    Account {
        email: "investigator.fr03@casebook.test",
        name: "Inès Investigator (FR03)",
        role: Role::Investigator,
        sites: &["FR03"],
    },
    Account {
        email: "investigator.fr04@casebook.test",
        name: "Igor Investigator (FR04)",
        role: Role::Investigator,
        sites: &["FR04"],
    },
    Account {
        email: "monitor@casebook.test",
        name: "Mona Monitor (FR01, FR02)",
        role: Role::Monitor,
        sites: &["FR01", "FR02"],
    },
    Account {
        email: "sponsor@casebook.test",
        name: "Sam Sponsor",
        role: Role::Sponsor,
        sites: &[],
    },
];

/// What a run created.
#[derive(Debug, Default)]
pub struct Seeded {
    pub accounts: Vec<String>,
    pub subjects: Vec<String>,
    /// records of the study's forms, today's three included
    pub records: usize,
}

/// Seeds the demo trial in the caller's transaction (`with_subjects`: the subjects and their
/// records too). `def` must be published (the server
/// does it at start; `casebook seed-demo` before calling this).
pub fn seed(
    conn: &mut PgConnection,
    password_hash: &str,
    protocol: &Protocol,
    def: &Definition,
    with_subjects: bool,
    meta: &RequestMeta,
) -> AppResult<Seeded> {
    let mut out = Seeded::default();
    let mut site_ids = BTreeMap::new();
    for (code, name) in SITES {
        site_ids.insert(code, ensure_site(conn, code, name, "FR", TIME_ZONE, meta)?);
    }
    for a in &ACCOUNTS {
        let exists: i64 = u::table
            .filter(u::email.eq(a.email))
            .count()
            .get_result(conn)?;
        if exists > 0 {
            continue;
        }
        let ids: Vec<i64> = a
            .sites
            .iter()
            .filter_map(|c| site_ids.get(c))
            .copied()
            .collect();
        create_user(
            conn,
            &NewUser {
                email: a.email,
                name: a.name,
                role: a.role,
                password_hash,
                site_ids: &ids,
            },
            None,
            meta,
        )?;
        out.accounts.push(a.email.to_owned());
    }
    if !with_subjects {
        return Ok(out);
    }
    let tz: Tz = TIME_ZONE.parse().map_err(AppError::internal)?;
    let today = local_date(Utc::now(), tz);
    let mut soft_flag_done = false;
    for (n, code) in ENROLLING.iter().enumerate() {
        let site_id = site_ids[code];
        let enrolled: i64 = s::table
            .filter(s::site_id.eq(site_id))
            .count()
            .get_result(conn)?;
        if enrolled > 0 {
            continue;
        }
        let caller = investigator(conn, code, site_id, meta)?;
        for k in 0..SUBJECTS_PER_SITE {
            let demo = Demo {
                index: n * SUBJECTS_PER_SITE + k,
                protocol,
                def,
                caller: &caller,
                today,
            };
            let (subject, records) = demo.subject(conn, code, site_id, &mut soft_flag_done)?;
            out.subjects.push(subject);
            out.records += records;
        }
    }
    Ok(out)
}

/// The site's demo investigator, as the API would see it after login.
fn investigator(
    conn: &mut PgConnection,
    site: &str,
    site_id: i64,
    meta: &RequestMeta,
) -> AppResult<Caller> {
    let email = format!("investigator.{}@casebook.test", site.to_lowercase());
    let (user_id, name): (i64, String) = u::table
        .filter(u::email.eq(&email))
        .select((u::id, u::name))
        .first(conn)?;
    Ok(Caller {
        user_id,
        role: Role::Investigator,
        email,
        name,
        site_ids: vec![site_id],
        site_codes: vec![site.to_owned()],
        session_id: uuid::Uuid::nil(),
        actor: Actor {
            user_id,
            role: Role::Investigator.as_str().into(),
        },
        meta: meta.clone(),
    })
}

/// A number in [0, 1) fixed by `key`: the demo's seed (FNV-1a).
fn unit(key: &str) -> f64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h >> 11) as f64 / (1u64 << 53) as f64
}

fn days_before(d: NaiveDate, n: i64) -> NaiveDate {
    d.checked_sub_days(Days::new(n.unsigned_abs())).unwrap_or(d)
}

fn days_after(d: NaiveDate, n: i64) -> NaiveDate {
    d.checked_add_days(Days::new(n.unsigned_abs())).unwrap_or(d)
}

/// `hh:mm` on `date` at the site, as a UTC instant.
fn at(tz: Tz, date: NaiveDate, h: u32, m: u32) -> chrono::DateTime<Utc> {
    let t = NaiveTime::from_hms_opt(h, m, 0).unwrap_or_default();
    tz.from_local_datetime(&date.and_time(t))
        .earliest()
        .map_or_else(|| date.and_time(t).and_utc(), |d| d.with_timezone(&Utc))
}

fn parsed<T: serde::de::DeserializeOwned>(v: Value) -> AppResult<T> {
    serde_json::from_value(v).map_err(AppError::internal)
}

struct Demo<'a> {
    index: usize,
    protocol: &'a Protocol,
    def: &'a Definition,
    caller: &'a Caller,
    today: NaiveDate,
}

impl Demo<'_> {
    fn key(&self, what: &str) -> f64 {
        unit(&format!("{}:{}:{what}", self.def.study.id, self.index))
    }

    /// A child's study when a representative signs the consent, else an adult's.
    fn paediatric(&self) -> bool {
        self.def.consent.signers.contains(&Signer::Representative)
    }

    /// Enrols one subject with consent and records; returns its code and its number of
    /// records.
    fn subject(
        &self,
        conn: &mut PgConnection,
        site: &str,
        site_id: i64,
        soft_flag_done: &mut bool,
    ) -> AppResult<(String, usize)> {
        let i = self.index as i64;
        // day 1 of treatment between 9 and 19 days ago; consent the day before
        let day1 = days_before(self.today, 9 + 2 * i);
        let signed = days_before(day1, 1);
        let (age, weight) = if self.paediatric() {
            (2 + i % 4, 12.0 + 9.0 * self.key("weight"))
        } else {
            (38 + 5 * i, 58.0 + 30.0 * self.key("weight"))
        };
        let birth = self.today.with_day(1).unwrap_or(self.today);
        let birth = birth
            .with_year(birth.year() - age as i32)
            .unwrap_or(birth)
            .checked_sub_months(chrono::Months::new((self.key("birth") * 11.0) as u32))
            .unwrap_or(birth);
        let eligibility: Map<String, Value> = self
            .protocol
            .file
            .eligibility
            .iter()
            .map(|c| (c.id.clone(), json!(c.kind == CriterionKind::Inclusion)))
            .collect();
        let new: subjects::NewSubject = parsed(json!({
            "site_code": site,
            "sex": if self.index.is_multiple_of(2) { "female" } else { "male" },
            "birth_year_month": birth.format("%Y-%m").to_string(),
            "weight_kg": (weight * 10.0).round() / 10.0,
            "eligibility": eligibility,
        }))?;
        let (w, b) = subjects::check_new(self.protocol, &new)?;
        let body = subjects::enrol(conn, self.caller, site_id, true, &new, &w, &b)?;
        let code = body["subject_code"]
            .as_str()
            .ok_or_else(|| AppError::internal("enrolment answered no subject code"))?
            .to_owned();
        let subject = find_subject(conn, &Scope::Sites(vec![site_id]), &code)?;
        let version = self
            .protocol
            .file
            .consent_versions
            .last()
            .cloned()
            .unwrap_or_default();
        let consent = if self.paediatric() {
            json!({"form_version": version, "signed_on": signed, "signer": "legal_representative",
                   "representative_relationship": if i % 2 == 0 { "mother" } else { "father" },
                   "assent": false})
        } else {
            json!({"form_version": version, "signed_on": signed, "signer": "participant"})
        };
        consents::enter(
            conn,
            &self.protocol.file.consent_versions,
            self.caller,
            &subject,
            &parsed(consent)?,
        )?;
        let mut records = 0;
        let legacy = |id: &str| self.def.form(id).is_some();
        if legacy("injection") {
            records += self.injections(conn, &subject, day1)?;
        }
        if legacy("temperature") {
            records += self.temperatures(conn, &subject, day1)?;
        }
        // every other subject had a local reaction; the first is always one of them
        if legacy("adverse_event") && self.index.is_multiple_of(2) {
            self.adverse_event(conn, &subject, day1)?;
            records += 1;
        }
        for form in &self.def.forms {
            if moved_form(&form.id).is_some() {
                continue;
            }
            records += self.form(conn, &subject, form, day1, soft_flag_done)?;
        }
        Ok((code, records))
    }

    /// Three daily injections at 08:00; the first subject's day-2 dose is 30 % above the
    /// treatment's, a deviation the dose rule flags and queries. Entered like any form's
    /// records; the injection site is the form's code list's, in turn.
    fn injections(
        &self,
        conn: &mut PgConnection,
        subject: &SubjectRef,
        day1: NaiveDate,
    ) -> AppResult<usize> {
        let sites: Vec<String> = self
            .def
            .form("injection")
            .and_then(|f| f.item("injection_site"))
            .and_then(|i| i.kind.codelist())
            .and_then(|c| self.def.codelist(c))
            .map(|c| c.codes.iter().map(|c| c.code.clone()).collect())
            .unwrap_or_default();
        let regimen = self
            .def
            .rules
            .iter()
            .filter(|r| r.kind == RuleKind::Dose && r.form.as_deref() == Some("injection"))
            .find_map(|r| {
                self.def
                    .treatments
                    .iter()
                    .find(|t| Some(&t.id) == r.treatment.as_ref())
            })
            .map(Regimen::of_treatment);
        for day in 1..=3i32 {
            let date = days_after(day1, i64::from(day - 1));
            let expected = regimen.as_ref().map_or(0.0, |r| {
                check_dose(r, day, subject.weight_kg, 0.0, true, false).expected_mg
            });
            let dose = if self.index == 0 && day == 2 {
                expected * 1.3
            } else {
                expected
            };
            let values: Map<String, Value> = parsed(json!({
                "study_day": day,
                "administered_at": at(subject.tz, date, 8, 0),
                "dose_mg": format!("{:.2}", (dose * 100.0).round() / 100.0),
                "weight_kg": format!("{:.2}", subject.weight_kg),
                "route": "subcutaneous",
                "injection_site": sites.get(day as usize % sites.len().max(1)).cloned().unwrap_or_default(),
                "lot_number": format!("AK{}{:02}", 26 - self.index % 2, 11 + self.index),
                "given": true,
            }))?;
            form_records::enter(
                conn,
                self.def,
                self.caller,
                subject,
                "injection",
                None,
                &values,
            )?;
        }
        Ok(3)
    }

    /// Twice a day for the first three days: febrile on day 1, settling by day 3 (measured
    /// after the dose, so the day-3 dose stays the usual one). Entered like any form's
    /// records; the method is the first of the form's code list.
    fn temperatures(
        &self,
        conn: &mut PgConnection,
        subject: &SubjectRef,
        day1: NaiveDate,
    ) -> AppResult<usize> {
        let method = self
            .def
            .form("temperature")
            .and_then(|f| f.item("method"))
            .and_then(|i| i.kind.codelist())
            .and_then(|c| self.def.codelist(c))
            .and_then(|c| c.codes.first())
            .map(|c| c.code.clone())
            .unwrap_or_default();
        let readings = [
            (0, 7, 39.4),
            (0, 19, 39.0),
            (1, 7, 38.6),
            (1, 19, 38.1),
            (2, 12, 37.4),
            (2, 20, 37.0),
        ];
        for (n, (day, hour, base)) in readings.iter().enumerate() {
            let celsius = base + 0.4 * self.key(&format!("temp{n}")) - 0.2;
            let values: Map<String, Value> = parsed(json!({
                "measured_at": at(subject.tz, days_after(day1, *day), *hour, 0),
                "celsius": format!("{:.1}", (celsius * 10.0).round() / 10.0),
                "method": method,
            }))?;
            form_records::enter(
                conn,
                self.def,
                self.caller,
                subject,
                "temperature",
                None,
                &values,
            )?;
        }
        Ok(readings.len())
    }

    fn adverse_event(
        &self,
        conn: &mut PgConnection,
        subject: &SubjectRef,
        day1: NaiveDate,
    ) -> AppResult<()> {
        let onset = days_after(day1, 1);
        let values: Map<String, Value> = parsed(json!({
            "term": "Injection-site erythema",
            "onset_date": onset.to_string(),
            "end_date": days_after(onset, 3).to_string(),
            "grade": 1,
            "serious": false,
            "relationship": "probable",
            "action_taken": "none",
            "outcome": "recovered",
            "awareness_date": onset.to_string(),
        }))?;
        form_records::enter(
            conn,
            self.def,
            self.caller,
            subject,
            "adverse_event",
            None,
            &values,
        )?;
        Ok(())
    }

    /// One record of a form the engine serves (at its first scheduled visit, for a form
    /// entered per visit); the first numeric item with a soft range that can be entered
    /// outside it is, once per run, so a flag and its query show.
    fn form(
        &self,
        conn: &mut PgConnection,
        subject: &SubjectRef,
        form: &Form,
        day1: NaiveDate,
        soft_flag_done: &mut bool,
    ) -> AppResult<usize> {
        let visit = match form.repeat {
            Repeat::PerVisit => self
                .def
                .visits
                .iter()
                .find(|v| !v.unscheduled && v.forms.contains(&form.id)),
            _ => None,
        };
        // the visit's day, no later than yesterday (a record may not be in the future)
        let offset = visit.and_then(|v| v.day).unwrap_or(1).max(1) - 1;
        let date = days_after(day1, i64::from(offset)).min(days_before(self.today, 1));
        let mut values = self.values(form, date)?;
        self.as_prescribed(form, subject.weight_kg, day1, date, &mut values);
        if !*soft_flag_done {
            if let Some(flagged) = self.soft_flagged(form, &values) {
                values = flagged;
                *soft_flag_done = true;
            }
        }
        form_records::enter(
            conn,
            self.def,
            self.caller,
            subject,
            &form.id,
            visit.map(|v| v.id.as_str()),
            &values,
        )?;
        Ok(1)
    }

    /// A site following the protocol: each dose rule bound to the form gets the subject's
    /// weight, the dose the rule expects and its study day, so that deviations are the ones a
    /// demo means (a weight picked inside the item's range would be 200 kg).
    fn as_prescribed(
        &self,
        form: &Form,
        weight_kg: f64,
        day1: NaiveDate,
        date: NaiveDate,
        values: &mut Map<String, Value>,
    ) {
        let day = crate::domain::time::study_day(day1, date);
        for r in self.def.rules.iter().filter(|r| {
            r.kind == crate::domain::study::RuleKind::Dose && r.form.as_deref() == Some(&form.id)
        }) {
            let Some(t) = self
                .def
                .treatments
                .iter()
                .find(|t| r.treatment.as_ref() == Some(&t.id))
            else {
                continue;
            };
            let weight = match r.item("weight") {
                Some(w) => {
                    let item = form.item(w);
                    if let Some(item) = item {
                        values.insert(w.to_owned(), number(item, weight_kg));
                    }
                    weight_kg
                }
                None => 0.0,
            };
            let day32 = i32::try_from(day).unwrap_or(1);
            let mg = crate::domain::dosing::expected_dose_mg(
                &Regimen::of_treatment(t),
                day32,
                weight,
                false,
            );
            if let Some(d) = r.item("dose") {
                values.insert(d.to_owned(), json!(format!("{mg:.2}")));
            }
            if let Some(d) = r.item("day") {
                values.insert(d.to_owned(), json!(day));
            }
        }
    }

    /// Values of every item a client would enter, inside the ranges (hard and soft), then
    /// corrected as the checks ask: hidden items emptied, an end after its start, a number
    /// an edit check names brought down to its lowest value.
    fn values(&self, form: &Form, date: NaiveDate) -> AppResult<Map<String, Value>> {
        let mut values: Map<String, Value> = form
            .items
            .iter()
            .filter(|i| !i.derived())
            .filter_map(|i| Some((i.id.clone(), self.value(form, i, date)?)))
            .collect();
        for _ in 0..6 {
            let errors = match check(self.def, form, &values) {
                Ok(_) => return Ok(values),
                Err(errors) => errors,
            };
            let mut fixed = 0;
            for e in &errors {
                let id = e.field.trim_start_matches("values.");
                let Some(item) = form.item(id) else { continue };
                let new = if e.message.starts_with("must be empty") {
                    None
                } else {
                    match item.kind {
                        ItemType::Date | ItemType::PartialDate if item.id != form.dated_by => {
                            Some(json!(days_after(date, 1).min(self.today).to_string()))
                        }
                        ItemType::Integer | ItemType::Decimal { .. } => {
                            let low = bound(item, |r| r.min.as_ref());
                            Some(number(item, low.unwrap_or(0.0)))
                        }
                        _ => continue,
                    }
                };
                if values.get(id) != new.as_ref() {
                    match new {
                        Some(v) => values.insert(id.to_owned(), v),
                        None => values.remove(id),
                    };
                    fixed += 1;
                }
            }
            if fixed == 0 {
                return Err(AppError::Validation(errors));
            }
        }
        check(self.def, form, &values).map_err(AppError::Validation)?;
        Ok(values)
    }

    fn value(&self, form: &Form, item: &Item, date: NaiveDate) -> Option<Value> {
        let r = self.key(&format!("{}.{}", form.id, item.id));
        Some(match &item.kind {
            ItemType::Text { max_length } => {
                let text = if item.id.contains("lot") {
                    format!("LOT-{}", 2600 + self.index)
                } else {
                    "As noted in the source record".to_owned()
                };
                json!(text.chars().take(*max_length as usize).collect::<String>())
            }
            ItemType::Integer | ItemType::Decimal { .. } => {
                let lo = bound(item, |r| r.min.as_ref());
                let hi = bound_max(item);
                let x = match (lo, hi) {
                    // the middle of the plausible range, give or take a fifth of it
                    (Some(lo), Some(hi)) => lo + (hi - lo) * (0.3 + 0.4 * r),
                    (Some(lo), None) => lo + 1.0 + 4.0 * r,
                    (None, Some(hi)) => hi - 1.0 - 4.0 * r,
                    (None, None) => 1.0 + 4.0 * r,
                };
                number(item, x)
            }
            ItemType::Boolean => json!(false),
            ItemType::Date | ItemType::PartialDate => json!(date.to_string()),
            ItemType::DateTime => json!(at(Tz::Europe__Paris, date, 9, 30)),
            ItemType::Time => json!("09:30"),
            ItemType::Choice { codelist } => {
                json!(self.def.codelist(codelist)?.codes.first()?.code)
            }
            ItemType::Choices { codelist } => {
                json!([self.def.codelist(codelist)?.codes.first()?.code])
            }
        })
    }

    /// `values` with one item just outside its soft range (inside its hard one), when the
    /// form has such an item and the checks then flag it.
    fn soft_flagged(&self, form: &Form, values: &Map<String, Value>) -> Option<Map<String, Value>> {
        for item in form
            .items
            .iter()
            .filter(|i| !i.derived() && values.contains_key(&i.id))
        {
            let Some(soft) = &item.soft_range else {
                continue;
            };
            let step = match item.kind {
                ItemType::Decimal { decimals } => 10f64.powi(-(decimals as i32)),
                ItemType::Integer => 1.0,
                _ => continue,
            };
            let hard = item.range.as_ref();
            let hard_max = hard
                .and_then(|r| r.max.as_ref())
                .and_then(ToPrimitive::to_f64);
            let hard_min = hard
                .and_then(|r| r.min.as_ref())
                .and_then(ToPrimitive::to_f64);
            let above = soft
                .max
                .as_ref()
                .and_then(ToPrimitive::to_f64)
                .map(|m| m + step)
                .filter(|x| hard_max.is_none_or(|h| *x <= h));
            let below = soft
                .min
                .as_ref()
                .and_then(ToPrimitive::to_f64)
                .map(|m| m - step)
                .filter(|x| hard_min.is_none_or(|h| *x >= h));
            for x in [above, below].into_iter().flatten() {
                let mut v = values.clone();
                v.insert(item.id.clone(), number(item, x));
                if check(self.def, form, &v).is_ok_and(|c| !c.flags.is_empty()) {
                    return Some(v);
                }
            }
        }
        None
    }
}

/// The tighter of the hard and soft lower bounds.
fn bound(
    item: &Item,
    pick: impl Fn(&crate::domain::study::model::Range) -> Option<&bigdecimal::BigDecimal>,
) -> Option<f64> {
    [item.range.as_ref(), item.soft_range.as_ref()]
        .into_iter()
        .flatten()
        .filter_map(|r| pick(r).and_then(ToPrimitive::to_f64))
        .reduce(f64::max)
}

/// The tighter of the hard and soft upper bounds.
fn bound_max(item: &Item) -> Option<f64> {
    [item.range.as_ref(), item.soft_range.as_ref()]
        .into_iter()
        .flatten()
        .filter_map(|r| r.max.as_ref().and_then(ToPrimitive::to_f64))
        .reduce(f64::min)
}

/// A number as a client sends it: integers as numbers, decimals as text at the item's
/// digits.
fn number(item: &Item, x: f64) -> Value {
    match item.kind {
        ItemType::Decimal { decimals } => {
            let d = decimals as usize;
            json!(format!("{x:.d$}"))
        }
        _ => json!(x.round() as i64),
    }
}
