//! Black-box tests of the three API styles and the generation features: each style plain and
//! streamed, thinking, JSON output, system prompts, partial mode, streaming-only models,
//! moderation, and parameter ranges.

mod common;

use std::path::Path;

use batchgen::mock::{MockConfig, count_tokens, reasoning_for, reply_for};
use common::*;
use serde_json::{Value, json};

fn prompt_of(i: usize) -> String {
    format!("Question number {i}: what is {i} squared?")
}

/// Runs INPUT with `args` against `ep`, expects exit 0, and returns the records by id.
fn run_ok(ep: &Endpoint, input: &Path, out: &Path, args: &[&str]) -> Vec<Value> {
    let (code, stderr) = run_io(input, out, &ep.url(), args);
    assert_eq!(code, 0, "{args:?}: {stderr}");
    records(out)
}

/// Checks that every one of `n` rows came back ok with the mock's answer to its prompt.
fn assert_contents(recs: &[Value], n: usize, what: &str) {
    let map = by_id(recs);
    assert_eq!(map.len(), n, "{what}");
    for i in 1..=n {
        let r = &map[&format!("r{i}")];
        assert_eq!(r["status"], "ok", "{what}: {r}");
        assert_eq!(
            r["content"].as_str(),
            Some(reply_for(&prompt_of(i)).as_str()),
            "{what}: row r{i}"
        );
        assert!(
            r["usage"]["output_tokens"].as_u64().unwrap_or(0) > 0,
            "{what}"
        );
    }
}

#[test]
fn every_style_plain_and_streamed_gives_each_row_its_answer() {
    let ep = Endpoint::start(MockConfig::default());
    let dir = tempfile::tempdir().expect("tmp");
    let input = write(dir.path(), "rows.jsonl", &prompts_jsonl(300));
    let cases: [&[&str]; 3] = [
        &["--api", "responses"],
        &["--api", "responses", "--stream"],
        &["--api", "dashscope"],
    ];
    for (n, args) in cases.iter().enumerate() {
        let out = dir.path().join(format!("out{n}.jsonl"));
        let recs = run_ok(&ep, &input, &out, &[args, &["-c", "32"][..]].concat());
        assert_contents(&recs, 300, &format!("{args:?}"));
    }
    let s = ep.stats();
    assert_eq!(s.responses_requests, 600);
    assert_eq!(s.native_requests, 300);
}

#[test]
fn dashscope_streamed_with_thinking_fills_reasoning() {
    let ep = Endpoint::start(MockConfig::default());
    let dir = tempfile::tempdir().expect("tmp");
    let input = write(dir.path(), "rows.jsonl", &prompts_jsonl(300));
    let out = dir.path().join("out.jsonl");
    let recs = run_ok(
        &ep,
        &input,
        &out,
        &[
            "--api",
            "dashscope",
            "--stream",
            "--thinking",
            "on",
            "-c",
            "32",
        ],
    );
    assert_contents(&recs, 300, "dashscope --stream --thinking on");
    let map = by_id(&recs);
    let mut reasoning_tokens = 0;
    for i in 1..=300 {
        let r = &map[&format!("r{i}")];
        let reasoning = reasoning_for(&prompt_of(i));
        assert_eq!(r["reasoning"].as_str(), Some(reasoning.as_str()), "r{i}");
        let t = r["usage"]["reasoning_tokens"].as_u64().unwrap_or(0);
        assert_eq!(t, count_tokens(&reasoning), "r{i}");
        reasoning_tokens += t;
    }
    let s = ep.stats();
    assert_eq!(s.native_requests, 300);
    assert_eq!(s.reasoning_tokens, reasoning_tokens);
}

#[test]
fn chat_streams_cut_a_fifth_of_the_time_are_retried_to_completion() {
    let ep = Endpoint::faults("truncated=0.2", 0);
    let dir = tempfile::tempdir().expect("tmp");
    let input = write(dir.path(), "rows.jsonl", &prompts_jsonl(300));
    let out = dir.path().join("out.jsonl");
    let summary = dir.path().join("summary.json");
    let recs = run_ok(
        &ep,
        &input,
        &out,
        &[
            "--stream",
            "-c",
            "32",
            "--max-retries",
            "8",
            "--summary-json",
            summary.to_str().expect("path"),
        ],
    );
    assert_contents(&recs, 300, "chat --stream with cut streams");
    let s = ep.stats();
    assert!(s.truncated > 20, "only {} streams were cut", s.truncated);
    let sum: Value =
        serde_json::from_str(&std::fs::read_to_string(&summary).expect("summary")).expect("json");
    // Only complete answers are counted: the tokens equal what the endpoint served whole.
    assert_eq!(sum["output_tokens"].as_u64(), Some(s.output_tokens));
    assert_eq!(sum["possibly_billed"].as_u64(), Some(s.truncated));
}

