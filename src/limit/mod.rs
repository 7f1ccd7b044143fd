//! Flow control: client-side rate limits (`--rpm`, `--tpm`), a cool-down shared by the whole
//! pool after a 429, a pace learned from 429s when the endpoint's limit is unknown, and an
//! adaptive window on the attempts in flight between 1 and `-c`: it starts fully open, halves
//! on 429s and timeouts, and grows back by about one per window of successes (AIMD).
//!
//! There is no start ramp: no answer from an LLM endpoint comes back within any ramp short
//! enough to be worth its cost, so a ramp probes nothing, while it delays the first requests
//! and, since each worker's later requests follow its first, every later wave too (about 20 ms
//! of a 4 s run at `-c 256` measured). A TCP-style slow start, doubling once per round trip,
//! would cost whole round trips. The cool-down and the halving react to the first 429s of a
//! burst limit instead.
//!
//! The window alone cannot hold a fast endpoint to a rate: at a few milliseconds per answer
//! even one request in flight exceeds most rate limits. So 429s also set a pace: when at least
//! 25% (and at least 3) of the last second's attempts were 429s, the pace becomes 90% of the
//! rate of attempts the endpoint admitted (anything but a 429) over that second; it then grows
//! by 5% per second while 429s keep coming and by 20% per second after a second without any,
//! until 429s cut it again. It never falls below half the most attempts ever admitted in one
//! second. A rare 429 only pauses the pool for its `Retry-After`.
//!
//! The limits are token buckets of our own ([`Bucket`]) rather than the `governor` crate: the
//! TPM limit spends an estimate before sending and corrects it when the usage arrives, which
//! needs a bucket that can be refunded and can go into debt, and the buckets run on tokio's
//! clock, so the tests drive them with paused time.
//!
//! With `--limits-redis` the buckets and the cool-down live in Redis instead ([`shared`]), behind
//! the same two calls (acquire, adjust), so that several processes share one budget.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::sync::lock;
use tokio::time::Instant;

mod bucket;
mod pace;
pub mod shared;

pub use bucket::Bucket;
use pace::Pace;
pub use shared::Remote;
use shared::SharedBucket;

/// A rate limit: a bucket of this process, or one shared through Redis.
#[derive(Debug)]
enum Budget {
    Local(Bucket),
    Shared(SharedBucket),
}

impl Budget {
    async fn acquire(&self, n: f64) {
        match self {
            Budget::Local(b) => b.acquire(n).await,
            Budget::Shared(b) => b.acquire(n).await,
        }
    }

    async fn adjust(&self, n: f64) {
        match self {
            Budget::Local(b) => b.adjust(n).await,
            Budget::Shared(b) => b.adjust(n).await,
        }
    }
}

/// The concurrency window.
#[derive(Debug)]
struct Window {
    /// Current limit on requests in flight, in [1, max].
    limit: f64,
    max: f64,
    /// Below this the window grows by one per success (slow start), above it by 1/limit.
    threshold: f64,
    in_flight: usize,
    /// When the window was last cut: it is cut at most once per cool-down.
    last_cut: Option<Instant>,
}

/// Cool-down after a 429 that came without `Retry-After`, and the shortest cut interval.
const DEFAULT_COOL_DOWN: Duration = Duration::from_secs(1);
/// Bytes of request body per input token before any usage has been seen: right for CJK text,
/// a little high (so cautious) for English.
const INITIAL_TOKENS_PER_BYTE: f64 = 1.0 / 3.0;
/// Output tokens expected before any answer has been seen, when `--max-tokens` is not set.
pub const INITIAL_OUTPUT_GUESS: u64 = 256;

/// Flow control shared by the dispatcher and every worker.
#[derive(Debug)]
pub struct Flow {
    rpm: Option<Budget>,
    tpm: Option<Budget>,
    /// `--limits-redis`: where the buckets and the cool-down are shared.
    remote: Option<Arc<Remote>>,
    max_tokens: Option<u64>,
    window: Mutex<Window>,
    freed: Notify,
    /// No attempt starts before this (a 429's cool-down, or an exhausted rate-limit header).
    pause_until: Mutex<Option<Instant>>,
    pace: Mutex<Pace>,
    /// Sums over answers with usage, to learn the estimate: body bytes, input and output
    /// tokens, answers.
    seen_bytes: AtomicU64,
    seen_input: AtomicU64,
    seen_output: AtomicU64,
    seen_answers: AtomicU64,
    seen_max_output: AtomicU64,
    seen_reasoning: std::sync::atomic::AtomicBool,
    /// Answers with status 429.
    pub rate_limited: AtomicU64,
}

