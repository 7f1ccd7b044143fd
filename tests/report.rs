//! Black-box tests of the run report: `batchgen report` over two shard files and over a file
//! with a resume gap, old records without `finished_at`, `run --report` at the end of a run,
//! and the page rendered by a real headless Chromium (charts there, no console error, nothing
//! to fetch).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// Runs `batchgen report`; returns (exit code, stderr).
fn report(args: &[&str]) -> (i32, String) {
    let out = batchgen()
        .arg("report")
        .args(args)
        .output()
        .expect("run batchgen report");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ok(id: &str, at: &str, model: &str, latency: u64) -> String {
    format!(
        r#"{{"id":"{id}","status":"ok","request_hash":"00000000000000aa","content":"x","finish_reason":"stop","model":"{model}","usage":{{"input_tokens":10,"output_tokens":30,"reasoning_tokens":0,"cached_tokens":0,"total_tokens":40}},"cost":0.001,"attempts":1,"latency_ms":{latency},"finished_at":"{at}"}}"#
    )
}

fn failed(id: &str, at: &str, kind: &str, code: &str) -> String {
    format!(
        r#"{{"id":"{id}","status":"error","request_hash":"00000000000000aa","error":{{"kind":"{kind}","http_status":500,"code":"{code}","message":"see https://example.com/status"}},"attempts":3,"finished_at":"{at}"}}"#
    )
}

fn lines(records: &[String]) -> String {
    records.iter().map(|r| format!("{r}\n")).collect()
}

/// `2026-03-01T10:MM:SS.mmmZ` from a number of ms after 10:00.
fn at(ms: u64) -> String {
    let (m, s, milli) = (ms / 60_000, ms / 1000 % 60, ms % 1000);
    format!(
        "2026-03-01T{:02}:{:02}:{s:02}.{milli:03}Z",
        10 + m / 60,
        m % 60
    )
}

fn page(path: &Path) -> String {
    std::fs::read_to_string(path).expect("the report page")
}

/// The `data-chart` names of the page's SVG charts.
fn charts(html: &str) -> Vec<String> {
    html.split("data-chart=\"")
        .skip(1)
        .filter_map(|s| s.split('"').next())
        .map(str::to_string)
        .collect()
}

#[test]
fn two_shard_files_make_one_report_with_a_row_per_file() {
    let dir = tempfile::tempdir().expect("tmp");
    let a: Vec<String> = (0..30)
        .map(|i| ok(&format!("a{i}"), &at(i * 200), "qwen-plus", 400 + i * 10))
        .chain([failed("a99", &at(5_000), "server", "InternalError")])
        .collect();
    let b: Vec<String> = (0..20)
        .map(|i| ok(&format!("b{i}"), &at(i * 300), "qwen-flash", 900))
        .chain([failed("b99", &at(4_000), "rate_limit", "Throttling")])
        .collect();
    let sa = write(dir.path(), "job.shard-0-of-2.results.jsonl", &lines(&a));
    let sb = write(dir.path(), "job.shard-1-of-2.results.jsonl", &lines(&b));
    let (code, stderr) = report(&[path(&sa), path(&sb)]);
    assert_eq!(code, 0, "{stderr}");
    // Default name: beside the first file.
    let out = dir.path().join("job.shard-0-of-2.report.html");
    assert!(
        stderr.contains("report of 52 records from 2 files"),
        "{stderr}"
    );
    let html = page(&out);
    assert!(html.contains(r#"<b class="ok">50 ok</b>"#), "headline");
    assert!(html.contains(r#"<b class="bad">2 failed</b>"#), "headline");
    assert!(html.contains("By file (shard)"));
    assert!(html.contains("job.shard-0-of-2.results.jsonl"));
    assert!(html.contains("job.shard-1-of-2.results.jsonl"));
    for model in [
        "qwen-plus",
        "qwen-flash",
        "InternalError",
        "Throttling",
        "a99",
        "b99",
    ] {
        assert!(html.contains(model), "{model}");
    }
    let drawn = charts(&html);
    for chart in [
        "outcomes",
        "attempts",
        "rows-per-s",
        "tokens-per-s",
        "errors-over-time",
        "latency",
    ] {
        assert!(drawn.iter().any(|c| c == chart), "{chart} in {drawn:?}");
    }
    // The messages' address is text, broken so that nothing can be fetched.
    assert!(!html.contains("http://") && !html.contains("https://"));
}

#[test]
fn a_resume_gap_splits_the_timeline_and_is_marked() {
    let dir = tempfile::tempdir().expect("tmp");
    // Ten seconds of records, an hour and a half of nothing, ten seconds more.
    let recs: Vec<String> = (0..20)
        .map(|i| ok(&format!("r{i}"), &at(i * 500), "qwen-plus", 300))
        .chain((20..40).map(|i| ok(&format!("r{i}"), &at(5_400_000 + i * 500), "qwen-plus", 300)))
        .collect();
    let results = write(dir.path(), "gap.results.jsonl", &lines(&recs));
    let out = dir.path().join("custom.html");
    let (code, stderr) = report(&[path(&results), "-o", path(&out)]);
    assert_eq!(code, 0, "{stderr}");
    let html = page(&out);
    assert!(html.contains("2 sessions"), "the note names the sessions");
    assert!(html.contains(r#"<g class="gap">"#), "the gap is drawn");
    assert!(html.contains("1 h 30 m"), "the gap says how long it was");
    assert!(
        html.contains("wall 19.2 s in 2 sessions"),
        "the wall counts the sessions only"
    );
    assert!(!html.contains("By file"), "one file: no per-file table");
}

#[test]
fn old_records_without_finished_at_say_which_charts_are_missing() {
    let dir = tempfile::tempdir().expect("tmp");
    let old = "{\"id\":\"r1\",\"status\":\"ok\",\"request_hash\":\"00000000000000aa\",\"content\":\"x\",\"attempts\":1,\"latency_ms\":5}\n\
               {\"id\":\"r2\",\"status\":\"error\",\"request_hash\":\"00000000000000aa\",\"error\":{\"kind\":\"server\",\"message\":\"boom\"},\"attempts\":2}\n";
    let results = write(dir.path(), "old.jsonl", old);
    let (code, stderr) = report(&[path(&results)]);
    assert_eq!(code, 0, "{stderr}");
    let html = page(&dir.path().join("old.report.html"));
    assert!(html.contains("Could not draw throughput over time nor errors over time"));
    let drawn = charts(&html);
    assert!(!drawn.iter().any(|c| c == "rows-per-s"), "{drawn:?}");
    assert!(drawn.iter().any(|c| c == "latency"), "{drawn:?}");
}

#[test]
fn a_missing_results_file_is_a_usage_error() {
    let dir = tempfile::tempdir().expect("tmp");
    let (code, stderr) = report(&[path(&dir.path().join("nope.results.jsonl"))]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("cannot read"), "{stderr}");
}

/// Runs the input against `url` with `--report`; returns the report's path.
fn run_with_report(dir: &Path, url: &str, extra: &[&str]) -> (i32, String, PathBuf) {
    let input = dir.join("in.jsonl");
    if !input.exists() {
        write(dir, "in.jsonl", &prompts_jsonl(30));
    }
    let out = dir.join("in.results.jsonl");
    let html = dir.join("run.html");
    let summary = dir.join("summary.json");
    let mut args = vec![
        "--report",
        path(&html),
        "--summary-json",
        path(&summary),
        "--no-progress",
    ];
    args.extend_from_slice(extra);
    let (code, stderr) = run_io(&input, &out, url, &args);
    (code, stderr, html)
}

#[test]
fn run_writes_its_report_at_the_end_also_after_an_early_stop() {
    let ep = Endpoint::start(batchgen::mock::MockConfig::default());
    let dir = tempfile::tempdir().expect("tmp");
    let (code, stderr, html) = run_with_report(dir.path(), &ep.url(), &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("report written to"), "{stderr}");
    let text = page(&html);
    assert!(text.contains(r#"<b class="ok">30 ok</b>"#));
    assert!(
        text.contains("The run&#39;s summary"),
        "the run's own summary is shown"
    );
    for r in records(&dir.path().join("in.results.jsonl")) {
        let stamp = r["finished_at"].as_str().expect("finished_at");
        assert!(stamp.ends_with('Z') && stamp.len() == 24, "{stamp}");
    }
    drop(ep);
    // Every answer a 500: the run stops early at --max-failures (exit 3), and the report of
    // what it did is still written.
    let gone = Endpoint::faults("500=1", 0);
    std::fs::remove_file(dir.path().join("in.results.jsonl")).expect("rm");
    std::fs::remove_file(&html).expect("rm");
    let (code, stderr, html) = run_with_report(
        dir.path(),
        &gone.url(),
        &["--max-retries", "0", "--max-failures", "5", "-c", "1"],
    );
    assert_eq!(code, 3, "{stderr}");
    let text = page(&html);
    assert!(text.contains(r#"<b class="bad">"#), "{stderr}");
    assert!(text.contains("server"));
}

// ---- In a real browser ----

/// Debian's `chromium`, or a clear failure: this test never passes without a browser.
fn chromium() -> String {
    for bin in ["chromium", "chromium-browser", "google-chrome"] {
        let found = Command::new(bin)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if found {
            return bin.to_string();
        }
    }
    panic!(
        "no headless browser: the report's rendering test needs Debian's `chromium` \
         (`apt-get install -y chromium`; .ci/run installs it when it runs as root)"
    );
}

#[test]
fn the_page_renders_in_headless_chromium_with_its_charts_and_no_console_error() {
    let dir = tempfile::tempdir().expect("tmp");
    let recs: Vec<String> = (0..200)
        .map(|i| {
            ok(
                &format!("r{i}"),
                &at(i * 150),
                "qwen-plus",
                200 + (i * 37) % 900,
            )
        })
        .chain((0..12).map(|i| failed(&format!("e{i}"), &at(i * 2_000), "timeout", "-")))
        .chain((200..260).map(|i| ok(&format!("r{i}"), &at(7_200_000 + i * 100), "qwen-max", 1500)))
        .collect();
    let results = write(dir.path(), "web.results.jsonl", &lines(&recs));
    let out = dir.path().join("web.html");
    let (code, stderr) = report(&[path(&results), "-o", path(&out)]);
    assert_eq!(code, 0, "{stderr}");
    let html = page(&out);
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "the page names an address"
    );
    for tag in ["<script", "<link", "<img", "<iframe", "@import", "url("] {
        assert!(!html.contains(tag), "the page holds {tag}");
    }

    let browser = chromium();
    let profile = tempfile::tempdir().expect("profile");
    let url = format!("file://{}", out.canonicalize().expect("path").display());
    let run = Command::new(&browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--enable-logging=stderr",
            "--v=0",
            "--no-first-run",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(&url)
        .output()
        .expect("run chromium");
    let dom = String::from_utf8_lossy(&run.stdout);
    let log = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{browser} failed: {log}");
    let console: Vec<&str> = log.lines().filter(|l| l.contains(":CONSOLE")).collect();
    assert!(console.is_empty(), "console messages: {console:?}");
    // The charts are in the document as the browser built it, each with data in it.
    let svgs: Vec<&str> = dom.split("<svg").skip(1).collect();
    assert!(svgs.len() >= 6, "{} charts in the DOM", svgs.len());
    for svg in &svgs {
        let body = svg.split("</svg>").next().unwrap_or("");
        assert!(
            body.contains("class=\"d "),
            "a chart without data: {body:.200}"
        );
    }
    for chart in ["rows-per-s", "tokens-per-s", "latency", "errors-over-time"] {
        assert!(dom.contains(&format!("data-chart=\"{chart}\"")), "{chart}");
    }
    assert!(dom.contains("class=\"gap\""), "the resume gap is drawn");
    assert!(!dom.contains("http://") && !dom.contains("https://"));
}
