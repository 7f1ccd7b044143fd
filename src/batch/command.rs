//! `batchgen batch status|cancel RESULTS`: the journal's batches with their state at the
//! provider, and the cancel of those still running (a later run still collects their finished
//! lines, which are billed).

use std::fmt::Write as _;
use std::time::Duration;

use super::api::{Backoff, BatchApi, Phase};
use super::journal;
use crate::exit::Exit;
use crate::printer::{say, write_raw};
use crate::settings::BatchTarget;

/// Prints (and with `cancel`, cancels) the batches of a results file's journal.
pub async fn command(target: &BatchTarget, cancel: bool) -> Exit {
    let path = journal::journal_path(&target.results);
    let entries = match journal::read(&path) {
        Ok(e) => e,
        Err(e) => {
            say(format_args!("error: {}: {e}", path.display()));
            return Exit::Stopped;
        }
    };
    if entries.is_empty() {
        say(format_args!("{}: no batches", path.display()));
        return Exit::Ok;
    }
    let backoff = Backoff {
        first: Duration::from_millis(500),
        max: Duration::from_secs(30),
        retries: 6,
    };
    let api = match BatchApi::new(
        &target.base_url,
        target.api_key.as_ref(),
        Duration::from_secs(60),
        backoff,
    ) {
        Ok(a) => a,
        Err(e) => {
            say(format_args!("error: {e:#}"));
            return Exit::Usage;
        }
    };
    let mut exit = Exit::Ok;
    let mut out = String::new();
    for e in &entries {
        let name = e
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let _ = write!(out, "{name}  {} rows  round {}  ", e.rows, e.round);
        let Some(id) = &e.batch_id else {
            let step = if e.file_id.is_some() {
                "uploaded"
            } else {
                "written"
            };
            let _ = writeln!(out, "not submitted ({step})");
            continue;
        };
        let state = match api.retrieve(id).await {
            Ok(b) if cancel && b.phase() == Phase::Running => match api.cancel(id).await {
                Ok(b) => format!("{} (cancel requested)", b.status()),
                Err(f) => {
                    exit = Exit::Stopped;
                    format!("{} (cancel failed: {})", b.status(), f.message)
                }
            },
            Ok(b) => {
                let c = b.request_counts.unwrap_or_default();
                format!(
                    "{}  {} of {} done, {} failed",
                    b.status(),
                    c.completed,
                    c.total,
                    c.failed
                )
            }
            Err(f) => {
                exit = Exit::Stopped;
                format!("unknown ({})", f.message)
            }
        };
        let collected = if e.collected { "  collected" } else { "" };
        let _ = writeln!(out, "{id}  {state}{collected}");
    }
    write_raw(out.as_bytes());
    exit
}