/// What an attempt spent from the TPM bucket, to correct once its usage is known.
#[derive(Debug, Clone, Copy)]
pub struct Spend {
    tokens: f64,
}

/// How an attempt ended, as far as flow control cares.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Signal {
    /// An answer with this many tokens in and out (0 when the answer had no usage), and
    /// whether it thought.
    Answered {
        input: u64,
        output: u64,
        reasoning: bool,
    },
    /// A 429; the server's `Retry-After` if it sent one.
    RateLimited(Option<Duration>),
    /// A timeout: the endpoint is overloaded or the network is.
    Timeout,
    /// Anything else: no change.
    Other,
}

impl Flow {
    pub fn new(
        concurrency: usize,
        rpm: Option<u64>,
        tpm: Option<u64>,
        max_tokens: Option<u64>,
    ) -> Flow {
        let max = concurrency.max(1) as f64;
        Flow {
            rpm: rpm.map(|r| Budget::Local(Bucket::requests_per_minute(r))),
            tpm: tpm.map(|t| Budget::Local(Bucket::tokens_per_minute(t))),
            remote: None,
            max_tokens,
            window: Mutex::new(Window {
                limit: max,
                max,
                threshold: max,
                in_flight: 0,
                last_cut: None,
            }),
            freed: Notify::new(),
            pause_until: Mutex::new(None),
            pace: Mutex::new(Pace::new()),
            seen_bytes: AtomicU64::new(0),
            seen_input: AtomicU64::new(0),
            seen_output: AtomicU64::new(0),
            seen_answers: AtomicU64::new(0),
            seen_max_output: AtomicU64::new(0),
            seen_reasoning: std::sync::atomic::AtomicBool::new(false),
            rate_limited: AtomicU64::new(0),
        }
    }

    /// As [`Flow::new`], with the rate limits and the cool-down shared through `remote` by
    /// every process on the same key. While Redis is lost, each process keeps 1/N of the
    /// budget locally (N: the remote's number of shards).
    pub fn shared(
        concurrency: usize,
        rpm: Option<u64>,
        tpm: Option<u64>,
        max_tokens: Option<u64>,
        remote: Arc<Remote>,
    ) -> Flow {
        let n = remote.shards();
        let part = |v: u64| (v / n).max(1);
        let mut flow = Flow::new(concurrency, None, None, max_tokens);
        flow.rpm = rpm.map(|r| {
            let (whole, part) = (
                Bucket::requests_per_minute(r),
                Bucket::requests_per_minute(part(r)),
            );
            Budget::Shared(SharedBucket::new(remote.clone(), "rpm", whole, part))
        });
        flow.tpm = tpm.map(|t| {
            let (whole, part) = (
                Bucket::tokens_per_minute(t),
                Bucket::tokens_per_minute(part(t)),
            );
            Budget::Shared(SharedBucket::new(remote.clone(), "tpm", whole, part))
        });
        flow.remote = Some(remote);
        flow
    }

    /// The current concurrency limit (for the progress display).
    pub fn limit(&self) -> usize {
        lock(&self.window).limit as usize
    }

    /// Waits for room in the concurrency window; the slot is held until dropped.
    pub async fn slot(self: &Arc<Self>) -> Slot {
        loop {
            let freed = self.freed.notified();
            {
                let mut w = lock(&self.window);
                if (w.in_flight as f64) < w.limit.floor() {
                    w.in_flight += 1;
                    return Slot { flow: self.clone() };
                }
            }
            freed.await;
        }
    }

    /// The tokens a request is expected to use: its input from its size (with the ratio
    /// learned from the usage seen so far), plus its expected output.
    pub fn estimate(&self, body_bytes: usize) -> f64 {
        let answers = self.seen_answers.load(Relaxed);
        let output = match self.max_tokens {
            Some(m) => m as f64,
            None if answers == 0 => INITIAL_OUTPUT_GUESS as f64,
            None => self.seen_output.load(Relaxed) as f64 / answers as f64,
        };
        self.input_estimate(body_bytes) + output
    }

