//! batchgen: a batch runner for LLM text generation.
//!
//! The data's path is the module list: `input` streams rows out of JSONL or CSV; `request`
//! turns each row into the bytes sent; `dispatch` validates the whole input first, then feeds
//! rows through a bounded queue to workers under a concurrency limit; `client` makes one
//! attempt and `retry` decides whether and when to try again; `output` owns the results file
//! (one writer task) and the resume scan; `summary` and `pricing` count tokens and cost;
//! `progress` shows how far along the run is. `mock` is a simulated endpoint for rehearsals,
//! tests and benchmarks. `run` ties them together and is what `main` calls.

pub mod cli;
pub mod client;
pub mod dispatch;
pub mod export;
pub mod flow;
pub mod input;
pub mod mock;
pub mod output;
pub mod pricing;
pub mod printer;
pub mod progress;
pub mod request;
pub mod retry;
pub mod settings;
pub mod structured;
pub mod summary;
pub mod sync;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::cli::{Cli, Command, MockServerArgs, RunArgs};
use crate::dispatch::{Shared, Stop};
use crate::pricing::Prices;
use crate::printer::say;
use crate::progress::Live;
use crate::request::Builder;
use crate::settings::{Endpoint, Settings};

/// How a command ended; the process exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Every row ok.
    Ok = 0,
    /// The run finished and some rows failed.
    SomeFailed = 1,
    /// Nothing was sent: bad usage, configuration or input.
    Usage = 2,
    /// Stopped early: credentials, permission, billing, or output not writable.
    Stopped = 3,
    /// Interrupted by a signal after a clean drain.
    Interrupted = 130,
}

impl Exit {
    pub fn code(self) -> i32 {
        self as i32
    }
}

/// Runs a parsed command line.
pub async fn main_with(cli: Cli) -> Exit {
    match cli.command {
        Command::Run(args) => run(*args, shutdown_signals()).await,
        Command::MockServer(args) => mock_server(*args).await,
        Command::Export(args) => export::run(&args),
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

/// The signals that stop a run: the first stops dispatching, the second abandons in-flight
/// requests, the third exits at once (between two writes of the results file). Returns the
/// two tokens the first two cancel.
fn shutdown_signals() -> (CancellationToken, CancellationToken) {
    let stop = CancellationToken::new();
    let abandon = CancellationToken::new();
    let (s, a) = (stop.clone(), abandon.clone());
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            return;
        };
        for round in 0..3 {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            match round {
                0 => {
                    say(
                        "interrupted: no new requests; waiting for those in flight (signal again to abandon them)",
                    );
                    s.cancel();
                }
                1 => {
                    say(
                        "interrupted again: abandoning requests in flight (signal again to exit at once)",
                    );
                    a.cancel();
                }
                _ => {
                    // Not in the middle of a write, so the results file keeps whole records;
                    // but a write that hangs (a pipe nobody reads, a stuck network disk) does
                    // not hold the exit past a second: a rerun repairs a torn last line.
                    let _writing = output::writing_within(std::time::Duration::from_secs(1));
                    say(
                        "interrupted a third time: exiting now, without a summary; a rerun resumes",
                    );
                    std::process::exit(Exit::Interrupted.code());
                }
            }
        }
    });
    (stop, abandon)
}

/// `batchgen run`: validate, resume, send, write, summarize.
pub async fn run(args: RunArgs, signals: (CancellationToken, CancellationToken)) -> Exit {
    let settings = match settings::resolve(args, |k| std::env::var(k).ok()) {
        Ok(s) => s,
        Err(e) => {
            say(format_args!("error: {e}"));
            return Exit::Usage;
        }
    };
    match run_settings(settings, signals).await {
        Ok(exit) => exit,
        Err(Failed(exit, message)) => {
            say(format_args!("error: {message}"));
            exit
        }
    }
}

/// The price table of a run: the built-in one for `--region`, with `--pricing` on top. With
/// `--max-cost`, the model must have a price.
fn load_prices(settings: &Settings) -> Result<Arc<Prices>, Failed> {
    let mut prices = Prices::for_region(settings.region);
    if let Some(path) = &settings.pricing {
        prices = prices
            .with_overrides(path)
            .map_err(|e| usage(format!("--pricing: {e}")))?;
    }
    let model = &settings.params.model;
    if settings.max_cost.is_some() && prices.get(model).is_none() {
        return Err(usage(format!(
            "--max-cost needs a price for model `{model}`, and the price table has none: \
             add it with --pricing FILE"
        )));
    }
    Ok(Arc::new(prices))
}

