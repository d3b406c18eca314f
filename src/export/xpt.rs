//! SAS XPORT version 5 transport files (SAS TS-140), written as a stream.
//!
//! Layout: 80-byte header records (library, member, descriptor), one 140-byte NAMESTR per
//! variable (padded to 80), then the observations back to back, padded with blanks to 80 at
//! the end. Numerics are 8-byte IBM hexadecimal floating point; a missing numeric is `.`
//! (0x2E followed by zeros). Names are at most 8 characters, labels 40. Version 5 needs no
//! observation count in the header, so a file streams in one pass.
//!
//! Why not a crate: `xportrs` builds whole datasets in memory (and pulls `regex`, pre-1.0);
//! `sas_xport` streams correctly but churns its API between minor versions (0.3 -> 0.4 in
//! two weeks) and brings `encoding_rs` for transcoding we do not need. The format is small
//! and fully specified; this file is tested against pyreadstat (tests/api/exports.rs).

use std::borrow::Cow;
use std::io::{self, Write};

use chrono::{DateTime, Utc};

use super::text::truncate;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VarType {
    /// character, with its length in bytes (1-200)
    Char(u16),
    /// numeric, 8 bytes
    Num,
}

/// One variable of a dataset.
#[derive(Debug, Clone)]
pub struct Var {
    /// at most 8 characters, upper case
    pub name: Cow<'static, str>,
    /// at most 40 characters
    pub label: Cow<'static, str>,
    pub kind: VarType,
}

impl Var {
    pub const fn char(name: &'static str, label: &'static str, len: u16) -> Self {
        Self {
            name: Cow::Borrowed(name),
            label: Cow::Borrowed(label),
            kind: VarType::Char(len),
        }
    }
    pub const fn num(name: &'static str, label: &'static str) -> Self {
        Self {
            name: Cow::Borrowed(name),
            label: Cow::Borrowed(label),
            kind: VarType::Num,
        }
    }
    /// A variable whose name or label the study definition gives.
    pub fn owned(name: String, label: String, kind: VarType) -> Self {
        Self {
            name: Cow::Owned(name),
            label: Cow::Owned(label),
            kind,
        }
    }
    fn len(&self) -> usize {
        match self.kind {
            VarType::Char(n) => usize::from(n),
            VarType::Num => 8,
        }
    }
}

/// A value of an observation.
#[derive(Debug, Clone, Copy)]
pub enum Cell<'a> {
    Text(&'a str),
    Num(Option<f64>),
}

const MISSING: [u8; 8] = [0x2e, 0, 0, 0, 0, 0, 0, 0];

