//! The named rules of a form around a write of one of its records: what they read from the
//! subject's other live records (day 1, doses, fevers), and the records a write changes in
//! turn: day 1 must not move under records counting from it, the window flags of records at
//! visits follow day 1, and later doses are checked again when a dose or a fever changes.
//! Every such change is audited with its reason in the caller's transaction.

use chrono::NaiveDate;
use diesel::prelude::*;
use serde_json::{json, Value};

use crate::audit::{self, AuditEvent};
use crate::auth::Caller;
use crate::db::form_records::ENTITY;
use crate::db::subjects::SubjectRef;
use crate::db::{form_records as fr, schedule as sq, study_versions};
use crate::domain::study::records::{self, Values};
use crate::domain::study::rules::{self, Context, Reads};
use crate::domain::study::schedule::{anchor_form, day_one};
use crate::domain::study::values::{self as checks, Checked};
use crate::domain::study::{Definition, Form, RuleKind};
use crate::error::{AppError, AppResult};

/// What the form's named rules read from the subject's other live records (`except`, the
/// record being corrected, left out): day 1, the doses and the fevers. Forms without such
/// rules read nothing.
fn rule_context(
    conn: &mut PgConnection,
    def: &Definition,
    form: &Form,
    subject: &SubjectRef,
    visit: Option<&str>,
    except: Option<i64>,
) -> AppResult<Context> {
    let mut ctx = Context::new(subject.tz);
    let reads = rules::reads(def, form, visit);
    if reads == Reads::Nothing {
        return Ok(ctx);
    }
    // day 1 alone is only moved by a write of its anchor, which holds the subject
    // exclusively: records that only read it share the subject with each other
    fr::hold_subject(conn, subject.id, reads == Reads::Records)?;
    ctx.day1 = day_one(
        def,
        &sq::anchor_facts(conn, def, subject.id, except)?,
        subject.tz,
    );
    if reads == Reads::DayOne {
        return Ok(ctx);
    }
    let forms: Vec<&str> = rules::fact_forms(def)
        .into_iter()
        .filter(|f| def.form(f).is_some())
        .collect();
    for (_, f, v) in sq::live_records(conn, subject.id, &forms, except)? {
        rules::facts_of(def, &f, &v, &mut ctx);
    }
    Ok(ctx)
}

/// A write of a record: its visit, and for a correction the record and the items changed.
pub(super) struct Write<'a> {
    pub visit: Option<&'a str>,
    pub this: Option<i64>,
    pub change: Option<&'a Values>,
}

/// The values of a record as the definition and its named rules make them: the study day
/// filled, the items checked (422 naming `values.<item>`), its dates in the subject's
/// window, what the rules compute written, and day 1 kept under the records that count
/// from it.
pub(super) fn check_with_rules(
    conn: &mut PgConnection,
    def: &Definition,
    caller: &Caller,
    form: &Form,
    subject: &SubjectRef,
    w: &Write<'_>,
    mut input: Values,
) -> AppResult<Checked> {
    let ctx = rule_context(conn, def, form, subject, w.visit, w.this)?;
    rules::fill(def, form, &mut input, w.change, &ctx).map_err(AppError::Validation)?;
    let mut checked = checks::check(def, form, &input).map_err(AppError::Validation)?;
    super::form_records::check_dates(conn, form, subject, &checked)?;
    rules::run(def, form, w.visit, &mut checked, &ctx).map_err(AppError::Validation)?;
    keeps_days(conn, def, caller, form, subject, w.this, Some(&checked))?;
    Ok(checked)
}

/// A write of a record of the form that anchors day 1 (entered, corrected with `checked`,
/// or marked entered in error: none) that would move day 1 under records whose study days
/// were computed from it is refused (409 naming them): they would no longer match their
/// dates. They are corrected or marked entered in error first.
pub(super) fn keeps_days(
    conn: &mut PgConnection,
    def: &Definition,
    caller: &Caller,
    form: &Form,
    subject: &SubjectRef,
    this: Option<i64>,
    checked: Option<&Checked>,
) -> AppResult<()> {
    if anchor_form(def).is_none_or(|(f, _)| f != form.id) {
        return Ok(());
    }
    fr::hold_subject(conn, subject.id, true)?;
    let others = sq::anchor_facts(conn, def, subject.id, this)?;
    let own = checked
        .map(|c| records::stored(&c.values))
        .and_then(|v| rules::anchor_date(def, form, &v, subject.tz));
    let mut ctx = Context::new(subject.tz);
    ctx.day1 = day_one(def, &others, subject.tz);
    let day1 = rules::day_one(def, form, own, &ctx);
    let forms: Vec<&str> = def
        .rules
        .iter()
        .filter(|r| r.kind == RuleKind::StudyDay)
        .filter_map(|r| r.form.as_deref())
        .filter(|f| def.form(f).is_some())
        .collect();
    let records = sq::live_records(conn, subject.id, &forms, this)?;
    let stranded = rules::stranded(def, &records, day1, subject.tz);
    if stranded.is_empty() {
        let before = day_one(
            def,
            &sq::anchor_facts(conn, def, subject.id, None)?,
            subject.tz,
        );
        if before != day1 {
            rewindow(conn, def, caller, subject, this, day1)?;
        }
        return Ok(());
    }
    Err(AppError::Conflict(format!(
        "This record anchors day 1 (it would become {}): the study days of {} would no longer match their dates. Correct those records or mark them entered in error first.",
        day1.map_or_else(|| "unknown".to_owned(), |d| d.to_string()),
        stranded.join(", ")
    )))
}

