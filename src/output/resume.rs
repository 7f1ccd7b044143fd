//! The resume scan: reads an existing results file, streaming, to learn which ids are done,
//! and repairs a torn last line left by a crash.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

use crate::input::ids::id_key;
use crate::record::{Line, RecordHead, RecordLines};

/// The latest record of an id in an existing results file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Latest {
    pub ok: bool,
    /// The `request_hash` it was made with (0 when it has none).
    pub hash: u64,
    /// 0-based index of the record in the file.
    pub index: u64,
}

/// What a row's previous record says about running it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// No record, or the latest failed: run it.
    Pending,
    /// Done with the same request: skip it.
    Done,
    /// Done, but the request would now differ (template, model or parameters changed).
    Changed,
}

/// What an existing results file says.
#[derive(Debug, Default)]
pub struct Previous {
    /// Latest record of each id.
    pub latest: HashMap<u128, Latest>,
    /// Records in the file (a superseded record counts too).
    pub records: u64,
    /// Bytes dropped from a torn last line.
    pub torn_bytes: u64,
    /// The last line was a whole record without its newline: kept, and the newline added.
    pub newline_added: bool,
    /// Complete lines that are not records (reported, then ignored).
    pub unreadable: Vec<u64>,
}

impl Previous {
    /// The status of an id whose request now hashes to `hash`.
    pub fn status(&self, id: &str, hash: u64) -> Status {
        self.status_by_key(id_key(id), hash)
    }

    /// The status of an id, given by its [`id_key`].
    pub fn status_by_key(&self, key: u128, hash: u64) -> Status {
        match self.latest.get(&key) {
            Some(l) if l.ok && (l.hash == hash || l.hash == 0) => Status::Done,
            Some(l) if l.ok => Status::Changed,
            _ => Status::Pending,
        }
    }

    /// Whether some records are superseded by later ones for the same id.
    pub fn has_superseded(&self) -> bool {
        self.records > self.latest.len() as u64
    }
}

impl Previous {
    /// Counts a record, the `index`-th of the file, and makes it its id's latest unless it
    /// does not supersede the one before (see [`RecordHead::supersedes`]).
    fn add(&mut self, head: &RecordHead) {
        let latest = Latest {
            ok: head.ok,
            hash: head.hash,
            index: self.records,
        };
        self.records += 1;
        match self.latest.entry(id_key(&head.id)) {
            Entry::Occupied(mut e) => {
                if head.supersedes(e.get().ok) {
                    e.insert(latest);
                }
            }
            Entry::Vacant(e) => {
                e.insert(latest);
            }
        }
    }
}

/// Scans `path` if it exists. With `repair`, a torn last line is cut off the file, and a
/// last record without its newline gets one; without (`--dry-run`), the file is only read.
pub fn scan(path: &Path, repair: bool) -> std::io::Result<Previous> {
    let mut prev = Previous::default();
    let file = match fs_err::OpenOptions::new()
        .read(true)
        .write(repair)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(prev),
        Err(e) => return Err(e),
    };
    // A device or a pipe (`-o /dev/full`) holds no records to resume, and may never end.
    if !file.metadata()?.is_file() {
        return Ok(prev);
    }
    let mut lines = RecordLines::new(file);
    let mut good_end: Option<u64> = None;
    while let Some(l) = lines.next_line()? {
        match &l.line {
            Line::Record(h) => {
                prev.add(h);
                if !l.whole() {
                    prev.newline_added = true;
                }
            }
            _ if l.torn() => {
                prev.torn_bytes = l.text.len() as u64;
                good_end = Some(l.offset);
                break;
            }
            Line::Blank => {}
            Line::NotRecord => prev.unreadable.push(l.number),
        }
    }
    if repair && (prev.torn_bytes > 0 || prev.newline_added) {
        let good_end = good_end.unwrap_or(lines.offset());
        let mut file = lines.into_inner();
        file.set_len(good_end)?;
        file.seek(SeekFrom::End(0))?;
        if prev.newline_added {
            file.write_all(b"\n")?;
        }
        file.sync_data()?;
    }
    Ok(prev)
}

