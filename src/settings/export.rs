//! The settings of `batchgen export`: its command line resolved once, with the defaults
//! taken from the file names (the results file beside the input, the formats by extension).

use std::path::{Path, PathBuf};

use super::{ConfigError, InputSpec, bad, default_output};
use crate::cli::ExportArgs;
use crate::input::format::{Format, format_of};

/// An export, resolved from the command line once: what `export` sees of it.
#[derive(Debug, Clone)]
pub struct Options {
    pub results: PathBuf,
    /// More results files, merged with `results` before the join (see `output::merge`).
    pub also: Vec<PathBuf>,
    pub input: InputSpec,
    pub id_field: String,
    pub format: Format,
    /// `None` writes to stdout.
    pub output: Option<PathBuf>,
    /// Compress the output (`-o` ends with `.gz`).
    pub gzip: bool,
    pub skip_invalid: bool,
}

impl Options {
    pub fn resolve(args: &ExportArgs) -> Result<Options, ConfigError> {
        if args.input.as_os_str() == "-" {
            return Err(bad(
                "--input -: export reads the input more than once, so it must be a file",
            ));
        }
        let input_format = match args.input_format.map(Format::from) {
            Some(f) => f,
            None => format_of(&args.input).ok_or_else(|| {
                bad(format!(
                    "{}: cannot tell the format from the extension (.jsonl, .csv, optionally \
                     .gz); use --input-format jsonl|csv",
                    args.input.display()
                ))
            })?,
        };
        if args.id_field.trim().is_empty() {
            return Err(bad("--id-field must name a field"));
        }
        let output = args
            .output
            .clone()
            .filter(|p| p.as_os_str() != "-" && !p.as_os_str().is_empty());
        let format = args
            .format
            .map(Format::from)
            .or_else(|| output.as_deref().and_then(format_of))
            .unwrap_or(input_format);
        let gzip = output
            .as_deref()
            .and_then(Path::file_name)
            .is_some_and(|n| n.to_string_lossy().to_ascii_lowercase().ends_with(".gz"));
        if format == Format::Parquet && gzip {
            return Err(bad(
                "--format parquet: Parquet is compressed inside (Snappy); name -o without .gz",
            ));
        }
        Ok(Options {
            results: args
                .results
                .first()
                .cloned()
                .unwrap_or_else(|| default_output(&args.input)),
            also: args.results.iter().skip(1).cloned().collect(),
            input: InputSpec {
                path: Some(args.input.clone()),
                format: input_format,
            },
            id_field: args.id_field.clone(),
            format,
            output,
            gzip,
            skip_invalid: args.skip_invalid,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::InputFormat as Flag;

    #[test]
    fn formats_default_from_the_output_then_the_input() {
        let args = |input: &str, output: Option<&str>, format: Option<Flag>| ExportArgs {
            results: Vec::new(),
            input: PathBuf::from(input),
            input_format: None,
            id_field: "id".into(),
            format,
            output: output.map(PathBuf::from),
            skip_invalid: false,
        };
        let o = Options::resolve(&args("rows.csv.gz", None, None)).expect("ok");
        assert_eq!(o.format, Format::Csv);
        assert_eq!(o.input.format, Format::Csv);
        assert_eq!(o.results, PathBuf::from("rows.results.jsonl"));
        assert!(o.output.is_none());
        let o = Options::resolve(&args("rows.csv", Some("out.jsonl.gz"), None)).expect("ok");
        assert_eq!((o.format, o.gzip), (Format::Jsonl, true));
        let o = Options::resolve(&args("rows.jsonl", Some("out.txt"), None)).expect("ok");
        assert_eq!(o.format, Format::Jsonl);
        let o = Options::resolve(&args("rows.jsonl", Some("-"), Some(Flag::Csv))).expect("ok");
        assert_eq!((o.format, o.output), (Format::Csv, None));
        assert!(Options::resolve(&args("-", None, None)).is_err());
        assert!(Options::resolve(&args("rows.txt", None, None)).is_err());
        let o = Options::resolve(&args("rows.csv", Some("out.parquet"), None)).expect("ok");
        assert_eq!((o.format, o.gzip), (Format::Parquet, false));
        let o = Options::resolve(&args("rows.parquet", None, None)).expect("ok");
        assert_eq!(o.format, Format::Parquet);
        assert!(Options::resolve(&args("r.csv", Some("o.gz"), Some(Flag::Parquet))).is_err());
    }
}
