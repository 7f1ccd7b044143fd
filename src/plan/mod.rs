//! The plan of a run, made before anything is sent: `validate` reads the whole input once and
//! builds every request, so bad input is found first (with duplicates of an id), and learns
//! which rows the scan of the existing output says are done: as it reads them
//! ([`Keep::Resume`]), or afterwards in `Plan::resume`.

mod lookup;

use std::collections::{HashMap, HashSet};

use crate::input::ids::id_key;
use crate::input::ids::{OwnId, Shard, record_id};
use crate::input::{self, Item, Problem};
use crate::output::resume::{Previous, Status};
use crate::request::{Builder, Prepared};
use crate::settings::InputSpec;
pub use lookup::Resumer;

/// Whether the input file is small enough for validation to keep its built requests.
fn small_input(spec: &InputSpec) -> bool {
    spec.path
        .as_ref()
        .and_then(|p| std::fs::metadata(p).ok())
        .is_some_and(|m| m.len() <= KEEP_INPUT_BYTES)
}

/// Problems reported before giving up on an input.
pub const MAX_PROBLEMS: usize = 20;

/// A valid row as the plan keeps it: (id key, request hash, row number, line).
type PlannedRow = (u128, u64, u32, u32);

/// What the validation pass learned about the input.
#[derive(Debug, Default)]
pub struct Plan {
    /// The rows of the input; with `--shard`, of this shard only (see [`Plan::keep_shard`]).
    pub rows_total: u64,
    /// With `--shard`: the rows that belong to the other shards, neither sent nor counted.
    pub rows_other_shards: u64,
    /// Rows whose latest record in the existing output is `ok`, for the same request.
    pub rows_done: u64,
    /// Rows done with a request that would now differ.
    pub rows_changed: u64,
    /// Whether rows carry their own ids (otherwise the row number is the id).
    pub own_ids: bool,
    pub problems: Vec<Problem>,
    /// All problems found, of which `problems` holds the first few.
    pub problem_count: u64,
    /// With `--skip-invalid`: every bad row, as (line, id for its record, reason).
    pub invalid: Vec<(u64, String, String)>,
    /// The id key that places each of `invalid` in a shard: its row's own id when it has one
    /// (so the later row of a duplicate goes with the first), else its record id.
    invalid_keys: Vec<u128>,
    /// With `--shard`: the lines of invalid rows that other shards record. Never sent here.
    invalid_elsewhere: Vec<u64>,
    /// The bad rows as found, before their ids can be resolved (see [`Plan::resolve_invalid`]).
    pending: Vec<PendingInvalid>,
    /// Bit per row number: set for rows the run skips (done, or changed without
    /// `--rerun-changed`), so the run pass skips them without building their requests again.
    pub skip_rows: Vec<u64>,
    keep_invalid: bool,
    /// Every valid row, until `resume` uses them. 32 bytes a row: this is most of the memory
    /// a large input needs before the run starts. Empty in a lean plan (see [`validate`]).
    rows: Vec<PlannedRow>,
    /// A lean plan's duplicate check: the 64-bit hash of each row's own id, valid or not.
    dup_keys: Vec<u64>,
    /// A lean plan's valid rows without an id, as (line, row number): invalid if other rows
    /// have one.
    idless: Vec<(u32, u32)>,
    /// With [`Keep::Resume`]: bits per row number, set for the rows counted in `rows_done`
    /// and in `rows_changed`, so that a row found invalid after the pass is counted in neither.
    done_bits: Vec<u64>,
    changed_bits: Vec<u64>,
    /// With `--dry-run`: estimated input tokens by row number.
    estimates: Option<HashMap<u32, u32>>,
    /// With `--dry-run`: the estimated input tokens of the rows the run would send.
    pub est_input_tokens: u64,
    /// The valid rows' requests as validation built them, with their row numbers, while their
    /// bodies fit in [`KEEP_BYTES`]: the run then sends these instead of reading and building
    /// the input a second time. `None` for larger inputs (and dry runs).
    kept: Option<Vec<(u64, Prepared)>>,
    kept_bytes: usize,
}

