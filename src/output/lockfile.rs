//! The output lock: an OS file lock on `FILE.lock`, held for the whole run, so that two runs
//! never append to the same results file. The OS releases it when the process dies, so a
//! crashed run leaves no stale lock; the file itself stays and names its last holder.

use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// Holds the lock until dropped.
#[derive(Debug)]
pub struct OutputLock {
    _file: fs_err::File,
}

/// The lock file of `output`: beside the regular file it names, so that a symlink to the
/// results file and the file itself take the same lock. A link to anything else (a device such
/// as `/dev/full`) keeps its lock beside the link.
pub fn lock_path(output: &Path) -> PathBuf {
    let real = match std::fs::metadata(output) {
        Ok(meta) if meta.is_file() => std::fs::canonicalize(output).ok(),
        _ => None,
    };
    let mut name = real
        .unwrap_or_else(|| output.to_path_buf())
        .into_os_string();
    name.push(".lock");
    PathBuf::from(name)
}

/// Takes the lock of `output`, or says who holds it.
pub fn acquire(output: &Path) -> Result<OutputLock, String> {
    let path = lock_path(output);
    let mut file = fs_err::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| format!("cannot open the lock file: {e}"))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            return Err(format!(
                "{} is in use by another run ({}); wait for it to end or stop it",
                output.display(),
                if holder.is_empty() {
                    "holder unknown"
                } else {
                    holder
                }
            ));
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(format!("cannot lock {}: {e}", path.display()));
        }
    }
    let _ = file.set_len(0);
    let _ = file.rewind();
    let _ = writeln!(
        file,
        "batchgen pid {} since {}",
        std::process::id(),
        httpdate::fmt_http_date(std::time::SystemTime::now())
    );
    Ok(OutputLock { _file: file })
}
