//! The join's two reads before anything is written: the latest record of each id in RESULTS
//! (pass 1), and the input checked as `run` checks it, with how its rows' ids resolve
//! (pass 2). Ids are resolved by `input::ids`, records read by `record::RecordLines`.

use std::collections::{HashMap, HashSet};
use std::io::{self, Write};
use std::path::Path;

use super::{ExportError, MAX_PROBLEMS, Options, refused};
use crate::input::ids::{id_key, record_id};
use crate::input::{self, Item, RawRow};
use crate::record::{self, Line, RecordLines};

/// An [`id_key`] as two words, so that a table entry takes 24 bytes rather than 32.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Key(u64, u64);

impl Key {
    pub(super) fn of(id: &str) -> Key {
        let k = id_key(id);
        Key(k as u64, (k >> 64) as u64)
    }
}

/// Id key -> byte offset of the id's latest record, or [`NO_RECORD`]; [`OK`] marks an ok
/// latest record, [`SEEN`] ids an input row has (pass 2). The ids of RESULTS are a vector
/// sorted by key, 24 bytes an id (a hash map took about three times that, counting its spare
/// room and its growth); the input's ids that have no record, usually none or few, a map.
#[derive(Debug, Default)]
pub(crate) struct Index {
    records: Vec<(Key, u64)>,
    sorted: bool,
    others: HashMap<Key, u64>,
}

pub(super) const SEEN: u64 = 1 << 63;
pub(super) const OK: u64 = 1 << 62;
/// Pass 1 only: the record is `invalid_input` (see [`record::supersedes`]).
const INVALID: u64 = 1 << 61;
pub(super) const NO_RECORD: u64 = INVALID - 1;

impl Index {
    /// Pass 1: a record, in file order.
    fn push(&mut self, key: Key, slot: u64) {
        self.records.push((key, slot));
        self.sorted = false;
    }

    /// Sorts the records by id, in file order within an id (offsets grow), and keeps each
    /// id's latest with the rule of [`record::supersedes`].
    fn finish(&mut self) {
        self.records
            .sort_unstable_by_key(|&(k, slot)| (k, slot & NO_RECORD));
        self.records.dedup_by(|(key, later), (k, earlier)| {
            let same = key == k;
            if same && record::supersedes(*earlier & OK != 0, *later & INVALID != 0) {
                *earlier = *later;
            }
            same
        });
        self.records
            .iter_mut()
            .for_each(|(_, slot)| *slot &= !INVALID);
        self.records.shrink_to_fit();
        self.sorted = true;
    }

    /// The slot of an id: its record's offset and flags.
    pub(crate) fn get(&self, key: &Key) -> Option<u64> {
        debug_assert!(self.sorted || self.records.is_empty());
        match self.records.binary_search_by_key(key, |&(k, _)| k) {
            Ok(i) => Some(self.records[i].1),
            Err(_) => self.others.get(key).copied(),
        }
    }

    /// Pass 2: the slot of an id an input row has, [`NO_RECORD`] when it has no record yet.
    fn slot(&mut self, key: Key) -> &mut u64 {
        match self.records.binary_search_by_key(&key, |&(k, _)| k) {
            Ok(i) => &mut self.records[i].1,
            Err(_) => self.others.entry(key).or_insert(NO_RECORD),
        }
    }

    /// Ids with a record.
    fn len(&self) -> usize {
        self.records.len()
    }
}

/// What pass 1 learnt from RESULTS.
pub(super) struct Results {
    pub(super) index: Index,
    /// Ids with a record.
    pub(super) latest: u64,
    /// Whether some record has `parsed`.
    pub(super) has_parsed: bool,
}

