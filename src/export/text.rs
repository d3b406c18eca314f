//! Encoding helpers shared by the exports: RFC 4180 CSV fields, XML escaping, ISO 8601.

use std::io::{self, Write};

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use chrono_tz::Tz;

/// One CSV record being written: fields separated by commas, ended by CRLF (RFC 4180).
pub struct Csv<'a, W: Write> {
    w: &'a mut W,
    first: bool,
}

impl<'a, W: Write> Csv<'a, W> {
    pub fn new(w: &'a mut W) -> Self {
        Self { w, first: true }
    }

    fn sep(&mut self) -> io::Result<()> {
        if self.first {
            self.first = false;
            Ok(())
        } else {
            self.w.write_all(b",")
        }
    }

    /// A field, quoted when it holds a comma, a double quote, CR or LF; quotes doubled.
    /// A field a spreadsheet would run as a formula gets a leading `'` ([`formula_like`]).
    pub fn text(&mut self, s: &str) -> io::Result<&mut Self> {
        self.sep()?;
        let guard: &[u8] = if formula_like(s) { b"'" } else { b"" };
        if s.bytes().any(|b| matches!(b, b',' | b'"' | b'\n' | b'\r')) {
            self.w.write_all(b"\"")?;
            self.w.write_all(guard)?;
            let mut rest = s;
            while let Some(i) = rest.find('"') {
                self.w.write_all(&rest.as_bytes()[..=i])?;
                self.w.write_all(b"\"")?;
                rest = &rest[i + 1..];
            }
            self.w.write_all(rest.as_bytes())?;
            self.w.write_all(b"\"")?;
        } else {
            self.w.write_all(guard)?;
            self.w.write_all(s.as_bytes())?;
        }
        Ok(self)
    }

    pub fn opt(&mut self, s: Option<&str>) -> io::Result<&mut Self> {
        self.text(s.unwrap_or_default())
    }

    pub fn int(&mut self, n: i64) -> io::Result<&mut Self> {
        self.sep()?;
        write!(self.w, "{n}")?;
        Ok(self)
    }

    pub fn opt_int(&mut self, n: Option<i64>) -> io::Result<&mut Self> {
        match n {
            Some(n) => self.int(n),
            None => self.text(""),
        }
    }

    pub fn num(&mut self, n: Option<f64>) -> io::Result<&mut Self> {
        self.sep()?;
        if let Some(n) = n.filter(|n| n.is_finite()) {
            write!(self.w, "{n}")?;
        }
        Ok(self)
    }

    pub fn bool(&mut self, b: bool) -> io::Result<&mut Self> {
        self.text(if b { "true" } else { "false" })
    }

    pub fn opt_bool(&mut self, b: Option<bool>) -> io::Result<&mut Self> {
        match b {
            Some(b) => self.bool(b),
            None => self.text(""),
        }
    }

    pub fn ts(&mut self, t: DateTime<Utc>) -> io::Result<&mut Self> {
        self.text(&timestamp(t))
    }

    pub fn opt_ts(&mut self, t: Option<DateTime<Utc>>) -> io::Result<&mut Self> {
        match t {
            Some(t) => self.ts(t),
            None => self.text(""),
        }
    }

    pub fn date(&mut self, d: NaiveDate) -> io::Result<&mut Self> {
        self.sep()?;
        write!(self.w, "{}", d.format("%Y-%m-%d"))?;
        Ok(self)
    }

    pub fn opt_date(&mut self, d: Option<NaiveDate>) -> io::Result<&mut Self> {
        match d {
            Some(d) => self.date(d),
            None => self.text(""),
        }
    }

    pub fn end(&mut self) -> io::Result<()> {
        self.w.write_all(b"\r\n")
    }
}

/// True for a text a spreadsheet (Excel, LibreOffice, Google Sheets) would evaluate as a
/// formula when it opens the CSV: one starting with `=`, `+`, `-`, `@`, tab, CR or LF (OWASP
/// "CSV Injection"). Site users type free text (AE terms, lot numbers, query text) that
/// sponsors open in spreadsheets, so such a cell is written with a leading `'`, which the
/// spreadsheet shows as text. A plain decimal number (`-1.5`, `-3`) is left as it is: it
/// cannot call anything, and numeric columns must stay numbers. XPT, ODM and JSON carry the
/// exact value.
pub fn formula_like(s: &str) -> bool {
    matches!(
        s.as_bytes().first(),
        Some(b'=' | b'+' | b'-' | b'@' | b'\t' | b'\r' | b'\n')
    ) && !plain_number(s)
}

/// `-?digits(.digits)?`: how the exports write a decimal.
fn plain_number(s: &str) -> bool {
    let digits = s.strip_prefix('-').unwrap_or(s);
    let (int, frac) = digits.split_once('.').unwrap_or((digits, "0"));
    !int.is_empty()
        && !frac.is_empty()
        && int.bytes().all(|b| b.is_ascii_digit())
        && frac.bytes().all(|b| b.is_ascii_digit())
}

