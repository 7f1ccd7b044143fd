//! Export: a results file joined back to the input rows, in input order, as CSV, JSONL or
//! Parquet (`batchgen export RESULTS --input INPUT [--format csv|jsonl|parquet] [-o FILE]`).
//!
//! # Joining
//!
//! A row finds its record by the id `run` gave it, resolved the way `run` resolves it: the
//! `--id-field` value (or `custom_id`) through [`crate::input::row_id`]; the 1-based row
//! number when no row has an id; and, for the rows `run --skip-invalid` turned into
//! `invalid_input` records, `line:N` (an unusable id, or no id while other rows have one) and
//! `ID#line:N` (the later row of a duplicate id), all by [`crate::input::ids::record_id`], the
//! code `run` names records with. When RESULTS holds several records for an id (a resumed run
//! not yet compacted), the latest line wins, as it does for resume (an `invalid_input` record
//! never replaces an `ok` one); lines are read by [`crate::record::RecordLines`], as resume
//! reads them.
//!
//! # Output
//!
//! Every readable input row appears once, in input order, input columns first:
//!
//! - **CSV**: the header is the input's columns (a CSV input's header in its order, first
//!   occurrence of a repeated name; for a JSONL input, the union of the rows' top-level keys
//!   in first-seen order), then `status`, `content`, `parsed` (only when some record in
//!   RESULTS has one, i.e. a `--json` or `--json-schema` run), `error_kind`, `error_message`,
//!   `input_tokens`, `output_tokens`, `reasoning_tokens`, `cost`, `finish_reason`. Strings
//!   are written as they are; other values (numbers, booleans, objects, arrays, `parsed`) as
//!   compact JSON; `null` and absent values as empty fields; `cost` as a plain decimal
//!   rounded to 12 places. A row without a record has every result column empty. A result
//!   column whose name the input already uses gets `_` prepended until it is unique
//!   (`_status`).
//! - **JSONL**: each input row as an object (keys in the column order above), plus `result`:
//!   the row's latest record exactly as RESULTS has it, or `null` when it has none (`_result`
//!   if the input uses `result`). A JSONL row's values pass through `serde_json`, so a number
//!   is written in its shortest form (`1.50` becomes `1.5`).
//! - **Parquet**: the CSV columns, typed: a Parquet input's columns keep their Arrow types
//!   (the arrays are carried over), the result columns are Utf8, Int64 (token counts) and
//!   Float64 (`cost`), null where CSV has an empty field; see `parquet.rs`. Written in row
//!   groups of bounded rows and bytes; never gzip-compressed (Parquet compresses inside).
//!
//! `--format` defaults to the extension of `-o` (`.csv`, `.jsonl`, `.ndjson`, `.parquet`), then
//! to the input's format. Without `-o` (or with `-o -`) the export goes to stdout; a `.gz`
//! name is gzip-compressed. A file is written beside its final path and renamed into place
//! only when the export succeeds, so a failed export leaves nothing half-written, and `-o`
//! may not name RESULTS or INPUT.
//!
//! # Problems
//!
//! Exit 2 names what and where: a missing or unreadable file (RESULTS or INPUT), stdin as
//! INPUT (the input is read more than once), a gzip-compressed RESULTS (it is read by
//! seeking), and input rows `run` would reject before sending: unreadable rows (invalid JSON
//! or CSV, invalid UTF-8), unusable, missing or duplicate ids, each reported as `file:line:
//! reason` before anything is written. `--skip-invalid` exports anyway, as after
//! `run --skip-invalid`: unreadable rows are left out (their lines are named), the others
//! are joined to their `invalid_input` records. A file that changes during the export is
//! an error too. Exit 3: the output cannot be written. A closed stdout (`| head`) ends the
//! export quietly.
//!
//! In RESULTS, a line that is not a record is skipped with a warning naming it; a last line
//! without its newline that is not a whole record (torn by a crash) is ignored with a note.
//! A summary line goes to stderr, with a warning when records match no input row (a
//! different INPUT or `--id-field` than the run's).
//!
//! # Memory and streaming
//!
//! Neither file is held in memory. Pass 1 reads RESULTS once and keeps, per id, a 128-bit
//! [`crate::input::ids::id_key`] and the byte offset of its latest record (24 bytes an entry,
//! about 30 to 55 with the hash table's slack); beside it, on a second thread, the input's columns are
//! collected (keys only). Pass 2 reads INPUT to check it and learn how ids resolve, marking
//! in the same table which ids it has seen (duplicates). Pass 3 reads INPUT again and, for
//! each row, seeks to its record and reads that one line, writing the output through a
//! buffer as it goes. The seeks follow completion order, which is close to input order at
//! moderate concurrency, so most land in the 64 KiB read buffer; in the worst case it is one
//! random read per row. Memory is the table plus one row and one record at a time (and the
//! distinct column names of a JSONL input).

