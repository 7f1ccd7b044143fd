//! The journal `RESULTS.batches.jsonl`: one JSON event per step of each batch file (written,
//! uploaded, created, finished, collected), appended and fsynced before the next step starts,
//! and its replay into the state of every file, so that a crash at any point resumes without
//! submitting a row twice.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One step, as a journal line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A batch file was written (and synced). `path` is relative to the journal's folder.
    File {
        seq: u64,
        path: String,
        model: String,
        rows: u64,
        bytes: u64,
        ids: String,
        round: u32,
        /// The file whose failed lines this one resubmits: its collection made this file, and
        /// collecting it again (after a crash) must not make another.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        parent: Option<u64>,
    },
    Uploaded {
        seq: u64,
        file_id: String,
    },
    Created {
        seq: u64,
        batch_id: String,
    },
    Finished {
        seq: u64,
        batch_id: String,
        status: String,
    },
    Collected {
        seq: u64,
        batch_id: String,
    },
}

/// What the journal says about one batch file.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Entry {
    pub seq: u64,
    pub path: PathBuf,
    pub model: String,
    pub rows: u64,
    pub bytes: u64,
    pub ids: String,
    pub round: u32,
    pub parent: Option<u64>,
    pub file_id: Option<String>,
    pub batch_id: Option<String>,
    /// The terminal status, once the batch has one.
    pub status: Option<String>,
    pub collected: bool,
}

impl Entry {
    /// Whether the file still needs work: not yet collected.
    pub fn pending(&self) -> bool {
        !self.collected
    }
}

/// Replays journal text into the files it names, in the order they were written. Lines that
/// do not parse (a torn last line, an event of a later version) are skipped.
pub fn replay(text: &str, dir: &Path) -> Vec<Entry> {
    let mut entries: Vec<Entry> = Vec::new();
    for line in text.lines() {
        let Ok(event) = serde_json::from_str::<Event>(line) else {
            continue;
        };
        let find = |entries: &mut Vec<Entry>, seq: u64| -> Option<usize> {
            entries.iter().rposition(|e| e.seq == seq)
        };
        match event {
            Event::File {
                seq,
                path,
                model,
                rows,
                bytes,
                ids,
                round,
                parent,
            } => {
                // A file written again under the same number (its first writing was never
                // uploaded) replaces the earlier entry.
                entries.retain(|e| e.seq != seq);
                entries.push(Entry {
                    seq,
                    path: dir.join(path),
                    model,
                    rows,
                    bytes,
                    ids,
                    round,
                    parent,
                    ..Entry::default()
                });
            }
            Event::Uploaded { seq, file_id } => {
                if let Some(i) = find(&mut entries, seq) {
                    entries[i].file_id = Some(file_id);
                }
            }
            Event::Created { seq, batch_id } => {
                if let Some(i) = find(&mut entries, seq) {
                    entries[i].batch_id = Some(batch_id);
                }
            }
            Event::Finished {
                seq,
                batch_id,
                status,
            } => {
                if let Some(i) = find(&mut entries, seq) {
                    entries[i].batch_id = Some(batch_id);
                    entries[i].status = Some(status);
                }
            }
            Event::Collected { seq, .. } => {
                if let Some(i) = find(&mut entries, seq) {
                    entries[i].collected = true;
                }
            }
        }
    }
    entries
}

/// The journal of a results file: `RESULTS.batches.jsonl` beside it.
pub fn journal_path(output: &Path) -> PathBuf {
    let mut name = output.as_os_str().to_owned();
    name.push(".batches.jsonl");
    PathBuf::from(name)
}

/// The folder of a results file's batch files: `RESULTS.batch-files/`.
pub fn files_dir(output: &Path) -> PathBuf {
    let mut name = output.as_os_str().to_owned();
    name.push(".batch-files");
    PathBuf::from(name)
}

