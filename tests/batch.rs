//! Black-box tests of `run --batch` against the mock's Batch API on loopback: the whole cycle,
//! expiry and resubmission of only the lines that did not run, the batch price, and reruns
//! after `kill -9` that create no second batch for the same rows.

mod common;

use std::time::Duration;

use batchgen::mock::MockConfig;
use common::*;

fn endpoint() -> Endpoint {
    Endpoint::start(MockConfig {
        batch_step: Duration::from_millis(100),
        ..MockConfig::default()
    })
}

const FAST: [&str; 4] = ["--batch", "--poll-interval", "0.05", "--quiet"];

#[test]
fn the_whole_cycle_writes_one_record_per_row_at_half_the_sync_cost() {
    let mock = endpoint();
    let dir = tempfile::tempdir().expect("tmp");
    let input = write(dir.path(), "in.jsonl", &prompts_jsonl(25));
    let out = dir.path().join("out.jsonl");
    let mut args = FAST.to_vec();
    args.extend(["--batch-max-rows", "10"]);
    let (code, stderr) = run_io(&input, &out, &mock.url(), &args);
    assert_eq!(code, 0, "{stderr}");
    let recs = by_id(&records(&out));
    assert_eq!(recs.len(), 25);
    assert!(recs.values().all(|r| r["status"] == "ok" && r["batch_id"].is_string()));
    let s = mock.stats();
    assert_eq!((s.batches_created, s.batch_lines_uploaded), (3, 25));

    // The same rows, synchronously: the same request hashes, twice the cost.
    let sync_out = dir.path().join("sync.jsonl");
    let (code, stderr) = run_io(&input, &sync_out, &mock.url(), &["--quiet"]);
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
    let (code, stderr) = run_io(&input, &out, &mock.url(), &FAST);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(mock.stats().batches_created, 3);
}

#[test]
fn expired_lines_alone_are_sent_again_in_the_same_run() {
    let mock = endpoint();
    let dir = tempfile::tempdir().expect("tmp");
    let mut text = prompts_jsonl(20);
    for i in [3, 9, 14, 17] {
        text = text.replace(
            &format!("number {i}:"),
            &format!("number {i}: [mock:batch-expire]"),
        );
    }
    let input = write(dir.path(), "in.jsonl", &text);
    let out = dir.path().join("out.jsonl");
    let mut args = FAST.to_vec();
    args.extend(["--max-retries", "1"]);
    let (code, stderr) = run_io(&input, &out, &mock.url(), &args);
    // The trigger travels with the lines, so they expire again and keep `expired` records.
    assert_eq!(code, 1, "{stderr}");
    let recs = by_id(&records(&out));
    assert_eq!(recs.len(), 20);
    let expired: Vec<&String> = recs
        .iter()
        .filter(|(_, r)| r["error"]["kind"] == "expired")
        .map(|(id, _)| id)
        .collect();
    assert_eq!(expired.len(), 4, "{recs:?}");
    let s = mock.stats();
    assert_eq!(s.batch_lines_uploaded, 20 + 4);
    assert_eq!(s.batches_created, 2);
}
