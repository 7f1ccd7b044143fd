//! The resume scan: reads an existing results file, streaming, to learn which ids are done,
//! and repairs a torn last line left by a crash.

use std::borrow::Cow;
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::Path;

use serde::Deserialize;

/// A 128-bit hash of an id: what the resume set keeps instead of the id itself, so that memory
/// stays small on million-row jobs.
pub fn id_key(id: &str) -> u128 {
    xxhash_rust::xxh3::xxh3_128(id.as_bytes())
}

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

/// The part of a record that the resume scan, the compaction and export read: its id, and
/// what its status means for resuming.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordHead<'a> {
    pub id: Cow<'a, str>,
    pub ok: bool,
    /// An `invalid_input` error: the row was not sent.
    pub invalid_input: bool,
    /// The `request_hash` it was made with (0 when it has none).
    pub hash: u64,
}

impl RecordHead<'_> {
    /// Whether this record replaces an earlier record of its id as the latest one. A later
    /// record wins, except that an `invalid_input` record never replaces an ok one: a row
    /// that was answered stays answered, and is not paid for again.
    pub fn supersedes(&self, earlier_ok: bool) -> bool {
        !(earlier_ok && self.invalid_input)
    }
}

/// A line of a results file, as [`classify`] reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line<'a> {
    Record(RecordHead<'a>),
    /// Only whitespace.
    Blank,
    /// Anything else: reported, never dropped.
    NotRecord,
}

#[derive(Deserialize)]
struct Head<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(borrow)]
    status: Cow<'a, str>,
    #[serde(default, borrow)]
    request_hash: Option<Cow<'a, str>>,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

/// Parses a `request_hash` (16 hex digits).
pub fn parse_hash(hex: &str) -> u64 {
    u64::from_str_radix(hex, 16).unwrap_or(0)
}

/// Reads a record as this program writes it (`{"id":"…","status":"…","request_hash":"…",…}`)
/// without parsing the rest; `None` for any other shape, which then gets a full parse.
fn fast_head(line: &[u8]) -> Option<RecordHead<'_>> {
    // A record cut short (and anything else not ending as an object does) gets the full parse.
    if line.trim_ascii_end().last() != Some(&b'}') {
        return None;
    }
    let rest = line.strip_prefix(b"{\"id\":\"")?;
    let end = memchr::memchr(b'"', rest)?;
    let id = &rest[..end];
    if id.contains(&b'\\') {
        return None;
    }
    let rest = rest[end..].strip_prefix(b"\",\"status\":\"")?;
    let (ok, rest) = if let Some(r) = rest.strip_prefix(b"ok\"") {
        (true, r)
    } else {
        (false, rest.strip_prefix(b"error\"")?)
    };
    let rest = rest.strip_prefix(b",\"request_hash\":\"")?;
    let hex = std::str::from_utf8(rest.get(..16)?).ok()?;
    if rest.get(16) != Some(&b'"') {
        return None;
    }
    let hash = u64::from_str_radix(hex, 16).ok()?;
    let invalid_input = match ok {
        true => false,
        false => {
            let kind = rest[17..].strip_prefix(b",\"error\":{\"kind\":\"")?;
            kind.starts_with(b"invalid_input\"")
        }
    };
    Some(RecordHead {
        id: Cow::Borrowed(std::str::from_utf8(id).ok()?),
        ok,
        invalid_input,
        hash,
    })
}

/// Reads a record by parsing the whole line.
fn full_head(line: &[u8]) -> Option<RecordHead<'_>> {
    let h = serde_json::from_slice::<Head>(line).ok()?;
    let ok = h.status == "ok";
    let invalid_input = !ok
        && h.error
            .as_ref()
            .and_then(|e| e.get("kind"))
            .is_some_and(|k| k == "invalid_input");
    Some(RecordHead {
        id: h.id,
        ok,
        invalid_input,
        hash: h.request_hash.as_deref().map_or(0, parse_hash),
    })
}

/// What a line of a results file is: the one reading that the resume scan, the compaction
/// and export share, so that they agree on which lines are records. A line with its newline
/// takes the fast path when it has the shape this program writes; a last line without its
/// newline is a record only if it parses whole (otherwise it was torn by a crash).
pub fn classify(line: &[u8]) -> Line<'_> {
    let head = match line.last() {
        Some(b'\n') => fast_head(line).or_else(|| full_head(line)),
        _ => full_head(line),
    };
    match head {
        Some(h) => Line::Record(h),
        None if line.iter().all(u8::is_ascii_whitespace) => Line::Blank,
        None => Line::NotRecord,
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
    let mut reader = BufReader::with_capacity(256 * 1024, file);
    let mut line = Vec::with_capacity(4096);
    let mut good_end: u64 = 0;
    let mut line_no = 0u64;
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line)?;
        if n == 0 {
            break;
        }
        let whole = line.last() == Some(&b'\n');
        line_no += 1;
        match classify(&line) {
            Line::Record(h) => {
                prev.add(&h);
                if !whole {
                    prev.newline_added = true;
                }
            }
            _ if !whole => {
                prev.torn_bytes = n as u64;
                break;
            }
            Line::Blank => {}
            Line::NotRecord => prev.unreadable.push(line_no),
        }
        good_end += n as u64;
    }
    if repair && (prev.torn_bytes > 0 || prev.newline_added) {
        let mut file = reader.into_inner();
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
        let mut reader = BufReader::with_capacity(256 * 1024, fs_err::File::open(&target)?);
        let mut line = Vec::with_capacity(4096);
        let mut index = 0u64;
        loop {
            line.clear();
            if reader.read_until(b'\n', &mut line)? == 0 {
                break;
            }
            if let Line::Record(_) = classify(&line) {
                if keep.contains(&index) {
                    out.write_all(&line)?;
                }
                index += 1;
            } else {
                // Lines that are not records are kept, never silently destroyed.
                out.write_all(&line)?;
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
    fn fast_path_agrees_with_the_full_parse() {
        let head = |id: &'static str, ok, invalid_input, hash| {
            Some(RecordHead {
                id: Cow::Borrowed(id),
                ok,
                invalid_input,
                hash,
            })
        };
        let line = br#"{"id":"r1","status":"ok","request_hash":"00000000000000ff","content":"x"}"#;
        assert_eq!(fast_head(line), head("r1", true, false, 0xff));
        assert_eq!(full_head(line), fast_head(line));
        let err = br#"{"id":"r2","status":"error","request_hash":"0000000000000001","error":{"kind":"server"}}"#;
        assert_eq!(fast_head(err), head("r2", false, false, 1));
        assert_eq!(full_head(err), fast_head(err));
        let bad = br#"{"id":"r3","status":"error","request_hash":"0000000000000000","error":{"kind":"invalid_input","message":"x"},"attempts":0}"#;
        assert_eq!(fast_head(bad), head("r3", false, true, 0));
        assert_eq!(full_head(bad), fast_head(bad));
        assert_eq!(fast_head(br#"{"id":"a"b","status":"ok"}"#), None);
        assert_eq!(fast_head(br#"{"status":"ok","id":"a"}"#), None);
        // Cut short: not even the fast path takes it for a record.
        let cut = br#"{"id":"r1","status":"ok","request_hash":"00000000000000ff","content":"x"#;
        assert_eq!(fast_head(cut), None);
        assert_eq!(
            classify(b"{\"id\":\"a\",\"status\":\"ok\"}"),
            Line::Record(head("a", true, false, 0).expect("head"))
        );
        assert_eq!(classify(b" \n"), Line::Blank);
        assert_eq!(classify(b"[1]\n"), Line::NotRecord);
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
