//! Command-line types only: clap parses into these, and `settings` resolves them.
//!
//! Every `run` flag is an `Option` (or a switch, or a list) so that a job file can fill what
//! the command line leaves unset; the defaults named in the help are applied in `settings`,
//! not here. A job file is read (serde) into the same [`RunArgs`], by the flags' snake_case
//! names, so a new flag is one new field here and its use in `settings`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

/// Batch runner for LLM text generation: JSONL or CSV prompts in, one JSON result per row out.
#[derive(Debug, Parser)]
#[command(name = "batchgen", version, about, after_help = EXIT_CODES)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

const EXIT_CODES: &str = "Exit codes: 0 every row ok; 1 finished, some rows failed; \
2 nothing sent (bad usage, configuration or input); 3 stopped early (credentials, billing, \
untrusted TLS certificate, \
--max-cost, --deadline, --max-failures, output not writable or locked; a rerun resumes); 4 \
--batch --detach: batches still running at the provider (a rerun collects); 130 \
interrupted after a clean drain (a rerun resumes).";

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a batch: send every row of INPUT and write one result record per row.
    Run(Box<RunArgs>),
    /// Serve a simulated LLM endpoint on loopback for rehearsals, tests and benchmarks.
    MockServer(Box<MockServerArgs>),
    /// Join results files back to the input rows, in input order, as CSV, JSONL or Parquet.
    Export(Box<ExportArgs>),
    /// Join results files (the shards of one job) into one, one record per id; with
    /// --input, list the input's ids that have no record (exit 1 if any).
    Merge(Box<MergeArgs>),
    /// The provider batches of a `run --batch`, from its journal RESULTS.batches.jsonl.
    #[command(subcommand)]
    Batch(BatchCommand),
    /// Print a shell completion script (bash, zsh, fish, ...) to stdout.
    Completions {
        #[arg(value_name = "SHELL")]
        shell: clap_complete::Shell,
    },
    /// Write a run report: one self-contained HTML page (charts of throughput, latency,
    /// errors, retries, tokens and cost) from one or more results files.
    Report(Box<ReportArgs>),
}

/// Declares the `run` flags once, and [`RunArgs::over`] from the same list, so that the
/// command line and the job file cannot drift apart.
macro_rules! run_flags {
    ($(#[$meta:meta])* pub struct $name:ident {
        $($(#[$field_meta:meta])* pub $field:ident: $ty:ty,)*
    }) => {
        $(#[$meta])*
        pub struct $name {
            $($(#[$field_meta])* pub $field: $ty,)*
        }

        impl $name {
            /// These flags over `below` (a job file's): each flag set here wins, each unset
            /// one takes `below`'s value.
            pub fn over(self, below: $name) -> $name {
                $name {
                    $($field: Layer::over(self.$field, below.$field),)*
                }
            }
        }
    };
}

/// How a command-line value sits over a job file's: set wins over unset.
trait Layer {
    fn over(self, below: Self) -> Self;
}

impl<T> Layer for Option<T> {
    fn over(self, below: Self) -> Self {
        self.or(below)
    }
}

/// A switch is set when either side sets it (neither can unset the other).
impl Layer for bool {
    fn over(self, below: Self) -> Self {
        self || below
    }
}

/// A repeatable flag given on the command line replaces the job file's list whole.
impl<T> Layer for Vec<T> {
    fn over(self, below: Self) -> Self {
        if self.is_empty() { below } else { self }
    }
}

/// A duration in a job file: `"90s"`, `"2m"` or a number of seconds.
#[derive(Deserialize)]
#[serde(untagged)]
enum JobDuration {
    Seconds(f64),
    Text(String),
}

/// A count in a job file: `50` or `"5%"`.
#[derive(Deserialize)]
#[serde(untagged)]
enum JobCount {
    Number(u64),
    Text(String),
}

/// Reads a job file's duration as the text the flag would carry.
fn seconds_or_text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Some(match JobDuration::deserialize(d)? {
        JobDuration::Seconds(s) => s.to_string(),
        JobDuration::Text(t) => t,
    }))
}

/// Reads a job file's count as the text the flag would carry.
fn count_or_text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Some(match JobCount::deserialize(d)? {
        JobCount::Number(n) => n.to_string(),
        JobCount::Text(t) => t,
    }))
}

/// The API style requests are sent in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApiStyle {
    /// OpenAI-compatible Chat Completions: POST {base}/chat/completions.
    Chat,
    /// OpenAI-compatible Responses: POST {base}/responses.
    Responses,
    /// DashScope native: POST {base}/services/aigc/text-generation/generation.
    Dashscope,
}

