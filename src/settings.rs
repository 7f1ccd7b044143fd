//! Resolves the command line, the job file, the environment and the defaults, in that order of
//! precedence, once, into immutable `Settings`. Nothing downstream sees clap or TOML.

pub mod export;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::cli::{ApiStyle, InputFormat, OnOff, Region, RunArgs};

/// Environment variable read for the base URL when neither the flag nor the job file sets it.
pub const ENV_BASE_URL: &str = "BATCHGEN_BASE_URL";
/// Default name of the environment variable holding the API key.
pub const DEFAULT_API_KEY_ENV: &str = "DASHSCOPE_API_KEY";
pub const DEFAULT_MODEL: &str = "qwen-plus";

/// A configuration problem: the run exits 2 having sent nothing.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

fn bad(msg: impl Into<String>) -> ConfigError {
    ConfigError(msg.into())
}

/// An API key. It never leaves this type except as a sensitive header value.
#[derive(Clone)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Takes the key out of a text the server sent (an error message may echo what it got,
    /// masked or not: OpenAI's 401 says `sk-proj-****...abcd`). A masked form whose visible
    /// ends match the key's, and every run of [`KEY_PIECE`] or more characters that is part of
    /// the key, become `***`.
    pub fn scrub(&self, text: &str) -> String {
        scrub_pieces(&scrub_masked(text, &self.0), &self.0)
    }
}

/// The shortest run of the key's characters that [`ApiKey::scrub`] takes out of a text.
pub const KEY_PIECE: usize = 6;

/// Replaces each word made of key-like characters around a mask (three or more `*`, `.` or
/// `…`) with `***` when its visible start begins the key or its visible end ends it.
fn scrub_masked(text: &str, key: &str) -> String {
    let keyish = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    let maskish = |c: char| matches!(c, '*' | '.' | '…');
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        let start = i;
        let mut j = i;
        while j < chars.len() && keyish(chars[j].1) {
            j += 1;
        }
        let head_end = j;
        while j < chars.len() && maskish(chars[j].1) {
            j += 1;
        }
        let mask_end = j;
        while j < chars.len() && keyish(chars[j].1) {
            j += 1;
        }
        let at = |k: usize| chars.get(k).map_or(text.len(), |c| c.0);
        let head = &text[at(start)..at(head_end)];
        let tail = &text[at(mask_end)..at(j)];
        let masked = mask_end - head_end >= 3
            && ((head.len() >= 2 && key.starts_with(head))
                || (tail.len() >= 2 && key.ends_with(tail)));
        if masked {
            out.push_str("***");
            i = j;
        } else {
            // Not a masked key: keep the first character and look again from the next.
            out.push(chars[start].1);
            i = start + 1;
        }
    }
    out
}

/// Replaces every run of at least [`KEY_PIECE`] characters that is also a run of the key with
/// `***`.
fn scrub_pieces(text: &str, key: &str) -> String {
    let (t, k) = (text.as_bytes(), key.as_bytes());
    let least = KEY_PIECE.min(k.len()).max(1);
    let mut covered = vec![false; t.len()];
    for i in 0..t.len() {
        let longest = (0..k.len())
            .map(|s| {
                t[i..]
                    .iter()
                    .zip(&k[s..])
                    .take_while(|(a, b)| a == b)
                    .count()
            })
            .max()
            .unwrap_or(0);
        if longest >= least {
            covered[i..i + longest].fill(true);
        }
    }
    let mut out = String::with_capacity(text.len());
    let mut in_run = false;
    for (at, c) in text.char_indices() {
        if covered[at..at + c.len_utf8()].contains(&true) {
            if !in_run {
                out.push_str("***");
            }
            in_run = true;
        } else {
            out.push(c);
            in_run = false;
        }
    }
    out
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

/// Where requests go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// The built-in simulated endpoint, started in-process on a free loopback port.
    Mock,
    Url(String),
}

/// Where rows come from.
#[derive(Debug, Clone)]
pub struct InputSpec {
    /// `None` reads stdin.
    pub path: Option<PathBuf>,
    pub format: InputFormat,
}

