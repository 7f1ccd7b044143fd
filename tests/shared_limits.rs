//! `--limits-redis`: shards running at once share one `--rpm` through a real Redis
//! (`redis-server`, started by each test on a free loopback port and killed when it ends),
//! against a mock that admits a fixed number of requests in any sliding second.

mod common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use batchgen::mock::{MockConfig, RateLimits};
use common::*;

/// A `redis-server` of this test: no persistence, in a temporary directory, killed on drop.
struct Redis {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Redis {
    fn start() -> Redis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let dir = tempfile::tempdir().expect("tmp");
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is not installed: run .ci/deps (Debian's redis-server)");
        let redis = Redis {
            child,
            port,
            _dir: dir,
        };
        // Ready when it accepts connections: polled, within a bound.
        let until = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < until, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
        redis
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `batchgen run INPUT --shard K/N` with `extra` flags, its stderr to `log`.
fn spawn_shard(input: &Path, url: &str, k: u64, n: u64, extra: &[&str], log: &Path) -> Child {
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin!("batchgen"));
    cmd.env_remove("BATCHGEN_BASE_URL")
        .env_remove("BATCHGEN_REDIS_URL")
        .env("DASHSCOPE_API_KEY", SECRET);
    for var in PROXY_VARS {
        cmd.env_remove(var);
    }
    cmd.arg("run")
        .arg(input)
        .args(["--base-url", url, "--no-progress", "-c", "16"])
        .args(["--shard", &format!("{k}/{n}")])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("log"))
        .spawn()
        .expect("start batchgen")
}

/// The output of shard K of N for `input`.
fn shard_output(input: &Path, k: u64, n: u64) -> PathBuf {
    input.with_file_name(format!("rows.shard-{k}-of-{n}.results.jsonl"))
}

/// Waits for every shard (bounded), asserts each exited 0, and returns their stderr.
fn wait_all(children: Vec<Child>, logs: &[PathBuf]) -> Vec<String> {
    let until = Instant::now() + Duration::from_secs(120);
    let mut texts = Vec::new();
    for (mut child, log) in children.into_iter().zip(logs) {
        let status = loop {
            if let Some(s) = child.try_wait().expect("wait") {
                break s;
            }
            if Instant::now() > until {
                let _ = child.kill();
                panic!("a shard did not finish");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let text = std::fs::read_to_string(log).unwrap_or_default();
        assert_eq!(status.code(), Some(0), "{text}");
        texts.push(text);
    }
    texts
}

/// Every id of the input once over the shards' outputs.
fn assert_every_id_once(input: &Path, n: u64, rows: usize) {
    let mut all = Vec::new();
    for k in 0..n {
        all.extend(by_id(&records(&shard_output(input, k, n))).into_keys());
    }
    let unique: HashSet<&String> = all.iter().collect();
    assert_eq!(all.len(), rows, "every id once over the shards");
    assert_eq!(unique.len(), rows);
}

const SHARDS: u64 = 4;
const ROWS: usize = 240;
/// 40 a second for the four shards together; the endpoint admits 45 in any sliding second.
const RPM: &str = "2400";
const ADMITTED: f64 = 45.0;

fn sliding_endpoint() -> Endpoint {
    Endpoint::start(MockConfig {
        limits: RateLimits::new(None, Some(ADMITTED), None).sliding(),
        retry_after: Duration::from_millis(200),
        ..MockConfig::default()
    })
}

/// Runs the four shards at once; returns their stderr and the wall time.
fn run_shards(ep: &Endpoint, dir: &Path, extra: &[&str]) -> (PathBuf, Vec<String>, f64) {
    let input = write(dir, "rows.jsonl", &prompts_jsonl(ROWS));
    let logs: Vec<PathBuf> = (0..SHARDS)
        .map(|k| dir.join(format!("shard{k}.log")))
        .collect();
    let start = Instant::now();
    let children = (0..SHARDS)
        .map(|k| spawn_shard(&input, &ep.url(), k, SHARDS, extra, &logs[k as usize]))
        .collect();
    let texts = wait_all(children, &logs);
    (input, texts, start.elapsed().as_secs_f64())
}

#[test]
fn four_shards_share_one_rpm_through_redis() {
    let redis = Redis::start();
    let ep = sliding_endpoint();
    let dir = tempfile::tempdir().expect("tmp");
    let url = redis.url();
    let (input, _, wall) = run_shards(&ep, dir.path(), &["--rpm", RPM, "--limits-redis", &url]);
    let s = ep.stats();
    assert!(s.rate_limited <= 3, "{} answers were 429", s.rate_limited);
    assert_every_id_once(&input, SHARDS, ROWS);
    // Not faster than the one budget (40 a second, the first second holding one more).
    let least = (ROWS as f64 - 41.0) / 40.0 + 1.0;
    assert!(wall >= 0.9 * least, "{ROWS} rows in {wall:.1} s");
}

#[test]
fn four_shards_each_with_the_whole_rpm_draw_a_storm_of_429s() {
    let ep = sliding_endpoint();
    let dir = tempfile::tempdir().expect("tmp");
    let (input, _, _) = run_shards(&ep, dir.path(), &["--rpm", RPM]);
    let s = ep.stats();
    assert!(
        s.rate_limited > 20,
        "only {} answers were 429: the shared test could not fail",
        s.rate_limited
    );
    assert_every_id_once(&input, SHARDS, ROWS);
}

#[test]
fn redis_lost_mid_run_the_shards_go_on_at_a_share_each_and_say_so() {
    let redis = Redis::start();
    let ep = sliding_endpoint();
    let dir = tempfile::tempdir().expect("tmp");
    let input = write(dir.path(), "rows.jsonl", &prompts_jsonl(ROWS));
    let logs: Vec<PathBuf> = (0..SHARDS)
        .map(|k| dir.path().join(format!("shard{k}.log")))
        .collect();
    let url = redis.url();
    let extra = ["--rpm", RPM, "--limits-redis", url.as_str()];
    let children = (0..SHARDS)
        .map(|k| spawn_shard(&input, &ep.url(), k, SHARDS, &extra, &logs[k as usize]))
        .collect();
    // Redis goes once every shard has written some records.
    let until = Instant::now() + Duration::from_secs(60);
    while (0..SHARDS).any(|k| {
        std::fs::read_to_string(shard_output(&input, k, SHARDS)).map_or(0, |t| t.lines().count())
            < 5
    }) {
        assert!(Instant::now() < until, "the shards did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(redis);
    let texts = wait_all(children, &logs);
    for text in &texts {
        assert!(
            text.contains("does not answer: going on with local limits at 1/4 of the budget"),
            "{text}"
        );
        assert_eq!(
            text.matches("does not answer").count(),
            1,
            "said once: {text}"
        );
    }
    assert_every_id_once(&input, SHARDS, ROWS);
    // At 1/4 of the budget each, the four together stay near it.
    let s = ep.stats();
    assert!(s.rate_limited <= 20, "{} answers were 429", s.rate_limited);
}

#[test]
fn an_unreachable_redis_at_the_start_exits_2_naming_it() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let dir = tempfile::tempdir().expect("tmp");
    let input = write(dir.path(), "rows.jsonl", &prompts_jsonl(3));
    let url = format!("redis://127.0.0.1:{port}");
    let (code, stderr) = run(&[
        path(&input),
        "--base-url",
        "mock",
        "--rpm",
        "60",
        "--limits-redis",
        &url,
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains(&url), "{stderr}");
}