/// Validation keeps the built requests for the run (see [`Plan::take_kept`]) when the input
/// file is at most this large, and while their bodies stay within [`KEEP_BYTES`]: a large
/// input is read twice instead, so that memory stays flat in the number of rows.
pub const KEEP_INPUT_BYTES: u64 = 8 << 20;
pub const KEEP_BYTES: usize = 16 << 20;

impl Plan {
    /// The requests validation built, when the input was small enough to keep them.
    pub fn take_kept(&mut self) -> Option<Vec<(u64, Prepared)>> {
        self.kept.take()
    }

    /// Counts the rows done before and marks those the run skips: done with the same
    /// request, or changed without `--rerun-changed`. A row that is invalid (the later row of
    /// a duplicate id) is neither: it gets its `invalid_input` record.
    pub fn resume(&mut self, prev: &Previous, rerun_changed: bool) {
        let estimates = self.estimates.take().unwrap_or_default();
        let invalid = self.invalid_lines();
        for (key, hash, number, line) in std::mem::take(&mut self.rows) {
            if invalid.contains(&u64::from(line)) {
                continue;
            }
            let skip = self.count(
                prev.status_by_key(key, hash),
                u64::from(number),
                rerun_changed,
            );
            if let (false, Some(e)) = (skip, estimates.get(&number)) {
                self.est_input_tokens += u64::from(*e);
            }
        }
    }

    /// Counts a row done or changed by its id's latest record, and marks it for the run to
    /// skip when it is done, or changed without `--rerun-changed`. Returns whether it skips.
    fn count(&mut self, status: Status, number: u64, rerun_changed: bool) -> bool {
        let (bits, rows, skip) = match status {
            Status::Done => (&mut self.done_bits, &mut self.rows_done, true),
            Status::Changed => (
                &mut self.changed_bits,
                &mut self.rows_changed,
                !rerun_changed,
            ),
            Status::Pending => return false,
        };
        *rows += 1;
        set_bit(bits, number);
        if skip {
            set_bit(&mut self.skip_rows, number);
        }
        skip
    }
}

impl Plan {
    /// Keeps only the rows of `shard`, before [`Plan::resume`]: the others are marked to skip
    /// and leave `rows_total` for `rows_other_shards`, so that they count neither as done nor
    /// as failed. The whole input was validated first, so a duplicate id is found whichever
    /// shards its rows fall in.
    pub fn keep_shard(&mut self, shard: Shard) {
        let mut mine_by_line: HashMap<u64, bool> = HashMap::new();
        let mut invalid = Vec::new();
        let mut keys = Vec::new();
        for (row, key) in std::mem::take(&mut self.invalid)
            .into_iter()
            .zip(std::mem::take(&mut self.invalid_keys))
        {
            let mine = shard.owns(key);
            mine_by_line.insert(row.0, mine);
            if mine {
                invalid.push(row);
                keys.push(key);
            } else {
                self.invalid_elsewhere.push(row.0);
            }
        }
        let mut mine = invalid.len() as u64;
        (self.invalid, self.invalid_keys) = (invalid, keys);
        let skip = &mut self.skip_rows;
        self.rows.retain(|&(key, _, number, line)| {
            // An invalid row is counted (and recorded) as its invalid entry says, above.
            match mine_by_line.get(&u64::from(line)) {
                Some(_) => true,
                None if shard.owns(key) => {
                    mine += 1;
                    true
                }
                None => {
                    set_bit(skip, u64::from(number));
                    false
                }
            }
        });
        self.rows_other_shards = self.rows_total.saturating_sub(mine);
        self.rows_total = mine;
    }

