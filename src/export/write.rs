//! Pass 3 of the export: the input read again, each row written with its latest record, as
//! CSV or JSONL (Parquet in `super::parquet`), to stdout or to a file renamed into place only
//! when the export succeeds.

use std::borrow::Cow;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::Path;

use serde_json::Value;

use super::columns::Columns;
use super::join::{Index, JoinPlan, Key, NO_RECORD, OK, SEEN, join_id};
use super::{ExportError, ExportReport, Options, refused};
use crate::input::Format;
use crate::input::{self, Item, RawRow};
use crate::record::RecordFields;

/// Small enough that a seek far away wastes little, large enough to hold the neighbours a
/// record was written with.
const SEEK_BUFFER: usize = 64 * 1024;
pub(super) const WRITE_BUFFER: usize = 256 * 1024;

/// Writes a file through a temporary file beside it, renamed into place only on success.
pub(super) fn write_file(
    path: &Path,
    gzip: bool,
    target: &str,
    body: impl FnOnce(&mut (dyn Write + Send)) -> Result<(), ExportError>,
) -> Result<(), ExportError> {
    let failed = |source: io::Error| ExportError::Output {
        target: target.to_string(),
        source,
    };
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs_err::create_dir_all(dir).map_err(failed)?;
    let mut builder = tempfile::Builder::new();
    builder.prefix(".batchgen-export-");
    // A temporary file is private by default; the export is an ordinary file (umask applies).
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o666));
    }
    let mut tmp = builder.tempfile_in(dir).map_err(failed)?;
    {
        let mut out = BufWriter::with_capacity(WRITE_BUFFER, tmp.as_file_mut());
        if gzip {
            let mut gz = flate2::write::GzEncoder::new(&mut out, flate2::Compression::default());
            body(&mut gz)?;
            gz.finish().map_err(failed)?;
        } else {
            body(&mut out)?;
        }
        out.flush().map_err(failed)?;
    }
    tmp.persist(path).map_err(|e| failed(e.error))?;
    Ok(())
}

/// Result columns of the CSV and Parquet outputs, in order; `parsed` follows `content` when
/// present.
pub(super) const RESULT_COLUMNS: [&str; 9] = [
    "status",
    "content",
    "error_kind",
    "error_message",
    "input_tokens",
    "output_tokens",
    "reasoning_tokens",
    "cost",
    "finish_reason",
];

/// The shape of the output.
pub(super) struct Layout {
    pub(super) columns: Columns,
    pub(super) format: Format,
    pub(super) with_parsed: bool,
    /// CSV and Parquet: the result columns' names; JSONL: the result key alone.
    pub(super) result_names: Vec<String>,
}

impl Layout {
    pub(super) fn new(columns: Columns, format: Format, with_parsed: bool) -> Layout {
        let mut result_names = Vec::new();
        match format {
            Format::Csv | Format::Parquet => {
                for c in RESULT_COLUMNS {
                    result_names.push(columns.free_name(c));
                    if c == "content" && with_parsed {
                        result_names.push(columns.free_name("parsed"));
                    }
                }
            }
            Format::Jsonl => result_names.push(columns.free_name("result")),
        }
        Layout {
            columns,
            format,
            with_parsed,
            result_names,
        }
    }
}

/// Reads records by offset, seeking within the buffer when it can.
pub(super) struct RecordReader {
    reader: BufReader<fs_err::File>,
    /// Offset of the reader's next byte.
    pos: u64,
    line: Vec<u8>,
}

impl RecordReader {
    pub(super) fn open(path: &Path) -> Result<RecordReader, ExportError> {
        let file = fs_err::File::open(path).map_err(|e| refused(e.to_string()))?;
        Ok(RecordReader {
            reader: BufReader::with_capacity(SEEK_BUFFER, file),
            pos: 0,
            line: Vec::with_capacity(4096),
        })
    }

    pub(super) fn read_at(&mut self, offset: u64) -> io::Result<&[u8]> {
        // Offsets are below 2^62 (the table's flag bits), so the difference fits.
        self.reader.seek_relative(offset as i64 - self.pos as i64)?;
        self.line.clear();
        let n = self.reader.read_until(b'\n', &mut self.line)?;
        self.pos = offset + n as u64;
        Ok(&self.line)
    }
}

/// The fields of a record that the CSV output shows.
type Record<'a> = RecordFields<'a>;

/// A record's fields as CSV columns.
trait AsColumns {
    fn columns<'r>(&'r self, with_parsed: bool, out: &mut Vec<Cow<'r, str>>);
}

