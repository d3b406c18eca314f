//! The common create of a record in one round trip (docs/engine-migration.md step 7): a
//! record whose form's rules read no other record and change none, that is not the anchor of
//! day 1, and whose values raise no soft finding (a finding opens a query, which the
//! step-by-step path writes) is checked here against the definition and sent with the
//! token's identity to one statement (db::form_entry), batched with the others. Anything
//! else, and anything the statement does not write, takes the step-by-step path
//! (`form_records::enter`), which answers with its own rules: the refusals, in their order.

use chrono::{DateTime, SubsecRound, Utc};
use chrono_tz::Tz;
use serde_json::{Map, Value};

use super::form_records::FormRecord;
use crate::audit::audit_view;
use crate::auth::{roles_with_own_sites, Bearer, Permission};
use crate::db::form_entry::{
    self as fe, Days, Entered, FormEntries, NewEntry, RecordDate, RepeatKey,
};
use crate::db::{self, Pool};
use crate::domain::study::records::{self, Placement};
use crate::domain::study::rules::{self, Context, Reads};
use crate::domain::study::schedule::anchor_form;
use crate::domain::study::values::{self as checks, as_partial, ItemValue};
use crate::domain::study::{Definition, Repeat, RuleKind};
use crate::error::AppResult;

/// A new record of `form_id` for the subject `code`, as sent.
pub struct Create<'a> {
    pub code: &'a str,
    pub form_id: &'a str,
    pub visit: Option<&'a str>,
    pub values: &'a Map<String, Value>,
}

/// Enters `new` in one statement when it can be: the record, or `None` for the
/// step-by-step path to check again and answer.
pub async fn enter_at_once(
    pool: &Pool,
    entries: &FormEntries,
    def: &Definition,
    bearer: &Bearer,
    new: &Create<'_>,
) -> AppResult<Option<FormRecord>> {
    // PostgreSQL keeps microseconds: the answer must say what is stored
    let now = Utc::now().trunc_subsecs(6);
    let Some((entry, mut record)) = prepare(def, bearer, new, now) else {
        return Ok(None);
    };
    let written = match entries.run(pool, entry.clone()).await {
        Entered::Written(w) => Some(w),
        Entered::NotWritten => None,
        Entered::Failed(e) => return Err(e),
        // alone, on a connection of its own, waiting for its own locks
        Entered::Alone => db::run(pool, move |conn| fe::enter_alone(conn, &entry)).await?,
    };
    let Some(w) = written else {
        return Ok(None);
    };
    record.id = w.id;
    record.definition_version = w.definition_version;
    Ok(Some(record))
}

/// The entry and the record it makes (id and version number left to the statement), when
/// the record can take the short path and its values pass the definition's checks.
pub fn prepare(
    def: &Definition,
    bearer: &Bearer,
    new: &Create<'_>,
    now: DateTime<Utc>,
) -> Option<(NewEntry, FormRecord)> {
    let form = def.form(new.form_id)?;
    // rules that read or change other records, alert the safety desk, or compute from
    // another record (a dose, a fever, a study day): the step-by-step path
    // (a fever rule computes from the record alone; the doses that read fevers are checked
    // by the statement: none on or after this record, else this path is left)
    if rules::of_form(def, form)
        .any(|r| !matches!(r.kind, RuleKind::FeverEndpoints | RuleKind::Fever))
        || anchor_form(def).is_some_and(|(f, _)| f == form.id)
    {
        return None;
    }
    let Placement { visit } = records::placement(def, form, new.visit).ok()?;
    if rules::reads(def, form, visit.as_deref()) != Reads::Nothing {
        return None;
    }
    // (nothing of the context is read: no rule of the form reads day 1, doses or fevers,
    // nor the site's time zone)
    let ctx = Context::new(Tz::UTC);
    let mut input = new.values.clone();
    rules::fill(def, form, &mut input, None, &ctx).ok()?;
    let mut checked = checks::check(def, form, &input).ok()?;
    rules::run(def, form, visit.as_deref(), &mut checked, &ctx).ok()?;
    if !checked.flags.is_empty() {
        return None;
    }
    let (mut days, mut instants) = (Vec::new(), Vec::new());
    for item in &form.items {
        match checked.values.get(&item.id) {
            Some(ItemValue::DateTime(t)) => {
                crate::domain::values::not_in_future("", *t, now).ok()?;
                instants.push(*t);
            }
            Some(v) => {
                if let Some((first, last)) = as_partial(v).and_then(|p| p.days()) {
                    days.push(Days { first, last });
                }
            }
            None => {}
        }
    }
    let dated = checked.values.get(&form.dated_by);
    let record_date = match dated {
        Some(ItemValue::DateTime(t)) => Some(RecordDate::At(*t)),
        Some(ItemValue::Date(d)) => Some(RecordDate::Days(Days {
            first: *d,
            last: *d,
        })),
        Some(ItemValue::PartialDate(s)) => crate::domain::partial_date::PartialDate::parse(s)
            .and_then(|p| p.days())
            .map(|(first, last)| RecordDate::Days(Days { first, last })),
        _ => None,
    };
    // the key of a form entered per day from a datetime is its site-local date
    let repeat_key = match (form.repeat, dated) {
        (Repeat::PerDay, Some(ItemValue::DateTime(t))) => RepeatKey::DateOf(*t),
        _ => records::repeat_key(def, form, visit.as_deref(), &checked.values, Tz::UTC)
            .map_or(RepeatKey::None, |k| RepeatKey::Known(k.0)),
    };
    let values = Value::Object(records::stored(&checked.values));
    // a fever the dose rules read: the statement checks no dose is on or after its day
    // (a form with two fever rules is left to the step-by-step path)
    let fevers: Vec<&str> = rules::of_form(def, form)
        .filter(|r| r.kind == RuleKind::Fever)
        .filter_map(|r| values.get(r.item("at")?)?.as_str())
        .collect();
    if fevers.len() > 1 {
        return None;
    }
    let fever_at = fevers.first().map(|s| (*s).to_owned());
    let record = FormRecord {
        id: 0,
        subject_code: new.code.to_owned(),
        form: form.id.clone(),
        visit: visit.clone(),
        definition_version: 0,
        values: values.clone(),
        flags: records::flags_json(&checked.flags),
        version: 1,
        created_at: now,
        created_by: bearer.user_id,
        updated_at: now,
        updated_by: bearer.user_id,
        change_reason: None,
        deleted_at: None,
        deleted_reason: None,
    };
    let audit = audit_view(serde_json::to_value(&record).ok()?);
    let entry = NewEntry {
        user_id: bearer.user_id,
        session: bearer.claims.sid,
        token_version: bearer.claims.ver,
        subject_code: new.code.to_owned(),
        form: form.id.clone(),
        visit,
        repeat_key,
        values,
        now,
        audit,
        request_id: bearer.meta.request_id.clone(),
        client_addr: bearer.meta.client_addr.clone(),
        record_date,
        after_withdrawal: form.after_withdrawal,
        days,
        instants,
        changed: crate::domain::study::moved_form(&form.id)
            .map_or(crate::db::form_records::ENTITY, |m| m.entity),
        fever_at,
        dose_dates: rules::dose_dates(def),
        roles: roles_with_own_sites(Permission::EnterClinical),
        study: def.study.id.clone(),
        sha256: def.sha256.clone(),
    };
    Some((entry, record))
}
