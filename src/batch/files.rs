//! Batch input files: rows become `{"custom_id","method","url","body"}` lines, written as a
//! stream to `RESULTS.batch-files/NNNN.jsonl`, one model and one thinking mode per file, each
//! file within the line and byte limits. The body is the synchronous body byte for byte, so
//! `request_hash` is the same in both modes.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use xxhash_rust::xxh3::Xxh3;

/// The limits of one file.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_rows: u64,
    pub max_bytes: u64,
    /// The largest line, when the provider has a limit.
    pub max_line: Option<u64>,
}

/// A finished batch file, as the journal's `file` event records it.
#[derive(Debug, Clone, PartialEq)]
pub struct Made {
    pub seq: u64,
    pub path: PathBuf,
    pub model: String,
    pub rows: u64,
    pub bytes: u64,
    /// The hash of the file's custom_ids, in order: the `metadata.batchgen_file` tag that finds
    /// its batch again after a crash.
    pub ids: String,
    pub round: u32,
}

/// The path of file `seq` in `dir`.
pub fn file_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:04}.jsonl"))
}

/// The side file of `path` holding the `metadata` of its rows that have one: a batch line has
/// no room for it, and records carry it.
pub fn meta_path(path: &Path) -> PathBuf {
    path.with_extension("meta.jsonl")
}

/// The line `url` (and the batch `endpoint`) of a style's path; DashScope's free test model
/// has its own.
pub fn line_url(style_path: &str, model: &str) -> String {
    if model == "batch-test-model" {
        return "/v1/chat/ds-test".to_string();
    }
    format!("/v1{style_path}")
}

/// The hasher of a file's ids, seeded at random: the hash tags the file's batch at the
/// provider, and another file of the same rows (another results file, a later run) must not
/// find that batch as its own.
fn salted() -> Xxh3 {
    Xxh3::with_seed(fastrand::u64(..))
}

/// A file being written.
struct Open {
    seq: u64,
    path: PathBuf,
    out: io::BufWriter<fs_err::File>,
    meta: Option<io::BufWriter<fs_err::File>>,
    model: Arc<str>,
    rows: u64,
    bytes: u64,
    ids: Xxh3,
}

/// Writes rows into batch files, keeping one file open per (model, thinking mode): memory
/// holds only those writers, whatever the number of rows.
pub struct Maker {
    dir: PathBuf,
    style_path: &'static str,
    limits: Limits,
    round: u32,
    next_seq: u64,
    open: HashMap<(Arc<str>, Option<bool>), Open>,
    made: Vec<Made>,
    /// DashScope: a line without `enable_thinking` gets its hybrid model's default.
    explicit_thinking: bool,
}

#[derive(Deserialize)]
struct Thinking {
    #[serde(default)]
    enable_thinking: Option<bool>,
}

/// The thinking mode a body asks for (`enable_thinking`, a top-level field in batch lines).
pub fn thinking_of(body: &[u8]) -> Option<bool> {
    serde_json::from_slice::<Thinking>(body)
        .ok()
        .and_then(|t| t.enable_thinking)
}

/// Encodes one batch line, with its newline.
pub fn encode_line(id: &str, url: &str, body: &[u8]) -> Vec<u8> {
    let id = serde_json::to_string(id).unwrap_or_else(|_| "\"\"".to_string());
    let url = serde_json::to_string(url).unwrap_or_else(|_| "\"\"".to_string());
    let mut line = Vec::with_capacity(body.len() + id.len() + url.len() + 48);
    line.extend_from_slice(b"{\"custom_id\":");
    line.extend_from_slice(id.as_bytes());
    line.extend_from_slice(b",\"method\":\"POST\",\"url\":");
    line.extend_from_slice(url.as_bytes());
    line.extend_from_slice(b",\"body\":");
    line.extend_from_slice(body);
    line.extend_from_slice(b"}\n");
    line
}

