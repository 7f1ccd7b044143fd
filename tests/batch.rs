//! Black-box tests of `run --batch` against the mock's Batch API on loopback: the whole cycle,
//! expiry and resubmission of only the lines that did not run, the batch price, and reruns
//! after `kill -9` that create no second batch for the same rows.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use batchgen::mock::MockConfig;
use common::*;
use serde_json::Value;

/// A mock whose batches move one state every `step`.
fn stepping(step: Duration) -> Endpoint {
    Endpoint::start(MockConfig {
        batch_step: step,
        ..MockConfig::default()
    })
}

fn endpoint() -> Endpoint {
    stepping(Duration::from_millis(100))
}

const FAST: [&str; 4] = ["--batch", "--poll-interval", "0.05", "--quiet"];

/// One run's setting: a mock, a tempdir holding `in.jsonl`, and `out.jsonl` beside it.
struct Job {
    mock: Endpoint,
    dir: tempfile::TempDir,
    input: PathBuf,
    out: PathBuf,
}

impl Job {
    fn new(mock: Endpoint, text: &str) -> Job {
        let dir = tempfile::tempdir().expect("tmp");
        let input = write(dir.path(), "in.jsonl", text);
        let out = dir.path().join("out.jsonl");
        Job {
            mock,
            dir,
            input,
            out,
        }
    }

    /// Runs INPUT to OUT against the mock; returns (exit code, stderr).
    fn run(&self, args: &[&str]) -> (i32, String) {
        self.run_at(&self.mock.url(), args)
    }

    /// Runs INPUT to OUT against the endpoint at `url`; returns (exit code, stderr).
    fn run_at(&self, url: &str, args: &[&str]) -> (i32, String) {
        run_io(&self.input, &self.out, url, args)
    }

    /// Runs `batchgen batch COMMAND OUT` against the mock.
    fn batch(&self, command: &str) -> std::process::Output {
        batchgen()
            .args([
                "batch",
                command,
                path(&self.out),
                "--base-url",
                &self.mock.url(),
            ])
            .output()
            .expect(command)
    }

    /// The records of OUT, by id.
    fn records(&self) -> HashMap<String, Value> {
        by_id(&records(&self.out))
    }
}