impl InputSpec {
    pub fn display(&self) -> String {
        match &self.path {
            Some(p) => p.display().to_string(),
            None => "<stdin>".to_string(),
        }
    }
}

/// Generation parameters applied to every row (a row's own `params` override them).
#[derive(Debug, Clone, Default)]
pub struct GenParams {
    pub model: String,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub max_tokens: Option<u64>,
    pub seed: Option<u64>,
    pub stop: Vec<String>,
    /// `enable_thinking`; `None` leaves it to the provider.
    pub thinking: Option<bool>,
    pub thinking_budget: Option<u64>,
    pub format: OutputFormat,
    /// Partial mode: the answer continues this assistant text.
    pub prefix: Option<String>,
    /// The job file's `[params]` table, sent as given.
    pub extra: Map<String, Value>,
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

/// What shape the answer must have.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum OutputFormat {
    #[default]
    Text,
    /// `--json`: any JSON object.
    JsonObject,
    /// `--json-schema FILE`: JSON valid against the schema; `name` is the file's stem.
    JsonSchema { name: String, schema: Value },
}

impl OutputFormat {
    pub fn is_json(&self) -> bool {
        !matches!(self, OutputFormat::Text)
    }
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
    pub output: PathBuf,
    pub id_field: String,
    pub prompt_field: String,
    pub template: Option<String>,
    pub system: Option<String>,
    pub api: ApiStyle,
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
}

/// A duration in a job file: `"90s"`, `"2m"` or a number of seconds.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum JobDuration {
    Seconds(f64),
    Text(String),
}

impl JobDuration {
    fn into_text(self) -> String {
        match self {
            JobDuration::Seconds(s) => s.to_string(),
            JobDuration::Text(t) => t,
        }
    }
}

/// A count in a job file: `50` or `"5%"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum JobCount {
    Number(u64),
    Text(String),
}

/// A job file: the long flags by their snake_case names, plus `[params]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct JobFile {
    input: Option<PathBuf>,
    input_format: Option<InputFormat>,
    output: Option<PathBuf>,
    id_field: Option<String>,
    prompt_field: Option<String>,
    template: Option<String>,
    system: Option<String>,
    api: Option<ApiStyle>,
    base_url: Option<String>,
    region: Option<Region>,
    api_key_env: Option<String>,
    model: Option<String>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    max_tokens: Option<u64>,
    seed: Option<u64>,
    stop: Option<Vec<String>>,
    thinking: Option<OnOff>,
    thinking_budget: Option<u64>,
    json: Option<bool>,
    json_schema: Option<PathBuf>,
    json_retries: Option<u32>,
    prefix: Option<String>,
    stream: Option<bool>,
    rpm: Option<u64>,
    tpm: Option<u64>,
    max_failures: Option<JobCount>,
    max_cost: Option<f64>,
    deadline: Option<JobDuration>,
    pricing: Option<PathBuf>,
    dry_run: Option<bool>,
    concurrency: Option<usize>,
    max_retries: Option<u32>,
    retry_delay: Option<JobDuration>,
    retry_max_delay: Option<JobDuration>,
    timeout: Option<JobDuration>,
    summary_json: Option<PathBuf>,
    fresh: Option<bool>,
    rerun_changed: Option<bool>,
    skip_invalid: Option<bool>,
    progress_interval: Option<JobDuration>,
    no_progress: Option<bool>,
    quiet: Option<bool>,
    params: Option<Map<String, Value>>,
}