/// `--thinking on|off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnOff {
    On,
    Off,
}

/// The DashScope region whose endpoint is the default base URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Region {
    /// Singapore (dashscope-intl.aliyuncs.com).
    Intl,
    /// Beijing (dashscope.aliyuncs.com).
    Cn,
    /// Virginia (dashscope-us.aliyuncs.com).
    Us,
}

/// Input file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InputFormat {
    /// One JSON object per line.
    Jsonl,
    /// Comma-separated values with a header row.
    Csv,
    /// Apache Parquet.
    Parquet,
}

run_flags! {
/// The flags of `run`, from the command line or a job file (see [`RunArgs::over`]).
#[derive(Debug, Default, Args, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunArgs {
    /// Input file (.jsonl or .csv, optionally .gz, or .parquet), or `-` for stdin.
    #[arg(value_name = "INPUT")]
    pub input: Option<PathBuf>,

    /// Job file (TOML): any long flag by its snake_case name, plus a `[params]` table.
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    pub job: Option<PathBuf>,

    /// Input format, when the extension does not tell.
    #[arg(long, value_name = "FORMAT")]
    pub input_format: Option<InputFormat>,

    /// Results file [default: INPUT with its extension replaced by .results.jsonl].
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// Field holding each row's id [default: id; `custom_id` is read for OpenAI Batch lines].
    #[arg(long, value_name = "FIELD")]
    pub id_field: Option<String>,

    /// Field holding the prompt when there is no template or messages [default: prompt].
    #[arg(long, value_name = "FIELD")]
    pub prompt_field: Option<String>,

    /// Prompt template over the row's fields: `{field}`; `{{` and `}}` are literal braces.
    #[arg(long, value_name = "TEXT")]
    pub template: Option<String>,

    /// System prompt, sent first unless the row's messages have their own system message.
    #[arg(long, value_name = "TEXT")]
    pub system: Option<String>,

    /// API style [default: chat].
    #[arg(long, value_name = "STYLE")]
    pub api: Option<ApiStyle>,

    /// API base URL, or `mock` for the built-in simulated endpoint
    /// [env: BATCHGEN_BASE_URL; default: the DashScope endpoint of --region].
    #[arg(long, value_name = "URL")]
    pub base_url: Option<String>,

    /// DashScope region for the default base URL [default: intl].
    #[arg(long, value_name = "REGION")]
    pub region: Option<Region>,

    /// Name of the environment variable holding the API key [default: DASHSCOPE_API_KEY].
    #[arg(long, value_name = "VAR")]
    pub api_key_env: Option<String>,

    /// Model name [default: qwen-plus].
    #[arg(short, long, value_name = "MODEL")]
    pub model: Option<String>,

    /// Sampling temperature, in [0, 2).
    #[arg(long, value_name = "T", allow_negative_numbers = true)]
    pub temperature: Option<f64>,

    /// Nucleus sampling, in (0, 1].
    #[arg(long, value_name = "P", allow_negative_numbers = true)]
    pub top_p: Option<f64>,

    /// Cap on output tokens per row (at least 1).
    #[arg(long, value_name = "N")]
    pub max_tokens: Option<u64>,

    /// Seed for best-effort reproducible sampling.
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,

    /// Stop sequence (repeatable).
    #[arg(long, value_name = "TEXT")]
    pub stop: Vec<String>,

    /// Deep thinking: sends `enable_thinking` [default: the provider's default for the model].
    #[arg(long, value_name = "on|off")]
    pub thinking: Option<OnOff>,

    /// Cap on thinking tokens per row (at least 1; chat and dashscope styles).
    #[arg(long, value_name = "N")]
    pub thinking_budget: Option<u64>,

    /// JSON-object output, validated; ok records carry `parsed`.
    #[arg(long)]
    pub json: bool,

    /// Structured output: the answer must validate against this JSON Schema file.
    #[arg(long, value_name = "FILE", conflicts_with = "json")]
    pub json_schema: Option<PathBuf>,

    /// Retries of a row whose answer is not valid JSON (or fails the schema) [default: 2].
    #[arg(long, value_name = "N")]
    pub json_retries: Option<u32>,

    /// Partial mode: the answer continues this assistant prefix; `content` includes it.
    #[arg(long, value_name = "TEXT")]
    pub prefix: Option<String>,

    /// Stream answers (SSE) and reassemble each into one record. Needed by streaming-only
    /// models; without it, a run switches to streaming when the model demands it.
    #[arg(long)]
    pub stream: bool,

    /// Most requests in flight [default: 16].
    #[arg(short = 'c', long, value_name = "N")]
    pub concurrency: Option<usize>,

    /// Client-side limit on requests per minute, spread evenly over each second.
    #[arg(long, value_name = "N")]
    pub rpm: Option<u64>,

    /// Client-side limit on tokens per minute (estimated before sending, corrected from the
    /// usage), spread evenly over each second.
    #[arg(long, value_name = "N")]
    pub tpm: Option<u64>,

    /// Stop early (exit 3) once this many rows have failed, or this share of the rows
    /// finished so far (e.g. `5%`, judged from 20 finished rows on).
    #[arg(long, value_name = "N|P%")]
    #[serde(deserialize_with = "count_or_text")]
    pub max_failures: Option<String>,

    /// Stop dispatching when the spend so far plus the worst case of the requests in flight
    /// would pass this amount (in the price table's currency); drain, exit 3, resumable.
    #[arg(long, value_name = "AMOUNT")]
    pub max_cost: Option<f64>,

    /// Stop dispatching at this point: a duration from the start (`45m`, `2h`) or an RFC 3339
    /// time (`2026-11-26T06:00:00Z`); drain, exit 3, resumable.
    #[arg(long, value_name = "D")]
    #[serde(deserialize_with = "seconds_or_text")]
    pub deadline: Option<String>,

    /// Price table (TOML) whose models replace or add to the built-in one.
    #[arg(long, value_name = "FILE")]
    pub pricing: Option<PathBuf>,

    /// Validate everything, count the rows to send, estimate tokens and a cost range, and send
    /// nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Retries per row after the first attempt [default: 6].
    #[arg(long, value_name = "N")]
    pub max_retries: Option<u32>,

    /// First backoff delay; later ones double, with full jitter [default: 500ms].
    #[arg(long, value_name = "D")]
    #[serde(deserialize_with = "seconds_or_text")]
    pub retry_delay: Option<String>,

    /// Longest backoff delay [default: 30s].
    #[arg(long, value_name = "D")]
    #[serde(deserialize_with = "seconds_or_text")]
    pub retry_max_delay: Option<String>,

    /// Timeout per attempt, e.g. 90s or 2m; a bare number means seconds [default: 300s].
    #[arg(long, value_name = "D")]
    #[serde(deserialize_with = "seconds_or_text")]
    pub timeout: Option<String>,

    /// Run the valid rows even if some are invalid; each invalid row gets an `invalid_input`
    /// error record instead of stopping the run before it starts.
    #[arg(long)]
    pub skip_invalid: bool,

    /// Start over: move an existing results file to FILE.prev and send every row.
    #[arg(long)]
    pub fresh: bool,

    /// Also send rows that are done but whose request would now differ (template, model or
    /// parameters changed); by default they are reported and skipped.
    #[arg(long)]
    pub rerun_changed: bool,

    /// Also write the summary as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub summary_json: Option<PathBuf>,

    /// Send the rows through the provider's Batch API (files + batches) at the batch price,
    /// instead of one request each: a journal RESULTS.batches.jsonl makes it resumable after
    /// any crash; a rerun collects what a previous run submitted.
    #[arg(long, help_heading = "Batch mode")]
    pub batch: bool,

    /// Most lines per batch file [default: 50000].
    #[arg(long, value_name = "N", help_heading = "Batch mode")]
    pub batch_max_rows: Option<u64>,

    /// Largest batch file, e.g. `200MB` [default: 200MB; 500MB for DashScope hosts].
    #[arg(long, value_name = "SIZE", help_heading = "Batch mode")]
    #[serde(deserialize_with = "count_or_text")]
    pub batch_max_bytes: Option<String>,

    /// Completion window of each batch [default: 24h; DashScope accepts 24h to 336h].
    #[arg(long, value_name = "D", help_heading = "Batch mode")]
    #[serde(deserialize_with = "seconds_or_text")]
    pub batch_window: Option<String>,

    /// How often each live batch is polled, jittered by 10% [default: 60s].
    #[arg(long, value_name = "D", help_heading = "Batch mode")]
    #[serde(deserialize_with = "seconds_or_text")]
    pub poll_interval: Option<String>,

    /// Submit what is not yet submitted, collect what has finished, and exit at once: exit 4
    /// while batches are still running at the provider (a rerun collects; fit for cron).
    #[arg(long, requires = "batch", help_heading = "Batch mode")]
    pub detach: bool,

    /// Write a plain progress line this often when stderr is not a terminal [default: 30s].
    #[arg(long, value_name = "D")]
    #[serde(deserialize_with = "seconds_or_text")]
    pub progress_interval: Option<String>,

    /// No progress bar or progress lines.
    #[arg(long)]
    pub no_progress: bool,

    /// Print only errors and the summary.
    #[arg(short, long)]
    pub quiet: bool,

    /// A job file's `[params]` table: extra request fields, sent as given.
    #[arg(skip)]
    pub params: Option<Map<String, Value>>,

    /// Send only shard K of N (0 <= K < N): the rows whose id hashes to K modulo N. Every
    /// shard validates the whole input [env: BATCHGEN_SHARD; default output:
    /// INPUT.shard-K-of-N.results.jsonl].
    #[arg(long, value_name = "K/N")]
    pub shard: Option<String>,

    /// Share --rpm, --tpm and the 429 cool-down through this Redis (redis://HOST:PORT) with
    /// every process on the same --limits-key [env: BATCHGEN_REDIS_URL].
    #[arg(long, value_name = "URL")]
    pub limits_redis: Option<String>,

    /// The Redis key prefix of the shared limits [default: the base URL's host and the model].
    #[arg(long, value_name = "KEY")]
    pub limits_key: Option<String>,

    /// Also write the run report (one self-contained HTML page) to FILE at the end, also
    /// after an interrupt or an early stop.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
}
}