#[test]
fn json_output_is_parsed_and_invalid_json_is_retried_then_recorded() {
    let ep = Endpoint::start(MockConfig::default());
    let dir = tempfile::tempdir().expect("tmp");
    let mut rows = prompts_jsonl(40);
    rows.push_str("{\"id\":\"bad\",\"prompt\":\"Answer badly [mock:badjson]\"}\n");
    let input = write(dir.path(), "rows.jsonl", &rows);
    let sum = dir.path().join("s.json");
    for api in ["chat", "responses", "dashscope"] {
        let out = dir.path().join(format!("{api}.jsonl"));
        let before = ep.stats();
        let (code, stderr) = run_io(
            &input,
            &out,
            &ep.url(),
            &[
                "--api",
                api,
                "--json",
                "--summary-json",
                sum.to_str().expect("path"),
            ],
        );
        assert_eq!(code, 1, "{api}: {stderr}");
        // The rejected answers were billed: the totals still equal what the endpoint served.
        let s: Value =
            serde_json::from_str(&std::fs::read_to_string(&sum).expect("summary")).expect("json");
        let after = ep.stats();
        assert_eq!(
            s["output_tokens"].as_u64(),
            Some(after.output_tokens - before.output_tokens),
            "{api}"
        );
        assert_eq!(
            s["input_tokens"].as_u64(),
            Some(after.input_tokens - before.input_tokens),
            "{api}"
        );
        let map = by_id(&records(&out));
        for i in 1..=40 {
            let r = &map[&format!("r{i}")];
            assert_eq!(r["status"], "ok", "{api}: {r}");
            assert_eq!(
                r["parsed"],
                json!({"answer": reply_for(&prompt_of(i))}),
                "{api}"
            );
        }
        let bad = &map["bad"];
        assert_eq!(bad["error"]["kind"], "invalid_output", "{api}: {bad}");
        assert_eq!(bad["attempts"], 3, "{api}: one try and two --json-retries");
    }
}

