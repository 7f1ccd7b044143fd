//! Black-box tests of `batchgen export`: a run against the simulated endpoint on loopback,
//! then its results joined back to the input.

mod common;

use batchgen::mock::{MockConfig, reply_for};
use common::*;
use serde_json::Value;

/// Parses CSV text into its header and rows.
fn parse_csv(text: &str) -> (Vec<String>, Vec<Vec<String>>) {
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let header = reader
        .headers()
        .expect("header")
        .iter()
        .map(str::to_string)
        .collect();
    let rows = reader
        .records()
        .map(|r| r.expect("csv row").iter().map(str::to_string).collect())
        .collect();
    (header, rows)
}

const RESULT_COLUMNS: [&str; 9] = [
    "status",
    "content",
    "error_kind",
    "error_message",
    "input_tokens",
    "output_tokens",
    "reasoning_tokens",
    "cost",
    "finish_reason",
];

#[test]
fn csv_export_has_the_input_rows_in_order_with_their_content() {
    let ep = Endpoint::start(MockConfig::default());
    let dir = tempfile::tempdir().expect("tmp");
    let mut csv = String::from("id,text,category\n");
    let mut rows = Vec::new();
    for i in 1..=300 {
        let text = if i % 3 == 0 {
            format!("Line one of {i}, with a comma\nand \"quotes\" on line two")
        } else {
            format!("Plain text {i}")
        };
        let category = if i % 5 == 0 { "a, b" } else { "plain" };
        csv.push_str(&format!(
            "c{i},\"{}\",\"{category}\"\n",
            text.replace('"', "\"\"")
        ));
        rows.push([format!("c{i}"), text, category.to_string()]);
    }
    let input = write(dir.path(), "reviews.csv", &csv);
    let results = dir.path().join("reviews.results.jsonl");
    let (code, stderr) = run(&[
        path(&input),
        "--template",
        "Summarize: {text}",
        "--base-url",
        &ep.url(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    // Records come in completion order; reversed, they are surely not in input order.
    let recs = by_id(&records(&results));
    let text = std::fs::read_to_string(&results).expect("results");
    let reversed: String = text.lines().rev().map(|l| format!("{l}\n")).collect();
    std::fs::write(&results, reversed).expect("write results");

    let out = dir.path().join("out.csv");
    let (code, _, stderr) = export(&[
        path(&results),
        "--input",
        path(&input),
        "--format",
        "csv",
        "-o",
        path(&out),
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("exported 300 rows") && stderr.contains("300 ok"),
        "{stderr}"
    );
    let (header, got) = parse_csv(&std::fs::read_to_string(&out).expect("out.csv"));
    let mut expected_header = vec!["id", "text", "category"];
    expected_header.extend(RESULT_COLUMNS);
    assert_eq!(header, expected_header);
    assert_eq!(got.len(), 300);
    let col = |name: &str| header.iter().position(|h| h == name).expect("column");
    for (row, input_row) in got.iter().zip(&rows) {
        assert_eq!(row[..3], input_row[..], "input columns first, as they were");
        let r = &recs[&input_row[0]];
        assert_eq!(row[col("status")], "ok");
        let expected = reply_for(&format!("Summarize: {}", input_row[1]));
        assert_eq!(r["content"].as_str(), Some(expected.as_str()));
        assert_eq!(row[col("content")], expected);
        assert_eq!(
            row[col("input_tokens")],
            r["usage"]["input_tokens"].to_string()
        );
        assert_eq!(
            row[col("output_tokens")],
            r["usage"]["output_tokens"].to_string()
        );
        assert_eq!(row[col("finish_reason")], "stop");
        assert_eq!(row[col("error_kind")], "");
        let cost = row[col("cost")].parse::<f64>().expect("cost");
        let recorded = r["cost"].as_f64().expect("recorded cost");
        assert!((cost - recorded).abs() < 1e-12, "{row:?}");
        assert!(!row[col("cost")].contains('e'), "a plain decimal");
    }
}

#[test]
fn the_latest_record_wins_errors_show_and_missing_rows_stay_empty() {
    let ep = Endpoint::start(MockConfig::default());
    let dir = tempfile::tempdir().expect("tmp");
    let prompts: Vec<String> = (1..=10)
        .map(|i| match i {
            4 => "please fail [mock:400]".to_string(),
            i => format!("Question {i}"),
        })
        .collect();
    let jsonl: String = prompts
        .iter()
        .enumerate()
        .map(|(i, p)| format!("{{\"id\":\"r{}\",\"prompt\":\"{p}\"}}\n", i + 1))
        .collect();
    let input = write(dir.path(), "rows.jsonl", &jsonl);
    let results = dir.path().join("rows.results.jsonl");
    let (code, stderr) = run(&[path(&input), "--base-url", &ep.url()]);
    assert_eq!(code, 1, "{stderr}");
    let recs = by_id(&records(&results));
    let message = recs["r4"]["error"]["message"]
        .as_str()
        .expect("error message")
        .to_string();

    // r6 loses its record; r2 gets a newer one, as a resumed run appends it; a line that is
    // not a record and a torn line (a newer r3 cut short by a crash) are ignored.
    let text = std::fs::read_to_string(&results).expect("results");
    let mut kept: String = text
        .lines()
        .filter(|l| !l.starts_with("{\"id\":\"r6\""))
        .map(|l| format!("{l}\n"))
        .collect();
    let mut newer = recs["r2"].clone();
    newer["content"] = Value::from("the newer answer, with \"quotes\"\nand a newline");
    kept.push_str("not a record\n");
    kept.push_str(&format!("{newer}\n"));
    kept.push_str("{\"id\":\"r3\",\"status\":\"ok\",\"content\":\"tor");
    std::fs::write(&results, kept).expect("write results");

    let out = dir.path().join("joined.csv");
    let (code, _, stderr) = export(&[path(&results), "--input", path(&input), "-o", path(&out)]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("rows.results.jsonl:10: not a result record; skipped"),
        "{stderr}"
    );
    assert!(
        stderr.contains("rows.results.jsonl:12: ignored a torn last line"),
        "{stderr}"
    );
    assert!(
        stderr.contains("8 ok, 1 failed, 1 without a result"),
        "{stderr}"
    );
    let (header, rows) = parse_csv(&std::fs::read_to_string(&out).expect("csv"));
    let mut expected_header = vec!["id", "prompt"];
    expected_header.extend(RESULT_COLUMNS);
    assert_eq!(header, expected_header, "the format follows -o's extension");
    let ids: Vec<&str> = rows.iter().map(|r| r[0].as_str()).collect();
    let expected_ids: Vec<String> = (1..=10).map(|i| format!("r{i}")).collect();
    assert_eq!(ids, expected_ids);
    let col = |name: &str| header.iter().position(|h| h == name).expect("column");
    assert_eq!(
        rows[1][col("content")],
        "the newer answer, with \"quotes\"\nand a newline"
    );
    assert_eq!(
        rows[2][col("content")],
        recs["r3"]["content"].as_str().expect("r3")
    );
    assert_eq!(rows[3][col("status")], "error");
    assert_eq!(rows[3][col("error_kind")], "invalid_request");
    assert_eq!(rows[3][col("error_message")], message);
    assert_eq!(rows[3][col("content")], "");
    assert_eq!(rows[5][..2], ["r6", "Question 6"]);
    assert!(
        rows[5][2..].iter().all(String::is_empty),
        "no record, no result: {:?}",
        rows[5]
    );

    // The same as JSONL, to stdout: each row with its whole latest record, or null.
    let (code, stdout, stderr) =
        export(&[path(&results), "--input", path(&input), "--format", "jsonl"]);
    assert_eq!(code, 0, "{stderr}");
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(lines.len(), 10);
    assert_eq!(lines[1]["id"], "r2");
    assert_eq!(lines[1]["result"], newer);
    assert_eq!(lines[3]["result"]["error"]["kind"], "invalid_request");
    assert_eq!(lines[5]["prompt"], "Question 6");
    assert_eq!(lines[5]["result"], Value::Null);
}

#[test]
fn jsonl_without_ids_joins_by_row_number() {
    let ep = Endpoint::start(MockConfig::default());
    let dir = tempfile::tempdir().expect("tmp");
    let mut jsonl = String::new();
    for i in 1..=40 {
        jsonl.push_str(&format!(
            "{{\"prompt\":\"Tell me about {i}\",\"lang\":\"fr\",\"extra\":{{\"n\":{i}}}}}\n"
        ));
        if i == 20 {
            // Blank lines are not rows: the numbering goes on as `run` counts.
            jsonl.push('\n');
        }
    }
    let input = write(dir.path(), "noid.jsonl", &jsonl);
    let results = dir.path().join("noid.results.jsonl");
    let (code, stderr) = run(&[path(&input), "--base-url", &ep.url(), "-c", "8"]);
    assert_eq!(code, 0, "{stderr}");

    let out = dir.path().join("noid.export.jsonl");
    let (code, _, stderr) = export(&[
        path(&results),
        "--input",
        path(&input),
        "--format",
        "jsonl",
        "-o",
        path(&out),
    ]);
    assert_eq!(code, 0, "{stderr}");
    let text = std::fs::read_to_string(&out).expect("export");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 40);
    for (i, line) in lines.iter().enumerate() {
        let n = i + 1;
        assert!(line.starts_with("{\"prompt\":"), "input key order: {line}");
        let v: Value = serde_json::from_str(line).expect("json");
        let prompt = format!("Tell me about {n}");
        assert_eq!(v["prompt"], prompt.as_str());
        assert_eq!(v["lang"], "fr");
        assert_eq!(v["extra"]["n"], n);
        assert_eq!(v["result"]["id"], n.to_string());
        assert_eq!(v["result"]["status"], "ok");
        assert_eq!(v["result"]["content"], reply_for(&prompt).as_str());
    }

    // With the RESULTS path left out it is the one `run` wrote by default; CSV to stdout.
    let (code, stdout, stderr) = export(&["--input", path(&input), "--format", "csv"]);
    assert_eq!(code, 0, "{stderr}");
    let (header, rows) = parse_csv(&stdout);
    assert_eq!(header[..4], ["prompt", "lang", "extra", "status"]);
    assert_eq!(rows.len(), 40);
    assert_eq!(rows[0][..4], ["Tell me about 1", "fr", "{\"n\":1}", "ok"]);
    assert_eq!(rows[39][4], reply_for("Tell me about 40"));
}

#[test]
fn skip_invalid_rows_join_their_invalid_input_records() {
    let ep = Endpoint::start(MockConfig::default());
    let dir = tempfile::tempdir().expect("tmp");
    let input = write(
        dir.path(),
        "bad.jsonl",
        "{\"id\":\"a\",\"prompt\":\"first\"}\n\
         {bad json\n\
         {\"id\":\"a\",\"prompt\":\"duplicate\"}\n\
         {\"prompt\":\"no id\"}\n\
         {\"id\":\"b\",\"prompt\":\"second\"}\n",
    );
    let results = dir.path().join("bad.results.jsonl");
    let (code, stderr) = run(&[path(&input), "--base-url", &ep.url(), "--skip-invalid"]);
    assert_eq!(code, 1, "{stderr}");

    // Like `run`, export refuses an input with invalid rows, naming each.
    let (code, stdout, stderr) = export(&[path(&results), "--input", path(&input)]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stdout.is_empty());
    for needle in ["bad.jsonl:2: invalid JSON", "bad.jsonl:3: duplicate id `a`"] {
        assert!(stderr.contains(needle), "{needle}: {stderr}");
    }
    assert!(stderr.contains("bad.jsonl:4: no `id` field"), "{stderr}");

    let (code, stdout, stderr) =
        export(&[path(&results), "--input", path(&input), "--skip-invalid"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("1 unreadable rows left out"), "{stderr}");
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    let got: Vec<(&str, &str)> = lines
        .iter()
        .map(|l| {
            (
                l["result"]["id"].as_str().unwrap_or("?"),
                l["result"]["status"].as_str().unwrap_or("?"),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("a", "ok"),
            ("a#line:3", "error"),
            ("line:4", "error"),
            ("b", "ok")
        ]
    );
    assert_eq!(lines[1]["prompt"], "duplicate");
    assert_eq!(lines[2]["result"]["error"]["kind"], "invalid_input");
}

#[test]
fn bad_usage_exits_2_and_writes_nothing() {
    let dir = tempfile::tempdir().expect("tmp");
    let input = write(dir.path(), "rows.jsonl", &prompts_jsonl(3));
    let results = write(
        dir.path(),
        "rows.results.jsonl",
        "{\"id\":\"r1\",\"status\":\"ok\",\"content\":\"x\"}\n",
    );

    let (code, _, stderr) = export(&[path(&results)]);
    assert_eq!(code, 2, "missing --input: {stderr}");
    assert!(stderr.contains("--input"), "{stderr}");

    let missing = dir.path().join("nope.results.jsonl");
    let (code, stdout, stderr) = export(&[path(&missing), "--input", path(&input)]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stdout.is_empty());
    assert!(stderr.contains("nope.results.jsonl"), "{stderr}");

    let (code, _, stderr) = export(&[
        path(&results),
        "--input",
        path(&dir.path().join("absent.jsonl")),
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("absent.jsonl"), "{stderr}");

    let txt = write(dir.path(), "rows.txt", "{}\n");
    let (code, _, stderr) = export(&[path(&results), "--input", path(&txt)]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--input-format"), "{stderr}");

    // -o may not overwrite the results it reads.
    let before = std::fs::read(&results).expect("results");
    let (code, _, stderr) = export(&[
        path(&results),
        "--input",
        path(&input),
        "-o",
        path(&results),
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(std::fs::read(&results).expect("results"), before);

    // A bad input row stops the export before an output file exists.
    let bad = write(
        dir.path(),
        "bad.jsonl",
        "{\"id\":\"r1\",\"prompt\":\"a\"}\n[1,2]\n",
    );
    let out = dir.path().join("out.csv");
    let (code, _, stderr) = export(&[path(&results), "--input", path(&bad), "-o", path(&out)]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("bad.jsonl:2: not a JSON object"),
        "{stderr}"
    );
    assert!(!out.exists());
}