/// Rewrites the results file with only the latest record of each id, atomically (a temporary
/// file in the same directory, then a rename, then a sync of the directory). Streams: memory
/// holds one index per id. The new file keeps the old one's permission bits (and owner, where
/// allowed); when `path` is a symlink, its target is rewritten and the link stays.
pub fn compact(path: &Path) -> std::io::Result<u64> {
    let prev = scan(path, true)?;
    if !prev.has_superseded() {
        return Ok(0);
    }
    let keep: std::collections::HashSet<u64> = prev.latest.values().map(|l| l.index).collect();
    let target = fs_err::canonicalize(path)?;
    let dir = target
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let meta = fs_err::metadata(&target)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".batchgen-compact-")
        .tempfile_in(dir)?;
    tmp.as_file().set_permissions(meta.permissions())?;
    {
        use std::os::unix::fs::MetadataExt;
        // Only a privileged process can give the file away; otherwise it stays the runner's.
        let _ = std::os::unix::fs::fchown(tmp.as_file(), Some(meta.uid()), Some(meta.gid()));
    }
    {
        let mut out = std::io::BufWriter::with_capacity(256 * 1024, tmp.as_file_mut());
        let mut lines = RecordLines::open(&target)?;
        let mut index = 0u64;
        while let Some(l) = lines.next_line()? {
            if let Line::Record(_) = l.line {
                if keep.contains(&index) {
                    out.write_all(l.text)?;
                }
                index += 1;
            } else {
                // Lines that are not records are kept, never silently destroyed.
                out.write_all(l.text)?;
            }
        }
        out.flush()?;
    }
    tmp.as_file().sync_all()?;
    tmp.persist(&target).map_err(|e| e.error)?;
    fs_err::File::open(dir)?.sync_all()?;
    Ok(prev.records - keep.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn latest_record_wins_and_torn_line_is_cut() {
        let mut f = tempfile::NamedTempFile::new().expect("tmp");
        f.write_all(
            b"{\"id\":\"a\",\"status\":\"error\"}\n{\"id\":\"b\",\"status\":\"ok\"}\n\
              {\"id\":\"a\",\"status\":\"ok\"}\n{\"id\":\"c\",\"stat",
        )
        .expect("write");
        let prev = scan(f.path(), true).expect("scan");
        assert_eq!(prev.status("a", 1), Status::Done);
        assert_eq!(prev.status("b", 1), Status::Done);
        assert_eq!(prev.status("c", 1), Status::Pending);
        assert!(prev.has_superseded());
        assert_eq!(prev.records, 3);
        assert_eq!(prev.torn_bytes, 15);
        let text = std::fs::read_to_string(f.path()).expect("read");
        assert!(text.ends_with("\"ok\"}\n"));
    }

    #[test]
    fn compaction_keeps_the_latest_record_of_each_id() {
        let mut f = tempfile::NamedTempFile::new().expect("tmp");
        f.write_all(
            b"{\"id\":\"a\",\"status\":\"error\"}\n{\"id\":\"b\",\"status\":\"ok\"}\n\
              {\"id\":\"a\",\"status\":\"ok\",\"n\":2}\n",
        )
        .expect("write");
        assert_eq!(compact(f.path()).expect("compact"), 1);
        let text = std::fs::read_to_string(f.path()).expect("read");
        assert_eq!(
            text,
            "{\"id\":\"b\",\"status\":\"ok\"}\n{\"id\":\"a\",\"status\":\"ok\",\"n\":2}\n"
        );
        assert_eq!(compact(f.path()).expect("compact"), 0);
    }

    #[test]
    fn changed_requests_are_told_apart() {
        let mut f = tempfile::NamedTempFile::new().expect("tmp");
        f.write_all(b"{\"id\":\"a\",\"status\":\"ok\",\"request_hash\":\"00000000000000ff\"}\n")
            .expect("write");
        let prev = scan(f.path(), true).expect("scan");
        assert_eq!(prev.status("a", 0xff), Status::Done);
        assert_eq!(prev.status("a", 0xfe), Status::Changed);
    }

    #[test]
    fn an_invalid_input_record_never_supersedes_an_ok_one() {
        let mut f = tempfile::NamedTempFile::new().expect("tmp");
        f.write_all(
            b"{\"id\":\"a\",\"status\":\"ok\"}\n\
              {\"id\":\"a\",\"status\":\"error\",\"error\":{\"kind\":\"invalid_input\"}}\n\
              {\"id\":\"b\",\"status\":\"error\",\"error\":{\"kind\":\"invalid_input\"}}\n\
              {\"id\":\"b\",\"status\":\"ok\"}",
        )
        .expect("write");
        let prev = scan(f.path(), true).expect("scan");
        assert_eq!(prev.status("a", 1), Status::Done);
        assert_eq!(prev.status("b", 1), Status::Done);
        assert!(prev.newline_added);
        assert_eq!(compact(f.path()).expect("compact"), 2);
        let text = std::fs::read_to_string(f.path()).expect("read");
        assert_eq!(
            text,
            "{\"id\":\"a\",\"status\":\"ok\"}\n{\"id\":\"b\",\"status\":\"ok\"}\n"
        );
    }

    #[test]
    fn missing_file_is_empty() {
        let prev = scan(Path::new("/nonexistent/batchgen/x.jsonl"), true).expect("scan");
        assert_eq!(prev.records, 0);
    }
}
