//! The resume scan: reads an existing results file, streaming, to learn which ids are done,
//! and repairs a torn last line left by a crash.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
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

#[derive(Deserialize)]
struct Head<'a> {
    #[serde(borrow)]
    id: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    status: std::borrow::Cow<'a, str>,
    #[serde(default, borrow)]
    request_hash: Option<std::borrow::Cow<'a, str>>,
}

/// Parses a `request_hash` (16 hex digits).
pub fn parse_hash(hex: &str) -> u64 {
    u64::from_str_radix(hex, 16).unwrap_or(0)
}

/// Reads id, status and hash from a record as this program writes it
/// (`{"id":"…","status":"…","request_hash":"…",…`) without parsing the rest; `None` for any
/// other shape, which then gets a full parse.
fn fast_head(line: &[u8]) -> Option<(&str, bool, u64)> {
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
    Some((std::str::from_utf8(id).ok()?, ok, hash))
}

/// Scans `path` if it exists. A last line without its newline is cut off the file.
/// Reads an existing output. With `repair`, a torn last line is cut off the file; without
/// (`--dry-run`), the file is only read.
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
        if line.last() != Some(&b'\n') {
            prev.torn_bytes = n as u64;
            break;
        }
        line_no += 1;
        good_end += n as u64;
        if let Some((id, ok, hash)) = fast_head(&line) {
            let index = prev.records;
            prev.latest.insert(id_key(id), Latest { ok, hash, index });
            prev.records += 1;
            continue;
        }
        match serde_json::from_slice::<Head>(&line) {
            Ok(h) => {
                let latest = Latest {
                    ok: h.status == "ok",
                    hash: h.request_hash.as_deref().map_or(0, parse_hash),
                    index: prev.records,
                };
                prev.latest.insert(id_key(&h.id), latest);
                prev.records += 1;
            }
            Err(_) if line.iter().all(u8::is_ascii_whitespace) => {}
            Err(_) => prev.unreadable.push(line_no),
        }
    }
    if prev.torn_bytes > 0 && repair {
        let mut file = reader.into_inner();
        file.set_len(good_end)?;
        file.seek(SeekFrom::End(0))?;
    }
    Ok(prev)
}

/// Rewrites the results file with only the latest record of each id, atomically (a temporary
/// file in the same directory, then a rename). Streams: memory holds one index per id.
pub fn compact(path: &Path) -> std::io::Result<u64> {
    let prev = scan(path, true)?;
    if !prev.has_superseded() {
        return Ok(0);
    }
    let keep: std::collections::HashSet<u64> = prev.latest.values().map(|l| l.index).collect();
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".batchgen-compact-")
        .tempfile_in(dir)?;
    {
        let mut out = std::io::BufWriter::with_capacity(256 * 1024, tmp.as_file_mut());
        let mut reader = BufReader::with_capacity(256 * 1024, fs_err::File::open(path)?);
        let mut line = Vec::with_capacity(4096);
        let mut index = 0u64;
        loop {
            line.clear();
            if reader.read_until(b'\n', &mut line)? == 0 {
                break;
            }
            if serde_json::from_slice::<Head>(&line).is_ok() {
                if keep.contains(&index) {
                    std::io::Write::write_all(&mut out, &line)?;
                }
                index += 1;
            } else {
                // Lines that are not records are kept, never silently destroyed.
                std::io::Write::write_all(&mut out, &line)?;
            }
        }
        std::io::Write::flush(&mut out)?;
    }
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
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
        let line = br#"{"id":"r1","status":"ok","request_hash":"00000000000000ff","content":"x"}"#;
        assert_eq!(fast_head(line), Some(("r1", true, 0xff)));
        let err = br#"{"id":"r2","status":"error","request_hash":"0000000000000001","error":{}}"#;
        assert_eq!(fast_head(err), Some(("r2", false, 1)));
        assert_eq!(fast_head(br#"{"id":"a"b","status":"ok"}"#), None);
        assert_eq!(fast_head(br#"{"status":"ok","id":"a"}"#), None);
    }

    #[test]
    fn missing_file_is_empty() {
        let prev = scan(Path::new("/nonexistent/batchgen/x.jsonl"), true).expect("scan");
        assert_eq!(prev.records, 0);
    }
}
