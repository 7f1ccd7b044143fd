//! A job file (TOML): the `run` flags by their snake_case names, plus a `[params]` table, read
//! into the same [`RunArgs`] as the command line. Strings may name environment variables
//! (`${VAR}`), never the key; relative paths are relative to the file.

use std::path::Path;

use serde::Deserialize;

use super::endpoint::DEFAULT_API_KEY_ENV;
use super::{ConfigError, bad};
use crate::cli::RunArgs;

/// Reads a job file, rejecting unknown keys with the file's name.
pub(super) fn read(
    path: &Path,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<RunArgs, ConfigError> {
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
    let mut job = RunArgs::deserialize(toml::Value::Table(table)).map_err(|e| {
        bad(format!(
            "{}: {}",
            path.display(),
            e.message().trim_end().replace('\n', " ")
        ))
    })?;
    // The flags that name files; a new one joins this list.
    let dir = path.parent().unwrap_or(Path::new(""));
    for p in [
        &mut job.input,
        &mut job.output,
        &mut job.json_schema,
        &mut job.pricing,
        &mut job.summary_json,
        &mut job.report,
    ]
    .into_iter()
    .flatten()
    {
        if p.is_relative() {
            *p = dir.join(&*p);
        }
    }
    Ok(job)
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
