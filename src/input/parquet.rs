//! Parquet rows: the file is read as a stream of record batches (a row group's pages at a
//! time), so memory stays flat however large the file is. Each column is a field of the row,
//! converted as Arrow's JSON writer converts it: strings, numbers and booleans as themselves,
//! dates and timestamps as their text, lists and structs as JSON (so a `messages` column of
//! `{role, content}` structs is a conversation). A null is an absent field. Rows are named by
//! their 1-based row number in the file, which stands in for the line of text formats.

use std::io;
use std::path::Path;

use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use serde_json::{Map, Value};

use super::{Item, Problem, RawRow};

/// Rows per record batch: small enough that a batch of long texts stays a few MB.
const BATCH_ROWS: usize = 1024;

pub struct ParquetRows {
    batches: ParquetRecordBatchReader,
    /// The rows of the current batch, as JSON lines.
    lines: Vec<u8>,
    pos: usize,
    /// Rows given out so far.
    number: u64,
    done: bool,
}

/// Why a file cannot be read as Parquet, as an I/O error naming no path (the caller names it).
pub fn invalid(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("not a readable Parquet file: {e}"),
    )
}

/// The file's columns (as Arrow fields), read from its footer alone.
pub fn schema(path: &Path) -> io::Result<arrow_schema::SchemaRef> {
    let file = fs_err::File::open(path)?.into_parts().0;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(invalid)?;
    Ok(builder.schema().clone())
}

/// The file's record batches of `BATCH_ROWS` rows, in order, with their Arrow types.
pub fn batches(path: &Path) -> io::Result<ParquetRecordBatchReader> {
    let file = fs_err::File::open(path)?.into_parts().0;
    ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(invalid)?
        .with_batch_size(BATCH_ROWS)
        .build()
        .map_err(invalid)
}

impl ParquetRows {
    pub fn open(path: &Path) -> io::Result<ParquetRows> {
        Ok(ParquetRows {
            batches: batches(path)?,
            lines: Vec::new(),
            pos: 0,
            number: 0,
            done: false,
        })
    }

    /// The next batch's rows as JSON lines; false at the end of the file.
    fn next_batch(&mut self) -> io::Result<bool> {
        let Some(batch) = self.batches.next() else {
            return Ok(false);
        };
        let batch = batch.map_err(invalid)?;
        self.lines.clear();
        self.pos = 0;
        let mut writer = arrow_json::LineDelimitedWriter::new(&mut self.lines);
        writer.write(&batch).map_err(invalid)?;
        writer.finish().map_err(invalid)?;
        Ok(true)
    }
}

impl Iterator for ParquetRows {
    type Item = io::Result<Item>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        while self.pos >= self.lines.len() {
            match self.next_batch() {
                Ok(true) => {}
                Ok(false) => {
                    self.done = true;
                    return None;
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
        let rest = &self.lines[self.pos..];
        let end = memchr::memchr(b'\n', rest).unwrap_or(rest.len());
        let line = &rest[..end];
        self.pos += end + 1;
        self.number += 1;
        let number = self.number;
        Some(Ok(
            match serde_json::from_slice::<Map<String, Value>>(line) {
                Ok(fields) => Item::Row(RawRow {
                    line: number,
                    number,
                    fields,
                }),
                Err(e) => Item::Bad(Problem {
                    line: number,
                    reason: format!("row {number} cannot be read: {e}"),
                }),
            },
        ))
    }
}
