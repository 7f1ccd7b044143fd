//! Black-box tests of the promises the results file keeps at the edges: ids (duplicates between
//! valid and invalid rows, run and export resolving ids alike), an output that is the input,
//! the repair of a last line, and compaction (mode bits, symlinks, one reading of the records).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use batchgen::mock::MockConfig;
use common::*;
use serde_json::Value;

/// The lines of a file that are records, by id; other lines are left out.
fn readable_records(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .expect("results")
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

const VALID_THEN_INVALID: &str = "{\"id\":\"a\",\"prompt\":\"hello\"}\n\
                                  {\"id\":\"b\",\"prompt\":\"hi\"}\n\
                                  {\"id\":\"a\",\"text\":\"no prompt here\"}\n";

#[test]
fn a_duplicate_id_between_a_valid_and_an_invalid_row_exits_2_naming_both_lines() {
    let ep = Endpoint::start(MockConfig::default());
    let dir = tempfile::tempdir().expect("tmp");
    let out = dir.path().join("out.jsonl");
    let input = write(dir.path(), "in.jsonl", VALID_THEN_INVALID);
    let (code, stderr) = run_io(&input, &out, &ep.url(), &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("in.jsonl:3: duplicate id `a` (first on line 1)"),
        "{stderr}"
    );
    // The invalid row first: the valid one is then the duplicate.
    let input = write(
        dir.path(),
        "rev.jsonl",
        "{\"id\":\"a\",\"text\":\"no prompt here\"}\n{\"id\":\"a\",\"prompt\":\"hello\"}\n",
    );
    let (code, stderr) = run_io(&input, &out, &ep.url(), &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("rev.jsonl:2: duplicate id `a` (first on line 1)"),
        "{stderr}"
    );
    assert_eq!(ep.stats().requests, 0);
    assert!(!out.exists());
}

#[test]
fn skip_invalid_reruns_never_send_a_row_whose_id_an_invalid_row_shares() {
    let ep = Endpoint::start(MockConfig::default());
    let dir = tempfile::tempdir().expect("tmp");
    let out = dir.path().join("out.jsonl");
    let input = write(dir.path(), "in.jsonl", VALID_THEN_INVALID);
    for round in 0..3 {
        let (code, stderr) = run_io(&input, &out, &ep.url(), &["--skip-invalid"]);
        assert_eq!(code, 1, "round {round}: {stderr}");
        assert_eq!(
            ep.stats().requests,
            2,
            "round {round}: a row was paid again"
        );
        let recs = by_id(&records(&out));
        assert_eq!(recs.len(), 3, "round {round}: {recs:?}");
        assert_eq!(recs["a"]["status"], "ok", "round {round}");
        assert_eq!(recs["b"]["status"], "ok", "round {round}");
        assert_eq!(recs["a#line:3"]["error"]["kind"], "invalid_input");
    }
}

/// A first run (nothing to resume: validation keeps 8 bytes a row) and a run into an output
/// with records (validation keeps each row for the resume) find the same duplicates and rows
/// without an id, and send the same rows.
#[test]
fn a_first_run_and_a_resumed_run_find_the_same_bad_rows() {
    let ep = Endpoint::start(MockConfig::default());
    let dir = tempfile::tempdir().expect("tmp");
    let input = write(
        dir.path(),
        "in.jsonl",
        "{\"id\":\"a\",\"prompt\":\"one\"}\n\
         {\"prompt\":\"no id\"}\n\
         {\"id\":\"b\",\"prompt\":\"two\"}\n\
         {\"id\":\"a\",\"prompt\":\"three\"}\n\
         {\"id\":\"b\",\"text\":\"no prompt\"}\n\
         {\"id\":\"a\",\"prompt\":\"four\"}\n",
    );
    let first = dir.path().join("first.jsonl");
    let (code, first_err) = run_io(&input, &first, &ep.url(), &["--skip-invalid"]);
    assert_eq!(code, 1, "{first_err}");
    assert_eq!(ep.stats().requests, 2, "{first_err}");
    // The same input into an output holding a record of another id: a resume.
    let resumed = dir.path().join("resumed.jsonl");
    let other = write(
        dir.path(),
        "other.jsonl",
        "{\"id\":\"z\",\"prompt\":\"other\"}\n",
    );
    let (code, stderr) = run_io(&other, &resumed, &ep.url(), &[]);
    assert_eq!(code, 0, "{stderr}");
    let (code, resumed_err) = run_io(&input, &resumed, &ep.url(), &["--skip-invalid"]);
    assert_eq!(code, 1, "{resumed_err}");
    assert_eq!(ep.stats().requests, 5, "{resumed_err}");
    for line in [
        "in.jsonl:2: no `id` field, while other rows have one",
        "in.jsonl:4: duplicate id `a` (first on line 1)",
        "in.jsonl:5: duplicate id `b` (first on line 3)",
        "in.jsonl:6: duplicate id `a` (first on line 1)",
    ] {
        assert!(first_err.contains(line), "{line}: {first_err}");
        assert!(resumed_err.contains(line), "{line}: {resumed_err}");
    }
    let mut resumed = by_id(&records(&resumed));
    assert!(resumed.remove("z").is_some());
    let first = by_id(&records(&first));
    let status = |m: &std::collections::HashMap<String, Value>| {
        let mut v: Vec<(String, Value)> = m
            .iter()
            .map(|(id, r)| (id.clone(), r["status"].clone()))
            .collect();
        v.sort_by(|x, y| x.0.cmp(&y.0));
        v
    };
    assert_eq!(status(&first), status(&resumed));
    assert_eq!(first.len(), 6, "{first:?}");

    // A rerun of the first output: the two valid rows are done, and the later rows of their
    // ids, though looked up under the same ids, are counted as invalid, not as done.
    let summary = dir.path().join("summary.json");
    let first_out = dir.path().join("first.jsonl");
    let summary_arg = summary.to_string_lossy().into_owned();
    let (code, stderr) = run_io(
        &input,
        &first_out,
        &ep.url(),
        &["--skip-invalid", "--summary-json", &summary_arg],
    );
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(ep.stats().requests, 5, "{stderr}");
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(&summary).expect("summary")).expect("json");
    assert_eq!(summary["rows_skipped"], 2, "{summary}");
    assert_eq!(summary["rows_total"], 6, "{summary}");
}

