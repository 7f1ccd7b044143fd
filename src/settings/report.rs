//! The settings of `batchgen report`: its command line resolved once, with the default page
//! name beside the first results file.

use std::path::{Path, PathBuf};

use super::{ConfigError, bad};
use crate::cli::ReportArgs;

/// A report, resolved from the command line once: what `report` sees of it.
#[derive(Debug, Clone)]
pub struct ReportOptions {
    pub results: Vec<PathBuf>,
    pub output: PathBuf,
    /// A run's `--summary-json`, shown beside the records' figures.
    pub summary: Option<PathBuf>,
}

impl ReportOptions {
    pub fn resolve(args: &ReportArgs) -> Result<ReportOptions, ConfigError> {
        let Some(first) = args.results.first() else {
            return Err(bad("report needs at least one results file"));
        };
        if args.results.iter().any(|p| p.as_os_str() == "-") {
            return Err(bad("report reads results files, not stdin"));
        }
        let output = match &args.output {
            Some(p) if p.as_os_str().is_empty() || p.as_os_str() == "-" => {
                return Err(bad("-o must name a file"));
            }
            Some(p) => p.clone(),
            None => default_report(first),
        };
        Ok(ReportOptions {
            results: args.results.clone(),
            output,
            summary: args.summary.clone(),
        })
    }
}

/// `X.results.jsonl` and `X.jsonl` give `X.report.html`; any other name gets `.report.html`
/// added.
pub fn default_report(results: &Path) -> PathBuf {
    let name = results
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = [".results.jsonl", ".jsonl"]
        .iter()
        .find_map(|ext| name.strip_suffix(ext))
        .filter(|s| !s.is_empty())
        .unwrap_or(&name);
    results.with_file_name(format!("{stem}.report.html"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_page_sits_beside_the_first_results_file() {
        let d = |p: &str| default_report(Path::new(p));
        assert_eq!(
            d("out/demo.results.jsonl"),
            Path::new("out/demo.report.html")
        );
        assert_eq!(
            d("a.shard-0-of-2.results.jsonl"),
            Path::new("a.shard-0-of-2.report.html")
        );
        assert_eq!(d("x/r.jsonl"), Path::new("x/r.report.html"));
        assert_eq!(d("results.txt"), Path::new("results.txt.report.html"));
    }
}
