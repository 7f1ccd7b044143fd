//! Resolves the `mock-server` flags into the simulated endpoint's configuration.

use super::duration::parse_duration;
use super::{ConfigError, bad};
use crate::cli::MockServerArgs;
use crate::mock::{FaultRates, MockConfig, RateLimits};

/// The simulated endpoint `args` describe. `env` looks up the variable `--require-key-env`
/// names.
pub fn resolve(
    args: &MockServerArgs,
    env: impl Fn(&str) -> Option<String>,
) -> Result<MockConfig, ConfigError> {
    let limits = RateLimits::new(args.rpm, args.rps, args.tpm);
    let batch_faults =
        FaultRates::parse(&args.batch_faults).map_err(|e| bad(format!("--batch-faults: {e}")))?;
    let delivered = batch_faults.rate_limit + batch_faults.server_error + batch_faults.unavailable;
    if batch_faults.total() > delivered {
        return Err(bad(
            "--batch-faults: only 429, 500 and 503 apply to the Files and Batches calls",
        ));
    }
    let batch_step = parse_duration("batch-step", &args.batch_step)?;
    if batch_step.is_zero() {
        return Err(bad("--batch-step: must be more than 0"));
    }
    Ok(MockConfig {
        latency: parse_duration("latency", &args.latency)?,
        jitter: parse_duration("jitter", &args.jitter)?,
        faults: FaultRates::parse(&args.faults).map_err(|e| bad(format!("--faults: {e}")))?,
        fault_attempts: args.fault_attempts,
        retry_after: parse_duration("retry-after", &args.retry_after)?,
        hang: parse_duration("hang", &args.hang)?,
        seed: args.seed,
        limits: if args.sliding_window {
            limits.sliding()
        } else {
            limits
        },
        api_key: match &args.require_key_env {
            Some(var) => Some(
                env(var)
                    .filter(|k| !k.is_empty())
                    .ok_or_else(|| bad(format!("--require-key-env: {var} is not set")))?,
            ),
            None => None,
        },
        batch_step,
        batch_faults,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    fn resolve_flags(flags: &[&str]) -> Result<MockConfig, ConfigError> {
        let argv = ["batchgen", "mock-server"].iter().chain(flags);
        let Ok(Cli {
            command: Command::MockServer(args),
            ..
        }) = Cli::try_parse_from(argv)
        else {
            panic!("mock-server flags {flags:?} do not parse");
        };
        resolve(&args, |_| None)
    }

    #[test]
    fn batch_flags() {
        let default = resolve_flags(&[]).expect("defaults");
        assert_eq!(default.batch_step, Duration::from_secs(1));
        assert_eq!(default.batch_faults, FaultRates::default());
        let set = resolve_flags(&["--batch-step", "50ms", "--batch-faults", "429=0.5,503=0.1"])
            .expect("valid");
        assert_eq!(set.batch_step, Duration::from_millis(50));
        assert_eq!(set.batch_faults.rate_limit, 0.5);
        for bad in [
            ["--batch-faults", "reset=0.1"],
            ["--batch-faults", "429=2"],
            ["--batch-step", "0s"],
        ] {
            assert!(resolve_flags(&bad).is_err(), "{bad:?}");
        }
    }
}
