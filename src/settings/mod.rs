//! Resolves the command line, the job file, the environment and the defaults, in that order of
//! precedence, once, into immutable `Settings`. Nothing downstream sees clap or TOML: the
//! types below settings (`request::api::Api`, `input::format::Format`, [`Region`]) are
//! converted to here.
//!
//! Each concern resolves in its own file: the files ([`files`]), the endpoint and key
//! ([`endpoint`], [`key`]), the generation parameters ([`params`]), the limits and stops
//! ([`limits`], with [`duration`]), batch mode ([`batch`]); `job` reads a job file into the
//! same flags as the command line, and [`mock`] resolves `mock-server`.

pub mod batch;
pub mod duration;
pub mod endpoint;
pub mod export;
pub mod files;
mod job;
pub mod key;
pub mod limits;
pub mod merge;
pub mod mock;
pub mod params;
pub mod report;

use std::path::PathBuf;
use std::time::Duration;

use crate::cli::RunArgs;
use crate::input::ids::Shard;
use crate::request::api::Api;
pub use batch::{BatchMode, BatchTarget};
pub use duration::{MAX_DURATION, parse_deadline, parse_duration};
pub use endpoint::{DEFAULT_API_KEY_ENV, ENV_BASE_URL, Endpoint, Region, default_base_url};
pub use files::{ENV_SHARD, InputSpec, default_output, same_file, shard_output};
pub use key::{ApiKey, KEY_PIECE};
pub use limits::{ENV_REDIS_URL, MAX_FAILURES_MIN_ROWS, MaxFailures, SharedLimits};
pub use params::{DEFAULT_MODEL, GenParams, OutputFormat};

/// A configuration problem: the run exits 2 having sent nothing.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

fn bad(msg: impl Into<String>) -> ConfigError {
    ConfigError(msg.into())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    /// A bar on a terminal, plain lines otherwise.
    Auto,
    Off,
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub input: InputSpec,
    /// `--shard K/N`: only the rows of shard K are sent.
    pub shard: Option<Shard>,
    pub output: PathBuf,
    pub id_field: String,
    pub prompt_field: String,
    pub template: Option<String>,
    pub system: Option<String>,
    pub api: Api,
    pub region: Region,
    /// `--pricing FILE`.
    pub pricing: Option<PathBuf>,
    pub max_cost: Option<f64>,
    /// `--deadline`: how long after the start dispatching stops.
    pub deadline: Option<Duration>,
    pub dry_run: bool,
    /// Stream every request from the start (a run also switches on its own when the model
    /// only answers streaming requests).
    pub stream: bool,
    pub endpoint: Endpoint,
    pub api_key_env: String,
    pub api_key: Option<ApiKey>,
    pub params: GenParams,
    pub concurrency: usize,
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    /// `--limits-redis`: `--rpm`, `--tpm` and the 429 cool-down shared through Redis.
    pub shared_limits: Option<SharedLimits>,
    pub max_failures: Option<MaxFailures>,
    pub max_retries: u32,
    /// Extra attempts for answers that are not valid JSON (or fail the schema).
    pub json_retries: u32,
    pub retry_delay: Duration,
    pub retry_max_delay: Duration,
    pub timeout: Duration,
    pub summary_json: Option<PathBuf>,
    pub fresh: bool,
    pub rerun_changed: bool,
    pub skip_invalid: bool,
    pub progress: ProgressMode,
    pub progress_interval: Duration,
    pub quiet: bool,
    /// `--batch`: the rows go through the provider's Batch API.
    pub batch: Option<BatchMode>,
    /// `--report FILE`: the HTML run report written at the end.
    pub report: Option<PathBuf>,
}