/// `FAST` and then `more`.
fn fast(more: &[&'static str]) -> Vec<&'static str> {
    let mut args = FAST.to_vec();
    args.extend_from_slice(more);
    args
}

/// INPUT rows `prompts_jsonl(n)` with `mark` in the prompts of the rows numbered `rows`.
fn marked(n: usize, rows: &[usize], mark: &str) -> String {
    let marks: Vec<(usize, &str)> = rows.iter().map(|&i| (i, mark)).collect();
    marked_each(n, &marks)
}

/// INPUT rows `prompts_jsonl(n)` with each `(row, marker)`'s marker in that row's prompt.
fn marked_each(n: usize, marks: &[(usize, &str)]) -> String {
    let mut text = prompts_jsonl(n);
    for (i, marker) in marks {
        text = text.replace(&format!("number {i}:"), &format!("number {i}: {marker}"));
    }
    text
}

/// The journal of the batches of a results file.
fn journal(out: &Path) -> PathBuf {
    let mut p = out.as_os_str().to_owned();
    p.push(".batches.jsonl");
    PathBuf::from(p)
}

/// Starts `run --batch` polling every `poll`, and waits (at most `within`) until its journal
/// holds `event`; on a timeout the run is killed and the test fails.
fn start_until(
    input: &Path,
    out: &Path,
    url: &str,
    poll: &str,
    event: &str,
    within: Duration,
) -> std::process::Child {
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin!("batchgen"))
        .args(["run", path(input), "-o", path(out), "--base-url", url])
        .args(["--batch", "--poll-interval", poll, "--quiet"])
        .env("DASHSCOPE_API_KEY", SECRET)
        .env_remove("BATCHGEN_BASE_URL")
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let journal = journal(out);
    let needle = format!("\"event\":\"{event}\"");
    let until = std::time::Instant::now() + within;
    while !std::fs::read_to_string(&journal).is_ok_and(|t| t.contains(&needle)) {
        if std::time::Instant::now() > until {
            let _ = child.kill();
            panic!("no {event} event");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    child
}

/// Kills (SIGKILL) a run and reaps it.
fn kill(mut child: std::process::Child) {
    child.kill().expect("kill");
    let _ = child.wait();
}

#[test]
fn the_whole_cycle_writes_one_record_per_row_at_half_the_sync_cost() {
    let job = Job::new(endpoint(), &prompts_jsonl(25));
    let (code, stderr) = job.run(&fast(&["--batch-max-rows", "10"]));
    assert_eq!(code, 0, "{stderr}");
    let recs = job.records();
    assert_eq!(recs.len(), 25);
    assert!(
        recs.values()
            .all(|r| r["status"] == "ok" && r["batch_id"].is_string())
    );
    let s = job.mock.stats();
    assert_eq!((s.batches_created, s.batch_lines_uploaded), (3, 25));

    // The same rows, synchronously: the same request hashes, twice the cost.
    let sync_out = job.dir.path().join("sync.jsonl");
    let (code, stderr) = run_io(&job.input, &sync_out, &job.mock.url(), &["--quiet"]);
    assert_eq!(code, 0, "{stderr}");
    let sync = by_id(&records(&sync_out));
    for (id, r) in &recs {
        let s = &sync[id];
        assert_eq!(r["request_hash"], s["request_hash"], "{id}");
        assert!(s.get("batch_id").is_none());
        assert_eq!(r["usage"], s["usage"], "{id}");
        let (b, c) = (r["cost"].as_f64(), s["cost"].as_f64());
        assert!(b.is_some() && c.is_some(), "{id}: priced");
        let (b, c) = (b.unwrap_or(0.0), c.unwrap_or(0.0));
        assert!((b * 2.0 - c).abs() < 1e-9, "{id}: {b} is not half of {c}");
    }
    // Done rows are done in either mode: a rerun sends nothing.
    let (code, stderr) = job.run(&FAST);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(job.mock.stats().batches_created, 3);
}

#[test]
fn expired_lines_alone_are_sent_again_in_the_same_run() {
    let job = Job::new(
        endpoint(),
        &marked(20, &[3, 9, 14, 17], "[mock:batch-expire]"),
    );
    let (code, stderr) = job.run(&fast(&["--max-retries", "1"]));
    // The trigger travels with the lines, so they expire again and keep `expired` records.
    assert_eq!(code, 1, "{stderr}");
    let recs = job.records();
    assert_eq!(recs.len(), 20);
    let expired: Vec<&String> = recs
        .iter()
        .filter(|(_, r)| r["error"]["kind"] == "expired")
        .map(|(id, _)| id)
        .collect();
    assert_eq!(expired.len(), 4, "{recs:?}");
    let s = job.mock.stats();
    assert_eq!(s.batch_lines_uploaded, 20 + 4);
    assert_eq!(s.batches_created, 2);
}

#[test]
fn a_fifth_of_one_batch_expired_is_sent_again_alone_and_completes() {
    // Rows 11..20 make the second file of ten rows; two of them do not run the first time.
    let job = Job::new(
        endpoint(),
        &marked(30, &[12, 17], "[mock:batch-expire-once]"),
    );
    let (code, stderr) = job.run(&fast(&["--batch-max-rows", "10"]));
    assert_eq!(code, 0, "{stderr}");
    let recs = job.records();
    assert_eq!(recs.len(), 30);
    assert!(recs.values().all(|r| r["status"] == "ok"), "{recs:?}");
    let s = job.mock.stats();
    assert_eq!((s.batches_created, s.batch_lines_uploaded), (4, 30 + 2));
    // The lines that ran the first time are in the output once: one record each.
    let lines = std::fs::read_to_string(&job.out)
        .expect("out")
        .lines()
        .count();
    assert_eq!(lines, 30);
}

/// Starts `run --batch` and kills it (SIGKILL) once its journal holds `event`.
fn kill_after(input: &Path, out: &Path, url: &str, event: &str) {
    kill(start_until(
        input,
        out,
        url,
        "30s",
        event,
        Duration::from_secs(60),
    ));
}

/// Drops the journal's lines of `event`: as if the crash came just before it was journaled.
fn forget(out: &Path, event: &str) {
    let p = journal(out);
    let text = std::fs::read_to_string(&p).expect("journal");
    let kept: String = text
        .lines()
        .filter(|l| !l.contains(&format!("\"event\":\"{event}\"")))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&p, kept).expect("journal");
}

#[test]
fn a_rerun_after_kill_9_creates_no_second_batch() {
    let mock = stepping(Duration::from_millis(300));
    let dir = tempfile::tempdir().expect("tmp");
    let input = write(dir.path(), "in.jsonl", &prompts_jsonl(12));
    let (mut uploaded, mut created) = (0, 0);
    for (case, event, lost) in [
        ("upload", "uploaded", None),
        ("create", "created", Some("created")),
        ("waiting", "created", None),
    ] {
        let out = dir.path().join(format!("{case}.jsonl"));
        kill_after(&input, &out, &mock.url(), event);
        if let Some(e) = lost {
            forget(&out, e);
        }
        let (code, stderr) = run_io(&input, &out, &mock.url(), &FAST);
        assert_eq!(code, 0, "{case}: {stderr}");
        let recs = by_id(&records(&out));
        assert_eq!(recs.len(), 12, "{case}");
        assert!(recs.values().all(|r| r["status"] == "ok"), "{case}");
        let s = mock.stats();
        assert_eq!(
            s.batch_lines_uploaded - uploaded,
            12,
            "{case}: rows sent twice"
        );
        assert_eq!(s.batches_created - created, 1, "{case}: a second batch");
        (uploaded, created) = (s.batch_lines_uploaded, s.batches_created);
    }
}

#[test]
fn detach_exits_4_while_batches_run_and_a_rerun_collects() {
    let job = Job::new(stepping(Duration::from_millis(400)), &prompts_jsonl(8));
    let detach = ["--batch", "--detach", "--quiet"];
    let (code, stderr) = job.run(&detach);
    assert_eq!(code, 4, "{stderr}");
    assert!(stderr.contains("still running"), "{stderr}");
    let status = job.batch("status");
    assert_eq!(status.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&status.stderr).contains("batch_"));
    let mut code = 4;
    for _ in 0..100 {
        (code, _) = job.run(&detach);
        if code != 4 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(code, 0);
    assert_eq!(job.records().len(), 8);
    assert_eq!(job.mock.stats().batches_created, 1);
}

#[test]
fn cancel_stops_the_live_batches_and_a_rerun_collects_their_finished_lines() {
    let job = Job::new(stepping(Duration::from_millis(400)), &prompts_jsonl(10));
    let (code, stderr) = job.run(&["--batch", "--detach", "-q"]);
    assert_eq!(code, 4, "{stderr}");
    let cancel = job.batch("cancel");
    assert_eq!(cancel.status.code(), Some(0));
    assert_eq!(job.mock.stats().batches_cancelled, 1);
    // The lines the cancel left unrun are sent again in a new batch.
    let (code, stderr) = job.run(&FAST);
    assert_eq!(code, 0, "{stderr}");
    let recs = job.records();
    assert_eq!(recs.len(), 10);
    let s = job.mock.stats();
    assert_eq!(s.batches_created, 2);
    assert_eq!(s.batch_lines_uploaded, 10 + 5);
}

#[test]
fn dry_run_names_the_files_at_the_batch_price_and_native_style_is_refused() {
    let job = Job::new(endpoint(), &prompts_jsonl(30));
    let args = [
        "--batch",
        "--dry-run",
        "--batch-max-rows",
        "12",
        "--max-tokens",
        "50",
    ];
    let (code, stderr) = job.run(&args);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("file 0003  6 rows"), "{stderr}");
    assert!(stderr.contains("at the batch price"), "{stderr}");
    assert!(!job.out.exists());
    assert_eq!(job.mock.stats().files_uploaded, 0);
    let (code, stderr) = job.run(&["--batch", "--api", "dashscope"]);
    assert_eq!(code, 2, "{stderr}");
}

/// The peak resident memory (`VmHWM`, in KiB) of `run --batch` once its journal holds `event`;
/// the run is then killed.
#[cfg(target_os = "linux")]
fn peak_rss_at(input: &Path, out: &Path, url: &str, event: &str) -> u64 {
    let child = start_until(input, out, url, "60s", event, Duration::from_secs(120));
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).expect("status");
    kill(child);
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

#[cfg(target_os = "linux")]
#[test]
fn a_large_batch_file_is_uploaded_as_a_stream() {
    // Lines of a megabyte, 96 of them: one file of about 96 MB, uploaded at once.
    let filler = "lorem ipsum ".repeat((1 << 20) / 12);
    let text: String = (0..96)
        .map(|i| format!("{{\"id\":\"r{i}\",\"prompt\":\"{i} {filler}\"}}\n"))
        .collect();
    let job = Job::new(stepping(Duration::from_secs(60)), &text);
    let peak_kib = peak_rss_at(&job.input, &job.out, &job.mock.url(), "created");
    let s = job.mock.stats();
    assert_eq!((s.files_uploaded, s.batch_lines_uploaded), (1, 96));
    let file = std::fs::metadata(job.dir.path().join("out.jsonl.batch-files/0001.jsonl"))
        .expect("batch file")
        .len();
    assert!(file > 90 << 20, "{file}");
    // Read whole, the file alone would take 96 MB.
    assert!(
        peak_kib * 1024 < file / 2,
        "peak RSS {peak_kib} KiB for a file of {file} bytes"
    );
}

#[test]
fn max_cost_is_checked_on_the_batch_estimate_before_anything_is_uploaded() {
    let job = Job::new(endpoint(), &prompts_jsonl(40));
    // 40 rows of up to 1,000 output tokens of qwen-plus: about 0.024 USD at the batch price.
    let args = fast(&["--max-tokens", "1000", "--max-cost", "0.01"]);
    // The dry run says so.
    let mut dry = args.clone();
    dry.push("--dry-run");
    let (code, stderr) = job.run(&dry);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains(
            "max-cost   0.01: the run would stop before uploading: the worst case is 0.02"
        ),
        "{stderr}"
    );
    let (code, stderr) = job.run(&args);
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains("--max-cost 0.01"), "{stderr}");
    assert!(stderr.contains("batch estimate is up to 0.02"), "{stderr}");
    assert!(stderr.contains("nothing was uploaded"), "{stderr}");
    let s = job.mock.stats();
    assert_eq!((s.files_uploaded, s.batches_created), (0, 0));
    assert!(!job.out.exists() || records(&job.out).is_empty());
    // The same cap again: the rows are still not sent.
    let (code, stderr) = job.run(&args);
    assert_eq!(code, 3, "{stderr}");
    assert_eq!(job.mock.stats().files_uploaded, 0);
    // Under a cap that holds the estimate, the run goes through.
    let (code, stderr) = job.run(&fast(&["--max-tokens", "1000", "--max-cost", "0.05"]));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(records(&job.out).len(), 40);
    let s = job.mock.stats();
    assert_eq!((s.files_uploaded, s.batch_lines_uploaded), (1, 40));
}

