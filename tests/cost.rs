//! Black-box tests of cost and usage: exact token totals, prices with thinking, regions and
//! `--pricing`, unknown models, `--dry-run` and `--max-cost`.

mod common;

use std::path::Path;

use batchgen::mock::MockConfig;
use common::*;
use serde_json::Value;

fn summary(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("summary")).expect("json")
}

fn argv(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * b.abs().max(1.0)
}

#[test]
fn totals_equal_the_endpoint_and_cost_follows_the_price_list() {
    let ep = Endpoint::start(MockConfig::default());
    let dir = tempfile::tempdir().expect("tmp");
    let input = write(dir.path(), "rows.jsonl", &prompts_jsonl(500));
    let sum = dir.path().join("s.json");
    for thinking in ["off", "on"] {
        let before = ep.stats();
        let out = dir.path().join(format!("out-{thinking}.jsonl"));
        let (code, stderr) = run_io(
            &input,
            &out,
            &ep.url(),
            &[
                "--thinking",
                thinking,
                "--summary-json",
                sum.to_str().expect("path"),
            ],
        );
        assert_eq!(code, 0, "{stderr}");
        let after = ep.stats();
        let s = summary(&sum);
        let input_tokens = after.input_tokens - before.input_tokens;
        let output_tokens = after.output_tokens - before.output_tokens;
        let reasoning = after.reasoning_tokens - before.reasoning_tokens;
        assert_eq!(s["input_tokens"].as_u64(), Some(input_tokens));
        assert_eq!(s["output_tokens"].as_u64(), Some(output_tokens));
        assert_eq!(s["reasoning_tokens"].as_u64(), Some(reasoning));
        assert_eq!(s["currency"], "USD");
        // qwen-plus: 0.4 in, 1.2 out per million; thinking output at 4.0.
        let out_price = if thinking == "on" { 4.0 } else { 1.2 };
        assert_eq!(reasoning > 0, thinking == "on");
        let want = (input_tokens as f64 * 0.4 + output_tokens as f64 * out_price) / 1e6;
        let cost = s["cost"].as_f64().expect("cost");
        assert!(close(cost, want), "thinking {thinking}: {cost} != {want}");
        let per_record: f64 = records(&out)
            .iter()
            .map(|r| r["cost"].as_f64().expect("record cost"))
            .sum();
        assert!(close(per_record, want));
        assert!(
            stderr.contains("USD") && stderr.contains("prices:"),
            "{stderr}"
        );
    }
}

#[test]
fn region_cn_prices_in_cny_and_a_pricing_file_adds_models() {
    let ep = Endpoint::start(MockConfig::default());
    let dir = tempfile::tempdir().expect("tmp");
    let input = write(dir.path(), "rows.jsonl", &prompts_jsonl(40));
    let sum = dir.path().join("s.json");
    let base = |out: &str| {
        vec![
            input.to_str().expect("path").to_string(),
            "-o".into(),
            dir.path().join(out).to_str().expect("path").to_string(),
            "--base-url".into(),
            ep.url(),
            "--summary-json".into(),
            sum.to_str().expect("path").to_string(),
        ]
    };

    let mut a = base("cn.jsonl");
    a.extend(["--region".into(), "cn".into()]);
    let (code, stderr) = run(&argv(&a));
    assert_eq!(code, 0, "{stderr}");
    let s = summary(&sum);
    assert_eq!(s["currency"], "CNY");
    let want = (s["input_tokens"].as_f64().unwrap_or(0.0) * 0.8
        + s["output_tokens"].as_f64().unwrap_or(0.0) * 2.0)
        / 1e6;
    assert!(close(s["cost"].as_f64().unwrap_or(0.0), want), "{s}");

    let pricing = write(
        dir.path(),
        "prices.toml",
        "[models.\"house-model\"]\ncurrency = \"USD\"\ninput = 10.0\noutput = 20.0\n",
    );
    let mut a = base("house.jsonl");
    a.extend([
        "-m".into(),
        "house-model".into(),
        "--pricing".into(),
        pricing.to_str().expect("path").into(),
    ]);
    let (code, stderr) = run(&argv(&a));
    assert_eq!(code, 0, "{stderr}");
    let s = summary(&sum);
    let want = (s["input_tokens"].as_f64().unwrap_or(0.0) * 10.0
        + s["output_tokens"].as_f64().unwrap_or(0.0) * 20.0)
        / 1e6;
    assert!(close(s["cost"].as_f64().unwrap_or(0.0), want), "{s}");

    let mut a = base("unknown.jsonl");
    a.extend(["-m".into(), "no-such-model".into()]);
    let (code, stderr) = run(&argv(&a));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        stderr
            .matches("no price known for model `no-such-model`")
            .count(),
        1
    );
    let s = summary(&sum);
    assert!(s["cost"].is_null(), "{s}");
    for r in records(&dir.path().join("unknown.jsonl")) {
        assert!(r["cost"].is_null(), "{r}");
    }

    let bad = write(
        dir.path(),
        "bad.toml",
        "[models.x]\ncurrency = \"USD\"\ninptu = 1\n",
    );
    let mut a = base("bad.jsonl");
    a.extend(["--pricing".into(), bad.to_str().expect("path").into()]);
    let (code, stderr) = run(&argv(&a));
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("bad.toml") && stderr.contains("inptu"),
        "{stderr}"
    );
}

