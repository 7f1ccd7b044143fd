//! The pipeline: a reader thread streams rows in batches through a bounded queue; `-c`
//! long-lived workers take them one at a time, run each row's attempts with retries and send
//! one `Outcome` per row to the writer. Before any of that, `validate` reads the
//! whole input once and builds every request, so bad input is found before anything is sent.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use backon::Retryable;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::client::Client;
use crate::input::ids::{OwnId, id_key, record_id};
use crate::input::{self, Item, Problem};
use crate::limit::{Flow, Signal};
use crate::output::resume::{Previous, Status};
use crate::pricing::{self, Cost, Prices};
use crate::progress::Live;
use crate::record::Outcome;
use crate::request::{Builder, Prepared, Reply};
use crate::retry::{self, ErrorKind, Failure};
use crate::settings::{InputSpec, Settings};
use crate::structured::Structured;
use crate::sync::lock;

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
    pub rows_total: u64,
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
    /// The bad rows as found, before their ids can be resolved (see [`Plan::resolve_invalid`]).
    pending: Vec<PendingInvalid>,
    /// Bit per row number: set for rows the run skips (done, or changed without
    /// `--rerun-changed`), so the run pass skips them without building their requests again.
    pub skip_rows: Vec<u64>,
    keep_invalid: bool,
    /// Every valid row, until `resume` uses them. 32 bytes a row: this is most of the memory
    /// a large input needs before the run starts.
    rows: Vec<PlannedRow>,
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
        let invalid: std::collections::HashSet<u64> =
            self.invalid.iter().map(|(line, _, _)| *line).collect();
        for (key, hash, number, line) in std::mem::take(&mut self.rows) {
            if invalid.contains(&u64::from(line)) {
                continue;
            }
            let number = u64::from(number);
            let skip = match prev.status_by_key(key, hash) {
                Status::Done => {
                    self.rows_done += 1;
                    true
                }
                Status::Changed => {
                    self.rows_changed += 1;
                    !rerun_changed
                }
                Status::Pending => false,
            };
            if skip {
                set_bit(&mut self.skip_rows, number);
            } else if let Some(e) = estimates.get(&(number as u32)) {
                self.est_input_tokens += u64::from(*e);
            }
        }
    }
}

/// Whether row `number` (1-based) is set in a bitset.
pub fn bit(bits: &[u64], number: u64) -> bool {
    let i = number as usize;
    bits.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0)
}

fn set_bit(bits: &mut Vec<u64>, number: u64) {
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
                    self.invalid.push((line, id, reason));
                }
            }
        }
    }
}

