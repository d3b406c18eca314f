//! Marking a record entered in error: the steps every form shares.

use diesel::PgConnection;

use crate::audit::audit_view;
use crate::auth::Caller;
use crate::db::subjects::SubjectRef;
use crate::error::{AppError, AppResult};

/// A record about to be marked entered in error, found by its form (in scope, locked).
pub struct Deletion<'a> {
    pub caller: &'a Caller,
    pub subject: &'a SubjectRef,
    /// the table, as audited
    pub entity: &'static str,
    /// what the record is called in messages
    pub noun: &'static str,
    /// what a signature's invalidation says changed (the table, or a moved form's old one)
    pub changed: &'static str,
    pub id: i64,
    /// the version from If-Match, when sent
    pub expected: Option<i32>,
    pub reason: &'a crate::domain::values::Reason,
}

impl Deletion<'_> {
    /// The steps every form shares: refuse a second deletion (409) and a stale If-Match
    /// (412), let `mark` set the deletion columns, audit the old values with the reason, and
    /// clear the record's verification and the casebook's signatures.
    pub fn run<V: serde::Serialize>(
        &self,
        conn: &mut PgConnection,
        already_deleted: bool,
        version: i32,
        before: &V,
        mark: impl FnOnce(&mut PgConnection) -> AppResult<V>,
    ) -> AppResult<V> {
        if already_deleted {
            return Err(AppError::Conflict(format!(
                "This {} is already marked entered in error.",
                self.noun
            )));
        }
        if self.expected.is_some_and(|v| v != version) {
            return Err(AppError::PreconditionFailed);
        }
        let after = mark(conn)?;
        let old = serde_json::to_value(before).map_err(AppError::internal)?;
        crate::audit::record(
            conn,
            &crate::audit::AuditEvent::new(
                Some(&self.caller.actor),
                "delete",
                self.entity,
                &self.caller.meta,
            )
            .record(self.id)
            .site(Some(self.subject.site_id))
            .subject(Some(self.subject.id))
            .old(audit_view(old))
            .reason(Some(self.reason.as_str())),
        )?;
        crate::services::guard::after_change_of(
            conn,
            self.caller,
            (self.entity, self.changed),
            Some(self.id),
            self.subject.site_id,
            self.subject.id,
        )?;
        Ok(after)
    }
}