    /// The input tokens of a request of this size, by the ratio learned so far.
    pub fn input_estimate(&self, body_bytes: usize) -> f64 {
        let bytes = self.seen_bytes.load(Relaxed);
        let ratio = if bytes == 0 {
            INITIAL_TOKENS_PER_BYTE
        } else {
            self.seen_input.load(Relaxed) as f64 / bytes as f64
        };
        body_bytes as f64 * ratio
    }

    /// The most output tokens an answer is expected to have: `--max-tokens`, else a quarter
    /// more than the most seen so far (the initial guess before any answer).
    pub fn output_bound(&self) -> u64 {
        self.max_tokens
            .unwrap_or_else(|| match self.seen_max_output.load(Relaxed) {
                0 => INITIAL_OUTPUT_GUESS,
                m => m + m.div_ceil(4),
            })
    }

    /// Whether any answer so far had reasoning tokens.
    pub fn seen_reasoning(&self) -> bool {
        self.seen_reasoning.load(Relaxed)
    }

    /// Waits until an attempt may start: after any cool-down, within `--rpm`, and within
    /// `--tpm` for its estimated tokens. Retries ask again: they spend quota too.
    pub async fn before_attempt(&self, body_bytes: usize) -> Spend {
        loop {
            let until = *lock(&self.pause_until);
            match until {
                Some(t) if t > Instant::now() => tokio::time::sleep_until(t).await,
                _ => break,
            }
        }
        let start = {
            let mut pace = lock(&self.pace);
            pace.rate.map(|rate| {
                let start = pace.next.max(Instant::now());
                pace.next = start + Duration::from_secs_f64(1.0 / rate);
                start
            })
        };
        if let Some(t) = start {
            tokio::time::sleep_until(t).await;
        }
        // With no bucket to carry it, the shared cool-down takes a round trip of its own.
        if let (Some(remote), None, None) = (&self.remote, &self.rpm, &self.tpm) {
            remote.wait_pause().await;
        }
        let tokens = match &self.tpm {
            Some(b) => {
                let t = self.estimate(body_bytes);
                b.acquire(t).await;
                t
            }
            None => 0.0,
        };
        // The request bucket comes last, so that nothing between it and the send can bunch
        // its starts: attempts held by a token debt would otherwise all go at once after it.
        if let Some(b) = &self.rpm {
            b.acquire(1.0).await;
        }
        Spend { tokens }
    }

    /// Waits for a slot in the window, then as [`Flow::before_attempt`] does, unless `stop` is
    /// cancelled first: every wait (window, cool-down, pace, `--rpm`, `--tpm`) ends at the stop,
    /// and `None` says the attempt must not start.
    pub async fn wait_to_start(
        self: &Arc<Self>,
        body_bytes: usize,
        stop: &CancellationToken,
    ) -> Option<(Slot, Spend)> {
        // The waits first: when nothing holds the attempt back (the common case at speed), the
        // stop is never registered with, only checked once, after.
        let ready = tokio::select! {
            biased;
            ready = async {
                let slot = self.slot().await;
                (slot, self.before_attempt(body_bytes).await)
            } => ready,
            _ = stop.cancelled() => return None,
        };
        (!stop.is_cancelled()).then_some(ready)
    }