/// The batch files (`NNNN.jsonl`) of a results file, in order.
fn batch_files(out: &Path) -> Vec<PathBuf> {
    let mut dir = out.as_os_str().to_owned();
    dir.push(".batch-files");
    let mut files: Vec<_> = std::fs::read_dir(PathBuf::from(dir))
        .expect("batch files")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".jsonl"))
                .is_some_and(|stem| stem.len() == 4 && stem.bytes().all(|b| b.is_ascii_digit()))
        })
        .collect();
    files.sort();
    files
}

/// The lines of a batch file, as JSON.
fn lines_of(file: &Path) -> Vec<Value> {
    std::fs::read_to_string(file)
        .expect("batch file")
        .lines()
        .map(|l| serde_json::from_str(l).expect("line is JSON"))
        .collect()
}

#[test]
fn a_batch_failing_validation_reports_its_lines_against_the_rows_and_sends_the_rest_again() {
    let job = Job::new(endpoint(), &marked(10, &[4, 7], "[mock:batch-invalid]"));
    let (code, stderr) = job.run(&FAST);
    assert_eq!(code, 1, "{stderr}");
    let recs = job.records();
    assert_eq!(recs.len(), 10);
    for (id, line) in [("r4", 4), ("r7", 7)] {
        let e = &recs[id]["error"];
        assert_eq!(e["kind"], "invalid_request", "{id}: {e}");
        assert_eq!(e["code"], "mock_invalid_line", "{id}: {e}");
        let message = e["message"].as_str().unwrap_or_default();
        assert!(message.contains(&format!("line {line}")), "{id}: {message}");
        assert!(message.contains("[mock:batch-invalid]"), "{id}: {message}");
        assert!(
            stderr.contains(&format!("0001.jsonl:{line} (row {id}): batch ")),
            "{stderr}"
        );
    }
    assert!(
        stderr.contains("failed validation: mock_invalid_line"),
        "{stderr}"
    );
    // The valid lines of the failed batch go again, in a batch of their own, and succeed.
    let ok = recs.values().filter(|r| r["status"] == "ok").count();
    assert_eq!(ok, 8);
    let s = job.mock.stats();
    assert_eq!((s.batches_created, s.batch_lines_uploaded), (2, 10 + 8));
}