#[test]
fn json_schema_output_is_validated() {
    let ep = Endpoint::start(MockConfig::default());
    let dir = tempfile::tempdir().expect("tmp");
    let input = write(dir.path(), "rows.jsonl", &prompts_jsonl(30));
    let schema = write(
        dir.path(),
        "label.json",
        r#"{"type":"object","required":["label","summary"],"properties":{
            "label":{"type":"string","enum":["positive","negative"]},
            "summary":{"type":"string"},"words":{"type":"integer"}}}"#,
    );
    for api in ["chat", "dashscope", "responses"] {
        let out = dir.path().join(format!("{api}.jsonl"));
        let recs = run_ok(
            &ep,
            &input,
            &out,
            &[
                "--api",
                api,
                "--json-schema",
                schema.to_str().expect("path"),
            ],
        );
        for r in &recs {
            assert_eq!(r["parsed"]["label"], "positive", "{api}: {r}");
            assert!(r["parsed"]["summary"].is_string(), "{api}: {r}");
        }
        assert_eq!(recs.len(), 30);
    }
    let broken = write(dir.path(), "broken.json", r#"{"type": 12}"#);
    let (code, stderr) = run(&[
        input.to_str().expect("path"),
        "--base-url",
        &ep.url(),
        "--json-schema",
        broken.to_str().expect("path"),
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("broken.json"), "{stderr}");
}

#[test]
fn system_prompt_and_prefix_reach_the_model() {
    let ep = Endpoint::start(MockConfig::default());
    let dir = tempfile::tempdir().expect("tmp");
    let input = write(dir.path(), "rows.jsonl", &prompts_jsonl(300));
    let system = "You are a terse assistant who answers in one line.";
    let plain = run_ok(&ep, &input, &dir.path().join("plain.jsonl"), &[]);
    for api in ["chat", "responses", "dashscope"] {
        let out = dir.path().join(format!("system-{api}.jsonl"));
        let recs = run_ok(&ep, &input, &out, &["--api", api, "--system", system]);
        assert_contents(&recs, 300, &format!("--system, {api}"));
        // The endpoint counted the system message: each row's input grew by its tokens.
        let with = by_id(&recs);
        for r in &plain {
            let id = r["id"].as_str().expect("id");
            let grew = with[id]["usage"]["input_tokens"].as_u64().unwrap_or(0)
                - r["usage"]["input_tokens"].as_u64().unwrap_or(0);
            assert_eq!(grew, count_tokens(system) + 4, "{api}, row {id}");
        }
    }
    let prefix = "In short:";
    for api in ["chat", "dashscope"] {
        let out = dir.path().join(format!("prefix-{api}.jsonl"));
        let recs = run_ok(&ep, &input, &out, &["--api", api, "--prefix", prefix]);
        let map = by_id(&recs);
        for i in 1..=300 {
            let want = format!("{prefix}{}", reply_for(&prompt_of(i)));
            assert_eq!(
                map[&format!("r{i}")]["content"].as_str(),
                Some(want.as_str())
            );
        }
    }
}

#[test]
fn a_streaming_only_model_switches_the_run_to_streaming() {
    let ep = Endpoint::start(MockConfig::default());
    let dir = tempfile::tempdir().expect("tmp");
    let input = write(dir.path(), "rows.jsonl", &prompts_jsonl(200));
    for api in ["chat", "dashscope", "responses"] {
        let out = dir.path().join(format!("{api}.jsonl"));
        let before = ep.stats().bad_requests;
        let (code, stderr) = run_io(
            &input,
            &out,
            &ep.url(),
            &["--api", api, "--model", "mock-stream-only", "-c", "8"],
        );
        assert_eq!(code, 0, "{api}: {stderr}");
        assert_eq!(
            stderr.matches("streaming this row and the rest").count(),
            1,
            "{stderr}"
        );
        let recs = records(&out);
        assert_contents(&recs, 200, api);
        // Only the rows in flight before the switch were refused, once each.
        let refused = ep.stats().bad_requests - before;
        assert!((1..=8).contains(&refused), "{api}: {refused} refusals");
    }
}

#[test]
fn moderated_rows_fail_once_as_content_filter_and_the_rest_succeed() {
    let ep = Endpoint::start(MockConfig::default());
    let dir = tempfile::tempdir().expect("tmp");
    let mut rows = String::new();
    for i in 1..=60 {
        let last = match i % 10 {
            3 => format!("Tell me more [mock:moderation] {i}"),
            7 => format!("Continue the story [mock:moderation-output] {i}"),
            _ => format!("Continue the story, part {i}"),
        };
        let row = json!({"id": format!("m{i}"), "messages": [
            {"role": "system", "content": "You are a storyteller."},
            {"role": "user", "content": format!("Start a story about {i} cats")},
            {"role": "assistant", "content": "Once upon a time..."},
            {"role": "user", "content": last},
        ]});
        rows.push_str(&format!("{row}\n"));
    }
    let input = write(dir.path(), "chat.jsonl", &rows);
    for (api, stream) in [
        ("chat", false),
        ("chat", true),
        ("dashscope", true),
        ("responses", true),
        ("dashscope", false),
    ] {
        let out = dir.path().join(format!("{api}-{stream}.jsonl"));
        let mut args = vec![
            input.to_str().expect("path"),
            "-o",
            out.to_str().expect("path"),
            "--api",
            api,
            "--base-url",
        ];
        let url = ep.url();
        args.push(&url);
        if stream {
            args.push("--stream");
        }
        let (code, stderr) = run(&args);
        assert_eq!(code, 1, "{api} stream={stream}: {stderr}");
        let map = by_id(&records(&out));
        for i in 1..=60 {
            let r = &map[&format!("m{i}")];
            if i % 10 == 3 || i % 10 == 7 {
                assert_eq!(r["status"], "error", "{api}: {r}");
                assert_eq!(r["error"]["kind"], "content_filter", "{api}: {r}");
                assert_eq!(r["attempts"], 1, "{api}: moderation is never retried: {r}");
            } else {
                let want = reply_for(&format!("Continue the story, part {i}"));
                assert_eq!(r["content"].as_str(), Some(want.as_str()), "{api}: {r}");
            }
        }
    }
}

#[test]
fn out_of_range_parameters_exit_2_before_anything_is_sent() {
    let ep = Endpoint::start(MockConfig::default());
    let dir = tempfile::tempdir().expect("tmp");
    let input = write(dir.path(), "rows.jsonl", &prompts_jsonl(5));
    let out = dir.path().join("out.jsonl");
    let cases: [(&[&str], &str); 9] = [
        (&["--temperature", "2"], "--temperature"),
        (&["--temperature", "-0.1"], "--temperature"),
        (&["--top-p", "0"], "--top-p"),
        (&["--top-p", "1.01"], "--top-p"),
        (&["--max-tokens", "0"], "--max-tokens"),
        (&["--thinking-budget", "0"], "--thinking-budget"),
        (
            &["--api", "responses", "--thinking-budget", "100"],
            "--thinking-budget",
        ),
        (&["--prefix", "x", "--thinking", "on"], "--prefix"),
        (&["--api", "responses", "--stop", "END"], "--stop"),
    ];
    for (flags, named) in cases {
        let mut args = vec![
            input.to_str().expect("path"),
            "-o",
            out.to_str().expect("path"),
            "--base-url",
        ];
        let url = ep.url();
        args.push(&url);
        args.extend_from_slice(flags);
        let (code, stderr) = run(&args);
        assert_eq!(code, 2, "{flags:?}: {stderr}");
        assert!(stderr.contains(named), "{flags:?}: {stderr}");
        assert!(!out.exists(), "{flags:?} created the output");
    }
    assert_eq!(ep.stats().requests, 0);
}