/// IEEE 754 double to IBM System/360 hexadecimal double (exact: 53 bits fit in 56).
pub fn ibm(x: f64) -> [u8; 8] {
    if !x.is_finite() {
        return MISSING;
    }
    if x == 0.0 {
        return [0; 8];
    }
    let bits = x.to_bits();
    let sign = ((bits >> 63) as u8) << 7;
    let biased = ((bits >> 52) & 0x7ff) as i32;
    let fraction = bits & ((1u64 << 52) - 1);
    // x = m * 2^e2, with m normalised to [2^52, 2^53)
    let (mut m, mut e2) = if biased == 0 {
        (fraction, -1074)
    } else {
        (fraction | (1 << 52), biased - 1075)
    };
    while m & (1 << 52) == 0 {
        m <<= 1;
        e2 -= 1;
    }
    // IBM: x = M * 16^(E-64) / 2^56 with M in [2^52, 2^56): 4(E-64) - 56 = e2 - s
    let t = e2 + 56;
    let s = t.rem_euclid(4);
    let mut e = (t - s) / 4 + 64;
    let mut mm = m << s;
    if e > 127 {
        // beyond IBM range (about 7.2e75): the largest magnitude
        return [sign | 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
    }
    if e < 0 {
        // below range: denormalise, possibly to zero
        let shift = (-e * 4) as u32;
        mm = if shift >= 56 { 0 } else { mm >> shift };
        e = 0;
        if mm == 0 {
            return [0; 8];
        }
    }
    let mut out = [0u8; 8];
    out[0] = sign | e as u8;
    for (i, b) in out.iter_mut().enumerate().skip(1) {
        *b = (mm >> (8 * (7 - i))) as u8;
    }
    out
}

/// `ddMMMyy:hh:mm:ss`, as the headers carry dates.
fn sas_datetime(t: DateTime<Utc>) -> String {
    t.format("%d%b%y:%H:%M:%S").to_string().to_ascii_uppercase()
}

/// `s` left-justified in exactly `n` bytes, blank-padded (truncated on a char boundary).
fn field<W: Write>(w: &mut W, s: &str, n: usize) -> io::Result<()> {
    let s = truncate(s, n);
    w.write_all(s.as_bytes())?;
    pad(w, n - s.len(), b' ')
}

fn pad<W: Write>(w: &mut W, n: usize, byte: u8) -> io::Result<()> {
    const BLANKS: [u8; 80] = [b' '; 80];
    const ZEROS: [u8; 80] = [0; 80];
    let src = if byte == b' ' { &BLANKS } else { &ZEROS };
    let mut left = n;
    while left > 0 {
        let k = left.min(80);
        w.write_all(&src[..k])?;
        left -= k;
    }
    Ok(())
}

const SAS_VERSION: &str = "9.4";
const SAS_OS: &str = "Casebook";

/// Writes one dataset of one file: [`XptWriter::begin`], rows, [`XptWriter::end`].
pub struct XptWriter {
    vars: Vec<Var>,
    obs_bytes: u64,
}

impl XptWriter {
    /// Writes the library, member and variable headers.
    pub fn begin<W: Write>(
        w: &mut W,
        dataset: &str,
        label: &str,
        vars: Vec<Var>,
        at: DateTime<Utc>,
    ) -> io::Result<Self> {
        let stamp = sas_datetime(at);
        w.write_all(
            b"HEADER RECORD*******LIBRARY HEADER RECORD!!!!!!!000000000000000000000000000000  ",
        )?;
        field(w, "SAS", 8)?;
        field(w, "SAS", 8)?;
        field(w, "SASLIB", 8)?;
        field(w, SAS_VERSION, 8)?;
        field(w, SAS_OS, 8)?;
        pad(w, 24, b' ')?;
        field(w, &stamp, 16)?;
        field(w, &stamp, 16)?;
        pad(w, 64, b' ')?;
        w.write_all(
            b"HEADER RECORD*******MEMBER  HEADER RECORD!!!!!!!000000000000000001600000000140  ",
        )?;
        w.write_all(
            b"HEADER RECORD*******DSCRPTR HEADER RECORD!!!!!!!000000000000000000000000000000  ",
        )?;
        field(w, "SAS", 8)?;
        field(w, &dataset.to_ascii_uppercase(), 8)?;
        field(w, "SASDATA", 8)?;
        field(w, SAS_VERSION, 8)?;
        field(w, SAS_OS, 8)?;
        pad(w, 24, b' ')?;
        field(w, &stamp, 16)?;
        field(w, &stamp, 16)?;
        pad(w, 16, b' ')?;
        field(w, label, 40)?;
        field(w, "", 8)?;
        write!(
            w,
            "HEADER RECORD*******NAMESTR HEADER RECORD!!!!!!!000000{:04}00000000000000000000  ",
            vars.len()
        )?;
        let mut pos: u32 = 0;
        for (i, v) in vars.iter().enumerate() {
            let (ntype, len): (u16, u16) = match v.kind {
                VarType::Num => (1, 8),
                VarType::Char(n) => (2, n),
            };
            w.write_all(&ntype.to_be_bytes())?;
            w.write_all(&0u16.to_be_bytes())?; // nhfun
            w.write_all(&len.to_be_bytes())?;
            w.write_all(&(i as u16 + 1).to_be_bytes())?; // nvar0
            field(w, &v.name.to_ascii_uppercase(), 8)?;
            field(w, &v.label, 40)?;
            field(w, "", 8)?; // nform
            w.write_all(&0u16.to_be_bytes())?; // nfl
            w.write_all(&0u16.to_be_bytes())?; // nfd
            w.write_all(&0u16.to_be_bytes())?; // nfj: left
            pad(w, 2, 0)?; // nfill
            field(w, "", 8)?; // niform
            w.write_all(&0u16.to_be_bytes())?; // nifl
            w.write_all(&0u16.to_be_bytes())?; // nifd
            w.write_all(&pos.to_be_bytes())?; // npos
            pad(w, 52, 0)?; // rest
            pos += u32::from(len);
        }
        let namestr = vars.len() * 140;
        pad(w, (80 - namestr % 80) % 80, b' ')?;
        w.write_all(
            b"HEADER RECORD*******OBS     HEADER RECORD!!!!!!!000000000000000000000000000000  ",
        )?;
        Ok(Self { vars, obs_bytes: 0 })
    }

    /// One observation: one cell per variable, in order.
    pub fn row<W: Write>(&mut self, w: &mut W, cells: &[Cell<'_>]) -> io::Result<()> {
        debug_assert_eq!(cells.len(), self.vars.len());
        for (v, c) in self.vars.iter().zip(cells) {
            match (v.kind, c) {
                (VarType::Char(n), Cell::Text(s)) => field(w, s, usize::from(n))?,
                (VarType::Char(n), Cell::Num(x)) => {
                    let s = x.map(|x| x.to_string()).unwrap_or_default();
                    field(w, &s, usize::from(n))?
                }
                (VarType::Num, Cell::Num(x)) => w.write_all(&x.map(ibm).unwrap_or(MISSING))?,
                (VarType::Num, Cell::Text(_)) => w.write_all(&MISSING)?,
            }
            self.obs_bytes += v.len() as u64;
        }
        Ok(())
    }

    /// Pads the last record to 80 bytes.
    pub fn end<W: Write>(self, w: &mut W) -> io::Result<()> {
        let rest = (self.obs_bytes % 80) as usize;
        pad(w, (80 - rest) % 80, b' ')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ibm_known_values() {
        assert_eq!(ibm(1.0), [0x41, 0x10, 0, 0, 0, 0, 0, 0]);
        assert_eq!(ibm(0.5), [0x40, 0x80, 0, 0, 0, 0, 0, 0]);
        assert_eq!(ibm(-118.625), [0xc2, 0x76, 0xa0, 0, 0, 0, 0, 0]);
        assert_eq!(ibm(0.0), [0; 8]);
        assert_eq!(ibm(f64::NAN), MISSING);
        assert_eq!(ibm(100.0), [0x42, 0x64, 0, 0, 0, 0, 0, 0]);
    }

    /// Decodes back, to check the round trip of values with fractions.
    fn from_ibm(b: [u8; 8]) -> f64 {
        let sign = if b[0] & 0x80 != 0 { -1.0 } else { 1.0 };
        let e = i32::from(b[0] & 0x7f) - 64;
        let mut m: u64 = 0;
        for byte in &b[1..] {
            m = (m << 8) | u64::from(*byte);
        }
        sign * (m as f64) / 2f64.powi(56) * 16f64.powi(e)
    }

    #[test]
    fn ibm_round_trips() {
        for x in [
            38.5,
            37.2,
            0.1,
            1e-10,
            123456.789,
            -4.0,
            2.5e30,
            40.0,
            1.0 / 3.0,
        ] {
            assert_eq!(from_ibm(ibm(x)), x, "{x}");
        }
    }

    #[test]
    fn headers_are_80_byte_records() {
        let vars = vec![
            Var::char("STUDYID", "Study Identifier", 12),
            Var::num("VSSEQ", "Sequence Number"),
            Var::char("VSTESTCD", "Test Short Name", 8),
        ];
        let mut out = Vec::new();
        let at = DateTime::parse_from_rfc3339("2026-11-22T04:05:06Z")
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default();
        let w = XptWriter::begin(&mut out, "vs", "Vital Signs", vars, at);
        assert!(w.is_ok());
        assert_eq!(out.len() % 80, 0);
        // 3 library + 2 member headers + 2 member records + namestr header + 420 (-> 480) + obs
        assert_eq!(out.len(), 80 * 8 + 480 + 80);
        assert!(String::from_utf8_lossy(&out).contains("22NOV26:04:05:06"));
        if let Ok(mut w) = w {
            let _ = w.row(
                &mut out,
                &[Cell::Text("KD"), Cell::Num(Some(1.0)), Cell::Text("TEMP")],
            );
            let _ = w.end(&mut out);
        }
        assert_eq!(out.len() % 80, 0);
    }
}
