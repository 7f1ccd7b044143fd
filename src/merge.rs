//! `batchgen merge`: the results files of one job's shards (or of reruns) joined into one, with
//! one record per id: an ok record beats an error, and among equals the one that finished last
//! wins (`finished_at`; the later file and line when they tie). The merged file is written
//! atomically. With `--input`, the input's ids that have no record are listed, so a merge
//! proves that nothing was lost.
//!
//! Records are read by `record::RecordLines`, and the input's ids resolve as `run` named them,
//! through export's join (`input::ids` underneath).

use std::collections::HashMap;
use std::io::{self, Write};
use std::path::Path;

use crate::exit::Exit;
use crate::export::{self, ExportError};
use crate::input::ids::id_key;
use crate::input::{self, Item};
use crate::printer::say;
use crate::record::{self, Line, RecordLines};
use crate::settings::export::Options;
use crate::settings::merge::MergeOptions;

/// Ids missing from the merge that are named one by one; the rest are counted.
const MAX_NAMED: usize = 20;

/// The record chosen for an id so far.
#[derive(Debug, Clone, Copy)]
struct Chosen {
    file: u32,
    offset: u64,
    ok: bool,
    /// `finished_at` in milliseconds since the epoch (0 when the record has none).
    at: u64,
}

impl Chosen {
    /// Whether `self` (read later) replaces `earlier` as the id's record.
    fn beats(&self, earlier: &Chosen) -> bool {
        (self.ok, self.at) >= (earlier.ok, earlier.at)
    }
}

/// What a merge did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct MergeReport {
    pub files: usize,
    pub records_read: u64,
    pub ids: u64,
    pub ok: u64,
    /// Input rows (with `--input`) that have no record.
    pub missing: u64,
    /// Lines that are not records (reported, left in their files).
    pub not_records: u64,
}

/// `batchgen merge`: runs it and reports on stderr.
pub fn run(opts: &MergeOptions) -> Exit {
    match merge(opts) {
        Ok(r) => {
            say(format_args!(
                "merged {} files: {} records read, {} ids ({} ok, {} failed) written to {}",
                r.files,
                r.records_read,
                r.ids,
                r.ok,
                r.ids - r.ok,
                opts.output.display()
            ));
            if r.missing > 0 {
                say(format_args!(
                    "{} rows of the input have no record: rerun the shards they belong to",
                    r.missing
                ));
                Exit::SomeFailed
            } else {
                Exit::Ok
            }
        }
        Err(e) => {
            say(format_args!("error: {e}"));
            e.exit()
        }
    }
}

/// Runs a merge; problems and the missing ids go to stderr as they are found.
pub fn merge(opts: &MergeOptions) -> Result<MergeReport, ExportError> {
    let mut report = MergeReport {
        files: opts.results.len(),
        ..MergeReport::default()
    };
    let chosen = choose(opts, &mut report)?;
    if let Some(input) = &opts.input {
        report.missing = missing_ids(opts, input, &chosen)?;
    }
    write_merged(opts, &chosen, &mut report)?;
    Ok(report)
}

fn unreadable(path: &Path, e: io::Error) -> ExportError {
    ExportError::Usage(format!("cannot read {}: {e}", path.display()))
}

/// Pass 1: the record each id keeps, over every file.
fn choose(
    opts: &MergeOptions,
    report: &mut MergeReport,
) -> Result<HashMap<u128, Chosen>, ExportError> {
    let mut chosen: HashMap<u128, Chosen> = HashMap::new();
    for (file, path) in opts.results.iter().enumerate() {
        let mut lines = RecordLines::open(path).map_err(|e| unreadable(path, e))?;
        while let Some(l) = lines.next_line().map_err(|e| unreadable(path, e))? {
            match &l.line {
                Line::Record(head) => {
                    report.records_read += 1;
                    let this = Chosen {
                        file: file as u32,
                        offset: l.offset,
                        ok: head.ok,
                        at: record::finished_at_ms(l.text).unwrap_or(0),
                    };
                    chosen
                        .entry(id_key(&head.id))
                        .and_modify(|c| {
                            if this.beats(c) {
                                *c = this;
                            }
                        })
                        .or_insert(this);
                }
                Line::Blank => {}
                Line::NotRecord => {
                    report.not_records += 1;
                    let what = if l.torn() {
                        "a torn last line (left by an interrupted run), ignored"
                    } else {
                        "not a record, ignored (it stays in that file)"
                    };
                    say(format_args!("{}:{}: {what}", path.display(), l.number));
                }
            }
        }
    }
    report.ids = chosen.len() as u64;
    report.ok = chosen.values().filter(|c| c.ok).count() as u64;
    Ok(chosen)
}

