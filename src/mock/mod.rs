//! A simulated OpenAI-compatible Chat Completions endpoint (DashScope compatible-mode flavour)
//! for `batchgen mock-server`, `batchgen run --base-url mock`, the black-box tests and
//! benchmarks.
//!
//! # Routes
//!
//! - `POST …/chat/completions` (any path ending so, e.g. `/v1/…` or
//!   `/compatible-mode/v1/…`): the chat endpoint.
//! - `GET /stats`: the [`StatsSnapshot`] as JSON.
//! - Anything else: 404 with an OpenAI-style error body.
//!
//! # Answers
//!
//! The reply is [`reply_for`] of the text of the last user message (text parts of an array
//! content are joined with `\n`). Usage: `prompt_tokens` = sum over all messages of
//! [`count_tokens`]`(content) + 4`, `completion_tokens` = [`count_tokens`]`(reply)`. With
//! `max_completion_tokens` (or else `max_tokens`) = M and a longer reply, the reply is cut to
//! 4·M chars, `completion_tokens` = M and `finish_reason` = `length`. `"stream": true` answers
//! with OpenAI SSE framing: a role chunk, 4–8 content chunks, a finish chunk, a usage chunk
//! (`"choices":[]`) if `stream_options.include_usage`, then `data: [DONE]`; each event is its own
//! write.
//!
//! Invalid JSON, no `messages`, no user message or `max_tokens: 0` get 400
//! `invalid_parameter_error`.
//!
//! # Test triggers (in the last user message)
//!
//! - `[mock:400]`: 400, code `invalid_parameter_error`.
//! - `[mock:moderation]`: 400, code `data_inspection_failed`, message "Input data may contain
//!   inappropriate content.".
//! - `[mock:401]`: 401, code `invalid_api_key`.
//!
//! Triggers and invalid requests are answered before any fault is drawn, and count as
//! `bad_requests`.
//!
//! # Faults
//!
//! After the optional delay (`latency` + uniform `0..=jitter`), one random draw per request
//! against [`FaultRates`] (only for the first `fault_attempts` sightings of the exact same body
//! when that is non-zero) picks at most one fault:
//!
//! - `rate_limit`: 429 `limit_requests`, with `retry-after-ms` and `retry-after` (whole seconds,
//!   rounded up).
//! - `server_error`: 500 `internal_error`.
//! - `unavailable`: 503 with an HTML gateway page (`text/html`).
//! - `reset`: the connection is reset (RST) without any response.
//! - `malformed`: 200 `application/json` whose body is cut-off JSON (also for stream requests).
//! - `truncated`: 200 announcing the full content-length but closing after half the body; for
//!   streams, half the events, no finish chunk, no `[DONE]`, then the connection closes.
//! - `hang`: nothing is sent for `hang`, then the connection closes.
//!
//! # Stats
//!
//! `requests` counts chat requests whose body was read; each ends as exactly one of `ok`, a
//! fault counter or `bad_requests` (a stream the client abandons midway counts as none). `ok`
//! and the token sums count complete successful answers; a stream counts once its last event is
//! produced. 404s and `/stats` are not counted.

mod body;
mod chat;
mod faults;
mod server;

use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use chat::{count_tokens, reply_for};
pub use faults::FaultRates;

/// How the mock endpoint behaves.
#[derive(Debug, Clone)]
pub struct MockConfig {
    /// Fixed delay before answering (default 0).
    pub latency: Duration,
    /// Plus a uniform random delay in `0..=jitter` (default 0).
    pub jitter: Duration,
    /// Fault probabilities (default: all zero).
    pub faults: FaultRates,
    /// 0: faults may hit any attempt. N > 0: faults only on the first N times a given request
    /// body (exact bytes) is seen; later ones always succeed.
    pub fault_attempts: u32,
    /// Sent with 429s as `retry-after-ms` and `retry-after` (seconds, rounded up). Default 1s.
    pub retry_after: Duration,
    /// How long a "hang" fault holds the request before dropping the connection (default 1h).
    pub hang: Duration,
    /// Seed for the fault draws (random if `None`).
    pub seed: Option<u64>,
}

impl Default for MockConfig {
    fn default() -> Self {
        MockConfig {
            latency: Duration::ZERO,
            jitter: Duration::ZERO,
            faults: FaultRates::default(),
            fault_attempts: 0,
            retry_after: Duration::from_secs(1),
            hang: Duration::from_secs(3600),
            seed: None,
        }
    }
}

/// Counters of a running mock server; see the module docs for what each counts.
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
    pub output_tokens: u64,
}

/// A running mock endpoint. Dropping it stops the server too (without waiting).
pub struct MockServer {
    addr: SocketAddr,
    cancel: CancellationToken,
    task: Option<JoinHandle<()>>,
    stats: Arc<server::Stats>,
}

impl MockServer {
    /// Binds `addr` (use 127.0.0.1:0 for a free port) and serves in a spawned task.
    pub async fn start(cfg: MockConfig, addr: SocketAddr) -> std::io::Result<MockServer> {
        let stats = Arc::new(server::Stats::default());
        let cancel = CancellationToken::new();
        let (addr, task) = server::spawn(cfg, addr, Arc::clone(&stats), cancel.clone()).await?;
        Ok(MockServer {
            addr,
            cancel,
            task: Some(task),
            stats,
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT/v1` (the loopback address if bound to an unspecified one).
    pub fn base_url(&self) -> String {
        let mut addr = self.addr;
        if addr.ip().is_unspecified() {
            addr.set_ip(IpAddr::V4(Ipv4Addr::LOCALHOST));
        }
        format!("http://{addr}/v1")
    }

    /// The counters so far.
    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    /// Stops accepting, ends every connection (hanging requests included) and joins.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// For `batchgen mock-server`: start on 127.0.0.1:`port` (0 = free port), print
/// `mock-server listening on http://127.0.0.1:PORT/v1`, serve until Ctrl-C/SIGTERM, then print
/// the stats as one JSON line and return.
pub async fn run_cli(cfg: MockConfig, port: u16) -> anyhow::Result<()> {
    let server = MockServer::start(cfg, SocketAddr::from((Ipv4Addr::LOCALHOST, port))).await?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "mock-server listening on {}", server.base_url())?;
        out.flush()?;
    }
    wait_for_signal().await?;
    let stats = Arc::clone(&server.stats);
    server.shutdown().await;
    let line = serde_json::to_string(&stats.snapshot())?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()?;
    Ok(())
}

#[cfg(unix)]
async fn wait_for_signal() -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r,
        _ = term.recv() => Ok(()),
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() -> std::io::Result<()> {
    tokio::signal::ctrl_c().await
}
