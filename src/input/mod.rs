//! Input: streams rows out of JSONL or CSV files (optionally gzip-compressed) and Parquet
//! files, one at a time, with the line each row starts on (for Parquet, its row number), so
//! that every problem can be named as `file:line`.

mod csv;
pub mod format;
pub mod ids;
mod jsonl;
pub mod parquet;

pub use ids::row_id;

use std::io::{self, BufRead, BufReader, Read};

use serde_json::{Map, Value};

use crate::settings::InputSpec;
pub use format::Format;

/// One row of the input: its fields, and where it was.
#[derive(Debug, Clone)]
pub struct RawRow {
    /// 1-based line in the file where the row starts.
    pub line: u64,
    /// 1-based row number (blank lines and the CSV header do not count).
    pub number: u64,
    pub fields: Map<String, Value>,
}

/// Why a row cannot be used. `line` is where it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub line: u64,
    pub reason: String,
}

/// What reading the next row gave.
pub enum Item {
    Row(RawRow),
    /// A row that cannot be parsed; reading goes on with the next one.
    Bad(Problem),
}

/// A streaming reader of rows.
pub enum Rows {
    Jsonl(jsonl::JsonlRows),
    Csv(Box<csv::CsvRows>),
    Parquet(Box<parquet::ParquetRows>),
}

impl Iterator for Rows {
    type Item = io::Result<Item>;

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Rows::Jsonl(r) => r.next(),
            Rows::Csv(r) => r.next(),
            Rows::Parquet(r) => r.next(),
        }
    }
}

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const READ_BUFFER: usize = 256 * 1024;

/// Opens the input for reading, decompressing gzip when the first bytes say so.
pub fn open(spec: &InputSpec) -> io::Result<Rows> {
    let path = spec.path.as_ref().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "stdin must be spooled to a file first",
        )
    })?;
    if spec.format == Format::Parquet {
        return Ok(Rows::Parquet(Box::new(parquet::ParquetRows::open(path)?)));
    }
    let reader = open_text(path)?;
    Ok(match spec.format {
        Format::Parquet => unreachable!("opened above"),
        Format::Jsonl => Rows::Jsonl(jsonl::JsonlRows::new(reader)),
        Format::Csv => Rows::Csv(Box::new(csv::CsvRows::new(reader))),
    })
}

/// Opens a file's text, decompressing gzip when the first bytes say so (see [`is_gzip`]).
pub fn open_text(path: &std::path::Path) -> io::Result<Box<dyn BufRead + Send>> {
    let file = fs_err::File::open(path)?;
    let mut buffered = BufReader::with_capacity(READ_BUFFER, file);
    Ok(if is_gzip(buffered.fill_buf()?) {
        Box::new(BufReader::with_capacity(
            READ_BUFFER,
            flate2::bufread::MultiGzDecoder::new(buffered),
        ))
    } else {
        Box::new(buffered)
    })
}

/// Whether a file's first bytes are gzip's magic number: compression is told by content,
/// not by the name.
pub fn is_gzip(head: &[u8]) -> bool {
    head.starts_with(&GZIP_MAGIC)
}

/// Copies stdin to a temporary file, so that the input can be validated before it is sent.
pub fn spool_stdin(dir: &std::path::Path) -> io::Result<tempfile::NamedTempFile> {
    let mut tmp = tempfile::Builder::new()
        .prefix(".batchgen-stdin-")
        .tempfile_in(dir)?;
    io::copy(&mut io::stdin().lock().take(u64::MAX), &mut tmp)?;
    Ok(tmp)
}

/// Renders a field value as prompt text: strings as they are, other values as JSON.
pub fn field_text(value: &Value) -> Option<std::borrow::Cow<'_, str>> {
    match value {
        Value::String(s) => Some(std::borrow::Cow::Borrowed(s)),
        Value::Null => None,
        other => Some(std::borrow::Cow::Owned(other.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn read(format: Format, text: &[u8]) -> Vec<Result<RawRow, Problem>> {
        let mut f = tempfile::NamedTempFile::new().expect("tmp");
        f.write_all(text).expect("write");
        let spec = InputSpec {
            path: Some(f.path().to_path_buf()),
            format,
        };
        open(&spec)
            .expect("open")
            .map(|r| match r.expect("io") {
                Item::Row(row) => Ok(row),
                Item::Bad(p) => Err(p),
            })
            .collect()
    }

    #[test]
    fn jsonl_lines_and_problems() {
        let rows = read(
            Format::Jsonl,
            b"{\"id\":1,\"prompt\":\"a\"}\n\n[1,2]\n{bad\n\xff\xfe\n{\"prompt\":\"b\"}",
        );
        assert_eq!(rows.len(), 5);
        assert_eq!(rows[0].as_ref().map(|r| r.line).ok(), Some(1));
        assert!(rows[1].as_ref().is_err_and(|p| p.line == 3));
        assert!(rows[2].as_ref().is_err_and(|p| p.line == 4));
        assert!(
            rows[3]
                .as_ref()
                .is_err_and(|p| p.line == 5 && p.reason.contains("UTF-8"))
        );
        let last = rows[4].as_ref().ok();
        assert_eq!(last.map(|r| (r.line, r.number)), Some((6, 5)));
    }

    #[test]
    fn jsonl_byte_order_mark_is_skipped() {
        let rows = read(
            Format::Jsonl,
            b"\xef\xbb\xbf{\"prompt\":\"a\"}\n{\"prompt\":\"b\"}\n",
        );
        assert_eq!(rows.len(), 2);
        assert!(rows.iter().all(Result::is_ok));
    }

    #[test]
    fn csv_quoted_newlines_keep_line_numbers() {
        let rows = read(
            Format::Csv,
            b"id,text\nr1,\"two\nlines, quoted\"\nr2,plain\n",
        );
        assert_eq!(rows.len(), 2);
        let r1 = rows[0].as_ref().ok();
        assert_eq!(r1.map(|r| r.line), Some(2));
        assert_eq!(
            r1.and_then(|r| r.fields.get("text"))
                .and_then(Value::as_str),
            Some("two\nlines, quoted")
        );
        assert_eq!(rows[1].as_ref().map(|r| r.line).ok(), Some(4));
    }

    #[test]
    fn gzip_is_detected_by_content() {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(b"{\"prompt\":\"x\"}\n").expect("gz");
        let bytes = enc.finish().expect("gz");
        let rows = read(Format::Jsonl, &bytes);
        assert_eq!(rows.len(), 1);
        assert!(rows[0].is_ok());
    }
}
