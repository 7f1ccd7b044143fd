//! How hard and how long a run may push: concurrency, client-side rates, retries and their
//! backoff, the per-attempt timeout, and the stops (`--max-failures`, `--max-cost`,
//! `--deadline`), and where the rate limits are shared (`--limits-redis`, `--limits-key`).

use std::time::{Duration, SystemTime};

use super::duration::{or_default, parse_deadline};
use super::endpoint::Endpoint;
use super::{ConfigError, bad};
use crate::cli::RunArgs;

/// The environment variable read for `--limits-redis` when the flag is not given.
pub const ENV_REDIS_URL: &str = "BATCHGEN_REDIS_URL";

/// `--limits-redis URL` with its `--limits-key`: the budget shared by every process on the key.
#[derive(Debug, Clone, PartialEq)]
pub struct SharedLimits {
    pub url: String,
    /// The prefix of the Redis keys.
    pub key: String,
}

/// `--limits-redis` (or `BATCHGEN_REDIS_URL`) and `--limits-key` (default: the base URL's host
/// and the model, so that runs against one provider's model share one budget).
pub(super) fn shared(
    args: &RunArgs,
    env: impl Fn(&str) -> Option<String>,
    endpoint: &Endpoint,
    model: &str,
) -> Result<Option<SharedLimits>, ConfigError> {
    let url = match args.limits_redis.clone() {
        Some(u) => u,
        None => match env(ENV_REDIS_URL).filter(|u| !u.trim().is_empty()) {
            Some(u) => u,
            None if args.limits_key.is_some() => {
                return Err(bad("--limits-key needs --limits-redis URL"));
            }
            None => return Ok(None),
        },
    };
    let scheme = url.split_once("://").map(|(s, _)| s);
    if !matches!(scheme, Some("redis" | "unix" | "redis+unix")) {
        return Err(bad(format!(
            "--limits-redis: `{}` is not a redis:// (or unix://) URL",
            url.split('@').next_back().unwrap_or_default()
        )));
    }
    let key = match &args.limits_key {
        Some(k) if k.trim().is_empty() => return Err(bad("--limits-key must not be empty")),
        Some(k) => k.clone(),
        None => {
            let host = match endpoint {
                Endpoint::Mock => "mock",
                Endpoint::Url(u) => host_of(u),
            };
            format!("batchgen:{host}:{model}")
        }
    };
    Ok(Some(SharedLimits { url, key }))
}

/// The host (and port) of a URL, without its user part.
fn host_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    authority.rsplit('@').next().unwrap_or(authority)
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_key_is_the_host_and_the_model() {
        let args = RunArgs {
            limits_redis: Some("redis://127.0.0.1:6379".into()),
            ..RunArgs::default()
        };
        let endpoint =
            Endpoint::Url("https://u:p@dashscope-intl.aliyuncs.com/compatible-mode/v1".into());
        let s = shared(&args, |_| None, &endpoint, "qwen-plus").expect("ok");
        assert_eq!(
            s.map(|s| s.key),
            Some("batchgen:dashscope-intl.aliyuncs.com:qwen-plus".to_string())
        );
        let bad_url = RunArgs {
            limits_redis: Some("http://x".into()),
            ..RunArgs::default()
        };
        assert!(shared(&bad_url, |_| None, &endpoint, "m").is_err());
        let env = |k: &str| (k == ENV_REDIS_URL).then(|| "redis://h:1".to_string());
        let none = RunArgs::default();
        assert!(shared(&none, env, &Endpoint::Mock, "m").is_ok_and(|s| s.is_some()));
        assert!(shared(&none, |_| None, &Endpoint::Mock, "m").is_ok_and(|s| s.is_none()));
    }
}