/// Pass 1: reads RESULTS once, keeping the offset of each id's latest record.
pub(super) fn scan_results(path: &Path, diag: &mut dyn Write) -> Result<Results, ExportError> {
    let name = path.display();
    let mut lines = RecordLines::open(path).map_err(|e| refused(e.to_string()))?;
    let unreadable = |e: io::Error| refused(format!("cannot read {name}: {e}"));
    if input::is_gzip(lines.peek().map_err(unreadable)?) {
        return Err(refused(format!(
            "{name}: the results file is gzip-compressed; export reads it by seeking, so \
             decompress it first (gunzip -k)"
        )));
    }
    let mut results = Results {
        index: Index::default(),
        latest: 0,
        has_parsed: false,
    };
    let mut skipped = 0u64;
    // Lines are read as the resume scan reads them, and the latest record chosen alike.
    while let Some(l) = lines.next_line().map_err(unreadable)? {
        match &l.line {
            Line::Record(head) => {
                let mut flagged = l.offset;
                if head.ok {
                    flagged |= OK;
                }
                if head.invalid_input {
                    flagged |= INVALID;
                }
                results.index.push(Key::of(&head.id), flagged);
                if !results.has_parsed && head.ok {
                    results.has_parsed = record::has_parsed(l.text);
                }
            }
            Line::Blank => {}
            // A crash cut the last record short: `run` would drop it and send the row again.
            Line::NotRecord if l.torn() => {
                let _ = writeln!(
                    diag,
                    "{name}:{}: ignored a torn last line ({} bytes) left by an interrupted run",
                    l.number,
                    l.text.len()
                );
            }
            Line::NotRecord => {
                skipped += 1;
                if skipped <= MAX_PROBLEMS as u64 {
                    let _ = writeln!(diag, "{name}:{}: not a result record; skipped", l.number);
                }
            }
        }
    }
    if skipped > MAX_PROBLEMS as u64 {
        let _ = writeln!(
            diag,
            "{name}: ... and {} more lines that are not result records",
            skipped - MAX_PROBLEMS as u64
        );
    }
    results.index.finish();
    results.latest = results.index.len() as u64;
    Ok(results)
}

/// How the rows' ids resolve, mirroring `dispatch::validate`.
#[derive(Debug, Default)]
pub(crate) struct JoinPlan {
    /// Whether rows carry their own ids (otherwise the row number is the id).
    pub(super) own_ids: bool,
    /// Row numbers of the later rows of duplicate ids.
    pub(super) duplicates: HashSet<u64>,
}

/// Pass 2: reads INPUT to check it, as `run` would, and to learn how its ids resolve.
pub(crate) fn check_input(
    opts: &Options,
    index: &mut Index,
    diag: &mut dyn Write,
) -> Result<JoinPlan, ExportError> {
    let name = opts.input.display();
    let unreadable = |e: io::Error| refused(format!("cannot read {name}: {e}"));
    let mut plan = JoinPlan::default();
    let mut problems: Vec<(u64, String)> = Vec::new();
    let mut problem_count = 0u64;
    let mut problem = |line: u64, reason: String| {
        problem_count += 1;
        if problems.len() < MAX_PROBLEMS {
            problems.push((line, reason));
        }
    };
    let (mut with_id, mut without_id) = (0u64, 0u64);
    let mut without_id_lines = Vec::new();
    for item in input::open(&opts.input).map_err(unreadable)? {
        let row = match item.map_err(unreadable)? {
            Item::Row(row) => row,
            Item::Bad(p) => {
                problem(p.line, p.reason);
                continue;
            }
        };
        match input::row_id(&row.fields, &opts.id_field) {
            Err(reason) => problem(row.line, reason),
            Ok(Some(id)) => {
                with_id += 1;
                let slot = index.slot(Key::of(&id));
                if *slot & SEEN != 0 {
                    problem(
                        row.line,
                        format!("duplicate id `{id}` (an earlier row has it)"),
                    );
                    plan.duplicates.insert(row.number);
                } else {
                    *slot |= SEEN;
                }
            }
            Ok(None) => {
                without_id += 1;
                if without_id_lines.len() < MAX_PROBLEMS {
                    without_id_lines.push(row.line);
                }
            }
        }
    }
    plan.own_ids = with_id > 0;
    if plan.own_ids && without_id > 0 {
        for line in without_id_lines {
            problem(
                line,
                format!("no `{}` field, while other rows have one", opts.id_field),
            );
        }
        problem_count += without_id.saturating_sub(MAX_PROBLEMS as u64);
    }
    if problem_count == 0 {
        return Ok(plan);
    }
    problems.sort_by_key(|(line, _)| *line);
    for (line, reason) in &problems {
        let _ = writeln!(diag, "{name}:{line}: {reason}");
    }
    if problem_count > problems.len() as u64 {
        let _ = writeln!(
            diag,
            "... and {} more problems",
            problem_count - problems.len() as u64
        );
    }
    if !opts.skip_invalid {
        return Err(refused(format!(
            "{name}: {problem_count} invalid rows; nothing was exported (--skip-invalid \
             exports the rest, as after `run --skip-invalid`)"
        )));
    }
    let _ = writeln!(
        diag,
        "--skip-invalid: rows that cannot be read are left out; the others are joined to their \
         invalid_input records"
    );
    Ok(plan)
}