/// Resolves a `run` command line into settings. `env` looks up environment variables.
pub fn resolve(
    args: RunArgs,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Settings, ConfigError> {
    let args = match args.job.clone() {
        Some(path) => {
            let job = job::read(&path, &env)?;
            args.over(job)
        }
        None => args,
    };
    let shard = files::shard(&args, &env)?;
    let (input, output) = files::resolve(&args, shard)?;
    let target = endpoint::resolve(&args, &env)?;
    let params = params::resolve(&args, target.api)?;
    let limits = limits::resolve(&args)?;
    let shared_limits = limits::shared(&args, &env, &target.endpoint, &params.model)?;
    let progress_interval = duration::or_default(
        "progress-interval",
        args.progress_interval.as_deref(),
        "30s",
    )?;
    if progress_interval.is_zero() {
        return Err(bad("--progress-interval must be more than zero"));
    }
    let deadline = limits::deadline(&args)?;
    let batch = batch::resolve(&args, target.api, &target.endpoint)?;
    Ok(Settings {
        input,
        shard,
        output,
        id_field: args.id_field.unwrap_or_else(|| "id".to_string()),
        prompt_field: args.prompt_field.unwrap_or_else(|| "prompt".to_string()),
        template: args.template,
        system: args.system,
        api: target.api,
        region: target.region,
        pricing: args.pricing,
        max_cost: limits.max_cost,
        deadline,
        dry_run: args.dry_run,
        stream: args.stream,
        endpoint: target.endpoint,
        api_key_env: target.api_key_env,
        api_key: target.api_key,
        params,
        concurrency: limits.concurrency,
        rpm: limits.rpm,
        tpm: limits.tpm,
        shared_limits,
        max_failures: limits.max_failures,
        max_retries: limits.max_retries,
        json_retries: limits.json_retries,
        retry_delay: limits.retry_delay,
        retry_max_delay: limits.retry_max_delay,
        timeout: limits.timeout,
        summary_json: args.summary_json,
        fresh: args.fresh,
        rerun_changed: args.rerun_changed,
        skip_invalid: args.skip_invalid,
        progress: if args.no_progress {
            ProgressMode::Off
        } else {
            ProgressMode::Auto
        },
        progress_interval,
        quiet: args.quiet,
        batch,
        report: args.report,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(input: &str) -> RunArgs {
        RunArgs {
            input: Some(PathBuf::from(input)),
            base_url: Some("mock".into()),
            ..RunArgs::default()
        }
    }

    #[test]
    fn ranges_are_checked() {
        let mut a = args("x.jsonl");
        a.temperature = Some(2.0);
        let err = resolve(a, |_| None).err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("[0, 2)")));
        let mut a = args("x.jsonl");
        a.top_p = Some(0.0);
        assert!(resolve(a, |_| None).is_err());
    }

    #[test]
    fn key_required_for_remote_endpoints_only() {
        let mut a = args("x.jsonl");
        a.base_url = Some("https://example.invalid/v1".into());
        let err = resolve(a, |_| None).err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("DASHSCOPE_API_KEY")));
        let mut a = args("x.jsonl");
        a.base_url = Some("http://127.0.0.1:9/v1".into());
        assert!(resolve(a, |_| None).is_ok());
    }

    #[test]
    fn the_command_line_wins_over_the_job_file_and_job_paths_follow_the_file() {
        let dir = std::env::temp_dir().join(format!("batchgen-job-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let job = dir.join("job.toml");
        std::fs::write(
            &job,
            "input = \"rows.jsonl\"\nbase_url = \"mock\"\nmodel = \"qwen-flash\"\n\
             concurrency = 3\ntimeout = 90\nstop = [\"x\"]\nquiet = true\n\
             [params]\nk = 1\n",
        )
        .expect("write");
        let cli = RunArgs {
            job: Some(job),
            concurrency: Some(5),
            stop: vec!["y".into()],
            ..RunArgs::default()
        };
        let s = resolve(cli, |_| None).expect("settings");
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(s.input.path, Some(dir.join("rows.jsonl")));
        assert_eq!(s.params.model, "qwen-flash");
        assert_eq!(s.concurrency, 5);
        assert_eq!(s.timeout, Duration::from_secs(90));
        assert_eq!(s.params.stop, ["y"]);
        assert!(s.quiet);
        assert_eq!(s.params.extra.get("k"), Some(&serde_json::json!(1)));
    }
}
