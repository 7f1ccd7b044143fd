//! The run report: one self-contained HTML page made from the records of one or more results
//! files (the shards of a job), plus a run's summary JSON when given. `data` reads the records
//! into figures and time buckets, `svg` draws the charts, `html` lays out the page and `text`
//! formats what goes into it. `batchgen report` and `run --report` both end here.

pub mod data;
pub mod html;
pub mod svg;
pub mod text;

use std::io;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::exit::Exit;
use crate::printer::say;
use crate::record::{Line, RecordLines};
use crate::settings::report::ReportOptions;

use data::{Collector, Figures};

/// Lines that are not records named one by one on stderr; the rest are counted on the page.
const MAX_NAMED: u64 = 10;

/// Why a report could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot read the summary {}: {why}", path.display())]
    Summary { path: PathBuf, why: String },
    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: io::Error },
}

impl ReportError {
    pub fn exit(&self) -> Exit {
        match self {
            ReportError::Read { .. } | ReportError::Summary { .. } => Exit::Usage,
            ReportError::Write { .. } => Exit::Stopped,
        }
    }
}

/// Reads every results file, in order, into one set of figures (each file also on its own).
pub fn collect(results: &[PathBuf]) -> Result<Figures, ReportError> {
    let mut c = Collector::new();
    let mut named = 0;
    for path in results {
        let unreadable = |e: io::Error| ReportError::Read {
            path: path.clone(),
            source: e,
        };
        c.figures.start_file(path.display().to_string());
        let mut lines = RecordLines::open(path).map_err(unreadable)?;
        while let Some(l) = lines.next_line().map_err(unreadable)? {
            let counted = match l.line {
                Line::Record(_) => c.add(l.text),
                Line::Blank => true,
                Line::NotRecord => {
                    c.figures.not_records += 1;
                    false
                }
            };
            if !counted {
                named += 1;
                if named <= MAX_NAMED {
                    let what = if l.torn() {
                        "a torn last line (left by an interrupted run), skipped"
                    } else {
                        "not a record, skipped"
                    };
                    say(format_args!("{}:{}: {what}", path.display(), l.number));
                }
            }
        }
    }
    Ok(c.figures)
}

/// Reads a summary JSON (`run --summary-json`).
pub fn read_summary(path: &Path) -> Result<Value, ReportError> {
    let bad = |why: String| ReportError::Summary {
        path: path.to_path_buf(),
        why,
    };
    let text = fs_err::read(path).map_err(|e| bad(e.to_string()))?;
    serde_json::from_slice(&text).map_err(|e| bad(e.to_string()))
}

/// What a written report holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    pub records: u64,
    pub bytes: u64,
}

/// Makes the report of `results` and writes it to `output`.
pub fn write(
    results: &[PathBuf],
    output: &Path,
    summary: Option<&Value>,
) -> Result<Written, ReportError> {
    let figures = collect(results)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let page = html::page(&figures, summary, now);
    fs_err::write(output, page.as_bytes()).map_err(|e| ReportError::Write {
        path: output.to_path_buf(),
        source: e,
    })?;
    Ok(Written {
        records: figures.records,
        bytes: page.len() as u64,
    })
}

/// `run --report`: the report of the run's results file, with the run's summary. A failure
/// is a warning: the run's exit code stays that of its rows.
pub fn after_run(results: &Path, output: &Path, summary: Option<&Value>) {
    match write(&[results.to_path_buf()], output, summary) {
        Ok(_) => say(format_args!("report written to {}", output.display())),
        Err(e) => say(format_args!("warning: no report: {e}")),
    }
}

/// `batchgen report`: writes the page and says where.
pub fn run(opts: &ReportOptions) -> Exit {
    let summary = match opts.summary.as_deref().map(read_summary).transpose() {
        Ok(s) => s,
        Err(e) => {
            say(format_args!("error: {e}"));
            return e.exit();
        }
    };
    match write(&opts.results, &opts.output, summary.as_ref()) {
        Ok(w) => {
            say(format_args!(
                "report of {} records from {} files written to {} ({} KB)",
                w.records,
                opts.results.len(),
                opts.output.display(),
                w.bytes.div_ceil(1024)
            ));
            Exit::Ok
        }
        Err(e) => {
            say(format_args!("error: {e}"));
            e.exit()
        }
    }
}