impl Maker {
    /// Files go to `dir` (made if missing), numbered from `next_seq`; `round` is 0 for rows
    /// sent for the first time, and one more for each resubmission.
    pub fn new(
        dir: &Path,
        style_path: &'static str,
        limits: Limits,
        next_seq: u64,
        round: u32,
    ) -> io::Result<Maker> {
        fs_err::create_dir_all(dir)?;
        Ok(Maker {
            dir: dir.to_path_buf(),
            style_path,
            limits,
            round,
            next_seq,
            open: HashMap::new(),
            made: Vec::new(),
            explicit_thinking: false,
        })
    }

    /// Sets `enable_thinking` in every line of a hybrid model whose body has none, to the
    /// model's default (see `batch::thinking`): DashScope requires it. The row's record
    /// keeps the request hash of the body as built, which the side file holds.
    pub fn explicit_thinking(mut self, on: bool) -> Maker {
        self.explicit_thinking = on;
        self
    }

    /// Adds a row. `Ok(Err(reason))` when its line alone is over a limit: the row cannot go in
    /// any file, and gets an error record instead.
    pub fn add(
        &mut self,
        id: &str,
        body: &[u8],
        model: &Arc<str>,
        metadata: Option<&Value>,
    ) -> io::Result<Result<(), String>> {
        let mut sync_hash = None;
        let explicit = match self.explicit_thinking && thinking_of(body).is_none() {
            true => super::thinking::hybrid_default(model)
                .and_then(|t| super::thinking::with_thinking(body, t)),
            false => None,
        };
        if explicit.is_some() {
            sync_hash = Some(format!("{:016x}", xxhash_rust::xxh3::xxh3_64(body)));
        }
        let body = explicit.as_deref().unwrap_or(body);
        let line = encode_line(id, &line_url(self.style_path, model), body);
        let len = line.len() as u64;
        let line_cap = self.limits.max_line.unwrap_or(u64::MAX);
        if len > self.limits.max_bytes.min(line_cap) {
            return Ok(Err(format!(
                "its batch line of {len} bytes is over the limit of {} bytes",
                self.limits.max_bytes.min(line_cap)
            )));
        }
        let key = (model.clone(), thinking_of(body));
        let full = self.open.get(&key).is_some_and(|f| {
            f.rows >= self.limits.max_rows || f.bytes + len > self.limits.max_bytes
        });
        if full && let Some(f) = self.open.remove(&key) {
            self.close(f)?;
        }
        let file = match self.open.entry(key) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                let seq = self.next_seq;
                self.next_seq += 1;
                let path = file_path(&self.dir, seq);
                let out = io::BufWriter::with_capacity(1 << 20, fs_err::File::create(&path)?);
                // A side file left by an earlier attempt at this number is not this file's.
                let _ = fs_err::remove_file(meta_path(&path));
                e.insert(Open {
                    seq,
                    path,
                    out,
                    meta: None,
                    model: model.clone(),
                    rows: 0,
                    bytes: 0,
                    ids: salted(),
                })
            }
        };
        file.out.write_all(&line)?;
        file.rows += 1;
        file.bytes += len;
        file.ids.update(id.as_bytes());
        file.ids.update(b"\n");
        if metadata.is_some() || sync_hash.is_some() {
            if file.meta.is_none() {
                let meta = fs_err::File::create(meta_path(&file.path))?;
                file.meta = Some(io::BufWriter::new(meta));
            }
            if let Some(out) = &mut file.meta {
                let side = SideLine {
                    id: id.to_string(),
                    metadata: metadata.cloned(),
                    hash: sync_hash,
                };
                serde_json::to_writer(&mut *out, &side)?;
                out.write_all(b"\n")?;
            }
        }
        Ok(Ok(()))
    }

    fn close(&mut self, f: Open) -> io::Result<()> {
        let Open {
            seq,
            path,
            out,
            meta,
            model,
            rows,
            bytes,
            ids,
        } = f;
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        if let Some(meta) = meta {
            meta.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        }
        self.made.push(Made {
            seq,
            path,
            model: model.to_string(),
            rows,
            bytes,
            ids: format!("{:032x}", ids.digest128()),
            round: self.round,
        });
        Ok(())
    }

    /// Closes every open file (each synced to disk) and returns all the files made, in order.
    pub fn finish(mut self) -> io::Result<Vec<Made>> {
        let mut open: Vec<Open> = self.open.drain().map(|(_, f)| f).collect();
        open.sort_by_key(|f| f.seq);
        for f in open {
            self.close(f)?;
        }
        self.made.sort_by_key(|m| m.seq);
        Ok(self.made)
    }
}

