//! Records: what a worker reports for a row ([`Outcome`]), how its record line is written
//! ([`encode`]), how a line of a results file is read back ([`classify`], [`RecordHead`]) and
//! the one reader of a results file's lines ([`RecordLines`]) that the resume scan, the
//! compaction and export share, so that they agree on which lines are records.

use std::borrow::Cow;
use std::io::{self, BufRead, BufReader};
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::pricing::Cost;
use crate::request::{Reply, Usage};
use crate::retry::{ErrorKind, Failure};

/// What a worker reports when it is done with a row.
#[derive(Debug)]
pub struct Outcome {
    pub id: String,
    pub hash: u64,
    pub metadata: Option<Value>,
    pub result: Result<Reply, Failure>,
    /// The answer's cost; `None` for errors, unpriced models and answers without usage.
    pub cost: Option<Cost>,
    /// Tokens and cost of answers rejected by `--json`/`--json-schema` before the last
    /// attempt: billed, so counted in the summary, though not in the record.
    pub discarded_usage: Usage,
    pub discarded_cost: Option<Cost>,
    pub attempts: u32,
    /// Duration of the last attempt.
    pub latency_ms: u64,
    /// Attempts whose request was sent and whose answer was lost.
    pub possibly_billed: u32,
    /// The model the row's request named: the record's `model` when the answer names none.
    pub model: Arc<str>,
    /// The provider batch that answered the row (batch mode); sync records have none.
    pub batch_id: Option<Arc<str>>,
}

// ---- Writing a record ----

#[derive(Serialize)]
struct OkRecord<'a> {
    id: &'a str,
    status: &'static str,
    // Third, so that the resume scan reads id, status and hash without parsing the content.
    request_hash: &'a str,
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parsed: Option<&'a Value>,
    reasoning: Option<&'a str>,
    finish_reason: Option<&'a str>,
    model: &'a str,
    usage: Option<&'a Usage>,
    cost: Option<f64>,
    attempts: u32,
    latency_ms: u64,
    finished_at: &'a str,
    request_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    batch_id: Option<&'a str>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    kind: ErrorKind,
    http_status: Option<u16>,
    code: Option<&'a str>,
    message: &'a str,
}

#[derive(Serialize)]
struct ErrorRecord<'a> {
    id: &'a str,
    status: &'static str,
    request_hash: &'a str,
    error: ErrorBody<'a>,
    attempts: u32,
    finished_at: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    batch_id: Option<&'a str>,
}

/// Appends the record of an outcome, as one line, to `buf`. Its `finished_at` is now: the
/// writer encodes each outcome within milliseconds of its row finishing.
pub fn encode(o: &Outcome, cost: Option<f64>, buf: &mut Vec<u8>) -> serde_json::Result<()> {
    let hash = format!("{:016x}", o.hash);
    let finished_at = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
    let finished_at = finished_at.as_str();
    match &o.result {
        Ok(r) => serde_json::to_writer(
            &mut *buf,
            &OkRecord {
                id: &o.id,
                status: "ok",
                content: r.content.as_deref(),
                parsed: r.parsed.as_ref(),
                reasoning: r.reasoning.as_deref(),
                finish_reason: r.finish_reason.as_deref(),
                model: r.model.as_deref().unwrap_or(&o.model),
                usage: r.usage.as_ref(),
                cost,
                attempts: o.attempts,
                latency_ms: o.latency_ms,
                finished_at,
                request_id: r.request_id.as_deref(),
                tool_calls: r.tool_calls.as_ref(),
                request_hash: &hash,
                metadata: o.metadata.as_ref(),
                batch_id: o.batch_id.as_deref(),
            },
        )?,
        Err(f) => serde_json::to_writer(
            &mut *buf,
            &ErrorRecord {
                id: &o.id,
                status: "error",
                error: ErrorBody {
                    kind: f.kind,
                    http_status: f.http_status,
                    code: f.code.as_deref(),
                    message: &f.message,
                },
                attempts: o.attempts,
                finished_at,
                request_hash: &hash,
                metadata: o.metadata.as_ref(),
                batch_id: o.batch_id.as_deref(),
            },
        )?,
    }
    buf.push(b'\n');
    Ok(())
}

// ---- Reading a record's head ----

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

/// Whether a record replaces an earlier record of its id as the latest one. A later record
/// wins, except that an `invalid_input` record never replaces an ok one: a row that was
/// answered stays answered, and is not paid for again. The resume scan and export keep the
/// latest record of each id by this rule.
pub fn supersedes(earlier_ok: bool, later_invalid_input: bool) -> bool {
    !(earlier_ok && later_invalid_input)
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
fn parse_hash(hex: &str) -> u64 {
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

/// What a line of a results file is. A line with its newline takes the fast path when it has
/// the shape this program writes; a last line without its newline is a record only if it
/// parses whole (otherwise it was torn by a crash).
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

// ---- Reading a results file ----

/// Results files are read through a buffer this large: they are read start to end.
const READ_BUFFER: usize = 256 * 1024;

/// One line of a results file, as [`RecordLines`] gives it.
#[derive(Debug)]
pub struct RecordLine<'a> {
    /// The line's bytes, with its newline when it has one.
    pub text: &'a [u8],
    /// Byte offset of the line in the file.
    pub offset: u64,
    /// 1-based line number.
    pub number: u64,
    pub line: Line<'a>,
}

impl RecordLine<'_> {
    /// Whether the line ends with its newline: only the last line of a file may not, and
    /// then it is either a whole record or a line torn by a crash.
    pub fn whole(&self) -> bool {
        self.text.last() == Some(&b'\n')
    }

    /// A last line without its newline that is not a record: cut short by a crash.
    pub fn torn(&self) -> bool {
        !self.whole() && !matches!(self.line, Line::Record(_))
    }
}

