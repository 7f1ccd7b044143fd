//! The hand-over from the reader to the workers: a reader thread streams the rows still to
//! send in batches through a bounded queue; `-c` long-lived workers take them one at a time
//! (each row's attempts are in [`crate::worker`]) and send one `Outcome` per row to the writer.

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::input::ids::record_id;
use crate::input::{self, Item};
use crate::record::Outcome;
use crate::request::{Builder, Prepared};
use crate::settings::InputSpec;
use crate::worker::{self, Shared};

/// The most rows the reader hands over at once. One hand-over wakes the dispatcher (and, when
/// the queue was full, the reader again): per row, that was a futex round trip between threads.
pub const ROW_BATCH: usize = 128;

/// Hands rows to the workers in batches of up to [`ROW_BATCH`]: a batch goes as soon as the
/// queue has room, so hungry workers get rows at once and busy ones get them in bulk.
struct Handover {
    batch: Vec<Prepared>,
    /// The reader's end of the row queue: dropped when the reader is done, which tells the
    /// workers that no more rows come. A send fails once the workers are all gone.
    tx: mpsc::Sender<Vec<Prepared>>,
}

impl Handover {
    fn new(tx: mpsc::Sender<Vec<Prepared>>) -> Handover {
        Handover {
            batch: Vec::with_capacity(ROW_BATCH),
            tx,
        }
    }

    /// Adds a row; `false` once the workers have gone away (the run stopped).
    fn push(&mut self, p: Prepared) -> bool {
        self.batch.push(p);
        match self.tx.try_reserve() {
            Ok(permit) => {
                permit.send(std::mem::replace(
                    &mut self.batch,
                    Vec::with_capacity(ROW_BATCH),
                ));
                true
            }
            Err(mpsc::error::TrySendError::Closed(())) => false,
            Err(mpsc::error::TrySendError::Full(())) if self.batch.len() >= ROW_BATCH => {
                let rows = std::mem::replace(&mut self.batch, Vec::with_capacity(ROW_BATCH));
                self.tx.blocking_send(rows).is_ok()
            }
            Err(mpsc::error::TrySendError::Full(())) => true,
        }
    }

    fn finish(self) {
        if !self.batch.is_empty() {
            let _ = self.tx.blocking_send(self.batch);
        }
    }
}

/// Streams the rows that still need a request into `tx`, on a blocking thread: every row but
/// those `skip(row number, line)` names (done before, or invalid). Returns when the input ends
/// or when the workers have gone away (the receiver was dropped).
pub fn read_rows(
    spec: InputSpec,
    builder: Builder,
    own_ids: bool,
    skip: impl Fn(u64, u64) -> bool,
    tx: mpsc::Sender<Vec<Prepared>>,
) -> std::io::Result<()> {
    let mut out = Handover::new(tx);
    for item in input::open(&spec)? {
        let Item::Row(row) = item? else { continue };
        if skip(row.number, row.line) {
            continue;
        }
        let own = match own_ids {
            true => input::row_id(&row.fields, builder.id_field()),
            false => Ok(None),
        };
        // Rows validation found invalid were skipped above; they are not read again here.
        let id = record_id(row.line, row.number, &own, own_ids, false);
        // The validation pass built this row already; a failure here means the file changed.
        let Ok(prepared) = builder.build(&row, id) else {
            continue;
        };
        if !out.push(prepared) {
            return Ok(());
        }
    }
    out.finish();
    Ok(())
}

/// Sends the rows whose requests validation kept (for a small input) that still need a
/// request, like [`read_rows`] but without reading the input again.
pub fn send_kept(
    kept: Vec<(u64, Prepared)>,
    skip: impl Fn(u64, u64) -> bool,
    tx: mpsc::Sender<Vec<Prepared>>,
) {
    let mut out = Handover::new(tx);
    for (number, p) in kept {
        if skip(number, p.line) {
            continue;
        }
        if !out.push(p) {
            return;
        }
    }
    out.finish();
}

/// Where the workers take their rows from: the batch being handed out, and the reader's
/// queue behind it. Locked only to take the next row (and, when the batch is used up, while
/// waiting for the next batch: the other workers would wait for it anyway).
struct RowSource {
    batch: std::vec::IntoIter<Prepared>,
    /// The workers' end of the row queue, shared by all of them: dropped with the last
    /// worker, which ends the reader.
    rows: mpsc::Receiver<Vec<Prepared>>,
}

impl RowSource {
    /// The next row, or `None` when the input is done.
    async fn next(&mut self) -> Option<Prepared> {
        loop {
            if let Some(p) = self.batch.next() {
                return Some(p);
            }
            self.batch = self.rows.recv().await?.into_iter();
        }
    }
}

/// Starts `-c` workers, each taking rows one at a time until the rows end or the run stops,
/// and returns once all are started: each holds its own sender to the writer, which ends when
/// the last worker does. Long-lived workers, rather than a task and a semaphore permit per row,
/// save a task and a wake of a dispatcher for every row.
pub fn dispatch(
    shared: Arc<Shared>,
    rows: mpsc::Receiver<Vec<Prepared>>,
    results: mpsc::Sender<Outcome>,
) {
    // Dropped with the last worker, which ends the reader.
    let source = Arc::new(tokio::sync::Mutex::new(RowSource {
        batch: Vec::new().into_iter(),
        rows,
    }));
    for _ in 0..shared.settings.concurrency {
        tokio::spawn(work(shared.clone(), source.clone(), results.clone()));
    }
}

/// One worker: at most `-c` rows are in progress, one per worker. Within them, flow control's
/// window limits the attempts on the wire.
async fn work(
    shared: Arc<Shared>,
    source: Arc<tokio::sync::Mutex<RowSource>>,
    results: mpsc::Sender<Outcome>,
) {
    loop {
        let next = tokio::select! {
            biased;
            _ = shared.stop.cancelled() => None,
            p = async { source.lock().await.next().await } => p,
        };
        let Some(prepared) = next else { break };
        let Some(o) = worker::run_one(&shared, prepared).await else {
            // Abandoned or not sent: this row stays without a record.
            if shared.abandon.is_cancelled() {
                break;
            }
            continue;
        };
        // The writer outlives every sender, so this fails only if it crashed.
        if results.send(o).await.is_err() {
            break;
        }
    }
}