#[derive(Debug, Args)]
pub struct MockServerArgs {
    /// Port on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = 8790)]
    pub port: u16,

    /// Fixed delay before each answer, e.g. 200ms.
    #[arg(long, default_value = "0ms", value_name = "D")]
    pub latency: String,

    /// Extra random delay, uniform between zero and this.
    #[arg(long, default_value = "0ms", value_name = "D")]
    pub jitter: String,

    /// Fault rates, e.g. `429=0.05,500=0.05,503=0.05,reset=0.05,malformed=0.05,truncated=0.05,hang=0.01`.
    #[arg(long, default_value = "", value_name = "SPEC")]
    pub faults: String,

    /// Inject faults only on the first N attempts of each distinct request (0: any attempt).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub fault_attempts: u32,

    /// Retry-After sent with injected 429s.
    #[arg(long, default_value = "1s", value_name = "D")]
    pub retry_after: String,

    /// How long an injected hang holds a request before dropping it.
    #[arg(long, default_value = "1h", value_name = "D")]
    pub hang: String,

    /// Seed for the fault dice.
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,

    /// Admit at most N requests per minute, enforced per second (N/60 per second) as
    /// DashScope does; the rest get 429 with Retry-After.
    #[arg(long, value_name = "N")]
    pub rpm: Option<u64>,

