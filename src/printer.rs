//! The one writer of messages to stderr during a command. While a live progress bar is drawn,
//! a message is printed above it (the bar is hidden for the write and drawn again), so the two
//! never garble each other.

use std::fmt::Display;
use std::io::Write;
use std::sync::Mutex;

use indicatif::ProgressBar;

use crate::sync::lock;

/// The progress bar on screen, if any: set by `progress` while it draws one, cleared when it
/// finishes.
static BAR: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// Writes one line to stderr, above the progress bar when one is drawn.
pub fn say(line: impl Display) {
    let text = format!("{line}\n");
    write_raw(text.as_bytes());
}

/// Writes text as given (a rendered summary, a dry-run report) to stderr, above the progress
/// bar when one is drawn.
pub fn write_raw(text: &[u8]) {
    let bar = lock(&BAR).clone();
    let write = || {
        let _ = std::io::stderr().lock().write_all(text);
    };
    match bar {
        Some(bar) if !bar.is_hidden() => bar.suspend(write),
        _ => write(),
    }
}

/// Registers the bar being drawn (`Some`) or its end (`None`).
pub fn set_bar(bar: Option<ProgressBar>) {
    *lock(&BAR) = bar;
}

/// Stderr as an `io::Write`, through [`write_raw`]: for code that renders into a writer.
pub struct Stderr;

impl std::io::Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        write_raw(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
