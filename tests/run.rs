//! Black-box tests of `batchgen run`: the binary against the simulated endpoint on loopback.

mod common;

use std::path::Path;
use std::time::Duration;

use batchgen::mock::{FaultRates, MockConfig, reply_for};
use common::*;
use serde_json::Value;

#[test]
fn jsonl_with_a_quarter_faults_recovers_every_row() {
    let ep = Endpoint::faults(
        "429=0.05,500=0.04,503=0.04,reset=0.04,malformed=0.04,truncated=0.04,hang=0.005",
        2,
    );
    let dir = tempfile::tempdir().expect("tmp");
    let input = write(dir.path(), "rows.jsonl", &prompts_jsonl(2000));
    let out = dir.path().join("rows.results.jsonl");
    let summary = dir.path().join("summary.json");
    let (code, stderr) = run(&[
        input.to_str().expect("path"),
        "--base-url",
        &ep.url(),
        "--max-retries",
        "4",
        "--timeout",
        "1s",
        "-c",
        "32",
        "--summary-json",
        summary.to_str().expect("path"),
    ]);
    assert_eq!(code, 0, "{stderr}");
    let recs = by_id(&records(&out));
    assert_eq!(recs.len(), 2000);
    for i in 1..=2000 {
        let r = &recs[&format!("r{i}")];
        assert_eq!(r["status"], "ok", "{r}");
        let prompt = format!("Question number {i}: what is {i} squared?");
        assert_eq!(r["content"].as_str(), Some(reply_for(&prompt).as_str()));
        assert!(r["usage"]["input_tokens"].as_u64().is_some_and(|n| n > 0));
        assert!(r["usage"]["output_tokens"].as_u64().is_some_and(|n| n > 0));
        assert!(r["request_hash"].is_string());
    }
    let stats = ep.stats();
    let s: Value =
        serde_json::from_slice(&std::fs::read(&summary).expect("summary")).expect("json");
    assert_eq!(s["rows_ok"], 2000);
    assert_eq!(s["exit_code"], 0);
    assert_eq!(s["input_tokens"].as_u64(), Some(stats.input_tokens));
    assert_eq!(s["output_tokens"].as_u64(), Some(stats.output_tokens));
    assert!(s["retries"].as_u64().is_some_and(|n| n > 300), "{s}");
    assert!(s["possibly_billed"].as_u64().is_some_and(|n| n > 0));
    assert!(stats.rate_limited > 0 && stats.resets > 0 && stats.truncated > 0);
    assert!(stats.malformed > 0 && stats.unavailable > 0 && stats.hangs > 0);
    assert!(stderr.contains("batchgen summary") && stderr.contains("cost"));
}

