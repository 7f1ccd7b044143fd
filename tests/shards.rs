//! `--shard K/N` against the loopback mock: the shards split the input by id, each validates
//! all of it, and a reordered input resumes in the same shards.

mod common;

use std::collections::HashSet;

use batchgen::mock::MockConfig;
use common::*;

/// The ids of a results file, as a set (each once).
fn ids(path: &std::path::Path) -> HashSet<String> {
    by_id(&records(path)).into_keys().collect()
}

#[test]
fn the_shards_together_send_every_id_exactly_once() {
    let ep = Endpoint::start(MockConfig::default());
    let dir = tempfile::tempdir().expect("tmp");
    let input = write(dir.path(), "rows.jsonl", &prompts_jsonl(120));
    let mut seen: Vec<String> = Vec::new();
    let mut others = 0;
    for k in 0..4 {
        let json = dir.path().join(format!("s{k}.json"));
        let shard = format!("{k}/4");
        let (code, stderr) = run(&[
            path(&input),
            "--base-url",
            &ep.url(),
            "--shard",
            &shard,
            "--summary-json",
            path(&json),
        ]);
        assert_eq!(code, 0, "{stderr}");
        let out = dir
            .path()
            .join(format!("rows.shard-{k}-of-4.results.jsonl"));
        let got = ids(&out);
        let summary: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&json).expect("summary")).expect("json");
        assert_eq!(summary["rows_total"], got.len() as u64, "{summary}");
        assert_eq!(summary["rows_ok"], got.len() as u64);
        assert_eq!(summary["rows_skipped"], 0);
        assert_eq!(summary["shard"], shard.as_str());
        assert_eq!(summary["rows_other_shards"], 120 - got.len() as u64);
        assert!(
            stderr.contains("more rows of the input belong to other shards"),
            "{stderr}"
        );
        others += summary["rows_other_shards"].as_u64().unwrap_or_default();
        seen.extend(got);
    }
    assert_eq!(
        others,
        3 * 120,
        "each row is another shard's three times over"
    );
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(seen.len(), 120, "every id once over the shards");
    assert_eq!(unique.len(), 120);
    assert_eq!(ep.stats().requests, 120, "nothing sent twice");
}

#[test]
fn a_shuffled_input_finds_its_shard_done() {
    let ep = Endpoint::start(MockConfig::default());
    let dir = tempfile::tempdir().expect("tmp");
    let text = prompts_jsonl(80);
    let input = write(dir.path(), "rows.jsonl", &text);
    let out = dir.path().join("shard1.jsonl");
    let (code, stderr) = run_io(&input, &out, &ep.url(), &["--shard", "1/3"]);
    assert_eq!(code, 0, "{stderr}");
    let mine = ids(&out);
    assert!(!mine.is_empty() && mine.len() < 80, "{}", mine.len());
    let sent = ep.stats().requests;
    // The same rows in another order: a fixed shuffle, reversed and interleaved.
    let mut lines: Vec<&str> = text.lines().collect();
    lines.reverse();
    let (a, b) = lines.split_at(lines.len() / 2);
    let mixed: String = b
        .iter()
        .zip(a.iter())
        .flat_map(|(x, y)| [*x, *y])
        .map(|l| format!("{l}\n"))
        .collect();
    assert_ne!(mixed, text);
    let shuffled = write(dir.path(), "shuffled.jsonl", &mixed);
    let json = dir.path().join("s.json");
    let (code, stderr) = run_io(
        &shuffled,
        &out,
        &ep.url(),
        &["--shard", "1/3", "--summary-json", path(&json)],
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(ep.stats().requests, sent, "nothing sent again: {stderr}");
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).expect("summary")).expect("json");
    assert_eq!(summary["rows_skipped"], mine.len() as u64, "{summary}");
    assert_eq!(summary["rows_total"], mine.len() as u64);
    assert_eq!(ids(&out), mine);
}

#[test]
fn every_shard_validates_the_whole_input() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut text = prompts_jsonl(40);
    text.push_str("{\"id\":\"r7\",\"prompt\":\"again\"}\n");
    let input = write(dir.path(), "rows.jsonl", &text);
    for k in 0..3 {
        let shard = format!("{k}/3");
        let (code, stderr) = run(&[path(&input), "--base-url", "mock", "--shard", &shard]);
        assert_eq!(code, 2, "{stderr}");
        assert!(stderr.contains("duplicate id `r7`"), "{stderr}");
    }
}

