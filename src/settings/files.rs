//! The files of a run: where rows come from (a path or stdin, and its format) and where the
//! results go.

use std::path::{Path, PathBuf};

use super::{ConfigError, bad};
use crate::cli::{self, RunArgs};
use crate::input::format::{Format, format_of};

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

/// Resolves the input and the results file, refusing to append results to the input.
pub(super) fn resolve(args: &RunArgs) -> Result<(InputSpec, PathBuf), ConfigError> {
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
    let input = InputSpec {
        path: (!stdin).then_some(input_path),
        format,
    };
    Ok((input, output))
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
    }
}