    /// Learns from how an attempt ended.
    pub async fn after_attempt(&self, body_bytes: usize, spend: Spend, signal: Signal) {
        match signal {
            Signal::Answered {
                input,
                output,
                reasoning,
            } => {
                if reasoning {
                    self.seen_reasoning.store(true, Relaxed);
                }
                if input > 0 {
                    self.seen_bytes.fetch_add(body_bytes as u64, Relaxed);
                    self.seen_input.fetch_add(input, Relaxed);
                    self.seen_output.fetch_add(output, Relaxed);
                    self.seen_answers.fetch_add(1, Relaxed);
                    self.seen_max_output.fetch_max(output, Relaxed);
                    if let Some(b) = &self.tpm {
                        b.adjust((input + output) as f64 - spend.tokens).await;
                    }
                }
                lock(&self.pace).count(Instant::now(), false);
                self.grow();
            }
            Signal::RateLimited(after) => {
                self.rate_limited.fetch_add(1, Relaxed);
                let cool = after.unwrap_or(DEFAULT_COOL_DOWN);
                self.pause_for(cool);
                let now = Instant::now();
                let overloaded = {
                    let mut pace = lock(&self.pace);
                    pace.count(now, true);
                    pace.overloaded(now)
                };
                if overloaded && self.cut(cool.max(DEFAULT_COOL_DOWN)) {
                    lock(&self.pace).slow_down(now);
                }
                // A refused request used no tokens.
                if let Some(b) = &self.tpm {
                    b.adjust(-spend.tokens).await;
                }
            }
            Signal::Timeout => {
                lock(&self.pace).count(Instant::now(), false);
                self.cut(DEFAULT_COOL_DOWN);
            }
            // Other failures were still admitted by the endpoint's rate limit: counting them
            // keeps a run with many failing rows from pacing itself down.
            Signal::Other => lock(&self.pace).count(Instant::now(), false),
        }
    }

    /// Holds every new attempt for `d` from now (never shortens a longer pause).
    pub fn pause_for(&self, d: Duration) {
        let until = Instant::now() + d;
        {
            let mut p = lock(&self.pause_until);
            if p.is_none_or(|t| t < until) {
                *p = Some(until);
            }
        }
        // The other processes hear of it too; this one does not wait for Redis to answer.
        if let Some(remote) = &self.remote
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            let remote = remote.clone();
            rt.spawn(async move { remote.pause_for(d).await });
        }
    }

    fn grow(&self) {
        let mut w = lock(&self.window);
        if w.limit >= w.max {
            return;
        }
        let before = w.limit.floor();
        let step = if w.limit < w.threshold {
            1.0
        } else {
            1.0 / w.limit
        };
        w.limit = (w.limit + step).min(w.max);
        let opened = w.limit.floor() > before;
        drop(w);
        // Only a new whole slot lets a waiter in.
        if opened {
            self.freed.notify_waiters();
        }
    }

    /// Halves the window, at most once per `interval`: the answers of requests already in
    /// flight when the first 429 came say nothing new. Returns whether it cut.
    fn cut(&self, interval: Duration) -> bool {
        let now = Instant::now();
        let mut w = lock(&self.window);
        if w.last_cut.is_some_and(|t| now.duration_since(t) < interval) {
            return false;
        }
        w.last_cut = Some(now);
        w.limit = (w.limit / 2.0).max(1.0);
        w.threshold = w.limit;
        true
    }

    /// The pace learned from 429s, in attempts per second (`None`: no 429 yet).
    pub fn pace(&self) -> Option<f64> {
        lock(&self.pace).rate
    }
}

/// A place in the concurrency window.
#[derive(Debug)]
pub struct Slot {
    flow: Arc<Flow>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        lock(&self.flow.window).in_flight -= 1;
        // One slot freed lets one waiter in (a stored permit if none waits yet).
        self.flow.freed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::pace::MIN_PACE;
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn rpm_is_spread_evenly_over_each_second() {
        let b = Bucket::requests_per_minute(600); // 10 per second, no burst
        let start = Instant::now();
        for _ in 0..11 {
            b.acquire(1.0).await;
        }
        let t = start.elapsed().as_secs_f64();
        assert!(
            (t - 1.0).abs() < 0.01,
            "the first second holds 10 + 1, took {t}"
        );
        for _ in 0..50 {
            b.acquire(1.0).await;
        }
        let t = start.elapsed().as_secs_f64();
        assert!((t - 6.0).abs() < 0.01, "50 more at 10/s take 5 s, took {t}");
    }

    /// The most units started in any closed one-second window, over (start, units) pairs.
    fn most_in_any_second(starts: &[(Instant, f64)]) -> f64 {
        starts
            .iter()
            .map(|(t, _)| {
                starts
                    .iter()
                    .filter(|(u, _)| *u >= *t && *u <= *t + Duration::from_secs(1))
                    .map(|(_, n)| n)
                    .sum::<f64>()
            })
            .fold(0.0, f64::max)
    }

