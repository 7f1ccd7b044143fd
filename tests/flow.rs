//! Black-box tests of flow control: client rate limits, learning an endpoint's limit from its
//! 429s, and stopping early when rows keep failing. Rates here are small and short; the
//! README's figures come from longer runs by hand.

mod common;

use batchgen::mock::{MockConfig, RateLimits};
use common::*;

fn limited(rps: f64) -> Endpoint {
    Endpoint::start(MockConfig {
        limits: RateLimits::new(None, Some(rps), None),
        ..MockConfig::default()
    })
}

#[test]
fn a_client_rpm_below_the_endpoint_limit_draws_almost_no_429s() {
    let ep = limited(50.0);
    let dir = tempfile::tempdir().expect("tmp");
    let input = write(dir.path(), "rows.jsonl", &prompts_jsonl(200));
    let out = dir.path().join("out.jsonl");
    let (code, stderr) = run_io(&input, &out, &ep.url(), &["--rpm", "2400", "-c", "64"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(records(&out).len(), 200);
    let s = ep.stats();
    assert!(
        s.rate_limited <= 4,
        "{} answers were 429 (at most 2%)",
        s.rate_limited
    );
}

#[test]
fn without_a_client_limit_the_pool_learns_the_endpoint_rate() {
    let ep = limited(20.0);
    let dir = tempfile::tempdir().expect("tmp");
    let input = write(dir.path(), "rows.jsonl", &prompts_jsonl(100));
    let out = dir.path().join("out.jsonl");
    let (code, stderr) = run_io(&input, &out, &ep.url(), &["-c", "64"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(records(&out).len(), 100);
    let s = ep.stats();
    assert!(s.requests <= 200, "{} requests for 100 rows", s.requests);
}

#[test]
fn max_failures_stops_a_run_whose_rows_all_fail() {
    let ep = Endpoint::start(MockConfig::default());
    let dir = tempfile::tempdir().expect("tmp");
    let rows: String = (1..=500)
        .map(|i| format!("{{\"id\":\"r{i}\",\"prompt\":\"p{i} [mock:400]\"}}\n"))
        .collect();
    let input = write(dir.path(), "bad.jsonl", &rows);
    for (limit, most) in [("10", 10 + 8), ("5%", 20 + 8)] {
        let out = dir.path().join(format!("out-{limit}.jsonl"));
        let before = ep.stats().requests;
        let (code, stderr) = run_io(
            &input,
            &out,
            &ep.url(),
            &["-c", "8", "--max-failures", limit],
        );
        assert_eq!(code, 3, "{stderr}");
        assert!(stderr.contains("--max-failures"), "{stderr}");
        let sent = ep.stats().requests - before;
        assert!(sent <= most, "--max-failures {limit}: {sent} requests");
        assert!(records(&out).len() as u64 <= sent);
    }
    let (code, stderr) = run(&[
        input.to_str().expect("path"),
        "--base-url",
        &ep.url(),
        "--max-failures",
        "lots",
    ]);
    assert_eq!(code, 2, "{stderr}");
}