/// A value as CSV text: strings as they are, `null` as nothing, the rest as compact JSON.
pub(super) fn text(value: &Value) -> Cow<'_, str> {
    input::field_text(value).unwrap_or(Cow::Borrowed(""))
}

/// Decimal places of a cost: far below any price per token, and enough to hide the float
/// noise of a sum (`0.00008919999999999999`).
const COST_DECIMALS: usize = 12;

/// A cost as a plain decimal (`0.0000892`, never `8.92e-5`).
fn cost_text(value: &Value) -> Cow<'_, str> {
    match value.as_f64() {
        Some(c) if value.is_number() && c.is_finite() => {
            let fixed = format!("{c:.COST_DECIMALS$}");
            let trimmed = fixed.trim_end_matches('0').trim_end_matches('.');
            Cow::Owned(match trimmed {
                "" | "-" | "-0" => "0".to_string(),
                t => t.to_string(),
            })
        }
        _ => text(value),
    }
}

impl AsColumns for Record<'_> {
    fn columns<'r>(&'r self, with_parsed: bool, out: &mut Vec<Cow<'r, str>>) {
        out.push(text(&self.status));
        out.push(text(&self.content));
        if with_parsed {
            out.push(match &self.parsed {
                Value::Null => Cow::Borrowed(""),
                v => Cow::Owned(v.to_string()),
            });
        }
        out.push(text(&self.error["kind"]));
        out.push(text(&self.error["message"]));
        out.push(text(&self.usage["input_tokens"]));
        out.push(text(&self.usage["output_tokens"]));
        out.push(text(&self.usage["reasoning_tokens"]));
        out.push(cost_text(&self.cost));
        out.push(text(&self.finish_reason));
    }
}

/// Everything pass 3 reads and updates.
pub(super) struct Job<'a> {
    pub(super) opts: &'a Options,
    pub(super) plan: &'a JoinPlan,
    pub(super) index: &'a Index,
    pub(super) layout: &'a Layout,
    pub(super) records: &'a mut RecordReader,
    pub(super) report: &'a mut ExportReport,
}

impl Job<'_> {
    /// The row's latest record with its line (without the line end), counted in the report;
    /// an error when RESULTS changed since pass 1.
    pub(super) fn record_of(
        &mut self,
        row: &RawRow,
    ) -> Result<Option<(RecordFields<'_>, &[u8])>, ExportError> {
        let results_name = self.opts.results.display().to_string();
        let id = join_id(row, &self.opts.id_field, self.plan);
        let offset = self
            .index
            .get(&Key::of(&id))
            .map(|slot| slot & !(SEEN | OK))
            .filter(|&o| o != NO_RECORD);
        self.report.rows += 1;
        let Some(offset) = offset else {
            self.report.missing += 1;
            return Ok(None);
        };
        let line = self
            .records
            .read_at(offset)
            .map_err(|e| refused(format!("cannot read {results_name}: {e}")))?;
        match RecordFields::parse(line) {
            Ok(r) if r.id == id => {
                if r.status == "ok" {
                    self.report.ok += 1;
                } else {
                    self.report.failed += 1;
                }
                Ok(Some((r, trim_line(line))))
            }
            _ => Err(changed(&results_name)),
        }
    }

    pub(super) fn write(&mut self, out: &mut dyn Write, target: &str) -> Result<(), ExportError> {
        let failed = |source: io::Error| ExportError::Output {
            target: target.to_string(),
            source,
        };
        let opts = self.opts;
        let layout = self.layout;
        let input_name = opts.input.display();
        let unreadable = |e: io::Error| refused(format!("cannot read {input_name}: {e}"));
        let mut sink = match self.layout.format {
            Format::Csv => {
                let mut w = csv::WriterBuilder::new().from_writer(out);
                let header = self
                    .layout
                    .columns
                    .names
                    .iter()
                    .chain(&self.layout.result_names);
                w.write_record(header).map_err(|e| failed(csv_io(e)))?;
                Sink::Csv(Box::new(w))
            }
            Format::Jsonl | Format::Parquet => Sink::Jsonl(out),
        };
        let mut buf: Vec<u8> = Vec::with_capacity(4096);
        for item in input::open(&opts.input).map_err(unreadable)? {
            let row = match item.map_err(unreadable)? {
                Item::Row(row) => row,
                Item::Bad(_) if opts.skip_invalid => {
                    self.report.left_out += 1;
                    continue;
                }
                Item::Bad(_) => return Err(changed(&input_name)),
            };
            let record = self.record_of(&row)?;
            match &mut sink {
                Sink::Csv(w) => {
                    let mut fields: Vec<Cow<str>> =
                        Vec::with_capacity(layout.columns.names.len() + layout.result_names.len());
                    for name in &layout.columns.names {
                        fields.push(row.fields.get(name).map_or(Cow::Borrowed(""), text));
                    }
                    match &record {
                        Some((r, _)) => r.columns(layout.with_parsed, &mut fields),
                        None => fields
                            .resize(fields.len() + layout.result_names.len(), Cow::Borrowed("")),
                    }
                    w.write_record(fields.iter().map(|f| f.as_bytes()))
                        .map_err(|e| failed(csv_io(e)))?;
                }
                Sink::Jsonl(out) => {
                    buf.clear();
                    jsonl_row(&row, layout, record.as_ref().map(|(_, raw)| *raw), &mut buf);
                    out.write_all(&buf).map_err(failed)?;
                }
            }
        }
        if let Sink::Csv(mut w) = sink {
            w.flush().map_err(failed)?;
        }
        Ok(())
    }
}

