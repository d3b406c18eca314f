//! Free text typed by people: reasons for change, AE terms, lot numbers, query messages,
//! names. One rule for all of them, so that what reaches the records, the audit trail and
//! the exports is text a reader can see: no control characters (a BEL, an ANSI escape that
//! repaints a terminal), no bidirectional overrides or isolates (which make a term read
//! differently from what it holds), and at least one visible character (a value of only
//! zero-width spaces is no reason). Newlines and tabs are allowed only where a text may run
//! over several lines (reasons, query messages, the reason an injection was not given);
//! names, terms, codes and lot numbers are one line. Zero-width joiners and the like may
//! appear inside a text (some scripts and emoji need them) but do not count as visible.
//!
//! The value checked is the trimmed one, and it is the one to store.

use crate::domain::FieldError;

/// Whether a text may hold line breaks (LF, or CRLF) and tabs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lines {
    One,
    Many,
}

/// The trimmed `s` when it is acceptable free text of at most `max` characters.
pub fn free_text(field: &str, s: &str, max: usize, lines: Lines) -> Result<String, FieldError> {
    let t = s.trim();
    if t.is_empty() {
        return Err(FieldError::new(field, "must not be empty"));
    }
    if t.chars().count() > max {
        return Err(FieldError::new(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    let mut chars = t.chars().peekable();
    while let Some(c) = chars.next() {
        let line_break = c == '\n' || (c == '\r' && chars.peek() == Some(&'\n')) || c == '\t';
        if line_break && lines == Lines::Many {
            continue;
        }
        if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') {
            let what = if line_break {
                "must be a single line (no line breaks or tabs)".to_owned()
            } else {
                format!(
                    "must not contain control characters (U+{:04X})",
                    u32::from(c)
                )
            };
            return Err(FieldError::new(field, what));
        }
        if is_bidi_control(c) {
            return Err(FieldError::new(
                field,
                format!(
                    "must not contain bidirectional override or isolate characters (U+{:04X})",
                    u32::from(c)
                ),
            ));
        }
    }
    if !t.chars().any(is_visible) {
        return Err(FieldError::new(
            field,
            "must contain at least one visible character",
        ));
    }
    Ok(t.to_owned())
}

/// Embeddings, overrides and isolates (LRE, RLE, PDF, LRO, RLO, LRI, RLI, FSI, PDI): they
/// reorder what follows them. The marks (LRM, RLM, ALM) only nudge neutral characters, and
/// right-to-left text needs them: they are allowed, as invisible.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Neither white space nor a control nor a default-ignorable code point (Unicode
/// DerivedCoreProperties: zero-width spaces and joiners, bidi marks, soft hyphen, fillers,
/// variation selectors, tags): something a reader sees.
fn is_visible(c: char) -> bool {
    !(c.is_whitespace()
        || c.is_control()
        || matches!(
            c,
            '\u{00AD}'
                | '\u{034F}'
                | '\u{061C}'
                | '\u{115F}'..='\u{1160}'
                | '\u{17B4}'..='\u{17B5}'
                | '\u{180B}'..='\u{180F}'
                | '\u{200B}'..='\u{200F}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2060}'..='\u{206F}'
                | '\u{2800}'
                | '\u{3164}'
                | '\u{FE00}'..='\u{FE0F}'
                | '\u{FEFF}'
                | '\u{FFA0}'
                | '\u{FFF0}'..='\u{FFF8}'
                | '\u{1BCA0}'..='\u{1BCA3}'
                | '\u{1D173}'..='\u{1D17A}'
                | '\u{E0000}'..='\u{E0FFF}'
        ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str, lines: Lines) -> Option<String> {
        free_text("f", s, 20, lines).ok()
    }

    #[test]
    fn stores_the_trimmed_value_it_checked() {
        assert_eq!(ok("  Rash \n", Lines::One).as_deref(), Some("Rash"));
        let padded = format!("{}{}", "x".repeat(20), " ".repeat(1000));
        assert_eq!(ok(&padded, Lines::One), Some("x".repeat(20)));
        assert_eq!(ok(&"x".repeat(21), Lines::One), None);
    }

    #[test]
    fn refuses_controls_and_bidi_overrides() {
        for bad in [
            "\u{7}",
            "a\u{7}b",
            "\u{1b}[31mred",
            "a\u{0}b",
            "a\u{85}b",
            "abc\u{202E}fdp.exe",
            "\u{2067}x\u{2069}",
        ] {
            assert_eq!(ok(bad, Lines::Many), None, "{bad:?}");
        }
    }

    #[test]
    fn line_breaks_only_where_a_text_may_run_over_lines() {
        for s in ["two\nlines", "two\r\nlines", "a\tb"] {
            assert_eq!(ok(s, Lines::Many).as_deref(), Some(s));
            assert_eq!(ok(s, Lines::One), None, "{s:?}");
        }
        assert_eq!(ok("lone\rreturn", Lines::Many), None);
        assert_eq!(ok("a\u{2028}b", Lines::Many), None);
    }

    #[test]
    fn needs_something_visible() {
        for s in [
            "",
            "   ",
            "\u{200B}",
            "\u{200B}\u{FEFF}\u{2060}",
            "\u{200E}\u{00AD}",
            "\u{3164}",
        ] {
            assert_eq!(ok(s, Lines::One), None, "{s:?}");
        }
        // joiners and marks are fine inside visible text
        for s in ["👩\u{200D}⚕️", "می\u{200C}خواهم", "שלום\u{200F} 2", "é"] {
            assert_eq!(ok(s, Lines::One).as_deref(), Some(s));
        }
    }
}
