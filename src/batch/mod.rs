//! Batch mode: the rows go through the provider's Batch API (files + batches) at the batch
//! price instead of one request each. `files` writes the batch files, `journal` records each
//! step so that a crash resumes without a second batch for the same rows.

pub mod files;
pub mod journal;
