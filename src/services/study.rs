//! Reading a study definition file: the I/O around `domain::study::parse`, shared by the
//! server's start-up and `casebook study check`; and publishing it at start.

use std::path::Path;

use diesel::Connection;
use serde_json::json;

use crate::audit::{self, AuditEvent, RequestMeta};
use crate::db::study_versions::{self, NewVersion};
use crate::db::Pool;
use crate::domain::study::compat::{conflicts, Shape};
use crate::domain::study::view::DefinitionView;
use crate::domain::study::{parse, Definition, DefinitionError};

/// Reads and checks the file; every error names the file and, where it has one, the line.
pub fn check_file(path: &Path) -> Result<Definition, Vec<DefinitionError>> {
    let name = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&name, &text),
        Err(e) => Err(vec![DefinitionError {
            file: name,
            line: None,
            message: format!("cannot read the study definition: {e}"),
        }]),
    }
}

/// For start-up: the definition, or one message listing every error (the server refuses to
/// start on any).
pub fn load(path: &Path) -> Result<Definition, String> {
    check_file(path).map_err(|errors| {
        let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
        format!(
            "CASEBOOK_STUDY: the study definition has {} error(s):\n{}",
            errors.len(),
            lines.join("\n")
        )
    })
}

/// Why a start could not publish the running definition.
#[derive(Debug)]
enum PublishError {
    Db(diesel::result::Error),
    Refused(String),
}

impl From<diesel::result::Error> for PublishError {
    fn from(e: diesel::result::Error) -> Self {
        Self::Db(e)
    }
}

/// At start: publishes the running definition as a new version of its study when its
/// SHA-256 differs from the newest published one, audited in the same transaction. A change
/// that would lose or recode collected data is refused, and the server does not start.
/// Instances starting together take turns (advisory lock): the second finds the version
/// published. Returns the version's id.
pub fn publish(pool: &Pool, def: &Definition, instance: &str) -> Result<i64, String> {
    let mut conn = pool
        .get()
        .map_err(|e| format!("cannot publish the study definition: {e}"))?;
    let result = conn.transaction(|conn| -> Result<i64, PublishError> {
        study_versions::lock(conn, &def.study.id)?;
        let newest = study_versions::newest(conn, &def.study.id)?;
        if let Some(v) = newest.as_ref().filter(|v| v.sha256 == def.sha256) {
            return Ok(v.id);
        }
        let json = serde_json::to_value(DefinitionView::of(def))
            .map_err(|e| PublishError::Refused(e.to_string()))?;
        if let Some(old) = &newest {
            let before = Shape::from_json(&old.definition).map_err(PublishError::Refused)?;
            let after = Shape::from_json(&json).map_err(PublishError::Refused)?;
            let usage = study_versions::usage(conn, &def.study.id, &before)?;
            let found = conflicts(&before, &after, &usage);
            if !found.is_empty() {
                let lines: Vec<String> = found.iter().map(|c| format!("  {c}")).collect();
                return Err(PublishError::Refused(format!(
                    "CASEBOOK_STUDY: the definition of {} (sha256 {}) cannot be published over version {}: {} change(s) would lose or recode collected data:\n{}",
                    def.study.id,
                    def.sha256,
                    old.version,
                    found.len(),
                    lines.join("\n")
                )));
            }
        }
        let version = newest.as_ref().map_or(1, |v| v.version + 1);
        let id = study_versions::insert(
            conn,
            &NewVersion {
                study_id: &def.study.id,
                version,
                declared_version: &def.study.version,
                sha256: &def.sha256,
                definition: &json,
                published_by: instance,
            },
        )?;
        audit::record(
            conn,
            &AuditEvent::new(None, "publish", "study_versions", &RequestMeta::default())
                .by_system("study")
                .record(id)
                .new_values(json!({
                    "study_id": def.study.id,
                    "version": version,
                    "declared_version": def.study.version,
                    "sha256": def.sha256,
                    "published_by": instance,
                })),
        )?;
        tracing::info!(study = %def.study.id, version, sha256 = %def.sha256, "study definition published");
        Ok(id)
    });
    result.map_err(|e| match e {
        PublishError::Refused(m) => m,
        PublishError::Db(e) => format!("cannot publish the study definition: {e}"),
    })
}