/// The lines of a results file, in order, each classified (see [`classify`]). Streams: it
/// holds one line at a time.
pub struct RecordLines {
    reader: BufReader<fs_err::File>,
    line: Vec<u8>,
    /// Offset of the next line.
    offset: u64,
    number: u64,
}

impl RecordLines {
    /// Opens a results file for reading.
    pub fn open(path: &Path) -> io::Result<RecordLines> {
        Ok(RecordLines::new(fs_err::File::open(path)?))
    }

    /// Reads a file opened by the caller (for writing too, to repair it once read).
    pub fn new(file: fs_err::File) -> RecordLines {
        RecordLines {
            reader: BufReader::with_capacity(READ_BUFFER, file),
            line: Vec::with_capacity(4096),
            offset: 0,
            number: 0,
        }
    }

    /// The first bytes not read yet, without consuming them (to sniff a compressed file).
    pub fn peek(&mut self) -> io::Result<&[u8]> {
        self.reader.fill_buf()
    }

    /// The next line, or `None` at the end of the file.
    pub fn next_line(&mut self) -> io::Result<Option<RecordLine<'_>>> {
        self.line.clear();
        let n = self.reader.read_until(b'\n', &mut self.line)?;
        if n == 0 {
            return Ok(None);
        }
        let offset = self.offset;
        self.offset += n as u64;
        self.number += 1;
        Ok(Some(RecordLine {
            text: &self.line,
            offset,
            number: self.number,
            line: classify(&self.line),
        }))
    }

    /// Offset of the next line: the bytes read so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The reader's file, to repair it once read.
    pub fn into_inner(self) -> fs_err::File {
        self.reader.into_inner()
    }
}

/// The fields of a record that export shows, borrowed where they can be; anything else is
/// ignored.
#[derive(Deserialize)]
pub struct RecordFields<'a> {
    #[serde(borrow)]
    pub id: Cow<'a, str>,
    #[serde(default)]
    pub status: Value,
    #[serde(default)]
    pub content: Value,
    #[serde(default)]
    pub parsed: Value,
    #[serde(default)]
    pub error: Value,
    #[serde(default)]
    pub usage: Value,
    #[serde(default)]
    pub cost: Value,
    #[serde(default)]
    pub finish_reason: Value,
}

impl<'a> RecordFields<'a> {
    pub fn parse(line: &'a [u8]) -> serde_json::Result<RecordFields<'a>> {
        serde_json::from_slice(line)
    }
}

/// When a record finished (`finished_at`, RFC 3339), in milliseconds since the epoch.
pub fn finished_at_ms(line: &[u8]) -> Option<u64> {
    #[derive(Deserialize)]
    struct Stamp<'a> {
        #[serde(default, borrow)]
        finished_at: Option<Cow<'a, str>>,
    }
    let stamp = serde_json::from_slice::<Stamp>(line).ok()?.finished_at?;
    let t = humantime::parse_rfc3339_weak(&stamp).ok()?;
    let ms = t.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis();
    u64::try_from(ms).ok()
}

/// Whether a record line carries `parsed` (a `--json` or `--json-schema` run).
pub fn has_parsed(line: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct Parsed {
        #[serde(default)]
        parsed: Option<serde::de::IgnoredAny>,
    }
    serde_json::from_slice::<Parsed>(line).is_ok_and(|p| p.parsed.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(result: Result<Reply, Failure>) -> Outcome {
        Outcome {
            id: "r1".into(),
            hash: 0xff,
            metadata: Some(serde_json::json!({"src": "a"})),
            result,
            cost: None,
            discarded_usage: Usage::default(),
            discarded_cost: None,
            attempts: 2,
            latency_ms: 12,
            possibly_billed: 0,
            model: Arc::from("qwen-plus"),
            batch_id: None,
        }
    }

    #[test]
    fn ok_and_error_records_have_the_spec_keys() {
        let reply = Reply {
            content: Some("hi".into()),
            finish_reason: Some("stop".into()),
            usage: Some(Usage {
                input_tokens: 5,
                output_tokens: 2,
                total_tokens: 7,
                ..Usage::default()
            }),
            ..Reply::default()
        };
        let mut buf = Vec::new();
        encode(&outcome(Ok(reply)), Some(0.5), &mut buf).expect("encode");
        let mut f = Failure::new(ErrorKind::InvalidRequest, "bad");
        f.http_status = Some(400);
        f.code = Some("InvalidParameter".into());
        encode(&outcome(Err(f)), None, &mut buf).expect("encode");
        let text = String::from_utf8(buf).expect("utf8");
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("json"))
            .collect();
        assert_eq!(lines[0]["status"], "ok");
        assert_eq!(lines[0]["model"], "qwen-plus");
        assert_eq!(lines[0]["usage"]["total_tokens"], 7);
        assert_eq!(lines[0]["cost"], 0.5);
        assert_eq!(lines[0]["metadata"]["src"], "a");
        assert_eq!(lines[0]["request_hash"], "00000000000000ff");
        assert_eq!(lines[1]["error"]["kind"], "invalid_request");
        assert_eq!(lines[1]["error"]["http_status"], 400);
        assert_eq!(lines[1]["attempts"], 2);
        for line in &lines {
            let at = line["finished_at"].as_str().expect("finished_at");
            assert!(at.len() == 24 && at.ends_with('Z'), "{at}");
            assert!(humantime::parse_rfc3339(at).is_ok(), "{at}");
        }
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
}
