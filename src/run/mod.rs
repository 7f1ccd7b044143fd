//! `batchgen run` in three stages, each handing the next a plain struct: `prepare` (spool,
//! lock, `--fresh`, the scan beside the plan, the dry run) -> `execute` (the client, the
//! reader, the workers, the writer, the progress display) -> `finish` (compaction, the exit
//! code, the report); in batch mode `batched` takes `execute`'s place. `signals` turns
//! SIGINT and SIGTERM into the tokens a run stops by.

mod batched;
mod execute;
mod finish;
mod prepare;
pub mod signals;

use crate::exit::{Exit, RunError};
use crate::printer::say;
use crate::settings::Settings;

pub use signals::{Signals, shutdown_signals};

/// `batchgen run` on resolved settings: validate, resume, send, write, summarize.
pub async fn run(settings: Settings, signals: Signals) -> Exit {
    match stages(settings, signals).await {
        Ok(exit) => exit,
        Err(e) => {
            say(format_args!("error: {e}"));
            e.exit()
        }
    }
}

async fn stages(settings: Settings, signals: Signals) -> Result<Exit, RunError> {
    let ready = prepare::prepare(settings).await?;
    if ready.settings.dry_run {
        return match ready.settings.batch.clone() {
            Some(mode) => batched::dry_run(ready, mode).await,
            None => prepare::dry_run(&ready),
        };
    }
    let ran = match ready.settings.batch.clone() {
        Some(mode) => batched::execute(ready, mode, signals).await?,
        None => execute::execute(ready, signals).await?,
    };
    Ok(finish::finish(ran))
}
