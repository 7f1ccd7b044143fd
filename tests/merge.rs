//! Black-box tests of `batchgen merge`: results files joined into one record per id, an ok
//! record beating an error, the latest of equals winning, and the input's missing ids named.

mod common;

use std::path::Path;

use common::*;

/// Runs `batchgen merge`; returns (exit code, stderr).
fn merge(args: &[&str]) -> (i32, String) {
    let out = batchgen()
        .arg("merge")
        .args(args)
        .output()
        .expect("run batchgen merge");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ok(id: &str, at: &str, content: &str) -> String {
    format!(
        r#"{{"id":"{id}","status":"ok","request_hash":"00000000000000aa","content":"{content}","attempts":1,"finished_at":"{at}"}}"#
    )
}

fn failed(id: &str, at: &str) -> String {
    format!(
        r#"{{"id":"{id}","status":"error","request_hash":"00000000000000aa","error":{{"kind":"server","message":"boom"}},"attempts":7,"finished_at":"{at}"}}"#
    )
}

fn lines(records: &[String]) -> String {
    records.iter().map(|r| format!("{r}\n")).collect()
}

fn ids_and_status(path: &Path) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = records(path)
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap_or("").to_string(),
                r["status"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn shards_of_one_input_merge_into_every_id_once() {
    let ep = Endpoint::start(batchgen::mock::MockConfig::default());
    let dir = tempfile::tempdir().expect("tmp");
    let all = prompts_jsonl(40);
    let rows: Vec<&str> = all.lines().collect();
    let half = |k: usize| -> String {
        rows.iter()
            .enumerate()
            .filter(|(i, _)| i % 2 == k)
            .map(|(_, l)| format!("{l}\n"))
            .collect()
    };
    let input = write(dir.path(), "rows.jsonl", &all);
    let a = write(dir.path(), "a.jsonl", &half(0));
    let b = write(dir.path(), "b.jsonl", &half(1));
    let (ra, rb) = (
        dir.path().join("a.out.jsonl"),
        dir.path().join("b.out.jsonl"),
    );
    assert_eq!(run_io(&a, &ra, &ep.url(), &[]).0, 0);
    assert_eq!(run_io(&b, &rb, &ep.url(), &[]).0, 0);
    let merged = dir.path().join("merged.jsonl");

    let (code, stderr) = merge(&[
        path(&ra),
        path(&rb),
        "-o",
        path(&merged),
        "--input",
        path(&input),
    ]);
    assert_eq!(code, 0, "{stderr}");
    let got = ids_and_status(&merged);
    assert_eq!(got.len(), 40);
    assert!(got.iter().all(|(_, s)| s == "ok"));
    let mut ids: Vec<&str> = got.iter().map(|(i, _)| i.as_str()).collect();
    ids.dedup();
    assert_eq!(ids.len(), 40, "one record per id");

    // Export takes the shards' files as they are, and joins them as the merged file.
    let (code, from_shards, stderr) = export(&[
        path(&ra),
        path(&rb),
        "--input",
        path(&input),
        "--format",
        "csv",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let (code, from_merged, stderr) =
        export(&[path(&merged), "--input", path(&input), "--format", "csv"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(from_shards, from_merged);
    assert_eq!(from_shards.lines().count(), 41);

    // One shard alone leaves half the input without a record: exit 1, naming them.
    let (code, stderr) = merge(&[path(&ra), "-o", path(&merged), "--input", path(&input)]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("20 rows of the input have no record"),
        "{stderr}"
    );
    assert!(stderr.contains("no record for id"), "{stderr}");
}

#[test]
fn an_ok_record_beats_an_error_and_the_latest_of_equals_wins() {
    let dir = tempfile::tempdir().expect("tmp");
    let one = write(
        dir.path(),
        "one.jsonl",
        &lines(&[
            ok("a", "2026-12-01T10:00:00.000Z", "old"),
            failed("b", "2026-12-01T10:00:00.000Z"),
            ok("c", "2026-12-01T12:00:00.000Z", "newer"),
        ]),
    );
    let two = write(
        dir.path(),
        "two.jsonl",
        &lines(&[
            ok("a", "2026-12-01T11:00:00.000Z", "new"),
            ok("b", "2026-11-30T10:00:00.000Z", "answered"),
            failed("a", "2026-12-02T10:00:00.000Z"),
            ok("c", "2026-12-01T11:00:00.000Z", "older"),
        ]),
    );
    let merged = dir.path().join("merged.jsonl");
    let (code, stderr) = merge(&[path(&one), path(&two), "-o", path(&merged)]);
    assert_eq!(code, 0, "{stderr}");
    let recs = records(&merged);
    assert_eq!(recs.len(), 3);
    let by = by_id(&recs);
    assert_eq!(
        by["a"]["content"], "new",
        "the latest ok, not the later error"
    );
    assert_eq!(by["b"]["content"], "answered", "an ok beats a later error");
    assert_eq!(
        by["c"]["content"], "newer",
        "the latest finished_at, whatever the file order"
    );
}

#[test]
fn the_output_may_be_one_of_the_inputs_and_odd_lines_are_named() {
    let dir = tempfile::tempdir().expect("tmp");
    let one = write(
        dir.path(),
        "one.jsonl",
        &format!(
            "{}not a record\n",
            lines(&[ok("a", "2026-12-01T10:00:00.000Z", "x")])
        ),
    );
    let two = write(
        dir.path(),
        "two.jsonl",
        &format!(
            "{}{{\"id\":\"c\",\"sta",
            lines(&[ok("b", "2026-12-01T10:00:00.000Z", "y")])
        ),
    );
    let (code, stderr) = merge(&[path(&one), path(&two), "-o", path(&one)]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("one.jsonl:2: not a record"), "{stderr}");
    assert!(stderr.contains("two.jsonl:2: a torn last line"), "{stderr}");
    assert_eq!(
        ids_and_status(&one),
        [("a".into(), "ok".into()), ("b".into(), "ok".into())]
    );
    // The other input is left as it was.
    assert!(
        std::fs::read_to_string(&two)
            .expect("two")
            .ends_with("\"sta")
    );
}

#[test]
fn bad_usage_exits_2() {
    let dir = tempfile::tempdir().expect("tmp");
    let missing = dir.path().join("nope.jsonl");
    let out = dir.path().join("m.jsonl");
    let (code, stderr) = merge(&[path(&missing), "-o", path(&out)]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("nope.jsonl"), "{stderr}");
    assert!(!out.exists());
    let (code, _) = merge(&["-o", path(&out)]);
    assert_eq!(code, 2);
}