    /// The lines of every invalid row, this shard's and the others': the reader never sends
    /// them.
    pub fn invalid_lines(&self) -> HashSet<u64> {
        self.invalid
            .iter()
            .map(|(line, _, _)| *line)
            .chain(self.invalid_elsewhere.iter().copied())
            .collect()
    }
}

pub(crate) fn clear_bit(bits: &mut [u64], number: u64) {
    let i = number as usize;
    if let Some(w) = bits.get_mut(i / 64) {
        *w &= !(1 << (i % 64));
    }
}

/// Whether row `number` (1-based) is set in a bitset.
pub fn bit(bits: &[u64], number: u64) -> bool {
    let i = number as usize;
    bits.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0)
}

pub(crate) fn set_bit(bits: &mut Vec<u64>, number: u64) {
    let i = number as usize;
    if bits.len() <= i / 64 {
        bits.resize(i / 64 + 1, 0);
    }
    bits[i / 64] |= 1 << (i % 64);
}

/// A bad row as validation finds it: (line, row number, what its id field holds, reason).
type PendingInvalid = (u64, u64, OwnId, String);

impl Plan {
    /// A problem with a row whose id cannot be used (an unreadable row, an unusable id).
    fn problem(&mut self, line: u64, reason: impl Into<String>) {
        self.invalid_row(line, 0, Err(String::new()), reason);
    }

    /// A problem with a row. Under `--skip-invalid` it gets an `invalid_input` record, whose
    /// id [`Plan::resolve_invalid`] gives once the whole input is read.
    fn invalid_row(&mut self, line: u64, number: u64, own: OwnId, reason: impl Into<String>) {
        let reason = reason.into();
        if self.keep_invalid {
            self.pending.push((line, number, own, reason.clone()));
        }
        self.problem_count += 1;
        if self.problems.len() < MAX_PROBLEMS {
            self.problems.push(Problem { line, reason });
        }
    }

    /// Gives each bad row one `invalid_input` record (its reasons joined), with the id
    /// [`record_id`] resolves for it.
    fn resolve_invalid(&mut self, duplicates: &HashMap<u64, u64>) {
        let mut pending = std::mem::take(&mut self.pending);
        pending.sort_by_key(|p| p.0);
        for (line, number, own, reason) in pending {
            match self.invalid.last_mut() {
                Some((l, _, r)) if *l == line => {
                    r.push_str("; ");
                    r.push_str(&reason);
                }
                _ => {
                    let dup = duplicates.contains_key(&line);
                    let id = record_id(line, number, &own, self.own_ids, dup);
                    self.invalid_keys.push(match &own {
                        Ok(Some(own)) => id_key(own),
                        _ => id_key(&id),
                    });
                    self.invalid.push((line, id, reason));
                }
            }
        }
    }
}

/// What validation keeps of each valid row, for what comes after it.
pub enum Keep {
    /// Every row, 32 bytes each: for [`Plan::keep_shard`], [`Plan::resume`] and the
    /// estimates of a dry run. Validation needs nothing from the output, so it can run while
    /// the output is scanned; `resume` then joins the two.
    Rows,
    /// Nothing to resume, no shard, no estimates: only the 8 bytes a row of the duplicate
    /// check (the hash of the row's own id).
    Lean,
    /// The output's records, from the scan running beside validation: each row is looked up
    /// as it is built, and only the duplicate check's 8 bytes are kept (no shard, no
    /// estimates). See [`lookup::Resumer`].
    Resume(Resumer),
}