/// The refusal when a file changed between the passes.
pub(super) fn changed(what: &str) -> ExportError {
    refused(format!(
        "{what} changed while it was being exported; export again"
    ))
}

/// Where pass 3 writes.
enum Sink<'w> {
    Csv(Box<csv::Writer<&'w mut dyn Write>>),
    Jsonl(&'w mut dyn Write),
}

/// The I/O error inside a CSV writer's error (the only kind it has when writing bytes).
fn csv_io(e: csv::Error) -> io::Error {
    match e.into_kind() {
        csv::ErrorKind::Io(e) => e,
        other => io::Error::other(format!("{other:?}")),
    }
}

/// A record's line without its line end.
fn trim_line(line: &[u8]) -> &[u8] {
    let end = line
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(0, |i| i + 1);
    &line[..end]
}

/// One JSONL output line: the row's fields in column order, then the record (or `null`).
fn jsonl_row(row: &RawRow, layout: &Layout, record: Option<&[u8]>, buf: &mut Vec<u8>) {
    let push = |buf: &mut Vec<u8>, key: &str, value: &Value| {
        buf.push(if buf.is_empty() { b'{' } else { b',' });
        // Writing JSON into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *buf, key);
        buf.push(b':');
        let _ = serde_json::to_writer(&mut *buf, value);
    };
    let mut written = 0;
    for name in &layout.columns.names {
        if let Some(value) = row.fields.get(name) {
            push(buf, name, value);
            written += 1;
        }
    }
    if written < row.fields.len() {
        // Keys the column scan did not see (the file changed in between): still exported.
        for (name, value) in &row.fields {
            if !layout.columns.contains(name) {
                push(buf, name, value);
            }
        }
    }
    buf.push(if buf.is_empty() { b'{' } else { b',' });
    let _ = serde_json::to_writer(&mut *buf, &layout.result_names[0]);
    buf.push(b':');
    buf.extend_from_slice(record.unwrap_or(b"null"));
    buf.extend_from_slice(b"}\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_names_step_aside_for_input_columns() {
        let mut c = Columns::default();
        for n in ["id", "status", "_status", "result"] {
            c.add(n);
        }
        let csv = Layout::new(c, Format::Csv, true);
        assert_eq!(csv.result_names[0], "__status");
        assert_eq!(csv.result_names[1..3], ["content", "parsed"]);
        let mut c = Columns::default();
        c.add("result");
        assert_eq!(
            Layout::new(c, Format::Jsonl, false).result_names,
            ["_result"]
        );
    }

    #[test]
    fn record_columns_render_as_text() {
        let line = br#"{"id":"a","status":"error","error":{"kind":"timeout","message":"slow"},"cost":0.0000688,"usage":{"input_tokens":5,"output_tokens":2,"reasoning_tokens":0},"finish_reason":null,"parsed":{"k":[1,2]}}"#;
        let r: Record = serde_json::from_slice(line).expect("record");
        let mut out = Vec::new();
        r.columns(true, &mut out);
        assert_eq!(
            out,
            [
                "error",
                "",
                "{\"k\":[1,2]}",
                "timeout",
                "slow",
                "5",
                "2",
                "0",
                "0.0000688",
                ""
            ]
        );
        assert_eq!(trim_line(b"{}\r\n"), b"{}");
        let cost = |v: Value| cost_text(&v).into_owned();
        assert_eq!(cost(serde_json::json!(8.919999999999999e-5)), "0.0000892");
        assert_eq!(cost(serde_json::json!(0)), "0");
        assert_eq!(cost(serde_json::json!(12.5)), "12.5");
        assert_eq!(cost(serde_json::json!(1e-15)), "0");
        assert_eq!(cost(Value::Null), "");
    }
}
