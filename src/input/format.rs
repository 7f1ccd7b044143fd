//! The input formats, and the one a file name implies. A leaf, so that settings can name a
//! format without depending on the readers.

use std::path::Path;

/// Input file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One JSON object per line.
    Jsonl,
    /// Comma-separated values with a header row.
    Csv,
    /// Apache Parquet: columns are the row's fields.
    Parquet,
}

/// The input format a file name implies (`.jsonl`, `.ndjson`, `.csv`, each optionally `.gz`;
/// `.parquet`).
pub fn format_of(path: &Path) -> Option<Format> {
    let name = path.file_name()?.to_string_lossy().to_ascii_lowercase();
    let name = name.strip_suffix(".gz").unwrap_or(&name);
    if name.ends_with(".jsonl") || name.ends_with(".ndjson") {
        Some(Format::Jsonl)
    } else if name.ends_with(".csv") {
        Some(Format::Csv)
    } else if name.ends_with(".parquet") && !path.to_string_lossy().ends_with(".gz") {
        Some(Format::Parquet)
    } else {
        None
    }
}