/// One line of a batch file, as read back: its custom_id and its body's bytes.
#[derive(Deserialize)]
struct LineBack<'a> {
    custom_id: String,
    #[serde(borrow)]
    body: &'a serde_json::value::RawValue,
}

/// A row of a batch file, as collection needs it.
#[derive(Debug, Clone)]
pub struct Row {
    /// The request hash (of the body as written).
    pub hash: u64,
    pub model: Arc<str>,
    /// Where the line starts in the file, so that it can be copied into a resubmission.
    pub offset: u64,
    /// 1-based line number, as validation errors name it.
    pub line: u64,
}

/// Calls `f` with the body of each line of a batch file, in order.
pub fn each_body(path: &Path, mut f: impl FnMut(&[u8])) -> io::Result<()> {
    let mut reader = BufReader::new(fs_err::File::open(path)?);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        if reader.read_until(b'\n', &mut buf)? == 0 {
            return Ok(());
        }
        if let Ok(l) = serde_json::from_slice::<LineBack>(&buf) {
            f(l.body.get().as_bytes());
        }
    }
}

#[derive(Deserialize)]
struct ModelOnly {
    #[serde(default)]
    model: Option<String>,
}

/// Reads a batch file back: its rows by custom_id, in a map no larger than the file's
/// line count (at most `--batch-max-rows`).
pub fn read_rows(path: &Path, default_model: &Arc<str>) -> io::Result<HashMap<String, Row>> {
    let mut reader = BufReader::new(fs_err::File::open(path)?);
    let mut rows = HashMap::new();
    let mut buf = Vec::new();
    let (mut offset, mut line) = (0u64, 0u64);
    let mut models: HashMap<String, Arc<str>> = HashMap::new();
    loop {
        buf.clear();
        let n = reader.read_until(b'\n', &mut buf)?;
        if n == 0 {
            break;
        }
        line += 1;
        if let Ok(l) = serde_json::from_slice::<LineBack>(&buf) {
            let body = l.body.get().as_bytes();
            let model = match serde_json::from_slice::<ModelOnly>(body)
                .ok()
                .and_then(|m| m.model)
            {
                Some(m) => models
                    .entry(m.clone())
                    .or_insert_with(|| Arc::from(m))
                    .clone(),
                None => default_model.clone(),
            };
            rows.insert(
                l.custom_id,
                Row {
                    hash: xxhash_rust::xxh3::xxh3_64(body),
                    model,
                    offset,
                    line,
                },
            );
        }
        offset += n as u64;
    }
    for (id, side) in read_side(path)? {
        if let (Some(row), Some(hash)) = (rows.get_mut(&id), side.sync_hash()) {
            row.hash = hash;
        }
    }
    Ok(rows)
}

/// A line of a batch file's side file: what the batch line has no room for. `metadata` when
/// the row has one; `hash` (16 hex digits) when the line's body differs from the body as
/// built (an `enable_thinking` added), whose request hash the record keeps.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SideLine {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
}

impl SideLine {
    fn sync_hash(&self) -> Option<u64> {
        u64::from_str_radix(self.hash.as_deref()?, 16).ok()
    }
}