#[test]
fn dry_run_counts_rows_and_sends_nothing() {
    let ep = Endpoint::start(MockConfig::default());
    let dir = tempfile::tempdir().expect("tmp");
    let input = write(dir.path(), "rows.jsonl", &prompts_jsonl(250));
    let out = dir.path().join("out.jsonl");
    let sum = dir.path().join("s.json");
    let (code, stderr) = run(&[
        input.to_str().expect("path"),
        "-o",
        out.to_str().expect("path"),
        "--base-url",
        &ep.url(),
        "--dry-run",
        "--max-tokens",
        "100",
        "--summary-json",
        sum.to_str().expect("path"),
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("250 to send"), "{stderr}");
    assert!(stderr.contains("USD"), "{stderr}");
    assert!(!out.exists());
    assert_eq!(ep.stats().requests, 0);
    let s = summary(&sum);
    assert_eq!(s["rows_to_send"], 250);
    let (low, high) = (
        s["cost_min"].as_f64().unwrap_or(0.0),
        s["cost_max"].as_f64().unwrap_or(0.0),
    );
    assert!(low > 0.0 && high > low, "{s}");
}

#[test]
fn max_cost_stops_near_the_cap_and_a_rerun_completes_every_row_once() {
    let ep = Endpoint::start(MockConfig::default());
    let dir = tempfile::tempdir().expect("tmp");
    let input = write(dir.path(), "rows.jsonl", &prompts_jsonl(400));
    let sum = dir.path().join("s.json");
    let full = dir.path().join("full.jsonl");
    let (code, _) = run_io(
        &input,
        &full,
        &ep.url(),
        &["--summary-json", sum.to_str().expect("path")],
    );
    assert_eq!(code, 0);
    let full_cost = summary(&sum)["cost"].as_f64().expect("cost");
    let cap = full_cost / 2.0;
    let out = dir.path().join("capped.jsonl");
    let ok_before = ep.stats().ok;
    let capped = |extra: &[&str]| {
        let cap_text = format!("{cap}");
        let mut a = vec!["--summary-json", sum.to_str().expect("path"), "-c", "16"];
        a.extend_from_slice(extra);
        if extra.is_empty() {
            a.extend_from_slice(&["--max-cost", &cap_text]);
        }
        run_io(&input, &out, &ep.url(), &a)
    };
    let (code, stderr) = capped(&[]);
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains("--max-cost"), "{stderr}");
    let spent = summary(&sum)["cost"].as_f64().expect("cost");
    assert!(spent <= cap * 1.02, "spent {spent} over the cap {cap}");
    assert!(
        spent > cap * 0.5,
        "spent {spent}: stopped far too early for {cap}"
    );
    let (code, stderr) = capped(&["--no-progress"]);
    assert_eq!(code, 0, "{stderr}");
    let recs = by_id(&records(&out));
    assert_eq!(recs.len(), 400);
    assert!(recs.values().all(|r| r["status"] == "ok"));
    assert_eq!(
        ep.stats().ok - ok_before,
        400,
        "every row answered exactly once"
    );
}