/// Writes a header record.
pub fn csv_header<W: Write>(w: &mut W, columns: &[&str]) -> io::Result<()> {
    let mut c = Csv::new(w);
    for col in columns {
        c.text(col)?;
    }
    c.end()
}

/// ISO 8601 in UTC with `Z`; fractional seconds only when there are some.
pub fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// ISO 8601 site-local date and time without offset, as SDTM --DTC carries collected times.
pub fn local_dtc(t: DateTime<Utc>, tz: Tz) -> String {
    t.with_timezone(&tz).format("%Y-%m-%dT%H:%M:%S").to_string()
}

/// SDTM study day: day 1 is the reference date, the day before is -1 (there is no day 0).
pub fn study_day(reference: NaiveDate, date: NaiveDate) -> i64 {
    let d = (date - reference).num_days();
    if d >= 0 {
        d + 1
    } else {
        d
    }
}

/// A full date from a partial ISO 8601 date (`YYYY`, `YYYY-MM`, `YYYY-MM-DD`), when complete.
pub fn full_date(partial: &str) -> Option<NaiveDate> {
    if partial.len() == 10 {
        NaiveDate::parse_from_str(partial, "%Y-%m-%d").ok()
    } else {
        None
    }
}

/// Writes `s` escaped for an XML attribute value or text node. Characters XML 1.0 cannot
/// carry (C0 controls other than tab, LF, CR) become U+FFFD; tab, LF and CR are written as
/// character references so that attribute values keep them.
pub fn xml_escape<W: Write>(w: &mut W, s: &str) -> io::Result<()> {
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let rep: &[u8] = match b {
            b'&' => b"&amp;",
            b'<' => b"&lt;",
            b'>' => b"&gt;",
            b'"' => b"&quot;",
            b'\t' => b"&#9;",
            b'\n' => b"&#10;",
            b'\r' => b"&#13;",
            0..=0x1f => "\u{FFFD}".as_bytes(),
            _ => continue,
        };
        w.write_all(&bytes[start..i])?;
        w.write_all(rep)?;
        start = i + 1;
    }
    w.write_all(&bytes[start..])
}

/// Truncates to at most `max` bytes on a character boundary.
pub fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while end > 0 && !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csv(f: impl FnOnce(&mut Csv<'_, Vec<u8>>) -> io::Result<()>) -> String {
        let mut out = Vec::new();
        let mut c = Csv::new(&mut out);
        f(&mut c).unwrap_or_default();
        String::from_utf8(out).unwrap_or_default()
    }

    #[test]
    fn csv_quotes_only_what_needs_it() {
        let s = csv(|c| {
            c.text("plain")?
                .text("a,b")?
                .text("say \"hi\"")?
                .text("two\nlines")?
                .opt(None)?
                .int(-3)?
                .num(Some(38.5))?
                .num(None)?
                .bool(true)?;
            c.end()
        });
        assert_eq!(
            s,
            "plain,\"a,b\",\"say \"\"hi\"\"\",\"two\nlines\",,-3,38.5,,true\r\n"
        );
    }

    #[test]
    fn csv_neutralises_formulas_but_not_numbers() {
        let s = csv(|c| {
            c.text("=1+2")?
                .text("+1")?
                .text("@SUM(A1)")?
                .text("-cmd|' /C calc'!A0")?
                .text("\tx")?
                .text("=a,b")?
                .text("-1.5")?
                .text("-3")?
                .text("-")?
                .text("1-2")?;
            c.end()
        });
        assert_eq!(
            s,
            "'=1+2,'+1,'@SUM(A1),'-cmd|' /C calc'!A0,'\tx,\"'=a,b\",-1.5,-3,'-,1-2\r\n"
        );
    }

    #[test]
    fn xml_escapes_markup_and_controls() {
        let mut out = Vec::new();
        xml_escape(&mut out, "a<b & \"c\"\n\u{1}é").unwrap_or_default();
        assert_eq!(
            String::from_utf8(out).unwrap_or_default(),
            "a&lt;b &amp; &quot;c&quot;&#10;\u{FFFD}é"
        );
    }

    #[test]
    fn study_days_have_no_day_zero() {
        let d1 = NaiveDate::from_ymd_opt(2026, 10, 5).unwrap_or_default();
        let d = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap_or_default();
        assert_eq!(study_day(d1, d("2026-10-05")), 1);
        assert_eq!(study_day(d1, d("2026-10-06")), 2);
        assert_eq!(study_day(d1, d("2026-10-04")), -1);
        assert_eq!(study_day(d1, d("2026-10-01")), -4);
    }

    #[test]
    fn timestamps_are_utc_with_z() {
        let t = DateTime::parse_from_rfc3339("2026-10-05T08:00:00+02:00")
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default();
        assert_eq!(timestamp(t), "2026-10-05T06:00:00Z");
        assert_eq!(local_dtc(t, Tz::Europe__Paris), "2026-10-05T08:00:00");
    }

    #[test]
    fn truncation_keeps_characters_whole() {
        assert_eq!(truncate("ééé", 3), "é");
        assert_eq!(truncate("abc", 8), "abc");
    }
}
