//! Black-box tests of cost at the edges: answers that name a dated snapshot or no model, the
//! cap's price for models that think by default, answers without usage, several currencies,
//! float noise, and the price source the summary names.

mod common;

use std::path::Path;

use batchgen::mock::MockConfig;
use common::*;
use serde_json::Value;

fn summary(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("summary")).expect("json")
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * b.abs().max(1e-6)
}

/// The cost of a record's usage at `input` / `output` per million tokens.
fn priced(r: &Value, input: f64, output: f64) -> f64 {
    let u = &r["usage"];
    let tokens = |k: &str| u[k].as_f64().unwrap_or(f64::NAN);
    (tokens("input_tokens") * input + tokens("output_tokens") * output) / 1e6
}

fn rows(lines: &[String]) -> String {
    lines.iter().map(|l| format!("{l}\n")).collect()
}

#[test]
fn a_dated_answer_is_priced_by_the_model_that_was_sent() {
    let ep = Endpoint::start(MockConfig::default());
    let dir = tempfile::tempdir().expect("tmp");
    let sum = dir.path().join("s.json");
    let input = write(
        dir.path(),
        "rows.jsonl",
        &rows(&[
            r#"{"id":"a","prompt":"plain [mock:dated]"}"#.into(),
            r#"{"id":"b","prompt":"own model [mock:dated]","params":{"model":"qwen-max"}}"#.into(),
            r#"{"custom_id":"c","method":"POST","url":"/v1/chat/completions","body":{"model":"qwen-max-latest","messages":[{"role":"user","content":"batch line"}]}}"#.into(),
        ]),
    );
    let out = dir.path().join("out.jsonl");
    let (code, stderr) = run_io(
        &input,
        &out,
        &ep.url(),
        &[
            "-m",
            "gpt-4o-mini",
            "--summary-json",
            sum.to_str().expect("path"),
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    let recs = by_id(&records(&out));
    // The record keeps the name the endpoint answered with.
    assert_eq!(recs["a"]["model"], "gpt-4o-mini-2024-07-18");
    assert_eq!(recs["b"]["model"], "qwen-max-2024-07-18");
    let cost = |id: &str| recs[id]["cost"].as_f64();
    let a = cost("a").expect("a is priced");
    assert!(close(a, priced(&recs["a"], 0.15, 0.60)), "{a}");
    let b = cost("b").expect("b is priced by its own model");
    assert!(close(b, priced(&recs["b"], 1.6, 6.4)), "{b}");
    // `-latest` resolves to the base entry.
    let c = cost("c").expect("c is priced by its body's model");
    assert!(close(c, priced(&recs["c"], 1.6, 6.4)), "{c}");
    let s = summary(&sum);
    let total = s["cost"].as_f64().expect("the total is known");
    assert!(close(total, a + b + c), "{s}");
    assert!(!stderr.contains("no price"), "{stderr}");

    // DashScope native answers name no model: the sent one prices them, and is the record's.
    let out = dir.path().join("native.jsonl");
    let (code, stderr) = run_io(
        &input,
        &out,
        &ep.url(),
        &["--api", "dashscope", "-m", "qwen-plus-2025-07-28"],
    );
    assert_eq!(code, 0, "{stderr}");
    let recs = by_id(&records(&out));
    assert_eq!(recs["a"]["model"], "qwen-plus-2025-07-28");
    let a = recs["a"]["cost"].as_f64().expect("native a is priced");
    assert!(close(a, priced(&recs["a"], 0.4, 1.2)), "{a}");
    assert_eq!(recs["c"]["model"], "qwen-max-latest");
    let c = recs["c"]["cost"].as_f64().expect("native c is priced");
    assert!(close(c, priced(&recs["c"], 1.6, 6.4)), "{c}");
}

#[test]
fn the_cost_cap_sees_the_spend_of_dated_answers() {
    let ep = Endpoint::start(MockConfig::default());
    let dir = tempfile::tempdir().expect("tmp");
    let text: String = (1..=200)
        .map(|i| format!("{{\"id\":\"r{i}\",\"prompt\":\"Question {i} [mock:dated]\"}}\n"))
        .collect();
    let input = write(dir.path(), "rows.jsonl", &text);
    let out = dir.path().join("out.jsonl");
    // One row costs about 0.00002 USD: the cap holds a few dozen rows, not 200.
    let (code, stderr) = run_io(
        &input,
        &out,
        &ep.url(),
        &[
            "-m",
            "gpt-4o-mini",
            "-c",
            "1",
            "--max-tokens",
            "40",
            "--max-cost",
            "0.0005",
        ],
    );
    assert_eq!(code, 3, "{stderr}");
    let recs = records(&out);
    assert!(
        !recs.is_empty() && recs.len() < 200,
        "{} records",
        recs.len()
    );
    let spent: f64 = recs.iter().filter_map(|r| r["cost"].as_f64()).sum();
    assert!(spent <= 0.0005, "{spent}");
}

#[test]
fn the_cap_reserves_at_the_thinking_price_as_the_dry_run_does() {
    let ep = Endpoint::start(MockConfig::default());
    let dir = tempfile::tempdir().expect("tmp");
    let input = write(dir.path(), "rows.jsonl", &prompts_jsonl(20));
    let sum = dir.path().join("dry.json");
    // qwen3-32b thinks by default: output 2.8 USD per million, thinking 8.4.
    let common = ["-m", "qwen3-32b", "--max-tokens", "1000"];
    let mut dry = common.to_vec();
    dry.extend(["--dry-run", "--summary-json", sum.to_str().expect("path")]);
    let (code, stderr) = run_io(&input, &dir.path().join("dry.jsonl"), &ep.url(), &dry);
    assert_eq!(code, 0, "{stderr}");
    let per_row = summary(&sum)["cost_max"].as_f64().expect("cost_max") / 20.0;
    // Each row may cost 1000 output tokens at 8.4: above a cap of 0.005, which the plain
    // output price (0.0028 a row) would fit.
    assert!(per_row > 0.0084 && per_row < 0.0085, "{per_row}");

    let out = dir.path().join("out.jsonl");
    let mut capped = common.to_vec();
    capped.extend(["--max-cost", "0.005"]);
    let (code, stderr) = run_io(&input, &out, &ep.url(), &capped);
    assert_eq!(code, 3, "{stderr}");
    assert_eq!(ep.stats().requests, 0, "{stderr}");
    assert!(records(&out).is_empty());

    // With thinking off, both price the plain output, and the cap fits rows.
    let mut off = capped.clone();
    off.extend(["--thinking", "off"]);
    let (code, stderr) = run_io(&input, &out, &ep.url(), &off);
    assert!(code == 0 || code == 3, "{stderr}");
    assert!(ep.stats().requests > 0, "{stderr}");
}

#[test]
fn a_model_that_does_not_think_by_default_is_capped_at_its_plain_price() {
    let dir = tempfile::tempdir().expect("tmp");
    let input = write(dir.path(), "rows.jsonl", &prompts_jsonl(20));
    let out = dir.path().join("dry.jsonl");
    // qwen-plus (commercial) thinks only when asked: output 1.2 USD per million, thinking 4.0.
    let cost_max = |extra: &[&str]| {
        let sum = dir.path().join("dry.json");
        let mut args = vec!["-m", "qwen-plus", "--max-tokens", "1000", "--dry-run"];
        args.extend(["--summary-json", sum.to_str().expect("path")]);
        args.extend(extra);
        let (code, stderr) = run_io(&input, &out, "mock", &args);
        assert_eq!(code, 0, "{stderr}");
        summary(&sum)["cost_max"].as_f64().expect("cost_max") / 20.0
    };
    let plain = cost_max(&[]);
    assert!(plain > 0.0012 && plain < 0.0013, "{plain}");
    assert!(close(cost_max(&["--thinking", "off"]), plain));
    let thinking = cost_max(&["--thinking", "on"]);
    assert!(thinking > 0.004 && thinking < 0.0041, "{thinking}");
}

#[test]
fn answers_without_usage_and_several_currencies_are_reported_as_such() {
    let ep = Endpoint::start(MockConfig::default());
    let dir = tempfile::tempdir().expect("tmp");
    let sum = dir.path().join("s.json");
    let pricing = write(
        dir.path(),
        "prices.toml",
        "[models.\"euro-model\"]\ncurrency = \"EUR\"\ninput = 1.0\noutput = 2.0\n",
    );
    let input = write(
        dir.path(),
        "rows.jsonl",
        &rows(&[
            r#"{"id":"u1","prompt":"one"}"#.into(),
            r#"{"id":"u2","prompt":"two"}"#.into(),
            r#"{"id":"e1","prompt":"three","params":{"model":"euro-model"}}"#.into(),
        ]),
    );
    let out = dir.path().join("out.jsonl");
    let (code, stderr) = run_io(
        &input,
        &out,
        &ep.url(),
        &[
            "--pricing",
            pricing.to_str().expect("path"),
            "--summary-json",
            sum.to_str().expect("path"),
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    let recs = by_id(&records(&out));
    let usd: f64 = ["u1", "u2"]
        .iter()
        .map(|id| recs[*id]["cost"].as_f64().expect("usd cost"))
        .sum();
    let eur = recs["e1"]["cost"].as_f64().expect("eur cost");
    let s = summary(&sum);
    assert_eq!(s["cost"], Value::Null, "{s}");
    assert!(close(s["costs"]["USD"].as_f64().unwrap_or(0.0), usd), "{s}");
    assert!(close(s["costs"]["EUR"].as_f64().unwrap_or(0.0), eur), "{s}");
    assert!(stderr.contains("USD") && stderr.contains("EUR"), "{stderr}");
    assert!(!stderr.contains("no price"), "{stderr}");

    // Answers without usage.
    let input = write(
        dir.path(),
        "nousage.jsonl",
        &rows(&[
            r#"{"id":"n1","prompt":"one [mock:nousage]"}"#.into(),
            r#"{"id":"n2","prompt":"two [mock:nousage]"}"#.into(),
            r#"{"id":"n3","prompt":"three"}"#.into(),
        ]),
    );
    let out = dir.path().join("nousage-out.jsonl");
    let (code, stderr) = run_io(
        &input,
        &out,
        &ep.url(),
        &["--summary-json", sum.to_str().expect("path")],
    );
    assert_eq!(code, 0, "{stderr}");
    let recs = by_id(&records(&out));
    assert_eq!(recs["n1"]["usage"], Value::Null);
    assert_eq!(recs["n1"]["cost"], Value::Null);
    assert!(
        stderr.contains("the endpoint sent no usage for 2 rows"),
        "{stderr}"
    );
    assert!(!stderr.contains("no price"), "{stderr}");
    let s = summary(&sum);
    assert_eq!(s["cost"], Value::Null, "{s}");
    assert_eq!(s["rows_without_usage"], 2, "{s}");
    assert_eq!(s["unpriced_models"], serde_json::json!([]), "{s}");
}

/// The text of each `"cost":` number in `text`.
fn cost_texts(text: &str) -> Vec<String> {
    text.match_indices("\"cost\":")
        .map(|(at, key)| {
            text[at + key.len()..]
                .trim_start()
                .chars()
                .take_while(|c| !matches!(c, ',' | '}' | '\n'))
                .collect::<String>()
                .trim()
                .to_string()
        })
        .collect()
}

#[test]
fn costs_are_written_without_float_noise() {
    let ep = Endpoint::start(MockConfig::default());
    let dir = tempfile::tempdir().expect("tmp");
    let input = write(dir.path(), "rows.jsonl", &prompts_jsonl(60));
    let out = dir.path().join("out.jsonl");
    let sum = dir.path().join("s.json");
    let (code, stderr) = run_io(
        &input,
        &out,
        &ep.url(),
        &["--summary-json", sum.to_str().expect("path")],
    );
    assert_eq!(code, 0, "{stderr}");
    let mut texts = cost_texts(&std::fs::read_to_string(&out).expect("results"));
    assert_eq!(texts.len(), 60);
    texts.extend(cost_texts(&std::fs::read_to_string(&sum).expect("summary")));
    assert_eq!(texts.len(), 61);
    for t in texts {
        let v: f64 = t.parse().unwrap_or(f64::NAN);
        let rounded = (v * 1e10).round() / 1e10;
        assert!(v == rounded && t.len() <= 16, "cost written as {t}");
    }
}

#[test]
fn the_price_source_is_a_public_page_with_its_date() {
    let ep = Endpoint::start(MockConfig::default());
    let dir = tempfile::tempdir().expect("tmp");
    let input = write(dir.path(), "rows.jsonl", &prompts_jsonl(3));
    let sum = dir.path().join("s.json");
    for (model, region, page) in [
        ("qwen-plus", "intl", "https://www.alibabacloud.com/"),
        ("qwen-plus", "cn", "https://help.aliyun.com/"),
        ("gpt-4o-mini", "intl", "https://openai.com/api/pricing"),
    ] {
        let out = dir.path().join(format!("{model}-{region}.jsonl"));
        let (code, stderr) = run_io(
            &input,
            &out,
            &ep.url(),
            &[
                "-m",
                model,
                "--region",
                region,
                "--summary-json",
                sum.to_str().expect("path"),
            ],
        );
        assert_eq!(code, 0, "{stderr}");
        let line = stderr
            .lines()
            .find(|l| l.trim_start().starts_with("cost"))
            .unwrap_or_default();
        let source = summary(&sum)["price_source"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        for text in [line, source.as_str()] {
            assert!(text.contains(page), "{model} {region}: {text}");
            assert!(
                !text.contains(".md") && !text.contains("provider-apis"),
                "{text}"
            );
            let dated = text
                .as_bytes()
                .windows(10)
                .any(|w| w[4] == b'-' && w[7] == b'-' && w[..4].iter().all(u8::is_ascii_digit));
            assert!(dated, "{model} {region}: no date in {text}");
        }
    }
}
