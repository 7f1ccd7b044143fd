//! JSONL rows: one JSON object per line; blank lines are skipped.

use std::io::{self, BufRead};

use serde_json::{Map, Value};

use super::{Item, Problem, RawRow};

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
            match self.reader.read_until(b'\n', &mut self.buf) {
                Ok(0) => return None,
                Ok(_) => {}
                Err(e) => return Some(Err(e)),
            }
            self.line += 1;
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