#[test]
fn per_line_errors_keep_their_record_or_go_again_as_a_synchronous_run_would_retry() {
    let text = marked_each(
        12,
        &[
            (2, "[mock:400]"),
            (5, "[mock:batch-429]"),
            (8, "[mock:batch-500]"),
        ],
    );
    let job = Job::new(endpoint(), &text);
    let (code, stderr) = job.run(&fast(&["--max-retries", "1"]));
    assert_eq!(code, 1, "{stderr}");
    let recs = job.records();
    assert_eq!(recs.len(), 12);
    let e = &recs["r2"]["error"];
    assert_eq!(
        (&e["kind"], &e["http_status"]),
        (&"invalid_request".into(), &400.into())
    );
    assert_eq!(recs["r2"]["attempts"], 1);
    // The markers travel with the lines: sent again once (--max-retries 1), they fail again.
    for (id, kind, status) in [("r5", "rate_limit", 429), ("r8", "server", 500)] {
        let e = &recs[id]["error"];
        assert_eq!(
            (&e["kind"], &e["http_status"]),
            (&kind.into(), &status.into()),
            "{id}"
        );
        assert_eq!(recs[id]["attempts"], 2, "{id}");
    }
    assert_eq!(recs.values().filter(|r| r["status"] == "ok").count(), 9);
    let s = job.mock.stats();
    assert_eq!((s.batches_created, s.batch_lines_uploaded), (2, 12 + 2));
    let files = batch_files(&job.out);
    assert_eq!(files.len(), 2);
    let again: Vec<_> = lines_of(&files[1])
        .iter()
        .map(|l| l["custom_id"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(again, ["r5", "r8"]);
}

#[test]
fn batch_max_bytes_splits_the_rows_into_files_under_the_limit() {
    let job = Job::new(endpoint(), &prompts_jsonl(20));
    let (code, stderr) = job.run(&fast(&["--batch-max-bytes", "1000"]));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(records(&job.out).len(), 20);
    let files = batch_files(&job.out);
    assert!(files.len() >= 3, "{files:?}");
    let mut lines = 0;
    for f in &files {
        let len = std::fs::metadata(f).expect("file").len();
        assert!(len <= 1000, "{}: {len} bytes", f.display());
        lines += lines_of(f).len();
    }
    assert_eq!(lines, 20);
    let s = job.mock.stats();
    assert_eq!(s.batches_created, files.len() as u64);
    assert_eq!(s.batch_lines_uploaded, 20);
}

#[test]
fn rows_of_different_models_go_to_different_files() {
    let models = ["qwen-plus", "qwen-flash", "qwen-turbo"];
    let text: String = (1..=12)
        .map(|i| {
            format!(
                "{{\"id\":\"r{i}\",\"prompt\":\"Question {i}\",\"params\":{{\"model\":\"{}\"}}}}\n",
                models[i % 3]
            )
        })
        .collect();
    let job = Job::new(endpoint(), &text);
    let (code, stderr) = job.run(&FAST);
    assert_eq!(code, 0, "{stderr}");
    let recs = job.records();
    assert_eq!(recs.len(), 12);
    assert!(recs.values().all(|r| r["status"] == "ok"), "{recs:?}");
    let files = batch_files(&job.out);
    assert_eq!(files.len(), 3);
    let mut seen = Vec::new();
    for f in &files {
        let lines = lines_of(f);
        assert_eq!(lines.len(), 4);
        let model = &lines[0]["body"]["model"];
        assert!(lines.iter().all(|l| &l["body"]["model"] == model), "{f:?}");
        seen.push(model.as_str().unwrap_or_default().to_string());
    }
    seen.sort();
    assert_eq!(seen, ["qwen-flash", "qwen-plus", "qwen-turbo"]);
    assert_eq!(job.mock.stats().batches_created, 3);
}

#[test]
fn control_calls_answered_429_or_5xx_are_retried_with_one_batch_per_file() {
    let mock = Endpoint::start(MockConfig {
        batch_step: Duration::from_millis(100),
        batch_faults: batchgen::mock::FaultRates::parse("429=0.2,500=0.1,503=0.1").expect("faults"),
        retry_after: Duration::from_millis(20),
        ..MockConfig::default()
    });
    let job = Job::new(mock, &prompts_jsonl(25));
    let (code, stderr) = job.run(&fast(&["--batch-max-rows", "10", "--max-retries", "12"]));
    assert_eq!(code, 0, "{stderr}");
    let recs = job.records();
    assert_eq!(recs.len(), 25);
    assert!(recs.values().all(|r| r["status"] == "ok"));
    let s = job.mock.stats();
    assert_eq!((s.files_uploaded, s.batches_created), (3, 3));
    assert_eq!(s.batch_lines_uploaded, 25);
}

/// The `(rows, bytes, model)` of each file a `--dry-run --batch` would make.
fn planned_files(stderr: &str) -> Vec<(u64, u64, String)> {
    stderr
        .lines()
        .filter_map(|l| l.trim().strip_prefix("file "))
        .filter_map(|l| {
            let (_, rest) = l.split_once("  ")?;
            let (rows, rest) = rest.split_once(" rows, ")?;
            let (bytes, rest) = rest.split_once(" bytes, model `")?;
            Some((
                rows.parse().ok()?,
                bytes.parse().ok()?,
                rest.trim_end_matches('`').to_string(),
            ))
        })
        .collect()
}

#[test]
fn dashscope_lines_of_a_hybrid_model_set_enable_thinking_one_mode_per_file() {
    let text: String = (1..=10)
        .map(|i| {
            let params = match i <= 3 {
                true => ",\"params\":{\"enable_thinking\":true}",
                false => "",
            };
            format!("{{\"id\":\"r{i}\",\"prompt\":\"Question {i}\"{params}}}\n")
        })
        .collect();
    let job = Job::new(endpoint(), &text);
    let args = ["--batch", "--dry-run", "-m", "qwen-plus"];
    let dashscope = "https://dashscope-intl.aliyuncs.com/compatible-mode/v1";
    let (code, stderr) = job.run_at(dashscope, &args);
    assert_eq!(code, 0, "{stderr}");
    let on_dashscope = planned_files(&stderr);
    // Elsewhere (the mock on loopback) nothing is added.
    let (code, stderr) = job.run(&args);
    assert_eq!(code, 0, "{stderr}");
    let elsewhere = planned_files(&stderr);
    // The rows that ask for thinking are a file of their own either way.
    assert_eq!(on_dashscope.len(), 2, "{on_dashscope:?}");
    assert_eq!(elsewhere.len(), 2, "{elsewhere:?}");
    let added = "\"enable_thinking\":false,".len() as u64;
    for (d, e) in on_dashscope.iter().zip(&elsewhere) {
        assert_eq!((d.0, &d.2), (e.0, &e.2));
        match d.0 {
            // qwen-plus does not think by default: its lines say so.
            7 => assert_eq!(d.1, e.1 + 7 * added, "{d:?} {e:?}"),
            _ => assert_eq!(d.1, e.1, "{d:?} {e:?}"),
        }
    }
}

/// The `(low, high)` of a dry run's cost line.
fn dry_run_cost(stderr: &str) -> (f64, f64) {
    let line = stderr
        .lines()
        .find_map(|l| l.trim().strip_prefix("cost"))
        .unwrap_or_default();
    let mut numbers = line
        .split_whitespace()
        .filter_map(|w| w.parse::<f64>().ok());
    let low = numbers.next().unwrap_or(f64::NAN);
    (low, numbers.next().unwrap_or(f64::NAN))
}

#[test]
fn synchronous_calls_to_the_batch_chat_host_are_priced_at_the_batch_price() {
    let dir = tempfile::tempdir().expect("tmp");
    let input = write(dir.path(), "in.jsonl", &prompts_jsonl(20));
    let out = dir.path().join("out.jsonl");
    let args = ["--dry-run", "--region", "cn", "--max-tokens", "100"];
    let (code, realtime) = run_io(
        &input,
        &out,
        "https://dashscope.aliyuncs.com/compatible-mode/v1",
        &args,
    );
    assert_eq!(code, 0, "{realtime}");
    let (code, batch_chat) = run_io(
        &input,
        &out,
        "https://batch.dashscope.aliyuncs.com/compatible-mode/v1",
        &args,
    );
    assert_eq!(code, 0, "{batch_chat}");
    assert!(batch_chat.contains("Batch Chat"), "{batch_chat}");
    let (r, b) = (dry_run_cost(&realtime), dry_run_cost(&batch_chat));
    assert!(r.0 > 0.0 && r.1 > r.0, "{realtime}");
    assert!((b.0 * 2.0 - r.0).abs() < 1e-6, "{b:?} is not half of {r:?}");
    assert!((b.1 * 2.0 - r.1).abs() < 1e-6, "{b:?} is not half of {r:?}");
}

#[test]
fn waiting_says_each_batch_state_and_counts_once_per_change_in_plain_lines() {
    let job = Job::new(stepping(Duration::from_millis(500)), &prompts_jsonl(12));
    // Not on a terminal (as under cron): plain lines, polled far more often than the states
    // change.
    let args = [
        "--batch",
        "--poll-interval",
        "0.03",
        "--batch-max-rows",
        "5",
    ];
    let (code, stderr) = job.run(&args);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        !stderr.contains('\r') && !stderr.contains('\u{1b}'),
        "{stderr}"
    );
    for (file, rows) in [("0001", 5), ("0002", 5), ("0003", 2)] {
        let said: Vec<&str> = stderr
            .lines()
            .filter(|l| l.starts_with(&format!("{file}.jsonl: batch batch_")))
            .collect();
        let states: Vec<&str> = said
            .iter()
            .filter_map(|l| l.split_whitespace().nth(3))
            .collect();
        assert_eq!(
            states,
            [
                "validating",
                "in_progress",
                "finalizing",
                "completed",
                "completed:"
            ],
            "{file}: {said:?}"
        );
        assert!(
            said[0].ends_with(&format!("(0 of {rows} done, 0 failed)")),
            "{said:?}"
        );
        assert!(
            said[3].ends_with(&format!("({rows} of {rows} done, 0 failed)")),
            "{said:?}"
        );
        assert!(
            said[4].ends_with(&format!("{rows} ok, 0 failed, 0 did not run")),
            "{said:?}"
        );
    }
}

#[test]
fn a_create_whose_answer_was_lost_is_not_made_twice() {
    let job = Job::new(endpoint(), &marked(6, &[3], "[mock:batch-create-lost]"));
    let (code, stderr) = job.run(&FAST);
    assert_eq!(code, 0, "{stderr}");
    let recs = job.records();
    assert_eq!(recs.len(), 6);
    assert!(recs.values().all(|r| r["status"] == "ok"));
    // The create made the batch and answered 500: the retry finds that batch.
    let s = job.mock.stats();
    assert_eq!((s.files_uploaded, s.batches_created), (1, 1));
}