    /// Admit at most N requests per second.
    #[arg(long, value_name = "N")]
    pub rps: Option<f64>,

    /// Admit at most N tokens (input plus output) per minute, enforced per second.
    #[arg(long, value_name = "N")]
    pub tpm: Option<u64>,

    /// Enforce --rpm, --rps and --tpm over any sliding second (at most the per-second figure
    /// in any one-second window, the first included) rather than with token buckets.
    #[arg(long)]
    pub sliding_window: bool,

    /// Require `Authorization: Bearer <the value of VAR>`; other requests get 401.
    #[arg(long, value_name = "VAR")]
    pub require_key_env: Option<String>,

    /// How long a batch of the Batch API stays in each state (validating, in_progress,
    /// finalizing, cancelling).
    #[arg(long, default_value = "1s", value_name = "D")]
    pub batch_step: String,

    /// Fault rates of the Files and Batches calls, in the --faults syntax; only 429, 500 and
    /// 503 apply, e.g. `429=0.2,503=0.1`.
    #[arg(long, default_value = "", value_name = "SPEC")]
    pub batch_faults: String,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Results files written by `run` [default: INPUT with its extension replaced by
    /// .results.jsonl, as `run` names it]. Several (the shards of one job) are merged first,
    /// one record per id, as `batchgen merge` does.
    #[arg(value_name = "RESULTS", num_args = 0..)]
    pub results: Vec<PathBuf>,

    /// The input file the run read (.jsonl or .csv, optionally .gz, or .parquet).
    #[arg(long, value_name = "INPUT")]
    pub input: PathBuf,

    /// Input format, when the extension does not tell.
    #[arg(long, value_name = "FORMAT")]
    pub input_format: Option<InputFormat>,

    /// Field holding each row's id, as given to `run` (`custom_id` is read too).
    #[arg(long, value_name = "FIELD", default_value = "id")]
    pub id_field: String,

    /// Output format [default: from the extension of -o, else the input's format].
    #[arg(long, value_name = "FORMAT")]
    pub format: Option<InputFormat>,

    /// Output file; a `.parquet` name writes Parquet (compressed inside, so no `.gz`), a
    /// `.gz` name is gzip-compressed CSV or JSONL [default: stdout].
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// Export even if some input rows are invalid (as after `run --skip-invalid`): rows that
    /// cannot be read are left out, the others are joined to their records.
    #[arg(long)]
    pub skip_invalid: bool,
}

#[derive(Debug, Subcommand)]
pub enum BatchCommand {
    /// Print each batch of the journal with its state at the provider.
    Status(BatchArgs),
    /// Cancel the batches still running (a later run still collects their finished lines).
    Cancel(BatchArgs),
}

#[derive(Debug, Args)]
pub struct BatchArgs {
    /// Results file of the run (its journal is RESULTS.batches.jsonl).
    #[arg(value_name = "RESULTS")]
    pub results: PathBuf,