/// Reads a journal without opening it for writing (`batch status`): empty when there is none.
pub fn read(path: &Path) -> io::Result<Vec<Entry>> {
    match fs_err::read_to_string(path) {
        Ok(text) => Ok(replay(&text, parent_dir(path))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

fn parent_dir(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new(""))
}

/// The journal, open for appending.
pub struct Journal {
    file: fs_err::File,
    dir: PathBuf,
}

impl Journal {
    /// Opens (or creates) a journal and replays it. A torn last line left by a crash is ended
    /// with a newline, so that the next event starts a line of its own.
    pub fn open(path: &Path) -> io::Result<(Journal, Vec<Entry>)> {
        let mut file = fs_err::OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)?;
        let mut text = String::new();
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        text.push_str(&String::from_utf8_lossy(&bytes));
        if !bytes.is_empty() && !bytes.ends_with(b"\n") {
            file.write_all(b"\n")?;
            file.sync_data()?;
        }
        let dir = parent_dir(path).to_path_buf();
        let entries = replay(&text, &dir);
        Ok((Journal { file, dir }, entries))
    }

    /// A path as the journal records it: relative to the journal's folder when it is inside.
    pub fn relative(&self, path: &Path) -> String {
        let rel = match self.dir.as_os_str().is_empty() {
            true => path,
            false => path.strip_prefix(&self.dir).unwrap_or(path),
        };
        rel.display().to_string()
    }

    /// Appends an event and syncs it to disk before returning.
    pub fn append(&mut self, event: &Event) -> io::Result<()> {
        let mut line = serde_json::to_vec(event).map_err(io::Error::other)?;
        line.push(b'\n');
        self.file.write_all(&line)?;
        self.file.sync_data()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(seq: u64, round: u32) -> Event {
        Event::File {
            seq,
            path: format!("out.jsonl.batch-files/{seq:04}.jsonl"),
            model: "qwen-plus".into(),
            rows: 10,
            bytes: 1000,
            ids: format!("{seq:032x}"),
            round,
            parent: None,
        }
    }

    #[test]
    fn events_have_the_contract_shape() {
        let line = serde_json::to_value(Event::Uploaded {
            seq: 3,
            file_id: "file-1".into(),
        })
        .unwrap_or_default();
        assert_eq!(
            line,
            serde_json::json!({"event": "uploaded", "seq": 3, "file_id": "file-1"})
        );
        let line = serde_json::to_value(file(1, 0)).unwrap_or_default();
        assert_eq!(line["event"], "file");
        assert!(line.get("parent").is_none());
    }

    #[test]
    fn replay_follows_each_file_and_skips_torn_lines() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("out.jsonl.batches.jsonl");
        {
            let (mut j, entries) = Journal::open(&path).expect("open");
            assert!(entries.is_empty());
            for e in [
                file(1, 0),
                file(2, 0),
                Event::Uploaded {
                    seq: 1,
                    file_id: "file-a".into(),
                },
                Event::Created {
                    seq: 1,
                    batch_id: "batch_a".into(),
                },
                Event::Uploaded {
                    seq: 2,
                    file_id: "file-b".into(),
                },
                Event::Finished {
                    seq: 1,
                    batch_id: "batch_a".into(),
                    status: "expired".into(),
                },
                Event::Collected {
                    seq: 1,
                    batch_id: "batch_a".into(),
                },
            ] {
                j.append(&e).expect("append");
            }
        }
        // A crash in the middle of a line.
        let mut f = fs_err::OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("open");
        f.write_all(b"{\"event\":\"created\",\"seq\":2,\"bat")
            .expect("write");
        drop(f);
        let (mut j, entries) = Journal::open(&path).expect("reopen");
        assert_eq!(entries.len(), 2);
        assert!(entries[0].collected);
        assert_eq!(entries[0].status.as_deref(), Some("expired"));
        assert_eq!(entries[1].file_id.as_deref(), Some("file-b"));
        assert_eq!(entries[1].batch_id, None);
        assert!(entries[1].pending());
        assert_eq!(
            entries[1].path,
            dir.path().join("out.jsonl.batch-files/0002.jsonl")
        );
        j.append(&Event::Created {
            seq: 2,
            batch_id: "batch_b".into(),
        })
        .expect("append");
        let entries = read(&path).expect("read");
        assert_eq!(entries[1].batch_id.as_deref(), Some("batch_b"));
        assert_eq!(
            j.relative(&dir.path().join("x.batch-files/0001.jsonl")),
            "x.batch-files/0001.jsonl"
        );
    }
}
