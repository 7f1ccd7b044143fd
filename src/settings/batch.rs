//! Batch mode's settings: `--batch` and the size of its files, the completion window, the
//! poll interval and `--detach`, with the provider's limits (DashScope hosts take larger files
//! and longer windows, and refuse the native style in a batch).

use std::time::Duration;

use super::duration::or_default;
use super::endpoint::Endpoint;
use super::{ConfigError, bad};
use crate::cli::{BatchArgs, RunArgs};
use crate::request::api::Api;

/// Lines per file: OpenAI's limit, and the default everywhere.
pub const DEFAULT_MAX_ROWS: u64 = 50_000;
/// Bytes per file on OpenAI (and any host that is not DashScope's).
pub const DEFAULT_MAX_BYTES: u64 = 200_000_000;
/// Bytes per file on DashScope hosts.
pub const DASHSCOPE_MAX_BYTES: u64 = 500_000_000;
/// DashScope refuses a line larger than this.
pub const DASHSCOPE_MAX_LINE: u64 = 6_000_000;

/// How `run --batch` sends its rows.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchMode {
    pub max_rows: u64,
    pub max_bytes: u64,
    /// The largest line a file may hold, when the provider has a limit.
    pub max_line: Option<u64>,
    /// `completion_window` as sent, e.g. `24h`.
    pub window: String,
    pub poll_interval: Duration,
    pub detach: bool,
    /// The endpoint is a DashScope host: lines of hybrid models set `enable_thinking`.
    pub dashscope: bool,
}

/// Whether a base URL is a DashScope host (`*.aliyuncs.com`).
pub fn is_dashscope(endpoint: &Endpoint) -> bool {
    let Endpoint::Url(url) = endpoint else {
        return false;
    };
    url.parse::<hyper::Uri>()
        .ok()
        .and_then(|u| u.host().map(str::to_ascii_lowercase))
        .is_some_and(|h| h == "aliyuncs.com" || h.ends_with(".aliyuncs.com"))
}

/// Resolves the batch flags; `None` without `--batch`.
pub(super) fn resolve(
    args: &RunArgs,
    api: Api,
    endpoint: &Endpoint,
) -> Result<Option<BatchMode>, ConfigError> {
    if !args.batch {
        if args.detach {
            return Err(bad("--detach needs --batch"));
        }
        return Ok(None);
    }
    if api == Api::Dashscope {
        return Err(bad(
            "--batch sends OpenAI-compatible lines: use --api chat or --api responses \
             (the DashScope native style has no Batch API)",
        ));
    }
    let dashscope = is_dashscope(endpoint);
    let max_rows = args.batch_max_rows.unwrap_or(DEFAULT_MAX_ROWS);
    if max_rows == 0 {
        return Err(bad("--batch-max-rows must be at least 1"));
    }
    let max_bytes = match args.batch_max_bytes.as_deref() {
        Some(text) => parse_size(text)?,
        None if dashscope => DASHSCOPE_MAX_BYTES,
        None => DEFAULT_MAX_BYTES,
    };
    let window = or_default("batch-window", args.batch_window.as_deref(), "24h")?;
    let hours = window.as_secs() / 3600;
    if window.as_secs() % 3600 != 0 || window.subsec_nanos() != 0 || hours == 0 {
        return Err(bad(
            "--batch-window must be a whole number of hours, e.g. 24h",
        ));
    }
    if dashscope && !(24..=336).contains(&hours) {
        return Err(bad("--batch-window: DashScope accepts 24h to 336h"));
    }
    let poll_interval = or_default("poll-interval", args.poll_interval.as_deref(), "60s")?;
    if poll_interval.is_zero() {
        return Err(bad("--poll-interval must be more than zero"));
    }
    Ok(Some(BatchMode {
        max_rows,
        max_bytes,
        max_line: dashscope.then_some(DASHSCOPE_MAX_LINE),
        window: format!("{hours}h"),
        poll_interval,
        detach: args.detach,
        dashscope,
    }))
}

/// `batchgen batch status|cancel`: the journal and the endpoint to ask.
#[derive(Debug, Clone)]
pub struct BatchTarget {
    pub results: std::path::PathBuf,
    pub base_url: String,
    pub api_key: Option<super::ApiKey>,
}