/// Reads the whole input once, building every request (see [`Keep`] for what it keeps).
pub fn validate(
    spec: &InputSpec,
    builder: &Builder,
    keep_invalid: bool,
    estimate: bool,
    keep: Keep,
) -> std::io::Result<Plan> {
    let mut keep = if estimate { Keep::Rows } else { keep };
    let lean = !matches!(keep, Keep::Rows);
    let mut plan = Plan {
        keep_invalid,
        estimates: estimate.then(HashMap::new),
        kept: (!estimate && small_input(spec)).then(Vec::new),
        ..Plan::default()
    };
    let mut any_id = false;
    // Rows without an id, by row number; invalid only if other rows have one.
    let mut without_id: Vec<u64> = Vec::new();
    // Rows that failed to build, as (id key, line): they count for duplicates too.
    let mut bad_with_id: Vec<(u128, u32)> = Vec::new();
    // Rows without an id that failed to build, as (line, row number).
    let mut bad_without_id: Vec<(u64, u64)> = Vec::new();
    for item in input::open(spec)? {
        let row = match item? {
            Item::Row(row) => row,
            Item::Bad(p) => {
                plan.rows_total += 1;
                plan.problem(p.line, p.reason);
                continue;
            }
        };
        plan.rows_total += 1;
        let own = input::row_id(&row.fields, builder.id_field());
        match &own {
            Err(reason) => {
                plan.problem(row.line, reason.clone());
                continue;
            }
            // Duplicates are found after the pass, by sorting the planned rows.
            Ok(Some(_)) => any_id = true,
            Ok(None) => set_bit(&mut without_id, row.number),
        }
        // Built with the row's own id or its number; a row without an id in an input with ids
        // is invalid (below), so it is never sent under that number.
        match builder.build(&row, record_id(row.line, row.number, &own, false, false)) {
            Ok(p) => {
                let number = u32::try_from(row.number).unwrap_or(u32::MAX);
                let line = u32::try_from(row.line).unwrap_or(u32::MAX);
                match (&own, lean) {
                    (_, false) => plan.rows.push((id_key(&p.id), p.hash, number, line)),
                    (Ok(Some(id)), true) => plan.dup_keys.push(lean_key(id)),
                    (_, true) => plan.idless.push((line, number)),
                }
                if let Keep::Resume(resumer) = &mut keep {
                    resumer.row(&mut plan, id_key(&p.id), p.hash, row.number);
                }
                if let Some(e) = &mut plan.estimates {
                    e.insert(number, crate::request::estimate_tokens(&p.body));
                }
                if let Some(kept) = &mut plan.kept {
                    plan.kept_bytes += p.body.len() + p.id.len();
                    if plan.kept_bytes > KEEP_BYTES {
                        plan.kept = None;
                    } else {
                        kept.push((row.number, p));
                    }
                }
            }
            Err(reason) => {
                match &own {
                    Ok(Some(id)) if lean => plan.dup_keys.push(lean_key(id)),
                    Ok(Some(id)) => {
                        let line = u32::try_from(row.line).unwrap_or(u32::MAX);
                        bad_with_id.push((id_key(id), line));
                    }
                    _ => bad_without_id.push((row.line, row.number)),
                }
                plan.invalid_row(row.line, row.number, own, reason);
            }
        }
    }
    if let Keep::Resume(resumer) = keep {
        resumer.finish(&mut plan);
    }
    plan.own_ids = any_id;
    if any_id && !without_id.is_empty() {
        let reason = format!(
            "no `{}` field, while other rows have one",
            builder.id_field()
        );
        // The valid ones leave the plan: they are not sent, nor counted as done.
        let mut idless: Vec<(u64, u64)> = std::mem::take(&mut plan.idless)
            .into_iter()
            .map(|(line, number)| (u64::from(line), u64::from(number)))
            .collect();
        plan.rows.retain(|r| {
            let keep = !bit(&without_id, u64::from(r.2));
            if !keep {
                idless.push((u64::from(r.3), u64::from(r.2)));
            }
            keep
        });
        for (line, number) in idless.into_iter().chain(bad_without_id) {
            plan.uncount(number);
            plan.invalid_row(line, number, Ok(None), reason.clone());
        }
    }
    plan.idless = Vec::new();
    let duplicates = match (any_id, lean) {
        (true, false) => find_duplicates(spec, builder, &mut plan, bad_with_id)?,
        (true, true) => find_lean_duplicates(spec, builder, &mut plan)?,
        (false, _) => HashMap::new(),
    };
    plan.resolve_invalid(&duplicates);
    plan.problems.sort_by_key(|p| p.line);
    Ok(plan)
}