/// The side file of a batch file, by row id (empty when it has none).
pub fn read_side(path: &Path) -> io::Result<HashMap<String, SideLine>> {
    let meta = meta_path(path);
    let file = match fs_err::File::open(&meta) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(HashMap::new()),
        Err(e) => return Err(e),
    };
    let mut out = HashMap::new();
    for line in BufReader::new(file).lines() {
        if let Ok(m) = serde_json::from_str::<SideLine>(&line?) {
            out.insert(m.id.clone(), m);
        }
    }
    Ok(out)
}

/// The `metadata` of a file's rows, from its side file (empty when it has none).
pub fn read_meta(path: &Path) -> io::Result<HashMap<String, Value>> {
    Ok(read_side(path)?
        .into_iter()
        .filter_map(|(id, side)| Some((id, side.metadata?)))
        .collect())
}

/// Copies the lines at `offsets` of batch file `from` into a new file `to` (a resubmission),
/// with their metadata. Returns the file as made.
pub fn copy_lines(
    from: &Path,
    to: &Path,
    mut offsets: Vec<u64>,
    seq: u64,
    round: u32,
    model: &str,
) -> io::Result<Made> {
    use std::io::{Seek, SeekFrom};
    offsets.sort_unstable();
    let mut reader = BufReader::new(fs_err::File::open(from)?);
    let mut out = io::BufWriter::new(fs_err::File::create(to)?);
    let meta = read_side(from)?;
    let mut meta_out = Vec::new();
    let (mut rows, mut bytes, mut ids) = (0u64, 0u64, salted());
    let mut buf = Vec::new();
    for at in offsets {
        reader.seek(SeekFrom::Start(at))?;
        buf.clear();
        reader.read_until(b'\n', &mut buf)?;
        let Ok(l) = serde_json::from_slice::<LineBack>(&buf) else {
            continue;
        };
        if let Some(side) = meta.get(&l.custom_id) {
            serde_json::to_writer(&mut meta_out, side)?;
            meta_out.push(b'\n');
        }
        ids.update(l.custom_id.as_bytes());
        ids.update(b"\n");
        out.write_all(&buf)?;
        rows += 1;
        bytes += buf.len() as u64;
    }
    out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    if meta_out.is_empty() {
        let _ = fs_err::remove_file(meta_path(to));
    } else {
        let mut m = fs_err::File::create(meta_path(to))?;
        m.write_all(&meta_out)?;
        m.sync_all()?;
    }
    Ok(Made {
        seq,
        path: to.to_path_buf(),
        model: model.to_string(),
        rows,
        bytes,
        ids: format!("{:032x}", ids.digest128()),
        round,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(rows: u64, bytes: u64) -> Limits {
        Limits {
            max_rows: rows,
            max_bytes: bytes,
            max_line: None,
        }
    }

    fn body(model: &str, thinking: Option<bool>, text: &str) -> Vec<u8> {
        let mut v =
            serde_json::json!({"model": model, "messages": [{"role": "user", "content": text}]});
        if let Some(t) = thinking {
            v["enable_thinking"] = Value::Bool(t);
        }
        serde_json::to_vec(&v).unwrap_or_default()
    }

    #[test]
    fn files_split_by_rows_and_by_model_and_thinking_mode() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut m =
            Maker::new(dir.path(), "/chat/completions", limits(2, 1 << 20), 1, 0).expect("maker");
        let (plus, flash): (Arc<str>, Arc<str>) = (Arc::from("qwen-plus"), Arc::from("qwen-flash"));
        for i in 0..5 {
            let b = body("qwen-plus", None, &format!("q{i}"));
            assert!(
                m.add(&format!("p{i}"), &b, &plus, None)
                    .expect("add")
                    .is_ok()
            );
        }
        let b = body("qwen-flash", None, "f");
        assert!(m.add("f0", &b, &flash, None).expect("add").is_ok());
        let b = body("qwen-plus", Some(true), "t");
        assert!(m.add("t0", &b, &plus, None).expect("add").is_ok());
        let made = m.finish().expect("finish");
        let rows: Vec<u64> = made.iter().map(|f| f.rows).collect();
        assert_eq!(rows, [2, 2, 1, 1, 1]);
        assert_eq!(made[3].model, "qwen-flash");
        let seqs: Vec<u64> = made.iter().map(|f| f.seq).collect();
        assert_eq!(seqs, [1, 2, 3, 4, 5]);
        let text = std::fs::read_to_string(&made[0].path).expect("read");
        let first: Value = serde_json::from_str(text.lines().next().unwrap_or("")).expect("json");
        assert_eq!(first["custom_id"], "p0");
        assert_eq!(first["method"], "POST");
        assert_eq!(first["url"], "/v1/chat/completions");
        assert_eq!(first["body"]["model"], "qwen-plus");
        // The body is written byte for byte: its hash is the synchronous request_hash.
        let back = read_rows(&made[0].path, &plus).expect("rows");
        let b0 = body("qwen-plus", None, "q0");
        assert_eq!(back["p0"].hash, xxhash_rust::xxh3::xxh3_64(&b0));
        assert_eq!(back["p1"].line, 2);
        assert_ne!(made[0].ids, made[1].ids);
    }

    #[test]
    fn files_split_by_bytes_and_refuse_a_line_too_large() {
        let dir = tempfile::tempdir().expect("tmp");
        let model: Arc<str> = Arc::from("m");
        let b = body("m", None, &"x".repeat(100));
        let line = encode_line("r0", "/v1/chat/completions", &b).len() as u64;
        let mut m =
            Maker::new(dir.path(), "/chat/completions", limits(100, line * 3), 1, 0).expect("m");
        for i in 0..7 {
            assert!(
                m.add(&format!("r{i}"), &b, &model, None)
                    .expect("add")
                    .is_ok()
            );
        }
        let big = body("m", None, &"y".repeat(10_000));
        assert!(m.add("big", &big, &model, None).expect("add").is_err());
        let made = m.finish().expect("finish");
        let rows: Vec<u64> = made.iter().map(|f| f.rows).collect();
        assert_eq!(rows, [3, 3, 1]);
        assert!(made.iter().all(|f| f.bytes <= line * 3));
    }

    #[test]
    fn resubmission_copies_lines_and_their_metadata() {
        let dir = tempfile::tempdir().expect("tmp");
        let model: Arc<str> = Arc::from("m");
        let mut m = Maker::new(dir.path(), "/responses", limits(10, 1 << 20), 7, 0).expect("m");
        for i in 0..4 {
            let meta = serde_json::json!({"n": i});
            let b = body("m", None, &format!("q{i}"));
            assert!(
                m.add(&format!("r{i}"), &b, &model, Some(&meta))
                    .expect("add")
                    .is_ok()
            );
        }
        let made = m.finish().expect("finish");
        let rows = read_rows(&made[0].path, &model).expect("rows");
        assert_eq!(
            read_meta(&made[0].path).expect("meta")["r2"],
            serde_json::json!({"n": 2})
        );
        let to = file_path(dir.path(), 8);
        let offsets = vec![rows["r3"].offset, rows["r1"].offset];
        let again = copy_lines(&made[0].path, &to, offsets, 8, 1, "m").expect("copy");
        assert_eq!((again.rows, again.round, again.seq), (2, 1, 8));
        let back = read_rows(&to, &model).expect("rows");
        assert_eq!(back["r1"].hash, rows["r1"].hash);
        assert_eq!(back["r1"].line, 1);
        let meta = read_meta(&to).expect("meta");
        assert_eq!(meta.len(), 2);
        assert_eq!(meta["r3"], serde_json::json!({"n": 3}));
    }

    #[test]
    fn dashscope_lines_of_hybrid_models_set_thinking_and_keep_the_sync_hash() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut m = Maker::new(dir.path(), "/chat/completions", limits(10, 1 << 20), 1, 0)
            .expect("maker")
            .explicit_thinking(true);
        let rows: [(&str, &str, Option<bool>); 6] = [
            ("a", "qwen-plus", None),
            ("b", "qwen-plus", Some(false)),
            ("c", "qwen-plus", Some(true)),
            ("d", "qwen3.5-plus", None),
            ("e", "qwen-max", None),
            ("f", "qwen-plus", None),
        ];
        let mut sync = HashMap::new();
        for (id, model, thinking) in rows {
            let b = body(model, thinking, id);
            sync.insert(id, xxhash_rust::xxh3::xxh3_64(&b));
            let meta = (id == "f").then(|| serde_json::json!({"k": 1}));
            let model: Arc<str> = Arc::from(model);
            assert!(m.add(id, &b, &model, meta.as_ref()).expect("add").is_ok());
        }
        let made = m.finish().expect("finish");
        let mut seen = HashMap::new();
        for f in &made {
            let text = std::fs::read_to_string(&f.path).expect("read");
            let lines: Vec<Value> = text
                .lines()
                .map(|l| serde_json::from_str(l).unwrap_or_default())
                .collect();
            // One model and one thinking mode per file.
            let mode = &lines[0]["body"]["enable_thinking"];
            assert!(lines.iter().all(|l| &l["body"]["enable_thinking"] == mode));
            assert!(lines.iter().all(|l| l["body"]["model"] == f.model.as_str()));
            for l in &lines {
                let id = l["custom_id"].as_str().unwrap_or_default().to_string();
                seen.insert(id, l["body"]["enable_thinking"].clone());
            }
            // The records keep the request hash of the body as built.
            let model: Arc<str> = Arc::from(f.model.as_str());
            for (id, row) in read_rows(&f.path, &model).expect("rows") {
                assert_eq!(row.hash, sync[id.as_str()], "{id}");
            }
        }
        assert_eq!(made.len(), 4);
        assert_eq!(seen["a"], Value::Bool(false));
        assert_eq!(seen["b"], Value::Bool(false));
        assert_eq!(seen["c"], Value::Bool(true));
        assert_eq!(seen["d"], Value::Bool(true));
        assert_eq!(seen["e"], Value::Null);
        assert_eq!(seen["f"], Value::Bool(false));
        // "a", "b" and "f" share a file; a resubmission keeps the hashes and the metadata.
        let first = &made[0];
        let rows = read_rows(&first.path, &Arc::from("qwen-plus")).expect("rows");
        assert_eq!(
            read_meta(&first.path).expect("meta")["f"],
            serde_json::json!({"k": 1})
        );
        let to = file_path(dir.path(), 9);
        let offsets = vec![rows["a"].offset, rows["f"].offset];
        copy_lines(&first.path, &to, offsets, 9, 1, "qwen-plus").expect("copy");
        let again = read_rows(&to, &Arc::from("qwen-plus")).expect("rows");
        assert_eq!((again["a"].hash, again["f"].hash), (sync["a"], sync["f"]));
        assert_eq!(
            read_meta(&to).expect("meta")["f"],
            serde_json::json!({"k": 1})
        );
        // Elsewhere than on DashScope the bodies are left as they are.
        let mut m = Maker::new(
            &dir.path().join("x"),
            "/chat/completions",
            limits(10, 1 << 20),
            1,
            0,
        )
        .expect("maker");
        let b = body("qwen-plus", None, "q");
        assert!(
            m.add("z", &b, &Arc::from("qwen-plus"), None)
                .expect("add")
                .is_ok()
        );
        let made = m.finish().expect("finish");
        let text = std::fs::read_to_string(&made[0].path).expect("read");
        assert!(!text.contains("enable_thinking"));
    }
}
