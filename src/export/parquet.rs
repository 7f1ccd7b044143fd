//! Pass 3 as Parquet: the input's columns, then the result columns as CSV names and orders
//! them, one output row per input row, written by the `parquet` crate's `ArrowWriter` in
//! record batches of [`BATCH_ROWS`] and row groups bounded in rows and bytes, so memory stays
//! flat however large the input is.
//!
//! A Parquet input is read a second time as record batches beside its rows, and its arrays go
//! into the output as they are: every column keeps its Arrow type (lists, structs, dates,
//! dictionaries ...). A CSV or JSONL input's columns are Utf8, each value as the CSV export
//! writes it, an absent or `null` value null. The result columns: `status`, `content`,
//! `parsed` (compact JSON, only when some record has it), `error_kind`, `error_message`,
//! `finish_reason` Utf8; `input_tokens`, `output_tokens`, `reasoning_tokens` Int64; `cost`
//! Float64; all nullable, null where the CSV export writes an empty field (and all null for
//! a row without a record).

use std::io::{self, Write};
use std::sync::Arc;

use arrow_array::builder::{
    ArrayBuilder, BooleanBuilder, Float64Builder, Int64Builder, StringBuilder,
};
use arrow_array::{ArrayRef, RecordBatch, RecordBatchReader};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReader;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use serde_json::Value;

use super::write::{Job, Layout, changed, text};
use super::{ExportError, refused};
use crate::input::{self, Format, Item, RawRow};
use crate::record::RecordFields;

/// Rows per record batch handed to the writer (a text input's; a Parquet input's are its own).
const BATCH_ROWS: usize = 1024;
/// A row group holds at most this many rows ...
const ROW_GROUP_ROWS: usize = 64 * 1024;
/// ... and about this many encoded bytes, which the writer holds until the group is written.
const ROW_GROUP_BYTES: usize = 32 * 1024 * 1024;

/// The result columns' types, by their base names (see `write::RESULT_COLUMNS`).
fn result_type(name: &str) -> DataType {
    match name {
        "input_tokens" | "output_tokens" | "reasoning_tokens" => DataType::Int64,
        "cost" => DataType::Float64,
        _ => DataType::Utf8,
    }
}

/// Builders of the result columns, in the layout's order.
struct Results {
    with_parsed: bool,
    /// status, content, parsed, error_kind, error_message, finish_reason.
    strings: [StringBuilder; 6],
    /// input_tokens, output_tokens, reasoning_tokens.
    tokens: [Int64Builder; 3],
    cost: Float64Builder,
}

impl Results {
    fn new(with_parsed: bool) -> Results {
        Results {
            with_parsed,
            strings: std::array::from_fn(|_| StringBuilder::new()),
            tokens: std::array::from_fn(|_| Int64Builder::new()),
            cost: Float64Builder::new(),
        }
    }

    fn push(&mut self, record: Option<&RecordFields<'_>>) {
        let Some(r) = record else {
            self.strings.iter_mut().for_each(StringBuilder::append_null);
            self.tokens.iter_mut().for_each(Int64Builder::append_null);
            self.cost.append_null();
            return;
        };
        let parsed = match &r.parsed {
            Value::Null => None,
            v => Some(v.to_string()),
        };
        let strings = [
            nonempty(&r.status),
            nonempty(&r.content),
            parsed,
            nonempty(&r.error["kind"]),
            nonempty(&r.error["message"]),
            nonempty(&r.finish_reason),
        ];
        for (b, v) in self.strings.iter_mut().zip(strings) {
            b.append_option(v);
        }
        let usage = ["input_tokens", "output_tokens", "reasoning_tokens"];
        for (b, key) in self.tokens.iter_mut().zip(usage) {
            b.append_option(r.usage[key].as_i64());
        }
        self.cost
            .append_option(r.cost.as_f64().filter(|c| c.is_finite()));
    }

