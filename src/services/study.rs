//! Reading a study definition file: the I/O around `domain::study::parse`, shared by the
//! server's start-up and `casebook study check`.

use std::path::Path;

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
