//! Progress: live counters shared by the workers and the writer, shown as an indicatif bar on
//! a terminal or as one plain line per interval otherwise (cron logs). The only indicatif user.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio_util::sync::CancellationToken;

use crate::limit::Flow;
use crate::output::Outcome;
use crate::settings::ProgressMode;

/// Counters of the rows sent in this run; written with relaxed atomics, read by the display.
#[derive(Debug)]
pub struct Live {
    /// Rows this run will send (skipped rows excluded).
    pub total: u64,
    pub started: Instant,
    pub done: AtomicU64,
    pub ok: AtomicU64,
    pub failed: AtomicU64,
    pub in_flight: AtomicU64,
    pub retries: AtomicU64,
    /// Answers with status 429.
    pub rate_limited: AtomicU64,
    /// Flow control, read for its window and pace when a line is shown (not per request).
    flow: Option<Arc<Flow>>,
    pub input_tokens: AtomicU64,
    pub output_tokens: AtomicU64,
    /// Cost so far, in billionths of the currency unit.
    pub cost_nanos: AtomicU64,
}

impl Live {
    pub fn new(total: u64, flow: Option<Arc<Flow>>) -> Live {
        Live {
            total,
            started: Instant::now(),
            done: AtomicU64::new(0),
            ok: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            rate_limited: AtomicU64::new(0),
            flow,
            input_tokens: AtomicU64::new(0),
            output_tokens: AtomicU64::new(0),
            cost_nanos: AtomicU64::new(0),
        }
    }

    pub fn record(&self, o: &Outcome, cost: Option<f64>) {
        self.done.fetch_add(1, Relaxed);
        match &o.result {
            Ok(r) => {
                self.ok.fetch_add(1, Relaxed);
                if let Some(u) = &r.usage {
                    self.input_tokens.fetch_add(u.input_tokens, Relaxed);
                    self.output_tokens.fetch_add(u.output_tokens, Relaxed);
                }
            }
            Err(_) => {
                self.failed.fetch_add(1, Relaxed);
            }
        }
        if let Some(c) = cost {
            self.cost_nanos.fetch_add((c * 1e9).round() as u64, Relaxed);
        }
    }

    /// The concurrency window now.
    fn window(&self) -> usize {
        self.flow.as_ref().map_or(0, |f| f.limit())
    }

    /// One plain progress line (no carriage return).
    pub fn line(&self) -> String {
        let done = self.done.load(Relaxed);
        let elapsed = self.started.elapsed().as_secs_f64();
        let rate = if elapsed > 0.0 {
            done as f64 / elapsed
        } else {
            0.0
        };
        let pct = if self.total > 0 {
            100.0 * done as f64 / self.total as f64
        } else {
            100.0
        };
        let eta = if rate > 0.0 {
            let left = self.total.saturating_sub(done) as f64 / rate;
            humantime::format_duration(Duration::from_secs(left.round() as u64)).to_string()
        } else {
            "-".to_string()
        };
        let pace = match self.flow.as_ref().and_then(|f| f.pace()) {
            None => String::new(),
            Some(p) => format!(" (paced at {p:.1}/s)"),
        };
        format!(
            "progress: {done}/{} rows ({pct:.0}%), ok {}, failed {}, in flight {} (limit {}), \
             retries {}, 429s {}{pace}, {rate:.1} rows/s, tokens {} in / {} out, cost {:.6}, \
             eta {eta}",
            self.total,
            self.ok.load(Relaxed),
            self.failed.load(Relaxed),
            self.in_flight.load(Relaxed),
            self.window(),
            self.retries.load(Relaxed),
            self.rate_limited.load(Relaxed),
            self.input_tokens.load(Relaxed),
            self.output_tokens.load(Relaxed),
            self.cost_nanos.load(Relaxed) as f64 / 1e9,
        )
    }
}

/// Shows progress until `done` is cancelled. Returns at once when progress is off.
pub async fn show(
    live: Arc<Live>,
    mode: ProgressMode,
    interval: Duration,
    done: CancellationToken,
) {
    if mode == ProgressMode::Off {
        return;
    }
    if std::io::stderr().is_terminal() {
        bar(live, done).await;
    } else {
        plain(live, interval, done).await;
    }
}

async fn plain(live: Arc<Live>, interval: Duration, done: CancellationToken) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    loop {
        tokio::select! {
            _ = done.cancelled() => return,
            _ = tick.tick() => {
                crate::printer::say(live.line());
            }
        }
    }
}

async fn bar(live: Arc<Live>, done: CancellationToken) {
    let pb = ProgressBar::with_draw_target(Some(live.total), ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template("{bar:30} {pos}/{len} {per_sec} eta {eta} | {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    pb.set_style(style);
    crate::printer::set_bar(Some(pb.clone()));
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        pb.set_position(live.done.load(Relaxed));
        pb.set_message(format!(
            "ok {} failed {} in flight {}/{} 429s {} | tokens {}/{} | cost {:.4}",
            live.ok.load(Relaxed),
            live.failed.load(Relaxed),
            live.in_flight.load(Relaxed),
            live.window(),
            live.rate_limited.load(Relaxed),
            live.input_tokens.load(Relaxed),
            live.output_tokens.load(Relaxed),
            live.cost_nanos.load(Relaxed) as f64 / 1e9,
        ));
        tokio::select! {
            _ = done.cancelled() => break,
            _ = tick.tick() => {}
        }
    }
    crate::printer::set_bar(None);
    pb.finish_and_clear();
}
