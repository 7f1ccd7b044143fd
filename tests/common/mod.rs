//! Helpers shared by the black-box tests: a mock endpoint on its own runtime, the binary with
//! a marker key, and readers of the results file.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use batchgen::mock::{FaultRates, MockConfig, MockServer};
use serde_json::Value;

pub const SECRET: &str = "sk-test-7f3a9c1e5b2d4f60";

/// A mock endpoint served by its own runtime, alive as long as this value.
pub struct Endpoint {
    pub rt: tokio::runtime::Runtime,
    server: Option<MockServer>,
}

impl Endpoint {
    pub fn start(cfg: MockConfig) -> Endpoint {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let server = rt
            .block_on(MockServer::start(cfg, "127.0.0.1:0".parse().expect("addr")))
            .expect("mock server");
        Endpoint {
            rt,
            server: Some(server),
        }
    }

    pub fn faults(spec: &str, fault_attempts: u32) -> Endpoint {
        Endpoint::start(MockConfig {
            faults: FaultRates::parse(spec).expect("faults"),
            fault_attempts,
            retry_after: Duration::from_millis(20),
            ..MockConfig::default()
        })
    }

    pub fn url(&self) -> String {
        self.server
            .as_ref()
            .map(MockServer::base_url)
            .unwrap_or_default()
    }

    pub fn stats(&self) -> batchgen::mock::StatsSnapshot {
        self.server
            .as_ref()
            .map(MockServer::stats)
            .unwrap_or_default()
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            self.rt.block_on(s.shutdown());
        }
    }
}

pub fn batchgen() -> assert_cmd::Command {
    let mut cmd = assert_cmd::Command::new(assert_cmd::cargo::cargo_bin!("batchgen"));
    cmd.env_remove("BATCHGEN_BASE_URL")
        .env("DASHSCOPE_API_KEY", SECRET)
        .timeout(Duration::from_secs(120));
    // The loopback endpoint is reached directly, whatever proxy the machine sets.
    for var in PROXY_VARS {
        cmd.env_remove(var);
    }
    cmd
}

/// The variables that name a proxy (curl's, in both cases).
pub const PROXY_VARS: [&str; 8] = [
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "ALL_PROXY",
    "all_proxy",
    "NO_PROXY",
    "no_proxy",
];

/// Runs `batchgen run` with fast retries; returns (exit code, stderr).
pub fn run(args: &[&str]) -> (i32, String) {
    let out = batchgen()
        .arg("run")
        .args(["--retry-delay", "5ms", "--retry-max-delay", "50ms"])
        .args(args)
        .output()
        .expect("run batchgen");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !stderr.contains(SECRET) && !String::from_utf8_lossy(&out.stdout).contains(SECRET),
        "the key leaked into the output"
    );
    (out.status.code().unwrap_or(-1), stderr)
}

pub fn records(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).expect("results");
    assert!(!text.contains(SECRET), "the key leaked into the results");
    assert!(text.is_empty() || text.ends_with('\n'));
    text.lines()
        .map(|l| serde_json::from_str(l).expect("record is JSON"))
        .collect()
}

pub fn by_id(recs: &[Value]) -> HashMap<String, Value> {
    let mut map = HashMap::new();
    for r in recs {
        let id = r["id"].as_str().expect("id is a string").to_string();
        assert!(map.insert(id.clone(), r.clone()).is_none(), "id {id} twice");
    }
    map
}

pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write input");
    p
}

pub fn prompts_jsonl(n: usize) -> String {
    (1..=n)
        .map(|i| {
            format!(
                "{{\"id\":\"r{i}\",\"prompt\":\"Question number {i}: what is {i} squared?\"}}\n"
            )
        })
        .collect()
}

/// Runs INPUT to OUT against the endpoint at `url`, with `extra` flags; returns (exit code,
/// stderr).
pub fn run_io(input: &Path, out: &Path, url: &str, extra: &[&str]) -> (i32, String) {
    let mut all = vec![
        input.to_str().expect("path"),
        "-o",
        out.to_str().expect("path"),
        "--base-url",
        url,
    ];
    all.extend_from_slice(extra);
    run(&all)
}

/// A path as a command-line argument.
pub fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Runs `batchgen export`; returns (exit code, stdout, stderr).
pub fn export(args: &[&str]) -> (i32, String, String) {
    let out = batchgen()
        .arg("export")
        .args(args)
        .output()
        .expect("run batchgen export");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
