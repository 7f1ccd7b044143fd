//! The signals that stop a run: the first stops dispatching, the second abandons in-flight
//! requests, the third exits at once (between two writes of the results file).

use tokio_util::sync::CancellationToken;

use crate::exit::Exit;
use crate::output;
use crate::printer::say;

/// The two tokens the first two signals cancel. The signal task holds clones for the life of
/// the process; the run hands them to the workers (see `worker::Shared`).
pub struct Signals {
    /// Cancelled by the first signal: no new rows or attempts, those in flight finish.
    pub stop: CancellationToken,
    /// Cancelled by the second signal: the rows in flight are dropped without a record.
    pub abandon: CancellationToken,
}

/// Listens for SIGINT and SIGTERM for the rest of the process, and returns the tokens the
/// first two cancel.
pub fn shutdown_signals() -> Signals {
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
    Signals { stop, abandon }
}