#[test]
fn an_invalid_input_record_never_supersedes_an_ok_one() {
    let ep = Endpoint::start(MockConfig::default());
    let dir = tempfile::tempdir().expect("tmp");
    let out = dir.path().join("out.jsonl");
    let input = write(
        dir.path(),
        "in.jsonl",
        "{\"id\":\"a\",\"prompt\":\"hello\"}\n",
    );
    let (code, stderr) = run_io(&input, &out, &ep.url(), &[]);
    assert_eq!(code, 0, "{stderr}");
    let ok = std::fs::read_to_string(&out).expect("results");

    // A later invalid_input record of the same id (the row was broken for a while) does not
    // undo the answer: export shows it and a rerun does not pay for it again.
    let mut text = ok.clone();
    text.push_str(
        "{\"id\":\"a\",\"status\":\"error\",\"request_hash\":\"0000000000000000\",\"error\":\
         {\"kind\":\"invalid_input\",\"http_status\":null,\"code\":null,\"message\":\"broken\"},\
         \"attempts\":0}\n",
    );
    std::fs::write(&out, &text).expect("write");
    let (code, stdout, stderr) = export(&[path(&out), "--input", path(&input)]);
    assert_eq!(code, 0, "{stderr}");
    let row: Value = serde_json::from_str(stdout.trim()).expect("json");
    assert_eq!(row["result"]["status"], "ok", "{row}");
    let (code, stderr) = run_io(&input, &out, &ep.url(), &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("1 of 1 rows already done"), "{stderr}");
    assert_eq!(ep.stats().requests, 1);
    // The superseded invalid_input record is what compaction drops.
    assert_eq!(std::fs::read_to_string(&out).expect("results"), ok);

    // The same through run --skip-invalid with the row broken.
    let broken = write(
        dir.path(),
        "in.jsonl",
        "{\"id\":\"a\",\"text\":\"no prompt\"}\n",
    );
    let (code, stderr) = run_io(&broken, &out, &ep.url(), &["--skip-invalid"]);
    assert_eq!(code, 1, "{stderr}");
    let input = write(
        dir.path(),
        "in.jsonl",
        "{\"id\":\"a\",\"prompt\":\"hello\"}\n",
    );
    let (code, stderr) = run_io(&input, &out, &ep.url(), &[]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(ep.stats().requests, 1, "the answered row was sent again");
    assert_eq!(by_id(&records(&out))["a"]["status"], "ok");
}

#[test]
fn export_joins_every_id_run_gave_an_input_with_id_less_rows() {
    let ep = Endpoint::start(MockConfig::default());
    let dir = tempfile::tempdir().expect("tmp");
    let out = dir.path().join("out.jsonl");
    // Rows 2 and 3 have no id while row 1 has one; row 2 has no prompt either.
    let input = write(
        dir.path(),
        "in.jsonl",
        "{\"id\":\"a\",\"prompt\":\"x\"}\n{\"text\":\"no prompt, no id\"}\n{\"prompt\":\"no id\"}\n",
    );
    let (code, stderr) = run_io(&input, &out, &ep.url(), &["--skip-invalid"]);
    assert_eq!(code, 1, "{stderr}");
    let recs = by_id(&records(&out));
    assert_eq!(recs.len(), 3, "one record per row: {recs:?}");
    let (code, stdout, stderr) = export(&[path(&out), "--input", path(&input), "--skip-invalid"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("0 without a result"), "{stderr}");
    assert!(!stderr.contains("match no input row"), "{stderr}");
    let ids: Vec<String> = stdout
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("json");
            v["result"]["id"].as_str().unwrap_or("none").to_string()
        })
        .collect();
    let mut run_ids: Vec<String> = recs.keys().cloned().collect();
    run_ids.sort();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(sorted, run_ids);
    assert_eq!(ids, ["a", "line:2", "line:3"]);
}