/// Day 1 moved (`day1`): the window flag of each other live record at a scheduled visit is
/// checked again; a record whose flags change is updated, audited with the reason, queried
/// when it is now outside, and its verification and signatures are cleared.
fn rewindow(
    conn: &mut PgConnection,
    def: &Definition,
    caller: &Caller,
    subject: &SubjectRef,
    this: Option<i64>,
    day1: Option<NaiveDate>,
) -> AppResult<()> {
    let reason = match day1 {
        Some(d) => format!("day 1 is now {d}: the visit window is checked again"),
        None => "day 1 is no longer known: the visit window is checked again".to_owned(),
    };
    for row in fr::live(conn, subject.id)? {
        if Some(row.id) == this || row.visit_id.is_none() {
            continue;
        }
        let Some(form) = def.form(&row.form_id) else {
            continue;
        };
        let Some((flags, new)) = rules::rewindowed(
            def,
            form,
            row.visit_id.as_deref(),
            &row.values,
            &row.flags,
            day1,
            subject.tz,
        ) else {
            continue;
        };
        fr::set_flags(conn, row.id, &flags, &reason, caller.user_id)?;
        audit::record(
            conn,
            &AuditEvent::new(Some(&caller.actor), "update", ENTITY, &caller.meta)
                .record(row.id)
                .site(Some(subject.site_id))
                .subject(Some(subject.id))
                .old(json!({"flags": row.flags}))
                .new_values(json!({"flags": flags}))
                .reason(Some(&reason)),
        )?;
        if let Some(f) = new {
            crate::services::queries::open_automatic(
                conn,
                None,
                &caller.meta,
                subject.site_id,
                subject.id,
                ENTITY,
                row.id,
                &f.item,
                f.origin,
                &f.message,
            )?;
        }
        crate::services::guard::after_change(
            conn,
            caller,
            ENTITY,
            Some(row.id),
            subject.site_id,
            subject.id,
        )?;
    }
    Ok(())
}

/// A record holding a dose or a fever changed (entered, corrected: `before` and `after`
/// values; entered in error: `after` none): the dose rules of the subject's other doses on or
/// after its date read it, so they run again; a record whose computed items or flags change
/// is updated with the reason, audited, queried and its verification and signatures cleared.
/// A record that no longer passes its checks (a later definition) is left as it is.
#[allow(clippy::too_many_arguments)]
pub(super) fn recheck_later_doses(
    conn: &mut PgConnection,
    def: &Definition,
    caller: &Caller,
    subject: &SubjectRef,
    form: &Form,
    id: i64,
    before: Option<&Value>,
    after: Option<&Value>,
) -> AppResult<()> {
    let changed: Vec<&Value> = before.into_iter().chain(after).collect();
    let Some(since) = rules::fact_date(def, &form.id, &changed, subject.tz) else {
        return Ok(());
    };
    let dose_forms = rules::dose_dates(def);
    let mut forms: Vec<&str> = dose_forms.iter().map(|(f, _)| f.as_str()).collect();
    forms.dedup();
    let reason = format!("re-checked: {} {id} changed", form.id);
    for (rid, fid, values) in sq::live_records(conn, subject.id, &forms, Some(id))? {
        if !rules::dose_since(def, &fid, &values, since, subject.tz) {
            continue;
        }
        let Some(f) = def.form(&fid) else {
            continue;
        };
        let row = fr::find(conn, subject.id, &fid, rid, true)?;
        let stored = values.as_object().cloned().unwrap_or_default();
        let input = records::merge(f, &stored, &Values::new());
        let ctx = rule_context(conn, def, f, subject, row.visit_id.as_deref(), Some(rid))?;
        let Ok(mut checked) = checks::check(def, f, &input) else {
            continue;
        };
        if rules::run(def, f, row.visit_id.as_deref(), &mut checked, &ctx).is_err() {
            continue;
        }
        let new = records::stored(&checked.values);
        let flags = records::flags_json(&checked.flags);
        if new == stored && flags == row.flags {
            continue;
        }
        let version_id = study_versions::running_id(conn, &def.study.id, &def.sha256)?;
        let key = records::repeat_key(def, f, row.visit_id.as_deref(), &checked.values, subject.tz);
        fr::correct(
            conn,
            rid,
            &fr::Correction {
                study_version_id: version_id,
                repeat_key: key.as_ref().map(|k| k.0.as_str()),
                values: &Value::Object(new.clone()),
                flags: &flags,
                reason: &reason,
                user_id: caller.user_id,
            },
        )?;
        let (o, n) = records::changes(&stored, &new);
        audit::record(
            conn,
            &AuditEvent::new(Some(&caller.actor), "update", ENTITY, &caller.meta)
                .record(rid)
                .site(Some(subject.site_id))
                .subject(Some(subject.id))
                .old(json!({"values": o, "flags": row.flags}))
                .new_values(json!({"values": n, "flags": flags}))
                .reason(Some(&reason)),
        )?;
        open_queries(conn, caller, subject, rid, &checked)?;
        crate::services::guard::after_change(
            conn,
            caller,
            ENTITY,
            Some(rid),
            subject.site_id,
            subject.id,
        )?;
    }
    Ok(())
}

/// Each soft finding opens a query on its item (once while one is open).
pub(super) fn open_queries(
    conn: &mut PgConnection,
    caller: &Caller,
    subject: &SubjectRef,
    id: i64,
    checked: &Checked,
) -> AppResult<()> {
    for f in &checked.flags {
        crate::services::queries::open_automatic(
            conn,
            None,
            &caller.meta,
            subject.site_id,
            subject.id,
            ENTITY,
            id,
            &f.item,
            f.origin,
            &f.message,
        )?;
    }
    Ok(())
}
