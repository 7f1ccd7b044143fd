//! batchgen: a batch runner for LLM text generation. This file is the map of the house; the
//! data's path is the module list:
//!
//! - `cli` is the command line as clap parses it, and nothing below `settings` sees it:
//!   `settings` resolves flags, job file, environment and defaults once, into plain values;
//! - `input` streams rows out of JSONL or CSV (stdin is spooled to a file first), and
//!   `input::ids` is the one place that names a row's record;
//! - `plan` validates the whole input before anything is sent, finds duplicate ids, and joins
//!   the rows with the resume scan of the existing output;
//! - `request` turns each row into the bytes sent, one module per API style (`style` picks
//!   one), and reads what comes back (`reply`, `sse`);
//! - `batch` is the other way to send them: the provider's Batch API (files of lines, a
//!   journal of each step, polling, collecting the output into the same records);
//! - `dispatch` hands the rows from a reader thread through a bounded queue to `-c` workers;
//!   `worker` runs one row: its attempts, the stream switch, the JSON check (`structured`),
//!   the cost cap;
//! - `client` makes one attempt, `retry` decides whether and when to try again, and `limit`
//!   paces the attempts (concurrency window, RPM/TPM, the shared cool-down, the 429 pace);
//! - `record` is what a row leaves behind: the `Outcome`, its record line, and the one reader
//!   and parser of record lines, shared by the resume scan, compaction and export;
//! - `output` owns the results file (one writer task), the resume scan, compaction and the
//!   lock file;
//! - `summary` and `pricing` count tokens and cost; `progress` shows how far along the run
//!   is; `printer` is the one writer to stderr, aware of the progress bar;
//! - `exit` holds the exit codes, the run's setup errors and the reasons a run stops early;
//!   `sync` a mutex helper.
//!
//! `run` ties them together in three stages: `prepare` (spool, lock, `--fresh`, scan + plan,
//! dry run) -> `execute` (client, reader, workers, writer, progress) -> `finish` (compaction,
//! exit code, report). `mock` is a simulated endpoint for rehearsals, tests and benchmarks;
//! `export` joins the results back onto the input rows; `merge` joins the results files of
//! shards into one; `report` draws a run's records as one HTML page. `main` calls
//! [`main_with`].
//!
//! Dependencies point one way: no module imports one that imports it back, and none reaches
//! up to this file (`tests/layout.rs` checks both).

pub mod batch;
pub mod cli;
pub mod client;
pub mod dispatch;
pub mod exit;
pub mod export;
pub mod input;
pub mod limit;
pub mod merge;
pub mod mock;
pub mod output;
pub mod plan;
pub mod pricing;
pub mod printer;
pub mod progress;
pub mod record;
pub mod report;
pub mod request;
pub mod retry;
pub mod run;
pub mod settings;
pub mod structured;
pub mod summary;
pub mod sync;
pub mod worker;

use crate::cli::{Cli, Command, MockServerArgs};
use crate::printer::say;

pub use crate::exit::Exit;

/// Runs a parsed command line.
pub async fn main_with(cli: Cli) -> Exit {
    match cli.command {
        Command::Run(args) => match settings::resolve(*args, |k| std::env::var(k).ok()) {
            Ok(settings) => run::run(settings, run::shutdown_signals()).await,
            Err(e) => {
                say(format_args!("error: {e}"));
                Exit::Usage
            }
        },
        Command::MockServer(args) => mock_server(*args).await,
        Command::Export(args) => match settings::export::Options::resolve(&args) {
            Ok(options) => export::run(&options),
            Err(e) => {
                say(format_args!("error: {e}"));
                Exit::Usage
            }
        },
        Command::Merge(args) => match settings::merge::MergeOptions::resolve(&args) {
            Ok(options) => merge::run(&options),
            Err(e) => {
                say(format_args!("error: {e}"));
                Exit::Usage
            }
        },
        Command::Batch(cmd) => {
            let (args, cancel) = match cmd {
                cli::BatchCommand::Status(a) => (a, false),
                cli::BatchCommand::Cancel(a) => (a, true),
            };
            match settings::BatchTarget::resolve(&args, |k| std::env::var(k).ok()) {
                Ok(target) => batch::command(&target, cancel).await,
                Err(e) => {
                    say(format_args!("error: {e}"));
                    Exit::Usage
                }
            }
        }
        Command::Report(args) => match settings::report::ReportOptions::resolve(&args) {
            Ok(options) => report::run(&options),
            Err(e) => {
                say(format_args!("error: {e}"));
                Exit::Usage
            }
        },
        Command::Completions { shell } => {
            use clap::CommandFactory as _;
            let mut cmd = Cli::command();
            clap_complete::generate(shell, &mut cmd, "batchgen", &mut std::io::stdout());
            Exit::Ok
        }
    }
}

async fn mock_server(args: MockServerArgs) -> Exit {
    let cfg = match settings::mock::resolve(&args, |k| std::env::var(k).ok()) {
        Ok(c) => c,
        Err(e) => {
            say(format_args!("error: {e}"));
            return Exit::Usage;
        }
    };
    match mock::run_cli(cfg, args.port).await {
        Ok(()) => Exit::Ok,
        Err(e) => {
            say(format_args!("error: {e:#}"));
            Exit::Stopped
        }
    }
}
