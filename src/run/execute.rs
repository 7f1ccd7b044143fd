//! The second stage of a run: sending. It opens the output, starts the in-process mock for
//! `--base-url mock`, builds the client and the state the workers share, then runs the tasks
//! (reader, workers, writer, progress) until the writer has the last outcome.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::prepare::{Compaction, Held, Ready};
use super::signals::Signals;
use crate::client::Client;
use crate::dispatch;
use crate::exit::{RunError, Stop};
use crate::limit::{Flow, Remote};
use crate::mock;
use crate::output;
use crate::plan::{self, Plan};
use crate::pricing::Prices;
use crate::printer::say;
use crate::progress::{self, Live};
use crate::record::Outcome;
use crate::request::{self, Builder};
use crate::retry;
use crate::settings::{self, Endpoint, Settings};
use crate::structured::Structured;
use crate::summary::Summary;
use crate::worker::{Shared, Unrecorded};

/// A run whose rows have all been sent or given up, handed to `finish`.
pub struct Ran {
    pub settings: Arc<Settings>,
    pub started: Instant,
    pub output_name: String,
    /// Every written record counted, and the attempts of rows left without one.
    pub summary: Summary,
    /// How the writes went: the first error, when one failed.
    pub written: std::io::Result<()>,
    /// Why the run stopped early, if it did.
    pub stopped: Option<Stop>,
    pub compaction: Compaction,
    pub held: Held,
}

/// Opens the results file for appending: every record of the run goes to its end.
pub(super) fn open_output(settings: &Settings) -> Result<fs_err::File, RunError> {
    fs_err::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&settings.output)
        .map_err(RunError::OutputNotWritable)
}

/// Sends the rows of a ready run and waits until every outcome is written.
pub async fn execute(ready: Ready, signals: Signals) -> Result<Ran, RunError> {
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
    // The simulated endpoint lives until every outcome is written.
    let (mock_server, base_url) = start_endpoint(&settings).await?;
    let flow = Arc::new(flow(&settings).await?);
    let client = connect(&settings, &base_url, flow.clone())?;

    let model: Arc<str> = Arc::from(settings.params.model.as_str());
    let summary = start_summary(&settings, &plan, rows_skipped, &prices, &model);

    let settings = Arc::new(settings);
    let live = Arc::new(Live::new(
        plan.rows_total - rows_skipped,
        Some(flow.clone()),
    ));
    let shared = share(&settings, client, prices, flow, &live, model, signals)?;
    // Aborted once the writer is done: a deadline no longer applies when every row is answered.
    let deadline = watch_stops(&shared, started);

    // Rows ready to send, in batches. The reader thread holds the sender: dropping it (the
    // input is done) lets the workers end once the queue is empty. The workers share the
    // receiver, dropped with the last of them, which ends the reader (its sends fail).
    let (row_tx, row_rx) = mpsc::channel(4);
    // Outcomes. This function (for the invalid rows) and each worker hold senders: when all
    // are gone the writer flushes and ends.
    let (out_tx, out_rx) = mpsc::channel(settings.concurrency * 2);

    // Joined after the writer, which ends only once the reader has stopped sending: its read
    // error is said then.
    let reader = spawn_reader(&settings, builder, &mut plan, live.total, row_tx);
    // A failed write stops the run at once: the records of rows still in flight could not be
    // written either, so their requests are abandoned too.
    let write_failed = {
        let shared = shared.clone();
        move |e: &std::io::Error| {
            shared.stop_with(Stop::Output(e.to_string()));
            shared.abandon.cancel();
        }
    };
    // Returns the summary once the last sender of outcomes is gone.
    let writer = tokio::spawn(output::write_all(
        file,
        out_rx,
        summary,
        live.clone(),
        write_failed,
    ));
    // Held here: cancelled when the writer is done, which ends the progress display; the
    // display's task is joined then, so its last line is drawn before the report.
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

    send_invalid(&mut plan, &input_name, &shared.model, &out_tx).await;
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
    let (mut summary, written) = summary.map_err(RunError::WriterPanicked)?;
    let u = &shared.unrecorded;
    summary.add_unrecorded(
        u.requests.load(Relaxed),
        u.retries.load(Relaxed),
        u.possibly_billed.load(Relaxed),
    );
    if let Ok(Err(e)) = read_result {
        say(format_args!("error: reading {input_name}: {e}"));
    }
    Ok(Ran {
        settings,
        started,
        output_name,
        summary,
        written,
        stopped: shared.stopped.get().cloned(),
        compaction,
        held,
    })
}

/// The base URL to send to: the configured one, or that of an in-process mock for
/// `--base-url mock`, which the caller shuts down once every outcome is written.
pub(super) async fn start_endpoint(
    settings: &Settings,
) -> Result<(Option<mock::MockServer>, String), RunError> {
    match &settings.endpoint {
        Endpoint::Url(u) => Ok((None, u.clone())),
        Endpoint::Mock => {
            let addr = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
            let server = mock::MockServer::start(mock::MockConfig::default(), addr)
                .await
                .map_err(RunError::MockEndpoint)?;
            let url = server.base_url();
            Ok((Some(server), url))
        }
    }
}

