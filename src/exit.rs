//! How a command ends: the exit codes, the failures that stop a run before its report, and
//! the reasons a run stops early, each with its message and its code.

use crate::retry::Failure;
use crate::settings::ConfigError;

/// How a command ended; the process exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Every row ok.
    Ok = 0,
    /// The run finished and some rows failed.
    SomeFailed = 1,
    /// Nothing was sent: bad usage, configuration or input.
    Usage = 2,
    /// Stopped early: credentials, permission, billing, or output not writable.
    Stopped = 3,
    /// Batch mode with `--detach`: batches are still running at the provider.
    Detached = 4,
    /// Interrupted by a signal after a clean drain.
    Interrupted = 130,
}

impl Exit {
    pub fn code(self) -> i32 {
        self as i32
    }
}

/// A failure that ends a run without its report: the command line, the configuration or the
/// input is refused (nothing was sent), or the output or the run's own machinery fails.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Settings(#[from] ConfigError),
    /// The request builder refused the settings (a template, a parameter).
    #[error("{0}")]
    Request(String),
    #[error("--pricing: {0}")]
    Pricing(String),
    #[error(
        "--max-cost needs a price for model `{model}`, and the price table has none: \
         add it with --pricing FILE"
    )]
    NoPrice { model: String },
    #[error("validation failed: {0}")]
    ValidationPanicked(tokio::task::JoinError),
    #[error("{input}: {source}")]
    ReadInput {
        input: String,
        source: std::io::Error,
    },
    #[error("{input}: {count} invalid rows; nothing was sent (--skip-invalid runs the rest)")]
    InvalidRows { input: String, count: u64 },
    /// The HTTP client could not be built (a bad `--base-url`, a TLS setup).
    #[error("{0:#}")]
    Client(anyhow::Error),
    #[error("--json-schema: {0}")]
    Schema(String),
    /// `--limits-redis` does not answer at the start; the message names the URL.
    #[error("{0}")]
    LimitsRedis(String),
    #[error("cannot spool stdin: {0}")]
    Spool(std::io::Error),
    #[error("output not writable: {0}")]
    OutputNotWritable(std::io::Error),
    /// The output's lock is held by another run, or cannot be taken.
    #[error("{0}")]
    Lock(String),
    #[error("--fresh: {0}")]
    Fresh(std::io::Error),
    #[error("the resume scan failed: {0}")]
    ScanPanicked(tokio::task::JoinError),
    #[error("cannot read {output}: {source}")]
    ReadOutput {
        output: String,
        source: std::io::Error,
    },
    #[error("cannot start the mock endpoint: {0}")]
    MockEndpoint(std::io::Error),
    #[error("the writer failed: {0}")]
    WriterPanicked(tokio::task::JoinError),
    #[error("cannot write the summary: {0}")]
    Summary(std::io::Error),
    /// Batch mode: the journal or the batch files cannot be written or read.
    #[error("batch mode: {0}")]
    Batch(std::io::Error),
}

impl RunError {
    /// The exit code: usage when nothing was sent because of what the user gave, stopped when
    /// the output or the machinery failed.
    pub fn exit(&self) -> Exit {
        match self {
            RunError::Settings(_)
            | RunError::Request(_)
            | RunError::Pricing(_)
            | RunError::NoPrice { .. }
            | RunError::ValidationPanicked(_)
            | RunError::ReadInput { .. }
            | RunError::InvalidRows { .. }
            | RunError::Client(_)
            | RunError::Schema(_)
            | RunError::LimitsRedis(_) => Exit::Usage,
            RunError::Spool(_)
            | RunError::OutputNotWritable(_)
            | RunError::Lock(_)
            | RunError::Fresh(_)
            | RunError::ScanPanicked(_)
            | RunError::ReadOutput { .. }
            | RunError::MockEndpoint(_)
            | RunError::WriterPanicked(_)
            | RunError::Summary(_)
            | RunError::Batch(_) => Exit::Stopped,
        }
    }
}

/// Why the run stopped before the end of the input.
#[derive(Debug, Clone)]
pub enum Stop {
    /// An error that would fail every row (credentials, permission, billing).
    Fatal(Failure),
    /// SIGINT or SIGTERM.
    Interrupted,
    /// `--max-failures`: this many rows failed out of this many finished.
    TooManyFailures { failed: u64, finished: u64 },
    /// `--deadline` passed.
    Deadline,
    /// `--max-cost`: the next attempt's worst case would have passed the cap.
    CostCap { spent: f64, cap: f64 },
    /// The results file could not be written; the message names it and the OS error.
    Output(String),
    /// `--detach`: this many batches are still running at the provider.
    Detached { live: usize },
    /// Batch mode: a Batch API call failed for good (the message says which and why).
    Batch(String),
    /// Batch mode: the estimate of the rows to submit passes `--max-cost` (the message names
    /// both); nothing was submitted.
    BatchEstimate { message: String },
}

impl Stop {
    /// The exit code of a run that stopped this way.
    pub fn exit(&self) -> Exit {
        match self {
            Stop::Interrupted => Exit::Interrupted,
            Stop::Detached { .. } => Exit::Detached,
            _ => Exit::Stopped,
        }
    }

    /// What to tell the user, after `error: `; `None` for a signal, which said so when it came.
    pub fn message(&self) -> Option<String> {
        Some(match self {
            Stop::Output(message) => {
                format!("stopped early: {message}; the rows without a record run again on a rerun")
            }
            Stop::Fatal(f) => format!(
                "stopped early: {} error{}: {} (every row would fail the same way; fix it and rerun to resume)",
                f.kind.as_str(),
                f.code
                    .as_deref()
                    .map(|c| format!(" {c}"))
                    .unwrap_or_default(),
                f.message
            ),
            Stop::Interrupted => return None,
            Stop::Detached { live } => {
                return Some(format!(
                    "{live} batches are still running at the provider (--detach); rerun the \
                     same command to collect them"
                ));
            }
            Stop::Batch(message) => format!(
                "stopped early: {message}; the batches already submitted go on, and a rerun \
                 collects them"
            ),
            Stop::BatchEstimate { message } => format!("stopped before submitting: {message}"),
            Stop::Deadline => "stopped early: the --deadline passed; in-flight rows were drained, \
                 rerun to resume"
                .to_string(),
            Stop::CostCap { spent, cap } => format!(
                "stopped early: --max-cost {cap}: {spent:.6} spent, and the next request \
                 could pass the cap; rerun with a higher cap to resume"
            ),
            Stop::TooManyFailures { failed, finished } => format!(
                "stopped early: {failed} of the {finished} rows finished so far failed \
                 (--max-failures); see their records for why, fix it and rerun to resume"
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_setup_is_usage_and_broken_machinery_is_stopped() {
        assert_eq!(RunError::Schema("bad".into()).exit(), Exit::Usage);
        let io = || std::io::Error::other("disk full");
        assert_eq!(RunError::OutputNotWritable(io()).exit(), Exit::Stopped);
        assert_eq!(
            RunError::OutputNotWritable(io()).to_string(),
            "output not writable: disk full"
        );
    }

    #[test]
    fn a_signal_is_interrupted_and_says_nothing_more() {
        assert_eq!(Stop::Interrupted.exit(), Exit::Interrupted);
        assert!(Stop::Interrupted.message().is_none());
        assert_eq!(Stop::Deadline.exit(), Exit::Stopped);
        assert_eq!(
            Stop::Deadline.message().as_deref(),
            Some(
                "stopped early: the --deadline passed; in-flight rows were drained, rerun to resume"
            )
        );
    }
}
