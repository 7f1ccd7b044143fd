//! One row: its attempts under flow control with retries, the switch to streaming for a model
//! that only streams, the structured-output check, and the `--max-cost` reservation before
//! each attempt. Also the state every worker shares, and the stops a row's answers can cause
//! (`--max-failures`, a fatal error, 404s in a row).

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use backon::Retryable;
use tokio_util::sync::CancellationToken;

use crate::client::Client;
use crate::exit::Stop;
use crate::limit::{Flow, Signal};
use crate::pricing::{self, Cost, Prices};
use crate::progress::Live;
use crate::record::Outcome;
use crate::request::{Prepared, Reply};
use crate::retry::{self, ErrorKind, Failure};
use crate::settings::Settings;
use crate::structured::Structured;
use crate::sync::lock;

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

/// What every worker shares. Held (in an `Arc`) by the workers, the writer's failure hook,
/// the tasks that turn a signal or the deadline into a [`Stop`], and the run, which reads the
/// stop and the unrecorded attempts once the writer is done.
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
    /// Cancelled to stop dispatching: by the first signal (the signal task holds a clone),
    /// or through [`Shared::stop_with`] (a fatal error, a cap, the deadline, a failed write).
    /// The workers take no new row and send no new attempt once it is cancelled; the rows in
    /// flight still finish and get their records.
    pub stop: CancellationToken,
    /// Cancelled by a second signal (the signal task holds a clone) or a failed write: the
    /// workers drop the rows in flight, which stay without a record, so a rerun sends them.
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

/// Runs one row to its outcome, counting it for `--max-failures`. `None` when the row ends
/// without a record: a second signal abandoned it, or its next attempt was not sent; its
/// attempts still count, in [`Shared::unrecorded`].
pub async fn run_one(shared: &Shared, prepared: Prepared) -> Option<Outcome> {
    shared.live.in_flight.fetch_add(1, Relaxed);
    let tally = Tally::default();
    let outcome = tokio::select! {
        biased;
        _ = shared.abandon.cancelled() => None,
        o = run_row(shared, prepared, &tally) => o,
    };
    shared.live.in_flight.fetch_sub(1, Relaxed);
    match &outcome {
        Some(o) => shared.count_outcome(o.result.is_err()),
        None => {
            let attempts = u64::from(tally.attempts.load(Relaxed));
            let billed =
                u64::from(tally.billed.load(Relaxed)) + u64::from(tally.on_wire.load(Relaxed));
            let u = &shared.unrecorded;
            u.requests.fetch_add(attempts, Relaxed);
            u.retries.fetch_add(attempts.saturating_sub(1), Relaxed);
            u.possibly_billed.fetch_add(billed, Relaxed);
        }
    }
    outcome
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
        batch_id: None,
    })
}
