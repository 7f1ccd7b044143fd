//! One batch file's next steps, as far as they go without waiting: upload, create (or find the
//! batch a crash left), poll, and once the batch is terminal, download and collect it, with a
//! resubmission file for the lines to send again. Each step is journaled before the next.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::mpsc;

use super::Cycle;
use super::api::{Batch, Phase};
use super::collect::Collector;
use super::files;
use super::journal::{Entry, Event};
use crate::printer::say;
use crate::record::Outcome;
use crate::retry::Failure;

/// Why a step could not go on.
#[derive(Debug)]
pub enum StepError {
    /// A Batch API call failed for good.
    Api(Failure),
    /// The journal or a batch file could not be written or read.
    Io(std::io::Error),
    /// The writer is gone: the run is ending.
    Closed,
}

impl From<std::io::Error> for StepError {
    fn from(e: std::io::Error) -> StepError {
        StepError::Io(e)
    }
}

impl From<Failure> for StepError {
    fn from(f: Failure) -> StepError {
        StepError::Api(f)
    }
}

impl Cycle {
    /// Takes entry `i` as far as it goes now. `last` holds the batch objects seen this run.
    pub(super) async fn advance(
        &mut self,
        i: usize,
        out: &mpsc::Sender<Outcome>,
    ) -> Result<(), StepError> {
        if self.entries[i].collected {
            return Ok(());
        }
        let seq = self.entries[i].seq;
        let file_id = match self.entries[i].file_id.clone() {
            Some(id) => id,
            None => {
                let id = self.api.upload(&self.entries[i].path).await?;
                self.journal.append(&Event::Uploaded {
                    seq,
                    file_id: id.clone(),
                })?;
                self.entries[i].file_id = Some(id.clone());
                id
            }
        };
        if self.entries[i].batch_id.is_none() {
            let batch = self.find_or_create(i, &file_id).await?;
            self.journal.append(&Event::Created {
                seq,
                batch_id: batch.id.clone(),
            })?;
            self.entries[i].batch_id = Some(batch.id.clone());
            self.seen.insert(seq, batch);
        }
        let batch_id = self.entries[i].batch_id.clone().unwrap_or_default();
        if self.entries[i].status.is_none() || !self.seen.contains_key(&seq) {
            let batch = self.api.retrieve(&batch_id).await?;
            self.say_state(&self.entries[i], &batch);
            let phase = batch.phase();
            self.seen.insert(seq, batch);
            if phase == Phase::Running {
                return Ok(());
            }
            if self.entries[i].status.is_none() {
                let status = self.seen[&seq].status().to_string();
                self.journal.append(&Event::Finished {
                    seq,
                    batch_id: batch_id.clone(),
                    status: status.clone(),
                })?;
                self.entries[i].status = Some(status);
            }
        }
        self.collect(i, out).await
    }

    /// The batch of a file already uploaded: one a crash or a lost answer left (found by its
    /// file id or ids tag), else a new one.
    async fn find_or_create(&self, i: usize, file_id: &str) -> Result<Batch, Failure> {
        let e = &self.entries[i];
        let model: Arc<str> = Arc::from(e.model.as_str());
        let endpoint = files::line_url(self.style_path, &model);
        let (b, found) = self
            .api
            .find_or_create(file_id, &endpoint, &self.mode.window, &e.ids)
            .await?;
        if found && !self.quiet {
            say(format_args!(
                "{}: batch {} was already created from it; not creating another",
                self.name(e),
                b.id
            ));
        }
        Ok(b)
    }

