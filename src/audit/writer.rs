use diesel::prelude::*;
use serde_json::Value;

use crate::schema::audit_log;

/// Who acted: always the authenticated caller, never a column of the changed row.
#[derive(Debug, Clone)]
pub struct Actor {
    pub user_id: i64,
    pub role: String,
}

/// Where the request came from; recorded on every row.
#[derive(Debug, Clone, Default)]
pub struct RequestMeta {
    pub request_id: String,
    pub client_addr: Option<String>,
}

/// One audited event. Build it next to the change, record it in the same transaction.
#[derive(Debug, Clone)]
pub struct AuditEvent<'a> {
    pub actor: Option<&'a Actor>,
    pub action: &'a str,
    pub entity_table: &'a str,
    pub record_id: Option<i64>,
    pub site_id: Option<i64>,
    pub subject_id: Option<i64>,
    pub old_values: Option<Value>,
    pub new_values: Option<Value>,
    pub reason: Option<&'a str>,
    pub meta: &'a RequestMeta,
    /// For work no user asked for (background delivery, the command line): recorded as the
    /// actor role `system:<name>` with no user id.
    pub system: Option<&'a str>,
}

impl<'a> AuditEvent<'a> {
    pub fn new(
        actor: Option<&'a Actor>,
        action: &'a str,
        entity_table: &'a str,
        meta: &'a RequestMeta,
    ) -> Self {
        Self {
            actor,
            action,
            entity_table,
            record_id: None,
            site_id: None,
            subject_id: None,
            old_values: None,
            new_values: None,
            reason: None,
            meta,
            system: None,
        }
    }
    pub fn by_system(mut self, name: &'a str) -> Self {
        self.system = Some(name);
        self
    }
    pub fn record(mut self, id: i64) -> Self {
        self.record_id = Some(id);
        self
    }
    pub fn site(mut self, id: Option<i64>) -> Self {
        self.site_id = id;
        self
    }
    pub fn subject(mut self, id: Option<i64>) -> Self {
        self.subject_id = id;
        self
    }
    pub fn old(mut self, v: Value) -> Self {
        self.old_values = Some(v);
        self
    }
    pub fn new_values(mut self, v: Value) -> Self {
        self.new_values = Some(v);
        self
    }
    pub fn reason(mut self, r: Option<&'a str>) -> Self {
        self.reason = r;
        self
    }
}

/// Writes the event on `conn`, which must be the transaction of the change itself.
pub fn record(conn: &mut PgConnection, e: &AuditEvent<'_>) -> QueryResult<i64> {
    diesel::insert_into(audit_log::table)
        .values((
            audit_log::actor_id.eq(e.actor.map(|a| a.user_id)),
            audit_log::actor_role.eq(e
                .actor
                .map(|a| a.role.clone())
                .or_else(|| e.system.map(|s| format!("system:{s}")))),
            audit_log::action.eq(e.action),
            audit_log::entity_table.eq(e.entity_table),
            audit_log::record_id.eq(e.record_id),
            audit_log::site_id.eq(e.site_id),
            audit_log::subject_id.eq(e.subject_id),
            audit_log::old_values.eq(&e.old_values),
            audit_log::new_values.eq(&e.new_values),
            audit_log::reason.eq(e.reason),
            audit_log::request_id.eq(&e.meta.request_id),
            audit_log::client_addr.eq(&e.meta.client_addr),
        ))
        .returning(audit_log::id)
        .get_result(conn)
}

/// For updates: only the fields that changed, as (old, new) objects.
pub fn diff(old: &Value, new: &Value) -> (Value, Value) {
    let (Value::Object(o), Value::Object(n)) = (old, new) else {
        return (old.clone(), new.clone());
    };
    let mut before = serde_json::Map::new();
    let mut after = serde_json::Map::new();
    for (k, nv) in n {
        let ov = o.get(k).cloned().unwrap_or(Value::Null);
        if &ov != nv {
            before.insert(k.clone(), ov);
            after.insert(k.clone(), nv.clone());
        }
    }
    (Value::Object(before), Value::Object(after))
}

/// Drops bookkeeping columns before an audit diff.
pub fn audit_view(mut v: serde_json::Value) -> serde_json::Value {
    if let Some(m) = v.as_object_mut() {
        for k in [
            "updated_at",
            "updated_by",
            "version",
            "created_at",
            "created_by",
        ] {
            m.remove(k);
        }
    }
    v
}
