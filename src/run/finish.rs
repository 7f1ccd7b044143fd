//! The last stage of a run: the results file compacted to one record per id, the exit code
//! from how the run ended, and the report (on stderr, as `--summary-json`, and as the HTML
//! `--report`).

use crate::exit::{Exit, Stop};
use crate::output;
use crate::printer::say;

use super::execute::Ran;

/// Ends a run: compacts the output, says why it stopped early if it did, and reports.
/// The output's lock is let go when this returns.
pub fn finish(ran: Ran) -> Exit {
    let Ran {
        settings,
        started,
        output_name,
        summary,
        written,
        stopped,
        compaction,
        held,
    } = ran;
    // Rows sent again leave their older records behind: keep only the latest of each id.
    if written.is_ok()
        && (compaction.had_records && summary.rows_ok + summary.rows_failed > 0
            || compaction.superseded)
        && let Err(e) = output::resume::compact(&settings.output)
    {
        say(format_args!(
            "warning: could not rewrite {output_name} to one record per id: {e}"
        ));
    }

    let all_finished =
        summary.rows_ok + summary.rows_failed + summary.rows_skipped >= summary.rows_total;
    // A write that failed ends the run whatever stopped it first.
    let write_error = written.err().map(|e| Stop::Output(e.to_string()));
    let stopped = write_error.as_ref().or_else(|| {
        // A deadline that passed as the last rows finished stopped nothing.
        stopped
            .as_ref()
            .filter(|s| !(matches!(s, Stop::Deadline) && all_finished))
    });
    let exit = match stopped {
        Some(stop) => {
            match stop.message() {
                // Not an error: the batches go on, and a rerun collects them.
                Some(message) if matches!(stop, Stop::Detached { .. }) => say(message),
                Some(message) => say(format_args!("error: {message}")),
                None => {}
            }
            stop.exit()
        }
        None if summary.rows_failed > 0 => Exit::SomeFailed,
        None if summary.rows_ok + summary.rows_skipped < summary.rows_total => Exit::SomeFailed,
        None => Exit::Ok,
    };
    let report = summary.report(started.elapsed().as_secs_f64(), exit.code(), &output_name);
    let mut text = Vec::new();
    let _ = report.render(&mut text);
    crate::printer::write_raw(&text);
    if let Some(path) = &settings.summary_json {
        let json = serde_json::to_vec_pretty(&report).unwrap_or_default();
        if let Err(e) = fs_err::write(path, json) {
            say(format_args!("error: cannot write the summary: {e}"));
        }
    }
    if let Some(path) = &settings.report {
        let summary = serde_json::to_value(&report).ok();
        crate::report::after_run(&settings.output, path, summary.as_ref());
    }
    drop(held);
    exit
}