    /// The arrays built so far, in the layout's order; the builders start again empty.
    fn finish(&mut self) -> Vec<ArrayRef> {
        let [status, content, parsed, kind, message, finish_reason] = self
            .strings
            .each_mut()
            .map(|b| Arc::new(b.finish()) as ArrayRef);
        let [input, output, reasoning] = self
            .tokens
            .each_mut()
            .map(|b| Arc::new(b.finish()) as ArrayRef);
        let mut out = vec![status, content];
        if self.with_parsed {
            out.push(parsed);
        }
        let cost: ArrayRef = Arc::new(self.cost.finish());
        out.extend([kind, message, input, output, reasoning, cost, finish_reason]);
        out
    }
}

/// A value as the CSV export writes it, `None` where that is an empty field.
fn nonempty(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        v => Some(text(v).into_owned()),
    }
}

/// Where the input columns come from.
enum Inputs {
    /// A CSV or JSONL input: each column a Utf8 builder, filled from the rows.
    Text(Vec<(String, StringBuilder)>),
    /// A Parquet input: its record batches, read beside the rows, with the rows of the
    /// current batch taken so far (false: left out by `--skip-invalid`).
    Arrow {
        batches: Box<ParquetRecordBatchReader>,
        current: Option<RecordBatch>,
        keep: BooleanBuilder,
    },
}

/// The output being written.
struct Sink<W: Write + Send> {
    writer: ArrowWriter<W>,
    schema: SchemaRef,
    inputs: Inputs,
    results: Results,
    /// Rows in the builders.
    rows: usize,
    input_name: String,
    target: String,
}

impl<W: Write + Send> Sink<W> {
    fn new(out: W, job: &Job<'_>, target: &str) -> Result<Sink<W>, ExportError> {
        let layout: &Layout = job.layout;
        let input_name = job.opts.input.display().to_string();
        let unreadable = |e: io::Error| refused(format!("cannot read {input_name}: {e}"));
        let (mut fields, inputs) = match job.opts.input.format {
            Format::Parquet => {
                let path = job.opts.input.path.as_deref().unwrap_or("-".as_ref());
                let batches = input::parquet::batches(path).map_err(unreadable)?;
                let fields: Vec<Field> = batches
                    .schema()
                    .fields()
                    .iter()
                    .map(|f| f.as_ref().clone())
                    .collect();
                let inputs = Inputs::Arrow {
                    batches: Box::new(batches),
                    current: None,
                    keep: BooleanBuilder::new(),
                };
                (fields, inputs)
            }
            Format::Csv | Format::Jsonl => {
                let names = &layout.columns.names;
                let fields = names
                    .iter()
                    .map(|n| Field::new(n, DataType::Utf8, true))
                    .collect();
                let builders = names
                    .iter()
                    .map(|n| (n.clone(), StringBuilder::new()))
                    .collect();
                (fields, Inputs::Text(builders))
            }
        };
        let mut bases: Vec<&str> = super::write::RESULT_COLUMNS.to_vec();
        if layout.with_parsed {
            bases.insert(2, "parsed");
        }
        for (name, base) in layout.result_names.iter().zip(bases) {
            fields.push(Field::new(name, result_type(base), true));
        }
        let schema = Arc::new(Schema::new(fields));
        let props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
            .set_max_row_group_bytes(Some(ROW_GROUP_BYTES))
            .build();
        let writer = ArrowWriter::try_new(out, schema.clone(), Some(props))
            .map_err(|e| parquet_failed(target, e))?;
        Ok(Sink {
            writer,
            schema,
            inputs,
            results: Results::new(layout.with_parsed),
            rows: 0,
            input_name,
            target: target.to_string(),
        })
    }

    /// One input row: `Some` with its record (or none), or `None` for a row left out.
    fn push(
        &mut self,
        row: Option<&RawRow>,
        record: Option<&RecordFields<'_>>,
    ) -> Result<(), ExportError> {
        match &mut self.inputs {
            Inputs::Text(builders) => {
                let Some(row) = row else { return Ok(()) };
                for (name, b) in builders.iter_mut() {
                    b.append_option(row.fields.get(name).and_then(nonempty));
                }
                self.results.push(record);
                self.rows += 1;
                if self.rows >= BATCH_ROWS {
                    self.flush()?;
                }
            }
            Inputs::Arrow {
                batches,
                current,
                keep,
            } => {
                if current.is_none() {
                    *current = next_batch(batches, &self.input_name)?;
                }
                let Some(batch) = current else {
                    return Err(changed(&self.input_name));
                };
                let batch_rows = batch.num_rows();
                keep.append_value(row.is_some());
                if row.is_some() {
                    self.results.push(record);
                    self.rows += 1;
                }
                if keep.len() >= batch_rows {
                    self.flush()?;
                }
            }
        }
        Ok(())
    }