/// Flow control for the run; with `--limits-redis`, Redis must answer before anything is sent.
async fn flow(settings: &Settings) -> Result<Flow, RunError> {
    let (c, rpm, tpm, max_tokens) = (
        settings.concurrency,
        settings.rpm,
        settings.tpm,
        settings.params.max_tokens,
    );
    let Some(shared) = &settings.shared_limits else {
        return Ok(Flow::new(c, rpm, tpm, max_tokens));
    };
    let shards = settings.shard.map_or(1, |s| s.count);
    let remote = Remote::connect(&shared.url, &shared.key, shards)
        .await
        .map_err(RunError::LimitsRedis)?;
    Ok(Flow::shared(c, rpm, tpm, max_tokens, remote))
}

/// The HTTP client of the run, and a note when a proxy carries its requests.
fn connect(settings: &Settings, base_url: &str, flow: Arc<Flow>) -> Result<Client, RunError> {
    let client = Client::new(
        settings.api,
        base_url,
        settings.api_key.as_ref(),
        settings.timeout,
        settings.concurrency,
        flow,
    )
    .map_err(RunError::Client)?;
    if client.proxied() && !settings.quiet {
        // The proxy's address may carry credentials: it is not printed.
        say(format_args!(
            "note: requests go through the proxy that the environment sets for {base_url} \
             (HTTPS_PROXY, HTTP_PROXY or ALL_PROXY; NO_PROXY exempts hosts)"
        ));
    }
    Ok(client)
}

/// The summary the writer fills in, and a warning when the model has no price.
pub(super) fn start_summary(
    settings: &Settings,
    plan: &Plan,
    rows_skipped: u64,
    prices: &Prices,
    model: &str,
) -> Summary {
    let mut summary = Summary::new(plan.rows_total, rows_skipped);
    summary.shard = settings
        .shard
        .map(|s| (s.to_string(), plan.rows_other_shards));
    summary.note_prices(prices, model);
    if prices.get(model).is_none() && !settings.quiet {
        say(format_args!(
            "warning: no price known for model `{model}`: its cost is reported as unknown (null)"
        ));
    }
    summary
}

/// The state every worker shares, with the answer check of `--json` / `--json-schema`.
fn share(
    settings: &Arc<Settings>,
    client: Client,
    prices: Arc<Prices>,
    flow: Arc<Flow>,
    live: &Arc<Live>,
    model: Arc<str>,
    signals: Signals,
) -> Result<Arc<Shared>, RunError> {
    let structured = Structured::new(&settings.params.format).map_err(RunError::Schema)?;
    Ok(Arc::new(Shared {
        client,
        prices,
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
        stop: signals.stop,
        abandon: signals.abandon,
        stopped: OnceLock::new(),
        unrecorded: Unrecorded::default(),
        not_found: AtomicU32::new(0),
    }))
}

/// Records the stops that come from outside the workers: a signal (so its reason is
/// recorded), and `--deadline`, which counts from the start of the run. The deadline's task is
/// returned: the caller aborts it once every row has been answered, when it no longer applies.
fn watch_stops(shared: &Arc<Shared>, started: Instant) -> Option<JoinHandle<()>> {
    // Never joined: it ends when the run stops early; otherwise it waits, holding its `Arc`
    // of the shared state, until the runtime ends.
    {
        let shared = shared.clone();
        tokio::spawn(async move {
            shared.stop.cancelled().await;
            let _ = shared.stopped.set(Stop::Interrupted);
        });
    }
    shared.settings.deadline.map(|d| {
        let shared = shared.clone();
        let at = tokio::time::Instant::from_std(started) + d;
        tokio::spawn(async move {
            tokio::time::sleep_until(at).await;
            shared.stop_with(Stop::Deadline);
        })
    })
}

/// Starts the reader thread, which feeds `tx` with the rows still to send: the requests
/// validation kept, or the input read again. `to_send` counts the rows not skipped.
pub(super) fn spawn_reader(
    settings: &Settings,
    builder: Builder,
    plan: &mut Plan,
    to_send: u64,
    tx: mpsc::Sender<Vec<request::Prepared>>,
) -> JoinHandle<std::io::Result<()>> {
    let spec = settings.input.clone();
    let (own_ids, skip_rows) = (plan.own_ids, std::mem::take(&mut plan.skip_rows));
    let invalid_lines = plan.invalid_lines();
    // Nothing left to send (a finished job rerun): no need to read the input again.
    let nothing_left = to_send <= plan.invalid.len() as u64;
    let kept = plan.take_kept();
    tokio::task::spawn_blocking(move || {
        if nothing_left {
            return Ok(());
        }
        let skip = |number, line| plan::bit(&skip_rows, number) || invalid_lines.contains(&line);
        match kept {
            Some(rows) => {
                dispatch::send_kept(rows, skip, tx);
                Ok(())
            }
            None => dispatch::read_rows(spec, builder, own_ids, skip, tx),
        }
    })
}

/// Sends the `invalid_input` record of each row `--skip-invalid` let through.
pub(super) async fn send_invalid(
    plan: &mut Plan,
    input_name: &str,
    model: &Arc<str>,
    out: &mpsc::Sender<Outcome>,
) {
    for (line, id, reason) in std::mem::take(&mut plan.invalid) {
        let outcome = Outcome {
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
            model: model.clone(),
            batch_id: None,
        };
        if out.send(outcome).await.is_err() {
            break;
        }
    }
}