mod columns;
mod join;
mod parquet;
mod write;

use std::fmt;
use std::io::{self, BufWriter, Write};
use std::path::Path;

use crate::exit::Exit;
use crate::input::Format;
use crate::settings::export::Options;

use columns::read_columns;
use join::scan_results;
pub(crate) use join::{Index, check_input, join_id};
use write::{Job, Layout, RecordReader, WRITE_BUFFER, write_file};

const STDOUT: &str = "<stdout>";
/// Problems and warnings named one by one, at most; the rest are counted.
const MAX_PROBLEMS: usize = crate::plan::MAX_PROBLEMS;

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// Bad usage, an unreadable file or invalid input: exit 2. The message names the file.
    #[error("{0}")]
    Usage(String),
    /// The output could not be written: exit 3.
    #[error("cannot write {target}: {source}")]
    Output { target: String, source: io::Error },
}

impl ExportError {
    pub fn exit(&self) -> Exit {
        match self {
            ExportError::Usage(_) => Exit::Usage,
            ExportError::Output { .. } => Exit::Stopped,
        }
    }
}

/// A refusal before anything is written: bad usage, configuration or input (exit 2).
fn refused(message: impl Into<String>) -> ExportError {
    ExportError::Usage(message.into())
}

/// What an export did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportReport {
    pub target: String,
    pub format: &'static str,
    /// Rows written.
    pub rows: u64,
    /// Rows whose latest record is `ok`.
    pub ok: u64,
    /// Rows whose latest record is anything else.
    pub failed: u64,
    /// Rows without a record.
    pub missing: u64,
    /// Unreadable input rows left out (`--skip-invalid`).
    pub left_out: u64,
    /// Ids with a record in RESULTS that no input row has.
    pub unmatched: u64,
}

impl fmt::Display for ExportReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "exported {} rows to {} ({}): {} ok, {} failed, {} without a result",
            self.rows, self.target, self.format, self.ok, self.failed, self.missing
        )?;
        if self.left_out > 0 {
            write!(f, "; {} unreadable rows left out", self.left_out)?;
        }
        if self.unmatched > 0 {
            write!(
                f,
                "\nwarning: {} records in the results match no input row (is this the input \
                 and --id-field the run used?)",
                self.unmatched
            )?;
        }
        Ok(())
    }
}

/// `batchgen export`: runs it and reports on stderr.
pub fn run(opts: &Options) -> Exit {
    match export(opts, &mut crate::printer::Stderr) {
        Ok(report) => {
            crate::printer::say(report);
            Exit::Ok
        }
        // The reader of stdout went away (`| head`): what it wanted was written.
        Err(ExportError::Output { target, source })
            if source.kind() == io::ErrorKind::BrokenPipe && target == STDOUT =>
        {
            Exit::Ok
        }
        Err(e) => {
            crate::printer::say(format_args!("error: {e}"));
            e.exit()
        }
    }
}

/// Where the export goes, as messages name it.
fn target_name(opts: &Options) -> String {
    match &opts.output {
        Some(p) => p.display().to_string(),
        None => STDOUT.to_string(),
    }
}