/// Reads a job file, rejecting unknown keys with the file's name.
fn read_job(path: &Path, env: &impl Fn(&str) -> Option<String>) -> Result<JobFile, ConfigError> {
    let text = fs_err::read_to_string(path).map_err(|e| bad(format!("{e}")))?;
    let mut table: toml::Table = toml::from_str(&text)
        .map_err(|e| bad(format!("{}: not valid TOML: {e}", path.display())))?;
    for key in ["api_key", "key", "apikey"] {
        if table.contains_key(key) {
            return Err(bad(format!(
                "{}: `{key}` is not accepted: the API key is read only from the environment \
                 variable named by `api_key_env` (default {DEFAULT_API_KEY_ENV})",
                path.display()
            )));
        }
    }
    for (key, value) in table.iter_mut() {
        expand_env(value, env).map_err(|why| bad(format!("{}: `{key}`: {why}", path.display())))?;
    }
    JobFile::deserialize(toml::Value::Table(table)).map_err(|e| {
        bad(format!(
            "{}: {}",
            path.display(),
            e.message().trim_end().replace('\n', " ")
        ))
    })
}

/// Expands `${VAR}` in the strings of a job-file value from the environment; `$${` is a
/// literal `${`. An unset variable is an error.
fn expand_env(
    value: &mut toml::Value,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<(), String> {
    match value {
        toml::Value::String(s) if s.contains("${") => {
            let mut out = String::with_capacity(s.len());
            let mut rest = s.as_str();
            while let Some(at) = rest.find("${") {
                if rest[..at].ends_with('$') {
                    out.push_str(&rest[..at - 1]);
                    out.push_str("${");
                    rest = &rest[at + 2..];
                    continue;
                }
                out.push_str(&rest[..at]);
                let after = &rest[at + 2..];
                let end = after
                    .find('}')
                    .ok_or_else(|| format!("`${{` without a closing `}}` in \"{s}\""))?;
                let name = &after[..end];
                let upper = name.to_ascii_uppercase();
                if ["KEY", "SECRET", "TOKEN", "PASSWORD"]
                    .iter()
                    .any(|w| upper.contains(w))
                {
                    return Err(format!(
                        "${{{name}}} looks like a secret and is not expanded: the API key is \
                         read only from the variable named by `api_key_env`"
                    ));
                }
                let v = env(name)
                    .ok_or_else(|| format!("${{{name}}} is not set in the environment"))?;
                out.push_str(&v);
                rest = &after[end + 1..];
            }
            out.push_str(rest);
            *s = out;
        }
        toml::Value::Array(items) => {
            for v in items {
                expand_env(v, env)?;
            }
        }
        toml::Value::Table(t) => {
            for (_, v) in t.iter_mut() {
                expand_env(v, env)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// The longest duration any flag takes. Longer ones are typos, and would overflow the clock
/// when added to the present.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// Parses `--deadline`: a duration from now, or an RFC 3339 time (which must be in the future).
pub fn parse_deadline(text: &str, now: std::time::SystemTime) -> Result<Duration, ConfigError> {
    if let Ok(at) = humantime::parse_rfc3339_weak(text.trim()) {
        let d = at
            .duration_since(now)
            .map_err(|_| bad(format!("--deadline {text} has already passed")))?;
        if d > MAX_DURATION {
            return Err(bad(format!("--deadline {text} is more than 365 days away")));
        }
        return Ok(d);
    }
    let d = parse_duration("deadline", text)?;
    if d.is_zero() {
        return Err(bad("--deadline must be in the future"));
    }
    Ok(d)
}

/// Parses a duration flag: humantime (`90s`, `2m`, `500ms`) or a bare number of seconds, at
/// most [`MAX_DURATION`].
pub fn parse_duration(flag: &str, text: &str) -> Result<Duration, ConfigError> {
    let t = text.trim();
    let d = match t.parse::<f64>() {
        Ok(secs) if secs.is_finite() && secs >= 0.0 => {
            Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX)
        }
        _ => humantime::parse_duration(t).map_err(|e| {
            bad(format!(
                "--{flag}: `{text}` is not a duration ({e}); use e.g. 30s, 2m or 500ms"
            ))
        })?,
    };
    if d > MAX_DURATION {
        return Err(bad(format!(
            "--{flag}: `{text}` is too long: at most 365 days"
        )));
    }
    Ok(d)
}

/// The default base URL of an API style in a DashScope region.
pub fn default_base_url(api: ApiStyle, region: Region) -> String {
    let host = match region {
        Region::Intl => "https://dashscope-intl.aliyuncs.com",
        Region::Cn => "https://dashscope.aliyuncs.com",
        Region::Us => "https://dashscope-us.aliyuncs.com",
    };
    match api {
        ApiStyle::Chat => format!("{host}/compatible-mode/v1"),
        ApiStyle::Responses => format!("{host}/api/v2/apps/protocols/compatible-mode/v1"),
        ApiStyle::Dashscope => format!("{host}/api/v1"),
    }
}

/// Whether a base URL points at this machine (a local server may need no key): its host, as
/// the URL parser reads it, is `localhost` or a loopback address (127.0.0.0/8, `::1`).
fn is_loopback(url: &str) -> bool {
    let Some(host) = url
        .parse::<hyper::Uri>()
        .ok()
        .and_then(|u| u.host().map(str::to_owned))
    else {
        return false;
    };
    let ip = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || ip
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The default output path: the input with its extensions replaced by `.results.jsonl`.
pub fn default_output(input: &Path) -> PathBuf {
    let name = input
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut stem = name.as_str();
    for ext in [".gz", ".jsonl", ".ndjson", ".csv", ".json"] {
        if let Some(s) = stem.strip_suffix(ext) {
            stem = s;
        }
    }
    input.with_file_name(format!("{stem}.results.jsonl"))
}

/// The input format a file name implies (`.jsonl`, `.ndjson`, `.csv`, each optionally `.gz`).
pub fn format_of(path: &Path) -> Option<InputFormat> {
    let name = path.file_name()?.to_string_lossy().to_ascii_lowercase();
    let name = name.strip_suffix(".gz").unwrap_or(&name);
    if name.ends_with(".jsonl") || name.ends_with(".ndjson") {
        Some(InputFormat::Jsonl)
    } else if name.ends_with(".csv") {
        Some(InputFormat::Csv)
    } else {
        None
    }
}

fn rebase(base: Option<&Path>, p: PathBuf) -> PathBuf {
    match base {
        Some(dir) if p.is_relative() => dir.join(p),
        _ => p,
    }
}

/// Whether two paths name one existing file: the same device and inode, which a symlink to
/// it or a hard link shares.
pub fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// Resolves a `run` command line into settings. `env` looks up environment variables.
pub fn resolve(
    args: RunArgs,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Settings, ConfigError> {
    let job = match &args.job {
        Some(path) => read_job(path, &env)?,
        None => JobFile::default(),
    };
    let job_dir = args
        .job
        .as_deref()
        .map(|p| p.parent().unwrap_or(Path::new("")).to_path_buf());
    let job_dir = job_dir.as_deref();

    let input_path = match args.input {
        Some(p) => p,
        None => match job.input {
            Some(p) => rebase(job_dir, p),
            None => return Err(bad("no INPUT given (a path, or - for stdin)")),
        },
    };
    let stdin = input_path.as_os_str() == "-";
    let format = match args.input_format.or(job.input_format) {
        Some(f) => f,
        None if stdin => InputFormat::Jsonl,
        None => format_of(&input_path).ok_or_else(|| {
            bad(format!(
                "{}: cannot tell the format from the extension (.jsonl, .csv, optionally .gz); \
                 use --input-format jsonl|csv",
                input_path.display()
            ))
        })?,
    };
    let output = match args
        .output
        .or_else(|| job.output.map(|p| rebase(job_dir, p)))
    {
        Some(p) => p,
        None if stdin => return Err(bad("reading stdin needs --output FILE")),
        None => default_output(&input_path),
    };
    if !stdin && same_file(&output, &input_path) {
        return Err(bad(format!(
            "-o {}: that is the input file ({}); the results would be appended to it: \
             choose another output",
            output.display(),
            input_path.display()
        )));
    }

    let api = args.api.or(job.api).unwrap_or(ApiStyle::Chat);
    let region = args.region.or(job.region).unwrap_or(Region::Intl);
    let base = args
        .base_url
        .or(job.base_url)
        .or_else(|| env(ENV_BASE_URL).filter(|s| !s.is_empty()))
        .unwrap_or_else(|| default_base_url(api, region));
    let endpoint = if base == "mock" {
        Endpoint::Mock
    } else if base.starts_with("http://") || base.starts_with("https://") {
        Endpoint::Url(base.trim_end_matches('/').to_string())
    } else {
        return Err(bad(format!(
            "--base-url: `{base}` is neither an http(s) URL nor `mock`"
        )));
    };

    let api_key_env = args
        .api_key_env
        .or(job.api_key_env)
        .unwrap_or_else(|| DEFAULT_API_KEY_ENV.to_string());
    let api_key = env(&api_key_env)
        .filter(|k| !k.trim().is_empty())
        .map(|k| ApiKey(k.trim().to_string()));
    if let Endpoint::Url(url) = &endpoint
        && api_key.is_none()
        && !is_loopback(url)
    {
        return Err(bad(format!(
            "the environment variable {api_key_env} is not set: export your API key there, \
                 name another variable with --api-key-env, or rehearse with --base-url mock"
        )));
    }

    let stop = if args.stop.is_empty() {
        job.stop.unwrap_or_default()
    } else {
        args.stop
    };
    let params = GenParams {
        model: args
            .model
            .or(job.model)
            .unwrap_or_else(|| DEFAULT_MODEL.to_string()),
        temperature: args.temperature.or(job.temperature),
        top_p: args.top_p.or(job.top_p),
        max_tokens: args.max_tokens.or(job.max_tokens),
        seed: args.seed.or(job.seed),
        stop,
        thinking: args.thinking.or(job.thinking).map(|t| t == OnOff::On),
        thinking_budget: args.thinking_budget.or(job.thinking_budget),
        format: output_format(
            args.json || job.json.unwrap_or(false),
            args.json_schema
                .or_else(|| job.json_schema.map(|p| rebase(job_dir, p))),
        )?,
        prefix: args.prefix.or(job.prefix),
        extra: job.params.unwrap_or_default(),
    };
    check_ranges(&params)?;
    check_api_features(api, &params)?;

    let concurrency = args.concurrency.or(job.concurrency).unwrap_or(16);
    if concurrency == 0 {
        return Err(bad("--concurrency must be at least 1"));
    }
    let max_cost = args.max_cost.or(job.max_cost);
    if max_cost.is_some_and(|c| !(c.is_finite() && c > 0.0)) {
        return Err(bad("--max-cost must be a positive amount"));
    }
    let rpm = args.rpm.or(job.rpm);
    let tpm = args.tpm.or(job.tpm);
    if rpm == Some(0) || tpm == Some(0) {
        return Err(bad("--rpm and --tpm must be at least 1"));
    }
    let max_failures = match args.max_failures.or(job.max_failures.map(|c| match c {
        JobCount::Number(n) => n.to_string(),
        JobCount::Text(t) => t,
    })) {
        Some(t) => Some(MaxFailures::parse(&t)?),
        None => None,
    };
    let dur = |flag: &str, cli: Option<String>, job: Option<JobDuration>, default: &str| {
        let text = cli
            .or_else(|| job.map(JobDuration::into_text))
            .unwrap_or_else(|| default.to_string());
        parse_duration(flag, &text)
    };
    let timeout = dur("timeout", args.timeout, job.timeout, "300s")?;
    if timeout.is_zero() {
        return Err(bad("--timeout must be more than zero"));
    }
    let retry_delay = dur("retry-delay", args.retry_delay, job.retry_delay, "500ms")?;
    let retry_max_delay = dur(
        "retry-max-delay",
        args.retry_max_delay,
        job.retry_max_delay,
        "30s",
    )?;
    let progress_interval = dur(
        "progress-interval",
        args.progress_interval,
        job.progress_interval,
        "30s",
    )?;
    if progress_interval.is_zero() {
        return Err(bad("--progress-interval must be more than zero"));
    }

    let no_progress = args.no_progress || job.no_progress.unwrap_or(false);
    Ok(Settings {
        input: InputSpec {
            path: (!stdin).then_some(input_path),
            format,
        },
        output,
        id_field: args
            .id_field
            .or(job.id_field)
            .unwrap_or_else(|| "id".to_string()),
        prompt_field: args
            .prompt_field
            .or(job.prompt_field)
            .unwrap_or_else(|| "prompt".to_string()),
        template: args.template.or(job.template),
        system: args.system.or(job.system),
        api,
        region,
        pricing: args
            .pricing
            .or_else(|| job.pricing.map(|p| rebase(job_dir, p))),
        max_cost,
        deadline: match args
            .deadline
            .or_else(|| job.deadline.map(JobDuration::into_text))
        {
            Some(t) => Some(parse_deadline(&t, std::time::SystemTime::now())?),
            None => None,
        },
        dry_run: args.dry_run || job.dry_run.unwrap_or(false),
        stream: args.stream || job.stream.unwrap_or(false),
        endpoint,
        api_key_env,
        api_key,
        params,
        concurrency,
        rpm,
        tpm,
        max_failures,
        max_retries: args.max_retries.or(job.max_retries).unwrap_or(6),
        json_retries: args.json_retries.or(job.json_retries).unwrap_or(2),
        retry_delay,
        retry_max_delay: retry_max_delay.max(retry_delay),
        timeout,
        summary_json: args
            .summary_json
            .or_else(|| job.summary_json.map(|p| rebase(job_dir, p))),
        fresh: args.fresh || job.fresh.unwrap_or(false),
        rerun_changed: args.rerun_changed || job.rerun_changed.unwrap_or(false),
        skip_invalid: args.skip_invalid || job.skip_invalid.unwrap_or(false),
        progress: if no_progress {
            ProgressMode::Off
        } else {
            ProgressMode::Auto
        },
        progress_interval,
        quiet: args.quiet || job.quiet.unwrap_or(false),
    })
}

/// Rejects generation parameters outside the provider's documented ranges.
fn check_ranges(p: &GenParams) -> Result<(), ConfigError> {
    if let Some(t) = p.temperature
        && !(0.0..2.0).contains(&t)
    {
        return Err(bad(format!(
            "--temperature {t} is out of range: it must be in [0, 2)"
        )));
    }
    if let Some(t) = p.top_p
        && !(t > 0.0 && t <= 1.0)
    {
        return Err(bad(format!(
            "--top-p {t} is out of range: it must be in (0, 1]"
        )));
    }
    if p.max_tokens == Some(0) {
        return Err(bad("--max-tokens must be at least 1"));
    }
    if p.thinking_budget == Some(0) {
        return Err(bad("--thinking-budget must be at least 1"));
    }
    if p.prefix.as_deref().is_some_and(|t| t.is_empty()) {
        return Err(bad("--prefix must not be empty"));
    }
    if p.model.trim().is_empty() {
        return Err(bad("--model must not be empty"));
    }
    Ok(())
}

/// `--json` or `--json-schema FILE`: reads and checks the schema, so that a bad schema stops
/// the run before anything is sent.
fn output_format(json: bool, schema: Option<PathBuf>) -> Result<OutputFormat, ConfigError> {
    let Some(path) = schema else {
        return Ok(if json {
            OutputFormat::JsonObject
        } else {
            OutputFormat::Text
        });
    };
    if json {
        return Err(bad("--json and --json-schema exclude each other; pick one"));
    }
    let text = fs_err::read_to_string(&path).map_err(|e| bad(format!("--json-schema: {e}")))?;
    let schema: Value = serde_json::from_str(&text).map_err(|e| {
        bad(format!(
            "--json-schema {}: not valid JSON: {e}",
            path.display()
        ))
    })?;
    if let Err(e) = jsonschema::validator_for(&schema) {
        return Err(bad(format!(
            "--json-schema {}: not a valid JSON Schema: {e}",
            path.display()
        )));
    }
    let name: String = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    Ok(OutputFormat::JsonSchema {
        name: if name.is_empty() {
            "output".into()
        } else {
            name
        },
        schema,
    })
}

/// Rejects flags the chosen API style cannot carry, instead of letting the provider ignore
/// them silently.
fn check_api_features(api: ApiStyle, p: &GenParams) -> Result<(), ConfigError> {
    if p.prefix.is_some() && p.thinking == Some(true) {
        return Err(bad(
            "--prefix (partial mode) works only without thinking: drop --thinking on",
        ));
    }
    if api == ApiStyle::Responses {
        let unsupported = [
            ("--thinking-budget", p.thinking_budget.is_some()),
            ("--prefix", p.prefix.is_some()),
            ("--stop", !p.stop.is_empty()),
            ("--seed", p.seed.is_some()),
        ];
        if let Some((flag, _)) = unsupported.iter().find(|(_, set)| *set) {
            return Err(bad(format!(
                "{flag} is not available with --api responses (the Responses API has no such \
                 parameter); use --api chat or --api dashscope"
            )));
        }
    }
    Ok(())
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
    fn output_replaces_extensions() {
        assert_eq!(
            default_output(Path::new("d/rows.csv.gz")),
            PathBuf::from("d/rows.results.jsonl")
        );
        assert_eq!(
            default_output(Path::new("rows.jsonl")),
            PathBuf::from("rows.results.jsonl")
        );
    }

    #[test]
    fn durations_accept_bare_seconds() {
        assert_eq!(
            parse_duration("timeout", "90").ok(),
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            parse_duration("timeout", "2m").ok(),
            Some(Duration::from_secs(120))
        );
        assert!(parse_duration("timeout", "soon").is_err());
        assert!(parse_duration("timeout", "365d").is_ok());
        for huge in ["1e20", "366d", "1e300", "600000000000y"] {
            let e = parse_duration("timeout", huge)
                .map(|_| ())
                .map_err(|e| e.to_string());
            assert!(e.is_err_and(|e| e.contains("--timeout")), "{huge}");
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
    fn loopback_is_read_from_the_parsed_host() {
        for url in [
            "http://127.0.0.1:9/v1",
            "http://127.1.2.3",
            "http://[::1]:8/v1",
        ] {
            assert!(is_loopback(url), "{url}");
        }
        for url in ["https://LocalHost/v1", "http://localhost:80"] {
            assert!(is_loopback(url), "{url}");
        }
        for url in [
            "http://127.evil.example/v1",
            "http://localhost.evil.example",
            "http://127.0.0.1@evil.example/",
            "http://[::2]/v1",
            "http://10.0.0.1/v1",
        ] {
            assert!(!is_loopback(url), "{url}");
        }
    }

    #[test]
    fn scrub_takes_out_pieces_and_masked_forms_of_the_key() {
        let key = ApiKey("sk-proj-Q7vR2mXk9LpZ4tNw8HsJ3cYb".into());
        assert_eq!(
            key.scrub("Incorrect API key provided: sk-proj-**********3cYb. See the docs..."),
            "Incorrect API key provided: ***. See the docs..."
        );
        assert_eq!(key.scrub("got `Xk9LpZ4t` instead"), "got `***` instead");
        assert_eq!(key.scrub("key sk-...3cYb is wrong"), "key *** is wrong");
        assert_eq!(key.scrub("Q7vR2"), "Q7vR2");
        assert_eq!(key.scrub("loading... ** ok"), "loading... ** ok");
        assert_eq!(key.scrub("überQ7vR2mXk9 ✓"), "über*** ✓");
        let text = key.scrub("a sk-proj-Q7vR2mXk9LpZ4tNw8HsJ3cYb b");
        assert_eq!(text, "a *** b");
    }

    #[test]
    fn key_is_redacted_in_debug() {
        let key = ApiKey("sk-secret".into());
        assert!(!format!("{key:?}").contains("secret"));
    }
}
