//! The resume scan: reads an existing results file, streaming, to learn which ids are done,
//! and repairs a torn last line left by a crash.

use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

use crate::input::ids::id_key;
use crate::record::{self, Line, RecordHead, RecordLines};

/// The latest record of an id in an existing results file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Latest {
    pub ok: bool,
    /// The `request_hash` it was made with (0 when it has none).
    pub hash: u64,
    /// 0-based index of the record in the file.
    pub index: u64,
}

const OK_BIT: u64 = 1 << 1;
const INVALID_INPUT_BIT: u64 = 1;
/// Bits of `Entry::meta`: the id key's top 24 bits, then the record's index, then the flags.
const INDEX_BITS: u32 = 38;
const KEY_SHIFT: u32 = INDEX_BITS + 2;
const INDEX_MASK: u64 = (1 << INDEX_BITS) - 1;

/// One record as the scan keeps it: 24 bytes, so that resuming 10,000,000 rows fits in a few
/// hundred MiB. The id key is kept to 88 of its 128 bits (the low 64 and the top 24) (two of 10,000,000 ids share 88 bits
/// with a chance of about 1 in 6 * 10^12), the request hash whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    /// The id key's low 64 bits.
    key: u64,
    /// From the top: the id key's top 24 bits, the record's 0-based index in the file
    /// ([`INDEX_BITS`] bits), and its `ok` and `invalid_input` flags. Ordering entries by
    /// (`key`, `meta`) orders them by id, then by place in the file.
    meta: u64,
    hash: u64,
}

/// An [`id_key`] cut to the 88 bits the table keeps: (its low 64 bits, its top 24), so that a
/// row waiting for its lookup fits in 24 bytes (`plan::lookup`). [`long_key`] undoes it.
pub fn short_key(key: u128) -> (u64, u32) {
    (key as u64, (key >> 104) as u32)
}

/// The id key of a [`short_key`], the bits it dropped zero: the table finds it as it finds
/// the whole key.
pub fn long_key((low, top): (u64, u32)) -> u128 {
    u128::from(top) << 104 | u128::from(low)
}

/// An [`id_key`] as the table keeps it: (its low 64 bits, its top 24 at the top of a `meta`).
fn split(key: u128) -> (u64, u64) {
    let (low, top) = short_key(key);
    (low, u64::from(top) << KEY_SHIFT)
}

impl Entry {
    fn new(key: u128, index: u64, ok: bool, invalid_input: bool, hash: u64) -> Entry {
        let (key, high) = split(key);
        let mut meta = high | (index & INDEX_MASK) << 2;
        if ok {
            meta |= OK_BIT;
        }
        if invalid_input {
            meta |= INVALID_INPUT_BIT;
        }
        Entry { key, meta, hash }
    }

    fn ok(&self) -> bool {
        self.meta & OK_BIT != 0
    }

    fn invalid_input(&self) -> bool {
        self.meta & INVALID_INPUT_BIT != 0
    }

    fn index(&self) -> u64 {
        (self.meta >> 2) & INDEX_MASK
    }

    /// The id, as 88 bits of its key.
    fn id(&self) -> (u64, u64) {
        (self.key, self.meta >> KEY_SHIFT)
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
        self.entries.push(Entry::new(
            key,
            index,
            head.ok,
            head.invalid_input,
            head.hash,
        ));
        self.finished = false;
    }

    /// Sorts the records by (id key, index) and keeps each id's latest, walking its records in
    /// file order with the rule of [`record::supersedes`]: a later record wins, except that
    /// an `invalid_input` record never replaces an ok one.
    fn finish(&mut self) {
        if self.finished {
            return;
        }
        // Unstable (no scratch buffer): the index in `meta` makes the order total anyway.
        self.entries.sort_unstable_by_key(|e| (e.key, e.meta));
        self.entries.dedup_by(|later, earlier| {
            let same = later.id() == earlier.id();
            if same && record::supersedes(earlier.ok(), later.invalid_input()) {
                *earlier = *later;
            }
            same
        });
        self.entries.shrink_to_fit();
        self.finished = true;
    }

