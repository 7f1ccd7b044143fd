//! The resume scan: reads an existing results file, streaming, to learn which ids are done,
//! and repairs a torn last line left by a crash.

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

const OK_BIT: u64 = 1 << 63;
const INVALID_INPUT_BIT: u64 = 1 << 62;
const INDEX_MASK: u64 = INVALID_INPUT_BIT - 1;

/// One record as the scan keeps it: 32 bytes, of which the id key is half. The 128-bit key
/// is kept whole (ids must not collide: see [`id_key`]); the request hash too, as 64 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    key: u128,
    hash: u64,
    /// The record's index in the file, with its `ok` and `invalid_input` flags in the top bits.
    meta: u64,
}

impl Entry {
    fn ok(&self) -> bool {
        self.meta & OK_BIT != 0
    }

    fn invalid_input(&self) -> bool {
        self.meta & INVALID_INPUT_BIT != 0
    }

    fn index(&self) -> u64 {
        self.meta & INDEX_MASK
    }
}

/// The latest record of each id, as a vector sorted by id key and looked up by binary search:
/// records are appended as the scan reads them, then sorted and reduced to one per id
/// (`LatestTable::finish`). A hash map of the same entries took about 2.7 times the memory
/// (its spare capacity, control bytes, and the old table alongside the new one while growing).
#[derive(Debug, Default)]
pub struct LatestTable {
    entries: Vec<Entry>,
    /// Whether `entries` is sorted and holds one entry per id.
    finished: bool,
}

impl LatestTable {
    /// Appends the `index`-th record of the file.
    fn push(&mut self, key: u128, head: &RecordHead, index: u64) {
        let mut meta = index & INDEX_MASK;
        if head.ok {
            meta |= OK_BIT;
        }
        if head.invalid_input {
            meta |= INVALID_INPUT_BIT;
        }
        self.entries.push(Entry {
            key,
            hash: head.hash,
            meta,
        });
        self.finished = false;
    }

    /// Sorts the records by (id key, index) and keeps each id's latest, walking its records in
    /// file order with the rule of [`RecordHead::supersedes`]: a later record wins, except that
    /// an `invalid_input` record never replaces an ok one.
    fn finish(&mut self) {
        if self.finished {
            return;
        }
        // Unstable (no scratch buffer): the index in the key makes the order total anyway.
        self.entries.sort_unstable_by_key(|e| (e.key, e.index()));
        let mut kept = 0usize;
        for i in 0..self.entries.len() {
            let e = self.entries[i];
            if kept > 0 && self.entries[kept - 1].key == e.key {
                let earlier = &mut self.entries[kept - 1];
                if !(earlier.ok() && e.invalid_input()) {
                    *earlier = e;
                }
            } else {
                self.entries[kept] = e;
                kept += 1;
            }
        }
        self.entries.truncate(kept);
        self.entries.shrink_to_fit();
        self.finished = true;
    }

    /// The latest record of the id whose [`id_key`] is `key`.
    pub fn get(&self, key: u128) -> Option<Latest> {
        debug_assert!(self.finished || self.entries.is_empty());
        let i = self.entries.binary_search_by_key(&key, |e| e.key).ok()?;
        let e = self.entries[i];
        Some(Latest {
            ok: e.ok(),
            hash: e.hash,
            index: e.index(),
        })
    }

