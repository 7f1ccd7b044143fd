//! Black-box tests of cron-grade operation: job files, the shipped jobs, plain progress lines,
//! `--deadline`, a proxy from the environment, completions and `--version`.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use batchgen::mock::MockConfig;
use common::*;

fn repo(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// The long flags of `batchgen run --help`, in snake_case.
fn run_flags() -> BTreeSet<String> {
    let out = batchgen().args(["run", "--help"]).output().expect("help");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.split_whitespace()
        .filter_map(|w| w.strip_prefix("--"))
        .map(|w| {
            w.trim_end_matches(|c: char| !c.is_ascii_alphanumeric())
                .replace('-', "_")
        })
        .filter(|w| !w.is_empty() && !["help", "job", "version"].contains(&w.as_str()))
        .collect()
}

#[test]
fn every_flag_is_a_job_key_documented_in_the_reference_job_and_the_readme() {
    let reference = std::fs::read_to_string(repo("jobs/reference.toml")).expect("reference");
    let readme = std::fs::read_to_string(repo("README.md")).expect("readme");
    let keys: BTreeSet<String> = reference
        .lines()
        .map(|l| l.trim_start_matches('#').trim_start())
        .filter_map(|l| l.split_once(" = ").map(|(k, _)| k.trim().to_string()))
        .filter(|k| k.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
        .collect();
    for flag in run_flags() {
        assert!(keys.contains(&flag), "jobs/reference.toml lacks `{flag}`");
        assert!(
            readme.contains(&format!("`{flag}`")),
            "README lacks the job key `{flag}`"
        );
    }
}

#[test]
fn every_shipped_job_runs_on_the_simulated_endpoint_without_a_key() {
    let dir = tempfile::tempdir().expect("tmp");
    for entry in std::fs::read_dir(repo("jobs")).expect("jobs") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let out = dir.path().join("out.jsonl");
        let o = batchgen()
            .env_remove("DASHSCOPE_API_KEY")
            .args(["run", "--job"])
            .arg(&path)
            .args(["--base-url", "mock", "--fresh", "-o"])
            .arg(&out)
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(0), "{}: {stderr}", path.display());
        assert!(!records(&out).is_empty());
    }
    // The demo job needs no flag at all: it names the simulated endpoint itself.
    let demo = std::fs::read_to_string(repo("jobs/demo.toml")).expect("demo");
    assert!(demo.contains("base_url = \"mock\""));
}

#[test]
fn a_job_with_relative_paths_runs_from_elsewhere_and_flags_override_it() {
    let ep = Endpoint::start(MockConfig::default());
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::create_dir_all(dir.path().join("jobs")).expect("mkdir");
    std::fs::create_dir_all(dir.path().join("data")).expect("mkdir");
    write(&dir.path().join("data"), "rows.jsonl", &prompts_jsonl(30));
    let job = write(
        &dir.path().join("jobs"),
        "nightly.toml",
        "input = \"../data/rows.jsonl\"\noutput = \"../out/${RUN_LABEL}.jsonl\"\n\
         base_url = \"https://unreachable.invalid/v1\"\nmodel = \"qwen-flash\"\n\
         [params]\npresence_penalty = 0.1\n",
    );
    let elsewhere = tempfile::tempdir().expect("cwd");
    let o = batchgen()
        .current_dir(elsewhere.path())
        .env("RUN_LABEL", "night-1")
        .args(["run", "--job"])
        .arg(&job)
        .args(["--base-url", &ep.url()])
        .output()
        .expect("run");
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let recs = records(&dir.path().join("out/night-1.jsonl"));
    assert_eq!(recs.len(), 30);
    assert!(recs.iter().all(|r| r["model"] == "qwen-flash"));

    let bad = write(
        &dir.path().join("jobs"),
        "bad.toml",
        "input = \"x.jsonl\"\nconcurency = 4\n",
    );
    let (code, stderr) = run(&["--job", bad.to_str().expect("path")]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("bad.toml") && stderr.contains("concurency"),
        "{stderr}"
    );
    let secret = write(
        &dir.path().join("jobs"),
        "secret.toml",
        "input = \"x.jsonl\"\nsystem = \"${DASHSCOPE_API_KEY}\"\n",
    );
    let (code, stderr) = run(&["--job", secret.to_str().expect("path")]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("not expanded"), "{stderr}");
    let unset = write(
        &dir.path().join("jobs"),
        "unset.toml",
        "input = \"${NO_SUCH_VARIABLE_HERE}.jsonl\"\n",
    );
    let (code, stderr) = run(&["--job", unset.to_str().expect("path")]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("NO_SUCH_VARIABLE_HERE"), "{stderr}");
}

