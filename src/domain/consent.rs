//! What an informed consent record must satisfy: the same rules when it is recorded and
//! when it is corrected.

use chrono::NaiveDate;

use super::time::DateFloor;
use super::values::bounded_text;
use crate::domain::FieldError;

pub const MAX_RELATIONSHIP_CHARS: usize = 100;

/// A consent's fields as they are to be stored.
pub struct ConsentForm<'a> {
    pub form_version: &'a str,
    pub signed_on: NaiveDate,
    pub legal_representative: bool,
    pub representative_relationship: Option<&'a str>,
    /// the subject's date floor (birth month, 1900)
    pub floor: DateFloor,
}

/// Checks `form` against the form versions in force and the site's `today`; answers the
/// representative relationship as it is stored (trimmed), or every field in error.
pub fn check(
    form: &ConsentForm,
    versions: &[String],
    today: NaiveDate,
) -> Result<Option<String>, Vec<FieldError>> {
    let mut errors = Vec::new();
    if !versions.iter().any(|v| v == form.form_version) {
        errors.push(FieldError::new(
            "form_version",
            format!("not a version in force: {}", versions.join(", ")),
        ));
    }
    if form.signed_on > today {
        errors.push(FieldError::new("signed_on", "must not be in the future"));
    }
    if let Err(e) = form.floor.check("signed_on", form.signed_on) {
        errors.push(e);
    }
    let relationship = match form.representative_relationship {
        None if form.legal_representative => {
            errors.push(FieldError::new(
                "representative_relationship",
                "required when a legal representative signs",
            ));
            None
        }
        None => None,
        Some(r) => bounded_text("representative_relationship", r, MAX_RELATIONSHIP_CHARS)
            .map_err(|e| errors.push(e))
            .ok(),
    };
    if errors.is_empty() {
        Ok(relationship)
    } else {
        Err(errors)
    }
}

/// The dates between which clinical data may lie: the first consent signed, and the
/// earliest withdrawal, if any.
pub struct ConsentWindow {
    pub first_signed: Option<NaiveDate>,
    pub withdrawn_on: Option<NaiveDate>,
}

impl ConsentWindow {
    /// Hard check: a record dated `date` (site local) must lie inside the consent window.
    pub fn check(&self, field: &str, date: NaiveDate) -> Result<(), FieldError> {
        match self.first_signed {
            None => Err(FieldError::new(
                field,
                "no informed consent is recorded for this subject: record the consent first",
            )),
            Some(signed) if date < signed => Err(FieldError::new(
                field,
                format!("is before the informed consent signed on {signed}"),
            )),
            _ => match self.withdrawn_on {
                Some(w) if date > w => Err(FieldError::new(
                    field,
                    format!("is after the consent withdrawal on {w}"),
                )),
                _ => Ok(()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form<'a>(relationship: Option<&'a str>) -> ConsentForm<'a> {
        ConsentForm {
            form_version: "2.0",
            signed_on: NaiveDate::from_ymd_opt(2026, 10, 1).unwrap_or_default(),
            legal_representative: true,
            representative_relationship: relationship,
            floor: DateFloor::of_birth("2023-04"),
        }
    }

    #[test]
    fn a_representative_needs_a_bounded_relationship() {
        let versions = vec!["2.0".to_owned()];
        let today = NaiveDate::from_ymd_opt(2026, 12, 1).unwrap_or_default();
        assert_eq!(
            check(&form(Some(" mother ")), &versions, today).ok(),
            Some(Some("mother".to_owned()))
        );
        for bad in [None, Some(""), Some("   ")] {
            assert!(check(&form(bad), &versions, today).is_err(), "{bad:?}");
        }
        let long = "x".repeat(MAX_RELATIONSHIP_CHARS + 1);
        assert!(check(&form(Some(&long)), &versions, today).is_err());
    }
}
