//! The settings of `batchgen merge`: its command line resolved once.

use std::path::PathBuf;

use super::{ConfigError, InputSpec, bad};
use crate::cli::MergeArgs;
use crate::input::format::{Format, format_of};

/// A merge, resolved from the command line once: what `merge` sees of it.
#[derive(Debug, Clone)]
pub struct MergeOptions {
    pub results: Vec<PathBuf>,
    pub output: PathBuf,
    /// The input whose ids must all have a record, if given.
    pub input: Option<InputSpec>,
    pub id_field: String,
}

impl MergeOptions {
    pub fn resolve(args: &MergeArgs) -> Result<MergeOptions, ConfigError> {
        if args.output.as_os_str().is_empty() || args.output.as_os_str() == "-" {
            return Err(bad("-o must name a file: the merge is written atomically"));
        }
        if args.id_field.trim().is_empty() {
            return Err(bad("--id-field must name a field"));
        }
        let input = match &args.input {
            None => None,
            Some(p) if p.as_os_str() == "-" => {
                return Err(bad("--input -: merge needs the input as a file"));
            }
            Some(p) => {
                let format = match args.input_format.map(Format::from) {
                    Some(f) => f,
                    None => format_of(p).ok_or_else(|| {
                        bad(format!(
                            "{}: cannot tell the format from the extension (.jsonl, .csv, \
                             optionally .gz); use --input-format jsonl|csv",
                            p.display()
                        ))
                    })?,
                };
                Some(InputSpec {
                    path: Some(p.clone()),
                    format,
                })
            }
        };
        Ok(MergeOptions {
            results: args.results.clone(),
            output: args.output.clone(),
            input,
            id_field: args.id_field.clone(),
        })
    }
}
