//! The input's column names, in order, each once: the header of a CSV input, the top-level
//! keys of a JSONL input's rows in first-seen order. Only the names are kept.

use std::collections::HashMap;
use std::fmt;
use std::io::{self, BufRead};
use std::path::Path;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};

use crate::input;
use crate::input::Format;

/// Column names in order, each once.
#[derive(Debug, Default)]
pub(super) struct Columns {
    pub(super) names: Vec<String>,
    index: HashMap<String, usize>,
}

impl Columns {
    pub(super) fn add(&mut self, name: &str) {
        if !self.index.contains_key(name) {
            self.index.insert(name.to_string(), self.names.len());
            self.names.push(name.to_string());
        }
    }

    /// Forgets the names added since there were `len`.
    fn truncate(&mut self, len: usize) {
        for name in self.names.drain(len..) {
            self.index.remove(&name);
        }
    }

    pub(super) fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// `base`, or `base` with `_` prepended until no column has the name.
    pub(super) fn free_name(&self, base: &str) -> String {
        let mut name = base.to_string();
        while self.contains(&name) {
            name.insert(0, '_');
        }
        name
    }
}

pub(super) fn read_columns(path: &Path, format: Format) -> io::Result<Columns> {
    match format {
        Format::Csv => csv_columns(path),
        Format::Jsonl => jsonl_columns(path),
        Format::Parquet => {
            let mut columns = Columns::default();
            for field in input::parquet::schema(path)?.fields() {
                columns.add(field.name());
            }
            Ok(columns)
        }
    }
}

/// A CSV input's header, read as the input reader reads it. A header it cannot use is
/// reported by pass 2.
fn csv_columns(path: &Path) -> io::Result<Columns> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(input::open_text(path)?);
    let mut record = csv::ByteRecord::new();
    let mut columns = Columns::default();
    if reader.read_byte_record(&mut record).unwrap_or(false) {
        for field in &record {
            if let Ok(name) = std::str::from_utf8(field) {
                columns.add(name.trim_start_matches('\u{feff}'));
            }
        }
    }
    Ok(columns)
}

/// The top-level keys of a JSONL input's rows in first-seen order, read from the text (the
/// parsed rows keep keys sorted). Lines that are not objects add nothing.
fn jsonl_columns(path: &Path) -> io::Result<Columns> {
    let mut reader = input::open_text(path)?;
    let mut columns = Columns::default();
    let mut line = Vec::with_capacity(4096);
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        let before = columns.names.len();
        let mut de = serde_json::Deserializer::from_slice(&line);
        let read = KeysOf(&mut columns)
            .deserialize(&mut de)
            .and_then(|()| de.end());
        if read.is_err() {
            columns.truncate(before);
        }
    }
    Ok(columns)
}

/// Adds an object's keys to the columns, skipping its values.
struct KeysOf<'c>(&'c mut Columns);

impl<'de> DeserializeSeed<'de> for KeysOf<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for KeysOf<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_key_seed(KeyInto(&mut *self.0))?.is_some() {
            map.next_value::<IgnoredAny>()?;
        }
        Ok(())
    }
}

/// Adds one key to the columns without allocating for a name already known.
struct KeyInto<'c>(&'c mut Columns);

impl<'de> DeserializeSeed<'de> for KeyInto<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeyInto<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<(), E> {
        self.0.add(key);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn file(text: &[u8]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().expect("tmp");
        f.write_all(text).expect("write");
        f
    }

    #[test]
    fn jsonl_columns_keep_first_seen_order_and_skip_bad_lines() {
        let f = file(
            b"{\"prompt\":\"a\",\"id\":1,\"meta\":{\"z\":1}}\n\
              {\"zeta\":1,\"bad\":\n\
              \n\
              [1]\n\
              {\"lang\":\"fr\",\"prompt\":\"b\"}\n",
        );
        let c = jsonl_columns(f.path()).expect("columns");
        assert_eq!(c.names, ["prompt", "id", "meta", "lang"]);
    }

    #[test]
    fn csv_columns_are_the_header() {
        let f = file("\u{feff}id,text,id,note\n1,a,b,c\n".as_bytes());
        let c = csv_columns(f.path()).expect("columns");
        assert_eq!(c.names, ["id", "text", "note"]);
    }
}
