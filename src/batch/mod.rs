//! Batch mode: the rows go through the provider's Batch API (files + batches) at the batch
//! price instead of one request each. `files` writes the batch files, `journal` records each
//! step so that a crash resumes without a second batch for the same rows, `api` makes the
//! calls, `collect` turns output lines into records, and `step` takes one file through its
//! life. This file is the cycle: resume the journal's files, make files of the rows not yet
//! in one, then poll until every batch is collected (or `--detach`, a signal or the
//! deadline stops the wait).

pub mod api;
pub mod collect;
mod command;
pub mod estimate;
pub mod files;
pub mod journal;
mod step;
mod thinking;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::exit::Stop;
use crate::pricing::Prices;
use crate::printer::say;
use crate::record::Outcome;
use crate::request::{Prepared, Usage, style};
use crate::retry::{ErrorKind, Failure};
use crate::settings::{BatchMode, Settings};
use api::{Backoff, Batch, BatchApi};
pub use command::command;
use estimate::Estimate;
use journal::{Entry, Event, Journal};
use step::StepError;

/// A failure before any batch could be followed: the journal or the files cannot be written.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0:#}")]
    Client(anyhow::Error),
}

/// The state of the cycle: the journal's files and what this run learned about them.
pub struct Cycle {
    settings: Arc<Settings>,
    mode: BatchMode,
    api: BatchApi,
    prices: Arc<Prices>,
    journal: Journal,
    /// Where batch files go.
    dir: PathBuf,
    entries: Vec<Entry>,
    /// The batch objects seen this run, by file.
    seen: HashMap<u64, Batch>,
    /// Files collected this run, journaled once their records are written (see
    /// [`Done::mark_collected`]).
    collected: Vec<(u64, String)>,
    style_path: &'static str,
    openai: bool,
    quiet: bool,
    /// The state line last said of each file, so that a poll that changed nothing is silent.
    last_said: Mutex<HashMap<u64, String>>,
}

/// How the cycle ended, with what is left to journal once every record is written.
pub struct Done {
    pub stopped: Option<Stop>,
    cycle: Cycle,
}

impl Done {
    /// Journals the files collected this run. Called after the writer has written (and synced)
    /// their records: a crash before this collects them again, which writes the same records.
    pub fn mark_collected(mut self) -> std::io::Result<()> {
        for (seq, batch_id) in std::mem::take(&mut self.cycle.collected) {
            self.cycle
                .journal
                .append(&Event::Collected { seq, batch_id })?;
        }
        Ok(())
    }
}

/// Opens the journal of the run's output and the Batch API of `base_url`.
pub fn open(
    settings: Arc<Settings>,
    mode: BatchMode,
    prices: Arc<Prices>,
    base_url: &str,
) -> Result<Cycle, SetupError> {
    let backoff = Backoff {
        first: settings.retry_delay,
        max: settings.retry_max_delay,
        retries: settings.max_retries,
    };
    let api = BatchApi::new(
        base_url,
        settings.api_key.as_ref(),
        settings.timeout,
        backoff,
    )
    .map_err(SetupError::Client)?;
    let (journal, entries) = Journal::open(&journal::journal_path(&settings.output))?;
    Ok(Cycle {
        dir: journal::files_dir(&settings.output),
        mode,
        api,
        prices,
        journal,
        entries,
        seen: HashMap::new(),
        collected: Vec::new(),
        style_path: style::path(settings.api),
        openai: base_url.contains("api.openai.com"),
        quiet: settings.quiet,
        last_said: Mutex::new(HashMap::new()),
        settings,
    })
}

