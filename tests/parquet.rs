//! Black-box tests of Parquet input: typed columns become the row's fields (nulls absent,
//! lists and structs as JSON), a `messages` column is a conversation, and a corrupt file
//! exits 2 naming it; the export to Parquet, read back here, is the input's columns with their
//! types, then the result columns. The files are written and read with the `parquet` crate.

mod common;

use std::path::Path;
use std::sync::Arc;

use arrow_array::builder::{ListBuilder, StringBuilder, StructBuilder};
use arrow_array::{
    Array, ArrayRef, Date32Array, Float64Array, Int64Array, RecordBatch, RecordBatchReader,
    StringArray,
};
use arrow_schema::{DataType, Field, Fields};
use common::*;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

fn write_parquet(path: &Path, columns: Vec<(&str, ArrayRef)>) {
    let batch = RecordBatch::try_from_iter(columns).expect("batch");
    let file = std::fs::File::create(path).expect("create");
    let mut w = ArrowWriter::try_new(file, batch.schema(), None).expect("writer");
    w.write(&batch).expect("write");
    w.close().expect("close");
}

fn tags(rows: &[&[&str]]) -> ArrayRef {
    let mut b = ListBuilder::new(StringBuilder::new());
    for row in rows {
        for t in *row {
            b.values().append_value(t);
        }
        b.append(true);
    }
    Arc::new(b.finish())
}

#[test]
fn typed_columns_are_the_rows_fields_and_nulls_are_absent() {
    let ep = Endpoint::start(batchgen::mock::MockConfig::default());
    let dir = tempfile::tempdir().expect("tmp");
    let input = dir.path().join("rows.parquet");
    write_parquet(
        &input,
        vec![
            (
                "id",
                Arc::new(StringArray::from(vec!["a", "b", "c"])) as ArrayRef,
            ),
            (
                "text",
                Arc::new(StringArray::from(vec!["one", "two", "three"])),
            ),
            ("n", Arc::new(Int64Array::from(vec![1, 2, 3]))),
            (
                "score",
                Arc::new(Float64Array::from(vec![Some(0.5), None, Some(2.0)])),
            ),
            ("tags", tags(&[&["x", "y"], &[], &["z"]])),
        ],
    );
    let out = dir.path().join("out.jsonl");
    let (code, stderr) = run_io(
        &input,
        &out,
        &ep.url(),
        &["--template", "Say {text} {n} times, tagged {tags}"],
    );
    assert_eq!(code, 0, "{stderr}");
    let recs = records(&out);
    assert_eq!(recs.len(), 3);
    assert!(recs.iter().all(|r| r["status"] == "ok"), "{recs:?}");
    let by = by_id(&recs);
    assert!(by.contains_key("a") && by.contains_key("c"));

    // Export to JSONL shows the row's fields as the run saw them.
    let (code, stdout, stderr) =
        export(&[path(&out), "--input", path(&input), "--format", "jsonl"]);
    assert_eq!(code, 0, "{stderr}");
    let rows: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0]["n"], 1);
    assert_eq!(rows[0]["score"], 0.5);
    assert_eq!(rows[0]["tags"], serde_json::json!(["x", "y"]));
    assert!(
        rows[1].get("score").is_none(),
        "a null is an absent field: {}",
        rows[1]
    );
    assert_eq!(rows[2]["result"]["status"], "ok");

    // A template naming the null field makes that row invalid, by its row number.
    let (code, stderr) = run_io(
        &input,
        &dir.path().join("out2.jsonl"),
        &ep.url(),
        &["--template", "{text} {score}"],
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("rows.parquet:2:"), "{stderr}");
    assert!(stderr.contains("score"), "{stderr}");
}

