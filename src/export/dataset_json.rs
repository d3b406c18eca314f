//! CDISC Dataset-JSON v1.1 for the SDTM datasets: the rows the CSV and XPT writers get
//! (`sdtm::write`), described by the metadata Define-XML gives them (`define`): the
//! ItemGroupDef and ItemDef OIDs, labels, data types, text lengths and key sequences.
//!
//! Dataset-JSON puts `records` (the row count) before `rows`, and the attributes in that
//! order are what lets a reader stream the file. The count is only known once the rows are
//! written, so they are encoded into a [`Spill`] first: memory up to [`SPILL_AT`], then an
//! unnamed temporary file. Memory stays bounded whatever the size, at the cost of sending
//! the first byte only once the last row is encoded (and of the disk space of the rows).
//!
//! Values: text as JSON strings, exactly as stored (no spreadsheet guard, as in XPT); an
//! empty text is `""` (SDTM, like SAS, has no null text: CDISC's own DM example does the
//! same); numbers as JSON numbers written as the CSV writes them (`3`, `10.5`); a missing
//! number is `null`.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Seek, SeekFrom, Write};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use super::define::{data_type, item_group_oid, item_oid, key_sequence, metadata_version_oid};
use super::sdtm::dataset_label;
use super::text::timestamp;
use super::xpt::{Cell, Var, VarType};
use super::Job;

/// Rows kept in memory before they go to a temporary file.
const SPILL_AT: usize = 1024 * 1024;

/// One entry of `columns`, in the specification's attribute order.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Column {
    #[serde(rename = "itemOID")]
    item_oid: String,
    name: String,
    label: String,
    data_type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    length: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key_sequence: Option<u8>,
}

/// Dataset-JSON's logical type of a variable, from its Define-XML data type: text is
/// `string`; a partial date/time (`--DTC`) is `date` when it holds at most a date
/// (10 characters), else `datetime`.
fn logical_type(var: &Var) -> &'static str {
    match (data_type(var), var.kind) {
        ("integer", _) => "integer",
        ("float", _) => "float",
        ("partialDatetime", VarType::Char(n)) if n <= 10 => "date",
        ("partialDatetime", _) => "datetime",
        _ => "string",
    }
}

/// The columns of dataset `code`. `length` is Define-XML's Length of text variables (a
/// number of characters); Define's Length of numbers is SAS's 8 bytes, not a text length,
/// and is left out, as CDISC's examples do.
fn columns(code: &str, vars: &[Var]) -> Vec<Column> {
    vars.iter()
        .map(|v| Column {
            item_oid: item_oid(code, &v.name),
            name: v.name.to_string(),
            label: v.label.to_string(),
            data_type: logical_type(v),
            length: match (v.kind, data_type(v)) {
                (VarType::Char(n), "text") => Some(n),
                _ => None,
            },
            key_sequence: key_sequence(code, &v.name),
        })
        .collect()
}

/// The rows of a dataset being written, and how many.
#[derive(Default)]
pub struct JsonRows {
    spill: Spill,
    n: u64,
}

impl JsonRows {
    /// Encodes one row as a JSON array.
    pub fn row(&mut self, cells: &[Cell<'_>]) -> io::Result<()> {
        let w = &mut self.spill;
        w.write_all(if self.n == 0 { b"\n[" } else { b",\n[" })?;
        for (i, cell) in cells.iter().enumerate() {
            if i > 0 {
                w.write_all(b",")?;
            }
            match cell {
                Cell::Text(s) => serde_json::to_writer(&mut *w, s).map_err(io::Error::other)?,
                // as the CSV writes numbers: shortest exact decimal, never an exponent
                Cell::Num(Some(n)) if n.is_finite() => write!(w, "{n}")?,
                Cell::Num(_) => w.write_all(b"null")?,
            }
        }
        w.write_all(b"]")?;
        self.n += 1;
        Ok(())
    }

    /// Writes the whole file to `out`: the metadata with the row count, then the rows.
    pub fn finish(
        self,
        out: &mut impl Write,
        job: &Job,
        code: &str,
        vars: &[Var],
    ) -> io::Result<()> {
        let def = &job.study;
        let study = def.study.id.as_str();
        let metadata = Metadata {
            created: timestamp(job.started),
            version: "1.1.0",
            file_oid: format!(
                "CASEBOOK.DATASET.{study}.{code}.{}",
                job.started.format("%Y%m%dT%H%M%S%.6fZ")
            ),
            source_system: SourceSystem {
                name: "Casebook",
                version: env!("CARGO_PKG_VERSION"),
            },
            study_oid: study,
            metadata_version_oid: metadata_version_oid(def),
            // relative, as Define-XML's def:leaf names the datasets: the two travel together
            metadata_ref: "define.xml",
            item_group_oid: item_group_oid(code),
            records: self.n,
            name: code,
            label: dataset_label(code),
            columns: columns(code, vars),
        };
        let mut head = serde_json::to_vec(&metadata).map_err(io::Error::other)?;
        // the object stays open: the rows follow
        head.pop();
        out.write_all(&head)?;
        out.write_all(b",\"rows\":[")?;
        self.spill.drain_into(out)?;
        out.write_all(if self.n == 0 { b"]}\n" } else { b"\n]}\n" })
    }
}

/// The top-level attributes before `rows`, in the specification's order (serde writes a
/// struct's fields in declaration order).
#[derive(Serialize)]
struct Metadata<'a> {
    #[serde(rename = "datasetJSONCreationDateTime")]
    created: String,
    #[serde(rename = "datasetJSONVersion")]
    version: &'static str,
    #[serde(rename = "fileOID")]
    file_oid: String,
    #[serde(rename = "sourceSystem")]
    source_system: SourceSystem,
    #[serde(rename = "studyOID")]
    study_oid: &'a str,
    #[serde(rename = "metaDataVersionOID")]
    metadata_version_oid: String,
    #[serde(rename = "metaDataRef")]
    metadata_ref: &'static str,
    #[serde(rename = "itemGroupOID")]
    item_group_oid: String,
    records: u64,
    name: &'a str,
    label: String,
    columns: Vec<Column>,
}

