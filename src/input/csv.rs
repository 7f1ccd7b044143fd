//! CSV rows: a header row names the fields; quoted fields may hold commas and newlines.

use std::io::{self, BufRead};

use serde_json::{Map, Value};

use super::{Item, Problem, RawRow};

pub struct CsvRows {
    reader: csv::Reader<Box<dyn BufRead + Send>>,
    headers: Option<Vec<String>>,
    record: csv::ByteRecord,
    number: u64,
    failed: bool,
}

impl CsvRows {
    pub fn new(reader: Box<dyn BufRead + Send>) -> Self {
        CsvRows {
            reader: csv::ReaderBuilder::new()
                .has_headers(false)
                .flexible(true)
                .from_reader(reader),
            headers: None,
            record: csv::ByteRecord::new(),
            number: 0,
            failed: false,
        }
    }

    /// Reads the header row; a problem here makes the whole file unusable.
    fn read_headers(&mut self) -> Option<io::Result<Item>> {
        match self.reader.read_byte_record(&mut self.record) {
            Ok(false) => None,
            Ok(true) => {
                let mut names = Vec::with_capacity(self.record.len());
                for field in self.record.iter() {
                    match std::str::from_utf8(field) {
                        Ok(s) => names.push(s.trim_start_matches('\u{feff}').to_string()),
                        Err(_) => return Some(Ok(self.fatal(1, "header: invalid UTF-8"))),
                    }
                }
                if names.iter().all(|n| n.trim().is_empty()) {
                    return Some(Ok(self.fatal(1, "the header row is empty")));
                }
                self.headers = Some(names);
                self.next()
            }
            Err(e) => Some(Ok(self.fatal(1, &format!("header: {e}")))),
        }
    }

    fn fatal(&mut self, line: u64, reason: &str) -> Item {
        self.failed = true;
        Item::Bad(Problem {
            line,
            reason: reason.to_string(),
        })
    }
}

impl Iterator for CsvRows {
    type Item = io::Result<Item>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let Some(headers) = &self.headers else {
            return self.read_headers();
        };
        match self.reader.read_byte_record(&mut self.record) {
            Ok(false) => None,
            Ok(true) => {
                let line = self.record.position().map_or(0, |p| p.line());
                if self.record.len() == 1 && self.record.get(0).is_some_and(<[u8]>::is_empty) {
                    return self.next();
                }
                self.number += 1;
                if self.record.len() != headers.len() {
                    return Some(Ok(Item::Bad(Problem {
                        line,
                        reason: format!(
                            "{} fields, but the header has {}",
                            self.record.len(),
                            headers.len()
                        ),
                    })));
                }
                let mut fields = Map::new();
                for (name, raw) in headers.iter().zip(self.record.iter()) {
                    match std::str::from_utf8(raw) {
                        Ok(s) => {
                            fields.insert(name.clone(), Value::String(s.to_string()));
                        }
                        Err(_) => {
                            return Some(Ok(Item::Bad(Problem {
                                line,
                                reason: format!("column `{name}`: invalid UTF-8"),
                            })));
                        }
                    }
                }
                Some(Ok(Item::Row(RawRow {
                    line,
                    number: self.number,
                    fields,
                })))
            }
            Err(e) => {
                if let csv::ErrorKind::Io(_) = e.kind() {
                    return Some(Err(io::Error::other(e)));
                }
                let line = e.position().map_or(0, |p| p.line());
                Some(Ok(self.fatal(line, &format!("invalid CSV: {e}"))))
            }
        }
    }
}