#[test]
fn a_messages_column_is_the_conversation() {
    let ep = Endpoint::start(batchgen::mock::MockConfig::default());
    let dir = tempfile::tempdir().expect("tmp");
    let input = dir.path().join("chat.parquet");
    let fields = Fields::from(vec![
        Field::new("role", DataType::Utf8, false),
        Field::new("content", DataType::Utf8, false),
    ]);
    let mut messages = ListBuilder::new(StructBuilder::from_fields(fields, 2));
    for turns in [
        vec![("system", "Be brief."), ("user", "Name a colour.")],
        vec![("user", "Name a fruit.")],
    ] {
        for (role, content) in turns {
            let s = messages.values();
            s.field_builder::<StringBuilder>(0)
                .expect("role")
                .append_value(role);
            s.field_builder::<StringBuilder>(1)
                .expect("content")
                .append_value(content);
            s.append(true);
        }
        messages.append(true);
    }
    write_parquet(
        &input,
        vec![
            (
                "id",
                Arc::new(StringArray::from(vec!["m1", "m2"])) as ArrayRef,
            ),
            ("messages", Arc::new(messages.finish())),
        ],
    );
    let out = dir.path().join("out.jsonl");
    let (code, stderr) = run_io(&input, &out, &ep.url(), &[]);
    assert_eq!(code, 0, "{stderr}");
    let recs = records(&out);
    assert_eq!(recs.len(), 2);
    // Two messages cost more input tokens than one: the system turn was sent.
    let by = by_id(&recs);
    let tokens = |id: &str| by[id]["usage"]["input_tokens"].as_u64().unwrap_or(0);
    assert!(tokens("m1") > tokens("m2"), "{recs:?}");
}

#[test]
fn a_corrupt_parquet_file_exits_2_naming_it_and_the_format_can_be_given() {
    let dir = tempfile::tempdir().expect("tmp");
    let bad = write(dir.path(), "broken.parquet", "PAR1 not really");
    let (code, stderr) = run(&[path(&bad), "--base-url", "mock"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("broken.parquet"), "{stderr}");
    assert!(stderr.contains("Parquet"), "{stderr}");

    // No extension: --input-format parquet says what it is.
    let input = dir.path().join("rows.data");
    write_parquet(
        &input,
        vec![(
            "prompt",
            Arc::new(StringArray::from(vec!["hello"])) as ArrayRef,
        )],
    );
    let out = dir.path().join("out.jsonl");
    let (code, stderr) = run(&[
        path(&input),
        "-o",
        path(&out),
        "--base-url",
        "mock",
        "--input-format",
        "parquet",
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(records(&out).len(), 1);
}

/// All the rows of a Parquet file as one record batch, read back with the `parquet` crate.
fn read_parquet(path: &Path) -> RecordBatch {
    let file = std::fs::File::open(path).expect("open parquet");
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .expect("a Parquet file")
        .build()
        .expect("reader");
    let schema = reader.schema();
    let batches: Vec<RecordBatch> = reader.map(|b| b.expect("batch")).collect();
    arrow_select::concat::concat_batches(&schema, &batches).expect("concat")
}

/// The result columns of the CSV and Parquet exports, in order, with their Parquet types.
const RESULT_COLUMNS: [(&str, DataType); 9] = [
    ("status", DataType::Utf8),
    ("content", DataType::Utf8),
    ("error_kind", DataType::Utf8),
    ("error_message", DataType::Utf8),
    ("input_tokens", DataType::Int64),
    ("output_tokens", DataType::Int64),
    ("reasoning_tokens", DataType::Int64),
    ("cost", DataType::Float64),
    ("finish_reason", DataType::Utf8),
];

/// Checks that `out` is `input`'s columns (names, types and values) then the result columns.
fn assert_input_then_results(out: &RecordBatch, input: &RecordBatch) {
    let n = input.num_columns();
    assert_eq!(out.num_rows(), input.num_rows());
    for (i, field) in input.schema().fields().iter().enumerate() {
        let got = out.schema().field(i).clone();
        assert_eq!(got.name(), field.name());
        assert_eq!(got.data_type(), field.data_type(), "{}", field.name());
        assert_eq!(
            out.column(i).to_data(),
            input.column(i).to_data(),
            "column {} differs",
            field.name()
        );
    }
    let names: Vec<(String, DataType)> = out.schema().fields()[n..]
        .iter()
        .map(|f| (f.name().clone(), f.data_type().clone()))
        .collect();
    let expected: Vec<(String, DataType)> = RESULT_COLUMNS
        .iter()
        .map(|(n, t)| (n.to_string(), t.clone()))
        .collect();
    assert_eq!(names, expected);
}

/// The column `name` of `batch`, as the array type `A` it must have.
fn column<'a, A: Array + 'static>(batch: &'a RecordBatch, name: &str) -> &'a A {
    batch
        .column_by_name(name)
        .expect(name)
        .as_any()
        .downcast_ref::<A>()
        .unwrap_or_else(|| panic!("{name}: not a {}", std::any::type_name::<A>()))
}

fn strings<'a>(batch: &'a RecordBatch, name: &str) -> &'a StringArray {
    column(batch, name)
}

fn ints<'a>(batch: &'a RecordBatch, name: &str) -> &'a Int64Array {
    column(batch, name)
}