#[test]
fn an_output_that_is_the_input_exits_2_before_anything_is_written() {
    let ep = Endpoint::start(MockConfig::default());
    let dir = tempfile::tempdir().expect("tmp");
    let text = prompts_jsonl(3);
    let input = write(dir.path(), "in.jsonl", &text);
    let link = dir.path().join("link.jsonl");
    std::os::unix::fs::symlink(&input, &link).expect("symlink");
    let hard = dir.path().join("hard.jsonl");
    std::fs::hard_link(&input, &hard).expect("hard link");
    let dotted = dir.path().join(".").join("in.jsonl");
    for out in [&input, &link, &hard, &dotted] {
        let (code, stderr) = run_io(&input, out, &ep.url(), &[]);
        assert_eq!(code, 2, "{}: {stderr}", out.display());
        assert!(stderr.contains("is the input"), "{stderr}");
        assert_eq!(std::fs::read_to_string(&input).expect("input"), text);
        let mut lock = out.as_os_str().to_owned();
        lock.push(".lock");
        assert!(!Path::new(&lock).exists(), "{}", out.display());
    }
    assert_eq!(ep.stats().requests, 0);
}

#[test]
fn a_last_line_without_its_newline_that_is_a_whole_record_is_kept() {
    let ep = Endpoint::start(MockConfig::default());
    let dir = tempfile::tempdir().expect("tmp");
    let out = dir.path().join("out.jsonl");
    let input = write(dir.path(), "in.jsonl", &prompts_jsonl(3));
    let (code, stderr) = run_io(&input, &out, &ep.url(), &[]);
    assert_eq!(code, 0, "{stderr}");
    let full = std::fs::read_to_string(&out).expect("results");
    std::fs::write(&out, full.trim_end_matches('\n')).expect("write");

    let (code, stderr) = run_io(&input, &out, &ep.url(), &["-q"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        ep.stats().requests,
        3,
        "the row of the last record was sent again"
    );
    assert!(
        stderr.contains("out.jsonl: the last line had no newline"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_to_string(&out).expect("results"), full);

    // A line that is really torn is dropped, and said so with -q too.
    let mut torn = full.clone();
    torn.push_str("{\"id\":\"r2\",\"status\":\"ok\",\"request_hash\":\"00000000000000ff\",\"con");
    std::fs::write(&out, torn).expect("write");
    let (code, stderr) = run_io(&input, &out, &ep.url(), &["-q"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("dropped a torn last line"), "{stderr}");
    assert_eq!(ep.stats().requests, 3);
    assert_eq!(by_id(&records(&out)).len(), 3);
}

/// An input whose second row fails on every run, so that each rerun appends a record and the
/// file is compacted at the end.
fn failing_input(dir: &Path) -> std::path::PathBuf {
    write(
        dir,
        "in.jsonl",
        "{\"id\":\"r1\",\"prompt\":\"one\"}\n{\"id\":\"r2\",\"prompt\":\"two [mock:400]\"}\n\
         {\"id\":\"r3\",\"prompt\":\"three\"}\n",
    )
}

#[test]
fn compaction_keeps_the_permission_bits() {
    let ep = Endpoint::start(MockConfig::default());
    let dir = tempfile::tempdir().expect("tmp");
    let input = failing_input(dir.path());
    for mode in [0o644, 0o640, 0o604] {
        let out = dir.path().join(format!("out-{mode:o}.jsonl"));
        let (code, stderr) = run_io(&input, &out, &ep.url(), &[]);
        assert_eq!(code, 1, "{stderr}");
        std::fs::set_permissions(&out, std::fs::Permissions::from_mode(mode)).expect("chmod");
        let before = ep.stats().requests;
        let (code, stderr) = run_io(&input, &out, &ep.url(), &[]);
        assert_eq!(code, 1, "{stderr}");
        assert_eq!(ep.stats().requests, before + 1, "only the failed row again");
        assert_eq!(by_id(&records(&out)).len(), 3, "compacted");
        let got = std::fs::metadata(&out).expect("meta").permissions().mode() & 0o7777;
        assert_eq!(got, mode, "mode {got:o}, was {mode:o}");
    }
}

#[test]
fn compaction_through_a_symlink_rewrites_its_target() {
    let ep = Endpoint::start(MockConfig::default());
    let dir = tempfile::tempdir().expect("tmp");
    let input = failing_input(dir.path());
    let store = dir.path().join("store");
    std::fs::create_dir(&store).expect("mkdir");
    let target = store.join("results.jsonl");
    let (code, stderr) = run_io(&input, &target, &ep.url(), &[]);
    assert_eq!(code, 1, "{stderr}");
    let link = dir.path().join("latest.jsonl");
    std::os::unix::fs::symlink(&target, &link).expect("symlink");
    let (code, stderr) = run_io(&input, &link, &ep.url(), &[]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        std::fs::symlink_metadata(&link)
            .expect("meta")
            .file_type()
            .is_symlink(),
        "the link became a plain file"
    );
    assert_eq!(std::fs::read_link(&link).expect("link"), target);
    let recs = by_id(&records(&target));
    assert_eq!(recs.len(), 3, "the target is compacted");
    assert_eq!(recs["r2"]["attempts"], 1);
    // Nothing left behind beside the link or the target.
    let names = |d: &Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .expect("dir")
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect();
        v.sort();
        v
    };
    assert_eq!(names(&store), ["results.jsonl", "results.jsonl.lock"]);
    // The link and its target share one lock: the one beside the target.
    assert!(
        !dir.path().join("latest.jsonl.lock").exists(),
        "a run through the link took a lock of its own"
    );
}

#[test]
fn a_corrupt_middle_line_is_read_alike_by_the_scan_and_the_compaction() {
    let ep = Endpoint::start(MockConfig::default());
    let dir = tempfile::tempdir().expect("tmp");
    let input = failing_input(dir.path());
    let out = dir.path().join("out.jsonl");
    let (code, stderr) = run_io(&input, &out, &ep.url(), &[]);
    assert_eq!(code, 1, "{stderr}");
    let recs = by_id(&records(&out));
    let line = |id: &str| serde_json::to_string(&recs[id]).expect("json");
    // A record cut short in the middle of the file, with a newline after it.
    let corrupt =
        "{\"id\":\"r9\",\"status\":\"ok\",\"request_hash\":\"00000000000000ff\",\"content\":\"cut";
    let text = format!(
        "{}\n{corrupt}\n{}\n{}\n",
        line("r1"),
        line("r2"),
        line("r3")
    );
    std::fs::write(&out, text).expect("write");

    let before = ep.stats().requests;
    let (code, stderr) = run_io(&input, &out, &ep.url(), &[]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("out.jsonl:2: not a result record"),
        "{stderr}"
    );
    assert_eq!(ep.stats().requests, before + 1, "only the failed row again");
    let after = std::fs::read_to_string(&out).expect("results");
    // The corrupt line is kept, never silently destroyed; each id has its latest record.
    assert!(after.contains(corrupt), "{after}");
    let kept = readable_records(&out);
    let ids: Vec<&str> = kept.iter().filter_map(|r| r["id"].as_str()).collect();
    assert_eq!(ids, ["r1", "r3", "r2"], "{after}");
    let again = by_id(&kept);
    assert_eq!(again["r1"], recs["r1"]);
    assert_eq!(again["r3"], recs["r3"]);
}

#[test]
fn fresh_through_a_symlink_keeps_the_link_and_moves_its_target_aside() {
    let ep = Endpoint::start(MockConfig::default());
    let dir = tempfile::tempdir().expect("tmp");
    let input = write(dir.path(), "in.jsonl", &prompts_jsonl(3));
    let store = dir.path().join("store");
    std::fs::create_dir(&store).expect("mkdir");
    let target = store.join("results.jsonl");
    let (code, stderr) = run_io(&input, &target, &ep.url(), &[]);
    assert_eq!(code, 0, "{stderr}");
    let link = dir.path().join("latest.jsonl");
    std::os::unix::fs::symlink(&target, &link).expect("symlink");
    let (code, stderr) = run_io(&input, &link, &ep.url(), &["--fresh"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        std::fs::symlink_metadata(&link)
            .expect("meta")
            .file_type()
            .is_symlink(),
        "the link was moved aside or replaced"
    );
    assert_eq!(records(&store.join("results.jsonl.prev")).len(), 3);
    assert_eq!(
        records(&target).len(),
        3,
        "the new results are in the target"
    );
    assert_eq!(ep.stats().requests, 6);
}

#[test]
fn an_output_that_is_dev_null_runs_and_leaves_nothing_in_dev() {
    let ep = Endpoint::start(MockConfig::default());
    let dir = tempfile::tempdir().expect("tmp");
    let input = write(dir.path(), "in.jsonl", &prompts_jsonl(3));
    let null = Path::new("/dev/null");
    let (code, stderr) = run_io(&input, null, &ep.url(), &["--fresh"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(ep.stats().requests, 3);
    assert!(!Path::new("/dev/null.lock").exists(), "a lock file in /dev");
    assert!(
        !Path::new("/dev/null.prev").exists(),
        "--fresh moved /dev/null"
    );
}