/// Reads the whole input once, building every request. It needs nothing from the output, so
/// it can run while the output is scanned; [`Plan::resume`] then joins the two.
pub fn validate(
    spec: &InputSpec,
    builder: &Builder,
    keep_invalid: bool,
    estimate: bool,
) -> std::io::Result<Plan> {
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
                plan.rows.push((id_key(&p.id), p.hash, number, line));
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
    plan.own_ids = any_id;
    if any_id && !without_id.is_empty() {
        let reason = format!(
            "no `{}` field, while other rows have one",
            builder.id_field()
        );
        // The valid ones leave the plan: they are not sent, nor counted as done.
        let mut idless = Vec::new();
        plan.rows.retain(|r| {
            let keep = !bit(&without_id, u64::from(r.2));
            if !keep {
                idless.push((u64::from(r.3), u64::from(r.2)));
            }
            keep
        });
        for (line, number) in idless.into_iter().chain(bad_without_id) {
            plan.invalid_row(line, number, Ok(None), reason.clone());
        }
    }
    let duplicates = match any_id {
        true => find_duplicates(spec, builder, &mut plan, bad_with_id)?,
        false => HashMap::new(),
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

/// Why the run stopped before the end of the input.
#[derive(Debug, Clone)]
pub enum Stop {
    /// An error that would fail every row (credentials, permission, billing).
    Fatal(Failure),
    /// SIGINT or SIGTERM.
    Interrupted,
    /// `--max-failures`: this many rows failed out of this many finished.
    TooManyFailures { failed: u64, finished: u64 },
    /// `--deadline` passed.
    Deadline,
    /// `--max-cost`: the next attempt's worst case would have passed the cap.
    CostCap { spent: f64, cap: f64 },
    /// The results file could not be written; the message names it and the OS error.
    Output(String),
}

/// Attempts of rows that end without a record (a second signal abandoned them, or the stop
/// cut the wait before their next attempt): they count in the summary all the same.
#[derive(Debug, Default)]
pub struct Unrecorded {
    pub requests: AtomicU64,
    pub retries: AtomicU64,
    pub possibly_billed: AtomicU64,
}

/// The attempts of the row a worker is on, kept outside the row's future so that they are
/// still known when a second signal drops it.
#[derive(Debug, Default)]
struct Tally {
    attempts: AtomicU32,
    billed: AtomicU32,
    /// An attempt is on the wire: dropped there, it may have been billed.
    on_wire: AtomicBool,
}

/// The failure of an attempt that was never sent: the row gets no record, so a rerun sends it.
fn not_sent(message: &str) -> Failure {
    let mut f = Failure::new(ErrorKind::Billing, message);
    f.unsent = true;
    f.fatal = false;
    f.retryable = false;
    f
}

/// What every worker shares.
pub struct Shared {
    pub client: Client,
    pub prices: Arc<Prices>,
    /// Spend so far, and the worst case of the attempts in flight, in billionths of the
    /// currency unit (`--max-cost`).
    pub spent_nanos: AtomicU64,
    pub reserved_nanos: AtomicU64,
    pub flow: Arc<Flow>,
    /// Rows finished and rows failed so far, for `--max-failures`.
    pub finished: AtomicU64,
    pub failed: AtomicU64,
    /// Whether attempts stream: `--stream`, or switched on for the rest of the run when the
    /// model turned out to answer only streaming requests.
    pub stream: AtomicBool,
    /// The answer check of `--json` / `--json-schema`.
    pub structured: Option<Structured>,
    pub settings: Arc<Settings>,
    pub live: Arc<Live>,
    pub model: Arc<str>,
    /// Cancelled to stop dispatching (a signal, or a fatal error). Held by the dispatcher,
    /// the workers (no new attempts once cancelled) and the signal task.
    pub stop: CancellationToken,
    /// Cancelled by a second signal: in-flight attempts are dropped and their rows stay
    /// without a record, so a rerun sends them again.
    pub abandon: CancellationToken,
    /// The first reason the run stopped early.
    pub stopped: OnceLock<Stop>,
    /// Attempts of rows left without a record.
    pub unrecorded: Unrecorded,
    /// Answers in a row that were 404, with no ok answer since: see [`NOT_FOUND_STOP`].
    pub not_found: AtomicU32,
}

/// This many 404 answers in a row, with no ok answer among them, stop the run: the base URL or
/// the model is wrong, and every row would fail the same way. A 404 for one row's own model
/// among ok rows resets nothing and stops nothing.
pub const NOT_FOUND_STOP: u32 = 5;

impl Shared {
    pub fn stop_with(&self, why: Stop) {
        let _ = self.stopped.set(why);
        self.stop.cancel();
    }

    /// The cost of an answer to a request that named model `sent` (see [`Prices::cost`]).
    pub fn cost_of(&self, sent: &str, reply: &Reply) -> Option<Cost> {
        self.prices
            .cost(sent, reply.model.as_deref(), reply.usage.as_ref())
    }

    /// Reserves the worst case of an attempt under `--max-cost`; `false` when it would pass
    /// the cap (the run then stops dispatching).
    fn reserve(&self, cap: f64, worst: f64) -> Option<u64> {
        let worst = (worst * 1e9).ceil() as u64;
        let cap = (cap * 1e9) as u64;
        let spent = self.spent_nanos.load(Relaxed);
        self.reserved_nanos
            .fetch_update(Relaxed, Relaxed, |r| {
                (spent.saturating_add(r).saturating_add(worst) <= cap).then_some(r + worst)
            })
            .ok()
            .map(|_| worst)
    }

    /// Counts a finished row, and stops the run when `--max-failures` is passed.
    fn count_outcome(&self, failed: bool) {
        let finished = self.finished.fetch_add(1, Relaxed) + 1;
        let failures = if failed {
            self.failed.fetch_add(1, Relaxed) + 1
        } else {
            self.failed.load(Relaxed)
        };
        if let Some(max) = self.settings.max_failures
            && failed
            && max.exceeded(failures, finished)
        {
            self.stop_with(Stop::TooManyFailures {
                failed: failures,
                finished,
            });
        }
    }

    /// Counts an attempt's answer towards [`NOT_FOUND_STOP`], and stops the run when every
    /// recent answer was a 404.
    fn note_not_found(&self, result: &Result<Reply, Failure>) {
        match result {
            // An answer, even one the structured-output check rejects, shows that the URL and
            // the model exist.
            Ok(_) => {
                // Read first: most runs never see a 404, and a store per answer would bounce
                // the line between the workers' cores.
                if self.not_found.load(Relaxed) != 0 {
                    self.not_found.store(0, Relaxed);
                }
            }
            Err(f) if f.http_status == Some(404) => {
                let n = self.not_found.fetch_add(1, Relaxed) + 1;
                if n >= NOT_FOUND_STOP && !self.stop.is_cancelled() {
                    let mut stop = f.clone();
                    stop.message = format!(
                        "{n} requests in a row got 404 Not Found and none succeeded: check \
                         the endpoint URL {} and the model `{}` (the server said: {})",
                        self.client.url(),
                        self.model,
                        f.message
                    );
                    self.stop_with(Stop::Fatal(stop));
                }
            }
            Err(f) if f.http_status.is_some_and(|s| (200..300).contains(&s)) => {
                self.not_found.store(0, Relaxed);
            }
            Err(_) => {}
        }
    }

    /// Switches the run to streaming, saying so once.
    fn switch_to_stream(&self, why: &Failure) {
        if !self.stream.swap(true, Relaxed) && !self.settings.quiet {
            crate::printer::say(format_args!(
                "note: model `{}` answered \"{}\"; streaming this row and the rest of the run \
                 (pass --stream to start that way)",
                self.model, why.message
            ));
        }
    }

    /// One attempt under flow control: waits for the cool-down and the rate limits, sends,
    /// and tells flow control how it went. A stop ends the waits, and the attempt is not sent.
    /// Returns whether the attempt streamed, and how long it took once sent.
    async fn send(&self, p: &Prepared, tally: &Tally) -> (Result<Reply, Failure>, bool, Duration) {
        let size = p.body.len();
        let Some((_slot, spend)) = self.flow.wait_to_start(size, &self.stop).await else {
            return (
                Err(not_sent("not sent: the run stopped")),
                false,
                Duration::ZERO,
            );
        };
        let mut reserved = 0;
        if let Some(cap) = self.settings.max_cost {
            // At the price of the row's own model: the answer is not known yet.
            let model_price = self.prices.get(&p.model);
            let input = self.flow.input_estimate(size) as u64;
            let thinking = pricing::priced_as_thinking(
                self.settings.params.thinking,
                model_price.is_some_and(|p| p.thinks_by_default()),
                self.flow.seen_reasoning(),
            );
            let worst = model_price
                .and_then(|p| p.upper_bound(input, self.flow.output_bound(), thinking))
                .unwrap_or(f64::INFINITY);
            match self.reserve(cap, worst) {
                Some(n) => reserved = n,
                None => {
                    let spent = self.spent_nanos.load(Relaxed) as f64 / 1e9;
                    self.stop_with(Stop::CostCap { spent, cap });
                    let f = not_sent("not sent: --max-cost reached");
                    return (Err(f), false, Duration::ZERO);
                }
            }
        }
        tally.attempts.fetch_add(1, Relaxed);
        tally.on_wire.store(true, Relaxed);
        let stream = self.stream.load(Relaxed);
        let started = Instant::now();
        let result = self.client.attempt(&p.body, stream).await;
        let took = started.elapsed();
        tally.on_wire.store(false, Relaxed);
        if reserved > 0 {
            self.reserved_nanos.fetch_sub(reserved, Relaxed);
        }
        // Spend is tracked only for `--max-cost`: pricing every answer twice costs the hot path.
        if self.settings.max_cost.is_some()
            && let Ok(r) = &result
            && let Some(c) = self.cost_of(&p.model, r)
        {
            self.spent_nanos
                .fetch_add((c.amount * 1e9).round() as u64, Relaxed);
        }
        let signal = match &result {
            Ok(r) => Signal::Answered {
                input: r.usage.map_or(0, |u| u.input_tokens),
                output: r.usage.map_or(0, |u| u.output_tokens),
                reasoning: r.usage.is_some_and(|u| u.reasoning_tokens > 0),
            },
            Err(f) if f.kind == ErrorKind::RateLimit => {
                self.live.rate_limited.fetch_add(1, Relaxed);
                Signal::RateLimited(f.retry_after)
            }
            Err(f) if f.kind == ErrorKind::Timeout => Signal::Timeout,
            Err(_) => Signal::Other,
        };
        self.flow.after_attempt(size, spend, signal).await;
        (result, stream, took)
    }

    /// Turns an answer into the row's reply: the `--prefix` put back in front of the
    /// continuation, and the structured-output check. `invalid` counts rejected answers.
    fn finish_reply(&self, mut reply: Reply, invalid: &AtomicU32) -> Result<Reply, Failure> {
        if let Some(prefix) = &self.settings.params.prefix {
            let rest = reply.content.take().unwrap_or_default();
            reply.content = Some(format!("{prefix}{rest}"));
        }
        let Some(check) = &self.structured else {
            return Ok(reply);
        };
        match check.check(reply.content.as_deref().unwrap_or("")) {
            Ok(v) => {
                reply.parsed = Some(v);
                Ok(reply)
            }
            Err(why) => {
                let mut f = Failure::new(ErrorKind::InvalidOutput, why);
                f.http_status = Some(200);
                // A new sample may well be valid: retry at once, a bounded number of times.
                f.retryable = invalid.fetch_add(1, Relaxed) < self.settings.json_retries;
                f.retry_after = Some(Duration::ZERO);
                Err(f)
            }
        }
    }
}

/// The most rows the reader hands over at once. One hand-over wakes the dispatcher (and, when
/// the queue was full, the reader again): per row, that was a futex round trip between threads.
pub const ROW_BATCH: usize = 128;

/// Hands rows to the workers in batches of up to [`ROW_BATCH`]: a batch goes as soon as the
/// queue has room, so hungry workers get rows at once and busy ones get them in bulk.
struct Handover {
    batch: Vec<Prepared>,
    tx: mpsc::Sender<Vec<Prepared>>,
}

impl Handover {
    fn new(tx: mpsc::Sender<Vec<Prepared>>) -> Handover {
        Handover {
            batch: Vec::with_capacity(ROW_BATCH),
            tx,
        }
    }

    /// Adds a row; `false` once the workers have gone away (the run stopped).
    fn push(&mut self, p: Prepared) -> bool {
        self.batch.push(p);
        match self.tx.try_reserve() {
            Ok(permit) => {
                permit.send(std::mem::replace(
                    &mut self.batch,
                    Vec::with_capacity(ROW_BATCH),
                ));
                true
            }
            Err(mpsc::error::TrySendError::Closed(())) => false,
            Err(mpsc::error::TrySendError::Full(())) if self.batch.len() >= ROW_BATCH => {
                let rows = std::mem::replace(&mut self.batch, Vec::with_capacity(ROW_BATCH));
                self.tx.blocking_send(rows).is_ok()
            }
            Err(mpsc::error::TrySendError::Full(())) => true,
        }
    }

    fn finish(self) {
        if !self.batch.is_empty() {
            let _ = self.tx.blocking_send(self.batch);
        }
    }
}

/// Streams the rows that still need a request into `tx`, on a blocking thread. Returns when
/// the input ends or when the workers have gone away (the receiver was dropped).
pub fn read_rows(
    spec: InputSpec,
    builder: Builder,
    skip_rows: Vec<u64>,
    own_ids: bool,
    invalid_lines: std::collections::HashSet<u64>,
    tx: mpsc::Sender<Vec<Prepared>>,
) -> std::io::Result<()> {
    let mut out = Handover::new(tx);
    for item in input::open(&spec)? {
        let Item::Row(row) = item? else { continue };
        if bit(&skip_rows, row.number) || invalid_lines.contains(&row.line) {
            continue;
        }
        let own = match own_ids {
            true => input::row_id(&row.fields, builder.id_field()),
            false => Ok(None),
        };
        // Rows validation found invalid were skipped above; they are not read again here.
        let id = record_id(row.line, row.number, &own, own_ids, false);
        // The validation pass built this row already; a failure here means the file changed.
        let Ok(prepared) = builder.build(&row, id) else {
            continue;
        };
        if !out.push(prepared) {
            return Ok(());
        }
    }
    out.finish();
    Ok(())
}

/// Sends the rows validation kept (see [`Plan::take_kept`]) that still need a request, like
/// [`read_rows`] but without reading the input again.
pub fn send_kept(
    kept: Vec<(u64, Prepared)>,
    skip_rows: &[u64],
    invalid_lines: &std::collections::HashSet<u64>,
    tx: mpsc::Sender<Vec<Prepared>>,
) {
    let mut out = Handover::new(tx);
    for (number, p) in kept {
        if bit(skip_rows, number) || invalid_lines.contains(&p.line) {
            continue;
        }
        if !out.push(p) {
            return;
        }
    }
    out.finish();
}

/// Where the workers take their rows from: the batch being handed out, and the reader's
/// queue behind it. Locked only to take the next row (and, when the batch is used up, while
/// waiting for the next batch: the other workers would wait for it anyway).
struct RowSource {
    batch: std::vec::IntoIter<Prepared>,
    rows: mpsc::Receiver<Vec<Prepared>>,
}

impl RowSource {
    /// The next row, or `None` when the input is done.
    async fn next(&mut self) -> Option<Prepared> {
        loop {
            if let Some(p) = self.batch.next() {
                return Some(p);
            }
            self.batch = self.rows.recv().await?.into_iter();
        }
    }
}

/// Starts `-c` workers, each taking rows one at a time until the rows end or the run stops,
/// and returns once all are started: each holds its own sender to the writer, which ends when
/// the last worker does. Long-lived workers, rather than a task and a semaphore permit per row,
/// save a task and a wake of a dispatcher for every row.
pub fn dispatch(
    shared: Arc<Shared>,
    rows: mpsc::Receiver<Vec<Prepared>>,
    results: mpsc::Sender<Outcome>,
) {
    // Dropped with the last worker, which ends the reader.
    let source = Arc::new(tokio::sync::Mutex::new(RowSource {
        batch: Vec::new().into_iter(),
        rows,
    }));
    for _ in 0..shared.settings.concurrency {
        tokio::spawn(work(shared.clone(), source.clone(), results.clone()));
    }
}

/// One worker: at most `-c` rows are in progress, one per worker. Within them, flow control's
/// window limits the attempts on the wire.
async fn work(
    shared: Arc<Shared>,
    source: Arc<tokio::sync::Mutex<RowSource>>,
    results: mpsc::Sender<Outcome>,
) {
    loop {
        let next = tokio::select! {
            biased;
            _ = shared.stop.cancelled() => None,
            p = async { source.lock().await.next().await } => p,
        };
        let Some(prepared) = next else { break };
        shared.live.in_flight.fetch_add(1, Relaxed);
        let tally = Tally::default();
        let outcome = tokio::select! {
            biased;
            _ = shared.abandon.cancelled() => None,
            o = run_row(&shared, prepared, &tally) => o,
        };
        shared.live.in_flight.fetch_sub(1, Relaxed);
        if let Some(o) = &outcome {
            shared.count_outcome(o.result.is_err());
        }
        let Some(o) = outcome else {
            // Abandoned or not sent: this row stays without a record, its attempts still count.
            let attempts = u64::from(tally.attempts.load(Relaxed));
            let billed =
                u64::from(tally.billed.load(Relaxed)) + u64::from(tally.on_wire.load(Relaxed));
            let u = &shared.unrecorded;
            u.requests.fetch_add(attempts, Relaxed);
            u.retries.fetch_add(attempts.saturating_sub(1), Relaxed);
            u.possibly_billed.fetch_add(billed, Relaxed);
            if shared.abandon.is_cancelled() {
                break;
            }
            continue;
        };
        // The writer outlives every sender, so this fails only if it crashed.
        if results.send(o).await.is_err() {
            break;
        }
    }
}

/// Runs the attempts of one row, retrying what is retryable, and reports how it ended.
/// `None` when the row's next attempt was not sent (the run stopped, or `--max-cost` refused
/// it): it gets no record, so a rerun sends it; its earlier attempts are in `tally`.
async fn run_row(shared: &Shared, p: Prepared, tally: &Tally) -> Option<Outcome> {
    let s = &shared.settings;
    let last_ms = AtomicU64::new(0);
    let invalid_outputs = AtomicU32::new(0);
    // Usage and cost of answers rejected by the structured-output check.
    let discarded = std::sync::Mutex::new((crate::request::Usage::default(), None::<Cost>));
    let attempt = || async {
        let (mut result, streamed, mut took) = shared.send(&p, tally).await;
        if let Err(f) = &result
            && f.needs_stream
            && !streamed
        {
            // The model only streams: this row goes again at once, as a stream.
            shared.switch_to_stream(f);
            (result, _, took) = shared.send(&p, tally).await;
        }
        let result = result.and_then(|r| {
            // Only a structured-output check can reject an answer.
            let priced = shared
                .structured
                .is_some()
                .then(|| (r.usage, shared.cost_of(&p.model, &r)));
            shared.finish_reply(r, &invalid_outputs).inspect_err(|_| {
                // A rejected answer was still billed: its tokens and cost go to the totals.
                if let Some((usage, cost)) = priced {
                    let mut d = lock(&discarded);
                    if let Some(u) = usage {
                        d.0.add(&u);
                    }
                    if let Some(c) = cost {
                        match &mut d.1 {
                            Some(sum) => sum.amount += c.amount,
                            None => d.1 = Some(c),
                        }
                    }
                }
            })
        });
        last_ms.store(took.as_millis() as u64, Relaxed);
        shared.note_not_found(&result);
        if let Err(f) = &result {
            if f.possibly_billed {
                tally.billed.fetch_add(1, Relaxed);
            }
            if f.fatal {
                shared.stop_with(Stop::Fatal(f.clone()));
            }
        }
        result
    };
    let result = attempt
        .retry(retry::policy(
            s.retry_delay,
            s.retry_max_delay,
            s.max_retries,
        ))
        // After a stop the backoff sleep ends at once and the next attempt is not sent.
        .when(|f: &Failure| f.retryable)
        .sleep(retry::StopSleeper(shared.stop.clone()))
        .adjust(|f, step| retry::next_wait(f, step, s.retry_delay))
        .notify(|_, _: Duration| {
            shared.live.retries.fetch_add(1, Relaxed);
        })
        .await;
    if result.as_ref().is_err_and(|f| f.unsent) {
        return None;
    }
    let cost = result
        .as_ref()
        .ok()
        .and_then(|r| shared.cost_of(&p.model, r));
    let (discarded_usage, discarded_cost) = lock(&discarded).clone();
    Some(Outcome {
        discarded_usage,
        discarded_cost,
        id: p.id,
        hash: p.hash,
        metadata: p.metadata,
        cost,
        result,
        attempts: tally.attempts.load(Relaxed),
        latency_ms: last_ms.load(Relaxed),
        possibly_billed: tally.billed.load(Relaxed),
        model: p.model,
    })
}
