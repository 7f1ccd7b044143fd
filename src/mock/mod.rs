//! A simulated Qwen Cloud (DashScope) endpoint speaking its three API styles (OpenAI Chat
//! Completions, the OpenAI Responses API, DashScope native), plain and streamed, with faults
//! and rate limits, for `batchgen mock-server`, `batchgen run --base-url mock`, the black-box
//! tests and benchmarks; and the OpenAI Batch API (files and batches) over that answer engine.
//!
//! The protocol it speaks (routes, answers, wire formats, errors, test triggers, faults and
//! what the stats count) is described in `docs/mock.md`.

mod answer;
mod batch;
mod body;
mod chat;
mod config;
mod errors;
mod faults;
mod limits;
mod message;
mod native;
mod reply;
mod responses;
mod schema;
mod server;
mod stats;
mod text;
mod wire;

use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use config::MockConfig;
pub use faults::FaultRates;
pub use limits::RateLimits;
pub use stats::StatsSnapshot;
pub use text::{count_tokens, reasoning_for, reply_for};

/// A running mock endpoint. Dropping it stops the server too (without waiting).
pub struct MockServer {
    addr: SocketAddr,
    cancel: CancellationToken,
    task: Option<JoinHandle<()>>,
    stats: Arc<stats::Stats>,
}

impl MockServer {
    /// Binds `addr` (use 127.0.0.1:0 for a free port) and serves in a spawned task.
    pub async fn start(cfg: MockConfig, addr: SocketAddr) -> std::io::Result<MockServer> {
        let stats = Arc::new(stats::Stats::default());
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
