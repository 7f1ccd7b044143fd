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

/// What an existing results file says.
#[derive(Debug, Default)]
pub struct Previous {
    /// Latest status of each id: `true` when it is `ok`.
    pub latest_ok: HashMap<u128, bool>,
    /// Records in the file (a superseded record counts too).
    pub records: u64,
    /// Bytes dropped from a torn last line.
    pub torn_bytes: u64,
    /// Complete lines that are not records (reported, then ignored).
    pub unreadable: Vec<u64>,
}

impl Previous {
    pub fn is_done(&self, id: &str) -> bool {
        self.latest_ok.get(&id_key(id)).copied().unwrap_or(false)
    }

    pub fn done_count(&self) -> usize {
        self.latest_ok.values().filter(|ok| **ok).count()
    }
}

#[derive(Deserialize)]
struct Head<'a> {
    #[serde(borrow)]
    id: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    status: std::borrow::Cow<'a, str>,
}

/// Scans `path` if it exists. A last line without its newline is cut off the file.
pub fn scan(path: &Path) -> std::io::Result<Previous> {
    let mut prev = Previous::default();
    let file = match fs_err::OpenOptions::new().read(true).write(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(prev),
        Err(e) => return Err(e),
    };
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
        match serde_json::from_slice::<Head>(&line) {
            Ok(h) => {
                prev.records += 1;
                prev.latest_ok.insert(id_key(&h.id), h.status == "ok");
            }
            Err(_) if line.iter().all(u8::is_ascii_whitespace) => {}
            Err(_) => prev.unreadable.push(line_no),
        }
    }
    if prev.torn_bytes > 0 {
        let mut file = reader.into_inner();
        file.set_len(good_end)?;
        file.seek(SeekFrom::End(0))?;
    }
    Ok(prev)
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
        let prev = scan(f.path()).expect("scan");
        assert!(prev.is_done("a") && prev.is_done("b") && !prev.is_done("c"));
        assert_eq!(prev.records, 3);
        assert_eq!(prev.torn_bytes, 15);
        let text = std::fs::read_to_string(f.path()).expect("read");
        assert!(text.ends_with("\"ok\"}\n"));
    }

    #[test]
    fn missing_file_is_empty() {
        let prev = scan(Path::new("/nonexistent/batchgen/x.jsonl")).expect("scan");
        assert_eq!(prev.records, 0);
    }
}
