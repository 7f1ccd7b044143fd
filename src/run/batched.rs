//! The second stage of a run in batch mode: the same reader, writer and progress display as
//! `execute`, with the Batch API cycle (`crate::batch`) in place of the workers. It hands
//! `finish` the same [`Ran`].

use std::sync::{Arc, OnceLock};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::execute::{Ran, open_output, send_invalid, spawn_reader, start_endpoint, start_summary};
use super::prepare::Ready;
use super::signals::Signals;
use crate::batch;
use crate::exit::{Exit, RunError, Stop};
use crate::output;
use crate::printer::say;
use crate::progress::{self, Live};
use crate::settings::{self, BatchMode};

/// Sends the rows of a ready run through the Batch API and waits until every batch is
/// collected, or the wait is stopped.
pub async fn execute(ready: Ready, mode: BatchMode, signals: Signals) -> Result<Ran, RunError> {
    let Ready {
        settings,
        started,
        input_name,
        output_name,
        builder,
        prices,
        mut plan,
        rows_skipped,
        compaction,
        held,
    } = ready;
    let file = open_output(&settings)?;
    let (mock_server, base_url) = start_endpoint(&settings).await?;
    let model: Arc<str> = Arc::from(settings.params.model.as_str());
    let summary = start_summary(&settings, &plan, rows_skipped, &prices, &model);
    let settings = Arc::new(settings);
    let cycle = batch::open(settings.clone(), mode, prices, &base_url).map_err(batch_error)?;
    let live = Arc::new(Live::new(plan.rows_total - rows_skipped, None));

    // Rows to put in files: the reader thread holds the sender, the file maker the receiver.
    let (row_tx, row_rx) = mpsc::channel(4);
    // Records: the cycle and this function (for the invalid rows) hold senders; the writer
    // ends when both are gone.
    let (out_tx, out_rx) = mpsc::channel(1024);
    let reader = spawn_reader(&settings, builder, &mut plan, live.total, row_tx);
    // Cancelled by a failed write: the cycle stops, and `finish` says why.
    let halt = CancellationToken::new();
    let write_error = Arc::new(OnceLock::new());
    let write_failed = {
        let (halt, write_error) = (halt.clone(), write_error.clone());
        move |e: &std::io::Error| {
            let _ = write_error.set(e.to_string());
            halt.cancel();
        }
    };
    let writer = tokio::spawn(output::write_all(
        file,
        out_rx,
        summary,
        live.clone(),
        write_failed,
    ));
    // Cancelled once the writer is done, which ends the progress display.
    let progress_done = CancellationToken::new();
    let progress = tokio::spawn(progress::show(
        live.clone(),
        match settings.quiet {
            true => settings::ProgressMode::Off,
            false => settings.progress,
        },
        settings.progress_interval,
        progress_done.clone(),
    ));
    send_invalid(&mut plan, &input_name, &model, &out_tx).await;
    let stops = batch::Stops {
        signal: signals.stop,
        halt,
        deadline: settings
            .deadline
            .map(|d| tokio::time::Instant::from_std(started) + d),
    };
    let done = batch::run(cycle, row_rx, out_tx, stops).await;
    let summary = writer.await;
    progress_done.cancel();
    let _ = progress.await;
    let read_result = reader.await;
    if let Some(server) = mock_server {
        server.shutdown().await;
    }
    let (summary, written) = summary.map_err(RunError::WriterPanicked)?;
    if let Ok(Err(e)) = read_result {
        say(format_args!("error: reading {input_name}: {e}"));
    }
    let done = done.map_err(batch_error)?;
    let mut stopped = done.stopped.clone();
    if written.is_ok()
        && let Err(e) = done.mark_collected()
    {
        stopped = Some(Stop::Batch(format!("cannot write the batch journal: {e}")));
    }
    Ok(Ran {
        settings,
        started,
        output_name,
        summary,
        written,
        stopped,
        compaction,
        held,
    })
}

/// `--dry-run --batch`: the batch files the run would make (written to a temporary folder
/// and counted), then the dry run's report at the batch price. Nothing is uploaded.
pub async fn dry_run(mut ready: Ready, mode: BatchMode) -> Result<Exit, RunError> {
    let tmp = tempfile::tempdir().map_err(RunError::Batch)?;
    let to_send = ready.plan.rows_total - ready.rows_skipped;
    let (row_tx, row_rx) = mpsc::channel(4);
    let reader = spawn_reader(
        &ready.settings,
        ready.builder.clone(),
        &mut ready.plan,
        to_send,
        row_tx,
    );
    let settings = Arc::new(ready.settings.clone());
    let (made, estimate) =
        batch::plan_files(tmp.path(), settings, &mode, ready.prices.clone(), row_rx)
            .await
            .map_err(RunError::Batch)?;
    let _ = reader.await;
    let mut text = String::from("batchgen dry run (--batch): the files it would submit\n");
    for m in &made {
        use std::fmt::Write as _;
        let _ = writeln!(
            text,
            "  file {:04}  {} rows, {} bytes, model `{}`",
            m.seq, m.rows, m.bytes, m.model
        );
    }
    crate::printer::write_raw(text.as_bytes());
    let exit = super::prepare::dry_run(&ready)?;
    if let Some(line) = estimate.dry_run_line(&ready.settings) {
        say(format_args!("  max-cost   {line}"));
    }
    Ok(exit)
}

fn batch_error(e: batch::SetupError) -> RunError {
    match e {
        batch::SetupError::Client(e) => RunError::Client(e),
        batch::SetupError::Io(e) => RunError::Batch(e),
    }
}
