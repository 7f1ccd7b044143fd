//! The files of a run: where rows come from (a path or stdin, and its format), which of its
//! rows this process sends (`--shard`), and where the results go.

use std::path::{Path, PathBuf};

use super::{ConfigError, bad};
use crate::cli::{self, RunArgs};
use crate::input::format::{Format, format_of};
use crate::input::ids::Shard;

/// The environment variable read for `--shard` when the flag is not given.
pub const ENV_SHARD: &str = "BATCHGEN_SHARD";

/// Where rows come from.
#[derive(Debug, Clone)]
pub struct InputSpec {
    /// `None` reads stdin.
    pub path: Option<PathBuf>,
    pub format: Format,
}

impl InputSpec {
    pub fn display(&self) -> String {
        match &self.path {
            Some(p) => p.display().to_string(),
            None => "<stdin>".to_string(),
        }
    }
}

impl From<cli::InputFormat> for Format {
    fn from(f: cli::InputFormat) -> Format {
        match f {
            cli::InputFormat::Jsonl => Format::Jsonl,
            cli::InputFormat::Csv => Format::Csv,
            cli::InputFormat::Parquet => Format::Parquet,
        }
    }
}

/// `--shard K/N` (or `BATCHGEN_SHARD`): 0 <= K < N.
pub(super) fn shard(
    args: &RunArgs,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<Shard>, ConfigError> {
    let (text, name) = match &args.shard {
        Some(t) => (t.clone(), "--shard"),
        None => match env(ENV_SHARD).filter(|t| !t.trim().is_empty()) {
            Some(t) => (t, ENV_SHARD),
            None => return Ok(None),
        },
    };
    parse_shard(&text).map(Some).ok_or_else(|| {
        bad(format!(
            "{name}: `{text}` is not K/N with 0 <= K < N (e.g. 0/4 for the first of four shards)"
        ))
    })
}

fn parse_shard(text: &str) -> Option<Shard> {
    let (k, n) = text.trim().split_once('/')?;
    let (index, count): (u64, u64) = (k.trim().parse().ok()?, n.trim().parse().ok()?);
    (index < count).then_some(Shard { index, count })
}

/// Resolves the input and the results file, refusing to append results to the input.
pub(super) fn resolve(
    args: &RunArgs,
    shard: Option<Shard>,
) -> Result<(InputSpec, PathBuf), ConfigError> {
    let Some(input_path) = args.input.clone() else {
        return Err(bad("no INPUT given (a path, or - for stdin)"));
    };
    let stdin = input_path.as_os_str() == "-";
    let format = match args.input_format.map(Format::from) {
        Some(f) => f,
        None if stdin => Format::Jsonl,
        None => format_of(&input_path).ok_or_else(|| {
            bad(format!(
                "{}: cannot tell the format from the extension (.jsonl, .csv, optionally .gz); \
                 use --input-format jsonl|csv",
                input_path.display()
            ))
        })?,
    };
    let output = match args.output.clone() {
        Some(p) => p,
        None if stdin => return Err(bad("reading stdin needs --output FILE")),
        None => match shard {
            Some(s) => shard_output(&input_path, s),
            None => default_output(&input_path),
        },
    };
    if !stdin && same_file(&output, &input_path) {
        return Err(bad(format!(
            "-o {}: that is the input file ({}); the results would be appended to it: \
             choose another output",
            output.display(),
            input_path.display()
        )));
    }
    let input = InputSpec {
        path: (!stdin).then_some(input_path),
        format,
    };
    Ok((input, output))
}

/// The default output path: the input with its extensions replaced by `.results.jsonl`.
pub fn default_output(input: &Path) -> PathBuf {
    input.with_file_name(format!("{}.results.jsonl", stem(input)))
}

/// The default output path of a shard: `INPUT.shard-K-of-N.results.jsonl`, one file (and one
/// lock) per shard beside the input.
pub fn shard_output(input: &Path, shard: Shard) -> PathBuf {
    input.with_file_name(format!(
        "{}.shard-{}-of-{}.results.jsonl",
        stem(input),
        shard.index,
        shard.count
    ))
}

/// The input's file name without its data extensions.
fn stem(input: &Path) -> String {
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
    stem.to_string()
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

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(
            shard_output(Path::new("d/rows.csv.gz"), Shard { index: 2, count: 4 }),
            PathBuf::from("d/rows.shard-2-of-4.results.jsonl")
        );
    }

    #[test]
    fn shards_are_k_of_n() {
        assert_eq!(parse_shard("0/1"), Some(Shard { index: 0, count: 1 }));
        assert_eq!(parse_shard(" 3 / 4 "), Some(Shard { index: 3, count: 4 }));
        for bad in ["4/4", "1/0", "0/0", "-1/4", "1", "a/4", "1/4/5", ""] {
            assert_eq!(parse_shard(bad), None, "{bad}");
        }
    }
}