fn floats<'a>(batch: &'a RecordBatch, name: &str) -> &'a Float64Array {
    column(batch, name)
}

fn user_turns(texts: &[&str]) -> ArrayRef {
    let fields = Fields::from(vec![
        Field::new("role", DataType::Utf8, false),
        Field::new("content", DataType::Utf8, false),
    ]);
    let mut messages = ListBuilder::new(StructBuilder::from_fields(fields, texts.len()));
    for text in texts {
        let s = messages.values();
        s.field_builder::<StringBuilder>(0)
            .expect("role")
            .append_value("user");
        s.field_builder::<StringBuilder>(1)
            .expect("content")
            .append_value(text);
        s.append(true);
        messages.append(true);
    }
    Arc::new(messages.finish())
}

#[test]
fn a_parquet_input_exports_back_to_parquet_with_its_types_and_the_results() {
    let ep = Endpoint::start(batchgen::mock::MockConfig::default());
    let dir = tempfile::tempdir().expect("tmp");
    let input = dir.path().join("rows.parquet");
    write_parquet(
        &input,
        vec![
            (
                "id",
                Arc::new(StringArray::from(vec!["a", "b", "c", "d"])) as ArrayRef,
            ),
            (
                "messages",
                user_turns(&[
                    "Name a colour.",
                    "Name a fruit.",
                    "fail [mock:400]",
                    "Name a tree.",
                ]),
            ),
            ("n", Arc::new(Int64Array::from(vec![1, 2, 3, 4]))),
            (
                "score",
                Arc::new(Float64Array::from(vec![Some(0.5), None, Some(2.0), None])),
            ),
            ("tags", tags(&[&["x", "y"], &[], &["z"], &["w"]])),
            (
                "day",
                Arc::new(Date32Array::from(vec![
                    Some(20_000),
                    None,
                    Some(20_002),
                    Some(20_003),
                ])),
            ),
        ],
    );
    let results = dir.path().join("rows.results.jsonl");
    let (code, stderr) = run_io(&input, &results, &ep.url(), &[]);
    assert_eq!(code, 1, "one row fails: {stderr}");
    let recs = by_id(&records(&results));
    assert_eq!(recs.len(), 4);
    // Row d loses its record, as if the run had stopped before it.
    let text = std::fs::read_to_string(&results).expect("results");
    let kept: String = text
        .lines()
        .filter(|l| !l.starts_with("{\"id\":\"d\""))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&results, kept).expect("write results");

    // The format follows -o's extension.
    let out = dir.path().join("joined.parquet");
    let (code, stdout, stderr) =
        export(&[path(&results), "--input", path(&input), "-o", path(&out)]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.is_empty());
    assert!(
        stderr.contains("2 ok, 1 failed, 1 without a result"),
        "{stderr}"
    );
    let got = read_parquet(&out);
    assert_input_then_results(&got, &read_parquet(&input));

    let status = strings(&got, "status");
    let content = strings(&got, "content");
    let tokens = ints(&got, "input_tokens");
    let cost = floats(&got, "cost");
    for (i, id) in ["a", "b"].iter().enumerate() {
        let rec = &recs[*id];
        assert_eq!(status.value(i), "ok");
        assert_eq!(content.value(i), rec["content"].as_str().expect("content"));
        assert_eq!(Some(tokens.value(i)), rec["usage"]["input_tokens"].as_i64());
        assert_eq!(
            Some(ints(&got, "output_tokens").value(i)),
            rec["usage"]["output_tokens"].as_i64()
        );
        assert_eq!(Some(cost.value(i)), rec["cost"].as_f64());
        assert_eq!(strings(&got, "finish_reason").value(i), "stop");
        assert!(strings(&got, "error_kind").is_null(i));
    }
    // The failed row: its error, no content, no tokens.
    assert_eq!(status.value(2), "error");
    assert_eq!(strings(&got, "error_kind").value(2), "invalid_request");
    assert_eq!(
        strings(&got, "error_message").value(2),
        recs["c"]["error"]["message"].as_str().expect("message")
    );
    assert!(content.is_null(2) && tokens.is_null(2));
    // The row without a record: every result column null.
    for (name, _) in RESULT_COLUMNS {
        assert!(got.column_by_name(name).expect(name).is_null(3), "{name}");
    }

    // `--format parquet` to stdout gives the same file.
    let raw = batchgen()
        .args(["export", path(&results), "--input", path(&input)])
        .args(["--format", "parquet"])
        .output()
        .expect("export to stdout");
    assert_eq!(raw.status.code(), Some(0));
    let piped = dir.path().join("piped.parquet");
    std::fs::write(&piped, &raw.stdout).expect("write");
    assert_eq!(read_parquet(&piped), got);

    // Parquet compresses inside: a .gz name is refused and nothing is written.
    let gz = dir.path().join("joined.parquet.gz");
    let (code, _, stderr) = export(&[
        path(&results),
        "--input",
        path(&input),
        "--format",
        "parquet",
        "-o",
        path(&gz),
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains(".gz"), "{stderr}");
    assert!(!gz.exists());
}

