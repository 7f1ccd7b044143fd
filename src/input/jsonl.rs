//! JSONL rows: one JSON object per line; blank lines are skipped, and so is a UTF-8 byte order
//! mark at the start of the file.

use std::io::{self, BufRead};

use serde_json::{Map, Value};

use super::{Item, Problem, RawRow};

/// The longest line a row may take. A request is at most 8 MiB
/// ([`crate::request::MAX_BODY_BYTES`]); a line may carry more (metadata, escapes), but one
/// longer than this is rejected while it is read, so that a huge line is never held whole.
pub const MAX_LINE_BYTES: usize = 16 * 1024 * 1024;

const BOM: &[u8] = b"\xef\xbb\xbf";

pub struct JsonlRows {
    reader: Box<dyn BufRead + Send>,
    buf: Vec<u8>,
    line: u64,
    number: u64,
}

impl JsonlRows {
    pub fn new(reader: Box<dyn BufRead + Send>) -> Self {
        JsonlRows {
            reader,
            buf: Vec::with_capacity(4096),
            line: 0,
            number: 0,
        }
    }

    fn parse(&self) -> Result<Map<String, Value>, String> {
        let text = std::str::from_utf8(&self.buf)
            .map_err(|e| format!("invalid UTF-8 at byte {} of the line", e.valid_up_to() + 1))?;
        match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(map)) => Ok(map),
            Ok(_) => Err("not a JSON object".to_string()),
            Err(e) => Err(format!("invalid JSON: {e}")),
        }
    }
}

impl Iterator for JsonlRows {
    type Item = io::Result<Item>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            self.buf.clear();
            let whole = match read_line(&mut *self.reader, &mut self.buf) {
                Ok(None) => return None,
                Ok(Some(whole)) => whole,
                Err(e) => return Some(Err(e)),
            };
            self.line += 1;
            if !whole {
                self.number += 1;
                return Some(Ok(Item::Bad(Problem {
                    line: self.line,
                    reason: format!(
                        "the line is longer than the {} MiB limit",
                        MAX_LINE_BYTES / (1024 * 1024)
                    ),
                })));
            }
            if self.line == 1 && self.buf.starts_with(BOM) {
                self.buf.drain(..BOM.len());
            }
            while matches!(self.buf.last(), Some(b'\n' | b'\r')) {
                self.buf.pop();
            }
            if self.buf.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            self.number += 1;
            let line = self.line;
            return Some(Ok(match self.parse() {
                Ok(fields) => Item::Row(RawRow {
                    line,
                    number: self.number,
                    fields,
                }),
                Err(reason) => Item::Bad(Problem { line, reason }),
            }));
        }
    }
}

/// Reads one line (with its newline) into `buf`, keeping at most [`MAX_LINE_BYTES`] of it: the
/// rest of a longer line is read and dropped. `None` at the end of the input; `Some(false)` for
/// a line over the limit.
fn read_line(reader: &mut dyn BufRead, buf: &mut Vec<u8>) -> io::Result<Option<bool>> {
    let mut read_any = false;
    let mut whole = true;
    loop {
        let available = match reader.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            return Ok(read_any.then_some(whole));
        }
        read_any = true;
        let (used, end) = match memchr::memchr(b'\n', available) {
            Some(at) => (at + 1, true),
            None => (available.len(), false),
        };
        if whole && buf.len() + used <= MAX_LINE_BYTES + 1 {
            buf.extend_from_slice(&available[..used]);
        } else {
            whole = false;
            buf.clear();
        }
        reader.consume(used);
        if end {
            return Ok(Some(whole));
        }
    }
}
