//! Small helpers for the standard library's locks, shared by every module that keeps counters
//! behind a mutex.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks a mutex, taking over a poisoned one: every mutex here guards plain counters that a
/// panic cannot leave half-updated in a way that matters.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
