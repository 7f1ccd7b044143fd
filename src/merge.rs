//! `batchgen merge`: the results files of one job's shards (or of reruns) joined into one, with
//! one record per id (the rules are `output::merge`'s). With `--input`, the input's ids that
//! have no record are listed, so a merge proves that nothing was lost; the input is read as
//! export reads it, so ids resolve as `run` named them (`input::ids` underneath).

use std::io;
use std::path::Path;

use crate::exit::Exit;
use crate::export::{self, ExportError};
use crate::input::ids::id_key;
use crate::input::{self, Item};
use crate::output::merge::{self, Choice, MergeError, Merged};
use crate::printer::say;
use crate::settings::export::Options;
use crate::settings::merge::MergeOptions;

/// Ids missing from the merge that are named one by one; the rest are counted.
const MAX_NAMED: usize = 20;

/// Why a merge command failed, and its exit code.
#[derive(Debug, thiserror::Error)]
pub enum Failed {
    #[error(transparent)]
    Merge(#[from] MergeError),
    #[error(transparent)]
    Input(#[from] ExportError),
}

impl Failed {
    pub fn exit(&self) -> Exit {
        match self {
            Failed::Merge(MergeError::Read { .. }) => Exit::Usage,
            Failed::Merge(MergeError::Write { .. }) => Exit::Stopped,
            Failed::Input(e) => e.exit(),
        }
    }
}

/// `batchgen merge`: runs it and reports on stderr.
pub fn run(opts: &MergeOptions) -> Exit {
    match merge(opts) {
        Ok((r, missing)) => {
            say(format_args!(
                "merged {} files: {} records read, {} ids ({} ok, {} failed) written to {}",
                opts.results.len(),
                r.records_read,
                r.ids,
                r.ok,
                r.ids - r.ok,
                opts.output.display()
            ));
            if missing > 0 {
                say(format_args!(
                    "{missing} rows of the input have no record: rerun the shards they belong to"
                ));
                Exit::SomeFailed
            } else {
                Exit::Ok
            }
        }
        Err(e) => {
            say(format_args!("error: {e}"));
            e.exit()
        }
    }
}

/// Runs a merge: what it wrote, and how many input rows (with `--input`) have no record.
pub fn merge(opts: &MergeOptions) -> Result<(Merged, u64), Failed> {
    let mut report = Merged::default();
    let chosen = merge::choose(&opts.results, &mut report)?;
    let missing = match &opts.input {
        Some(input) => missing_ids(opts, input, &chosen)?,
        None => 0,
    };
    merge::write_merged(&opts.results, &opts.output, &chosen, &mut report)?;
    Ok((report, missing))
}

/// The input's rows that have no record, named (the first few) on stderr; their count.
fn missing_ids(
    opts: &MergeOptions,
    input: &crate::settings::InputSpec,
    chosen: &Choice,
) -> Result<u64, ExportError> {
    // The input is read as export reads it: ids resolve as `run` named them.
    let join = Options {
        results: opts.output.clone(),
        also: Vec::new(),
        input: input.clone(),
        id_field: opts.id_field.clone(),
        format: input.format,
        output: None,
        gzip: false,
        // Rows that cannot be read are reported and left out: they have no id to look for.
        skip_invalid: true,
    };
    let mut index = export::Index::default();
    let plan = export::check_input(&join, &mut index, &mut crate::printer::Stderr)?;
    let path = input.path.as_deref().unwrap_or(Path::new("-"));
    let unreadable =
        |e: io::Error| ExportError::Usage(format!("cannot read {}: {e}", path.display()));
    let mut missing = 0u64;
    for item in input::open(input).map_err(unreadable)? {
        let Item::Row(row) = item.map_err(unreadable)? else {
            continue;
        };
        let id = export::join_id(&row, &opts.id_field, &plan);
        if !chosen.contains(id_key(&id)) {
            missing += 1;
            if missing <= MAX_NAMED as u64 {
                say(format_args!(
                    "{}:{}: no record for id `{id}`",
                    path.display(),
                    row.line
                ));
            }
        }
    }
    if missing > MAX_NAMED as u64 {
        say(format_args!(
            "... and {} more rows without a record",
            missing - MAX_NAMED as u64
        ));
    }
    Ok(missing)
}
