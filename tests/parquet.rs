//! Black-box tests of Parquet input: typed columns become the row's fields (nulls absent,
//! lists and structs as JSON), a `messages` column is a conversation, and a corrupt file
//! exits 2 naming it. The files are written here with the `parquet` crate.

mod common;

use std::path::Path;
use std::sync::Arc;

use arrow_array::builder::{ListBuilder, StringBuilder, StructBuilder};
use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Fields};
use common::*;
use parquet::arrow::ArrowWriter;

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