#[test]
fn jsonl_and_csv_inputs_export_to_parquet_as_text_columns() {
    let ep = Endpoint::start(batchgen::mock::MockConfig::default());
    let dir = tempfile::tempdir().expect("tmp");
    let jsonl = write(
        dir.path(),
        "lines.jsonl",
        "{\"id\":\"j1\",\"prompt\":\"Hello\",\"n\":7,\"tags\":[\"a\"]}\n\
         {\"id\":\"j2\",\"prompt\":\"World\",\"n\":null}\n",
    );
    let csv = write(
        dir.path(),
        "rows.csv",
        "id,prompt,lang\nc1,Bonjour,fr\nc2,Hallo,\n",
    );
    for (input, ids, columns) in [
        (&jsonl, ["j1", "j2"], vec!["id", "prompt", "n", "tags"]),
        (&csv, ["c1", "c2"], vec!["id", "prompt", "lang"]),
    ] {
        let results = dir.path().join("out.jsonl");
        let _ = std::fs::remove_file(&results);
        let (code, stderr) = run_io(input, &results, &ep.url(), &[]);
        assert_eq!(code, 0, "{stderr}");
        let recs = by_id(&records(&results));
        // -o without a Parquet extension: --format says what to write.
        let out = input.with_extension("data");
        let (code, _, stderr) = export(&[
            path(&results),
            "--input",
            path(input),
            "--format",
            "parquet",
            "-o",
            path(&out),
        ]);
        assert_eq!(code, 0, "{stderr}");
        let got = read_parquet(&out);
        assert_eq!(got.num_rows(), 2);
        let names: Vec<&str> = got
            .schema_ref()
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect::<Vec<_>>();
        let mut expected = columns.clone();
        expected.extend(RESULT_COLUMNS.iter().map(|(n, _)| *n));
        assert_eq!(names, expected);
        for (i, field) in got.schema().fields().iter().enumerate() {
            let want = RESULT_COLUMNS
                .get(i.wrapping_sub(columns.len()))
                .map_or(DataType::Utf8, |(_, t)| t.clone());
            assert_eq!(field.data_type(), &want, "{}", field.name());
        }
        assert_eq!(strings(&got, "id").value(0), ids[0]);
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(
                strings(&got, "content").value(i),
                recs[*id]["content"].as_str().expect("content")
            );
        }
    }
    // Values as the CSV export writes them; an absent or null value is null, and an empty
    // CSV field stays the empty string it is.
    let got = read_parquet(&jsonl.with_extension("data"));
    let (n, tags) = (strings(&got, "n"), strings(&got, "tags"));
    assert_eq!((n.value(0), tags.value(0)), ("7", "[\"a\"]"));
    assert!(n.is_null(1) && tags.is_null(1));
    let got = read_parquet(&csv.with_extension("data"));
    assert_eq!(strings(&got, "lang").value(0), "fr");
    assert!(!strings(&got, "lang").is_null(1));
    assert_eq!(strings(&got, "lang").value(1), "");
}