    /// Ids in the table.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// A bit per record of the file: set for each id's latest record, the one compaction keeps.
    fn kept_bits(&self, records: u64) -> Vec<u64> {
        let mut bits = vec![0u64; (records as usize).div_ceil(64)];
        for e in &self.entries {
            let i = e.index() as usize;
            if let Some(w) = bits.get_mut(i / 64) {
                *w |= 1 << (i % 64);
            }
        }
        bits
    }
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
    pub latest: LatestTable,
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
        match self.latest.get(key) {
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
        self.latest.push(id_key(&head.id), head, self.records);
        self.records += 1;
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
    prev.latest.finish();
    Ok(prev)
}

/// Rewrites the results file with only the latest record of each id, atomically (a temporary
/// file in the same directory, then a rename, then a sync of the directory). Streams: memory
/// holds the scan's table and a bit per record. The new file keeps the old one's permission bits (and owner, where
/// allowed); when `path` is a symlink, its target is rewritten and the link stays.
pub fn compact(path: &Path) -> std::io::Result<u64> {
    let prev = scan(path, true)?;
    if !prev.has_superseded() {
        return Ok(0);
    }
    let keep = prev.latest.kept_bits(prev.records);
    let kept = prev.latest.len() as u64;
    drop(prev.latest);
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
                if keep
                    .get(index as usize / 64)
                    .is_some_and(|w| w & (1 << (index % 64)) != 0)
                {
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
    Ok(prev.records - kept)
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

#[cfg(test)]
mod table_tests {
    use super::*;
    use std::io::Write;

    fn scan_text(text: &[u8]) -> Previous {
        let mut f = tempfile::NamedTempFile::new().expect("tmp");
        f.write_all(text).expect("write");
        scan(f.path(), true).expect("scan")
    }

    #[test]
    fn each_id_keeps_its_latest_record_in_file_order() {
        let prev = scan_text(
            b"{\"id\":\"b\",\"status\":\"ok\"}\n{\"id\":\"a\",\"status\":\"error\"}\n\
              {\"id\":\"b\",\"status\":\"error\"}\n{\"id\":\"a\",\"status\":\"ok\"}\n\
              {\"id\":\"c\",\"status\":\"ok\"}\n",
        );
        assert_eq!(prev.records, 5);
        assert_eq!(prev.latest.len(), 3);
        let a = prev.latest.get(id_key("a")).expect("a");
        assert_eq!((a.ok, a.index), (true, 3));
        let b = prev.latest.get(id_key("b")).expect("b");
        assert_eq!((b.ok, b.index), (false, 2));
        assert_eq!(prev.status("b", 1), Status::Pending);
        assert_eq!(prev.latest.get(id_key("d")), None);
        assert_eq!(prev.latest.kept_bits(prev.records), vec![0b11100]);
    }

    #[test]
    fn invalid_input_never_supersedes_ok_but_anything_supersedes_it() {
        let prev = scan_text(
            b"{\"id\":\"a\",\"status\":\"ok\",\"request_hash\":\"0000000000000001\"}\n\
              {\"id\":\"a\",\"status\":\"error\",\"error\":{\"kind\":\"invalid_input\"}}\n\
              {\"id\":\"a\",\"status\":\"error\",\"error\":{\"kind\":\"invalid_input\"}}\n\
              {\"id\":\"x\",\"status\":\"error\",\"error\":{\"kind\":\"invalid_input\"}}\n\
              {\"id\":\"x\",\"status\":\"error\",\"error\":{\"kind\":\"invalid_input\"}}\n",
        );
        let a = prev.latest.get(id_key("a")).expect("a");
        assert_eq!((a.ok, a.index, a.hash), (true, 0, 1));
        let x = prev.latest.get(id_key("x")).expect("x");
        assert_eq!((x.ok, x.index), (false, 4));
    }

    #[test]
    fn a_changed_hash_and_a_torn_line_are_seen() {
        let prev = scan_text(
            b"{\"id\":\"a\",\"status\":\"ok\",\"request_hash\":\"00000000000000aa\"}\n\
              {\"id\":\"a\",\"status\":\"ok\",\"request_hash\":\"00000000000000bb\"}\n\
              {\"id\":\"b\",\"status\":\"ok\",\"request_",
        );
        assert_eq!(prev.status("a", 0xbb), Status::Done);
        assert_eq!(prev.status("a", 0xaa), Status::Changed);
        assert_eq!(prev.status("b", 0xaa), Status::Pending);
        assert_eq!(prev.records, 2);
        assert!(prev.torn_bytes > 0);
    }

    #[test]
    fn many_ids_are_found_by_binary_search() {
        let mut text = Vec::new();
        for i in (0..2000).rev() {
            let status = if i % 3 == 0 { "error" } else { "ok" };
            writeln!(text, "{{\"id\":\"r{i}\",\"status\":\"{status}\"}}").expect("write");
        }
        let prev = scan_text(&text);
        assert_eq!(prev.latest.len(), 2000);
        assert!(!prev.has_superseded());
        for i in 0..2000 {
            let want = if i % 3 == 0 {
                Status::Pending
            } else {
                Status::Done
            };
            assert_eq!(prev.status(&format!("r{i}"), 7), want, "r{i}");
        }
    }
}
