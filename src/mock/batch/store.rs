//! The Batch API's state, in memory: the files (uploaded, and the output and error files of
//! finished batches) and the batches, with the operations the routes call. Each operation
//! takes the time, so that a batch's state is read off the clock when it is looked at.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hyper::StatusCode;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::batches::{Batch, Outcome, Phase, Request};
use super::lines::{Cut, lines_of, run};
use crate::mock::stats::{Stats, add, bump};
use crate::mock::text::{request_uuid, splitmix64};

/// Most batches a list call returns.
const MAX_LIST: usize = 100;
/// In a file: its first create makes the batch but answers 500, as a create whose answer was
/// lost on the way.
const LOST_MARK: &[u8] = b"[mock:batch-create-lost]";

/// A failed call: its status and the message of the OpenAI error body.
#[derive(Debug)]
pub(super) struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    fn no_file(id: &str) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, format!("No such File object: {id}"))
    }

    fn no_batch(id: &str) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, format!("No such Batch object: {id}"))
    }
}

struct StoredFile {
    filename: String,
    purpose: &'static str,
    created_at: u64,
    bytes: Bytes,
}

pub(super) struct Store {
    files: HashMap<String, StoredFile>,
    /// In creation order.
    batches: Vec<Batch>,
    by_id: HashMap<String, usize>,
    step: Duration,
    /// The shuffle seed (`MockConfig::seed`, else random).
    seed: u64,
    /// Random per server, so ids differ between servers.
    nonce: u64,
    counter: u64,
    /// Files whose first create was answered 500 after it made the batch
    /// (`[mock:batch-create-lost]`).
    lost: std::collections::HashSet<String>,
    /// custom_ids that expired once (`[mock:batch-expire-once]`).
    expired_once: std::collections::HashSet<String>,
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl Store {
    pub(super) fn new(step: Duration, seed: Option<u64>) -> Store {
        Store {
            files: HashMap::new(),
            batches: Vec::new(),
            by_id: HashMap::new(),
            step,
            seed: seed.unwrap_or_else(|| fastrand::u64(..)),
            nonce: fastrand::u64(..),
            counter: 0,
            lost: std::collections::HashSet::new(),
            expired_once: std::collections::HashSet::new(),
        }
    }

    fn next_id(&mut self) -> String {
        self.counter += 1;
        request_uuid(self.nonce, self.counter)
    }

    fn add_file(&mut self, filename: String, purpose: &'static str, bytes: Bytes) -> String {
        let id = format!("file-{}", self.next_id().replace('-', ""));
        let file = StoredFile {
            filename,
            purpose,
            created_at: unix_now() as u64,
            bytes,
        };
        self.files.insert(id.clone(), file);
        id
    }

    fn file_object(&self, id: &str) -> Result<Value, ApiError> {
        let f = self.files.get(id).ok_or_else(|| ApiError::no_file(id))?;
        Ok(json!({
            "id": id,
            "object": "file",
            "bytes": f.bytes.len(),
            "created_at": f.created_at,
            "filename": f.filename,
            "purpose": f.purpose,
            "status": "processed",
        }))
    }

    /// `POST /files` with purpose `batch`.
    pub(super) fn upload(&mut self, filename: String, bytes: Bytes, stats: &Stats) -> Value {
        add(&stats.batch_lines_uploaded, lines_of(&bytes).count() as u64);
        bump(&stats.files_uploaded);
        let id = self.add_file(filename, "batch", bytes);
        self.file_object(&id).unwrap_or(Value::Null)
    }

    pub(super) fn file(&self, id: &str) -> Result<Value, ApiError> {
        self.file_object(id)
    }

    pub(super) fn content(&self, id: &str) -> Result<Bytes, ApiError> {
        self.files
            .get(id)
            .map(|f| f.bytes.clone())
            .ok_or_else(|| ApiError::no_file(id))
    }

    pub(super) fn delete(&mut self, id: &str) -> Result<Value, ApiError> {
        self.files.remove(id).ok_or_else(|| ApiError::no_file(id))?;
        Ok(json!({"id": id, "object": "file", "deleted": true}))
    }

    /// `POST /batches`: the batch, `validating`.
    pub(super) fn create(
        &mut self,
        request: Request,
        now: Instant,
        stats: &Stats,
    ) -> Result<Value, ApiError> {
        let file = self
            .files
            .get(&request.input_file_id)
            .ok_or_else(|| ApiError::no_file(&request.input_file_id))?;
        if file.purpose != "batch" {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!(
                    "File {} has purpose {}, not batch.",
                    request.input_file_id, file.purpose
                ),
            ));
        }
        let input = file.bytes.clone();
        let request_file = request.input_file_id.clone();
        let lose_answer = memchr::memmem::find(&input, LOST_MARK).is_some();
        let id = format!("batch_{}", self.next_id().replace('-', ""));
        let seq = self.batches.len() as u64;
        let mut batch = Batch::new(id.clone(), seq, request, input, now, unix_now());
        batch.checked.expire_once(&mut self.expired_once);
        let object = batch.object(now, self.step);
        self.by_id.insert(id, self.batches.len());
        self.batches.push(batch);
        bump(&stats.batches_created);
        // The batch is made, but its answer is "lost": a 500, the first time for this file.
        if lose_answer && self.lost.insert(request_file) {
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "The server had an error while processing your request.",
            ));
        }
        Ok(object)
    }

    /// Answers the lines of batch `i` the first time they are due, and keeps the output and
    /// error files as files of their own.
    fn settle(&mut self, i: usize, now: Instant, stats: &Stats) {
        let step = self.step;
        let Some(batch) = self.batches.get(i) else {
            return;
        };
        if batch.outcome.is_some() || !batch.due(now, step) {
            return;
        }
        let cut = if batch.cancelled_after.is_some() {
            Cut::Cancelled
        } else {
            Cut::None
        };
        let mut rng = fastrand::Rng::with_seed(self.seed ^ splitmix64(batch.seq));
        let (nonce, mut counter) = (self.nonce, self.counter);
        let mut id = || {
            counter += 1;
            request_uuid(nonce, counter)
        };
        let ran = run(
            &batch.input,
            &batch.checked.lines,
            batch.request.style,
            cut,
            &mut id,
            &mut rng,
        );
        let batch_id = batch.id.clone();
        self.counter = counter;
        add(&stats.batch_lines_answered, ran.answered);
        let keep = |store: &mut Store, bytes: Vec<u8>, kind: &str| {
            (!bytes.is_empty()).then(|| {
                let name = format!("{batch_id}_{kind}.jsonl");
                store.add_file(name, "batch_output", Bytes::from(bytes))
            })
        };
        let output_file_id = keep(self, ran.output, "output");
        let error_file_id = keep(self, ran.errors, "error");
        self.batches[i].outcome = Some(Outcome {
            output_file_id,
            error_file_id,
            completed: ran.completed,
            failed: ran.failed,
            usage: ran.usage,
        });
    }

    fn index(&self, id: &str) -> Result<usize, ApiError> {
        self.by_id
            .get(id)
            .copied()
            .ok_or_else(|| ApiError::no_batch(id))
    }

    /// `GET /batches/{id}`.
    pub(super) fn retrieve(
        &mut self,
        id: &str,
        now: Instant,
        stats: &Stats,
    ) -> Result<Value, ApiError> {
        let i = self.index(id)?;
        self.settle(i, now, stats);
        Ok(self.batches[i].object(now, self.step))
    }

    /// `POST /batches/{id}/cancel`: `cancelling`, then `cancelled` a step later. Cancelling a
    /// cancelled batch again changes nothing; a finished one cannot be cancelled.
    pub(super) fn cancel(
        &mut self,
        id: &str,
        now: Instant,
        stats: &Stats,
    ) -> Result<Value, ApiError> {
        let i = self.index(id)?;
        // A batch that has left in_progress keeps the answers it already has.
        self.settle(i, now, stats);
        let step = self.step;
        let batch = &mut self.batches[i];
        match batch.phase(now, step) {
            Phase::Validating | Phase::InProgress | Phase::Finalizing => {
                batch.cancel(now);
                bump(&stats.batches_cancelled);
                self.settle(i, now, stats);
            }
            Phase::Cancelling | Phase::Cancelled => {}
            done @ (Phase::Failed | Phase::Completed | Phase::Expired) => {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    format!("Cannot cancel a batch with status {}.", done.as_str()),
                ));
            }
        }
        Ok(self.batches[i].object(now, step))
    }

    /// `GET /batches?limit=N&after=ID`: newest first.
    pub(super) fn list(
        &mut self,
        limit: usize,
        after: Option<&str>,
        now: Instant,
        stats: &Stats,
    ) -> Value {
        let limit = limit.clamp(1, MAX_LIST);
        let newest_first = (0..self.batches.len()).rev();
        let page: Vec<usize> = match after {
            Some(after) => newest_first
                .skip_while(|&i| self.batches[i].id != after)
                .skip(1)
                .collect(),
            None => newest_first.collect(),
        };
        let has_more = page.len() > limit;
        let mut data = Vec::with_capacity(limit.min(page.len()));
        for &i in page.iter().take(limit) {
            self.settle(i, now, stats);
            data.push(self.batches[i].object(now, self.step));
        }
        json!({
            "object": "list",
            "first_id": data.first().map(|b| b["id"].clone()),
            "last_id": data.last().map(|b| b["id"].clone()),
            "has_more": has_more,
            "data": data,
        })
    }
}