#[derive(Serialize)]
struct SourceSystem {
    name: &'static str,
    version: &'static str,
}

/// Bytes kept in memory up to [`SPILL_AT`], then in a temporary file.
#[derive(Default)]
struct Spill {
    mem: Vec<u8>,
    file: Option<BufWriter<File>>,
}

static SPILLS: AtomicU64 = AtomicU64::new(0);

/// A temporary file with no name: removed as soon as it is open (Unix keeps the open file),
/// so that nothing is left behind when the export stops, fails or the process dies; the
/// space is freed when the handle closes.
fn unnamed_file() -> io::Result<File> {
    let path = std::env::temp_dir().join(format!(
        "casebook-dataset-json-{}-{}",
        std::process::id(),
        SPILLS.fetch_add(1, Ordering::Relaxed)
    ));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)?;
    std::fs::remove_file(&path)?;
    Ok(file)
}

impl Spill {
    fn drain_into(self, out: &mut impl Write) -> io::Result<()> {
        match self.file {
            None => out.write_all(&self.mem),
            Some(w) => {
                let mut file = w.into_inner().map_err(|e| e.into_error())?;
                file.seek(SeekFrom::Start(0))?;
                io::copy(&mut file, out).map(|_| ())
            }
        }
    }
}

impl Write for Spill {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if let Some(f) = &mut self.file {
            return f.write(data);
        }
        if self.mem.len() + data.len() > SPILL_AT {
            let mut f = BufWriter::with_capacity(64 * 1024, unnamed_file()?);
            f.write_all(&self.mem)?;
            self.mem = Vec::new();
            let n = f.write(data)?;
            self.file = Some(f);
            return Ok(n);
        }
        self.mem.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.file {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drained(s: Spill) -> Vec<u8> {
        let mut v = Vec::new();
        s.drain_into(&mut v).unwrap_or_else(|e| panic!("{e}"));
        v
    }

    #[test]
    fn rows_beyond_the_memory_limit_go_to_a_file_and_come_back_whole() {
        let mut s = Spill::default();
        let line = vec![b'x'; 1000];
        let mut want = Vec::new();
        for i in 0..(SPILL_AT / 1000 + 50) {
            let mut l = line.clone();
            l[0] = (i % 251) as u8;
            s.write_all(&l).unwrap_or_else(|e| panic!("{e}"));
            want.extend_from_slice(&l);
        }
        assert!(s.file.is_some(), "spilled");
        assert!(s.mem.is_empty(), "memory given back");
        assert_eq!(drained(s), want);
    }

    #[test]
    fn small_rows_stay_in_memory() {
        let mut s = Spill::default();
        s.write_all(b"abc").unwrap_or_else(|e| panic!("{e}"));
        assert!(s.file.is_none());
        assert_eq!(drained(s), b"abc");
    }

    #[test]
    fn columns_carry_defines_oids_types_lengths_and_keys() {
        let vars = [
            Var::char("STUDYID", "Study Identifier", 12),
            Var::num("LBSEQ", "Sequence Number"),
            Var::num("LBSTRESN", "Numeric Result"),
            Var::char("LBDTC", "Date/Time", 19),
            Var::char("RFICDTC", "Date", 10),
        ];
        let c = columns("LB", &vars);
        assert_eq!(c[0].item_oid, "IT.LB.STUDYID");
        assert_eq!(
            (c[0].data_type, c[0].length, c[0].key_sequence),
            ("string", Some(12), Some(1))
        );
        assert_eq!(
            (c[1].data_type, c[1].length, c[1].key_sequence),
            ("integer", None, Some(3))
        );
        assert_eq!((c[2].data_type, c[2].length), ("float", None));
        assert_eq!((c[3].data_type, c[3].length), ("datetime", None));
        assert_eq!(c[4].data_type, "date");
    }
}