impl BatchTarget {
    /// Resolves the endpoint as `run` does (flag, environment, region default, key).
    pub fn resolve(
        args: &BatchArgs,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<BatchTarget, ConfigError> {
        let run = RunArgs {
            base_url: args.base_url.clone(),
            region: args.region,
            api_key_env: args.api_key_env.clone(),
            ..RunArgs::default()
        };
        let target = super::endpoint::resolve(&run, &env)?;
        let Endpoint::Url(base_url) = target.endpoint else {
            return Err(bad(
                "the built-in mock lives only as long as its run: name the endpoint's URL",
            ));
        };
        Ok(BatchTarget {
            results: args.results.clone(),
            base_url,
            api_key: target.api_key,
        })
    }
}

/// Parses a size: bytes, or a number with `KB`, `MB`, `GB` (powers of 1000) or `KiB`, `MiB`,
/// `GiB` (powers of 1024).
pub fn parse_size(text: &str) -> Result<u64, ConfigError> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let err = || {
        bad(format!(
            "--batch-max-bytes: `{text}` is not a size; use e.g. 200MB, 50MiB or 1000000"
        ))
    };
    let n: f64 = number.parse().map_err(|_| err())?;
    let scale = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" | "k" => 1e3,
        "mb" | "m" => 1e6,
        "gb" | "g" => 1e9,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        _ => return Err(err()),
    };
    let bytes = (n * scale).round();
    if !(1.0..1e15).contains(&bytes) {
        return Err(bad("--batch-max-bytes must be at least one byte"));
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> RunArgs {
        RunArgs {
            batch: true,
            ..RunArgs::default()
        }
    }

    #[test]
    fn sizes_read_decimal_and_binary_units() {
        assert_eq!(parse_size("200MB").ok(), Some(200_000_000));
        assert_eq!(parse_size("1.5 kB").ok(), Some(1500));
        assert_eq!(parse_size("2MiB").ok(), Some(2 << 20));
        assert_eq!(parse_size("123").ok(), Some(123));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("0").is_err());
    }

    #[test]
    fn defaults_follow_the_host() {
        let openai = Endpoint::Url("https://api.openai.com/v1".into());
        let ds = Endpoint::Url("https://dashscope-intl.aliyuncs.com/compatible-mode/v1".into());
        let m = resolve(&args(), Api::Chat, &openai).ok().flatten();
        assert_eq!(m.as_ref().map(|m| m.max_bytes), Some(DEFAULT_MAX_BYTES));
        assert_eq!(m.as_ref().map(|m| m.max_line), Some(None));
        assert_eq!(m.map(|m| m.window), Some("24h".to_string()));
        let m = resolve(&args(), Api::Chat, &ds).ok().flatten();
        assert_eq!(m.as_ref().map(|m| m.max_bytes), Some(DASHSCOPE_MAX_BYTES));
        assert_eq!(m.map(|m| m.max_line), Some(Some(DASHSCOPE_MAX_LINE)));
        assert!(!is_dashscope(&Endpoint::Url(
            "https://aliyuncs.com.evil.example/v1".into()
        )));
    }

    #[test]
    fn refusals() {
        assert!(resolve(&args(), Api::Dashscope, &Endpoint::Mock).is_err());
        let mut a = args();
        a.batch_window = Some("90m".into());
        assert!(resolve(&a, Api::Chat, &Endpoint::Mock).is_err());
        let ds = Endpoint::Url("https://dashscope.aliyuncs.com/compatible-mode/v1".into());
        a.batch_window = Some("400h".into());
        assert!(resolve(&a, Api::Chat, &ds).is_err());
        a.batch_window = Some("48h".into());
        assert!(resolve(&a, Api::Chat, &ds).is_ok_and(|m| m.is_some()));
        let plain = RunArgs {
            detach: true,
            ..RunArgs::default()
        };
        assert!(resolve(&plain, Api::Chat, &Endpoint::Mock).is_err());
        assert!(
            resolve(&RunArgs::default(), Api::Chat, &Endpoint::Mock).is_ok_and(|m| m.is_none())
        );
    }
}
