//! Generation parameters: what every request asks the model for, checked against the
//! provider's documented ranges and what the chosen API style can carry.

use std::path::Path;

use serde_json::{Map, Value};

use super::{ConfigError, bad};
use crate::cli::{OnOff, RunArgs};
use crate::request::api::Api;

pub const DEFAULT_MODEL: &str = "qwen-plus";

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

/// Resolves and checks the generation parameters; `api` is the style they are sent in.
pub(super) fn resolve(args: &RunArgs, api: Api) -> Result<GenParams, ConfigError> {
    let params = GenParams {
        model: args
            .model
            .clone()
            .unwrap_or_else(|| DEFAULT_MODEL.to_string()),
        temperature: args.temperature,
        top_p: args.top_p,
        max_tokens: args.max_tokens,
        seed: args.seed,
        stop: args.stop.clone(),
        thinking: args.thinking.map(|t| t == OnOff::On),
        thinking_budget: args.thinking_budget,
        format: output_format(args.json, args.json_schema.as_deref())?,
        prefix: args.prefix.clone(),
        extra: args.params.clone().unwrap_or_default(),
    };
    check_ranges(&params)?;
    check_api_features(api, &params)?;
    Ok(params)
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
fn output_format(json: bool, schema: Option<&Path>) -> Result<OutputFormat, ConfigError> {
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
    let text = fs_err::read_to_string(path).map_err(|e| bad(format!("--json-schema: {e}")))?;
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
fn check_api_features(api: Api, p: &GenParams) -> Result<(), ConfigError> {
    if p.prefix.is_some() && p.thinking == Some(true) {
        return Err(bad(
            "--prefix (partial mode) works only without thinking: drop --thinking on",
        ));
    }
    if api == Api::Responses {
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
