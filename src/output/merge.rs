//! Results files merged into one, with one record per id: an ok record beats an error, and
//! among equals the one that finished last wins (`finished_at`; then the later file and line).
//! The merged file is written atomically. `batchgen merge` and a multi-file `export` use it.

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

/// The record each id keeps: the ids (as sorted keys, for [`Choice::contains`]) and, per
/// file, a bit per record that is set for the kept ones. 16 bytes an id and a bit a record,
/// after a pass that takes 32 bytes a record (a hash map of the same took about 150 bytes).
#[derive(Debug, Default)]
pub struct Choice {
    keys: Vec<u128>,
    kept: Vec<Vec<u64>>,
}

impl Choice {
    /// Whether some record has the id whose [`id_key`] is `key`.
    pub fn contains(&self, key: u128) -> bool {
        self.keys.binary_search(&key).is_ok()
    }

    /// Whether the `index`-th record of file `file` is kept.
    fn keeps(&self, file: usize, index: u64) -> bool {
        let i = index as usize;
        self.kept
            .get(file)
            .and_then(|bits| bits.get(i / 64))
            .is_some_and(|w| w & (1 << (i % 64)) != 0)
    }
}

/// A record as pass 1 keeps it: its id key, then what decides between two records of an id.
#[derive(Debug, Clone, Copy)]
struct Seen {
    key: u128,
    /// `finished_at` in milliseconds since the epoch (0 when the record has none).
    at: u64,
    /// [`OK_BIT`], the file (bits 40..62) and the record's index in it (bits 0..40).
    meta: u64,
}

const OK_BIT: u64 = 1 << 63;
const INDEX_BITS: u32 = 40;
const INDEX_MASK: u64 = (1 << INDEX_BITS) - 1;

impl Seen {
    fn ok(&self) -> bool {
        self.meta & OK_BIT != 0
    }

    /// (file, index): the order in which the records were read.
    fn place(&self) -> u64 {
        self.meta & !OK_BIT
    }

    /// Whether `self` (read later) replaces `earlier` as the id's record.
    fn beats(&self, earlier: &Seen) -> bool {
        (self.ok(), self.at) >= (earlier.ok(), earlier.at)
    }
}

/// Pass 1: the record each id keeps, over every file.
pub fn choose(results: &[PathBuf], report: &mut Merged) -> Result<Choice, MergeError> {
    let mut seen: Vec<Seen> = Vec::new();
    let mut counts: Vec<u64> = Vec::with_capacity(results.len());
    for (file, path) in results.iter().enumerate() {
        let mut lines = RecordLines::open(path).map_err(|e| unreadable(path, e))?;
        let mut index = 0u64;
        while let Some(l) = lines.next_line().map_err(|e| unreadable(path, e))? {
            match &l.line {
                Line::Record(head) => {
                    report.records_read += 1;
                    let mut meta = ((file as u64) << INDEX_BITS) | (index & INDEX_MASK);
                    if head.ok {
                        meta |= OK_BIT;
                    }
                    seen.push(Seen {
                        key: id_key(&head.id),
                        at: record::finished_at_ms(l.text).unwrap_or(0),
                        meta,
                    });
                    index += 1;
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
        counts.push(index);
    }
    // By id, each id's records in the order they were read: the fold keeps the winner.
    seen.sort_unstable_by_key(|s| (s.key, s.place()));
    let mut choice = Choice {
        keys: Vec::new(),
        kept: counts
            .iter()
            .map(|&n| vec![0u64; (n as usize).div_ceil(64)])
            .collect(),
    };
    let mut keep = |s: &Seen, choice: &mut Choice| {
        choice.keys.push(s.key);
        let (file, i) = (
            (s.place() >> INDEX_BITS) as usize,
            (s.meta & INDEX_MASK) as usize,
        );
        if let Some(w) = choice.kept.get_mut(file).and_then(|b| b.get_mut(i / 64)) {
            *w |= 1 << (i % 64);
        }
        report.ok += u64::from(s.ok());
    };
    seen.dedup_by(|later, earlier| {
        let same = later.key == earlier.key;
        if same && later.beats(earlier) {
            *earlier = *later;
        }
        same
    });
    for s in &seen {
        keep(s, &mut choice);
    }
    report.ids = choice.keys.len() as u64;
    Ok(choice)
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
            let mut index = 0u64;
            while let Some(l) = lines.next_line().map_err(|e| unreadable(path, e))? {
                let Line::Record(_) = &l.line else {
                    continue;
                };
                index += 1;
                if chosen.keeps(file, index - 1) {
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