    /// Writes the rows built so far as one record batch.
    fn flush(&mut self) -> Result<(), ExportError> {
        let mut columns: Vec<ArrayRef> = match &mut self.inputs {
            Inputs::Text(builders) => builders
                .iter_mut()
                .map(|(_, b)| Arc::new(b.finish()) as ArrayRef)
                .collect(),
            Inputs::Arrow { current, keep, .. } => {
                let Some(batch) = current.take() else {
                    return Ok(());
                };
                let keep = keep.finish();
                if keep.true_count() == keep.len() {
                    batch.columns().to_vec()
                } else {
                    arrow_select::filter::filter_record_batch(&batch, &keep)
                        .map_err(|e| refused(format!("cannot read {}: {e}", self.input_name)))?
                        .columns()
                        .to_vec()
                }
            }
        };
        columns.extend(self.results.finish());
        self.rows = 0;
        let batch = RecordBatch::try_new(self.schema.clone(), columns)
            .map_err(|e| refused(format!("{}: {e}", self.input_name)))?;
        self.writer
            .write(&batch)
            .map_err(|e| parquet_failed(&self.target, e))
    }

    /// Writes the last rows and the file's footer; an error if the input has rows the row
    /// reader did not give (it changed in between).
    fn close(mut self) -> Result<(), ExportError> {
        match &mut self.inputs {
            Inputs::Text(_) if self.rows > 0 => self.flush()?,
            Inputs::Text(_) => {}
            Inputs::Arrow {
                batches, current, ..
            } => {
                if current.is_some() || next_batch(batches, &self.input_name)?.is_some() {
                    return Err(changed(&self.input_name));
                }
            }
        }
        self.writer
            .close()
            .map_err(|e| parquet_failed(&self.target, e))?;
        Ok(())
    }
}

/// The next record batch with rows, if any.
fn next_batch(
    batches: &mut ParquetRecordBatchReader,
    input_name: &str,
) -> Result<Option<RecordBatch>, ExportError> {
    for batch in batches.by_ref() {
        let batch = batch.map_err(|e| {
            refused(format!(
                "cannot read {input_name}: {}",
                input::parquet::invalid(e)
            ))
        })?;
        if batch.num_rows() > 0 {
            return Ok(Some(batch));
        }
    }
    Ok(None)
}

/// A writer error: the output's I/O error when it is one, else the writer's message (exit 3).
fn parquet_failed(target: &str, e: parquet::errors::ParquetError) -> ExportError {
    let source = match e {
        parquet::errors::ParquetError::External(inner) => match inner.downcast::<io::Error>() {
            Ok(io) => *io,
            Err(other) => io::Error::other(other),
        },
        other => io::Error::other(other),
    };
    ExportError::Output {
        target: target.to_string(),
        source,
    }
}

impl Job<'_> {
    /// Pass 3 written as Parquet to `out`.
    pub(super) fn write_parquet<W: Write + Send>(
        &mut self,
        out: W,
        target: &str,
    ) -> Result<(), ExportError> {
        let opts = self.opts;
        let input_name = opts.input.display();
        let unreadable = |e: io::Error| refused(format!("cannot read {input_name}: {e}"));
        let mut sink = Sink::new(out, self, target)?;
        for item in input::open(&opts.input).map_err(unreadable)? {
            match item.map_err(unreadable)? {
                Item::Row(row) => {
                    let record = self.record_of(&row)?;
                    sink.push(Some(&row), record.as_ref().map(|(r, _)| r))?;
                }
                Item::Bad(_) if opts.skip_invalid => {
                    self.report.left_out += 1;
                    sink.push(None, None)?;
                }
                Item::Bad(_) => return Err(changed(&input_name)),
            }
        }
        sink.close()
    }
}