impl Cycle {
    fn name(&self, e: &Entry) -> String {
        e.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| e.seq.to_string())
    }

    fn next_seq(&self) -> u64 {
        self.entries.iter().map(|e| e.seq).max().unwrap_or(0) + 1
    }

    /// Journals a new file and follows it.
    fn add_file(&mut self, made: files::Made, parent: Option<u64>) -> std::io::Result<()> {
        self.journal.append(&Event::File {
            seq: made.seq,
            path: self.journal.relative(&made.path),
            model: made.model.clone(),
            rows: made.rows,
            bytes: made.bytes,
            ids: made.ids.clone(),
            round: made.round,
            parent,
        })?;
        self.entries.push(Entry {
            seq: made.seq,
            path: made.path,
            model: made.model,
            rows: made.rows,
            bytes: made.bytes,
            ids: made.ids,
            round: made.round,
            parent,
            ..Entry::default()
        });
        Ok(())
    }

    /// The ids of the rows in files a previous run left uncollected: they are at the provider
    /// (or about to be), so no new file takes them. A file that is gone from disk before it
    /// was uploaded is dropped: its rows go in a new file.
    fn pending_ids(&mut self) -> std::io::Result<HashSet<String>> {
        let mut ids = HashSet::new();
        for e in self.entries.iter_mut().filter(|e| e.pending()) {
            if !e.path.exists() {
                if e.file_id.is_some() {
                    say(format_args!(
                        "warning: {} is missing, so batch {} cannot be collected; its rows are \
                         sent again",
                        e.path.display(),
                        e.batch_id.as_deref().unwrap_or("(not created)")
                    ));
                }
                e.collected = true;
                continue;
            }
            let model: Arc<str> = Arc::from(e.model.as_str());
            ids.extend(files::read_rows(&e.path, &model)?.into_keys());
        }
        if !ids.is_empty() && !self.quiet {
            say(format_args!(
                "resuming batch mode: {} rows are in batches of an earlier run",
                ids.len()
            ));
        }
        Ok(ids)
    }

    /// Writes the rows of `rows` not in `skip` into new batch files (on a blocking thread: the
    /// rows come from the reader thread). Rows whose line alone is too large get error records.
    /// With `--max-cost`, the files are journaled only when the estimate of every file not yet
    /// uploaded is within the cap; otherwise they are deleted and the stop is returned.
    async fn make_files(
        &mut self,
        mut rows: mpsc::Receiver<Vec<Prepared>>,
        skip: HashSet<String>,
        out: &mpsc::Sender<Outcome>,
    ) -> Result<Option<Stop>, SetupError> {
        let limits = files::Limits {
            max_rows: self.mode.max_rows,
            max_bytes: self.mode.max_bytes,
            max_line: self.mode.max_line,
        };
        let (dir, style_path, next) = (self.dir.clone(), self.style_path, self.next_seq());
        let capped = self.settings.max_cost.is_some();
        let dashscope = self.mode.dashscope;
        let (settings, prices) = (self.settings.clone(), self.prices.clone());
        let made = tokio::task::spawn_blocking(move || {
            let mut maker =
                files::Maker::new(&dir, style_path, limits, next, 0)?.explicit_thinking(dashscope);
            let mut refused = Vec::new();
            let mut estimate = Estimate::default();
            while let Some(batch) = rows.blocking_recv() {
                for p in batch {
                    if skip.contains(&p.id) {
                        continue;
                    }
                    if let Err(why) = maker.add(&p.id, &p.body, &p.model, p.metadata.as_ref())? {
                        refused.push((p, why));
                    } else if capped {
                        estimate.add(&prices, &settings, &p.model, &p.body);
                    }
                }
            }
            Ok::<_, std::io::Error>((maker.finish()?, refused, estimate))
        })
        .await
        .map_err(|e| SetupError::Io(std::io::Error::other(e)))?;
        let (made, refused, mut estimate) = made?;
        for (p, why) in refused {
            let _ = out.send(refused_outcome(p, why)).await;
        }
        if capped {
            for e in self
                .entries
                .iter()
                .filter(|e| e.pending() && e.file_id.is_none())
            {
                let (prices, settings) = (&self.prices, &self.settings);
                files::each_body(&e.path, |body| {
                    estimate.add(prices, settings, &e.model, body);
                })?;
            }
            if let Some(stop) = estimate.check(&self.settings) {
                for m in &made {
                    let _ = fs_err::remove_file(&m.path);
                    let _ = fs_err::remove_file(files::meta_path(&m.path));
                }
                return Ok(Some(stop));
            }
        }
        for m in made {
            self.add_file(m, None)?;
        }
        Ok(None)
    }
}

/// The record of a row too large for any batch file.
fn refused_outcome(p: Prepared, why: String) -> Outcome {
    let mut f = Failure::new(ErrorKind::InvalidRequest, format!("not sent: {why}"));
    f.retryable = false;
    Outcome {
        id: p.id,
        hash: p.hash,
        metadata: p.metadata,
        result: Err(f),
        cost: None,
        discarded_usage: Usage::default(),
        discarded_cost: None,
        attempts: 0,
        latency_ms: 0,
        possibly_billed: 0,
        model: p.model,
        batch_id: None,
    }
}