/// Reports every row whose id an earlier row already has, valid or not: the later row of a
/// duplicate is invalid whichever of the two could be sent. The planned rows are sorted by id
/// (their order does not matter to `resume`) and walked together with the invalid rows' ids,
/// so a duplicate follows its first row; a second read of the input, only when there are
/// duplicates, fetches their ids for the messages. Returns the duplicates' lines, each with
/// the line of its first row.
fn find_duplicates(
    spec: &InputSpec,
    builder: &Builder,
    plan: &mut Plan,
    mut bad: Vec<(u128, u32)>,
) -> std::io::Result<HashMap<u64, u64>> {
    plan.rows.sort_unstable_by_key(|r| (r.0, r.3));
    bad.sort_unstable();
    let mut dups: HashMap<u64, u64> = HashMap::new();
    let mut valid = plan.rows.iter().map(|r| (r.0, r.3)).peekable();
    let mut invalid = bad.into_iter().peekable();
    let mut last: Option<(u128, u64)> = None;
    loop {
        let next = match (valid.peek(), invalid.peek()) {
            (Some(v), Some(b)) if b < v => invalid.next(),
            (Some(_), _) => valid.next(),
            (None, _) => invalid.next(),
        };
        let Some((key, line)) = next else { break };
        let line = u64::from(line);
        match last {
            Some((k, first)) if k == key => {
                dups.insert(line, first);
            }
            _ => last = Some((key, line)),
        }
    }
    if dups.is_empty() {
        return Ok(dups);
    }
    for item in input::open(spec)? {
        let Item::Row(row) = item? else { continue };
        let Some(&first) = dups.get(&row.line) else {
            continue;
        };
        if let Ok(Some(id)) = input::row_id(&row.fields, builder.id_field()) {
            let reason = format!("duplicate id `{id}` (first on line {first})");
            plan.invalid_row(row.line, row.number, Ok(Some(id)), reason);
        }
    }
    Ok(dups)
}

/// The id hash of a lean plan's duplicate check. 64 bits are not enough to tell ids apart
/// for certain, so equal hashes are only candidates: see [`find_lean_duplicates`].
fn lean_key(id: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(id.as_bytes())
}

/// The duplicate check of a lean plan, with the result of [`find_duplicates`]: the id hashes
/// are sorted, and only if two are equal is the input read again, to compare the ids of the
/// rows with those hashes themselves.
fn find_lean_duplicates(
    spec: &InputSpec,
    builder: &Builder,
    plan: &mut Plan,
) -> std::io::Result<HashMap<u64, u64>> {
    let mut keys = std::mem::take(&mut plan.dup_keys);
    keys.sort_unstable();
    let shared: HashSet<u64> = keys
        .windows(2)
        .filter(|w| w[0] == w[1])
        .map(|w| w[0])
        .collect();
    drop(keys);
    let mut dups: HashMap<u64, u64> = HashMap::new();
    if shared.is_empty() {
        return Ok(dups);
    }
    let mut first: HashMap<String, u64> = HashMap::new();
    for item in input::open(spec)? {
        let Item::Row(row) = item? else { continue };
        let Ok(Some(id)) = input::row_id(&row.fields, builder.id_field()) else {
            continue;
        };
        if !shared.contains(&lean_key(&id)) {
            continue;
        }
        match first.get(&id) {
            Some(&line) => {
                dups.insert(row.line, line);
                plan.uncount(row.number);
                let reason = format!("duplicate id `{id}` (first on line {line})");
                plan.invalid_row(row.line, row.number, Ok(Some(id)), reason);
            }
            None => {
                first.insert(id, row.line);
            }
        }
    }
    Ok(dups)
}