    /// Starts `tasks` attempts at once, as many workers would, and records when each was
    /// let through and the tokens it spent.
    async fn wave(f: &Arc<Flow>, tasks: usize, body: usize) -> Vec<(Instant, f64)> {
        let mut handles = Vec::new();
        for _ in 0..tasks {
            let f = f.clone();
            handles.push(tokio::spawn(async move {
                let spend = f.before_attempt(body).await;
                (Instant::now(), spend.tokens)
            }));
        }
        let mut starts = Vec::new();
        for h in handles {
            starts.push(h.await.expect("task"));
        }
        starts
    }

    #[tokio::test(start_paused = true)]
    async fn no_second_starts_more_than_rpm_over_60_plus_one_first_or_after_idle() {
        // 20 a second; then rates just under and over a whole number a second, and a fast one.
        for rpm in [1200, 1259, 1201, 90, 15_000] {
            let rate = rpm as f64 / 60.0;
            let bound = (rate + 1.0).floor();
            let f = Arc::new(Flow::new(64, Some(rpm), None, None));
            let start = Instant::now();
            let mut starts = wave(&f, 64, 300).await;
            // Not slower than the rate either: 64 starts, the first at once (within 1%: the
            // timer rounds each wait up to a millisecond).
            let first = start.elapsed().as_secs_f64();
            let ideal = 63.0 / rate;
            assert!((first - ideal).abs() < 0.01 * ideal, "{rpm}: took {first}");
            tokio::time::sleep(Duration::from_secs(10)).await;
            starts.extend(wave(&f, 64, 300).await);
            let requests: Vec<(Instant, f64)> = starts.iter().map(|(t, _)| (*t, 1.0)).collect();
            let most = most_in_any_second(&requests);
            assert!(
                most <= bound,
                "{rpm}: {most} requests started within one second"
            );
            if rate > 1.0 && rate < 63.0 {
                let after_idle: Vec<_> = requests[64..].to_vec();
                assert_eq!(
                    most_in_any_second(&after_idle),
                    bound,
                    "{rpm}: the rate is used"
                );
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn no_second_starts_more_than_tpm_over_60_tokens_plus_one_request() {
        // 1000 tokens a second; each request is estimated at 100 input + 100 output tokens.
        let f = Arc::new(Flow::new(64, None, Some(60_000), Some(100)));
        let mut starts = wave(&f, 40, 300).await;
        assert!(starts.iter().all(|(_, n)| (*n - 200.0).abs() < 1e-9));
        tokio::time::sleep(Duration::from_secs(10)).await;
        starts.extend(wave(&f, 40, 300).await);
        let most = most_in_any_second(&starts);
        assert!(
            most <= 1000.0 + 200.0,
            "{most} tokens started within one second"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_token_debt_does_not_bunch_the_request_limit() {
        // 1 request a second; 10,000 tokens a second, so tokens alone would let 50 a second go.
        let f = Arc::new(Flow::new(16, Some(60), Some(600_000), Some(100)));
        if let Some(b) = &f.tpm {
            // An answer used far more than its estimate: five seconds of tokens are owed.
            b.adjust(50_000.0).await;
        }
        let starts = wave(&f, 10, 300).await;
        let requests: Vec<(Instant, f64)> = starts.iter().map(|(t, _)| (*t, 1.0)).collect();
        let most = most_in_any_second(&requests);
        assert!(most <= 2.0, "{most} requests started within one second");
    }

    #[tokio::test(start_paused = true)]
    async fn slow_rates_have_a_burst_of_one() {
        let b = Bucket::requests_per_minute(30); // one every 2 s
        let start = Instant::now();
        for _ in 0..3 {
            b.acquire(1.0).await;
        }
        let t = start.elapsed().as_secs_f64();
        assert!((t - 4.0).abs() < 0.01, "{t}");
    }

    #[tokio::test(start_paused = true)]
    async fn tpm_debt_and_refund() {
        let b = Bucket::tokens_per_minute(60_000); // 1000 tokens per second
        let start = Instant::now();
        b.acquire(5000.0).await; // larger than the bucket: goes 4000 into debt
        assert_eq!(start.elapsed(), Duration::ZERO);
        b.acquire(1000.0).await; // must wait for the debt plus its own 1000
        assert!((start.elapsed().as_secs_f64() - 5.0).abs() < 0.01);
        b.adjust(-1000.0).await; // it used nothing after all
        let t = Instant::now();
        b.acquire(1000.0).await;
        assert_eq!(t.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_are_served_in_order() {
        let b = std::sync::Arc::new(Bucket::requests_per_minute(60)); // 1 per second
        b.acquire(1.0).await;
        let mut tasks = Vec::new();
        for i in 0..5u64 {
            let b = b.clone();
            tasks.push(tokio::spawn(async move {
                b.acquire(1.0).await;
                (i, Instant::now())
            }));
            tokio::task::yield_now().await;
        }
        let mut times = Vec::new();
        for t in tasks {
            times.push(t.await.expect("task"));
        }
        for w in times.windows(2) {
            assert!(w[0].1 < w[1].1, "{times:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn open_window_then_aimd() {
        let f = Flow::new(64, None, None, None);
        assert_eq!(f.limit(), 64);
        let answered = Signal::Answered {
            input: 10,
            output: 10,
            reasoning: false,
        };
        for _ in 0..20 {
            f.after_attempt(30, Spend { tokens: 0.0 }, answered).await;
        }
        assert_eq!(f.limit(), 64, "never above -c");
        // Three 429s in 23 answers are noise; seven in 27 are over the 25% share.
        for _ in 0..3 {
            f.after_attempt(30, Spend { tokens: 0.0 }, Signal::RateLimited(None))
                .await;
        }
        assert_eq!(f.limit(), 64);
        for _ in 0..4 {
            f.after_attempt(30, Spend { tokens: 0.0 }, Signal::RateLimited(None))
                .await;
        }
        assert_eq!(f.limit(), 32);
        // More 429s from requests already in flight do not cut again.
        f.after_attempt(30, Spend { tokens: 0.0 }, Signal::RateLimited(None))
            .await;
        assert_eq!(f.limit(), 32);
        // Past a cut, growth is additive: about one per window of successes.
        for _ in 0..32 {
            f.after_attempt(30, Spend { tokens: 0.0 }, answered).await;
        }
        assert_eq!(f.limit(), 32, "32.99 floors to 32");
        f.after_attempt(30, Spend { tokens: 0.0 }, answered).await;
        assert_eq!(f.limit(), 33);
        tokio::time::advance(Duration::from_secs(2)).await;
        f.after_attempt(30, Spend { tokens: 0.0 }, Signal::Timeout)
            .await;
        assert_eq!(f.limit(), 16);
        for _ in 0..10 {
            f.after_attempt(30, Spend { tokens: 0.0 }, Signal::Timeout)
                .await;
        }
        assert!(f.limit() >= 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_pauses_every_new_attempt() {
        let f = Flow::new(8, None, None, None);
        let start = Instant::now();
        f.after_attempt(
            30,
            Spend { tokens: 0.0 },
            Signal::RateLimited(Some(Duration::from_millis(1500))),
        )
        .await;
        f.before_attempt(30).await;
        assert_eq!(start.elapsed(), Duration::from_millis(1500));
        // A shorter pause does not shorten a longer one.
        f.pause_for(Duration::from_secs(3));
        f.pause_for(Duration::from_secs(1));
        f.before_attempt(30).await;
        assert_eq!(start.elapsed(), Duration::from_millis(4500));
    }

    #[tokio::test(start_paused = true)]
    async fn the_window_starts_fully_open() {
        let f = std::sync::Arc::new(Flow::new(100, None, None, None));
        let start = Instant::now();
        let mut slots = Vec::new();
        for _ in 0..100 {
            slots.push(f.slot().await);
        }
        assert_eq!(start.elapsed(), Duration::ZERO, "all of -c go at once");
        assert_eq!(f.limit(), 100);
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_sets_a_pace_from_the_recent_answer_rate() {
        let f = Flow::new(8, None, None, None);
        let answered = Signal::Answered {
            input: 1,
            output: 1,
            reasoning: false,
        };
        let none = Spend { tokens: 0.0 };
        // 20 answers per second for two seconds.
        for _ in 0..40 {
            f.after_attempt(30, none, answered).await;
            tokio::time::advance(Duration::from_millis(50)).await;
        }
        assert_eq!(f.pace(), None);
        for _ in 0..7 {
            f.after_attempt(30, none, Signal::RateLimited(Some(Duration::ZERO)))
                .await;
        }
        let pace = f.pace().unwrap_or_default();
        // 90% of the 18 to 20 answers seen in the last second, by where the slots fall.
        assert!((16.0..=18.0).contains(&pace), "{pace}");
        // Attempts are then spaced by 1/pace.
        let start = Instant::now();
        for _ in 0..10 {
            f.before_attempt(30).await;
        }
        let took = start.elapsed().as_secs_f64();
        assert!((took - 9.0 / pace).abs() < 0.01, "{took}");
        // Each answer adds 0.05 per second.
        for _ in 0..20 {
            f.after_attempt(30, none, answered).await;
        }
        let grown = f.pace().unwrap_or_default();
        assert!((grown - pace - 1.0).abs() < 1e-9, "{grown}");
    }

    #[tokio::test(start_paused = true)]
    async fn window_bounds_requests_in_flight() {
        let f = std::sync::Arc::new(Flow::new(2, None, None, None));
        let a = f.slot().await;
        let _b = f.slot().await;
        let f2 = f.clone();
        let third = tokio::spawn(async move {
            let _c = f2.slot().await;
            Instant::now()
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!third.is_finished());
        drop(a);
        let t = third.await.expect("task");
        assert_eq!(t.duration_since(Instant::now()), Duration::ZERO);
    }

    /// Waits (in paused time) for `wait_to_start` while a stop comes after one second: the
    /// wait must end then, without starting the attempt.
    async fn ends_at_a_stop_after_one_second(f: &Arc<Flow>) {
        let stop = CancellationToken::new();
        let s = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            s.cancel();
        });
        let start = Instant::now();
        assert!(f.wait_to_start(30, &stop).await.is_none());
        assert_eq!(start.elapsed(), Duration::from_secs(1));
        // Once stopped, nothing waits and nothing starts.
        assert!(f.wait_to_start(30, &stop).await.is_none());
        assert_eq!(start.elapsed(), Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_ends_the_bucket_wait() {
        // 6 a minute: after the first, the next may start ten seconds later.
        let f = Arc::new(Flow::new(4, Some(6), None, None));
        let stop = CancellationToken::new();
        while let Some(ready) = tokio::time::timeout(Duration::ZERO, f.wait_to_start(30, &stop))
            .await
            .ok()
            .flatten()
        {
            drop(ready);
        }
        ends_at_a_stop_after_one_second(&f).await;
        let tpm = Arc::new(Flow::new(4, None, Some(60), Some(100)));
        let ready = tpm.wait_to_start(30, &stop).await;
        assert!(ready.is_some(), "the first goes at once, into debt");
        ends_at_a_stop_after_one_second(&tpm).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_ends_the_cool_down_and_the_pace() {
        let f = Arc::new(Flow::new(4, None, None, None));
        // A 429 asking for five minutes holds every new attempt.
        f.after_attempt(
            30,
            Spend { tokens: 0.0 },
            Signal::RateLimited(Some(Duration::from_secs(300))),
        )
        .await;
        ends_at_a_stop_after_one_second(&f).await;
        let paced = Arc::new(Flow::new(4, None, None, None));
        {
            let mut pace = lock(&paced.pace);
            pace.rate = Some(MIN_PACE);
            pace.next = Instant::now() + Duration::from_secs(5);
        }
        ends_at_a_stop_after_one_second(&paced).await;
        // And the window: every slot is taken by attempts that never end.
        let narrow = Arc::new(Flow::new(1, None, None, None));
        let _held = narrow.slot().await;
        ends_at_a_stop_after_one_second(&narrow).await;
    }

    #[tokio::test(start_paused = true)]
    async fn estimate_learns_from_usage() {
        let f = Flow::new(4, None, Some(600_000), None);
        assert!((f.estimate(300) - (100.0 + INITIAL_OUTPUT_GUESS as f64)).abs() < 1e-9);
        let s = f.before_attempt(300).await;
        f.after_attempt(
            300,
            s,
            Signal::Answered {
                input: 60,
                output: 40,
                reasoning: false,
            },
        )
        .await;
        assert!((f.estimate(600) - (120.0 + 40.0)).abs() < 1e-9);
        let capped = Flow::new(4, None, None, Some(10));
        assert!((capped.estimate(30) - 20.0).abs() < 1e-9);
    }
}