/// `--dry-run`: what the run would send, and a cost range; nothing is sent or written.
fn dry_run_report(
    settings: &Settings,
    plan: &dispatch::Plan,
    rows_skipped: u64,
    prices: &Prices,
) -> Result<Exit, Failed> {
    let model = &settings.params.model;
    let to_send = plan
        .rows_total
        .saturating_sub(rows_skipped + plan.invalid.len() as u64);
    let input = plan.est_input_tokens;
    let price = prices.get(model);
    let low = price.and_then(|p| {
        p.input_only(input / to_send.max(1))
            .map(|c| c * to_send as f64)
    });
    // The rule of `--max-cost`.
    let thinking = pricing::priced_as_thinking(
        settings.params.thinking,
        price.is_some_and(|p| p.thinks_by_default()),
        false,
    );
    let high = match (price, settings.params.max_tokens) {
        (Some(p), Some(m)) => p
            .upper_bound(input / to_send.max(1), m, thinking)
            .map(|c| c * to_send as f64),
        _ => None,
    };
    let (low, high) = (low.map(pricing::round_cost), high.map(pricing::round_cost));
    let currency = price.map_or("", |p| p.currency());
    let mut out = String::new();
    use std::fmt::Write as _;
    let _ = writeln!(out, "batchgen dry run: nothing was sent");
    let _ = writeln!(
        out,
        "  rows       {} total: {to_send} to send, {rows_skipped} done before, {} invalid",
        plan.rows_total,
        plan.invalid.len()
    );
    let _ = writeln!(
        out,
        "  input      about {input} tokens (estimated: a token per 4 ASCII bytes and per 3 \
         other bytes of message text, plus 4 per message)"
    );
    match settings.params.max_tokens {
        Some(m) => {
            let _ = writeln!(
                out,
                "  output     at most {m} tokens per row (--max-tokens)"
            );
        }
        None => {
            let _ = writeln!(
                out,
                "  output     no bound: set --max-tokens for the upper end of the cost range"
            );
        }
    }
    let range = match (low, high) {
        (Some(l), Some(h)) => format!("{l:.6} to {h:.6} {currency}"),
        (Some(l), None) => format!("at least {l:.6} {currency} (the input alone)"),
        _ => "unknown: the model has no price (add one with --pricing)".to_string(),
    };
    let _ = writeln!(
        out,
        "  cost       {range}, model `{model}`{}",
        price
            .and_then(|p| p.source())
            .map(|s| format!(" (prices: {s})"))
            .unwrap_or_default()
    );
    crate::printer::write_raw(out.as_bytes());
    if let Some(path) = &settings.summary_json {
        let json = serde_json::json!({
            "dry_run": true,
            "rows_total": plan.rows_total,
            "rows_to_send": to_send,
            "rows_skipped": rows_skipped,
            "rows_invalid": plan.invalid.len(),
            "input_tokens_estimate": input,
            "max_tokens": settings.params.max_tokens,
            "cost_min": low,
            "cost_max": high,
            "currency": price.map(|p| p.currency()),
            "model": model,
        });
        let text = serde_json::to_vec_pretty(&json).unwrap_or_default();
        fs_err::write(path, text)
            .map_err(|e| Failed(Exit::Stopped, format!("cannot write the summary: {e}")))?;
    }
    Ok(Exit::Ok)
}

/// A setup failure: the exit code and what to tell the user.
struct Failed(Exit, String);

fn usage(message: impl Into<String>) -> Failed {
    Failed(Exit::Usage, message.into())
}