    /// API base URL the run used [env: BATCHGEN_BASE_URL; default: the DashScope endpoint of
    /// --region].
    #[arg(long, value_name = "URL")]
    pub base_url: Option<String>,

    /// DashScope region for the default base URL [default: intl].
    #[arg(long, value_name = "REGION")]
    pub region: Option<Region>,

    /// Name of the environment variable holding the API key [default: DASHSCOPE_API_KEY].
    #[arg(long, value_name = "VAR")]
    pub api_key_env: Option<String>,
}

#[derive(Debug, Args)]
pub struct MergeArgs {
    /// Results files written by `run` (the shards of one job, in any order).
    #[arg(value_name = "RESULTS", required = true, num_args = 1..)]
    pub results: Vec<PathBuf>,

    /// The merged results file, written atomically (it may be one of RESULTS).
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,

    /// The input the shards read: list its ids that have no record, and exit 1 if any.
    #[arg(long, value_name = "INPUT")]
    pub input: Option<PathBuf>,

    /// Input format, when the extension does not tell.
    #[arg(long, value_name = "FORMAT")]
    pub input_format: Option<InputFormat>,

    /// Field holding each row's id, as given to `run` (`custom_id` is read too).
    #[arg(long, value_name = "FIELD", default_value = "id")]
    pub id_field: String,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Results files written by `run` (the shards of one job: each is also shown on its own).
    #[arg(value_name = "RESULTS", required = true, num_args = 1..)]
    pub results: Vec<PathBuf>,

    /// The HTML page [default: the first RESULTS with .results.jsonl (or .jsonl) replaced by
    /// .report.html].
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// A run's summary JSON (`run --summary-json`): its wall time, currency and counts.
    #[arg(long, value_name = "SUMMARY.json")]
    pub summary: Option<PathBuf>,
}