    /// Downloads a terminal batch's output and error files and turns them into records; the
    /// lines to send again go into a new file of the next round.
    async fn collect(&mut self, i: usize, out: &mpsc::Sender<Outcome>) -> Result<(), StepError> {
        let seq = self.entries[i].seq;
        let batch = self.seen.get(&seq).cloned().unwrap_or_default();
        let path = self.entries[i].path.clone();
        let mut downloaded = Vec::new();
        for (file, suffix) in [
            (&batch.output_file_id, "output.jsonl"),
            (&batch.error_file_id, "errors.jsonl"),
        ] {
            match file {
                Some(id) => {
                    let to = path.with_extension(suffix);
                    self.api.download(id, &to).await?;
                    downloaded.push(Some(to));
                }
                None => downloaded.push(None),
            }
        }
        let default_model: Arc<str> = Arc::from(self.entries[i].model.as_str());
        let rows = files::read_rows(&path, &default_model)?;
        let metadata = files::read_meta(&path)?;
        let has_child = self.entries.iter().any(|e| e.parent == Some(seq));
        let round = self.entries[i].round;
        let invalid = self.invalid_lines(&self.entries[i], &batch, &rows);
        let (api, openai, prices) = (self.settings.api, self.openai, self.prices.clone());
        let batch_id: Arc<str> = Arc::from(batch.id.as_str());
        let may_resubmit = has_child || round < self.settings.max_retries;
        let tx = out.clone();
        // On a blocking thread, each record sent as soon as it is decided: a batch of 50,000
        // rows is never held in memory as records.
        let (got, closed) = tokio::task::spawn_blocking(move || {
            let collector = Collector {
                api,
                openai,
                prices: &prices,
                batch_id,
                rows: &rows,
                metadata: &metadata,
                may_resubmit,
                attempts: round + 1,
                invalid_lines: invalid,
            };
            let mut closed = false;
            let got = collector.collect_with(
                downloaded[0].as_deref(),
                downloaded[1].as_deref(),
                &mut |o| closed = closed || tx.blocking_send(o).is_err(),
            )?;
            Ok::<_, std::io::Error>((got, closed))
        })
        .await
        .map_err(|e| StepError::Io(std::io::Error::other(e)))??;
        if closed {
            return Err(StepError::Closed);
        }
        if !self.quiet {
            say(format_args!(
                "{}: batch {} {}: {} ok, {} failed, {} did not run{}",
                self.name(&self.entries[i]),
                batch.id,
                batch.status(),
                got.ok,
                got.failed,
                got.not_run,
                match got.resubmit.len() {
                    0 => String::new(),
                    n if has_child => format!("; {n} were sent again already"),
                    n => format!("; sending {n} again"),
                }
            ));
        }
        if !got.resubmit.is_empty() && !has_child {
            let next = self.next_seq();
            let to = files::file_path(&self.dir, next);
            let model = self.entries[i].model.clone();
            let made = files::copy_lines(&path, &to, got.resubmit, next, round + 1, &model)?;
            self.add_file(made, Some(seq))?;
        }
        self.entries[i].collected = true;
        self.collected.push((seq, batch.id.clone()));
        Ok(())
    }

    /// The per-line validation errors of a failed batch, said to the user (with the row each
    /// line holds) and keyed by line.
    fn invalid_lines(
        &self,
        e: &Entry,
        batch: &Batch,
        rows: &HashMap<String, files::Row>,
    ) -> HashMap<u64, (Option<String>, String)> {
        if batch.phase() != Phase::Failed {
            return HashMap::new();
        }
        let errors = batch.line_errors();
        let said: Vec<_> = errors.iter().take(crate::plan::MAX_PROBLEMS).collect();
        let wanted: std::collections::HashSet<u64> = said.iter().filter_map(|l| l.0).collect();
        let ids: HashMap<u64, &str> = rows
            .iter()
            .filter(|(_, r)| wanted.contains(&r.line))
            .map(|(id, r)| (r.line, id.as_str()))
            .collect();
        for (line, code, message) in said {
            say(format_args!(
                "{}{}{}: batch {} failed validation: {}{message}",
                self.name(e),
                line.map(|l| format!(":{l}")).unwrap_or_default(),
                line.and_then(|l| ids.get(&l))
                    .map(|id| format!(" (row {id})"))
                    .unwrap_or_default(),
                batch.id,
                code.as_deref()
                    .map(|c| format!("{c}: "))
                    .unwrap_or_default(),
            ));
        }
        if errors.len() > crate::plan::MAX_PROBLEMS {
            say(format_args!(
                "{}: batch {}: {} more validation errors (each in its row's record)",
                self.name(e),
                batch.id,
                errors.len() - crate::plan::MAX_PROBLEMS
            ));
        }
        errors
            .into_iter()
            .filter_map(|(line, code, message)| Some((line?, (code, message))))
            .collect()
    }

    /// Says a batch's state when it changed since the last poll (plain lines, fit for cron).
    fn say_state(&self, e: &Entry, batch: &Batch) {
        if self.quiet {
            return;
        }
        let counts = batch.request_counts.unwrap_or_default();
        let line = format!(
            "{}: batch {} {} ({} of {} done, {} failed)",
            self.name(e),
            batch.id,
            batch.status(),
            counts.completed,
            counts.total.max(e.rows),
            counts.failed
        );
        let mut last = crate::sync::lock(&self.last_said);
        if last.get(&e.seq) != Some(&line) {
            say(&line);
            last.insert(e.seq, line);
        }
    }
}
