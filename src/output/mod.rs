//! Output: the single writer task that owns the results file, the resume scan of an existing
//! file and its compaction, and the file lock. What a record holds is `record`'s.

pub mod lockfile;
pub mod merge;
pub mod resume;

use std::io::Write;
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::pricing::round_cost;
use crate::progress::Live;
use crate::record::{Outcome, encode};
use crate::summary::Summary;

/// Records are written in batches of at most about this size, always whole lines.
const WRITE_BATCH: usize = 64 * 1024;

/// How long the writer waits for more records before writing what it has.
const GATHER: std::time::Duration = std::time::Duration::from_millis(1);

/// Held while records are written: a third signal takes it before it exits, so that it never
/// leaves half a batch behind.
pub static WRITING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Takes [`WRITING`] if the writer lets go of it within `wait`; `None` when a write is stuck.
pub fn writing_within(wait: std::time::Duration) -> Option<std::sync::MutexGuard<'static, ()>> {
    let until = std::time::Instant::now() + wait;
    loop {
        match WRITING.try_lock() {
            Ok(guard) => return Some(guard),
            Err(std::sync::TryLockError::Poisoned(p)) => return Some(p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) if std::time::Instant::now() < until => {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Err(std::sync::TryLockError::WouldBlock) => return None,
        }
    }
}

/// The writer task: the only owner of the results file. It ends when every sender of `rx`
/// is dropped (the dispatcher and all workers are done), after a final fsync.
///
/// Each batch is what arrives within `GATHER` of its first outcome, written with one `write`:
/// under load records are batched, and a crash loses only rows still in flight (and at most
/// the last millisecond's records), which a rerun sends again.
///
/// When a write fails, `failed` is called (it stops the run), and the outcomes that arrive
/// after count only their spend in the summary: their rows have no record. The summary is
/// returned with the first error.
pub async fn write_all(
    mut file: fs_err::File,
    mut rx: mpsc::Receiver<Outcome>,
    mut summary: Summary,
    live: Arc<Live>,
    failed: impl FnOnce(&std::io::Error),
) -> (Summary, std::io::Result<()>) {
    let mut buf = Vec::with_capacity(WRITE_BATCH * 2);
    // The outcomes in `buf`, counted in the summary once written.
    let mut batch: Vec<Outcome> = Vec::new();
    let add = |o: Outcome, buf: &mut Vec<u8>, batch: &mut Vec<Outcome>| {
        let cost = o.cost.as_ref().map(|c| round_cost(c.amount));
        let encoded = encode(&o, cost, buf);
        live.record(&o, cost);
        batch.push(o);
        encoded.map_err(std::io::Error::other)
    };
    let mut error: Option<std::io::Error> = None;
    let mut failed = Some(failed);
    let mut written = false;
    while let Some(o) = rx.recv().await {
        if error.is_some() {
            summary.add_spend(&o);
            continue;
        }
        let mut result = add(o, &mut buf, &mut batch);
        // Gather what arrives within GATHER of the first record: at thousands of rows a
        // second that is one write instead of dozens, and a crash loses at most GATHER more.
        // The run's first write goes at once: an output that cannot be written (a full disk)
        // stops the run before the workers send their next rows.
        let gather = if written {
            GATHER
        } else {
            std::time::Duration::ZERO
        };
        written = true;
        let until = tokio::time::Instant::now() + gather;
        while buf.len() < WRITE_BATCH && result.is_ok() {
            result = match rx.try_recv() {
                Ok(o) => add(o, &mut buf, &mut batch),
                Err(mpsc::error::TryRecvError::Disconnected) => break,
                Err(mpsc::error::TryRecvError::Empty) => {
                    match tokio::time::timeout_at(until, rx.recv()).await {
                        Ok(Some(o)) => add(o, &mut buf, &mut batch),
                        Ok(None) | Err(_) => break,
                    }
                }
            };
        }
        let result = result.and_then(|()| {
            let _writing = crate::sync::lock(&WRITING);
            file.write_all(&buf)
        });
        buf.clear();
        match result {
            Ok(()) => batch.drain(..).for_each(|o| summary.add(&o)),
            Err(e) => {
                batch.drain(..).for_each(|o| summary.add_spend(&o));
                if let Some(f) = failed.take() {
                    f(&e);
                }
                error = Some(e);
            }
        }
    }
    let result = match error {
        Some(e) => Err(e),
        // A device or a pipe (`-o /dev/null`) has nothing to sync, and says so with EINVAL.
        None => match file.metadata() {
            Ok(meta) if !meta.is_file() => Ok(()),
            _ => file.sync_data(),
        },
    };
    (summary, result)
}

/// Moves an existing results file aside for `--fresh`: to `FILE.prev`, or `FILE.prev.N` when
/// that is taken, so that nothing written before is destroyed. Returns where it went. When
/// `output` is a symlink, the file it points to is moved and the link stays, so the new
/// results are written through it.
pub fn keep_previous(output: &std::path::Path) -> std::io::Result<Option<std::path::PathBuf>> {
    // Only a regular file holds results to keep: a device such as /dev/null stays where it is.
    if !output.is_file() {
        return Ok(None);
    }
    let output = &fs_err::canonicalize(output)?;
    let base = {
        let mut n = output.as_os_str().to_owned();
        n.push(".prev");
        std::path::PathBuf::from(n)
    };
    let mut target = base.clone();
    let mut n = 1;
    while target.exists() {
        let mut name = base.as_os_str().to_owned();
        name.push(format!(".{n}"));
        target = std::path::PathBuf::from(name);
        n += 1;
    }
    fs_err::rename(output, &target)?;
    Ok(Some(target))
}