/// The files `rows` would make (`--dry-run --batch`), written into `dir`, and the estimate
/// `--max-cost` would be checked on.
pub async fn plan_files(
    dir: &std::path::Path,
    settings: Arc<Settings>,
    mode: &BatchMode,
    prices: Arc<Prices>,
    mut rows: mpsc::Receiver<Vec<Prepared>>,
) -> std::io::Result<(Vec<files::Made>, Estimate)> {
    let limits = files::Limits {
        max_rows: mode.max_rows,
        max_bytes: mode.max_bytes,
        max_line: mode.max_line,
    };
    let (dir, style_path) = (dir.to_path_buf(), style::path(settings.api));
    let dashscope = mode.dashscope;
    tokio::task::spawn_blocking(move || {
        let mut maker =
            files::Maker::new(&dir, style_path, limits, 1, 0)?.explicit_thinking(dashscope);
        let mut estimate = Estimate::default();
        while let Some(batch) = rows.blocking_recv() {
            for p in batch {
                if maker
                    .add(&p.id, &p.body, &p.model, p.metadata.as_ref())?
                    .is_ok()
                {
                    estimate.add(&prices, &settings, &p.model, &p.body);
                }
            }
        }
        Ok((maker.finish()?, estimate))
    })
    .await
    .map_err(std::io::Error::other)?
}

/// What ends the wait between two polls early.
pub struct Stops {
    /// Cancelled by SIGINT / SIGTERM.
    pub signal: CancellationToken,
    /// Cancelled when a record cannot be written: the run ends, and says why.
    pub halt: CancellationToken,
    /// `--deadline`, counted from the start of the run.
    pub deadline: Option<tokio::time::Instant>,
}

/// The poll interval with ±10% jitter, so that many runs do not poll in step.
fn jittered(d: Duration) -> Duration {
    d.mul_f64(0.9 + 0.2 * fastrand::f64())
}

/// Runs the cycle: follows the journal's pending files, makes files of `rows`, and polls until
/// every batch is collected, writing each record into `out`.
pub async fn run(
    mut cycle: Cycle,
    rows: mpsc::Receiver<Vec<Prepared>>,
    out: mpsc::Sender<Outcome>,
    stops: Stops,
) -> Result<Done, SetupError> {
    let skip = cycle.pending_ids()?;
    if let Some(stop) = cycle.make_files(rows, skip, &out).await? {
        return Ok(Done {
            stopped: Some(stop),
            cycle,
        });
    }
    let stopped = cycle.follow(&out, &stops).await;
    Ok(Done { stopped, cycle })
}

impl Cycle {
    /// Takes every pending file as far as it goes, then waits a poll interval, until none is
    /// pending; `Some(stop)` when something ended the wait first.
    async fn follow(&mut self, out: &mpsc::Sender<Outcome>, stops: &Stops) -> Option<Stop> {
        loop {
            let mut i = 0;
            // Collection may add files (resubmissions): the loop reaches them too.
            while i < self.entries.len() {
                if stops.halt.is_cancelled() {
                    return None;
                }
                match self.advance(i, out).await {
                    Ok(()) => {}
                    Err(StepError::Closed) => return None,
                    Err(StepError::Io(e)) => {
                        return Some(Stop::Batch(format!(
                            "{}: {e}",
                            journal::journal_path(&self.settings.output).display()
                        )));
                    }
                    Err(StepError::Api(f)) if f.fatal => return Some(Stop::Fatal(f)),
                    Err(StepError::Api(f)) => return Some(Stop::Batch(f.message)),
                }
                i += 1;
            }
            let live = self.entries.iter().filter(|e| e.pending()).count();
            if live == 0 {
                return None;
            }
            if self.mode.detach {
                return Some(Stop::Detached { live });
            }
            let wait = tokio::time::sleep(jittered(self.mode.poll_interval));
            let deadline = async {
                match stops.deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = wait => {}
                _ = stops.signal.cancelled() => {
                    if !self.quiet {
                        say(format_args!(
                            "stopped waiting: {live} batches go on at the provider; a rerun \
                             collects them"
                        ));
                    }
                    return Some(Stop::Interrupted);
                }
                _ = stops.halt.cancelled() => return None,
                _ = deadline => return Some(Stop::Deadline),
            }
        }
    }
}
