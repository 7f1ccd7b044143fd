//! Results files merged into one, with one record per id: an ok record beats an error, and
//! among equals the one that finished last wins (`finished_at`; then the later file and line).
//! The merged file is written atomically. `batchgen merge` and a multi-file `export` use it.

use std::collections::HashMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::input::ids::id_key;
use crate::printer::say;
use crate::record::{self, Line, RecordLines};

/// Why a merge failed.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: io::Error },
}

/// What a merge found and wrote.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Merged {
    pub records_read: u64,
    /// Ids in the merged file (one record each).
    pub ids: u64,
    pub ok: u64,
    /// Lines that are not records (named on stderr, left in their files).
    pub not_records: u64,
}

/// The record each id keeps, by id key.
pub type Choice = HashMap<u128, Chosen>;

/// The record chosen for an id so far.
#[derive(Debug, Clone, Copy)]
pub struct Chosen {
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

/// Pass 1: the record each id keeps, over every file.
pub fn choose(results: &[PathBuf], report: &mut Merged) -> Result<Choice, MergeError> {
    let mut chosen = Choice::new();
    for (file, path) in results.iter().enumerate() {
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

/// Pass 2: every file read again in order, each chosen record written once, into a temporary
/// file beside the output that then replaces it.
pub fn write_merged(
    results: &[PathBuf],
    output: &Path,
    chosen: &Choice,
    report: &mut Merged,
) -> Result<(), MergeError> {
    let failed = |e: io::Error| MergeError::Write {
        path: output.to_path_buf(),
        source: e,
    };
    let dir = output
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
        for (file, path) in results.iter().enumerate() {
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
    tmp.persist(output).map_err(|e| failed(e.error))?;
    fs_err::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(failed)?;
    debug_assert_eq!(written, report.ids);
    report.ids = written;
    Ok(())
}

/// Merges `results` into `output` (see the module docs).
pub fn merge(results: &[PathBuf], output: &Path) -> Result<Merged, MergeError> {
    let mut report = Merged::default();
    let chosen = choose(results, &mut report)?;
    write_merged(results, output, &chosen, &mut report)?;
    Ok(report)
}

fn unreadable(path: &Path, e: io::Error) -> MergeError {
    MergeError::Read {
        path: path.to_path_buf(),
        source: e,
    }
}