#[test]
fn without_a_terminal_progress_is_plain_lines() {
    let ep = Endpoint::start(MockConfig {
        latency: Duration::from_millis(100),
        ..MockConfig::default()
    });
    let dir = tempfile::tempdir().expect("tmp");
    // 480 rows, 8 at a time, 100 ms each: about 6 seconds.
    let input = write(dir.path(), "rows.jsonl", &prompts_jsonl(480));
    let (code, stderr) = run(&[
        input.to_str().expect("path"),
        "--base-url",
        &ep.url(),
        "-c",
        "8",
        "--progress-interval",
        "1s",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let lines = stderr
        .lines()
        .filter(|l| l.starts_with("progress: "))
        .count();
    assert!(lines >= 5, "{lines} progress lines:\n{stderr}");
    assert!(!stderr.contains('\r'));
    assert!(stderr.contains("eta"));
}

#[test]
fn a_deadline_stops_and_a_rerun_completes_every_row_once() {
    let ep = Endpoint::start(MockConfig {
        latency: Duration::from_millis(50),
        ..MockConfig::default()
    });
    let dir = tempfile::tempdir().expect("tmp");
    let input = write(dir.path(), "rows.jsonl", &prompts_jsonl(600));
    let out = dir.path().join("out.jsonl");
    let args = |extra: &[&str]| {
        let mut a = vec![
            input.to_str().expect("path").to_string(),
            "-o".into(),
            out.to_str().expect("path").into(),
            "--base-url".into(),
            ep.url(),
            "-c".into(),
            "8".into(),
        ];
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let started = std::time::Instant::now();
    let a = args(&["--deadline", "2s"]);
    let (code, stderr) = run(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains("--deadline"), "{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let first = records(&out).len();
    assert!(first > 0 && first < 600, "{first} records");
    let a = args(&[]);
    let (code, stderr) = run(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(by_id(&records(&out)).len(), 600);
    assert_eq!(ep.stats().ok, 600, "every row answered exactly once");
}

#[test]
fn completions_and_version() {
    for shell in ["bash", "zsh", "fish"] {
        let o = batchgen()
            .args(["completions", shell])
            .output()
            .expect("run");
        assert_eq!(o.status.code(), Some(0));
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(
            text.contains("batchgen") && text.contains("max-cost"),
            "{shell}"
        );
    }
    let o = batchgen().arg("--version").output().expect("run");
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.starts_with("batchgen ") && text.contains(env!("CARGO_PKG_VERSION")));
}

#[test]
fn a_proxy_named_by_the_environment_carries_every_request() {
    let ep = Endpoint::start(MockConfig::default());
    let proxy = ep.url().trim_end_matches("/v1").to_string();
    let dir = tempfile::tempdir().expect("tmp");
    let input = write(dir.path(), "rows.jsonl", &prompts_jsonl(30));
    let out = dir.path().join("out.jsonl");
    // The endpoint's name cannot resolve: only the proxy (the mock, which answers requests
    // in absolute form) can carry the requests.
    let output = batchgen()
        .env("HTTP_PROXY", &proxy)
        .args(["run", input.to_str().expect("path"), "-o"])
        .arg(&out)
        .args([
            "--base-url",
            "http://api.example.invalid/v1",
            "--retry-delay",
            "5ms",
        ])
        .output()
        .expect("run batchgen");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains(SECRET));
    assert!(stderr.contains("through the proxy"), "{stderr}");
    assert!(
        !stderr.contains(&proxy),
        "the proxy's address is not printed: {stderr}"
    );
    let recs = records(&out);
    assert_eq!(recs.len(), 30);
    assert!(recs.iter().all(|r| r["status"] == "ok"), "{recs:?}");
    assert_eq!(ep.stats().requests, 30);
}
