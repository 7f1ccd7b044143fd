//! How hard and how long a run may push: concurrency, client-side rates, retries and their
//! backoff, the per-attempt timeout, and the stops (`--max-failures`, `--max-cost`,
//! `--deadline`).

use std::time::{Duration, SystemTime};

use super::duration::{or_default, parse_deadline};
use super::{ConfigError, bad};
use crate::cli::RunArgs;

/// `--max-failures`: a number of failed rows, or a share of the rows finished so far.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MaxFailures {
    Count(u64),
    /// A fraction in (0, 1].
    Share(f64),
}

/// Rows that must have finished before a share of failures is judged.
pub const MAX_FAILURES_MIN_ROWS: u64 = 20;

impl MaxFailures {
    fn parse(text: &str) -> Result<MaxFailures, ConfigError> {
        let t = text.trim();
        let err = || {
            bad(format!(
                "--max-failures: `{text}` is neither a count (e.g. 50) nor a share (e.g. 5%)"
            ))
        };
        if let Some(p) = t.strip_suffix('%') {
            let p: f64 = p.trim().parse().map_err(|_| err())?;
            if !(p > 0.0 && p <= 100.0) {
                return Err(bad("--max-failures: a share must be in (0%, 100%]"));
            }
            return Ok(MaxFailures::Share(p / 100.0));
        }
        let n: u64 = t.parse().map_err(|_| err())?;
        if n == 0 {
            return Err(bad("--max-failures must be at least 1"));
        }
        Ok(MaxFailures::Count(n))
    }

    /// Whether `failed` rows out of `finished` are too many.
    pub fn exceeded(self, failed: u64, finished: u64) -> bool {
        match self {
            MaxFailures::Count(n) => failed >= n,
            MaxFailures::Share(s) => {
                finished >= MAX_FAILURES_MIN_ROWS && failed as f64 >= s * finished as f64
            }
        }
    }
}

/// The limits part of the settings.
pub(super) struct Limits {
    pub concurrency: usize,
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    pub max_cost: Option<f64>,
    pub max_failures: Option<MaxFailures>,
    pub max_retries: u32,
    pub json_retries: u32,
    pub timeout: Duration,
    pub retry_delay: Duration,
    /// At least `retry_delay`.
    pub retry_max_delay: Duration,
}

pub(super) fn resolve(args: &RunArgs) -> Result<Limits, ConfigError> {
    let concurrency = args.concurrency.unwrap_or(16);
    if concurrency == 0 {
        return Err(bad("--concurrency must be at least 1"));
    }
    let max_cost = args.max_cost;
    if max_cost.is_some_and(|c| !(c.is_finite() && c > 0.0)) {
        return Err(bad("--max-cost must be a positive amount"));
    }
    let (rpm, tpm) = (args.rpm, args.tpm);
    if rpm == Some(0) || tpm == Some(0) {
        return Err(bad("--rpm and --tpm must be at least 1"));
    }
    let max_failures = args
        .max_failures
        .as_deref()
        .map(MaxFailures::parse)
        .transpose()?;
    let timeout = or_default("timeout", args.timeout.as_deref(), "300s")?;
    if timeout.is_zero() {
        return Err(bad("--timeout must be more than zero"));
    }
    let retry_delay = or_default("retry-delay", args.retry_delay.as_deref(), "500ms")?;
    let retry_max_delay = or_default("retry-max-delay", args.retry_max_delay.as_deref(), "30s")?;
    Ok(Limits {
        concurrency,
        rpm,
        tpm,
        max_cost,
        max_failures,
        max_retries: args.max_retries.unwrap_or(6),
        json_retries: args.json_retries.unwrap_or(2),
        timeout,
        retry_delay,
        retry_max_delay: retry_max_delay.max(retry_delay),
    })
}

/// `--deadline`: how long after now dispatching stops.
pub(super) fn deadline(args: &RunArgs) -> Result<Option<Duration>, ConfigError> {
    args.deadline
        .as_deref()
        .map(|t| parse_deadline(t, SystemTime::now()))
        .transpose()
}