/// The id `run` gave a row (see the module docs), by the code `run` names records with.
pub(crate) fn join_id(row: &RawRow, id_field: &str, plan: &JoinPlan) -> String {
    let own = input::row_id(&row.fields, id_field);
    let duplicate = plan.duplicates.contains(&row.number);
    record_id(row.line, row.number, &own, plan.own_ids, duplicate)
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::super::write::RecordReader;
    use super::*;

    fn file(text: &[u8]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().expect("tmp");
        f.write_all(text).expect("write");
        f
    }

    #[test]
    fn the_latest_record_wins_and_odd_lines_are_named() {
        let head = "{\"id\":\"a\",\"status\":\"error\"}\nnot json\n\
                    {\"id\":\"b\",\"status\":\"ok\",\"parsed\":{\"x\":1}}\n\n";
        let a_at = head.len() as u64;
        let f = file(
            format!("{head}{{\"id\":\"a\",\"status\":\"ok\"}}\n{{\"id\":\"c\",\"sta").as_bytes(),
        );
        let mut diag = Vec::new();
        let r = scan_results(f.path(), &mut diag).expect("scan");
        let diag = String::from_utf8(diag).expect("utf8");
        assert_eq!(r.latest, 2);
        assert!(r.has_parsed);
        assert_eq!(r.index.get(&Key::of("a")), Some(a_at | OK));
        assert_eq!(r.index.get(&Key::of("c")), None);
        assert!(diag.contains(":2: not a result record; skipped"), "{diag}");
        assert!(
            diag.contains(":6: ignored a torn last line (14 bytes)"),
            "{diag}"
        );

        let mut reader = RecordReader::open(f.path()).expect("open");
        let b = reader
            .read_at(r.index.get(&Key::of("b")).unwrap_or(0) & !OK)
            .expect("read")
            .to_vec();
        assert!(b.starts_with(b"{\"id\":\"b\""));
        let a = reader.read_at(a_at).expect("read");
        assert_eq!(a, b"{\"id\":\"a\",\"status\":\"ok\"}\n");
    }

    #[test]
    fn an_invalid_input_record_never_replaces_an_ok_one_but_a_later_record_does() {
        let a_ok = "{\"id\":\"a\",\"status\":\"ok\"}\n";
        let invalid = |id: &str| {
            format!(
                "{{\"id\":\"{id}\",\"status\":\"error\",\"error\":{{\"kind\":\"invalid_input\"}}}}\n"
            )
        };
        let b_error = "{\"id\":\"b\",\"status\":\"error\",\"error\":{\"kind\":\"server\"}}\n";
        let text = format!("{a_ok}{}{}{b_error}", invalid("a"), invalid("b"));
        let f = file(text.as_bytes());
        let r = scan_results(f.path(), &mut Vec::new()).expect("scan");
        assert_eq!(r.latest, 2);
        assert_eq!(r.index.get(&Key::of("a")), Some(OK));
        let b_at = (text.len() - b_error.len()) as u64;
        assert_eq!(r.index.get(&Key::of("b")), Some(b_at));
    }

    #[test]
    fn a_whole_last_record_without_its_newline_counts() {
        let f = file(b"{\"id\":\"a\",\"status\":\"ok\"}");
        let r = scan_results(f.path(), &mut Vec::new()).expect("scan");
        assert_eq!(r.latest, 1);
        assert!(!r.has_parsed);
    }

    #[test]
    fn gzip_results_are_refused() {
        let f = file(&[0x1f, 0x8b, 0, 0]);
        let e = scan_results(f.path(), &mut Vec::new()).err();
        assert!(matches!(e, Some(ExportError::Usage(m)) if m.contains("gzip")));
    }

    #[test]
    fn ids_resolve_as_run_resolves_them() {
        let row = |fields: Value, line, number| RawRow {
            line,
            number,
            fields: fields.as_object().cloned().unwrap_or_default(),
        };
        let mut plan = JoinPlan {
            own_ids: true,
            duplicates: HashSet::from([3]),
        };
        let r = row(serde_json::json!({"id": 7}), 2, 1);
        assert_eq!(join_id(&r, "id", &plan), "7");
        let r = row(serde_json::json!({"custom_id": "x"}), 2, 1);
        assert_eq!(join_id(&r, "id", &plan), "x");
        let r = row(serde_json::json!({"id": "a"}), 5, 3);
        assert_eq!(join_id(&r, "id", &plan), "a#line:5");
        let r = row(serde_json::json!({"id": [1]}), 9, 4);
        assert_eq!(join_id(&r, "id", &plan), "line:9");
        let r = row(serde_json::json!({"prompt": "p"}), 9, 4);
        assert_eq!(join_id(&r, "id", &plan), "line:9");
        plan.own_ids = false;
        assert_eq!(join_id(&r, "id", &plan), "4");
    }
}
