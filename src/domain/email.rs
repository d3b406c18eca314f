//! E-mail addresses: the one bound, for accounts created and e-mails typed at login.

use crate::domain::FieldError;

/// RFC 5321 caps a forward path at 256 octets, brackets included: 254 for the address.
pub const MAX_BYTES: usize = 254;

/// An address for a new account: trimmed, at most [`MAX_BYTES`], `local@domain.tld`, no spaces.
pub fn parse(field: &str, email: &str) -> Result<String, FieldError> {
    let e = email.trim();
    let ok = e.len() <= MAX_BYTES
        && e.split_once('@')
            .is_some_and(|(l, d)| !l.is_empty() && d.contains('.') && !d.starts_with('.'))
        && !e.contains(char::is_whitespace);
    ok.then(|| e.to_owned())
        .ok_or_else(|| FieldError::new(field, "not an e-mail address"))
}

/// An e-mail typed at login, trimmed and lower-cased. Only its length is checked: anything
/// else answers as an unknown account would, but an unknown e-mail is audited as typed and
/// the audit log is append-only, so an over-long one never gets that far.
pub fn typed_at_login(field: &str, email: &str) -> Result<String, FieldError> {
    let e = email.trim();
    if e.len() > MAX_BYTES {
        return Err(FieldError::new(
            field,
            format!("must be at most {MAX_BYTES} characters"),
        ));
    }
    Ok(e.to_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_is_the_same_for_accounts_and_logins() {
        let longest = format!("{}@site.fr", "a".repeat(MAX_BYTES - 8));
        assert!(parse("email", &longest).is_ok());
        assert!(typed_at_login("email", &longest).is_ok());
        let over = format!("a{longest}");
        assert!(parse("email", &over).is_err());
        assert!(typed_at_login("email", &over).is_err());
        assert_eq!(
            typed_at_login("email", "  Nina@Site.FR ").ok().as_deref(),
            Some("nina@site.fr")
        );
        assert!(typed_at_login("email", "admin").is_ok(), "no format check");
    }
}