/// Runs an export; warnings and problems go to `diag` as they are found.
pub fn export(opts: &Options, diag: &mut dyn Write) -> Result<ExportReport, ExportError> {
    if opts.also.is_empty() {
        return export_one(opts, diag);
    }
    // Several results files: merged first into one temporary file, then joined as one.
    let all: Vec<_> = std::iter::once(opts.results.clone())
        .chain(opts.also.iter().cloned())
        .collect();
    if let Some(out) = &opts.output
        && let Some(p) = all.iter().find(|p| crate::settings::same_file(out, p))
    {
        return Err(refused(format!(
            "-o {}: that is the results file {}; write the export to another file",
            out.display(),
            p.display()
        )));
    }
    let dir = opts
        .output
        .as_deref()
        .and_then(Path::parent)
        .filter(|d| !d.as_os_str().is_empty())
        .map_or_else(std::env::temp_dir, Path::to_path_buf);
    let merged = tempfile::Builder::new()
        .prefix(".batchgen-export-merge-")
        .tempfile_in(&dir)
        .map_err(|source| ExportError::Output {
            target: dir.display().to_string(),
            source,
        })?;
    crate::output::merge::merge(&all, merged.path()).map_err(|e| match e {
        crate::output::merge::MergeError::Read { .. } => refused(e.to_string()),
        crate::output::merge::MergeError::Write { path, source } => ExportError::Output {
            target: path.display().to_string(),
            source,
        },
    })?;
    let one = Options {
        results: merged.path().to_path_buf(),
        also: Vec::new(),
        ..opts.clone()
    };
    export_one(&one, diag)
}

/// The export of one results file.
fn export_one(opts: &Options, diag: &mut dyn Write) -> Result<ExportReport, ExportError> {
    let input_name = opts.input.display();
    let input_path = opts.input.path.as_deref().unwrap_or(Path::new("-"));
    if let Some(out) = &opts.output {
        for (path, what) in [
            (opts.results.as_path(), "the results file"),
            (input_path, "the input"),
        ] {
            if crate::settings::same_file(out, path) {
                return Err(refused(format!(
                    "-o {}: that is {what}; write the export to another file",
                    out.display()
                )));
            }
        }
    }

    // RESULTS and the input's column names are independent reads: side by side.
    let (results, columns) = std::thread::scope(|s| {
        let columns = s.spawn(|| read_columns(input_path, opts.input.format));
        let results = scan_results(&opts.results, diag);
        (results, columns.join())
    });
    let mut results = results?;
    let columns = columns
        .map_err(|_| refused(format!("{input_name}: reading the columns failed")))?
        .map_err(|e| refused(format!("cannot read {input_name}: {e}")))?;
    let plan = check_input(opts, &mut results.index, diag)?;

    let target = target_name(opts);
    let layout = Layout::new(columns, opts.format, results.has_parsed);
    let mut records = RecordReader::open(&opts.results)?;
    let mut report = ExportReport {
        target: target.clone(),
        format: match opts.format {
            Format::Csv => "csv",
            Format::Jsonl => "jsonl",
            Format::Parquet => "parquet",
        },
        ..ExportReport::default()
    };
    let mut job = Job {
        opts,
        plan: &plan,
        index: &results.index,
        layout: &layout,
        records: &mut records,
        report: &mut report,
    };
    match &opts.output {
        None if opts.format == Format::Parquet => {
            // The Parquet writer wants a `Send` writer: stdout itself, locked per write.
            let mut out = BufWriter::with_capacity(WRITE_BUFFER, io::stdout());
            job.write_parquet(&mut out, &target)?;
            out.flush().map_err(|source| ExportError::Output {
                target: target.clone(),
                source,
            })?;
        }
        Some(path) if opts.format == Format::Parquet => {
            write_file(path, false, &target, |out| job.write_parquet(out, &target))?
        }
        None => {
            let mut out = BufWriter::with_capacity(WRITE_BUFFER, io::stdout().lock());
            job.write(&mut out, &target)?;
            out.flush().map_err(|source| ExportError::Output {
                target: target.clone(),
                source,
            })?;
        }
        Some(path) => write_file(path, opts.gzip, &target, |out| job.write(out, &target))?,
    }
    report.unmatched = results.latest.saturating_sub(report.ok + report.failed);
    Ok(report)
}