/// The input's rows that have no record, named (the first few) on stderr; their count.
fn missing_ids(
    opts: &MergeOptions,
    input: &crate::settings::InputSpec,
    chosen: &HashMap<u128, Chosen>,
) -> Result<u64, ExportError> {
    // The input is read as export reads it: ids resolve as `run` named them.
    let join = Options {
        results: opts.output.clone(),
        input: input.clone(),
        id_field: opts.id_field.clone(),
        format: input.format,
        output: None,
        gzip: false,
        // Rows that cannot be read are reported and left out: they have no id to look for.
        skip_invalid: true,
    };
    let mut index = export::Index::default();
    let plan = export::check_input(&join, &mut index, &mut crate::printer::Stderr)?;
    let path = input.path.as_deref().unwrap_or(Path::new("-"));
    let mut missing = 0u64;
    for item in input::open(input).map_err(|e| unreadable(path, e))? {
        let Item::Row(row) = item.map_err(|e| unreadable(path, e))? else {
            continue;
        };
        let id = export::join_id(&row, &opts.id_field, &plan);
        if !chosen.contains_key(&id_key(&id)) {
            missing += 1;
            if missing <= MAX_NAMED as u64 {
                say(format_args!(
                    "{}:{}: no record for id `{id}`",
                    path.display(),
                    row.line
                ));
            }
        }
    }
    if missing > MAX_NAMED as u64 {
        say(format_args!(
            "... and {} more rows without a record",
            missing - MAX_NAMED as u64
        ));
    }
    Ok(missing)
}

/// Pass 2: every file read again in order, each chosen record written once, into a temporary
/// file beside the output that then replaces it.
fn write_merged(
    opts: &MergeOptions,
    chosen: &HashMap<u128, Chosen>,
    report: &mut MergeReport,
) -> Result<(), ExportError> {
    let target = opts.output.display().to_string();
    let failed = |e: io::Error| ExportError::Output {
        target: target.clone(),
        source: e,
    };
    let dir = opts
        .output
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".batchgen-merge-")
        .tempfile_in(dir)
        .map_err(failed)?;
    let mut written = 0u64;
    {
        let mut out = io::BufWriter::with_capacity(256 * 1024, tmp.as_file_mut());
        for (file, path) in opts.results.iter().enumerate() {
            let mut lines = RecordLines::open(path).map_err(|e| unreadable(path, e))?;
            while let Some(l) = lines.next_line().map_err(|e| unreadable(path, e))? {
                let Line::Record(head) = &l.line else {
                    continue;
                };
                let keep = chosen
                    .get(&id_key(&head.id))
                    .is_some_and(|c| c.file == file as u32 && c.offset == l.offset);
                if keep {
                    out.write_all(l.text).map_err(failed)?;
                    if !l.text.ends_with(b"\n") {
                        out.write_all(b"\n").map_err(failed)?;
                    }
                    written += 1;
                }
            }
        }
        out.flush().map_err(failed)?;
    }
    tmp.as_file().sync_all().map_err(failed)?;
    tmp.persist(&opts.output).map_err(|e| failed(e.error))?;
    fs_err::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(failed)?;
    debug_assert_eq!(written, report.ids);
    report.ids = written;
    Ok(())
}