    /// The latest record of the id whose [`id_key`] is `key`.
    pub fn get(&self, key: u128) -> Option<Latest> {
        debug_assert!(self.finished || self.entries.is_empty());
        let e = self.find(split(key))?;
        Some(Latest {
            ok: e.ok(),
            hash: e.hash,
            index: e.index(),
        })
    }

    /// The entry of an id, by interpolation search: the keys are hashes, so spread evenly,
    /// and each probe goes where the key's value says it should be. That takes three or four
    /// probes (cache misses) over ten million entries, where a binary search takes twenty.
    fn find(&self, (key, high): (u64, u64)) -> Option<Entry> {
        let entries = &self.entries;
        let (mut lo, mut hi) = (0usize, entries.len());
        // Invariant: every entry with this low half is in entries[lo..hi].
        while hi - lo > 8 {
            let (first, last) = (entries[lo].key, entries[hi - 1].key);
            if key < first || key > last {
                return None;
            }
            let span = u128::from(last - first).max(1);
            let at = lo + ((u128::from(key - first) * (hi - lo - 1) as u128) / span) as usize;
            match entries[at].key {
                k if k < key => lo = at + 1,
                k if k > key => hi = at,
                _ => {
                    // Found: the entries with this low half (almost always one) surround `at`.
                    let mut first = at;
                    while first > lo && entries[first - 1].key == key {
                        first -= 1;
                    }
                    let end = at + entries[at..hi].iter().take_while(|e| e.key == key).count();
                    return entries[first..end]
                        .iter()
                        .find(|e| e.meta >> KEY_SHIFT << KEY_SHIFT == high)
                        .copied();
                }
            }
        }
        let window = &entries[lo..hi];
        let start = window.partition_point(|e| e.key < key);
        window[start..]
            .iter()
            .take_while(|e| e.key == key)
            .find(|e| e.meta >> KEY_SHIFT << KEY_SHIFT == high)
            .copied()
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
    /// does not supersede the one before (see [`record::supersedes`]).
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

    /// A finished table of `keys`, each an ok record of request hash = its place.
    fn table(keys: &[u128]) -> LatestTable {
        let mut t = LatestTable::default();
        for (i, &k) in keys.iter().enumerate() {
            t.entries
                .push(Entry::new(k, i as u64, true, false, i as u64));
        }
        t.finish();
        t
    }

    #[test]
    fn the_search_from_the_guessed_place_finds_every_id_and_no_other() {
        // xorshift keys, spread like id hashes, plus clusters that defeat the guess.
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut keys: Vec<u128> = (0..50_000)
            .map(|_| (u128::from(next()) << 64) | u128::from(next()))
            .collect();
        keys.extend((0..300u128).map(|i| (i << 104) | 5));
        keys.extend((0..300u128).map(|i| i + (u128::from(u64::MAX - 1000) << 64)));
        let t = table(&keys);
        assert_eq!(t.len(), keys.len());
        for (i, &k) in keys.iter().enumerate() {
            let got = t.get(k).map(|l| l.hash);
            assert_eq!(got, Some(i as u64), "key {k:#x}");
        }
        for _ in 0..10_000 {
            let k = (u128::from(next()) << 64) | u128::from(next());
            assert_eq!(t.get(k), None);
        }
    }

    #[test]
    fn ids_that_share_the_low_half_of_their_key_are_told_apart() {
        let (a, b, c) = (7u128, 7u128 | (1 << 110), 7u128 | (3 << 120));
        let t = table(&[a, b, c, 8]);
        assert_eq!(t.len(), 4);
        assert_eq!(t.get(a).map(|l| l.index), Some(0));
        assert_eq!(t.get(b).map(|l| l.index), Some(1));
        assert_eq!(t.get(c).map(|l| l.index), Some(2));
        assert_eq!(t.get(7 | (2 << 120)), None);
        // The bits between the two kept parts are not told apart.
        assert_eq!(t.get(7 | (1 << 80)).map(|l| l.index), Some(0));
    }

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
