//! Stop means stop: after a signal, `--deadline` or a write error, no new attempt starts, from
//! any wait; a second signal's abandoned attempts are counted; a full disk ends the run with a
//! summary.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use batchgen::mock::{FaultRates, MockConfig};
use common::{Endpoint, SECRET, by_id, prompts_jsonl, records, run_io, write};
use serde_json::Value;

/// A background `batchgen run`, its stderr read line by line by a thread.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Running {
    fn start(input: &Path, out: &Path, url: &str, extra: &[&str]) -> Running {
        let mut cmd = Command::new(assert_cmd::cargo::cargo_bin!("batchgen"));
        for var in common::PROXY_VARS {
            cmd.env_remove(var);
        }
        let mut child = cmd
            .env("DASHSCOPE_API_KEY", SECRET)
            .env_remove("BATCHGEN_BASE_URL")
            .arg("run")
            .arg(input)
            .arg("-o")
            .arg(out)
            .args(["--base-url", url, "--no-progress"])
            .args(extra)
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn batchgen");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Running {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Waits (bounded) for a stderr line containing `text`.
    fn wait_for_line(&mut self, text: &str) {
        while !self.seen.iter().any(|l| l.contains(text)) {
            match self.lines.recv_timeout(Duration::from_secs(30)) {
                Ok(l) => self.seen.push(l),
                Err(_) => panic!("no line with {text:?} in {:?}", self.seen),
            }
        }
    }

    /// Waits (bounded) for the exit; returns the exit code and all of stderr.
    fn finish(mut self) -> (i32, String) {
        let mut code = None;
        for _ in 0..600 {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                code = status.code();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if code.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        while let Ok(l) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.seen.push(l);
        }
        let stderr = self.seen.join("\n");
        assert!(!stderr.contains(SECRET), "the key leaked");
        let Some(code) = code else {
            panic!("batchgen did not exit within 30 s of the stop: {stderr}")
        };
        (code, stderr)
    }
}

/// Waits (bounded) until `cond` holds.
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..1500 {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out waiting for {what}");
}

fn summary_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).expect("summary json")).expect("summary is JSON")
}

#[test]
fn sigint_ends_the_rpm_wait_and_a_rerun_resumes() {
    let ep = Endpoint::start(MockConfig::default());
    let dir = tempfile::tempdir().expect("tmp");
    let input = write(dir.path(), "in.jsonl", &prompts_jsonl(30));
    let out = dir.path().join("out.jsonl");
    let sj = dir.path().join("summary.json");
    let mut run = Running::start(
        &input,
        &out,
        &ep.url(),
        &[
            "--rpm",
            "6",
            "-c",
            "4",
            "--summary-json",
            sj.to_str().expect("path"),
        ],
    );
    // One request every ten seconds: the workers are now waiting for the bucket.
    eventually("the first answer", || ep.stats().ok >= 1);
    let sent = ep.stats().requests;
    run.signal("INT");
    run.wait_for_line("interrupted");
    let (code, stderr) = run.finish();
    assert_eq!(code, 130, "{stderr}");
    assert!(stderr.contains("batchgen summary"), "{stderr}");
    assert_eq!(
        ep.stats().requests,
        sent,
        "a request started after the signal: {stderr}"
    );
    let s = summary_json(&sj);
    assert_eq!(s["requests"].as_u64(), Some(sent));
    assert_eq!(s["rows_unsent"].as_u64(), Some(30 - sent), "{s}");

    let (code, stderr) = run_io(&input, &out, &ep.url(), &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("resuming"), "{stderr}");
    assert_eq!(by_id(&records(&out)).len(), 30);
    assert_eq!(ep.stats().requests, 30);
}

#[test]
fn sigint_ends_a_long_retry_after_and_the_cool_down() {
    // Every request gets a 429 asking for ten minutes (clamped to five).
    let ep = Endpoint::start(MockConfig {
        faults: FaultRates::parse("429=1").expect("faults"),
        retry_after: Duration::from_secs(600),
        ..MockConfig::default()
    });
    let dir = tempfile::tempdir().expect("tmp");
    let input = write(dir.path(), "in.jsonl", &prompts_jsonl(5));
    let out = dir.path().join("out.jsonl");
    let sj = dir.path().join("summary.json");
    let mut run = Running::start(
        &input,
        &out,
        &ep.url(),
        &["-c", "2", "--summary-json", sj.to_str().expect("path")],
    );
    // One row sleeps on its Retry-After; the others wait out the pool's cool-down.
    eventually("a 429", || ep.stats().rate_limited >= 1);
    std::thread::sleep(Duration::from_millis(200));
    let sent = ep.stats().requests;
    run.signal("INT");
    run.wait_for_line("interrupted");
    let (code, stderr) = run.finish();
    assert_eq!(code, 130, "{stderr}");
    assert!(stderr.contains("batchgen summary"), "{stderr}");
    assert_eq!(ep.stats().requests, sent, "{stderr}");
    let s = summary_json(&sj);
    assert_eq!(s["requests"].as_u64(), Some(sent), "{s}");
    // The rows whose next attempt was cut short are not sent: a rerun sends them.
    assert_eq!(s["rows_unsent"].as_u64(), Some(5), "{s}");
    assert!(records(&out).is_empty());
}