#[test]
fn csv_with_template_quoted_fields_and_newlines() {
    let ep = Endpoint::faults("429=0.1,500=0.1", 1);
    let dir = tempfile::tempdir().expect("tmp");
    let mut csv = String::from("id,text\n");
    let mut texts = Vec::new();
    for i in 1..=300 {
        let text = if i % 3 == 0 {
            format!("Line one of {i}, with a comma\nand \"quotes\" on line two")
        } else {
            format!("Plain text {i}")
        };
        csv.push_str(&format!("c{i},\"{}\"\n", text.replace('"', "\"\"")));
        texts.push(text);
    }
    let input = write(dir.path(), "reviews.csv", &csv);
    let (code, stderr) = run(&[
        input.to_str().expect("path"),
        "--template",
        "Summarize: {text}",
        "--base-url",
        &ep.url(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    let recs = by_id(&records(&dir.path().join("reviews.results.jsonl")));
    assert_eq!(recs.len(), 300);
    for (i, text) in texts.iter().enumerate() {
        let r = &recs[&format!("c{}", i + 1)];
        let expected = reply_for(&format!("Summarize: {text}"));
        assert_eq!(r["content"].as_str(), Some(expected.as_str()));
    }
}

#[test]
fn non_retryable_errors_are_recorded_once_and_exit_1() {
    let ep = Endpoint::start(MockConfig::default());
    let dir = tempfile::tempdir().expect("tmp");
    let input = write(
        dir.path(),
        "mixed.jsonl",
        "{\"id\":\"good\",\"prompt\":\"hello\"}\n\
         {\"id\":\"bad\",\"prompt\":\"please fail [mock:400]\"}\n\
         {\"id\":\"mod\",\"prompt\":\"[mock:moderation] text\"}\n",
    );
    let (code, stderr) = run(&[input.to_str().expect("path"), "--base-url", &ep.url()]);
    assert_eq!(code, 1, "{stderr}");
    let recs = by_id(&records(&dir.path().join("mixed.results.jsonl")));
    assert_eq!(recs["good"]["status"], "ok");
    assert_eq!(recs["bad"]["error"]["kind"], "invalid_request");
    assert_eq!(recs["bad"]["error"]["http_status"], 400);
    assert_eq!(recs["bad"]["error"]["code"], "invalid_parameter_error");
    assert_eq!(recs["bad"]["attempts"], 1);
    assert_eq!(recs["mod"]["error"]["kind"], "content_filter");
    assert_eq!(recs["mod"]["attempts"], 1);
    assert_eq!(ep.stats().requests, 3);
    assert!(stderr.contains("invalid_request 1"));
}

#[test]
fn a_hanging_server_is_cut_by_the_timeout() {
    let ep = Endpoint::start(MockConfig {
        faults: FaultRates::parse("hang=1").expect("faults"),
        ..MockConfig::default()
    });
    let dir = tempfile::tempdir().expect("tmp");
    let input = write(dir.path(), "h.jsonl", &prompts_jsonl(2));
    let (code, stderr) = run(&[
        input.to_str().expect("path"),
        "--base-url",
        &ep.url(),
        "--timeout",
        "300ms",
        "--max-retries",
        "1",
    ]);
    assert_eq!(code, 1, "{stderr}");
    let recs = by_id(&records(&dir.path().join("h.results.jsonl")));
    for r in recs.values() {
        assert_eq!(r["error"]["kind"], "timeout", "{r}");
        assert_eq!(r["attempts"], 2);
    }
    assert!(stderr.contains("possibly billed"));
}

#[test]
fn bad_input_exits_2_naming_the_line_and_sends_nothing() {
    let ep = Endpoint::start(MockConfig::default());
    let dir = tempfile::tempdir().expect("tmp");
    let mut text = prompts_jsonl(60);
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    lines[56] = "{\"id\":\"r57\",\"prompt\":".to_string();
    lines[9] = "{\"id\":\"r3\",\"prompt\":\"again\"}".to_string();
    text = lines.join("\n") + "\n";
    let input = write(dir.path(), "bad.jsonl", &text);
    let (code, stderr) = run(&[input.to_str().expect("path"), "--base-url", &ep.url()]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("bad.jsonl:57: invalid JSON"), "{stderr}");
    assert!(
        stderr.contains("bad.jsonl:10: duplicate id `r3` (first on line 3)"),
        "{stderr}"
    );
    assert_eq!(ep.stats().requests, 0);
    assert!(!dir.path().join("bad.results.jsonl").exists());

    // --skip-invalid runs the rest and records each bad row.
    let (code, stderr) = run(&[
        input.to_str().expect("path"),
        "--base-url",
        &ep.url(),
        "--skip-invalid",
    ]);
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(ep.stats().requests, 58);
    let recs = by_id(&records(&dir.path().join("bad.results.jsonl")));
    assert_eq!(recs.len(), 60);
    assert_eq!(recs["line:57"]["error"]["kind"], "invalid_input");
    assert!(
        recs["line:57"]["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("bad.jsonl:57: invalid JSON"))
    );
    assert_eq!(recs["r3#line:10"]["error"]["kind"], "invalid_input");
    assert_eq!(recs["r3"]["status"], "ok");
    assert_eq!(recs.values().filter(|r| r["status"] == "ok").count(), 58);
    let requests_before = ep.stats().requests;

    let missing = write(dir.path(), "t.csv", "id,body\n1,hello\n");
    let (code, stderr) = run(&[
        missing.to_str().expect("path"),
        "--template",
        "Say {text}",
        "--base-url",
        &ep.url(),
    ]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("t.csv:2: template field `text` is missing"),
        "{stderr}"
    );
    assert_eq!(ep.stats().requests, requests_before);
}

#[test]
fn bad_usage_exits_2() {
    let dir = tempfile::tempdir().expect("tmp");
    let input = write(dir.path(), "x.jsonl", &prompts_jsonl(1));
    let path = input.to_str().expect("path");
    let (code, stderr) = run(&[path, "--base-url", "mock", "--temperature", "2"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("[0, 2)"));
    let (code, stderr) = run(&[path, "--base-url", "mock", "--top-p", "0"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("(0, 1]"));
    let (code, _) = run(&[path, "--base-url", "mock", "--template", "oops {x"]);
    assert_eq!(code, 2);
    let out = batchgen()
        .env_remove("DASHSCOPE_API_KEY")
        .args(["run", path])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("DASHSCOPE_API_KEY"));
    let (code, stderr) = run(&["nope.txt", "--base-url", "mock"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("--input-format"));
}

#[test]
fn a_bad_key_stops_the_run_with_exit_3() {
    let ep = Endpoint::start(MockConfig {
        api_key: Some("sk-the-right-key".into()),
        latency: Duration::from_millis(5),
        ..MockConfig::default()
    });
    let dir = tempfile::tempdir().expect("tmp");
    let input = write(dir.path(), "k.jsonl", &prompts_jsonl(2000));
    for api in ["chat", "dashscope"] {
        let out = dir.path().join(format!("k-{api}.results.jsonl"));
        let before = ep.stats().requests;
        let (code, stderr) = run(&[
            input.to_str().expect("path"),
            "-o",
            out.to_str().expect("path"),
            "--base-url",
            &ep.url(),
            "--api",
            api,
            "-c",
            "16",
        ]);
        assert_eq!(code, 3, "{stderr}");
        assert!(stderr.contains("auth"), "{stderr}");
        let sent = ep.stats().requests - before;
        assert!(sent <= 48, "{api}: {sent} requests with a wrong key");
        // Unsent rows have no record, so a rerun with the right key sends them.
        let recs = records(&out);
        assert!(recs.len() as u64 <= sent, "{api}");
    }
}

#[test]
fn rerun_resumes_and_repairs_a_torn_line() {
    let ep = Endpoint::start(MockConfig::default());
    let dir = tempfile::tempdir().expect("tmp");
    let input = write(
        dir.path(),
        "r.jsonl",
        "{\"prompt\":\"one\"}\n{\"prompt\":\"two [mock:400]\"}\n{\"prompt\":\"three\"}\n",
    );
    let out = dir.path().join("r.results.jsonl");
    let (code, _) = run(&[input.to_str().expect("path"), "--base-url", &ep.url()]);
    assert_eq!(code, 1);
    assert_eq!(ep.stats().requests, 3);
    // Row ids are row numbers when no row has an id.
    let ids: Vec<String> = records(&out)
        .iter()
        .filter_map(|r| r["id"].as_str().map(str::to_string))
        .collect();
    assert_eq!(ids.len(), 3);
    assert!(ids.iter().all(|i| ["1", "2", "3"].contains(&i.as_str())));

    // A crash left half a record behind.
    let mut text = std::fs::read_to_string(&out).expect("read");
    text.push_str("{\"id\":\"3\",\"status\":\"o");
    std::fs::write(&out, text).expect("write");
    let (code, stderr) = run(&[input.to_str().expect("path"), "--base-url", &ep.url()]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("torn last line"), "{stderr}");
    assert!(stderr.contains("2 of 3 rows already done"), "{stderr}");
    // Only the failed row was sent again.
    assert_eq!(ep.stats().requests, 4);
    // The file is left with one record per id, the latest.
    let recs = by_id(&records(&out));
    assert_eq!(recs.len(), 3);
    assert_eq!(recs["3"]["status"], "ok");

    // A changed request is reported and skipped, unless --rerun-changed.
    let path = input.to_str().expect("path");
    let (code, stderr) = run(&[path, "--base-url", &ep.url(), "--system", "Be brief."]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("2 done rows would now be sent differently"),
        "{stderr}"
    );
    assert_eq!(ep.stats().requests, 5);
    let (code, stderr) = run(&[
        path,
        "--base-url",
        &ep.url(),
        "--system",
        "Be brief.",
        "--rerun-changed",
    ]);
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(ep.stats().requests, 8);
    assert_eq!(by_id(&records(&out)).len(), 3);

    // --fresh keeps the old file and sends everything again.
    let (code, stderr) = run(&[path, "--base-url", &ep.url(), "--fresh"]);
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(ep.stats().requests, 11);
    assert_eq!(records(&dir.path().join("r.results.jsonl.prev")).len(), 3);
    assert_eq!(records(&out).len(), 3);
}

#[test]
fn stdin_gzip_and_job_files() {
    use std::io::Write;
    let dir = tempfile::tempdir().expect("tmp");
    let out = dir.path().join("stdin.results.jsonl");
    let assert = batchgen()
        .args(["run", "-", "--base-url", "mock", "-o"])
        .arg(&out)
        .write_stdin(prompts_jsonl(5))
        .assert();
    assert.code(0);
    assert_eq!(records(&out).len(), 5);

    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(prompts_jsonl(3).as_bytes()).expect("gzip");
    let gz_path = dir.path().join("z.jsonl.gz");
    std::fs::write(&gz_path, gz.finish().expect("gzip")).expect("write");
    let (code, stderr) = run(&[gz_path.to_str().expect("path"), "--base-url", "mock"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(records(&dir.path().join("z.results.jsonl")).len(), 3);

    let jobdir = dir.path().join("jobs");
    std::fs::create_dir_all(&jobdir).expect("mkdir");
    write(dir.path(), "in.jsonl", &prompts_jsonl(4));
    write(
        &jobdir,
        "j.toml",
        "input = \"../in.jsonl\"\noutput = \"../res/out.jsonl\"\nbase_url = \"mock\"\n\
         model = \"qwen-turbo\"\n[params]\ntop_k = 5\n",
    );
    let assert = batchgen()
        .current_dir(&jobdir)
        .args(["run", "--job", "j.toml", "-q"])
        .assert();
    assert.code(0);
    let recs = records(&dir.path().join("res/out.jsonl"));
    assert_eq!(recs.len(), 4);
    assert_eq!(recs[0]["model"], "qwen-turbo");

    write(&jobdir, "bad.toml", "input = \"x.jsonl\"\nconcurency = 3\n");
    let out = batchgen()
        .current_dir(&jobdir)
        .args(["run", "--job", "bad.toml"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bad.toml") && stderr.contains("concurency"),
        "{stderr}"
    );
}

/// Starts `batchgen run INPUT ARGS` in the background, keeping its stderr when asked.
fn spawn_run(input: &Path, args: &[&str], keep_stderr: bool) -> std::process::Child {
    std::process::Command::new(assert_cmd::cargo::cargo_bin!("batchgen"))
        .env("DASHSCOPE_API_KEY", SECRET)
        .arg("run")
        .args(args)
        .arg(input)
        .stderr(if keep_stderr {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        })
        .spawn()
        .expect("spawn")
}

/// Waits (bounded) until `cond` holds.
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn lock_refuses_a_second_run_and_sigint_drains_then_resumes() {
    let ep = Endpoint::start(MockConfig {
        latency: Duration::from_millis(800),
        ..MockConfig::default()
    });
    let dir = tempfile::tempdir().expect("tmp");
    let input = write(dir.path(), "slow.jsonl", &prompts_jsonl(40));
    let out = dir.path().join("slow.results.jsonl");
    let first = spawn_run(&input, &["-c", "4", "--base-url", &ep.url()], true);
    eventually("the first run to send", || ep.stats().requests >= 4);

    let started = std::time::Instant::now();
    let (code, stderr) = run(&[
        input.to_str().expect("path"),
        "-c",
        "4",
        "--base-url",
        &ep.url(),
    ]);
    assert_eq!(code, 3, "{stderr}");
    assert!(
        stderr.contains("in use by another run") && stderr.contains("pid"),
        "{stderr}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));

    let status = std::process::Command::new("kill")
        .args(["-INT", &first.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let output = first.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains("interrupted") && stderr.contains("batchgen summary"),
        "{stderr}"
    );
    let done = records(&out);
    assert!(!done.is_empty() && done.len() < 40, "{}", done.len());
    assert!(done.iter().all(|r| r["status"] == "ok"));

    let (code, stderr) = run(&[
        input.to_str().expect("path"),
        "-c",
        "16",
        "--base-url",
        &ep.url(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    let all = by_id(&records(&out));
    assert_eq!(all.len(), 40);
}

#[test]
fn kill_9_mid_run_then_resume_pays_at_most_the_rows_in_flight_twice() {
    let ep = Endpoint::start(MockConfig {
        latency: Duration::from_millis(20),
        jitter: Duration::from_millis(20),
        ..MockConfig::default()
    });
    let dir = tempfile::tempdir().expect("tmp");
    let input = write(dir.path(), "k.jsonl", &prompts_jsonl(600));
    let out = dir.path().join("k.results.jsonl");
    let mut child = spawn_run(
        &input,
        &["-c", "16", "--no-progress", "--base-url", &ep.url()],
        false,
    );
    eventually("some records", || {
        std::fs::read_to_string(&out).is_ok_and(|t| t.lines().count() >= 100)
    });
    child.kill().expect("kill -9");
    let _ = child.wait();
    let (code, stderr) = run(&[
        input.to_str().expect("path"),
        "-c",
        "16",
        "--base-url",
        &ep.url(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("resuming"), "{stderr}");
    let recs = by_id(&records(&out));
    assert_eq!(recs.len(), 600);
    for i in 1..=600 {
        let prompt = format!("Question number {i}: what is {i} squared?");
        assert_eq!(
            recs[&format!("r{i}")]["content"].as_str(),
            Some(reply_for(&prompt).as_str())
        );
    }
    assert!(ep.stats().ok <= 600 + 2 * 16, "{:?}", ep.stats());
}

#[test]
fn every_kind_of_bad_row_is_named_before_anything_is_sent() {
    let ep = Endpoint::start(MockConfig::default());
    let dir = tempfile::tempdir().expect("tmp");
    let mut bytes = b"{\"id\":\"a\",\"prompt\":\"fine\"}\n".to_vec();
    bytes.extend_from_slice(b"{\"id\":\"b\",\"prompt\":\"bad \xff byte\"}\n");
    bytes.extend_from_slice(b"{\"id\":\"c\",\"prompt\":\"   \"}\n");
    bytes.extend_from_slice(b"{\"id\":\"d\",\"text\":\"no prompt field\"}\n");
    bytes.extend_from_slice(b"[\"not an object\"]\n");
    bytes.extend_from_slice(
        format!(
            "{{\"id\":\"f\",\"prompt\":\"{}\"}}\n",
            "x".repeat(9 * 1024 * 1024)
        )
        .as_bytes(),
    );
    bytes.extend_from_slice(b"{\"id\":\"g\",\"messages\":[]}\n");
    let input = dir.path().join("mixed.jsonl");
    std::fs::write(&input, bytes).expect("write");
    let (code, stderr) = run(&[input.to_str().expect("path"), "--base-url", &ep.url()]);
    assert_eq!(code, 2, "{stderr}");
    for expected in [
        "mixed.jsonl:2: invalid UTF-8",
        "mixed.jsonl:3: empty prompt",
        "mixed.jsonl:4: no prompt",
        "mixed.jsonl:5: not a JSON object",
        "mixed.jsonl:6: request of",
        "mixed.jsonl:7: `messages` is empty",
        "6 invalid rows; nothing was sent",
    ] {
        assert!(
            stderr.contains(expected),
            "missing {expected:?} in {stderr}"
        );
    }

    let csv = write(
        dir.path(),
        "rows.csv",
        "id,prompt\n1,ok\n2,too,many\n3,\"unclosed\n",
    );
    let (code, stderr) = run(&[csv.to_str().expect("path"), "--base-url", &ep.url()]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("rows.csv:3: 3 fields, but the header has 2"),
        "{stderr}"
    );

    let (code, stderr) = run(&[
        csv.to_str().expect("path"),
        "--input-format",
        "xml",
        "--base-url",
        &ep.url(),
    ]);
    assert_eq!(code, 2);
    assert!(stderr.contains("xml"), "{stderr}");
    assert_eq!(ep.stats().requests, 0);
}

#[test]
fn a_large_input_is_read_again_for_the_run_and_resumes() {
    // Over 8 MiB: validation does not keep the built requests, so the run reads and builds the
    // input a second time. 300 rows of about 30 KB each, with a duplicate-id row skipped by
    // --skip-invalid, to check that the second read skips what the first one found.
    let ep = Endpoint::start(batchgen::mock::MockConfig::default());
    let dir = tempfile::tempdir().expect("tmp");
    let pad = "lorem ipsum dolor sit amet ".repeat(1100);
    let mut text = String::new();
    for i in 1..=300 {
        text.push_str(&format!(
            "{{\"id\":\"r{i}\",\"prompt\":\"Question {i}: {pad}\"}}\n"
        ));
    }
    text.push_str(&format!("{{\"id\":\"r7\",\"prompt\":\"again {pad}\"}}\n"));
    assert!(text.len() > 8 << 20, "{} bytes", text.len());
    let input = write(dir.path(), "big.jsonl", &text);
    let out = dir.path().join("big.out.jsonl");
    let (code, stderr) = run_io(&input, &out, &ep.url(), &["--skip-invalid", "-c", "16"]);
    assert_eq!(code, 1, "the duplicate is a failed row: {stderr}");
    let recs = records(&out);
    assert_eq!(recs.len(), 301);
    let ok: Vec<_> = recs.iter().filter(|r| r["status"] == "ok").collect();
    assert_eq!(ok.len(), 300);
    for r in &ok {
        let id = r["id"].as_str().expect("id");
        let i: usize = id.trim_start_matches('r').parse().expect("number");
        let prompt = format!("Question {i}: {pad}");
        assert_eq!(r["content"].as_str(), Some(reply_for(&prompt).as_str()));
    }
    assert_eq!(ep.stats().requests, 300);
    // The rerun sends nothing new for the done rows.
    let (code, stderr) = run_io(&input, &out, &ep.url(), &["--skip-invalid", "-c", "16"]);
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(ep.stats().requests, 300);
}