async fn run_settings(
    mut settings: Settings,
    (stop, abandon): (CancellationToken, CancellationToken),
) -> Result<Exit, Failed> {
    let started = Instant::now();
    let input_name = settings.input.display();
    let output_name = settings.output.display().to_string();

    // Stdin is spooled to a file so that it can be validated before anything is sent.
    let _spool = match &settings.input.path {
        Some(_) => None,
        None => {
            let dir = settings
                .output
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            let tmp = input::spool_stdin(dir)
                .map_err(|e| Failed(Exit::Stopped, format!("cannot spool stdin: {e}")))?;
            settings.input.path = Some(tmp.path().to_path_buf());
            Some(tmp)
        }
    };

    let builder = Builder::new(&settings).map_err(usage)?;
    let prices = load_prices(&settings)?;
    if let Some(dir) = settings
        .output
        .parent()
        .filter(|d| !d.as_os_str().is_empty() && !settings.dry_run)
    {
        fs_err::create_dir_all(dir)
            .map_err(|e| Failed(Exit::Stopped, format!("output not writable: {e}")))?;
    }
    // Held until this function returns: no other run appends to the same output meanwhile.
    // A dry run writes nothing, so it takes no lock; nor does an output that is a device or a
    // pipe (`-o /dev/null`): there is no file to protect, and no lock file belongs beside it.
    let special = std::fs::metadata(&settings.output).is_ok_and(|m| !m.is_file());
    let _lock = match settings.dry_run || special {
        true => None,
        false => {
            Some(output::lock::acquire(&settings.output).map_err(|e| Failed(Exit::Stopped, e))?)
        }
    };
    if settings.fresh
        && !settings.dry_run
        && let Some(kept) = output::keep_previous(&settings.output)
            .map_err(|e| Failed(Exit::Stopped, format!("--fresh: {e}")))?
    {
        say(format_args!(
            "--fresh: the previous results are kept as {}",
            kept.display()
        ));
    }
    // The output scan and the input validation read different files: run them side by side.
    let scan = {
        // A dry run with --fresh plans as if the output were already moved aside.
        let path = match settings.dry_run && settings.fresh {
            true => std::path::PathBuf::new(),
            false => settings.output.clone(),
        };
        let repair = !settings.dry_run;
        tokio::task::spawn_blocking(move || output::resume::scan(&path, repair))
    };
    let validation = {
        let (spec, builder, keep) = (
            settings.input.clone(),
            builder.clone(),
            settings.skip_invalid,
        );
        let estimate = settings.dry_run;
        tokio::task::spawn_blocking(move || dispatch::validate(&spec, &builder, keep, estimate))
    };
    let prev = scan
        .await
        .map_err(|e| Failed(Exit::Stopped, format!("the resume scan failed: {e}")))?
        .map_err(|e| Failed(Exit::Stopped, format!("cannot read {output_name}: {e}")))?;
    // A repair of the file is said even with -q, and even when the input is then refused.
    match (prev.torn_bytes > 0, settings.dry_run) {
        (true, false) => say(format_args!(
            "{output_name}: dropped a torn last line ({} bytes) left by an interrupted run; its row runs again",
            prev.torn_bytes
        )),
        (true, true) => say(format_args!(
            "{output_name}: the last line is torn ({} bytes, left by an interrupted run); a run drops it and sends its row again",
            prev.torn_bytes
        )),
        (false, _) => {}
    }
    if prev.newline_added {
        say(format_args!(
            "{output_name}: the last line had no newline; it is a whole record, so it is kept{}",
            if settings.dry_run {
                " (a run adds the newline)"
            } else {
                " and the newline was added"
            }
        ));
    }
    let mut plan = validation
        .await
        .map_err(|e| usage(format!("validation failed: {e}")))?
        .map_err(|e| usage(format!("{input_name}: {e}")))?;
    plan.resume(&prev, settings.rerun_changed);
    // Whether the file may end with superseded records: older ones, or ones this run replaces.
    let prev_superseded = prev.has_superseded();
    let compact_at_end = prev.records > 0;
    if plan.problem_count > 0 {
        for p in &plan.problems {
            say(format_args!("{input_name}:{}: {}", p.line, p.reason));
        }
        let more = plan.problem_count - plan.problems.len() as u64;
        if more > 0 {
            say(format_args!("... and {more} more problems"));
        }
        if !settings.skip_invalid {
            return Err(usage(format!(
                "{input_name}: {} invalid rows; nothing was sent (--skip-invalid runs the rest)",
                plan.problem_count
            )));
        }
        say(format_args!(
            "--skip-invalid: {} invalid rows get invalid_input records; the rest run",
            plan.invalid.len()
        ));
    }
    if !settings.quiet {
        for line in prev.unreadable.iter().take(dispatch::MAX_PROBLEMS) {
            say(format_args!(
                "{output_name}:{line}: not a result record; ignored"
            ));
        }
        if plan.rows_done > 0 {
            say(format_args!(
                "resuming: {} of {} rows already done in {output_name}",
                plan.rows_done, plan.rows_total
            ));
        }
    }
    if plan.rows_changed > 0 {
        if settings.rerun_changed {
            say(format_args!(
                "{} done rows would now be sent differently (template, model or parameters changed): sending them again (--rerun-changed)",
                plan.rows_changed
            ));
        } else {
            say(format_args!(
                "warning: {} done rows would now be sent differently (template, model or parameters changed): skipped; --rerun-changed sends them again",
                plan.rows_changed
            ));
        }
    }
    let rows_skipped = if settings.rerun_changed {
        plan.rows_done
    } else {
        plan.rows_done + plan.rows_changed
    };

    if settings.dry_run {
        return dry_run_report(&settings, &plan, rows_skipped, &prices);
    }

    let file = fs_err::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&settings.output)
        .map_err(|e| Failed(Exit::Stopped, format!("output not writable: {e}")))?;

    // The simulated endpoint lives as long as this function.
    let mut mock_server = None;
    let base_url = match &settings.endpoint {
        Endpoint::Url(u) => u.clone(),
        Endpoint::Mock => {
            let addr = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
            let server = mock::MockServer::start(mock::MockConfig::default(), addr)
                .await
                .map_err(|e| {
                    Failed(
                        Exit::Stopped,
                        format!("cannot start the mock endpoint: {e}"),
                    )
                })?;
            let url = server.base_url();
            mock_server = Some(server);
            url
        }
    };
    let flow = Arc::new(flow::Flow::new(
        settings.concurrency,
        settings.rpm,
        settings.tpm,
        settings.params.max_tokens,
    ));
    let client = client::Client::new(
        settings.api,
        &base_url,
        settings.api_key.as_ref(),
        settings.timeout,
        settings.concurrency,
        flow.clone(),
    )
    .map_err(|e| usage(format!("{e:#}")))?;
    if client.proxied() && !settings.quiet {
        // The proxy's address may carry credentials: it is not printed.
        say(format_args!(
            "note: requests go through the proxy that the environment sets for {base_url} \
             (HTTPS_PROXY, HTTP_PROXY or ALL_PROXY; NO_PROXY exempts hosts)"
        ));
    }

    let model: Arc<str> = Arc::from(settings.params.model.as_str());
    let mut summary = summary::Summary::new(plan.rows_total, rows_skipped);
    summary.note_prices(&prices, &model);
    if prices.get(&model).is_none() && !settings.quiet {
        say(format_args!(
            "warning: no price known for model `{model}`: its cost is reported as unknown (null)"
        ));
    }

    let settings = Arc::new(settings);
    let live = Arc::new(Live::new(
        plan.rows_total - rows_skipped,
        Some(flow.clone()),
    ));
    let structured = structured::Structured::new(&settings.params.format)
        .map_err(|e| usage(format!("--json-schema: {e}")))?;
    let shared = Arc::new(Shared {
        client,
        prices: prices.clone(),
        spent_nanos: AtomicU64::new(0),
        reserved_nanos: AtomicU64::new(0),
        flow,
        finished: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        stream: AtomicBool::new(settings.stream),
        structured,
        settings: settings.clone(),
        live: live.clone(),
        model,
        stop: stop.clone(),
        abandon,
        stopped: OnceLock::new(),
        unrecorded: dispatch::Unrecorded::default(),
        not_found: AtomicU32::new(0),
    });
    // A signal stops the run through `shared`, so its reason is recorded.
    {
        let shared = shared.clone();
        tokio::spawn(async move {
            stop.cancelled().await;
            let _ = shared.stopped.set(Stop::Interrupted);
        });
    }
    // `--deadline` counts from the start of the run; it no longer applies once every row has
    // been dispatched and answered (the task is aborted then).
    let deadline = settings.deadline.map(|d| {
        let shared = shared.clone();
        let at = tokio::time::Instant::from_std(started) + d;
        tokio::spawn(async move {
            tokio::time::sleep_until(at).await;
            shared.stop_with(Stop::Deadline);
        })
    });

    let depth = settings.concurrency * 2;
    // Rows ready to send, in batches: the reader thread holds the sender; the dispatcher drops
    // the receiver when it stops, which ends the reader.
    let (row_tx, row_rx) = mpsc::channel(4);
    // Outcomes: the dispatcher and each worker hold senders; when all are gone the writer
    // flushes and ends.
    let (out_tx, out_rx) = mpsc::channel(depth);

    let reader = {
        drop(prev);
        let (spec, builder) = (settings.input.clone(), builder);
        let (own_ids, skip_rows) = (plan.own_ids, std::mem::take(&mut plan.skip_rows));
        let invalid_lines = plan.invalid.iter().map(|(line, _, _)| *line).collect();
        // Nothing left to send (a finished job rerun): no need to read the input again.
        let nothing_left = live.total <= plan.invalid.len() as u64;
        let kept = plan.take_kept();
        tokio::task::spawn_blocking(move || {
            if nothing_left {
                return Ok(());
            }
            match kept {
                Some(rows) => {
                    dispatch::send_kept(rows, &skip_rows, &invalid_lines, row_tx);
                    Ok(())
                }
                None => {
                    dispatch::read_rows(spec, builder, skip_rows, own_ids, invalid_lines, row_tx)
                }
            }
        })
    };
    // A failed write stops the run at once: the records of rows still in flight could not be
    // written either, so their requests are abandoned too.
    let write_failed = {
        let shared = shared.clone();
        move |e: &std::io::Error| {
            shared.stop_with(Stop::Output(e.to_string()));
            shared.abandon.cancel();
        }
    };
    let writer = tokio::spawn(output::write_all(
        file,
        out_rx,
        summary,
        live.clone(),
        write_failed,
    ));
    // Cancelled when the writer is done, to end the progress display.
    let progress_done = CancellationToken::new();
    let progress = tokio::spawn(progress::show(
        live.clone(),
        if settings.quiet {
            settings::ProgressMode::Off
        } else {
            settings.progress
        },
        settings.progress_interval,
        progress_done.clone(),
    ));

    for (line, id, reason) in std::mem::take(&mut plan.invalid) {
        let outcome = output::Outcome {
            id,
            hash: 0,
            metadata: None,
            result: Err(retry::Failure::new(
                retry::ErrorKind::InvalidInput,
                format!("{input_name}:{line}: {reason}"),
            )),
            cost: None,
            discarded_usage: request::Usage::default(),
            discarded_cost: None,
            attempts: 0,
            latency_ms: 0,
            possibly_billed: 0,
            model: shared.model.clone(),
        };
        if out_tx.send(outcome).await.is_err() {
            break;
        }
    }
    // Starts the workers; each holds a sender to the writer, so the writer ends with the last.
    dispatch::dispatch(shared.clone(), row_rx, out_tx);
    let summary = writer.await;
    if let Some(d) = deadline {
        d.abort();
    }
    progress_done.cancel();
    let _ = progress.await;
    let read_result = reader.await;
    if let Some(server) = mock_server {
        server.shutdown().await;
    }
    let (mut summary, written) = match summary {
        Ok(s) => s,
        Err(e) => return Err(Failed(Exit::Stopped, format!("the writer failed: {e}"))),
    };
    let u = &shared.unrecorded;
    summary.add_unrecorded(
        u.requests.load(Relaxed),
        u.retries.load(Relaxed),
        u.possibly_billed.load(Relaxed),
    );
    if let Ok(Err(e)) = read_result {
        say(format_args!("error: reading {input_name}: {e}"));
    }
    // Rows sent again leave their older records behind: keep only the latest of each id.
    if written.is_ok()
        && (compact_at_end && summary.rows_ok + summary.rows_failed > 0 || prev_superseded)
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
        shared
            .stopped
            .get()
            .filter(|s| !(matches!(s, Stop::Deadline) && all_finished))
    });
    let exit = match stopped {
        Some(Stop::Output(message)) => {
            say(format_args!(
                "error: stopped early: {message}; the rows without a record run again on a rerun"
            ));
            Exit::Stopped
        }
        Some(Stop::Fatal(f)) => {
            say(format_args!(
                "error: stopped early: {} error{}: {} (every row would fail the same way; fix it and rerun to resume)",
                f.kind.as_str(),
                f.code
                    .as_deref()
                    .map(|c| format!(" {c}"))
                    .unwrap_or_default(),
                f.message
            ));
            Exit::Stopped
        }
        Some(Stop::Interrupted) => Exit::Interrupted,
        Some(Stop::Deadline) => {
            say(format_args!(
                "error: stopped early: the --deadline passed; in-flight rows were drained, \
                 rerun to resume"
            ));
            Exit::Stopped
        }
        Some(Stop::CostCap { spent, cap }) => {
            say(format_args!(
                "error: stopped early: --max-cost {cap}: {spent:.6} spent, and the next request \
                 could pass the cap; rerun with a higher cap to resume"
            ));
            Exit::Stopped
        }
        Some(Stop::TooManyFailures { failed, finished }) => {
            say(format_args!(
                "error: stopped early: {failed} of the {finished} rows finished so far failed \
                 (--max-failures); see their records for why, fix it and rerun to resume"
            ));
            Exit::Stopped
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
    Ok(exit)
}
