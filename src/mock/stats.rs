//! The mock's counters: atomics bumped by the request handler and the response bodies, and
//! the snapshot served at `/stats` and printed by `batchgen mock-server` on exit.

use std::sync::atomic::{AtomicU64, Ordering};

use super::wire::Style;

/// Counters of a running mock server; `docs/mock.md` (Stats) says what each counts.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct StatsSnapshot {
    pub requests: u64,
    pub ok: u64,
    pub rate_limited: u64,
    pub server_errors: u64,
    pub unavailable: u64,
    pub resets: u64,
    pub malformed: u64,
    pub truncated: u64,
    pub hangs: u64,
    pub bad_requests: u64,
    pub input_tokens: u64,
    /// Including the reasoning tokens.
    pub output_tokens: u64,
    pub reasoning_tokens: u64,
    pub chat_requests: u64,
    pub responses_requests: u64,
    pub native_requests: u64,
    /// Batch API: successful `POST …/files`.
    pub files_uploaded: u64,
    /// Batch API: the lines (other than blank ones) of every uploaded file.
    pub batch_lines_uploaded: u64,
    pub batches_created: u64,
    pub batches_cancelled: u64,
    /// Batch API: lines run through the answer engine (not those that expired or were
    /// cancelled).
    pub batch_lines_answered: u64,
}

/// Counters; every field matches one in [`StatsSnapshot`]. The handler bumps the counters of
/// a request's fate directly; the request and token counts change only through the methods.
#[derive(Default)]
pub(crate) struct Stats {
    requests: AtomicU64,
    ok: AtomicU64,
    pub(crate) rate_limited: AtomicU64,
    pub(crate) server_errors: AtomicU64,
    pub(crate) unavailable: AtomicU64,
    pub(crate) resets: AtomicU64,
    pub(crate) malformed: AtomicU64,
    pub(crate) truncated: AtomicU64,
    pub(crate) hangs: AtomicU64,
    pub(crate) bad_requests: AtomicU64,
    input_tokens: AtomicU64,
    output_tokens: AtomicU64,
    reasoning_tokens: AtomicU64,
    chat_requests: AtomicU64,
    responses_requests: AtomicU64,
    native_requests: AtomicU64,
    pub(crate) files_uploaded: AtomicU64,
    pub(crate) batch_lines_uploaded: AtomicU64,
    pub(crate) batches_created: AtomicU64,
    pub(crate) batches_cancelled: AtomicU64,
    pub(crate) batch_lines_answered: AtomicU64,
}

/// Counts one more of `counter` (a request's fate: a fault or a bad request).
pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Counts `n` more of `counter` (the Batch API's line counts).
pub(crate) fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

impl Stats {
    /// A complete successful answer; `output_tokens` includes `reasoning_tokens`.
    pub(crate) fn record_ok(&self, input_tokens: u64, output_tokens: u64, reasoning_tokens: u64) {
        self.input_tokens.fetch_add(input_tokens, Ordering::Relaxed);
        self.output_tokens
            .fetch_add(output_tokens, Ordering::Relaxed);
        if reasoning_tokens > 0 {
            self.reasoning_tokens
                .fetch_add(reasoning_tokens, Ordering::Relaxed);
        }
        bump(&self.ok);
    }

    /// A request whose body was read.
    pub(crate) fn record_request(&self, style: Style) {
        bump(&self.requests);
        bump(match style {
            Style::Chat => &self.chat_requests,
            Style::Responses => &self.responses_requests,
            Style::Native => &self.native_requests,
        });
    }

    pub(crate) fn snapshot(&self) -> StatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            requests: get(&self.requests),
            ok: get(&self.ok),
            rate_limited: get(&self.rate_limited),
            server_errors: get(&self.server_errors),
            unavailable: get(&self.unavailable),
            resets: get(&self.resets),
            malformed: get(&self.malformed),
            truncated: get(&self.truncated),
            hangs: get(&self.hangs),
            bad_requests: get(&self.bad_requests),
            input_tokens: get(&self.input_tokens),
            output_tokens: get(&self.output_tokens),
            reasoning_tokens: get(&self.reasoning_tokens),
            chat_requests: get(&self.chat_requests),
            responses_requests: get(&self.responses_requests),
            native_requests: get(&self.native_requests),
            files_uploaded: get(&self.files_uploaded),
            batch_lines_uploaded: get(&self.batch_lines_uploaded),
            batches_created: get(&self.batches_created),
            batches_cancelled: get(&self.batches_cancelled),
            batch_lines_answered: get(&self.batch_lines_answered),
        }
    }
}