#[test]
fn the_deadline_ends_the_rpm_wait() {
    let ep = Endpoint::start(MockConfig::default());
    let dir = tempfile::tempdir().expect("tmp");
    let input = write(dir.path(), "in.jsonl", &prompts_jsonl(20));
    let out = dir.path().join("out.jsonl");
    let sj = dir.path().join("summary.json");
    let (code, stderr) = run_io(
        &input,
        &out,
        &ep.url(),
        &[
            "--rpm",
            "6",
            "-c",
            "4",
            "--deadline",
            "1s",
            "--summary-json",
            sj.to_str().expect("path"),
        ],
    );
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains("--deadline"), "{stderr}");
    // At 6 a minute, the second request is ten seconds after the first.
    assert!(ep.stats().requests <= 1, "{:?}", ep.stats());
    let s = summary_json(&sj);
    assert_eq!(s["requests"].as_u64(), Some(ep.stats().requests));
}

#[test]
fn a_second_signal_counts_the_abandoned_attempts() {
    // Every request hangs until the connection is dropped.
    let ep = Endpoint::start(MockConfig {
        faults: FaultRates::parse("hang=1").expect("faults"),
        ..MockConfig::default()
    });
    let dir = tempfile::tempdir().expect("tmp");
    let input = write(dir.path(), "in.jsonl", &prompts_jsonl(10));
    let out = dir.path().join("out.jsonl");
    let sj = dir.path().join("summary.json");
    let mut run = Running::start(
        &input,
        &out,
        &ep.url(),
        &["-c", "3", "--summary-json", sj.to_str().expect("path")],
    );
    eventually("three requests in flight", || ep.stats().requests >= 3);
    run.signal("INT");
    run.wait_for_line("interrupted:");
    run.signal("TERM");
    run.wait_for_line("interrupted again");
    let (code, stderr) = run.finish();
    assert_eq!(code, 130, "{stderr}");
    assert!(stderr.contains("batchgen summary"), "{stderr}");
    assert_eq!(ep.stats().requests, 3);
    let s = summary_json(&sj);
    assert_eq!(s["requests"].as_u64(), Some(3), "{s}");
    assert_eq!(s["possibly_billed"].as_u64(), Some(3), "{s}");
    assert_eq!(s["rows_unsent"].as_u64(), Some(10), "{s}");
    assert!(records(&out).is_empty());
}

#[test]
fn a_full_disk_stops_at_once_with_a_summary() {
    // Slow answers, each row's first attempt a 500: a run that went on after the failed write
    // would send 400 requests. With -c 4 the first write fails after at most 8 (each row in
    // flight and its retry); a worker may take one more row in the 1 ms the writer gathers.
    let ep = Endpoint::start(MockConfig {
        latency: Duration::from_millis(200),
        faults: FaultRates::parse("500=1").expect("faults"),
        fault_attempts: 1,
        ..MockConfig::default()
    });
    let dir = tempfile::tempdir().expect("tmp");
    let input = write(dir.path(), "in.jsonl", &prompts_jsonl(200));
    // A link to /dev/full: every write fails with ENOSPC, and the lock file stays in `dir`.
    let out = dir.path().join("out.jsonl");
    std::os::unix::fs::symlink("/dev/full", &out).expect("symlink");
    let sj = dir.path().join("summary.json");
    let (code, stderr) = run_io(
        &input,
        &out,
        &ep.url(),
        &["-c", "4", "--summary-json", sj.to_str().expect("path")],
    );
    assert_eq!(code, 3, "{stderr}");
    assert!(
        stderr.contains("out.jsonl") && stderr.contains("No space left on device"),
        "{stderr}"
    );
    assert!(stderr.contains("batchgen summary"), "{stderr}");
    // The rows in flight when the first write failed, and nothing after.
    let requests = ep.stats().requests;
    assert!(requests <= 12, "{requests} requests: {stderr}");
    let s = summary_json(&sj);
    assert_eq!(s["exit_code"].as_i64(), Some(3), "{s}");
    // Every attempt started counts, those dropped before the mock read them included.
    let counted = s["requests"].as_u64().unwrap_or_default();
    assert!((requests..=12).contains(&counted), "{requests} sent: {s}");
}

#[test]
fn a_third_signal_exits_even_while_a_write_hangs() {
    use std::os::unix::fs::OpenOptionsExt;
    let ep = Endpoint::start(MockConfig::default());
    let dir = tempfile::tempdir().expect("tmp");
    let input = write(dir.path(), "in.jsonl", &prompts_jsonl(2000));
    // The output is a pipe that is opened for reading and never read: once its buffer is full,
    // the writer's next write hangs, holding the write lock.
    let out = dir.path().join("out.pipe");
    let made = Command::new("mkfifo").arg(&out).status().expect("mkfifo");
    assert!(made.success());
    let _reader = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(0o4000) // O_NONBLOCK: open without a writer
        .open(&out)
        .expect("open the pipe");
    let mut run = Running::start(&input, &out, &ep.url(), &["-c", "8"]);
    // 64 KiB of records fill the pipe after a few hundred rows: then the run stalls, its
    // workers waiting on the hung writer. Wait until the request count stops moving.
    let mut last = 0;
    for _ in 0..100 {
        std::thread::sleep(Duration::from_millis(300));
        let now = ep.stats().requests;
        if now > 0 && now == last {
            break;
        }
        last = now;
    }
    run.signal("INT");
    run.wait_for_line("interrupted:");
    run.signal("TERM");
    run.wait_for_line("interrupted again");
    run.signal("INT");
    let (code, stderr) = run.finish();
    assert_eq!(code, 130, "{stderr}");
    assert!(stderr.contains("interrupted a third time"), "{stderr}");
}