#[test]
fn bad_shards_exit_2_and_the_environment_gives_one() {
    let dir = tempfile::tempdir().expect("tmp");
    let input = write(dir.path(), "rows.jsonl", &prompts_jsonl(10));
    for bad in ["4/4", "1/0", "x", "-1/2", "1/2/3"] {
        let flag = format!("--shard={bad}");
        let (code, stderr) = run(&[path(&input), "--base-url", "mock", &flag]);
        assert_eq!(code, 2, "{bad}: {stderr}");
        assert!(stderr.contains("--shard"), "{stderr}");
    }
    let out = batchgen()
        .args(["run", path(&input), "--base-url", "mock", "-q"])
        .env("BATCHGEN_SHARD", "0/2")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0));
    let shard0 = ids(&dir.path().join("rows.shard-0-of-2.results.jsonl"));
    let out = batchgen()
        .args(["run", path(&input), "--base-url", "mock", "-q"])
        .env("BATCHGEN_SHARD", "1/2")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0));
    let shard1 = ids(&dir.path().join("rows.shard-1-of-2.results.jsonl"));
    assert!(shard0.is_disjoint(&shard1));
    assert_eq!(shard0.len() + shard1.len(), 10);
    let out = batchgen()
        .args(["run", path(&input), "--base-url", "mock"])
        .env("BATCHGEN_SHARD", "2/2")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("BATCHGEN_SHARD"));
}

#[test]
fn with_skip_invalid_each_invalid_row_is_recorded_by_one_shard() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut text = prompts_jsonl(30);
    text.push_str("{\"id\":\"r7\",\"prompt\":\"again\"}\n{\"id\":\"x1\"}\nnot json\n");
    let input = write(dir.path(), "rows.jsonl", &text);
    let mut all = Vec::new();
    let mut total = 0;
    for k in 0..3 {
        let shard = format!("{k}/3");
        let json = dir.path().join(format!("s{k}.json"));
        let (code, stderr) = run(&[
            path(&input),
            "--base-url",
            "mock",
            "--shard",
            &shard,
            "--skip-invalid",
            "--summary-json",
            path(&json),
        ]);
        assert!(code == 0 || code == 1, "{stderr}");
        let summary: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&json).expect("summary")).expect("json");
        total += summary["rows_total"].as_u64().unwrap_or_default();
        let out = dir
            .path()
            .join(format!("rows.shard-{k}-of-3.results.jsonl"));
        if out.exists() {
            all.extend(ids(&out));
        }
    }
    assert_eq!(total, 33, "each row in one shard's total");
    let unique: HashSet<&String> = all.iter().collect();
    assert_eq!(all.len(), 33, "{all:?}");
    assert_eq!(unique.len(), 33);
}

#[test]
fn a_shard_killed_mid_run_is_rerun_alone_and_the_merge_has_every_id_once() {
    let ep = Endpoint::start(MockConfig {
        latency: std::time::Duration::from_millis(20),
        ..MockConfig::default()
    });
    let dir = tempfile::tempdir().expect("tmp");
    let input = write(dir.path(), "rows.jsonl", &prompts_jsonl(400));
    let shard_out = |k: usize| {
        dir.path()
            .join(format!("rows.shard-{k}-of-4.results.jsonl"))
    };
    for k in [0, 1, 3] {
        let (code, stderr) = run(&[
            path(&input),
            "--base-url",
            &ep.url(),
            "--shard",
            &format!("{k}/4"),
        ]);
        assert_eq!(code, 0, "{stderr}");
    }
    let sent_by_others = ep.stats().ok;

    // Shard 2 is killed (SIGKILL) once some of its records are written.
    let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin!("batchgen"));
    for var in PROXY_VARS {
        cmd.env_remove(var);
    }
    let mut child = cmd
        .env("DASHSCOPE_API_KEY", SECRET)
        .env_remove("BATCHGEN_BASE_URL")
        .args([
            "run",
            path(&input),
            "--base-url",
            &ep.url(),
            "--shard",
            "2/4",
            "-c",
            "4",
        ])
        .args(["--no-progress", "-q"])
        .spawn()
        .expect("spawn batchgen");
    let started = std::time::Instant::now();
    while std::fs::read_to_string(shard_out(2)).map_or(0, |t| t.lines().count()) < 10 {
        assert!(started.elapsed().as_secs() < 60, "shard 2 wrote no records");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    child.kill().expect("kill -9");
    let _ = child.wait();
    let partial = ids(&shard_out(2)).len();
    assert!(partial < 100, "killed mid-run: {partial} records");

    // Only that index is run again: it resumes, and sends no row of another shard.
    let before = ep.stats().ok;
    let (code, stderr) = run(&[path(&input), "--base-url", &ep.url(), "--shard", "2/4"]);
    assert_eq!(code, 0, "{stderr}");
    let shard2 = ids(&shard_out(2));
    let resent = ep.stats().ok - before;
    assert!(
        resent <= (shard2.len() - partial) as u64 + 4,
        "the rerun sent {resent} rows for {} missing ones",
        shard2.len() - partial
    );
    // Over the whole job, at most the 4 rows in flight at the kill were sent twice.
    assert!(ep.stats().ok <= 400 + 4, "{:?}", ep.stats());
    assert!(sent_by_others < 400);

    let merged = dir.path().join("rows.results.jsonl");
    let out = batchgen()
        .arg("merge")
        .args((0..4).map(|k| shard_out(k).into_os_string()))
        .args(["-o", path(&merged), "--input", path(&input)])
        .output()
        .expect("merge");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let recs = records(&merged);
    assert_eq!(recs.len(), 400, "one record per id");
    assert_eq!(ids(&merged).len(), 400);
    assert!(recs.iter().all(|r| r["status"] == "ok"));
}
